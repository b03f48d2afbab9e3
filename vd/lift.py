"""Lift an RGB-D frame to Gaussians: one surfel-like Gaussian per supervised pixel.

- Back-projection through pixel centres: X_cam = z · K⁻¹ [u + 0.5, v + 0.5, 1]ᵀ, then to the world
  with ``world_from_camera`` (OpenCV camera: x right, y down, z forward).
- Anisotropic init: tangents t_u, t_v from the 3D differences to neighbouring pixels (central
  differences, one-sided next to holes and depth edges), normal n = t_u × t_v. A neighbour more than
  ``max_jump`` × z away in depth is across an edge unless both neighbours step the same way by nearly as
  much (`SLOPE_STEP_RATIO`): a floor seen at a grazing angle steps 5-20 % a pixel, and as an "edge"
  its pixels got the isotropic fallback, which opened row-wide gaps when the camera rose above it.
  The Gaussian's axes are (t̂_u, n × t̂_u, n); its in-plane sizes are the local pixel footprint / √2
  along each axis (so a fronto-parallel pixel gets the isotropic σ = z/f/√2), capped at
  ``max_stretch`` × the isotropic σ for grazing surfaces (10: a floor 6° below the line of sight);
  the normal axis is ``thin`` × the smaller in-plane size.
- Isotropic fallback σ = z/f/√2 with identity rotation where a neighbourhood is missing, crosses a
  depth edge, or is degenerate.
- Colours go to the SH DC term (linear, so black and white pixels are finite); opacity logits are
  clamped (``safe_logit``) so an opacity of 1 is finite too.
- Pixels outside ``mask``, with non-finite or non-positive depth, are skipped; when none are left
  the result is empty (upstream kept the whole first image row instead:
  docs/upstream.md#gaussian-initialisation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vd.gaussians import Gaussians, num_sh_bases, rgb_to_sh0, safe_logit
from vd.geometry import rotmat_to_quat_torch


def _t(x, dtype=torch.float32) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return torch.as_tensor(x).to(dtype)


SLOPE_STEP_RATIO = 1.5  # neighbours' depth steps within this ratio (and the same sign): a slope, not an edge


def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """[H,W,3] camera-space points through pixel centres for a z-depth map."""
    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (v + 0.5 - cy) / fy
    x = (u + 0.5 - cx - s * y) / fx
    return torch.stack([x * depth, y * depth, depth], dim=-1)


def _tangent(P: Tensor, ok: Tensor, z: Tensor, axis: int, max_jump: float):
    """Central/one-sided difference along `axis` (1 = columns/u, 0 = rows/v) and its validity."""
    H, W = z.shape

    def shift(x, d):  # value at index + d along axis, padded with zeros
        out = torch.zeros_like(x)
        if axis == 1:
            if d > 0:
                out[:, :-d] = x[:, d:]
            else:
                out[:, -d:] = x[:, :d]
        else:
            if d > 0:
                out[:-d] = x[d:]
            else:
                out[-d:] = x[:d]
        return out

    zp, zm = shift(z, 1), shift(z, -1)
    okp = shift(ok.float(), 1) > 0
    okm = shift(ok.float(), -1) > 0
    up, down = (zp - z).abs(), (z - zm).abs()
    # a steep smooth slope (a floor seen at a grazing angle changes depth by 5-20 % a pixel) steps the same
    # way by nearly as much on both sides; a depth edge steps on one side only
    same_way = (zp - z) * (z - zm) > 0
    steady = okp & okm & same_way & (torch.maximum(up, down) <= SLOPE_STEP_RATIO * torch.minimum(up, down))
    # and so does a neighbour: noise (a depth map that jumps at random by more than max_jump) rarely
    # steps steadily over four pixels
    slope = steady & ((shift(steady.float(), 1) > 0) | (shift(steady.float(), -1) > 0))
    # a neighbour that is itself a slope pixel vouches for the step to us (it compared it with its other
    # side): the last row of a floor, which has one neighbour, is lifted as floor too
    okp &= (up <= max_jump * z) | slope | (shift(slope.float(), 1) > 0)
    okm &= (down <= max_jump * z) | slope | (shift(slope.float(), -1) > 0)
    Pp, Pm = shift(P, 1), shift(P, -1)
    both = (okp & okm)[..., None]
    t = torch.where(both, 0.5 * (Pp - Pm), torch.where(okp[..., None], Pp - P, P - Pm))
    return t, (okp | okm) & ok


def gaussians_from_rgbd(
    rgb,
    depth,
    K,
    world_from_camera=None,
    mask=None,
    *,
    normals=None,
    opacity: float = 0.8,
    anisotropic: bool = True,
    thin: float = 0.1,
    max_stretch: float = 10.0,
    max_jump: float = 0.05,
    sh_degree: int = 0,
    footprint=1.0,
) -> Gaussians:
    """One Gaussian per valid pixel of an RGB-D frame (see the module docstring).

    rgb [H,W,3] float in 0..1 (uint8 accepted); depth [H,W] z-depth; K [3,3]; world_from_camera
    [4,4] (identity when None); mask [H,W] bool of pixels to spawn (all when None); normals
    optional [H,W,3] unit normals in the same OpenCV camera frame (x right, y down, z forward),
    e.g. from the depth model, used instead of the depth-tangent normal where finite (their sign
    does not matter). `footprint` scales every Gaussian's in-surface extent (1: one pixel's
    spacing, upstream's σ = depth/focal/√2; smaller is sharper at the view it was lifted from); a
    float, or an [H,W] map for a footprint per pixel.
    Numpy or torch inputs; the result is on CPU.
    """
    rgb_t = (
        _t(rgb)
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8)
        else torch.from_numpy(rgb.astype(np.float32) / 255.0)
    )
    if isinstance(rgb, Tensor) and rgb.dtype == torch.uint8:
        rgb_t = rgb.float() / 255.0
    rgb_t = rgb_t.cpu()
    z = _t(depth).cpu()
    Kt = _t(K).cpu()
    if z.ndim != 2 or rgb_t.shape != (*z.shape, 3):
        raise ValueError(
            f"rgb must be [H,W,3] and depth [H,W] of the same size; got {tuple(rgb_t.shape)} and {tuple(z.shape)}"
        )
    Twc = torch.eye(4) if world_from_camera is None else _t(world_from_camera).cpu()
    H, W = z.shape
    ok = torch.isfinite(z) & (z > 0)
    spawn = ok.clone()
    if mask is not None:
        m = _t(mask, torch.bool).cpu()
        if m.shape != z.shape:
            raise ValueError(f"mask must be [H,W] = {tuple(z.shape)}, got {tuple(m.shape)}")
        spawn &= m
    zc = torch.where(ok, z, torch.zeros_like(z))
    idx = spawn.reshape(-1).nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return Gaussians.empty(sh_degree)
    P = backproject(zc, Kt)  # [H,W,3]
    f = 0.5 * (Kt[0, 0].abs() + Kt[1, 1].abs())
    fp = _footprints(footprint, z.shape, idx)
    base = (zc / f / math.sqrt(2.0)).reshape(-1)[idx] * fp  # isotropic sigma
    log_scales = torch.log(base.clamp_min(1e-12))[:, None].repeat(1, 3)
    Rcam = torch.eye(3).expand(n, 3, 3).clone()

    if anisotropic:
        tu, oku = _tangent(P, ok, zc, 1, max_jump)
        tv, okv = _tangent(P, ok, zc, 0, max_jump)
        tu = tu.reshape(-1, 3)[idx]
        tv = tv.reshape(-1, 3)[idx]
        good = (oku & okv).reshape(-1)[idx]
        nrm = torch.cross(tu, tv, dim=-1)
        lu, lv = tu.norm(dim=-1), tv.norm(dim=-1)
        nn_ = nrm.norm(dim=-1)
        # degenerate: zero-length tangents or nearly parallel ones
        good &= (lu > 1e-12) & (lv > 1e-12) & (nn_ > 1e-3 * lu * lv)
        nhat = nrm / nn_.clamp_min(1e-30)[:, None]
        if normals is not None:
            N_ext = _t(normals).cpu().reshape(-1, 3)[idx]
            ext_ok = torch.isfinite(N_ext).all(-1) & (N_ext.norm(dim=-1) > 0.5)
            N_ext = torch.nn.functional.normalize(torch.nan_to_num(N_ext), dim=-1)
            nhat = torch.where(ext_ok[:, None], N_ext, nhat)
            good |= ext_ok & (lu > 1e-12)
        # a canonical sign: the normal axis points away from the camera (n · X > 0), so a
        # fronto-parallel surfel gets the identity rotation (the sign is irrelevant to a Gaussian)
        Xc = P.reshape(-1, 3)[idx]
        flip = (nhat * Xc).sum(-1) < 0
        nhat = torch.where(flip[:, None], -nhat, nhat)
        # e1: t_u projected onto the tangent plane
        e1 = tu - (tu * nhat).sum(-1, keepdim=True) * nhat
        e1n = e1.norm(dim=-1)
        good &= e1n > 1e-12
        e1 = e1 / e1n.clamp_min(1e-30)[:, None]
        e2 = torch.cross(nhat, e1, dim=-1)
        s1 = (tu * e1).sum(-1).abs() / math.sqrt(2.0) * fp
        s2 = (tv * e2).sum(-1).abs() / math.sqrt(2.0) * fp
        cap = max_stretch * base
        s1 = torch.minimum(torch.maximum(s1, base / max_stretch), cap)
        s2 = torch.minimum(torch.maximum(s2, base / max_stretch), cap)
        s3 = thin * torch.minimum(s1, s2)
        good &= torch.isfinite(s1) & torch.isfinite(s2) & torch.isfinite(e1).all(-1) & torch.isfinite(e2).all(-1)
        R = torch.stack([e1, e2, nhat], dim=-1)  # columns = axes
        Rcam = torch.where(good[:, None, None], R, Rcam)
        ls = torch.log(torch.stack([s1, s2, s3], -1).clamp_min(1e-12))
        log_scales = torch.where(good[:, None], ls, log_scales)

    Rw = Twc[:3, :3]
    means = P.reshape(-1, 3)[idx] @ Rw.T + Twc[:3, 3]
    quats = rotmat_to_quat_torch(Rw[None] @ Rcam)
    # identity-rotation fallback Gaussians keep exactly (1,0,0,0) in the world when Twc is identity
    colors = rgb_t.reshape(-1, 3)[idx].clamp(0.0, 1.0)
    sh = torch.zeros(n, num_sh_bases(sh_degree), 3)
    sh[:, 0] = rgb_to_sh0(colors)
    op = safe_logit(torch.full((n,), float(opacity)))
    g = Gaussians(means.contiguous(), log_scales.contiguous(), quats.contiguous(), op, sh)
    return g


def _footprints(footprint, shape, idx: Tensor) -> Tensor:
    """Per-Gaussian footprints [n] from a scalar or an [H,W] map."""
    if isinstance(footprint, (int, float)):
        return torch.full((idx.numel(),), float(footprint))
    fp = _t(footprint).cpu().float()
    if tuple(fp.shape) != tuple(shape):
        raise ValueError(f"footprint must be a number or an [H,W] = {tuple(shape)} map, got {tuple(fp.shape)}")
    return fp.reshape(-1)[idx]


__all__ = ["backproject", "gaussians_from_rgbd"]
