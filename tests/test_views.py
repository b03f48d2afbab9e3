"""The view record: its cache encoding, the coarse output folder (both layouts), broken folders."""

import json

import numpy as np
import pytest

from vd.errors import InputError
from vd.stages.coarse_folder import read_coarse_folder, write_coarse_folder
from vd.views import View, decode_record, decode_views, encode_record, encode_views, read_views


def _view(name, kind, H=12, W=16, pose=None):
    rng = np.random.default_rng(len(name))
    hole = rng.random((H, W)) > 0.7
    return View(name=name, kind=kind, rgb=rng.integers(0, 255, (H, W, 3)).astype(np.uint8),
                depth=rng.uniform(1, 3, (H, W)).astype(np.float32),
                K=np.array([[20, 0, W / 2], [0, 20, H / 2], [0, 0, 1]], np.float32),
                world_from_camera=np.eye(4) if pose is None else pose,
                supervise=np.ones((H, W), bool) if kind == "input" else hole.copy(),
                spawn=rng.random((H, W)) > 0.5, hole=hole if kind != "input" else np.zeros((H, W), bool),
                dense_index=None if kind != "view" else 7)


def _gaussians(n=5):
    from vd.lift import gaussians_from_rgbd

    rgb = np.full((1, n, 3), 100, np.uint8)
    return gaussians_from_rgbd(rgb, np.full((1, n), 2.0, np.float32), np.array([[10, 0, n / 2], [0, 10, 0.5], [0, 0, 1]], np.float32))


def _same(a: View, b: View, fields=("rgb", "depth", "K", "world_from_camera", "supervise", "spawn", "hole")):
    assert a.name == b.name and a.kind == b.kind and a.dense_index == b.dense_index
    for k in fields:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_views_codec_roundtrip():
    views = [_view("input", "input"), _view("view_01", "view")]
    t, m = encode_views(views, "f")
    for a, b in zip(views, decode_views(t, m, "f")):
        _same(a, b)


def test_record_roundtrip_with_gaussians(tmp_path):
    from vd.cache import Cache

    views, g = [_view("input", "input")], _gaussians()
    rec = Cache.open(tmp_path / "cache").put("k" * 32, encode_record(views, g, {"loss": 0.5}), stage="scaffold")
    back, g2, meta = decode_record(rec)
    _same(views[0], back[0])
    assert meta["loss"] == 0.5 and np.array_equal(g.means.numpy(), g2.means.numpy())


def test_write_and_read_folder_keeps_every_mask(tmp_path):
    pose = np.eye(4)
    pose[:3, 3] = (0.1, -0.2, 0.3)
    views = [_view("input", "input"), _view("ring", "ring", 20, 24), _view("view_01", "view", pose=pose)]
    g = _gaussians()
    paths = write_coarse_folder(tmp_path, views, g, g, {"selected": 1})
    assert [p.name for p in paths] == ["coarse.ply", "scaffold.ply", "cameras.json", "summary.json"]
    assert all(p.is_file() for p in paths)
    cams = json.loads((tmp_path / "cameras.json").read_text())
    assert cams["format"] == "vd-views" and cams["version"] == 2
    assert cams["convention"] == "OpenCV camera (x right, y down, z forward); world = input camera"
    e = cams["views"][2]
    assert e["rgb"] == "views/002/rgb.png" and e["supervise_mask"] == "views/002/supervise_mask.png" and e["kind"] == "view"
    back = read_views(tmp_path)
    for a, b in zip(views, back):
        _same(a, b, ("rgb", "depth", "supervise", "spawn", "hole"))
        assert np.allclose(a.K, b.K) and np.allclose(a.world_from_camera, b.world_from_camera)
    # a later run with fewer views removes the stale folders
    write_coarse_folder(tmp_path, views[:2], g, g, {"selected": 0})
    assert not (tmp_path / "views" / "002").exists()
    assert len(read_views(tmp_path)) == 2
    assert not list(tmp_path.rglob(".*tmp*"))  # no temp files left behind


