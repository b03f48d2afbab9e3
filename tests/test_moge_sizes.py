"""MoGe-2 ViT-B and ViT-S (`--depth-model vitb|vits`): random models of those architectures (moge_tiny)
in the published `model.pt` layout under their registry entries (moge-vitb, moge-vits), loaded by the
same production code as ViT-L."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("moge.model.v2", reason="dlr-moge not installed (pip install --no-deps dlr-moge)")
torch = pytest.importorskip("torch")

MIT = {"license": "MIT (MoGe); DINOv2 backbone Apache-2.0", "commercial": True}


def _photo(path, h=96, w=128):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def vitb(monkeypatch, vd_dirs):
    from moge_tiny import write_tiny_moge

    return write_tiny_moge(monkeypatch, vd_dirs["models"], "moge-vitb", "vitb")


def test_vd_depth_with_vitb_uses_the_moge_vitb_weights(vitb, tmp_path, run_vd):
    """Only moge-vitb is installed: --depth-model vitb runs end to end on it; vitl (the default) asks for moge."""
    img = _photo(tmp_path / "photo.png")
    r = run_vd("depth", img, "--backend", "moge", "--depth-model", "vitb", "--depth-device", "cpu",
               "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["backend"] == "moge" and row["licences"] == {"moge-vitb": MIT}
    for name in ("depth.npy", "depth.png", "mask.png", "normals.npy", "intrinsics.json"):
        assert (tmp_path / "out" / name).is_file(), name
    depth = np.load(tmp_path / "out" / "depth.npy")
    assert depth.shape == (96, 128) and (depth > 0).mean() > 0.5
    r = run_vd("depth", img, "--backend", "moge", "--depth-device", "cpu", "-o", tmp_path / "l")
    assert r.code == 3 and "run: vd fetch moge" in r.stderr and "moge-vitb" not in r.stderr, r
    assert not (tmp_path / "l" / "depth.npy").exists()


def test_vits_is_the_real_vit_s_backbone_and_sizes_have_their_own_identity(vitb, monkeypatch, vd_dirs):
    from moge_tiny import write_tiny_moge

    from vd.image import load_image
    from vd.models.choose import get_depth_backend
    from vd.stages.depth import depth_key

    write_tiny_moge(monkeypatch, vd_dirs["models"], "moge-vits", "vits")
    rgb = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    b = get_depth_backend("moge", device="cpu", model="vitb")
    s = get_depth_backend("moge", device="cpu", model="vits")
    r = s.estimate(rgb)
    backbone = s._model.encoder.backbone
    assert backbone.embed_dim == 384 and len(backbone.blocks) == 12  # DINOv2 ViT-S/14 as MoGe builds it
    assert r.depth.shape == (64, 96) and r.valid.mean() > 0.5 and r.normals is not None
    assert b.identity.startswith("moge-vitb:model.pt=") and s.identity.startswith("moge-vits:model.pt=")
    assert b.identity != s.identity
    from PIL import Image

    Image.fromarray(rgb).save(vd_dirs["models"].parent / "p.png")
    im = load_image(vd_dirs["models"].parent / "p.png")
    assert depth_key(im, b) != depth_key(im, s)  # different cache entries
    assert b.registry_models == ("moge-vitb",) and s.registry_models == ("moge-vits",)
    s.release()


def test_missing_vits_weights_exit_3_naming_the_fetch_line(tmp_path, run_vd, run_vd_subprocess):
    img = _photo(tmp_path / "photo.png", 48, 64)
    r = run_vd("depth", img, "--backend", "moge", "--depth-model", "vits", "--depth-device", "cpu", "-o", tmp_path / "o")
    assert r.code == 3, r
    assert "model weights for 'moge-vits' are missing" in r.stderr and r.stderr.rstrip().endswith("vd fetch moge-vits")
    assert "Traceback" not in r.output and not (tmp_path / "o" / "depth.npy").exists()
    # vd coarse refuses before any stage runs (commands.common.require_weights_first checks the right entry)
    r = run_vd_subprocess("coarse", img, "--depth-backend", "moge", "--depth-model", "vits", "--device", "cpu",
                          "-o", tmp_path / "c")
    assert r.code == 3 and "vd fetch moge-vits" in r.stderr and "Traceback" not in r.output, r


def test_footprints_shrink_with_the_size():
    from vd.models.footprints import DEPTH_BYTES, DEPTH_WEIGHTS_BYTES
    from vd.models.moge import MOGE_REGISTRY
    from vd.params import DEPTH_MODELS

    assert set(DEPTH_BYTES) == set(MOGE_REGISTRY) == set(DEPTH_MODELS)
    assert DEPTH_BYTES["vitl"] > DEPTH_BYTES["vitb"] > DEPTH_BYTES["vits"]
    for size, total in DEPTH_BYTES.items():
        assert total > DEPTH_WEIGHTS_BYTES[size]  # weights plus activations


def test_bad_depth_model_is_a_usage_error():
    from vd.errors import UsageError
    from vd.models.choose import get_depth_backend

    with pytest.raises(UsageError, match="--depth-model"):
        get_depth_backend("moge", model="vitg")


def test_the_images_of_one_run_share_one_depth_model(vitb, tmp_path, monkeypatch):
    """`run_depth(shared_backends=...)`: the second image gets the model the first one loaded (loaded once, where
    each image alone loads its own), and each output records the licences of the weights it used."""
    import vd.models.moge as moge
    from vd.stages.depth import run_depth

    loads = []
    real = moge.load_moge
    monkeypatch.setattr(moge, "load_moge", lambda *a, **kw: loads.append(1) or real(*a, **kw))
    shared: dict = {}
    outs = [run_depth(_photo(tmp_path / f"p{i}.png", h=96 + 16 * i), backend="moge", model="vitb", device="cpu",
                      shared_backends=shared) for i in range(2)]
    assert len(loads) == 1 and list(shared) == [("moge", "vitb")]
    assert all(o.licences == {"moge-vitb": MIT} for o in outs)
    for i in range(2):
        run_depth(_photo(tmp_path / f"q{i}.png", h=128 + 16 * i), backend="moge", model="vitb", device="cpu")
    assert len(loads) == 3  # without the shared dict, each image loads its own
