"""Gaussians an added view brings are kept only out of the input camera's sight (vd.unseen, through
vd.stages.coarse_view.out_of_sight), judged by the camera's render, not by depth."""

import math

import numpy as np
import pytest
import torch

from vd.gaussians import Gaussians
from vd.lift import gaussians_from_rgbd
from vd.render import render
from vd.stages.coarse_view import out_of_sight
from vd.unseen import CHANGE, blend_weights
from vd.views import View

W, H, F = 64, 48, 40.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float64)
WALL = 5.0


def _wall_over_the_left_two_thirds():
    """An opaque checkered wall 5 m in front of the camera over the image's left two thirds; nothing beyond."""
    v, u = np.mgrid[0:H, 0:W]
    depth = np.where(u < 2 * W // 3, WALL, 0.0).astype(np.float32)
    check = ((u // 4 + v // 4) % 2).astype(np.float32)
    rgb = np.stack([0.2 + 0.6 * check, 0.5 * np.ones_like(check), 0.8 - 0.6 * check], -1)
    return gaussians_from_rgbd(rgb, depth, K.astype(np.float32), np.eye(4, dtype=np.float32), depth > 0, opacity=0.99)


def _gaussians(means, scales, colour=(1.0, 0.0, 0.0)):
    """Opaque Gaussians at `means` [N,3] with per-axis `scales` [N,3], unrotated."""
    n = len(means)
    sh_c0 = 0.28209479177387814
    dc = (torch.tensor(colour, dtype=torch.float32) - 0.5) / sh_c0
    return Gaussians(
        means=torch.tensor(means, dtype=torch.float32),
        log_scales=torch.tensor(scales, dtype=torch.float32).log(),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n),
        opacity_logits=torch.full((n,), math.log(0.99 / 0.01)),
        sh=dc.expand(n, 3).clone(),
    )


def _input_view():
    blank = np.zeros((H, W), bool)
    return View("input", "input", np.zeros((H, W, 3), np.uint8), np.full((H, W), WALL, np.float32), K, np.eye(4), blank)


def _draw(g):
    res = render(g, torch.eye(4)[None], torch.as_tensor(K, dtype=torch.float32)[None], W, H, backend="torch")
    return res.rgb[0]


def test_a_view_keeps_what_the_input_camera_cannot_see_and_drops_what_it_can():
    wall = _wall_over_the_left_two_thirds()
    x_wall_edge = (2 * W // 3 - W / 2) / F * 8.0  # where the wall's right edge is seen, at 8 m
    new = _gaussians(
        [
            [-1.0, 0.0, 8.0],  # 0: small, behind the wall, right behind the seen one: hidden
            # 1: behind the wall, its centre hidden, stretched 0.5 m along x past the wall's edge
            [x_wall_edge - 0.8, 0.5, 8.0],
            [-0.5, 0.0, 3.0],  # 2: in front of the wall: seen
            [-30.0, 0.0, 3.0],  # 3: outside the camera's field of view
        ],
        [[0.05, 0.05, 0.005], [0.5, 0.05, 0.005], [0.05, 0.05, 0.005], [0.05, 0.05, 0.005]],
    )
    # the test's premise: the stretched one's centre is behind the wall, and it still shows past the edge
    u1 = F * float(new.means[1, 0]) / 8.0 + W / 2
    assert u1 < 2 * W // 3 - 2
    shown = (_draw(Gaussians.cat([wall, new.select(torch.tensor([1]))])) - _draw(wall)).abs().amax(-1)
    assert float(shown.max()) > 0.05

    kept = out_of_sight(new, wall, [_input_view()], "torch")

    kept_x = sorted(round(float(x), 2) for x in kept.means[:, 0])
    assert kept_x == [-30.0, -1.0], kept_x
    # and with them the input camera's render is the wall's
    assert float((_draw(Gaussians.cat([wall, kept])) - _draw(wall)).abs().max()) <= CHANGE + 1e-6


def test_a_view_whose_gaussians_are_all_hidden_keeps_them_all():
    wall = _wall_over_the_left_two_thirds()
    new = _gaussians([[-1.0, y, 8.0] for y in (-0.5, 0.0, 0.5)], [[0.05, 0.05, 0.005]] * 3)
    assert len(out_of_sight(new, wall, [_input_view()], "torch")) == 3


def test_a_gaussians_blend_weight_is_the_alpha_it_gives_the_pixels_and_nothing_behind_a_wall():
    wall = _wall_over_the_left_two_thirds()
    new = _gaussians([[-0.5, 0.0, 3.0], [-3.0, -2.0, 8.0]], [[0.05, 0.05, 0.005]] * 2)  # apart in the image
    empty = wall.select(torch.zeros(0, dtype=torch.long))
    weights = blend_weights(empty, new, torch.eye(4), torch.as_tensor(K, dtype=torch.float32), W, H, "torch")
    for i in range(2):
        alone = render(
            new.select(torch.tensor([i])),
            torch.eye(4)[None],
            torch.as_tensor(K, dtype=torch.float32)[None],
            W,
            H,
            backend="torch",
        ).alpha[0]
        assert float(weights[i]) == pytest.approx(float(alone.sum()), rel=1e-4)
    behind = blend_weights(wall, new, torch.eye(4), torch.as_tensor(K, dtype=torch.float32), W, H, "torch")
    assert float(behind[0]) == pytest.approx(float(weights[0]), rel=1e-4)  # in front of the wall: all of it
    assert float(behind[1]) < 0.02 * float(weights[1])  # behind the wall: what its 0.99 lets through
