"""Pinholes a moved camera sees: found between opaque pixels only, sealed behind the surface, out of the
input view's sight (vd.pinholes)."""

import numpy as np
import torch

from vd.gaussians import Gaussians
from vd.lift import gaussians_from_rgbd
from vd.pinholes import leaks, pinholes, probe_poses, seal_pinholes, turn_poses
from vd.render import render
from vd.unseen import CHANGE

W, H, F = 64, 48, 40.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float64)


def _floor_with_parted_rows():
    """A checkered floor 1 m below the camera, seen at a grazing angle from 3 m up to 12 m, lifted one
    Gaussian a pixel and then shrunk along its longest (along-floor) axis to 40 %, as the optimiser does
    to sharpen the input view's rows: they part when the camera moves forward."""
    v, u = np.mgrid[0:H, 0:W]
    ray_y = (v + 0.5 - H / 2) / F
    depth = np.where(ray_y > 1 / 12, 1.0 / np.maximum(ray_y, 1e-6), 0.0).astype(np.float32)
    depth[depth > 12] = 0.0
    x = (u + 0.5 - W / 2) / F * depth
    check = ((np.floor(x * 2) + np.floor(depth * 2)) % 2).astype(np.float32)
    rgb = np.stack([0.3 + 0.5 * check, 0.4 + 0.2 * check, 0.5 - 0.3 * check], -1)
    g = gaussians_from_rgbd(
        rgb, depth, K.astype(np.float32), np.eye(4, dtype=np.float32), depth > 0, opacity=0.99, footprint=0.7
    )
    s = g.log_scales.exp()
    longest = s.argmax(dim=1)
    s[torch.arange(len(g)), longest] *= 0.4
    g.log_scales = s.log()
    return g, float(np.median(depth[depth > 0]))


def _draw(g, pose):
    cfw = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32)[None]
    res = render(g, cfw, torch.as_tensor(K, dtype=torch.float32)[None], W, H, backend="torch")
    return res.rgb[0], res.alpha[0]


def _pinhole_share(alpha):
    """Share of the covered pixels below alpha 0.9, away from the edge of what is covered (the floor's far
    edge and the image's bottom row are anti-aliased fringes, not gaps)."""
    covered = (alpha > 0.5).float()[None, None]
    inner = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(covered, (1, 1, 1, 1)), 3, stride=1)[0, 0] > 0.5
    return float((alpha[inner] < 0.9).float().mean())


def test_the_rows_a_forward_move_parts_are_sealed_and_the_input_view_is_unchanged():
    g, median = _floor_with_parted_rows()
    forward = np.eye(4)
    forward[2, 3] = 0.15 * median
    before = _pinhole_share(_draw(g, forward)[1])
    assert before > 0.05  # the shrunk rows part (the test's premise)

    new = seal_pinholes(g, probe_poses(0.15 * median), K, W, H, backend="torch", keep_from=(np.eye(4), K, W, H))
    assert len(new) > 0
    sealed = Gaussians.cat([g, new])
    assert _pinhole_share(_draw(sealed, forward)[1]) < 0.2 * before
    # and a smaller move forward, which no probe took, is sealed as well
    half = np.eye(4)
    half[2, 3] = 0.08 * median
    assert _pinhole_share(_draw(sealed, half)[1]) <= _pinhole_share(_draw(g, half)[1])
    # behind the floor: the input camera sees (almost) nothing of them
    rgb0, _ = _draw(g, np.eye(4))
    rgb1, _ = _draw(sealed, np.eye(4))
    assert float((rgb1 - rgb0).abs().max()) <= CHANGE + 1e-6


def test_no_sealing_gaussian_is_kept_where_the_protected_camera_sees_it():
    """Kept from the very camera that sees the pinholes, every Gaussian behind them would show: none is kept."""
    g, median = _floor_with_parted_rows()
    forward = np.eye(4)
    forward[2, 3] = 0.15 * median
    assert len(seal_pinholes(g, [forward], K, W, H, backend="torch")) > 0
    assert len(seal_pinholes(g, [forward], K, W, H, backend="torch", keep_from=(forward, K, W, H))) == 0


def test_a_gap_between_opaque_pixels_is_a_pinhole_the_scene_edge_and_a_hole_are_not():
    alpha = torch.ones(40, 60)
    alpha[10, 20:30] = 0.6  # a row of gaps inside a surface
    alpha[:, 55:] = 0.0  # the scene ends: nothing beyond column 55
    alpha[:, 54] = 0.7  # its anti-aliased fringe
    alpha[25:35, 5:15] = 0.0  # a hole (a disocclusion, for inpainting)
    alpha[25:35, 15] = 0.7  # its fringe
    alpha[0, :] = 0.7  # a fringe along the image's own edge
    found = pinholes(alpha)
    assert found[10, 20:30].all()
    assert not found[:, 54].any() and not found[25:35, 15].any() and not found[0, :].any()
    assert int(found.sum()) == 10


