"""`vd fine` on a procedural coarse scene: view selection, the MCS loop (classical and tiny Flux
Fill on CPU), per-step memoisation, outputs and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

W, H = 48, 32


def make_coarse(folder: Path, *, with_views: bool = True) -> Path:
    """A small coarse output folder: a back wall with a box in front (disocclusions when moving),
    an input frame, and two added views rendered from the lifted scene."""
    import torch

    from vd.cameras import look_at
    from vd.lift import gaussians_from_rgbd
    from vd.render import render
    from vd.stages.coarse_folder import write_coarse_folder
    from vd.views import View

    K = np.array([[45.0, 0, W / 2], [0, 45.0, H / 2], [0, 0, 1]], dtype=np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = np.full((H, W), 4.0, np.float32)
    box = (abs(xx - W / 2) < 9) & (abs(yy - H / 2) < 6)
    depth[box] = 2.5
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = (xx * 5).astype(np.uint8)
    rgb[..., 1] = (yy * 7).astype(np.uint8)
    rgb[..., 2] = np.where(((xx // 8 + yy // 8) % 2) == 0, 200, 60)
    rgb[box] = [230, 180, 40]
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4, dtype=np.float32), None)
    full = np.ones((H, W), bool)
    frames = [View("input", "input", rgb, depth, K, np.eye(4), full, full, np.zeros((H, W), bool), 0)]
    if with_views:
        for i, x in enumerate((-0.5, 0.5)):
            pose = look_at((x, -0.1, 0.2), (0.0, 0.0, 3.0))
            vm = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32)[None]
            r = render(g, vm, torch.as_tensor(K)[None], W, H, backend="torch")
            vr = (r.rgb[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
            vd_ = r.depth[0].numpy().astype(np.float32)
            hole = r.alpha[0].numpy() < 0.5
            frames.append(View(f"view_{i}", "view", vr, vd_, K, pose, hole, ~hole, hole, 10 + 20 * i))
    # a short dense trajectory (9 poses, every 3rd is a candidate) keeps the CPU test fast
    write_coarse_folder(folder, frames, g, g, {"stage": "coarse", "params": {"n_frames": 3, "dense_multiplier": 3}})
    return folder


@pytest.fixture(scope="module")
def _coarse_master(tmp_path_factory) -> Path:
    return make_coarse(tmp_path_factory.mktemp("coarse") / "coarse")


@pytest.fixture
def coarse_dir(_coarse_master, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(_coarse_master, tmp_path / "coarse"))


def test_fine_frame_margins_are_multiples_of_16():
    from vd.stages.fine_views import fine_frame

    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    K2, w, h = fine_frame(K, 64, 48, 16)
    assert (w, h) == (96, 80)
    assert K2[0, 2] == 32 + 16 and K2[1, 2] == 24 + 16
    K3, w, h = fine_frame(K, 500, 370, 16)
    assert w % 16 == 0 and h % 16 == 0 and w >= 532 and h >= 402
    assert K3[0, 2] == pytest.approx(32 + (w - 500) / 2)


def test_select_views_prefers_large_holes_and_never_repeats(coarse_dir):
    from vd.stages.coarse_folder import read_coarse_folder
    from vd.stages.fine_views import fine_frame, select_views

    scene = read_coarse_folder(coarse_dir)
    K, w, h = fine_frame(scene.input_view.K, W, H, 16)
    views = select_views(scene, 3, K, w, h, backend="torch")
    assert len(views) == 3
    srcs = [v.source for v in views]
    assert len(set(srcs)) == 3
    ratios = [v.hole_ratio for v in views]
    assert ratios[0] > 0.0
    assert ratios[0] >= max(ratios[1:]) - 1e-9  # the first pick is the largest hole overall
    assert not any(np.allclose(v.world_from_camera, np.eye(4)) for v in views)


@pytest.mark.slow
def test_classical_loop_end_to_end_and_per_step_memoisation(coarse_dir, tmp_path, run_vd, monkeypatch):
    from PIL import Image

    from vd.ply import read_ply

    # `vd fine IMAGE` reads the coarse folder `vd coarse IMAGE` wrote (vd-out/<stem>/)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (W, H)).save(tmp_path / "photo.png")
    (tmp_path / "vd-out").mkdir()
    coarse_dir.rename(tmp_path / "vd-out" / "photo")
    opts = ["--inpaint-backend", "telea", "--allow-classical", "--views", "2", "--steps", "2", "--total-steps", "4",
            "--gs-iters", "1", "--device", "cpu", "--json"]
    r = run_vd("fine", "photo.png", *opts)
    assert r.code == 0, r
    out = tmp_path / "vd-out" / "photo" / "fine"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(res["ply"]).resolve() == (out / "fine.ply").resolve()
    assert "step" in r.stderr and "GS loss" in r.stderr  # the summary table
    g, _ = read_ply(out / "fine.ply")
    assert len(g) > 100
    s = json.loads((out / "summary.json").read_text())
    assert len(s["steps"]) == 2 and [row["step"] for row in s["steps"]] == [0, 1]
    assert len(s["views"]) == 2
    assert all(row["gs_loss_final"] is not None for row in s["steps"])
    assert s["schedule"][-1] == 0.0 and s["start_index"] == 2
    assert s["denoiser"]["name"] == "classical-telea"
    assert s["licences"] == {}  # no weights
    assert {"select_s", "total_s"} <= set(s["timings"]) and "peak_bytes" in s["vram"]
    with Image.open(out / "steps" / "step_00.png") as im:
        assert im.size == (2 * s["frame"]["width"], 2 * s["frame"]["height"])
    assert (out / "steps" / "final.png").is_file()
    # the folder form, elsewhere: every step comes from the cache, same scene; paths on stdout
    out2 = tmp_path / "elsewhere"
    r2 = run_vd("fine", tmp_path / "vd-out" / "photo", "-o", out2, *opts[:-1])
    assert r2.code == 0, r2
    lines = r2.stdout.strip().splitlines()
    assert lines[0] == str(out2 / "fine.ply") and str(out2 / "summary.json") in lines
    assert (out2 / "fine.ply").read_bytes() == (out / "fine.ply").read_bytes()
    s2 = json.loads((out2 / "summary.json").read_text())
    assert all(row["cached"] for row in s2["steps"]) and s2["final"]["cached"]


def test_a_cpu_run_fits_its_scenes_with_the_cpu_iterations_and_says_so(caplog):
    import logging

    from vd.params import FINE_GS_ITERS, FineParams, FluxParams, RunOptions
    from vd.stages.fine import prepare_fine

    options = RunOptions(inpaint_backend="telea", allow_classical=True, device="cpu")
    with caplog.at_level(logging.INFO, logger="vd"):
        runner = prepare_fine(FineParams(), options, FluxParams())
    assert runner.params.gs_iters == FINE_GS_ITERS["cpu"] < FINE_GS_ITERS["gpu"]
    assert "CPU run" in caplog.text and "--gs-iters" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vd"):
        assert prepare_fine(FineParams(gs_iters=7), options, FluxParams()).params.gs_iters == 7
    assert "CPU run" not in caplog.text
    assert FineParams().resolved("cuda:0").gs_iters == FINE_GS_ITERS["gpu"]


def test_flux_fill_without_weights_exits_3(coarse_dir, run_vd):
    r = run_vd("fine", coarse_dir, "--inpaint-backend", "flux-fill", "--device", "cpu")
    assert r.code == 3, r
    assert "vd fetch" in r.stderr and "Traceback" not in r.stderr


def test_telea_without_allow_classical_exits_2(coarse_dir, run_vd):
    r = run_vd("fine", coarse_dir, "--inpaint-backend", "telea", "--device", "cpu")
    assert r.code == 2, r
    assert "--allow-classical" in r.stderr and "Traceback" not in r.stderr
    assert not (coarse_dir / "fine").exists()
    # auto on a CPU machine picks telea and says why
    r = run_vd("fine", coarse_dir, "--device", "cpu")
    assert r.code == 2 and "no CUDA" in r.stderr


def test_missing_and_bad_inputs(tmp_path, run_vd):
    r = run_vd("fine", tmp_path / "nope", "--allow-classical", "--inpaint-backend", "telea")
    assert r.code == 1 and "not found" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_vd("fine", tmp_path / "empty", "--allow-classical", "--inpaint-backend", "telea")
    assert r.code == 1 and "cameras.json" in r.stderr
    img = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    r = run_vd("fine", img, "-o", tmp_path / "o", "--allow-classical", "--inpaint-backend", "telea")
    assert r.code == 1 and "vd coarse" in r.stderr
    (tmp_path / "scene.ply").write_bytes(b"ply\n")  # a Gaussian file is no image vd coarse ran on
    r = run_vd("fine", tmp_path / "scene.ply", "--allow-classical", "--inpaint-backend", "telea")
    assert r.code == 1 and "is a Gaussian file; vd fine takes the output folder of vd coarse" in r.stderr, r
    r = run_vd("fine", tmp_path / "empty", "--steps", "30", "--total-steps", "25")
    assert r.code == 2 and "--steps" in r.stderr
    r = run_vd("fine", tmp_path / "empty", "--rect-weight", "1.5")
    assert r.code == 2
    r = run_vd("fine", tmp_path / "empty", "--alpha-weight", "-1")
    assert r.code == 2 and "--alpha-weight" in r.stderr and "Traceback" not in r.stderr


def test_the_coverage_term_keeps_the_fitted_scene_opaque(coarse_dir):
    """`rectify` (each scene fit of `vd fine`) with --alpha-weight: fitting a texture finer than the Gaussians
    opens pinholes in the anchors' alpha unless the coverage term holds them closed."""
    import torch

    from vd.render import render
    from vd.stages.coarse_folder import read_coarse_folder
    from vd.stages.fine import rectify

    scene = read_coarse_folder(coarse_dir)
    K = scene.anchors[0].K
    pose = np.asarray(scene.anchors[0].world_from_camera, np.float32)
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((1, H, W, 3)).astype(np.float32))  # detail at the pixel scale
    low = {}
    for weight in (0.0, 10.0):
        g, _ = rectify(scene, target, pose[None], K, iters=40, seed=0, backend="torch", device="cpu",
                       alpha_weight=weight)
        alpha = render(g, torch.eye(4)[None], torch.as_tensor(K, dtype=torch.float32)[None], W, H).alpha[0]
        low[weight] = float((alpha < 0.98).float().mean())
    assert low[0.0] > 0.01 and low[10.0] < 0.25 * low[0.0], low


