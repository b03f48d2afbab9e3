"""Depth alignment (docs/upstream.md#depth-alignment) and the depth-completion rule."""

import numpy as np
import pytest

from vd.align import align_depth, complete_depth


def _scene(H=48, W=64):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    true = 2.0 + 0.02 * xx + 0.01 * yy
    hole = np.zeros((H, W), bool)
    hole[10:30, 20:45] = True
    return true, hole


def test_recovers_affine_and_is_exact_on_known():
    true, hole = _scene()
    rendered = np.where(hole, 0.0, true).astype(np.float32)
    pred = (true - 0.5) / 1.7  # affine-distorted prediction
    out, info = align_depth(rendered, pred, hole, return_info=True)
    assert info.method == "lstsq"
    assert info.scale == pytest.approx(1.7, rel=1e-4) and info.shift == pytest.approx(0.5, abs=1e-3)
    assert np.array_equal(out[~hole], rendered[~hole])  # exact on known pixels (upstream was only close)
    assert np.abs(out[hole] - true[hole]).max() < 1e-3


def test_residual_propagates_smoothly_into_holes():
    true, hole = _scene()
    rendered = np.where(hole, 0.0, true + 0.3).astype(np.float32)  # constant offset on known
    pred = true.copy()
    pred[:, :10] += 1.0  # a local distortion the global fit cannot absorb
    out = align_depth(rendered, pred, hole)
    assert np.array_equal(out[~hole], rendered[~hole])
    # inside the hole the result stays close to the truth + offset (smooth, no seam)
    err = np.abs(out[hole] - (true[hole] + 0.3))
    assert err.mean() < 0.2
    # seam: values across the hole border differ little
    assert abs(out[20, 19] - out[20, 20]) < 0.1


def test_empty_hole_returns_render():
    true, _ = _scene()
    out = align_depth(true, true * 5, np.zeros_like(true, bool))
    assert np.array_equal(out, true)


def test_negative_slope_uses_median_ratio():
    true, hole = _scene()
    rendered = np.where(hole, 0.0, true).astype(np.float32)
    pred = 10.0 - true  # anti-correlated
    _, info = align_depth(rendered, pred, hole, return_info=True)
    assert info.method == "median" and info.shift == 0.0 and info.scale > 0


def test_few_pairs_identity():
    true, _ = _scene()
    hole = np.ones_like(true, bool)
    hole[0, :5] = False
    _, info = align_depth(true, true * 3, hole, return_info=True)
    assert info.method == "identity" and info.scale == 1.0


def test_ignores_garbage_predictions():
    true, hole = _scene()
    rendered = np.where(hole, 0.0, true).astype(np.float32)
    pred = true.copy()
    pred[0:5] = 500.0  # >= 199: ignored by the fit
    pred[5, 5] = np.nan
    out, info = align_depth(rendered, pred, hole, return_info=True)
    assert info.scale == pytest.approx(1.0, abs=1e-4)
    assert np.isfinite(out).all()


def test_complete_depth_far_side_first():
    H, W = 40, 60
    d = np.full((H, W), 5.0, np.float32)
    d[:, :30] = 1.0  # foreground on the left, background on the right
    hole = np.zeros((H, W), bool)
    hole[:, 25:40] = True  # disocclusion straddling the edge
    out = complete_depth(d, hole, smooth=0)
    assert np.array_equal(out[~hole], d[~hole])
    # the fronts meet at column 32, reached from both sides in the same step: the far side wins
    assert (out[:, 25:32] == 1.0).all() and (out[:, 32:40] == 5.0).all()
    assert np.isfinite(out).all() and (out > 0).all()


def test_complete_depth_outside_frame_and_invalid():
    d = np.full((20, 30), 2.0, np.float32)
    d[:, :5] = 0.0  # invalid -> completed too
    out = complete_depth(d, np.zeros_like(d, bool))
    assert (out > 0).all()
    with pytest.raises(ValueError):
        complete_depth(np.zeros((4, 4), np.float32), np.ones((4, 4), bool))


