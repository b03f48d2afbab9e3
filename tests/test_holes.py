"""Hole masks (threshold + erode/dilate, equal to OpenCV), alpha splatting and the incremental hole scan."""

import numpy as np
import pytest

from vd.holes import hole_mask_cv2, hole_mask_np, hole_masks, scale_intrinsics


def test_torch_morphology_matches_opencv():
    rng = np.random.default_rng(0)
    for _ in range(5):
        alpha = (rng.random((40, 56)) > rng.uniform(0.2, 0.9)).astype(np.float32)
        alpha[10:20, 10:30] = 0.0
        assert np.array_equal(hole_mask_np(alpha), hole_mask_cv2(alpha))


def test_specks_removed_and_holes_grown():
    alpha = np.ones((50, 50), np.float32)
    alpha[5:7, 5:7] = 0.0  # a 2x2 speck: eroded away
    alpha[20:30, 20:30] = 0.2  # a 10x10 hole: grows by ~4 px
    m = hole_mask_np(alpha)
    assert not m[:15, :15].any()
    assert m[20:30, 20:30].all()
    assert m[18:32, 18:32].all() and not m[14, 14]
    assert m.sum() == 18 * 18  # 10 - 4 (erode) + 12 (3 dilations) = 18


def test_threshold():
    alpha = np.full((20, 20), 0.49, np.float32)
    assert hole_mask_np(alpha).all()
    alpha[:] = 0.5
    assert not hole_mask_np(alpha).any()


def test_batched():
    a = np.ones((3, 20, 20), np.float32)
    a[1] = 0
    m = hole_masks(a)
    assert m.shape == (3, 20, 20) and m[1].all() and not m[0].any()


def test_scale_intrinsics():
    K = np.array([[100.0, 0, 32], [0, 90.0, 24], [0, 0, 1]])
    K2 = scale_intrinsics(K, 0.5)
    assert np.allclose(K2, [[50, 0, 16], [0, 45, 12], [0, 0, 1]])


def _plane_gaussians():
    from vd.lift import gaussians_from_rgbd

    H, W = 48, 64
    rgb = np.full((H, W, 3), 128, np.uint8)
    d = np.full((H, W), 4.0, np.float32)
    d[16:32, 20:40] = 2.0
    K = np.array([[56, 0, 32], [0, 56, 24], [0, 0, 1]], np.float32)
    return gaussians_from_rgbd(rgb, d, K), K


def test_splat_alpha_matches_renderer():
    import torch

    from vd.cameras import candidate_intrinsics, invert_pose, look_at
    from vd.holes import splat_alpha
    from vd.render import render

    g, K = _plane_gaussians()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 8)
    poses = np.stack([np.eye(4), look_at((0.4, -0.1, 0.2), (0, 0, 3))])
    vm = torch.as_tensor(invert_pose(poses), dtype=torch.float32)
    Ks = torch.as_tensor(Kc, dtype=torch.float32)[None].expand(2, 3, 3)
    a_r = render(g, vm, Ks, W, H, backend="torch").alpha
    a_s = splat_alpha(g, vm, Ks, W, H)
    assert float((a_r - a_s).abs().max()) < 1e-3


def test_reduced_scan_matches_full_scan():
    from vd.cameras import candidate_intrinsics, look_at
    from vd.holes import scan_hole_ratios, scan_hole_ratios_full

    g, K = _plane_gaussians()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 16)
    poses = np.stack([np.eye(4)] + [look_at((x, 0.0, z), (0, 0, 3)) for x, z in [(0.3, 0), (-0.5, 0.3), (0.8, -0.2)]])
    full = scan_hole_ratios_full(g, poses, Kc, W, H, backend="torch").ratios
    fast = scan_hole_ratios(g, poses, Kc, W, H, scale=0.5).ratios
    assert np.abs(full - fast).max() < 0.03, (full, fast)
    assert np.argmax(full) == np.argmax(fast)


def test_scan_ratios_refines_close_calls_to_the_exact_selection():
    from vd.cameras import candidate_intrinsics, look_at
    from vd.holes import HoleScan, scan_hole_ratios_full
    from vd.params import CoarseParams
    from vd.stages.coarse_view import scan_ratios
    from vd.stages.select import select

    g, K = _plane_gaussians()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 16)
    poses = np.stack([np.eye(4)] + [look_at((x, 0.0, z), (0, 0, 3)) for x, z in
                                     [(0.1, 0), (0.2, 0), (0.3, 0.1), (-0.3, 0.1), (0.5, -0.2), (0.45, -0.2)]])
    full = scan_hole_ratios_full(g, poses, Kc, W, H, backend="torch").ratios
    for band in [(0.05, 0.25), (0.1, 0.5), (0.2, 0.3)]:
        for fb in ("none", "closest"):
            p = CoarseParams(scan_scale=0.25, min_ratio=band[0], max_ratio=band[1], fallback=fb, adjacent_exclusion=0)
            scan = HoleScan(poses, Kc, W, H, scale=0.25).add(g)
            r, n_exact, _ = scan_ratios(scan, [], p)
            kw = dict(min_ratio=band[0], max_ratio=band[1], adjacent_exclusion=0, fallback=fb)
            a, b = select(full, [], **kw), select(r, [], **kw)
            assert (a is None) == (b is None) and (a is None or a.index == b.index), (band, fb, full, r)
            assert n_exact == len(scan.exact_indices)
            assert np.array_equal(r[scan.exact_indices], full[scan.exact_indices])  # measured exactly


