"""MoGe-2 backend: a tiny random MoGe-2 (MoGe's own model class, tiny config) saved in the
published `model.pt` layout and loaded through the production code (registry -> from_pretrained)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("moge.model.v2", reason="dlr-moge not installed (pip install --no-deps dlr-moge)")
torch = pytest.importorskip("torch")


@pytest.fixture
def tiny_moge(monkeypatch, vd_dirs):
    """Write models/moge/model.pt (published layout) for a random tiny MoGe-2; return its path."""
    from moge_tiny import write_tiny_moge

    return write_tiny_moge(monkeypatch, vd_dirs["models"], "moge", "tiny")


def _rgb(h=64, w=96):
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def test_tiny_moge_through_registry(tiny_moge):
    from vd.models.choose import get_depth_backend

    b = get_depth_backend("moge", device="cpu")
    assert b.name == "moge"
    ident = b.identity
    assert ident.startswith("moge:") and "model.pt=" in ident
    r = b.estimate(_rgb())
    assert r.depth.shape == (64, 96) and r.depth.dtype == np.float32
    assert r.valid.dtype == bool and r.valid.shape == (64, 96)
    assert r.valid.mean() > 0.5
    assert (r.depth[r.valid] > 0).all() and np.isfinite(r.depth).all()
    assert (r.depth[~r.valid] == 0).all()
    assert r.K.shape == (3, 3) and r.K.dtype == np.float32
    assert r.K[0, 2] == pytest.approx(48.0, abs=1e-3) and r.K[1, 2] == pytest.approx(32.0, abs=1e-3)  # W/2, H/2: pixel centres at +0.5
    assert r.K[0, 0] > 0 and r.K[1, 1] > 0
    assert r.normals is not None and r.normals.shape == (64, 96, 3)
    n = np.linalg.norm(r.normals[r.valid], axis=-1)
    assert np.allclose(n, 1, atol=1e-3)
    b.release()
    assert b._model is None


def test_tiny_moge_fixed_fov(tiny_moge):
    from vd.models.choose import get_depth_backend

    r = get_depth_backend("moge", device="cpu", fov=60.0).estimate(_rgb())
    assert r.fov_deg()[0] == pytest.approx(60.0, abs=0.05)
    K = np.array([[100.0, 0, 47.5], [0, 100.0, 31.5], [0, 0, 1]], np.float32)
    r2 = get_depth_backend("moge", device="cpu").estimate(_rgb(), K_hint=K)
    assert np.allclose(r2.K, K)


def test_the_input_camera_before_outpainting(tiny_moge):
    """The scaffold sizes its canvas by the input's camera: a given field of view is taken as it is
    (no model loaded), an unknown one is MoGe's estimate on the input."""
    from vd.models.choose import get_depth_backend
    from vd.stages.scaffold import input_camera

    given = get_depth_backend("moge", device="cpu", fov=20.0)
    K = input_camera(_rgb(), given)
    assert 2 * np.degrees(np.arctan(48 / K[0, 0])) == pytest.approx(20.0, abs=0.01)
    assert given._model is None  # nothing ran
    estimated = get_depth_backend("moge", device="cpu")
    assert np.allclose(input_camera(_rgb(), estimated), estimated.estimate(_rgb()).K)


