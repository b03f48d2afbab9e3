"""Hole masks: threshold + erode/dilate, torch formulation equals the OpenCV one."""

import numpy as np

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