def _ring(H=64, W=96, pad=12):
    """(ring mask, inner slice): the image less its central (H - 2·pad)×(W - 2·pad) window."""
    ring = np.ones((H, W), bool)
    ring[pad : H - pad, pad : W - pad] = False
    return ring


def test_complete_depth_continues_a_tilted_floor_as_a_plane():
    # a floor seen from above and at a slant: 1/z affine in the pixel, nearer towards the bottom and the right
    H, W = 64, 96
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    true = (1.0 / (0.2 + 0.004 * vv + 0.001 * uu)).astype(np.float32)
    ring = _ring(H, W)
    known = np.where(ring, 0.0, true).astype(np.float32)
    err_new = np.abs(complete_depth(known, ring) - true)[ring] / true[ring]
    err_old = np.abs(complete_depth(known, ring, planes=False) - true)[ring] / true[ring]
    assert err_new.max() < 0.03 and err_new.mean() < 0.005
    assert err_old.max() > 0.15 and err_old.mean() > 0.04  # the flat copy of the border's depth


def test_complete_depth_keeps_a_wall_flat():
    ring = _ring()
    known = np.where(ring, 0.0, 3.0).astype(np.float32)
    np.testing.assert_allclose(complete_depth(known, ring), 3.0, rtol=1e-5)


def test_complete_depth_no_slope_from_a_jump_at_the_border():
    # a near bar (1 m) along the bottom of the known window, before a wall at 5 m: the jump is in the
    # fitting window of the bottom border, so the ring below takes the bar's depth, not a steep slope
    ring = _ring()
    known = np.where(ring, 0.0, 5.0).astype(np.float32)
    known[49:52, 12:84] = 1.0
    out = complete_depth(known, ring, smooth=0)
    assert (out[ring] >= 1.0 - 1e-5).all() and (out[ring] <= 5.0 + 1e-5).all()
    np.testing.assert_allclose(out[52:, 20:76], 1.0, rtol=1e-5)  # below the bar
    np.testing.assert_allclose(out[:12, 20:76], 5.0, rtol=1e-5)  # above the wall


def test_complete_depth_floor_past_its_horizon_stays_finite():
    # a floor whose horizon (1/z = 0) lies 2 rows above the known window: carried upwards, its plane
    # would pass through infinity and come back behind the camera
    H, W = 64, 96
    vv = np.mgrid[0:H, 0:W][0].astype(np.float64)
    q = 0.02 * (vv - 10.0)
    ring = _ring(H, W)
    known = np.where(ring, 0.0, 1.0 / np.where(ring, 1.0, q)).astype(np.float32)
    out = complete_depth(known, ring)
    assert np.isfinite(out).all() and (out > 0).all()
    assert out.max() <= 3.0 * known.max() + 1e-3  # within max_ratio of the border's depth
    below = (vv > 52) & ring  # where the floor continues nearer, it follows its plane
    np.testing.assert_allclose(out[below][:, None], (1.0 / q[below])[:, None], rtol=0.03)


def test_spawn_edges_keep_slopes_flag_jumps():
    from vd.align import depth_edges, spawn_edges

    H, W = 96, 128
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # a plane seen at a grazing angle: depth = 1 / (a*v + c), steep but smooth
    plane = 1.0 / (0.004 * yy + 0.2)
    d = plane.copy()
    d[40:60, 50:80] = 1.5  # a box in front: a real discontinuity
    e_model = depth_edges(d, d > 0)
    e = spawn_edges(d, d > 0)
    slope_rows = slice(2, 30)
    assert e_model[slope_rows].mean() > 0.3  # the plain rule flags the slope ...
    assert e[slope_rows].mean() < 0.02  # ... spawn_edges does not
    assert e[40:60, 48:52].any() and e[38:42, 55:75].any()  # box outline is an edge
    assert not e[50, 65]  # box interior is not


def _step(flying: bool):
    """A foreground (2 m, left) against a background (5 m, right), with one column of pixels at
    3.2 m between them when `flying` (what a depth model makes of a discontinuity)."""
    d = np.full((12, 16), 5.0, np.float32)
    d[:, :8] = 2.0
    if flying:
        d[:, 8] = 3.2
    return d


