"""RGB-D initialisation: pixel-centre back-projection, tangent-plane orientation, fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vd.geometry import quat_to_rotmat_torch
from vd.lift import backproject, gaussians_from_rgbd

H, W = 24, 32
K = np.array([[40.0, 0, 16.0], [0, 40.0, 12.0], [0, 0, 1]], np.float32)


def plane_depth(normal, d=2.0):
    """z-depth of the plane n·X = -d (n facing the camera) seen through pixel centres."""
    n = np.asarray(normal, np.float64)
    n = n / np.linalg.norm(n)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0], (v + 0.5 - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    return (-d / (rays @ n)).astype(np.float32), n


def test_backprojection_uses_pixel_centres():
    depth = torch.full((H, W), 2.0)
    P = backproject(depth, torch.from_numpy(K))
    # the principal point (16, 12) is the corner between pixels; pixel (12, 16) centre is +0.5 px
    assert torch.allclose(P[12, 16], torch.tensor([0.5 / 40 * 2, 0.5 / 40 * 2, 2.0]))
    assert torch.allclose(P[11, 15], torch.tensor([-0.5 / 40 * 2, -0.5 / 40 * 2, 2.0]))


@pytest.mark.parametrize("normal", [(0, 0, -1), (0.3, -0.2, -1), (-0.5, 0.4, -1), (0.0, 0.7, -1)])
def test_plane_normal_is_the_thin_axis(normal):
    depth, n = plane_depth(normal)
    rgb = np.full((H, W, 3), 0.5, np.float32)
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    assert len(g) == H * W
    R = quat_to_rotmat_torch(g.quats)  # columns are the Gaussian's axes
    thin = g.log_scales.argmin(dim=1)
    assert (thin == 2).all()
    axis = R[torch.arange(len(g)), :, thin]
    cos = (axis.double() @ torch.from_numpy(n)).abs()
    assert cos.min() > 0.999, cos.min()
    # thin: the normal axis is much smaller than the in-plane ones
    s = g.log_scales.exp()
    assert (s[:, 2] <= 0.11 * s[:, :2].min(1).values).all()
    # the footprint of a fronto-parallel pixel gives the isotropic size z/f/sqrt(2)
    if normal == (0, 0, -1):
        assert torch.allclose(s[:, 0], torch.full((len(g),), 2.0 / 40 / math.sqrt(2)), rtol=1e-4)


def test_world_pose_rotates_normals_and_means():
    depth, n = plane_depth((0.2, 0.1, -1))
    rgb = np.zeros((H, W, 3), np.float32)
    a = math.radians(30)
    Rwc = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], np.float32)
    T = np.eye(4, dtype=np.float32)
    T[:3, :3] = Rwc
    T[:3, 3] = [1, 2, 3]
    g_cam = gaussians_from_rgbd(rgb, depth, K, np.eye(4))
    g_w = gaussians_from_rgbd(rgb, depth, K, T)
    assert torch.allclose(g_w.means, g_cam.means @ torch.from_numpy(Rwc).T + torch.tensor([1.0, 2, 3]), atol=1e-5)
    Rw = quat_to_rotmat_torch(g_w.quats)[:, :, 2]
    assert ((Rw.double() @ torch.from_numpy(Rwc.astype(np.float64) @ n)).abs() > 0.999).all()


def test_isotropic_fallback_at_depth_edges_and_holes():
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, W // 2:] = 6.0  # a depth discontinuity
    depth[5, 5] = np.nan
    depth[6, 6] = 0.0
    rgb = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    g = gaussians_from_rgbd(rgb, depth, K)
    assert len(g) == H * W - 2
    assert torch.isfinite(g.log_scales).all() and torch.isfinite(g.quats).all()
    # an isolated pixel (no valid neighbours in a direction) gets the isotropic init
    iso = torch.isclose(g.log_scales[:, 0], g.log_scales[:, 2]) & torch.isclose(g.log_scales[:, 1], g.log_scales[:, 2])
    z = g.means[:, 2]
    assert torch.allclose(g.log_scales[iso, 0], torch.log(z[iso] / 40 / math.sqrt(2)), atol=1e-5)
    assert torch.allclose(g.quats[iso], torch.tensor([1.0, 0, 0, 0]).expand(int(iso.sum()), 4))
    # the surfaces either side of the edge are still oriented (not fallback)
    assert (~iso).sum() > 0.8 * len(g)


def test_a_floor_at_a_grazing_angle_is_a_slope_not_an_edge():
    """A floor whose depth steps 10-30 % a pixel: every pixel gets the floor's normal and an in-plane size
    that reaches its neighbour along the floor (the isotropic fallback left gaps between the rows), while a
    step on one side only (a box standing on it) is still an edge."""
    depth, n = plane_depth((0.0, -1.0, -0.04), d=0.1)  # the floor 10 cm below the camera, seen nearly edge-on
    floor = depth > 0
    steps = np.abs(np.diff(depth, axis=0)) / depth[1:]
    assert floor[12:].all() and steps[12:].max() > 0.1  # steeper than max_jump (0.05)
    rgb = np.full((H, W, 3), 0.5, np.float32)
    box = depth.copy()
    box[18:, 10:20] = 0.8 * depth[18:, 10:20].min()  # a box on the floor: its top row steps on one side only
    g = gaussians_from_rgbd(rgb, np.where(floor, box, 0), K, np.eye(4))
    idx = np.flatnonzero(floor.reshape(-1))
    R = quat_to_rotmat_torch(g.quats)
    thin = g.log_scales.argmin(dim=1)
    normal_cos = (R[torch.arange(len(g)), :, thin].double() @ torch.from_numpy(n)).abs().reshape(-1)
    rows = torch.from_numpy(idx // W)
    cols = torch.from_numpy(idx % W)
    # rows 14 on (depth steps of 24 % a pixel and less; the last row too, with one neighbour), away from the box
    on_floor = (rows >= 14) & ((rows < 17) | (cols < 9) | (cols > 20))
    assert normal_cos[on_floor].min() > 0.99
    # along the floor, a Gaussian reaches its neighbouring row: the largest size ~ the row spacing / sqrt(2)
    P = g.means.reshape(-1, 3)
    spacing = (P[on_floor.nonzero()[:, 0]] - P[(on_floor.nonzero()[:, 0] - W).clamp_min(0)]).norm(dim=-1)
    largest = g.log_scales.exp().max(dim=1).values[on_floor]
    inner = rows[on_floor] > 14
    assert (largest[inner] > 0.5 * spacing[inner]).all()
    # the box's top row against the floor behind it: a step on one side only, still an edge: its Gaussians
    # lie in the box's face (facing the camera), not tilted towards the floor
    top = torch.from_numpy((idx // W == 18) & (idx % W >= 11) & (idx % W <= 18))
    face = R[torch.arange(len(g)), :, thin][top]
    assert (face[:, 2].abs() > 0.99).all()


def test_isotropic_mode_and_single_pixel():
    depth = np.full((H, W), 3.0, np.float32)
    rgb = np.zeros((H, W, 3), np.float32)
    g = gaussians_from_rgbd(rgb, depth, K, anisotropic=False)
    assert torch.allclose(g.log_scales, torch.full_like(g.log_scales, math.log(3.0 / 40 / math.sqrt(2))))
    m = np.zeros((H, W), bool)
    m[3, 4] = True
    g1 = gaussians_from_rgbd(rgb, depth, K, mask=m)
    assert len(g1) == 1
    assert torch.allclose(g1.means[0], torch.tensor([(4.5 - 16) / 40 * 3, (3.5 - 12) / 40 * 3, 3.0]))


def test_empty_mask_gives_empty_gaussians_not_first_row():
    depth = np.full((H, W), 3.0, np.float32)
    rgb = np.zeros((H, W, 3), np.float32)
    g = gaussians_from_rgbd(rgb, depth, K, mask=np.zeros((H, W), bool))
    assert len(g) == 0
    depth_bad = np.full((H, W), np.nan, np.float32)
    assert len(gaussians_from_rgbd(rgb, depth_bad, K)) == 0


def test_black_and_white_pixels_give_finite_parameters():
    depth = np.full((H, W), 2.0, np.float32)
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[:, : W // 2] = 1.0
    g = gaussians_from_rgbd(rgb, depth, K, opacity=1.0)
    for t in g.tensors().values():
        assert torch.isfinite(t).all()
    assert torch.allclose(g.colors()[: W // 2], torch.ones(W // 2, 3), atol=1e-6)
    assert g.opacities().min() > 0.99


def test_uint8_and_torch_inputs():
    depth = torch.full((H, W), 2.0)
    rgb = np.full((H, W, 3), 255, np.uint8)
    g = gaussians_from_rgbd(rgb, depth, torch.from_numpy(K))
    assert torch.allclose(g.colors(), torch.ones(len(g), 3))


def test_external_normals_set_the_thin_axis():
    depth = np.full((H, W), 2.0, np.float32)  # fronto-parallel depth ...
    n = np.array([0.3, -0.4, -1.0])
    n /= np.linalg.norm(n)
    normals = np.broadcast_to(-n, (H, W, 3)).astype(np.float32).copy()  # ... but a model says tilted
    normals[0, 0] = np.nan  # invalid normals fall back to the depth tangents
    g = gaussians_from_rgbd(np.zeros((H, W, 3), np.float32), depth, K, normals=normals)
    axis = quat_to_rotmat_torch(g.quats)[:, :, 2].double()
    cos = (axis @ torch.from_numpy(n)).abs()
    assert cos[1:].min() > 0.999
    assert abs(float(axis[0, 2])) > 0.999  # pixel (0, 0): the depth-plane normal (0, 0, ±1)


def test_fronto_parallel_surfels_get_identity_rotation():
    g = gaussians_from_rgbd(np.zeros((H, W, 3), np.float32), np.full((H, W), 2.0, np.float32), K)
    assert torch.allclose(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(len(g), 4), atol=1e-6)
    assert (g.log_scales[:, 2] < g.log_scales[:, 0] - 2).all()  # still thin along z


def test_footprint_map_sets_each_pixels_extent():
    d = np.full((H, W), 2.0, np.float32)
    fp = np.full((H, W), 1.0, np.float32)
    fp[:, : W // 2] = 0.25
    g = gaussians_from_rgbd(np.full((H, W, 3), 0.5, np.float32), d, K, footprint=fp)
    s = g.log_scales.exp().max(dim=1).values.reshape(H, W)
    assert torch.allclose(s[:, : W // 2], s[:, W // 2:] * 0.25, rtol=1e-4)
    scalar = gaussians_from_rgbd(np.full((H, W, 3), 0.5, np.float32), d, K, footprint=0.25)
    assert torch.allclose(scalar.log_scales.reshape(H, W, 3)[:, :4], g.log_scales.reshape(H, W, 3)[:, :4])
    with pytest.raises(ValueError, match="footprint"):
        gaussians_from_rgbd(np.full((H, W, 3), 0.5, np.float32), d, K, footprint=np.ones((H, W + 1), np.float32))
