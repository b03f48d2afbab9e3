"""Training: reproduce a synthetic RGB-D scene, masked losses, trainable subsets, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vd.gaussians import Gaussians
from vd.lift import gaussians_from_rgbd
from vd.render import render
from vd.ssim import masked_ssim, ssim_map
from vd.train import DEFAULT_LRS, TrainView, masked_l1, optimise, view_loss

H, W = 24, 32
K = np.array([[30.0, 0, 16.0], [0, 30.0, 12.0], [0, 0, 1]], np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_view():
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.stack([0.5 + 0.45 * np.sin(u / 3.0), v / H, 0.5 + 0.45 * np.cos((u + v) / 4.0)], -1).astype(np.float32)
    rgb[:4, :4] = 0.0  # pure black and white pixels must stay finite and trainable
    rgb[-4:, -4:] = 1.0
    depth = (2.0 + 0.02 * u + 0.3 * np.sin(v / 7.0)).astype(np.float32)
    return rgb, depth


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return -10 * math.log10(max(mse, 1e-12))


def test_reproduces_input_view_psnr_30db_after_short_optimisation():
    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    view = TrainView(rgb, np.ones((H, W), bool), K, np.eye(4, dtype=np.float32))
    # a short run: upstream LRs, with gsplat's SH-DC rate so that 40 steps suffice on 2 CPU cores
    rep = optimise(g, [view], 40, seed=0, lrs={"sh": 2.5e-3})
    assert rep.iters == 40 and len(rep.losses) == 40 and rep.backend == "torch"
    assert rep.final_loss < rep.losses[0]
    out = render(g, torch.eye(4), torch.from_numpy(K), W, H)
    assert psnr(out.rgb[0], torch.from_numpy(rgb)) >= 30.0
    for t in g.tensors().values():
        assert torch.isfinite(t).all()


def test_trainable_subset_leaves_frozen_gaussians_untouched():
    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K)
    g.sh[:, 0] += 0.3  # a colour error to fix
    before = g.clone()
    trainable = torch.zeros(len(g), dtype=torch.bool)
    trainable[::3] = True
    rep = optimise(g, [TrainView(rgb, None, K, np.eye(4))], 5, trainable=trainable, seed=1)
    assert rep.n_trainable == int(trainable.sum())
    for name, t in g.tensors().items():
        old = getattr(before, name)
        assert torch.equal(t[~trainable], old[~trainable]), name
    assert not torch.equal(g.sh[trainable], before.sh[trainable])


def test_seeded_runs_are_identical_and_views_sampled():
    rgb, depth = synthetic_view()
    views = [
        TrainView(rgb, None, K, np.eye(4)),
        TrainView(rgb[:, ::-1].copy(), None, K, np.eye(4)),
    ]
    runs = []
    for _ in range(2):
        g = gaussians_from_rgbd(rgb, depth, K)
        runs.append((optimise(g, views, 3, seed=7).losses, g))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1].means, runs[1][1].means)


def test_losses_use_only_supervised_pixels():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(H, W, 3, generator=gen)
    target = pred.clone()
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, : W // 2] = True
    target[:, W // 2 :] = 1.0 - target[:, W // 2 :]  # garbage outside the mask
    assert float(masked_l1(pred, target, mask)) == 0.0
    assert abs(float(masked_ssim(pred, target, mask)) - 1.0) < 1e-5
    assert float(view_loss(pred, target, mask)) < 1e-5
    # ...while upstream's whole-frame SSIM (docs/upstream.md#training) would see the garbage
    assert float(ssim_map(pred, target).mean()) < 0.9
    # gradients do not reach unsupervised pixels
    p = pred.clone().requires_grad_()
    view_loss(p, torch.rand(H, W, 3, generator=gen), mask).backward()
    assert float(p.grad[:, W // 2 :].abs().max()) == 0.0
    assert float(p.grad[:, : W // 2].abs().max()) > 0.0


def test_ssim_of_identical_images_is_one_and_decreases_with_noise():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(20, 20, 3, generator=gen)
    assert torch.allclose(ssim_map(a, a), torch.ones(20, 20), atol=1e-5)
    b = (a + 0.2 * torch.randn(20, 20, 3, generator=gen)).clamp(0, 1)
    assert float(ssim_map(a, b).mean()) < 0.9


def test_defaults_and_bad_arguments():
    assert DEFAULT_LRS == {"means": 1e-4, "sh": 5e-4, "log_scales": 5e-3, "opacity_logits": 5e-2, "quats": 1e-3}
    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K)
    v = TrainView(rgb, None, K, np.eye(4))
    with pytest.raises(ValueError):
        optimise(g, [v], 1, lrs={"colour": 1.0})
    with pytest.raises(ValueError):
        optimise(g, [v], 1, trainable=torch.ones(3, dtype=torch.bool))
    assert optimise(g, [v], 0).iters == 0
    assert optimise(g, [v], 3, trainable=torch.zeros(len(g), dtype=torch.bool)).n_trainable == 0
    seen = []
    optimise(g, [v], 2, progress=lambda i, loss: seen.append((i, loss)))
    assert [i for i, _ in seen] == [0, 1]


def test_fit_colours_undoes_the_blur_of_overlapping_gaussians():
    from vd.train import fit_colours

    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))  # one pixel's footprint: neighbours blend in
    view = TrainView(rgb, np.ones((H, W), bool), K, np.eye(4, dtype=np.float32))
    before = psnr(render(g, torch.eye(4), torch.from_numpy(K), W, H).rgb[0], torch.from_numpy(rgb))
    geometry = {k: getattr(g, k).clone() for k in ("means", "log_scales", "quats", "opacity_logits")}
    fit_colours(g, [view], 6)
    after = psnr(render(g, torch.eye(4), torch.from_numpy(K), W, H).rgb[0], torch.from_numpy(rgb))
    assert after > before + 8.0 and after > 32.0
    for k, t in geometry.items():  # colours only
        assert torch.equal(getattr(g, k), t), k


def test_fit_colours_converges_over_views_that_share_gaussians():
    """The scaffold's two views: the input frame, and the canvas around it supervising its ring only, from the
    same camera. Gaussians along the frame's border render into both; the fit must improve both views with
    every iteration (stepping view by view over-corrected those Gaussians and the ring's border diverged)."""
    import torch.nn.functional as F

    from vd.train import fit_colours

    torch.manual_seed(1)
    h, w, pad = 24, 32, 8

    def texture(cell: int):  # random colours on a grid of `cell` px, interpolated: detail at that scale
        low = torch.rand(1, 3, (h + 2 * pad) // cell + 1, (w + 2 * pad) // cell + 1)
        up = F.interpolate(low, scale_factor=cell, mode="bilinear", align_corners=False)
        return up[0, :, : h + 2 * pad, : w + 2 * pad].permute(1, 2, 0).numpy()

    canvas = texture(8)  # the ring: smooth, as an inpainter continues a photo
    canvas[pad:-pad, pad:-pad] = texture(2)[pad:-pad, pad:-pad]  # the photo: detail near the pixel scale
    k_canvas = np.array([[40.0, 0, w / 2 + pad], [0, 40.0, h / 2 + pad], [0, 0, 1]], np.float32)
    k_input = np.array([[40.0, 0, w / 2], [0, 40.0, h / 2], [0, 0, 1]], np.float32)
    ring = np.ones(canvas.shape[:2], bool)
    ring[pad:-pad, pad:-pad] = False
    depth = np.full(canvas.shape[:2], 2.0, np.float32)
    g = Gaussians.cat(
        [
            gaussians_from_rgbd(
                canvas[pad:-pad, pad:-pad], depth[pad:-pad, pad:-pad], k_input, footprint=0.7, opacity=0.99
            ),
            gaussians_from_rgbd(canvas, depth, k_canvas, mask=ring, footprint=0.7, opacity=0.99),
        ]
    )
    views = [
        TrainView(canvas[pad:-pad, pad:-pad], None, k_input, np.eye(4, dtype=np.float32)),
        TrainView(canvas, ring, k_canvas, np.eye(4, dtype=np.float32)),
    ]

    def scores():
        out = []
        for v in views:
            r = render(g, torch.eye(4), v.K, v.width, v.height).rgb[0]
            out.append(psnr(r[v.mask], v.rgb[v.mask]))
        return out

    history = [scores()]
    for _ in range(8):
        fit_colours(g, views, 1)
        history.append(scores())
    for i, name in enumerate(("input", "ring")):
        values = [s[i] for s in history]
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), (name, values)
        assert values[-1] > values[0] + 5.0, (name, values)


def test_fit_colours_touches_only_trainable_gaussians_and_supervised_pixels():
    from vd.train import fit_colours

    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    before = g.sh.clone()
    trainable = torch.zeros(len(g), dtype=torch.bool)
    trainable[: len(g) // 2] = True
    fit_colours(g, [TrainView(rgb, None, K, np.eye(4))], 3, trainable=trainable)
    assert torch.equal(g.sh[~trainable], before[~trainable])
    assert not torch.equal(g.sh[trainable], before[trainable])
    # a view that supervises nothing changes nothing
    g2 = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    sh2 = g2.sh.clone()
    fit_colours(g2, [TrainView(rgb, np.zeros((H, W), bool), K, np.eye(4))], 3)
    assert torch.equal(g2.sh, sh2)


def _patch_scene():
    """A lifted view at 48×64, a 10×15-pixel patch of it trainable, two target views."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    rgb = rng.random((h, w, 3)).astype(np.float32)
    depth = (2.0 + 0.5 * rng.random((h, w))).astype(np.float32)
    k = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]], np.float32)
    g = gaussians_from_rgbd(rgb, depth, k, opacity=0.9)
    patch = np.zeros((h, w), bool)
    patch[5:15, 40:55] = True
    trainable = torch.from_numpy(patch.reshape(-1))  # one Gaussian per pixel, in pixel order
    moved = np.eye(4, dtype=np.float32)
    moved[0, 3] = -0.1
    target = np.clip(rgb + 0.1 * rng.standard_normal(rgb.shape), 0, 1).astype(np.float32)
    mask = np.ones((h, w), bool)
    mask[:, :8] = False
    views = [TrainView(target, mask, k, np.eye(4, dtype=np.float32), depth=depth), TrainView(target, None, k, moved)]
    return g, trainable, views, k, (h, w)


def test_reach_window_holds_what_the_gaussians_can_change():
    from vd.train import reach_window

    g, trainable, _, k, (h, w) = _patch_scene()
    box = reach_window(g.means[trainable], g.log_scales[trainable], torch.eye(4), torch.from_numpy(k), w, h)
    assert box is not None
    x0, y0, x1, y1 = box
    assert x0 <= 40 - 12 and x1 >= 55 + 12 or x1 == w  # the patch and the margin
    assert y0 == 0 and y1 >= 15 + 12
    assert x0 > 0  # the left of the view is out of reach
    far = reach_window(
        g.means[trainable], g.log_scales[trainable], torch.eye(4), torch.from_numpy(k), w, h, travel=0.05, growth=2.0
    )  # centres that may move 5 cm (~1.3 px), scales that may double
    assert far is not None and far[0] < x0 and far[3] > y1
    behind = torch.eye(4)
    behind[2, 3] = -2.2  # the camera moved 2.2 m forward: some Gaussians now behind it
    assert reach_window(g.means[trainable], g.log_scales[trainable], behind, torch.from_numpy(k), w, h) is None
    assert reach_window(g.means, g.log_scales, torch.eye(4), torch.from_numpy(k), w, h) is None  # the whole view


@pytest.mark.parametrize("backend", ["torch", pytest.param("gsplat", marks=pytest.mark.gpu)])
def test_a_trainable_subset_trains_the_same_over_its_window_as_over_the_whole_view(monkeypatch, backend):
    """Rendering only the window the trainable Gaussians reach changes nothing but the time."""
    import vd.train as train
    from vd.train import fit_colours

    if backend == "gsplat":
        pytest.importorskip("gsplat")
    device = "cuda" if backend == "gsplat" else "cpu"
    g, trainable, views, _, _ = _patch_scene()
    g, trainable = g.to(device), trainable.to(device)
    runs = []
    for whole in (False, True):
        if whole:
            monkeypatch.setattr(train, "reach_window", lambda *a, **kw: None)
        h = g.clone()
        rep = optimise(h, views, 12, trainable=trainable, depth_weight=1.0, alpha_weight=10.0, seed=3, backend=backend)
        fit_colours(h, views, 3, trainable=trainable, backend=backend)
        runs.append((h.to("cpu"), rep))
    g = g.to("cpu")
    (a, ra), (b, rb) = runs
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        moved = (getattr(b, name) - getattr(g, name)).abs().max()
        assert moved > 1e-4, name  # it trained
        assert (getattr(a, name) - getattr(b, name)).abs().max() < 1e-2 * float(moved), name  # float noise: ~1e-3
    assert abs(ra.final_loss - rb.final_loss) < 1e-5 * rb.final_loss  # the whole view's loss either way


def test_a_trainable_subset_renders_only_the_gaussians_its_window_shows(monkeypatch):
    """The fixed Gaussians out of the window are left out of its renders (the test above: same result)."""
    import vd.train as train
    from vd.train import fit_colours

    g, trainable, views, _, _ = _patch_scene()
    drawn = []
    real = train.render

    def counting_render(scene, viewmats, Ks, width, height, **kw):
        if width < views[0].width:  # a window's (optimise's last loss is the whole view's, with every one)
            drawn.append(len(scene))
        return real(scene, viewmats, Ks, width, height, **kw)

    monkeypatch.setattr(train, "render", counting_render)
    optimise(g.clone(), views, 4, trainable=trainable, seed=3, backend="torch")
    fit_colours(g.clone(), views, 2, trainable=trainable, backend="torch")
    assert len(drawn) >= 4 + 2 * (2 + 2)  # optimise's iterations, fit_colours' renders of both views
    assert max(drawn) < 0.7 * len(g)  # the window does not show the left of the view
    assert min(drawn) >= int(trainable.sum())


def _reads_per_iteration(monkeypatch, run):
    """Host reads of `run()` per training iteration (an iteration starts at each render)."""
    from _host_reads import HostReads

    import vd.train as train

    reads = HostReads()
    real = train.render

    def render_marking_iterations(*a, **kw):
        reads.iteration()
        return real(*a, **kw)

    monkeypatch.setattr(train, "render", render_marking_iterations)
    with reads:
        rep = run()
    return reads, rep


@pytest.mark.parametrize("subset", [False, True])
def test_training_steps_wait_for_the_device_only_when_they_log(monkeypatch, subset):
    """No `.item()`, `bool(t)`, nonzero or boolean-mask indexing in a training step that does not
    log (each one stalls a GPU); a logged step reads the losses once."""
    g, trainable, views, _, _ = _patch_scene()  # a partial mask, a depth target, two views
    iters = 12
    reads, rep = _reads_per_iteration(
        monkeypatch,
        lambda: optimise(
            g, views, iters, trainable=trainable if subset else None, depth_weight=1.0, seed=0, log_every=5
        ),
    )
    assert len(reads.per_iteration) == iters + (1 if subset else 0)  # + the whole view's final loss
    logged = {0, 4, 9, iters - 1}
    for it, found in enumerate(reads.per_iteration[:iters]):
        if it not in logged:
            assert found == [], (it, found)
    assert all(len(f) <= 3 for f in reads.per_iteration)
    assert [e["iter"] for e in rep.log] == [1, 5, 10, 12] and len(rep.losses) == iters
    assert rep.log[-1]["loss"] == rep.losses[-1] and set(rep.log[0]) == {"iter", "loss", "rgb", "depth"}


def test_densification_keeps_adam_state_of_the_surviving_gaussians():
    """Split and prune keep each surviving Gaussian's Adam moments (rows follow the Gaussian), give
    the new Gaussians zero moments, and the step count continues (as gsplat's strategy ops)."""
    from vd.train import Densify, GaussianAdam

    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    g.opacity_logits[:5] = -9.0  # below prune_opacity: pruned
    adam = GaussianAdam(g.tensors(), DEFAULT_LRS)
    view = TrainView(rgb, None, K, np.eye(4))
    for _ in range(3):
        out = render(Gaussians(**adam.params), view.camera_from_world[None], view.K[None], W, H)
        adam.step(view_loss(out.rgb[0], view.rgb, None))
    n = len(adam)
    before = {k: {s: v.clone() for s, v in adam.state(k).items()} for k in adam.params}
    means_before = adam.params["means"].detach().clone()
    grad = torch.zeros(n)
    grad[[10, 20, 30]] = torch.tensor([3.0, 2.0, 1.0])  # the three to split (fraction 3/n)
    d = Densify(every=1, start=1, until=9, fraction=3 / n)
    split, pruned = adam.densify(grad, d, torch.Generator().manual_seed(0))
    assert (split, pruned) == (3, 5)
    survivors = torch.ones(n, dtype=torch.bool)
    survivors[:5] = False
    survivors[[10, 20, 30]] = False
    assert len(adam) == int(survivors.sum()) + 6
    assert torch.equal(adam.params["means"][: int(survivors.sum())], means_before[survivors])
    for k in adam.params:
        state = adam.state(k)
        assert int(state["step"]) == 3, k  # continues: not a fresh optimiser
        for s in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[s][: int(survivors.sum())], before[k][s][survivors]), (k, s)
            assert not state[s][int(survivors.sum()) :].any(), (k, s)  # new Gaussians: zero moments
            assert state[s].shape == adam.params[k].shape
    # each row's row before: the survivors, then each parent twice (its two children)
    parents = torch.tensor([10, 20, 30])
    assert torch.equal(adam.sources, torch.cat([survivors.nonzero().squeeze(1), parents, parents]))
    # training goes on with the kept state: one more step counts 4
    out = render(Gaussians(**adam.params), view.camera_from_world[None], view.K[None], W, H)
    adam.step(view_loss(out.rgb[0], view.rgb, None))
    assert int(adam.state("means")["step"]) == 4


def test_optimise_densifies_without_restarting_adam():
    from vd.train import Densify

    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    n0 = len(g)
    g.opacity_logits[:7] = -9.0
    d = Densify(every=2, start=2, until=4, fraction=0.05)
    rep = optimise(g, [TrainView(rgb, None, K, np.eye(4))], 6, densify=d)
    assert rep.pruned == 7 and rep.split > 0
    assert len(g) == n0 - 7 + rep.split and g.sh.shape[0] == len(g)
    assert rep.adam_steps == 6  # a rebuilt optimiser would count 2 (the steps after the last densification)
    for t in g.tensors().values():
        assert torch.isfinite(t).all()


def test_held_gaussians_train_on_anchor_views_only():
    """A view that is not an anchor moves only the Gaussians that are not held; an anchor moves them all."""
    rgb, depth = synthetic_view()
    held = torch.zeros(H * W, dtype=torch.bool)
    held[: H * W // 2] = True  # the top half of the picture
    wrong = rgb.copy()
    wrong[...] = 0.5  # a grey view pulls every Gaussian's colour
    for anchor in (False, True):
        g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
        before = g.clone()
        optimise(g, [TrainView(wrong, None, K, np.eye(4), anchor=anchor)], 4, seed=0, held=held)
        for name, t in g.tensors().items():
            assert torch.equal(t[held], getattr(before, name)[held]) != anchor, (anchor, name)
            assert not torch.equal(t[~held], getattr(before, name)[~held]), (anchor, name)


def test_held_gaussians_stay_held_through_densification_and_a_trainable_subset():
    """Pruning and splitting reorder the rows; the held ones are still the same Gaussians after."""
    from vd.train import Densify

    rgb, depth = synthetic_view()
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    n = len(g)
    g.sh[:, 0, 0] = torch.linspace(-1.0, 1.0, n)  # a colour of its own: a Gaussian is found by it
    g.opacity_logits[::7] = -9.0  # pruned, held or not
    held = torch.zeros(n, dtype=torch.bool)
    held[::2] = True
    before = g.clone()
    d = Densify(every=2, start=2, until=4, fraction=0.2)
    view = TrainView(np.full_like(rgb, 0.5), None, K, np.eye(4), anchor=False)
    rep = optimise(g, [view], 6, densify=d, held=held, seed=0)
    assert rep.split > 0 and rep.pruned == len(range(0, n, 7))
    alive = torch.ones(n, dtype=torch.bool)
    alive[::7] = False
    unchanged = torch.isin(g.sh[:, 0, 0], before.sh[:, 0, 0])
    # exactly the held survivors kept their colour (the grey view moved every other one), in their order
    assert torch.equal(g.sh[unchanged], before.sh[held & alive])
    assert int(unchanged.sum()) == int((held & alive).sum())

    sub = torch.zeros(len(g), dtype=torch.bool)
    sub[:10] = True
    with pytest.raises(ValueError, match="held"):
        optimise(g, [view], 1, held=torch.zeros(3, dtype=torch.bool))
    g2 = g.clone()
    optimise(g2, [view], 2, trainable=sub, held=sub.clone())  # what trains is all held: nothing moves
    assert torch.equal(g2.sh, g.sh)


def test_fit_colours_iterations_wait_for_the_device_nowhere(monkeypatch):
    """fit_colours' iterations (one render per target and iteration) read nothing back."""
    from vd.train import fit_colours

    g, trainable, views, _, _ = _patch_scene()
    reads, _ = _reads_per_iteration(monkeypatch, lambda: fit_colours(g, views, 3, trainable=trainable))
    # the weights of each target and its depth-weighted weights (the depth edges), then 3 iterations x 2 targets
    assert len(reads.per_iteration) == 2 * 2 + 3 * 2
    assert all(found == [] for found in reads.per_iteration), reads.per_iteration


def test_the_coverage_term_keeps_the_supervised_pixels_opaque():
    """A texture finer than the Gaussians: the photometric loss alone slides the lifted Gaussians
    apart by fractions of a pixel and opens pinholes at the very view it fits (as on the real
    photo of bench/quality); the coverage term keeps every supervised pixel's alpha at the floor."""
    from vd.train import COVERAGE_FLOOR, coverage_loss

    rng = np.random.default_rng(0)
    k = np.array([[400.0, 0, W / 2], [0, 400.0, H / 2], [0, 0, 1]], np.float32)  # 5 mm a pixel at 2 m
    texture = rng.random((H, W, 3)).astype(np.float32)
    depth = np.full((H, W), 2.0, np.float32)
    lifted = gaussians_from_rgbd(texture, depth, k, opacity=0.99, footprint=0.7)  # as the scaffold lifts
    view = TrainView(texture, None, k, np.eye(4, dtype=np.float32), depth=depth)
    alphas = {}
    for weight in (0.0, 10.0):
        g = lifted.clone()
        rep = optimise(g, [view], 30, seed=0, depth_weight=1.0, alpha_weight=weight)
        assert ("alpha" in rep.log[-1]) == (weight > 0)
        alphas[weight] = render(g, torch.eye(4), torch.from_numpy(k), W, H).alpha[0]
    assert float((alphas[0.0] < 0.98).float().mean()) > 0.05  # the fault: pinholes
    assert float((alphas[10.0] < 0.98).float().mean()) == 0.0
    # the term: the mean shortfall below the floor, over the supervised pixels only
    a = torch.ones(H, W)
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[:, : W // 4] = False
    a[:, : W // 4] = 0.0  # unsupervised
    assert float(coverage_loss(a, mask)) == 0.0
    a[0, W - 1] = 0.5
    a[1, W - 1] = COVERAGE_FLOOR + 0.005  # above the floor: no loss
    assert abs(float(coverage_loss(a, mask)) - (COVERAGE_FLOOR - 0.5) / int(mask.sum())) < 1e-7
    assert abs(float(coverage_loss(a, None)) - (COVERAGE_FLOOR - 0.5 + COVERAGE_FLOOR * H * (W // 4)) / (H * W)) < 1e-6


def _normals(g):
    from vd.geometry import quat_to_rotmat_torch

    R = quat_to_rotmat_torch(g.quats.detach())
    return R[torch.arange(len(g)), :, g.log_scales.detach().argmin(1)]


def test_far_gaussians_keep_their_normal_and_near_ones_tilt():
    rgb, depth = synthetic_view()
    depth[:6] = 60.0  # a backdrop 30x farther than the rest: the views cannot tell its tilt
    views = [TrainView(rgb, np.ones((H, W), bool), K, np.eye(4, dtype=np.float32))]
    moved = np.eye(4, dtype=np.float32)
    moved[0, 3] = 0.2
    views.append(TrainView(np.roll(rgb, 2, axis=1), np.ones((H, W), bool), K, moved))
    far = torch.zeros(H, W, dtype=torch.bool)
    far[:6] = True
    far_rows, near_rows = far.reshape(-1), ~far.reshape(-1)  # one Gaussian a pixel, in raster order
    for beyond in (3.0, None):
        g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
        assert len(g) == H * W
        normals, quats = _normals(g), g.quats.clone()
        optimise(g, views, 12, seed=0, fixed_orientation_beyond=beyond)
        tilt = torch.rad2deg(torch.arccos((_normals(g) * normals).sum(-1).abs().clamp(max=1.0)))
        assert tilt[near_rows].max() > 0.5  # near Gaussians tilt
        if beyond is None:
            assert tilt[far_rows].max() > 0.5  # Adam tilts the far ones too when let
        else:
            assert tilt[far_rows].max() < 0.01
            assert not torch.equal(g.quats[far_rows], quats[far_rows])  # they still turn about their normal


def test_fit_colours_leaves_no_complementary_outline_at_a_depth_edge():
    """A red box at 1 m in front of a grey wall at 3 m, lifted one Gaussian a pixel: the box's Gaussians blur
    over the edge, and deconvolving the wall's colours beside it would turn them cyan (the complement that
    cancels the red), an outline any other view shows. Beside the edge they keep within MIXED_COLOUR_STEP of
    their grey; away from it the fit deconvolves as before."""
    from vd.train import fit_colours

    step = 0.1  # vd.train.MIXED_COLOUR_STEP

    h, w = 24, 32
    rgb = np.full((h, w, 3), 0.5, np.float32)
    depth = np.full((h, w), 3.0, np.float32)
    rgb[:, :14] = (0.8, 0.1, 0.1)
    depth[:, :14] = 1.0
    k = np.array([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]], np.float32)
    g = gaussians_from_rgbd(rgb, depth, k, np.eye(4), footprint=1.5, opacity=0.99)
    grey_before = g.sh[:, 0].clone()
    view = TrainView(rgb, np.ones((h, w), bool), k, np.eye(4, dtype=np.float32))
    fit_colours(g, [view], 8)
    from vd.render.sh import C0

    moved = ((g.sh[:, 0] - grey_before) * C0).abs().amax(1).reshape(h, w)
    wall = torch.from_numpy(depth == 3.0)
    assert float(moved[:, 14:17].max()) <= step + 1e-5  # the wall's first columns beside the box
    red_shift = ((g.sh[:, 0, 0] - grey_before[:, 0]) * C0).reshape(h, w)
    assert float(red_shift[:, 14:17].min()) >= -step - 1e-5  # not pushed toward cyan past the step
    assert float(moved[wall][:].mean()) < 0.05  # the rest of the wall stays grey
    r = render(g, torch.eye(4), torch.from_numpy(k), w, h).rgb[0]
    assert psnr(r[:, 18:], torch.from_numpy(rgb)[:, 18:]) > 30  # away from the edge, the view is reproduced


def test_a_fit_capped_at_max_opacity_leaves_no_pixel_skipping_its_own_gaussian():
    """The rasteriser skips the Gaussian that would take a pixel's transmittance below 1e-4 (as gsplat does): a
    plane of Gaussians at opacity 0.999 leaves pixels 90 % covered, each dropping its own Gaussian after its
    neighbours covered most of it. A fit that keeps every opacity at MAX_OPACITY (0.99) cannot end that way."""
    from vd.train import MAX_OPACITY

    w, h, f = 64, 48, 80.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = (5.0 + 1e-4 * rng.random((h, w))).astype(np.float32)
    Kt = torch.tensor(K, dtype=torch.float32)
    view = TrainView(
        rgb=torch.tensor(rgb / 255.0, dtype=torch.float32), mask=torch.ones(h, w, dtype=torch.bool), K=Kt,
        camera_from_world=torch.eye(4),
    )

    def thin_pixels(g):
        return int((render(g, torch.eye(4)[None], Kt[None], w, h).alpha[0] < 0.98).sum())

    g = gaussians_from_rgbd(rgb, depth, K, opacity=0.999)
    assert thin_pixels(g) > 0.1 * w * h  # opaque Gaussians, see-through pixels
    for cap in (None, MAX_OPACITY):
        fitted = g.clone()
        optimise(fitted, [view], 5, backend="torch", max_opacity=cap, alpha_weight=3.0)
        opacity = torch.sigmoid(fitted.opacity_logits)
        if cap is None:
            assert thin_pixels(fitted) > 0.1 * w * h and float(opacity.max()) > 0.998
        else:
            assert thin_pixels(fitted) == 0 and float(opacity.max()) <= MAX_OPACITY + 1e-6
