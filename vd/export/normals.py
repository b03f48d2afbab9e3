"""Normals from a z-depth map (numpy for dataset priors, torch for rendered depth; same rule).

Back-project every pixel centre (u+0.5, v+0.5) with K (OpenCV camera: x right, y down, z
forward; the gsplat/COLMAP pixel convention), take central
differences of the 3D points along u and v, cross them, normalise, and orient the normal
towards the camera (n . p < 0). Pixels whose 4-neighbourhood has an invalid depth (or which
lie on the border) get a zero normal and are reported invalid.
"""

from __future__ import annotations

import numpy as np


def _grid(h: int, w: int, K: np.ndarray):
    u, v = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    return (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]


def normals_from_depth(
    depth: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(normals float32 [H,W,3] in the camera frame, valid bool [H,W]) from z-depth [H,W]."""
    d = np.asarray(depth, np.float64)
    h, w = d.shape
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    dz = np.where(ok, d, 0.0)
    x, y = _grid(h, w, np.asarray(K, np.float64))
    P = np.stack([x * dz, y * dz, dz], axis=-1)
    n = np.zeros((h, w, 3))
    good = np.zeros((h, w), bool)
    if h >= 3 and w >= 3:
        du = P[1:-1, 2:] - P[1:-1, :-2]
        dv = P[2:, 1:-1] - P[:-2, 1:-1]
        c = np.cross(du, dv)
        nrm = np.linalg.norm(c, axis=-1, keepdims=True)
        inner = ok[1:-1, 2:] & ok[1:-1, :-2] & ok[2:, 1:-1] & ok[:-2, 1:-1] & ok[1:-1, 1:-1] & (nrm[..., 0] > 1e-12)
        c = c / np.maximum(nrm, 1e-12)
        flip = (c * P[1:-1, 1:-1]).sum(-1) > 0
        c[flip] *= -1
        c[~inner] = 0
        n[1:-1, 1:-1] = c
        good[1:-1, 1:-1] = inner
    return n.astype(np.float32), good


def normals_from_depth_torch(depth, K, valid=None):
    """Differentiable torch version: depth [H,W] (or [B,H,W]), K [3,3] (or [B,3,3]) ->
    (normals [...,H,W,3], valid [...,H,W] bool)."""
    import torch

    squeeze = depth.ndim == 2
    if squeeze:
        depth = depth[None]
        K = K[None]
        if valid is not None:
            valid = valid[None]
    B, h, w = depth.shape
    K = K.to(depth)
    ok = torch.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok = ok & valid.bool()
    dz = torch.where(ok, depth, torch.zeros_like(depth))
    u = torch.arange(w, dtype=depth.dtype, device=depth.device)[None, None, :] + 0.5
    v = torch.arange(h, dtype=depth.dtype, device=depth.device)[None, :, None] + 0.5
    x = (u - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None]
    y = (v - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    P = torch.stack([x * dz, y * dz, dz], dim=-1)
    n = torch.zeros(B, h, w, 3, dtype=depth.dtype, device=depth.device)
    good = torch.zeros(B, h, w, dtype=torch.bool, device=depth.device)
    if h >= 3 and w >= 3:
        du = P[:, 1:-1, 2:] - P[:, 1:-1, :-2]
        dv = P[:, 2:, 1:-1] - P[:, :-2, 1:-1]
        c = torch.cross(du, dv, dim=-1)
        nrm = c.norm(dim=-1, keepdim=True)
        inner = (
            ok[:, 1:-1, 2:]
            & ok[:, 1:-1, :-2]
            & ok[:, 2:, 1:-1]
            & ok[:, :-2, 1:-1]
            & ok[:, 1:-1, 1:-1]
            & (nrm[..., 0] > 1e-12)
        )
        c = c / nrm.clamp_min(1e-12)
        sign = torch.where((c * P[:, 1:-1, 1:-1]).sum(-1, keepdim=True) > 0, -1.0, 1.0).to(c)
        c = c * sign * inner[..., None]
        n = torch.nn.functional.pad(c.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
        good = torch.nn.functional.pad(inner, (1, 1, 1, 1))
    if squeeze:
        return n[0], good[0]
    return n, good


__all__ = ["normals_from_depth", "normals_from_depth_torch"]