def test_assign_edge_depth_snaps_flying_pixels_to_the_nearer_side():
    from vd.align import assign_edge_depth, spawn_edges

    d = _step(True)
    out = assign_edge_depth(d, spawn_edges(d), d > 0)
    assert np.allclose(out[:, 8], 2.0)  # 3.2 is nearer (in depth) to 2 than to 5
    d[:, 8] = 4.1
    out = assign_edge_depth(d, spawn_edges(d), d > 0)
    assert np.allclose(out[:, 8], 5.0)
    assert np.array_equal(np.delete(out, 8, axis=1), np.delete(d, 8, axis=1))  # nothing else moves
    band = _step(False)
    band[:, 8], band[:, 9] = 2.9, 3.1  # two pixels wide: each joins a side
    out = assign_edge_depth(band, spawn_edges(band), band > 0)
    assert np.isin(out[:, 8:10], [2.0, 5.0]).all()


def test_assign_edge_depth_keeps_a_receding_plane_against_the_sky():
    """A floor seen at a grazing angle (inverse depth affine in v, depth jumps > 5 % per row)
    meeting a far background: every floor pixel continues the floor, none is moved."""
    from vd.align import assign_edge_depth, spawn_edges

    v = np.arange(16, dtype=np.float32)[:, None] * np.ones((1, 12), np.float32)
    d = np.where(v >= 6, 1.5 * 20.0 / (v - 5.0 + 0.5), 400.0).astype(np.float32)  # y = 1.5 m below, f = 20
    e = spawn_edges(d)
    assert e.any()
    assert np.array_equal(assign_edge_depth(d, e, d > 0), d)


def test_assign_edge_depth_keeps_true_surfaces_and_thin_structures():
    from vd.align import assign_edge_depth, spawn_edges

    d = _step(False)
    d[:, 12] = 1.0  # a one-pixel pole in front of the background
    e = spawn_edges(d)
    assert e[:, 12].all() and e[:, 7].all()
    assert np.array_equal(assign_edge_depth(d, e, d > 0), d)


def test_in_front_of_views_drops_what_would_hide_a_known_surface():
    from types import SimpleNamespace

    from vd.align import in_front_of_views

    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    known = SimpleNamespace(depth=np.full((12, 16), 4.0, np.float32), K=K, world_from_camera=np.eye(4))
    pose = np.eye(4)
    pose[0, 3] = 0.2  # a new camera 20 cm to the right, same orientation
    depth = np.full((12, 16), 4.0, np.float32)
    depth[:, :4] = 2.0  # in front of the wall the input sees
    depth[:, 4:8] = 6.0  # behind it: a true hole (a disocclusion)
    mask = np.ones((12, 16), bool)
    mask[0] = False
    front = in_front_of_views(depth, K, pose, [known], mask)
    assert front[1:, :4].all()
    assert not front[:, 4:].any()  # behind, or on the wall itself
    assert not front[0].any()  # outside the mask
    far = SimpleNamespace(depth=known.depth, K=K, world_from_camera=np.diag([1.0, 1, 1, 1]) @ _translate(0, 0, -50))
    assert not in_front_of_views(depth, K, pose, [far], mask).any()  # what a view does not see is never hidden


def _translate(x, y, z):
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def test_occluding_pixels_are_the_near_side_of_a_jump():
    from vd.align import occluding_pixels, spawn_edges

    d = _step(flying=False)  # 2 m on the left, 5 m on the right
    occ = occluding_pixels(d, spawn_edges(d, d > 0), d > 0)
    assert occ[:, 7].all()  # the foreground's last column
    assert not occ[:, 8:].any()  # the background is not occluding
    assert not occ[:, :7].any()  # nor is the foreground's interior
    flat = np.full((12, 16), 3.0, np.float32)
    assert not occluding_pixels(flat, np.ones_like(flat, bool)).any()


