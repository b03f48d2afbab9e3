"""The quality evaluation (bench/quality): its renderer checked against a brute-force reference,
its ground truth checked against its own geometry, and a small run as a regression test with
generous floors (the recorded numbers live in bench/quality.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import moves as mv  # noqa: E402
from bench.quality.reference import render_reference  # noqa: E402
from bench.quality.scenes import make_scene  # noqa: E402
from bench.quality.score import ground_truth, score_view, summarise  # noqa: E402
from vd.gaussians import Gaussians, rgb_to_sh0  # noqa: E402
from vd.render import render  # noqa: E402


def _few_gaussians(n=7, seed=3):
    gen = torch.Generator().manual_seed(seed)
    means = torch.stack([torch.rand(n, generator=gen) * 1.2 - 0.6, torch.rand(n, generator=gen) * 0.8 - 0.4,
                         2.0 + torch.rand(n, generator=gen) * 2.0], -1)
    log_scales = torch.log(0.1 + 0.3 * torch.rand(n, 3, generator=gen))
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    logits = torch.randn(n, generator=gen) * 1.5 + 1.0
    sh = rgb_to_sh0(torch.rand(n, 3, generator=gen))[:, None, :]
    return Gaussians(means, log_scales, quats, logits, sh)


def test_torch_renderer_matches_brute_force_reference():
    g = _few_gaussians()
    W, H = 32, 24
    K = np.array([[30.0, 0, 16.0], [0, 30.0, 12.0], [0, 0, 1]])
    vm = np.eye(4)
    vm[:3, 3] = [0.05, -0.02, 0.1]
    rgb, dep, alpha = render_reference(g.means.numpy(), g.log_scales.numpy(), g.quats.numpy(), g.opacity_logits.numpy(),
                                       g.sh[:, 0].numpy(), vm, K, W, H)
    assert alpha.max() > 0.9 and (alpha > 0.5).mean() > 0.05  # opaque cores, soft tails
    res = render(g, torch.as_tensor(vm, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32), W, H,
                 backend="torch")
    np.testing.assert_allclose(res.alpha[0].numpy(), alpha, atol=2e-4)
    np.testing.assert_allclose(res.rgb[0].numpy(), rgb, atol=2e-4)
    hit = alpha > 0.05
    np.testing.assert_allclose(res.depth[0].numpy()[hit], dep[hit], rtol=1e-3)


def test_reference_sees_an_opacity_change():
    """The comparison above can fail: the reference reacts to what the renderer must get right."""
    g = _few_gaussians()
    K = np.array([[30.0, 0, 16.0], [0, 30.0, 12.0], [0, 0, 1]])
    a0 = render_reference(g.means.numpy(), g.log_scales.numpy(), g.quats.numpy(), g.opacity_logits.numpy(),
                          g.sh[:, 0].numpy(), np.eye(4), K, 32, 24)[2]
    a1 = render_reference(g.means.numpy(), g.log_scales.numpy(), g.quats.numpy(), g.opacity_logits.numpy() - 1,
                          g.sh[:, 0].numpy(), np.eye(4), K, 32, 24)[2]
    assert np.abs(a0 - a1).max() > 0.05


def test_ground_truth_depth_is_the_geometry():
    """A pixel's ray-cast depth, lifted and re-projected into a moved camera, lands where that
    camera's ray cast finds the same depth (the moves and the ray caster agree)."""
    scene = make_scene("room", 64, 48)
    gts = ground_truth(scene, ["right"])
    inp, mov = gts
    K = inp.K
    v, u = 30, 20
    z = inp.depth[v, u]
    X = np.array([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z])
    cam = np.linalg.inv(mov.world_from_camera)
    Xc = cam[:3, :3] @ X + cam[:3, 3]
    uu, vv = K[0, 0] * Xc[0] / Xc[2] + K[0, 2], K[1, 1] * Xc[1] / Xc[2] + K[1, 2]
    assert abs(mov.depth[int(vv), int(uu)] - Xc[2]) < 0.05 * Xc[2]
    assert np.allclose(mov.world_from_camera, mv.move_pose("right", float(np.median(inp.depth))))