@pytest.mark.slow
def test_a_run_killed_after_a_step_resumes_at_the_next_one(coarse_dir, tmp_path):
    from vd.cache import Cache
    from vd.stages.denoisers import ClassicalDenoiser
    from vd.stages.fine import FineParams, run_fine

    params = FineParams(views=2, steps=2, total_steps=4, gs_iters=1)
    calls = []

    class Dies(ClassicalDenoiser):
        def velocity(self, x, t, state):
            calls.append(t)
            if len(calls) == 2:
                raise KeyboardInterrupt  # killed during step 1
            return super().velocity(x, t, state)

    with pytest.raises(KeyboardInterrupt):
        run_fine(coarse_dir, tmp_path / "o", params, denoiser_factory=lambda: Dies("cpu"), device="cpu", cache=Cache.open())
    assert not (tmp_path / "o" / "fine.ply").exists()  # no partial output
    calls.clear()

    class Counts(ClassicalDenoiser):
        def velocity(self, x, t, state):
            calls.append(t)
            return super().velocity(x, t, state)

    res = run_fine(coarse_dir, tmp_path / "o", params, denoiser_factory=lambda: Counts("cpu"), device="cpu", cache=Cache.open())
    assert res.cached_steps == 1 and len(calls) == 1  # only step 1 ran again
    s = res.summary
    assert [r["cached"] for r in s["steps"]] == [True, False]