def test_in_front_of_views_drops_a_rim_point_beside_a_silhouette():
    """A point 3 m away that falls between a 2 m foreground pixel and the 6 m background beside it
    is in front of that background (the pixel it falls in alone would say it is behind)."""
    from types import SimpleNamespace

    from vd.align import in_front_of_views

    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    d = np.full((12, 16), 6.0, np.float32)
    d[:, :8] = 2.0  # the foreground ends at column 7
    known = SimpleNamespace(depth=d, K=K, world_from_camera=np.eye(4))
    depth = np.full((12, 16), 3.0, np.float32)
    mask = np.zeros((12, 16), bool)
    mask[5, 6] = True  # one pixel inside the foreground: behind it
    assert not in_front_of_views(depth, K, np.eye(4), [known], mask)[5, 6]
    mask[5, 6], mask[5, 7] = False, True
    # the foreground's last pixel, 0.4 px to the right in the known view: it falls in the 2 m
    # pixel, and spills over the 6 m one beside it
    shifted = _translate(0.4 * 3.0 / 20.0, 0, 0)
    assert in_front_of_views(depth, K, shifted, [known], mask)[5, 7]


def test_background_behind_edges_continues_the_far_surface_under_the_near_side():
    """A 2 m post (columns 6–9) before a 5 m wall, red left of it and blue right of it: the layer
    is the wall continued `band` pixels under each side of the post, just behind the wall, in
    the colour of its own side; nothing behind the wall, nothing past the band."""
    from vd.align import background_behind_edges, spawn_edges

    d = np.full((10, 16), 5.0, np.float32)
    d[:, 6:10] = 2.0
    rgb = np.zeros((10, 16, 3), np.float32)
    rgb[:, :6, 0] = 1.0
    rgb[:, 10:, 2] = 1.0
    rgb[:, 6:10] = 0.5
    mask, layer, colour = background_behind_edges(d, rgb, spawn_edges(d, d > 0), d > 0, band=1)
    assert mask[:, [6, 9]].all() and mask.sum() == 20  # the post's outer columns only
    assert np.allclose(layer[mask], 5.0 * 1.01)  # behind the wall's own Gaussians, not in front of them
    assert np.allclose(colour[:, 6], [1, 0, 0]) and np.allclose(colour[:, 9], [0, 0, 1])

    mask, layer, colour = background_behind_edges(d, rgb, spawn_edges(d, d > 0), d > 0, band=2)
    assert mask[:, 6:10].all() and not mask[:, :6].any() and not mask[:, 10:].any()
    assert np.allclose(layer[mask], 5.05)
    assert np.allclose(colour[:, 7], [1, 0, 0]) and np.allclose(colour[:, 8], [0, 0, 1])

    flat = np.full((10, 16), 3.0, np.float32)
    assert not background_behind_edges(flat, rgb, np.ones_like(flat, bool), band=4)[0].any()


def test_the_layer_behind_an_edge_reaches_as_far_as_a_move_uncovers():
    """Past the fixed band, the layer grows as far as a move opens each jump: parallax·(1/z_near − 1/z_far)
    pixels. A wide box 2 m away before a 5 m wall and, beside it, one 4 m away: with parallax 40 (a focal of
    100 px times a 0.4 m move) the wall continues about 40·(1/2 − 1/5) = 12 px under the near box, 2 px under
    the other (40·(1/4 − 1/5)), rounded up, and never past `max_band`."""
    from vd.align import background_behind_edges, spawn_edges

    d = np.full((48, 80), 5.0, np.float32)
    d[:20, 20:60] = 2.0
    d[28:, 20:60] = 4.0
    rgb = np.zeros((48, 80, 3), np.float32)

    def reach(**kw):  # columns of each box the layer covers from the box's left edge (its left half)
        mask = background_behind_edges(d, rgb, spawn_edges(d, d > 0), d > 0, band=1, **kw)[0]
        return int(mask[3, 20:40].sum()), int(mask[40, 20:40].sum())

    def opened(z_near):  # pixels the move opens beside the box (the layer lies 1 % behind the wall, at 5.05 m)
        return int(np.ceil(40.0 * (1 / z_near - 1 / 5.05)))

    assert reach() == (1, 1)
    assert reach(parallax=40.0, max_band=30) == (opened(2.0), opened(4.0)) == (13, 3)
    assert reach(parallax=40.0, max_band=8) == (8, 3)
