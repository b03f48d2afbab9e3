"""The coarse output folder: write_outputs / load_views round trip, stale views, broken folders."""

import json

import numpy as np
import pytest

from vd.errors import InputError
from vd.stages.scene_io import Frame, decode_frames, encode_frames, load_views, write_outputs


def _frame(name, kind, H=12, W=16, pose=None):
    rng = np.random.default_rng(len(name))
    return Frame(name=name, kind=kind, rgb=rng.integers(0, 255, (H, W, 3)).astype(np.uint8),
                 depth=rng.uniform(1, 3, (H, W)).astype(np.float32),
                 K=np.array([[20, 0, W / 2], [0, 20, H / 2], [0, 0, 1]], np.float32),
                 world_from_camera=np.eye(4) if pose is None else pose,
                 supervise=np.ones((H, W), bool), spawn=rng.random((H, W)) > 0.5, hole=rng.random((H, W)) > 0.7,
                 dense_index=None if kind != "view" else 7)


def _gaussians(n=5):
    from vd.lift import gaussians_from_rgbd

    rgb = np.full((1, n, 3), 100, np.uint8)
    return gaussians_from_rgbd(rgb, np.full((1, n), 2.0, np.float32), np.array([[10, 0, n / 2], [0, 10, 0.5], [0, 0, 1]], np.float32))


def test_frames_codec_roundtrip():
    frames = [_frame("input", "input"), _frame("view_01", "view")]
    t, m = encode_frames(frames, "f")
    back = decode_frames(t, m, "f")
    for a, b in zip(frames, back):
        assert a.name == b.name and a.kind == b.kind and a.dense_index == b.dense_index
        for k in ("rgb", "depth", "K", "world_from_camera", "supervise", "spawn", "hole"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_write_and_load(tmp_path):
    pose = np.eye(4)
    pose[:3, 3] = (0.1, -0.2, 0.3)
    frames = [_frame("input", "input"), _frame("ring", "ring", 20, 24), _frame("view_01", "view", pose=pose)]
    g = _gaussians()
    paths = write_outputs(tmp_path, frames, g, g, {"selected": 1})
    assert [p.name for p in paths] == ["coarse.ply", "scaffold.ply", "cameras.json", "summary.json"]
    assert all(p.is_file() for p in paths)
    cams = json.loads((tmp_path / "cameras.json").read_text())
    assert cams["convention"] == "OpenCV camera (x right, y down, z forward); world = input camera"
    v = cams["views"][2]
    assert v["rgb"] == "views/002/rgb.png" and v["mask"] == "views/002/spawn_mask.png" and v["kind"] == "view"
    views = load_views(tmp_path)
    assert [x.kind for x in views] == ["input", "ring", "view"]
    for f, x in zip(frames, views):
        assert np.array_equal(f.rgb, x.rgb) and np.array_equal(f.depth, x.depth)
        assert np.array_equal(f.spawn, x.mask) and np.array_equal(f.hole, x.hole_mask)
        assert np.allclose(f.world_from_camera, x.world_from_camera)
    assert views[2].dense_index == 7
    # a later run with fewer views removes the stale folders
    write_outputs(tmp_path, frames[:2], g, g, {"selected": 0})
    assert not (tmp_path / "views" / "002").exists()
    assert len(load_views(tmp_path)) == 2
    assert not list(tmp_path.rglob(".*tmp*"))  # no temp files left behind


def test_load_views_errors(tmp_path):
    with pytest.raises(InputError, match="no cameras.json"):
        load_views(tmp_path)
    (tmp_path / "cameras.json").write_text("{nope")
    with pytest.raises(InputError, match="malformed"):
        load_views(tmp_path)
    (tmp_path / "cameras.json").write_text(json.dumps({"views": [{"rgb": "missing.png", "depth": "d.npy", "mask": "m.png", "K": [], "world_from_camera": []}]}))
    with pytest.raises(InputError, match="cannot be read"):
        load_views(tmp_path)