def test_input_supervision_is_not_its_spawn_mask(tmp_path):
    """The input supervises every pixel while only its edge-free valid pixels spawn; the folder
    must carry both, so that what reads it supervises exactly what `vd coarse` did."""
    v = _view("input", "input")
    assert v.supervise.all() and not v.spawn.all()
    write_coarse_folder(tmp_path, [v], _gaussians(), _gaussians(), {})
    back = read_coarse_folder(tmp_path).input_view
    assert back.supervise.all() and np.array_equal(back.spawn, v.spawn)


def test_reads_the_layout_before_version_2(tmp_path):
    """Folders of earlier vd: no supervision mask, the spawn mask under "mask"; supervision is
    restored by the rule those runs trained with (input: all pixels; others: their holes)."""
    from _export_scene import write_v1_folder

    written = [_view("input", "input"), _view("ring", "ring"), _view("view_01", "view")]
    write_v1_folder(tmp_path, written)
    views = read_views(tmp_path)
    assert views[0].kind == "input" and views[0].supervise.all() and not views[0].hole.any()
    for a, b in zip(written, views):
        _same(a, b, ("rgb", "depth", "spawn", "hole"))
        assert np.array_equal(b.supervise, b.hole if b.kind != "input" else np.ones_like(b.hole))


def test_read_views_errors(tmp_path):
    with pytest.raises(InputError, match="no cameras.json"):
        read_views(tmp_path)
    (tmp_path / "cameras.json").write_text("{nope")
    with pytest.raises(InputError, match="malformed"):
        read_views(tmp_path)
    (tmp_path / "cameras.json").write_text(json.dumps({"views": [{"rgb": "missing.png", "depth": "d.npy", "mask": "m.png", "K": [], "world_from_camera": []}]}))
    with pytest.raises(InputError, match="cannot be read"):
        read_views(tmp_path)
    (tmp_path / "cameras.json").write_text(json.dumps({"format": "vd-views", "version": 9, "views": []}))
    with pytest.raises(InputError, match="upgrade vd"):
        read_views(tmp_path)


def test_fine_supervises_each_anchor_over_its_recorded_mask(tmp_path):
    """`vd fine` fits the anchors over exactly the pixels `vd coarse` did: all of the input
    (not only its spawned pixels), the generated pixels of the ring."""
    import torch

    from vd.stages.fine import rectification_targets

    inp, ring = _view("input", "input"), _view("ring", "ring", 20, 24)
    write_coarse_folder(tmp_path, [inp, ring], _gaussians(), _gaussians(), {})
    scene = read_coarse_folder(tmp_path)
    images = torch.zeros((1, 12, 16, 3))
    targets = rectification_targets(scene, images, np.eye(4)[None], inp.K, "cpu")
    assert [t.width for t in targets] == [16, 24, 16]  # input, ring, then the refined view
    assert targets[0].mask.numpy().all() and not inp.spawn.all()
    assert np.array_equal(targets[1].mask.numpy(), ring.hole)
    assert targets[2].mask.numpy().all()


def test_colmap_masks_are_the_supervision_masks(tmp_path):
    from vd.commands.app import run

    views = [_view("input", "input"), _view("view_01", "view")]
    views[1].world_from_camera = np.eye(4)
    views[1].world_from_camera[0, 3] = 0.2
    assert not np.array_equal(views[1].supervise, views[1].spawn)
    write_coarse_folder(tmp_path / "scene", views, _gaussians(), _gaussians(), {})
    assert run(["export", str(tmp_path / "scene"), "--format", "colmap", "-o", str(tmp_path / "ds")]) == 0
    from PIL import Image

    for i, v in enumerate(views):
        mask = np.asarray(Image.open(tmp_path / "ds" / "masks" / f"{i:06d}.png")) == 255
        assert np.array_equal(mask, v.supervise & (v.depth > 0))