def test_lift_scores_perfectly_where_it_is_exact():
    """A plain lift at the input view: full coverage, depth close (edge pixels blend both sides)."""
    scene = make_scene("room", 64, 48)
    gt = ground_truth(scene, [])[0]
    from vd.lift import gaussians_from_rgbd

    s = score_view(gaussians_from_rgbd(gt.rgb, gt.depth, gt.K.astype(np.float32)), gt)
    assert s["coverage"] > 0.999 and s["absrel"] < 0.06 and s["psnr"] > 20


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The 64x48 room scored at four moves: the plain lift, the scaffold of vd coarse, vd coarse
    with two added views (--fallback closest) and vd refine of its exported dataset (30 iterations),
    as summaries (bench.quality.score.summarise)."""
    from bench.quality.run import refine_gaussians, write_input
    from vd.cache import Cache
    from vd.lift import gaussians_from_rgbd
    from vd.params import CoarseParams
    from vd.stages.coarse import run_coarse

    scene = make_scene("room", 64, 48)
    gts = ground_truth(scene, ["back", "right", "yaw-left", "forward-up-pitch"])
    image = write_input(gts[0], tmp_path_factory.mktemp("quality"))
    cache = Cache.open(tmp_path_factory.mktemp("cache"), remote=None)
    res = run_coarse(image, CoarseParams(n_frames=4, init_iters=30, view_iters=30, fallback="closest"),
                     depth_backend="file", inpaint_backend="telea", render_backend="torch", device="cpu", cache=cache,
                     out=image.parent / "closest")
    assert res.summary["selected"] - res.summary["move_views"] == 2  # the trajectory's; then those at probe moves
    lift = gaussians_from_rgbd(gts[0].rgb, gts[0].depth, gts[0].K.astype(np.float32))
    refined = refine_gaussians(image.parent / "closest", iters=30)
    return {name: summarise([score_view(g, gt) for gt in gts])
            for name, g in (("lift", lift), ("scaffold", res.scaffold), ("coarse", res.gaussians), ("refine", refined))}


@pytest.mark.slow
def test_no_seams_at_the_input_view(small_run):
    """Depth-edge pixels spawn: the input view is covered everywhere (5f1dd5a: 0.62 at this size)."""
    s = small_run["scaffold"]
    assert s["input_coverage"] >= 0.995, s
    assert s["input_psnr"] > small_run["lift"]["input_psnr"] + 3, small_run


@pytest.mark.slow
def test_geometry_kept(small_run):
    """On the surfaces the input sees, the optimised scaffold's depth is no worse than the plain lift's."""
    assert small_run["scaffold"]["novel_absrel_seen"] <= small_run["lift"]["novel_absrel_seen"], small_run
    assert small_run["coarse"]["novel_absrel_seen"] <= small_run["lift"]["novel_absrel_seen"], small_run


@pytest.mark.slow
def test_added_views_keep_the_input_view_and_fill_holes(small_run):
    sc, co = small_run["scaffold"], small_run["coarse"]
    assert co["input_psnr"] >= sc["input_psnr"] - 0.5, small_run
    assert co["novel_coverage"] >= 0.95 and co["novel_coverage_worst"] >= 0.9, small_run
    assert co["novel_psnr"] >= small_run["lift"]["novel_psnr"] - 1.0, small_run


@pytest.mark.slow
def test_refine_keeps_the_input_view(small_run):
    """vd refine of the exported dataset (the input view is one of its views) keeps the input view
    covered and at the issue's 33 dB (its 30 iterations start by blurring a coarse scene that reaches
    ~39 dB here), the novel views covered, and the seen geometry no worse than the plain lift's (an
    export with its images upside down: input PSNR 20 dB)."""
    co, rf = small_run["coarse"], small_run["refine"]
    assert rf["input_coverage"] >= 0.995, small_run
    assert rf["input_psnr"] >= 33.0, small_run
    assert rf["novel_coverage"] >= co["novel_coverage"] - 0.02, small_run
    assert rf["novel_absrel_seen"] <= small_run["lift"]["novel_absrel_seen"], small_run


def test_depth_term_adds_the_relative_depth_error_of_the_render():
    """optimise(depth_weight=w) adds w · mean |d_render − d| / d over the depth mask to the loss."""
    from vd.lift import gaussians_from_rgbd
    from vd.train import TrainView, optimise

    gt = ground_truth(make_scene("room", 32, 24), [])[0]
    target = gt.depth * 1.2  # 20 % too far: the render's relative error is about 1/6
    losses = {}
    for w in (0.0, 2.0):
        g = gaussians_from_rgbd(gt.rgb, gt.depth, gt.K.astype(np.float32))
        tv = TrainView(rgb=gt.rgb, mask=None, K=gt.K.astype(np.float32), camera_from_world=np.eye(4, dtype=np.float32),
                       depth=target)
        losses[w] = optimise(g, [tv], 1, backend="torch", depth_weight=w).losses[0]
    g = gaussians_from_rgbd(gt.rgb, gt.depth, gt.K.astype(np.float32))
    d = render(g, torch.eye(4), torch.as_tensor(gt.K, dtype=torch.float32), 32, 24, backend="torch").depth[0].numpy()
    rel = float(np.mean(np.abs(d - target) / target))
    assert abs((losses[2.0] - losses[0.0]) - 2.0 * rel) < 1e-4, (losses, rel)
