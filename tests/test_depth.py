"""Depth: the file backend (formats, sidecars, intrinsics, resizing), depth_edges, `vd depth`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vd.align import depth_edges
from vd.errors import InputError, UsageError
from vd.image import load_image
from vd.models.choose import get_depth_backend
from vd.models.depth import sidecar_depth

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "room"
sys.path.insert(0, str(REPO / "examples"))


def _scene(tmp_path, w=96, h=64, name="img.png"):
    from make_room import render_room

    rgb, depth, K, _ = render_room(w, h, 70.0)
    p = tmp_path / name
    Image.fromarray(rgb).save(p)
    return p, rgb, depth, K


def test_example_files_are_committed_and_match_generator(tmp_path):
    from make_room import main

    main(["--out", str(tmp_path)])
    for name in ("rgb.png", "rgb.depth.npy", "intrinsics.json"):
        assert (EXAMPLE / name).is_file(), name
    assert np.array_equal(np.load(EXAMPLE / "rgb.depth.npy"), np.load(tmp_path / "rgb.depth.npy"))
    assert np.array_equal(np.asarray(Image.open(EXAMPLE / "rgb.png")), np.asarray(Image.open(tmp_path / "rgb.png")))


def test_sidecar_and_intrinsics_found(tmp_path):
    p, rgb, depth, K = _scene(tmp_path)
    np.save(tmp_path / "img.depth.npy", depth)
    (tmp_path / "img.intrinsics.json").write_text(json.dumps({"K": K.tolist()}))
    assert sidecar_depth(p) == tmp_path / "img.depth.npy"
    b = get_depth_backend("auto", image_path=p)
    assert b.name == "file"
    im = load_image(p)
    r = b.estimate(im.rgb, plan=im.plan)
    assert r.depth.dtype == np.float32 and r.depth.shape == (64, 96)
    assert np.allclose(r.depth, depth)
    assert r.valid.all()
    assert np.allclose(r.K, K, atol=1e-4)
    assert r.normals is None


@pytest.mark.parametrize("fmt", ["npy", "npz", "png16", "tif"])
def test_depth_formats(tmp_path, fmt):
    import cv2

    p, rgb, depth, K = _scene(tmp_path)
    depth = depth.copy()
    depth[:5, :5] = 0  # invalid patch
    if fmt == "npy":
        np.save(tmp_path / "img.depth.npy", depth)
    elif fmt == "npz":
        np.savez(tmp_path / "img.depth.npz", depth=depth, other=np.zeros(3))
    elif fmt == "png16":
        cv2.imwrite(str(tmp_path / "img.depth.png"), np.round(depth * 1000).astype(np.uint16))
    else:
        cv2.imwrite(str(tmp_path / "img.depth.tif"), depth.astype(np.float32))
    b = get_depth_backend("file", image_path=p, fov=70.0)
    r = b.estimate(load_image(p).rgb)
    tol = 1e-3 if fmt == "png16" else 1e-6
    assert np.allclose(r.depth[r.valid], depth[depth > 0], atol=tol)
    assert not r.valid[:5, :5].any() and r.valid.sum() == (depth > 0).sum()
    assert r.K[0, 0] == pytest.approx(96 / (2 * np.tan(np.radians(35))), rel=1e-5)


def test_focal_scaled_with_resize(tmp_path):
    p, rgb, depth, K = _scene(tmp_path, w=320, h=240)
    np.save(tmp_path / "img.depth.npy", depth)
    im = load_image(p, max_resolution=160)
    assert im.rgb.shape == (112, 160, 3) or im.rgb.shape[:2] == (112, 160)
    r = get_depth_backend("file", image_path=p, focal=float(K[0, 0])).estimate(im.rgb, plan=im.plan)
    assert r.depth.shape == im.rgb.shape[:2]
    sx = im.plan.scale[0]
    assert r.K[0, 0] == pytest.approx(K[0, 0] * sx, rel=1e-5)
    # the depth at the centre pixel is preserved by the (nearest) resize
    assert r.depth[56, 80] == pytest.approx(depth[120, 160], rel=0.05)
    # intrinsics JSON gives the same K as --focal
    (tmp_path / "intrinsics.json").write_text(json.dumps({"K": K.tolist(), "width": 320, "height": 240}))
    r2 = get_depth_backend("file", image_path=p).estimate(im.rgb, plan=im.plan)
    assert np.allclose(r2.K, r.K, atol=1e-3)


def test_file_backend_errors(tmp_path):
    p, rgb, depth, K = _scene(tmp_path)
    with pytest.raises(InputError, match="no depth map"):
        get_depth_backend("file", image_path=p, fov=60)
    np.save(tmp_path / "img.depth.npy", depth)
    with pytest.raises(UsageError, match="intrinsics"):
        get_depth_backend("file", image_path=p).estimate(load_image(p).rgb)
    with pytest.raises(UsageError):
        get_depth_backend("file", image_path=p, fov=60, focal=100)
    with pytest.raises(UsageError):
        get_depth_backend("nope", image_path=p)
    np.save(tmp_path / "img.depth.npy", np.zeros((64, 96), np.float32))
    with pytest.raises(InputError, match="no valid"):
        get_depth_backend("file", image_path=p, fov=60).estimate(load_image(p).rgb)
    np.save(tmp_path / "img.depth.npy", np.ones((64, 64), np.float32))
    with pytest.raises(InputError, match="aspect"):
        get_depth_backend("file", image_path=p, fov=60).estimate(load_image(p).rgb)
    (tmp_path / "img.depth.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        get_depth_backend("file", image_path=p, fov=60).estimate(load_image(p).rgb)
    (tmp_path / "img.depth.npy").unlink()
    Image.fromarray(np.full((64, 96), 3, np.uint8)).save(tmp_path / "img.depth.png")
    with pytest.raises(InputError, match="16-bit"):
        get_depth_backend("file", image_path=p, fov=60).estimate(load_image(p).rgb)
    (tmp_path / "img.depth.png").unlink()
    np.save(tmp_path / "img.depth.npy", depth)
    (tmp_path / "intrinsics.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        get_depth_backend("file", image_path=p)


def test_depth_edges_scale_relative():
    from make_room import render_room

    _, depth, _, _ = render_room(128, 96)
    valid = depth > 0
    e1 = depth_edges(depth, valid)
    e2 = depth_edges(depth * 1000.0, valid)  # millimetres instead of metres
    e3 = depth_edges(depth * 0.01, valid)
    assert np.array_equal(e1, e2) and np.array_equal(e1, e3)
    assert 0 < e1.mean() < 0.9
    e_loose = depth_edges(depth, valid, times=0.2)
    assert e_loose.sum() < e1.sum() and not (e_loose & ~e1).any()  # monotone in `times`
    # a plane facing the camera has no edges; a step has edges only along the step
    plane = np.full((40, 40), 2.0, np.float32)
    assert not depth_edges(plane, plane > 0).any()
    step = plane.copy()
    step[:, 20:] = 4.0
    step += np.linspace(0, 0.5, 40, dtype=np.float32)[:, None]  # some range besides the step
    e = depth_edges(step, step > 0)
    cols = np.where(e.any(0))[0]
    assert cols.min() >= 17 and cols.max() <= 22
    # invalid pixels are never edges and do not create edges
    hole = plane.copy()
    hole[10:20, 10:20] = 0
    eh = depth_edges(hole, hole > 0)
    assert not eh.any()


def test_vd_depth_on_example(tmp_path, run_vd, vd_dirs):
    out = tmp_path / "out"
    r = run_vd("depth", EXAMPLE / "rgb.png", "-o", out)
    assert r.code == 0, r
    paths = r.stdout.split()
    for name in ("depth.npy", "depth.png", "mask.png", "intrinsics.json"):
        assert str(out / name) in paths
        assert (out / name).is_file()
    assert "file" in r.stderr and "valid" in r.stderr
    assert "peak RSS" in r.stderr  # the memory table
    d = np.load(out / "depth.npy")
    assert d.shape == (192, 256) and d.dtype == np.float32
    assert np.allclose(d, np.load(EXAMPLE / "rgb.depth.npy"))
    intr = json.loads((out / "intrinsics.json").read_text())
    assert intr["width"] == 256 and intr["fov_x_deg"] == pytest.approx(70.0, abs=1e-3)
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask.shape == (192, 256) and (mask == 255).all()
    colour = np.asarray(Image.open(out / "depth.png"))
    assert colour.shape == (192, 256, 3)
    # memoised: the second run is a cache hit and writes identical files
    r2 = run_vd("depth", EXAMPLE / "rgb.png", "-o", tmp_path / "out2", "--json")
    assert r2.code == 0, r2
    j = json.loads(r2.stdout.strip().splitlines()[-1])
    assert j["cached"] is True and j["backend"] == "file"
    assert j["depth_min"] == pytest.approx(float(d.min())) and j["valid_fraction"] == 1.0
    assert (tmp_path / "out2" / "depth.npy").read_bytes() == (out / "depth.npy").read_bytes()


def test_vd_depth_resized_and_several_images(tmp_path, run_vd):
    a = tmp_path / "a"
    shutil.copytree(EXAMPLE, a)
    r = run_vd("depth", a / "rgb.png", EXAMPLE / "rgb.png", "-o", tmp_path / "out", "--max-resolution", "128", "--json")
    assert r.code == 0, r
    lines = [json.loads(l) for l in r.stdout.strip().splitlines()]
    assert len(lines) == 2
    assert lines[0]["width"] == 128 and lines[0]["height"] == 96
    assert lines[0]["focal"] == pytest.approx(182.803 / 2, rel=1e-3)


def test_vd_depth_usage_errors(tmp_path, run_vd):
    p, rgb, depth, K = _scene(tmp_path)
    r = run_vd("depth", p, "--backend", "file", "-o", tmp_path / "o")
    assert r.code == 1 and "no depth map" in r.stderr and "Traceback" not in r.stderr
    np.save(tmp_path / "img.depth.npy", depth)
    r = run_vd("depth", p, "--backend", "file", "-o", tmp_path / "o")
    assert r.code == 2 and "intrinsics" in r.stderr
    r = run_vd("depth", p, "--backend", "file", "--fov", "60", "--focal", "100", "-o", tmp_path / "o")
    assert r.code == 2
    r = run_vd("depth", p, "--backend", "file", "--fov", "60", "-o", tmp_path / "o")
    assert r.code == 0, r
    # the option has the name vd coarse gives it too
    r = run_vd("depth", p, "--depth-backend", "file", "--fov", "60", "-o", tmp_path / "o2", "--json")
    assert r.code == 0 and json.loads(r.stdout)["backend"] == "file", r


def test_vd_depth_moge_without_weights_exit_3(tmp_path, run_vd):
    p, rgb, depth, K = _scene(tmp_path)
    r = run_vd("depth", p, "--backend", "moge", "--depth-device", "cpu", "-o", tmp_path / "o")
    assert r.code == 3, r
    assert "vd fetch moge" in r.stderr
    assert not (tmp_path / "o").exists()


def test_memory_tracking(capsys):
    from vd.models import memory

    memory.reset()
    with memory.track("stage a"):
        x = bytearray(32 * 2**20)  # noqa: F841
    with memory.track("stage b", "cpu"):
        pass
    recs = memory.records()
    assert [r.stage for r in recs] == ["stage a", "stage b"]
    assert recs[0].peak_rss_bytes >= 32 * 2**20 and recs[1].peak_rss_bytes >= recs[0].peak_rss_bytes
    assert recs[0].to_json()["peak_vram_bytes"] is None or recs[0].peak_vram_bytes >= 0
    from vd.commands.tables import print_memory

    print_memory(memory.records(), "peak memory")
    err = capsys.readouterr().err
    assert "stage a" in err and "peak RSS" in err and ("MiB" in err or "GiB" in err)  # GiB past 1 GiB (a long test worker)
    memory.reset()
    assert memory.records() == []


def test_intrinsics_json_without_principal_point_centres_it_at_half_the_size(tmp_path):
    """Pixel centres at +0.5 everywhere in vd: the image centre is (W/2, H/2), not ((W-1)/2, (H-1)/2)."""
    import json

    from vd.image import plan_to
    from vd.models.intrinsics import read_intrinsics_json, resolve_K

    (tmp_path / "cam.json").write_text(json.dumps({"fx": 100.0, "fy": 120.0, "width": 96, "height": 64}))
    K = resolve_K(96, 64, plan_to(96, 64, 96, 64), intr=read_intrinsics_json(tmp_path / "cam.json"))
    assert (K[0, 2], K[1, 2]) == (48.0, 32.0)
    (tmp_path / "f.json").write_text(json.dumps({"focal": 100.0}))
    K = resolve_K(96, 64, plan_to(96, 64, 96, 64), intr=read_intrinsics_json(tmp_path / "f.json"))
    assert (K[0, 2], K[1, 2]) == (48.0, 32.0)


def test_centred_view_maps_the_same_rays():
    """The centred, square-pixel camera of K = (fx, fy, cx, cy): a bright pixel lands where the ray
    through it projects, and mapping back restores it."""
    from vd.models.intrinsics import centred_view

    W, H = 40, 30
    K = np.array([[20.0, 0, 23.0], [0, 25.0, 13.0], [0, 0, 1]])
    v = centred_view(K, W, H)
    assert not v.identity and v.fov_x_deg == pytest.approx(np.degrees(2 * np.arctan(W / 40.0)))
    img = np.zeros((H, W), np.float32)
    img[18, 30] = 1.0  # pixel centre (30.5, 18.5)
    x_c = 30.5 - 23.0 + W / 2  # 27.5
    y_c = (18.5 - 13.0) * 20.0 / 25.0 + H / 2  # 19.4
    warped = v.to_centred(img)
    iy, ix = np.unravel_index(np.argmax(warped), warped.shape)
    assert (ix + 0.5, iy + 0.5) == (pytest.approx(x_c), pytest.approx(y_c, abs=0.5))
    back = v.from_centred(warped)
    assert np.unravel_index(np.argmax(back), back.shape) == (18, 30)
    assert centred_view(np.array([[20.0, 0, 20.0], [0, 20.0, 15.0], [0, 0, 1]]), W, H).identity


def test_command_peak_vram_survives_the_stages_resets(monkeypatch):
    """Each stage resets torch's CUDA peak counter; a command's peak (bench/gpu) must still be the
    largest of its stages, not the last one's. torch.cuda's two counters are simulated (no GPU here)."""
    from vd.models import memory

    class Counters:  # torch.cuda's peak-allocation counter and its reset
        def __init__(self):
            self.now, self.peak = 0, 0

        def allocate(self, n):
            self.now += n
            self.peak = max(self.peak, self.now)

        def free(self, n):
            self.now -= n

        def max_memory_allocated(self):
            return self.peak

        def reset_peak_memory_stats(self):
            self.peak = self.now

    cuda = Counters()
    monkeypatch.setattr(memory, "_cuda", lambda: cuda)
    memory.reset_command_peak()
    with memory.track("coarse"):
        cuda.allocate(10)
        cuda.free(10)
    with memory.track("fine"):
        cuda.allocate(3)
        cuda.free(3)
    assert memory.records()[-1].peak_vram_bytes == 3  # a stage's own peak
    assert memory.command_peak_vram_bytes() == 10  # the command's
    memory.reset_command_peak()
    assert memory.command_peak_vram_bytes() == 0
    memory.reset()