def test_a_scene_fit_keeps_a_photos_fine_texture_where_it_was(tmp_path):
    """A narrow photo's scene: texture at the pixel scale, a long focal length. Each scene fit of `vd fine` starts
    afresh from the coarse scene and is short; Adam's first steps move every Gaussian by about the position rate
    whatever its gradient: at vd's former rate (1e-4 in the scene's units, a fortieth of a pixel here) a fit of 60
    iterations moved them by a quarter of a pixel and left the input view at 21 dB (62 dB now). The rate counts
    pixels now (FineParams.lr_means)."""
    import torch

    from vd.lift import gaussians_from_rgbd
    from vd.params import FineParams
    from vd.render import render
    from vd.stages.coarse_folder import CoarseScene
    from vd.stages.fine import rectify
    from vd.views import View, pixel_footprint

    w, h, f = 96, 72, 480.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = (2.0 + 0.001 * np.arange(w)[None, :] + 0.0003 * np.arange(h)[:, None]).astype(np.float32)
    g = gaussians_from_rgbd(rgb.astype(np.float32) / 255, depth, K, opacity=0.99)
    Kt = torch.tensor(K, dtype=torch.float32)[None]
    target = (render(g, torch.eye(4)[None], Kt, w, h).rgb[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    photo = View("input", "input", target, depth, K, np.eye(4), supervise=np.ones((h, w), bool))
    scene = CoarseScene(tmp_path, g, None, [photo], {})
    # a refined view a little to the side: the scene's own render there, as a denoiser that changes nothing
    pose = np.eye(4)
    pose[0, 3] = 0.02
    view = render(g, torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32)[None], Kt, w, h).rgb.clamp(0, 1)

    def fit(lr_means):
        out, _ = rectify(scene, view, [pose], K, iters=30, seed=0, backend="torch", device="cpu", lr_means=lr_means)
        after = render(out, torch.eye(4)[None], Kt, w, h).rgb[0].clamp(0, 1)
        mse = float(((after - torch.tensor(target / 255.0, dtype=torch.float32)) ** 2).mean())
        return -10 * np.log10(mse), float(((out.means - g.means).norm(dim=-1) * f / 2.0).median())

    rate = FineParams().lr_means * pixel_footprint(scene.anchors)  # what MCSLoop passes
    psnr, moved = fit(rate)
    assert psnr > 38.0 and moved <= 60 * 1.5 * FineParams().lr_means + 1e-6
    psnr_before, moved_before = fit(None)  # vd.train's rate in the scene's units
    assert moved_before > 0.1 and psnr_before < psnr - 3.0