def _two_chunks():
    """A plane scene split in two chunks (as the scaffold and one added view)."""
    import torch

    g, K = _plane_gaussians()
    n = len(g)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return g.select(perm[: n // 2].sort().values), g.select(perm[n // 2:].sort().values), K


def test_hole_scan_grows_incrementally_with_the_same_bits_as_from_scratch():
    from vd.cameras import candidate_intrinsics, look_at
    from vd.gaussians import Gaussians
    from vd.holes import HoleScan, scan_hole_ratios_full

    a, b, K = _two_chunks()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 16)
    poses = np.stack([np.eye(4)] + [look_at((x, 0.0, z), (0, 0, 3)) for x, z in [(0.3, 0), (-0.5, 0.3), (0.8, -0.2)]])
    grown = HoleScan(poses, Kc, W, H, scale=0.5).add(a)
    before = grown.exact_ratios([1, 2])
    grown.add(b)
    fresh = HoleScan(poses, Kc, W, H, scale=0.5).add(a).add(b)
    assert np.array_equal(grown.fast_ratios(), fresh.fast_ratios())
    assert np.array_equal(grown.exact_ratios([1, 2, 3]), fresh.exact_ratios([1, 2, 3]))
    full = scan_hole_ratios_full(Gaussians.cat([a, b]), poses, Kc, W, H, backend="torch").ratios
    assert np.array_equal(grown.exact_ratios(range(4)), full)
    assert not np.array_equal(before, grown.exact_ratios([1, 2]))  # the added half covered holes
    assert np.abs(grown.fast_ratios() - full).max() < 0.03


def test_hole_scan_is_exact_at_full_scale():
    from vd.cameras import candidate_intrinsics, look_at
    from vd.holes import HoleScan, scan_hole_ratios_full

    g, K = _plane_gaussians()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 16)
    poses = np.stack([np.eye(4), look_at((0.6, 0.1, -0.3), (0, 0, 3))])
    scan = HoleScan(poses, Kc, W, H)  # 96 px wide: scanned at full size
    assert scan.exact_only and scan.tolerance == 0.0
    assert np.array_equal(scan.add(g).fast_ratios(), scan_hole_ratios_full(g, poses, Kc, W, H, backend="torch").ratios)


def test_wide_footprints_are_splatted_whole():
    """Gaussians wider than the padded fast path (radius > 8 px) match the renderer too."""
    import torch

    from vd.gaussians import Gaussians
    from vd.holes import splat_alpha
    from vd.render import render

    rng = np.random.default_rng(3)
    n = 40
    means = np.c_[rng.uniform(-1.2, 1.2, n), rng.uniform(-0.9, 0.9, n), rng.uniform(2.5, 4.0, n)]
    g = Gaussians(means=torch.tensor(means, dtype=torch.float32),
                  log_scales=torch.tensor(np.log(rng.uniform(0.02, 0.4, (n, 3))), dtype=torch.float32),
                  quats=torch.nn.functional.normalize(torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32), dim=-1),
                  opacity_logits=torch.tensor(rng.normal(0, 1, n), dtype=torch.float32),
                  sh=torch.zeros(n, 1, 3))
    K = torch.tensor([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]])[None]
    vm = torch.eye(4)[None]
    a_r = render(g, vm, K, 80, 60, backend="torch").alpha
    a_s = splat_alpha(g, vm, K, 80, 60)
    assert float((a_r - a_s).abs().max()) < 2e-3
    assert float(a_s.max()) > 0.5


def test_morphology_matches_opencv_for_other_kernels():
    rng = np.random.default_rng(5)
    for kernel, erode, dilate in [(3, 2, 1), (7, 1, 2), (5, 0, 3), (5, 2, 0)]:
        alpha = (rng.random((37, 51)) > 0.3).astype(np.float32)
        kw = dict(kernel=kernel, erode=erode, dilate=dilate)
        assert np.array_equal(hole_mask_np(alpha, **kw), hole_mask_cv2(alpha, **kw)), kw


@pytest.mark.gpu
def test_hole_scan_on_cuda_matches_the_renderer():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from vd.cameras import candidate_intrinsics, look_at
    from vd.holes import HoleScan, scan_hole_ratios_full

    a, b, K = _two_chunks()
    Kc, W, H = candidate_intrinsics(K, 64, 48, 16)
    poses = np.stack([np.eye(4)] + [look_at((x, 0.0, z), (0, 0, 3)) for x, z in [(0.3, 0), (-0.5, 0.3), (0.8, -0.2)]])
    gpu = HoleScan(poses, Kc, W, H, scale=0.5, device="cuda").add(a.to("cuda")).add(b.to("cuda"))
    cpu = HoleScan(poses, Kc, W, H, scale=0.5).add(a).add(b)
    assert np.abs(gpu.fast_ratios() - cpu.fast_ratios()).max() < 1e-3
    from vd.gaussians import Gaussians

    full = scan_hole_ratios_full(Gaussians.cat([a, b]), poses, Kc, W, H, backend="torch").ratios
    assert np.abs(gpu.exact_ratios(range(4)) - full).max() < 1e-3