def test_probe_poses_move_by_the_distance_and_keep_the_orientation():
    origin = np.eye(4)
    origin[:3, 3] = (1.0, 2.0, 3.0)
    poses = probe_poses(0.5, origin)
    assert len(poses) == 14
    for p in poses:
        assert np.allclose(p[:3, :3], np.eye(3))
        assert np.isclose(np.linalg.norm(p[:3, 3] - origin[:3, 3]), 0.5)
    assert any(np.allclose(p[:3, 3], (1.0, 2.0, 3.5)) for p in poses)  # forward along the camera's z


def test_the_coarse_scene_is_sealed_around_the_input_and_keeps_the_canvas_view():
    """`seal_moves` probes moves of LAYER_MOVE times the input's median depth and keeps the canvas (ring)
    camera's render, which is wider than the input's."""
    from vd.stages.coarse_view import seal_moves
    from vd.views import View

    g, median = _floor_with_parted_rows()
    pad = 8
    K_ring = K.copy()
    K_ring[:2, 2] += pad
    Wr, Hr = W + 2 * pad, H + 2 * pad

    def view(kind, w, h, k):
        depth = np.zeros((h, w), np.float32)
        depth[h // 2 :] = median  # only the median matters here
        blank = np.zeros((h, w), bool)
        return View(kind, kind, np.zeros((h, w, 3), np.uint8), depth, k, np.eye(4), blank)

    views = [view("input", W, H, K), view("ring", Wr, Hr, K_ring)]
    sealed = seal_moves(g, views, "torch")
    assert len(sealed) > 0
    forward = np.eye(4)
    forward[2, 3] = 0.15 * median
    assert _pinhole_share(_draw(Gaussians.cat([g, sealed]), forward)[1]) < 0.2 * _pinhole_share(_draw(g, forward)[1])

    def canvas(scene):
        cfw = torch.eye(4)[None]
        return render(scene, cfw, torch.as_tensor(K_ring, dtype=torch.float32)[None], Wr, Hr, backend="torch").rgb[0]

    assert float((canvas(Gaussians.cat([g, sealed])) - canvas(g)).abs().max()) <= CHANGE + 1e-6


def test_turn_poses_turn_about_the_camera_centre_by_the_given_angles():
    yaw_right, yaw_left, pitch_up, pitch_down = turn_poses(9.0, 6.0)
    for pose, degrees in ((yaw_right, 9.0), (yaw_left, 9.0), (pitch_up, 6.0), (pitch_down, 6.0)):
        assert np.allclose(pose[:3, 3], 0.0) and np.isclose(np.linalg.det(pose[:3, :3]), 1.0)
        forward = pose[:3, :3] @ np.array([0.0, 0.0, 1.0])
        assert np.isclose(np.degrees(np.arccos(forward[2])), degrees)
    assert (yaw_right[:3, :3] @ [0, 0, 1])[0] > 0 and (yaw_left[:3, :3] @ [0, 0, 1])[0] < 0  # OpenCV: +x is right
    assert (pitch_up[:3, :3] @ [0, 0, 1])[1] < 0 and (pitch_down[:3, :3] @ [0, 0, 1])[1] > 0  # and +y is down


def test_the_canvas_reach_is_the_angle_the_ring_adds_beyond_the_input():
    from vd.stages.coarse_view import canvas_reach
    from vd.views import View

    def view(kind, w, h, k):
        return View(kind, kind, np.zeros((h, w, 3), np.uint8), np.ones((h, w), np.float32), k, np.eye(4), None)

    K_ring = K.copy()
    K_ring[0, 2] += 8
    K_ring[1, 2] += 4
    yaw, pitch = canvas_reach([view("input", W, H, K), view("ring", W + 16, H + 8, K_ring)])
    assert np.isclose(yaw, np.degrees(np.arctan((W / 2 + 8) / F) - np.arctan(W / 2 / F)))
    assert np.isclose(pitch, np.degrees(np.arctan((H / 2 + 4) / F) - np.arctan(H / 2 / F)))
    assert canvas_reach([view("input", W, H, K)]) == (0.0, 0.0)


def test_a_crack_at_a_depth_jump_is_sealed_with_the_farther_surface():
    """A 2-px crack between a near bar (2 m) and a far wall (4 m): the render's depth there mixes the two,
    so the crack is sealed with what lies beside it farther away, the wall, in the wall's colour."""
    v, u = np.mgrid[0:H, 0:W]
    wall_rgb = np.stack([np.full((H, W), 0.2), 0.3 + 0.4 * ((u // 4) % 2), np.full((H, W), 0.8)], -1).astype(np.float32)
    crack = (u >= 30) & (u <= 31) & (v >= 12) & (v < 36)
    bar = (u >= 20) & (u <= 29)
    wall = gaussians_from_rgbd(
        wall_rgb,
        np.full((H, W), 4.0, np.float32),
        K.astype(np.float32),
        np.eye(4),
        ~crack & ~bar,
        opacity=0.99,
        footprint=0.7,
    )
    bar_rgb = np.full((H, W, 3), (0.9, 0.2, 0.1), np.float32)
    near = gaussians_from_rgbd(
        bar_rgb, np.full((H, W), 2.0, np.float32), K.astype(np.float32), np.eye(4), bar, opacity=0.99, footprint=0.7
    )
    g = Gaussians.cat([wall, near])
    _, alpha = _draw(g, np.eye(4))
    assert float(alpha[crack].max()) < 0.9  # the test's premise: the crack shows through

    new = seal_pinholes(g, [np.eye(4)], K, W, H, backend="torch")
    rgb, alpha = _draw(Gaussians.cat([g, new]), np.eye(4))
    assert float(alpha[crack].min()) >= 0.9
    # in the wall's colour (blue), not the bar's (red), and behind the wall, not floating between it and the bar
    assert torch.allclose(new.colors()[:, [0, 2]], torch.tensor([0.2, 0.8]).expand(len(new), 2), atol=0.05)
    assert float(new.means[:, 2].min()) > 4.0
    assert float(rgb[torch.as_tensor(crack & (u == 31))][:, 2].min()) > 0.7


def test_what_shows_through_a_surface_is_backed_at_the_surface():
    """A wall at 2 m that is 98 % opaque before an opaque backdrop at 100 m (the street's facades before its
    sky): the expected depth reads the backdrop through it. The seal backs the wall, and its expected depth
    comes back to the wall's."""
    flat = np.full((H, W, 3), 0.5, np.float32)
    backdrop = gaussians_from_rgbd(
        flat, np.full((H, W), 100.0, np.float32), K.astype(np.float32), np.eye(4), opacity=0.99, footprint=1.0
    )
    wall = gaussians_from_rgbd(
        flat * 1.5, np.full((H, W), 2.0, np.float32), K.astype(np.float32), np.eye(4), opacity=0.8, footprint=0.7
    )
    g = Gaussians.cat([wall, backdrop])
    cfw = torch.eye(4)[None]
    Kt = torch.as_tensor(K, dtype=torch.float32)[None]
    inner = (slice(4, H - 4), slice(4, W - 4))
    before = render(g, cfw, Kt, W, H, backend="torch")
    median = render(g, cfw, Kt, W, H, backend="torch", depth_mode="median").depth[0]
    assert float(before.depth[0][inner].min()) > 3.0  # the premise: 3 % of 100 m pulls the wall's 2 m back
    assert bool(leaks(before.alpha[0], before.depth[0], median)[inner].all())

    new = seal_pinholes(g, [np.eye(4)], K, W, H, backend="torch")
    after = render(Gaussians.cat([g, new]), cfw, Kt, W, H, backend="torch").depth[0]
    assert float(after[inner].max()) < 2.2


def test_a_surface_edge_is_not_a_leak():
    """Where the first surface's depth jumps (a silhouette), the pixel mixes two sides: not a leak."""
    alpha = torch.ones(20, 20)
    median = torch.full((20, 20), 2.0)
    median[:, 10:] = 10.0
    depth = median.clone()
    depth[:, 9:11] = 6.0  # the edge columns' expected depth mixes the two sides
    depth[5, 3] = 2.5  # and one pixel of the near surface shows what is behind it
    found = leaks(alpha, depth, median)
    assert not bool(found[:, 8:12].any())
    assert bool(found[5, 3]) and int(found.sum()) == 1


def test_vd_refine_ends_with_the_pinholes_a_move_opens_sealed_out_of_the_photos_sight():
    """`vd refine` seals its result as `vd coarse` does (`RefineParams.seal`), around the dataset's input view."""
    from vd.stages.refine import resolve_params, run_refine
    from vd.views import View

    g, median = _floor_with_parted_rows()
    rgb, alpha = _draw(g, np.eye(4))
    depth = render(g, torch.eye(4)[None], torch.as_tensor(K, dtype=torch.float32)[None], W, H).depth[0].numpy()
    covered = alpha.numpy() > 0.5
    photo = View("input", "input", (rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8),
                 np.where(covered, depth, 0).astype(np.float32), K, np.eye(4), covered)
    forward = np.eye(4)
    forward[2, 3] = 0.15 * median
    runs = {}
    for seal in (False, True):
        out, info = run_refine([photo], g, resolve_params({}, iters=0, seal=seal), device="cpu")
        runs[seal] = (out, info)
    assert runs[False][1]["gaussians"]["sealed"] is None and len(runs[False][0]) == len(g)
    sealed = runs[True][1]["gaussians"]["sealed"]
    assert sealed > 0 and len(runs[True][0]) == len(g) + sealed
    assert _pinhole_share(_draw(runs[True][0], forward)[1]) < 0.2 * _pinhole_share(_draw(g, forward)[1])
    # behind the floor: the photo's camera sees (almost) nothing of them
    assert float((_draw(runs[True][0], np.eye(4))[0] - rgb).abs().max()) <= CHANGE + 1e-6
    # a dataset whose first view is no input photo at the identity pose has no moves to place: nothing sealed
    moved = View("input", "view", photo.rgb, photo.depth, K, np.eye(4), covered)
    assert run_refine([moved], g, resolve_params({}, iters=0), device="cpu")[1]["gaussians"]["sealed"] is None