def test_vd_depth_moge_cli(tiny_moge, tmp_path, run_vd):
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.fromarray(_rgb(96, 128)).save(p)
    r = run_vd("depth", p, "--backend", "auto", "--depth-device", "cpu", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    assert "moge" in r.stderr
    for name in ("depth.npy", "depth.png", "mask.png", "normals.npy", "intrinsics.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert np.load(tmp_path / "out" / "normals.npy").shape == (96, 128, 3)


def test_corrupt_moge_weights(tiny_moge):
    from vd.errors import VdError
    from vd.models.choose import get_depth_backend

    tiny_moge.write_bytes(b"not a checkpoint")
    with pytest.raises(VdError, match="cannot load MoGe weights"):
        get_depth_backend("moge", device="cpu").estimate(_rgb())


def test_moge_focal_in_original_pixels_and_intrinsics_file(tiny_moge, tmp_path, run_vd):
    import json

    from PIL import Image

    p = tmp_path / "photo.png"
    Image.fromarray(_rgb(128, 192)).save(p)
    r = run_vd("depth", p, "--backend", "moge", "--depth-device", "cpu", "--focal", "150",
               "--max-resolution", "96", "-o", tmp_path / "a", "--json")
    assert r.code == 0, r
    intr = json.loads((tmp_path / "a" / "intrinsics.json").read_text())
    assert (intr["width"], intr["height"]) == (96, 64)
    assert intr["fx"] == pytest.approx(75.0, rel=1e-4)  # 150 px at 192 wide -> 75 px at 96 wide
    (tmp_path / "cam.json").write_text(json.dumps({"fx": 150.0, "width": 192, "height": 128}))
    r = run_vd("depth", p, "--backend", "moge", "--depth-device", "cpu", "--intrinsics", tmp_path / "cam.json",
               "--max-resolution", "96", "-o", tmp_path / "b", "--json")
    assert r.code == 0, r
    assert json.loads((tmp_path / "b" / "intrinsics.json").read_text())["fx"] == pytest.approx(75.0, rel=1e-4)


@pytest.mark.gpu
def test_tiny_moge_on_cuda(tiny_moge):
    from vd.models import memory
    from vd.models.choose import get_depth_backend

    b = get_depth_backend("moge", device="cuda")
    memory.reset()
    with memory.track("depth", "cuda"):
        r = b.estimate(_rgb())
    assert r.depth.shape == (64, 96) and r.normals is not None
    assert memory.records()[0].peak_vram_bytes > 0
    b.release()


def test_mismatched_moge_checkpoint_is_refused_in_one_sentence(tiny_moge, tmp_path, run_vd):
    """MoGe's own from_pretrained loads with strict=False: a checkpoint for other code would leave
    random layers. vd refuses it, naming the mismatch (exit 1, no traceback, no output folder)."""
    from PIL import Image

    from vd.errors import VdError
    from vd.models.choose import get_depth_backend

    ck = torch.load(tiny_moge, weights_only=True)
    state = dict(ck["model"])
    dropped = sorted(k for k in state if k.startswith("scale_head."))[0]
    del state[dropped]
    state["extra_head.weight"] = torch.zeros(1)
    torch.save({"model_config": ck["model_config"], "model": state}, tiny_moge)
    with pytest.raises(VdError, match=r"does not match the installed MoGe code .*1 weights missing, 1 unexpected"):
        get_depth_backend("moge", device="cpu").estimate(_rgb())
    p = tmp_path / "photo.png"
    Image.fromarray(_rgb()).save(p)
    r = run_vd("depth", p, "--backend", "moge", "--depth-device", "cpu", "-o", tmp_path / "out")
    assert r.code == 1, r
    assert "does not match the installed MoGe code" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "out" / "depth.npy").exists()


def _edge_padded(rgb, shift):
    """rgb whose right `shift` columns repeat the column before them (what BORDER_REPLICATE shows there)."""
    out = rgb.copy()
    out[:, -shift:] = rgb[:, -shift - 1: -shift]
    return out


def test_moge_honours_an_off_centre_principal_point(tiny_moge):
    """The same rays seen by a camera whose principal point sits 8 px right of centre: the image is
    the centred one shifted right by 8 px. MoGe only takes a FoV, so vd must undo the shift for it:
    depth at pixel x of the off-centre camera equals the centred camera's depth at x - 8."""
    from vd.models.choose import get_depth_backend

    H, W, s, f = 64, 96, 8, 80.0
    base = _edge_padded(_rgb(H, W), s)
    shifted = np.concatenate([np.repeat(base[:, :1], s, axis=1), base[:, :-s]], axis=1)
    K_c = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32)
    K_off = K_c.copy()
    K_off[0, 2] += s
    b = get_depth_backend("moge", device="cpu")
    a = b.estimate(base, K_hint=K_c)
    o = b.estimate(shifted, K_hint=K_off)
    assert np.allclose(o.K, K_off)
    assert np.allclose(o.depth[:, s:], a.depth[:, :-s], rtol=1e-5, atol=1e-6)
    assert np.array_equal(o.valid[:, s:], a.valid[:, :-s])
    assert not o.valid[:, :s].any()  # beyond what the centred image covers
    assert np.allclose(o.normals[:, s:], a.normals[:, :-s], atol=1e-6)
