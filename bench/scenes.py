"""Procedural benchmark scenes: a lifted RGB-D frame (what vd renders), sized to N Gaussians."""

from __future__ import annotations

import math

import numpy as np


def rgbd_scene(n: int, width: int = 512, height: int = 384, seed: int = 0):
    """Gaussians lifted from a procedural RGB-D frame with about n pixels, and the camera
    (viewmat [4,4], K [3,3]) that renders it at width x height, slightly off the source pose."""
    import torch

    from vd.lift import gaussians_from_rgbd

    aspect = width / height
    h = max(2, int(round(math.sqrt(n / aspect))))
    w = max(2, int(round(n / h)))
    f_src = 0.9 * w
    K_src = np.array([[f_src, 0, w / 2], [0, f_src, h / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    rgb = np.stack([0.5 + 0.4 * np.sin(u / w * 40), v / h, 0.5 + 0.4 * np.cos((u + v) / w * 25)], -1)
    rgb = np.clip(rgb + 0.05 * rng.standard_normal(rgb.shape), 0, 1).astype(np.float32)
    # a room-like depth: a back wall, a floor, and a box in front, with depth edges
    depth = 4.0 + 0.5 * np.sin(u / w * 6.0)
    floor = 1.2 / np.maximum((v + 0.5 - h / 2) / f_src, 1e-3)
    depth = np.minimum(depth, np.where(v > h / 2, floor, np.inf))
    box = (np.abs(u - 0.35 * w) < 0.12 * w) & (np.abs(v - 0.55 * h) < 0.15 * h)
    depth = np.where(box, 2.2, depth).astype(np.float32)
    g = gaussians_from_rgbd(rgb, depth, K_src, np.eye(4, dtype=np.float32))
    s = width / w
    K = torch.tensor([[f_src * s, 0, width / 2], [0, f_src * s, height / 2], [0, 0, 1]], dtype=torch.float32)
    a = math.radians(4.0)
    vm = torch.eye(4)
    vm[:3, :3] = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    vm[:3, 3] = torch.tensor([0.1, -0.05, 0.2])
    return g, vm, K
