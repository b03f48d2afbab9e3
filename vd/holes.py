"""Hole masks of rendered views, and the batched reduced-resolution hole scan.

A *hole* is a pixel the current Gaussians do not cover (reference §6.5): alpha below a
threshold (0.5, upstream's round(alpha) == 0), cleaned by one 5×5 erosion (drops specks) and
three 5×5 dilations (grows holes by ~4 px so inpainting overlaps the seam). As upstream (bug
12) there is no depth test: disocclusions behind existing surfaces are not holes.

The coarse loop needs the hole ratio of ~100 candidate poses per added view. Alpha alone does
not depend on the compositing order (final alpha = 1 − Π(1 − α_i)), so `scan_hole_ratios` skips
the renderer: `splat_alpha` scatter-adds log(1 − α_i) over each projected Gaussian's pixel
footprint (same EWA projection, eps2d, 0.99 cap and 1/255 cut as gsplat; it matches the torch
renderer's alpha to ~1e-7 at the same size). The scan runs at a reduced resolution (`scale`,
default 1/4 but at least 64 px on the long side; full size up to 128 px) with the 2D dilation eps2d scaled by scale² (the same blur in full-size pixels),
on a seeded random `keep` = 4·scale² fraction of the Gaussians, each grown by 1/sqrt(keep) so
a surface keeps its coverage; alpha is then upsampled bilinearly to the candidate size and
thresholded and cleaned there. `scan_hole_ratios_full` renders every candidate at full size one
by one with the real renderer (the upstream way; the benchmark's reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA_THRESHOLD = 0.5
KERNEL = 5
ERODE = 1
DILATE = 3


def _morph(x, kernel: int, times: int, op: str):
    import torch.nn.functional as F

    pad = kernel // 2
    for _ in range(times):
        if op == "dilate":
            x = F.max_pool2d(x, kernel, stride=1, padding=pad)
        else:
            x = -F.max_pool2d(-x, kernel, stride=1, padding=pad)
    return x


def hole_masks(alpha, *, threshold: float = ALPHA_THRESHOLD, kernel: int = KERNEL, erode: int = ERODE, dilate: int = DILATE):
    """Bool hole masks [C, H, W] (torch) from alpha [C, H, W] or [H, W] (torch or numpy).

    Matches OpenCV's erode/dilate with a k×k square and the default border handling (the
    border neither erodes nor dilates)."""
    import torch

    a = torch.as_tensor(np.asarray(alpha) if not isinstance(alpha, torch.Tensor) else alpha)
    squeeze = a.ndim == 2
    if squeeze:
        a = a[None]
    x = (a.detach().float() < threshold).float()[:, None]
    x = _morph(x, kernel, erode, "erode")
    x = _morph(x, kernel, dilate, "dilate")
    m = x[:, 0] > 0.5
    return m[0] if squeeze else m


def hole_mask_np(alpha: np.ndarray, **kw) -> np.ndarray:
    """numpy convenience: bool [H, W] hole mask from an alpha map."""
    return hole_masks(np.asarray(alpha, dtype=np.float32), **kw).cpu().numpy()


def hole_mask_cv2(alpha: np.ndarray, *, threshold: float = ALPHA_THRESHOLD, kernel: int = KERNEL, erode: int = ERODE, dilate: int = DILATE) -> np.ndarray:
    """The upstream OpenCV formulation (used by the tests to check `hole_masks`)."""
    import cv2

    h = (np.asarray(alpha) < threshold).astype(np.uint8)
    k = np.ones((kernel, kernel), np.uint8)
    if erode:
        h = cv2.erode(h, k, iterations=erode)
    if dilate:
        h = cv2.dilate(h, k, iterations=dilate)
    return h > 0


def scale_intrinsics(K: np.ndarray, s: float) -> np.ndarray:
    """K for an image scaled by `s` (pixel-centre convention: continuous coordinates scale by s)."""
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[:2] *= s
    return K2


def alpha_lod(g, keep: float = 1.0, seed: int = 0):
    """Gaussians for an alpha-only render: SH truncated to the DC band (alpha does not depend on
    colour) and, when keep < 1, a seeded random subset of that fraction with every scale grown
    by 1/sqrt(keep), so a surface keeps its coverage (area per Gaussian × density) while the
    renderer handles `keep` times fewer Gaussians."""
    import math

    import torch

    from vd.gaussians import Gaussians

    n = len(g)
    sh = g.sh[:, :1]
    if keep >= 1.0 or n == 0:
        return Gaussians(means=g.means, log_scales=g.log_scales, quats=g.quats, opacity_logits=g.opacity_logits, sh=sh.contiguous())
    m = max(int(round(n * keep)), 1)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=gen)[:m].sort().values.to(g.means.device)
    grow = 0.5 * math.log(1.0 / keep)  # log(1/sqrt(keep))
    return Gaussians(means=g.means[idx], log_scales=g.log_scales[idx] + grow, quats=g.quats[idx],
                     opacity_logits=g.opacity_logits[idx], sh=sh[idx].contiguous())


def _project(means, covars, vm, K, width, height, eps2d=0.3, near=0.01):
    """gsplat-style EWA projection (classic, eps2d) for C cameras at once.

    means [N,3], covars [N,3,3], vm [C,4,4], K [C,3,3] -> means2d [C,N,2], conic (A,B,C) [C,N,3],
    radius [C,N], ok [C,N]."""
    import torch

    R, t = vm[:, :3, :3], vm[:, :3, 3]
    mc = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]
    cc = torch.einsum("cij,njk,clk->cnil", R, covars, R)
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = (K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None])
    lim_xp = (width - cx) / fx + 0.15 * width / fx
    lim_xn = cx / fx + 0.15 * width / fx
    lim_yp = (height - cy) / fy + 0.15 * height / fy
    lim_yn = cy / fy + 0.15 * height / fy
    z = torch.where(tz.abs() < 1e-12, torch.full_like(tz, 1e-12), tz)
    txc = z * torch.maximum(torch.minimum(tx / z, lim_xp), -lim_xn)
    tyc = z * torch.maximum(torch.minimum(ty / z, lim_yp), -lim_yn)
    iz = 1.0 / z
    j00, j02, j11, j12 = fx * iz, -fx * txc * iz * iz, fy * iz, -fy * tyc * iz * iz
    c00, c01, c02 = cc[..., 0, 0], cc[..., 0, 1], cc[..., 0, 2]
    c11, c12, c22 = cc[..., 1, 1], cc[..., 1, 2], cc[..., 2, 2]
    a = j00 * j00 * c00 + 2 * j00 * j02 * c02 + j02 * j02 * c22 + eps2d
    b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
    c = j11 * j11 * c11 + 2 * j11 * j12 * c12 + j12 * j12 * c22 + eps2d
    det = a * c - b * b
    ok = (det > 0) & (tz > near)
    det = det.clamp_min(1e-10)
    conic = torch.stack([c / det, -b / det, a / det], -1)
    m2 = torch.stack([fx * tx * iz + cx, fy * ty * iz + cy], -1)
    rad = torch.ceil(3.33 * torch.sqrt(torch.maximum(a, c).clamp_min(0)))
    ok &= torch.isfinite(m2).all(-1) & torch.isfinite(rad)
    ok &= (m2[..., 0] + rad > 0) & (m2[..., 0] - rad < width) & (m2[..., 1] + rad > 0) & (m2[..., 1] - rad < height)
    return m2, conic, rad, ok


def splat_alpha(g, viewmats, Ks, width: int, height: int, *, eps2d: float = 0.3, near: float = 0.01, max_radius: int = 8):
    """Alpha [C, H, W] of Gaussians `g`, without colour, sorting or tiles, all cameras at once.

    Front-to-back compositing gives a final alpha of 1 − Π(1 − α_i) whatever the order, so alpha
    alone is a scatter-add of log(1 − α_i) over each Gaussian's pixel footprint (α_i = o·exp(−power),
    capped at 0.99, ignored below 1/255, as in gsplat). Footprints wider than `max_radius` pixels
    are truncated (rare at scan resolution; it can only make holes slightly larger).
    """
    import torch

    from vd.gaussians import quat_to_rotmat

    dev = g.means.device
    viewmats = torch.as_tensor(viewmats, dtype=torch.float32, device=dev).reshape(-1, 4, 4)
    Ks = torch.as_tensor(Ks, dtype=torch.float32, device=dev).reshape(-1, 3, 3)
    C = viewmats.shape[0]
    if Ks.shape[0] == 1 and C > 1:
        Ks = Ks.expand(C, 3, 3)
    HW = height * width
    logt = torch.zeros(C * HW, dtype=torch.float32, device=dev)
    if len(g) == 0:
        return torch.zeros(C, height, width, device=dev)
    with torch.no_grad():
        Rm = quat_to_rotmat(g.quats)
        M = Rm * torch.exp(g.log_scales)[:, None, :]
        covars = M @ M.transpose(1, 2)
        opac = torch.sigmoid(g.opacity_logits)
        m2, conic, rad, ok = _project(g.means, covars, viewmats, Ks, width, height, eps2d, near)
        cam = torch.arange(C, device=dev)[:, None].expand(C, len(g))
        gid = torch.arange(len(g), device=dev)[None, :].expand(C, len(g))
        rad = rad.clamp_max(max_radius)
        lo = 0
        for r in (1, 2, 4, max_radius):
            sel = ok & (rad <= r) & (rad > lo)
            lo = r
            if not bool(sel.any()):
                continue
            mm, cn, op, cc = m2[sel], conic[sel], opac[gid[sel]], cam[sel]
            off = torch.arange(-r, r + 1, device=dev, dtype=torch.float32)
            base = torch.floor(mm)
            px = base[:, 0, None, None] + off[None, None, :]  # [n,1,S]
            py = base[:, 1, None, None] + off[None, :, None]  # [n,S,1]
            dx = px + 0.5 - mm[:, 0, None, None]
            dy = py + 0.5 - mm[:, 1, None, None]
            power = 0.5 * cn[:, 0, None, None] * dx * dx + 0.5 * cn[:, 2, None, None] * dy * dy + cn[:, 1, None, None] * dx * dy
            a = torch.clamp(op[:, None, None] * torch.exp(-power), max=0.99)
            inside = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (a >= 1.0 / 255.0) & (power >= 0)
            flat = cc[:, None, None] * HW + py * width + px
            logt.index_add_(0, flat[inside].long(), torch.log1p(-a[inside]))
        return (1.0 - torch.exp(logt)).reshape(C, height, width)


def default_scan_scale(width: int, height: int) -> float:
    """Full size for small candidates (long side <= 128 px, cheap and exact); otherwise 1/4 of
    the size, but at least 64 px on the long side."""
    long = max(width, height)
    if long <= 128:
        return 1.0
    return min(1.0, max(0.25, 64.0 / long))


@dataclass
class ScanResult:
    ratios: np.ndarray  # [N] hole ratio per candidate
    scale: float
    batch: int
    seconds: float


def scan_hole_ratios(g, poses: np.ndarray, K: np.ndarray, width: int, height: int, *, scale: float | None = None, batch: int = 16,
                     backend: str = "auto", threshold: float = ALPHA_THRESHOLD, keep: float | None = None,
                     tile: int | None = None, method: str = "splat", eps2d: float | None = None) -> ScanResult:
    """Hole ratios of every candidate pose (world_from_camera [N, 4, 4]) at size width × height.

    Alpha at `scale` of the size, `batch` cameras per call, from `alpha_lod(g, keep)` (default
    keep = min(1, 4·scale²): at a quarter of the resolution a quarter of the Gaussians, each
    grown 2×), with eps2d = 0.3·scale² unless given; `method="render"` uses `vd.render.render`
    instead of `splat_alpha`. Alpha is upsampled to full size before the threshold and the
    morphology (module docstring)."""
    import time

    import torch
    import torch.nn.functional as F

    from vd.cameras import invert_pose
    from vd.render import render

    t0 = time.perf_counter()
    if scale is None:
        scale = default_scan_scale(width, height)
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    ratios = np.zeros(n, dtype=np.float64)
    if n == 0:
        return ScanResult(ratios, scale, batch, 0.0)
    sw, sh = max(int(round(width * scale)), 8), max(int(round(height * scale)), 8)
    Ks = scale_intrinsics(K, sw / width)
    Ks[1] *= (sh / height) / (sw / width)
    if keep is None:
        keep = min(1.0, 4.0 * scale * scale)
    ga = alpha_lod(g, keep)
    dev = ga.means.device
    viewmats = torch.as_tensor(invert_pose(poses), dtype=torch.float32, device=dev)
    Kt = torch.as_tensor(Ks, dtype=torch.float32, device=dev)
    with torch.no_grad():
        for i in range(0, n, batch):
            vm = viewmats[i:i + batch]
            c = vm.shape[0]
            e2d = eps2d if eps2d is not None else 0.3 * (sw / width) ** 2
            if method == "splat":
                alpha = splat_alpha(ga, vm, Kt[None], sw, sh, eps2d=e2d)
            else:
                kw = {"tile": tile} if tile else {}
                alpha = render(ga, vm, Kt[None].expand(c, 3, 3).contiguous(), sw, sh, backend=backend, eps2d=e2d, **kw).alpha.float()
            if (sw, sh) != (width, height):
                alpha = F.interpolate(alpha[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            m = hole_masks(alpha, threshold=threshold)
            ratios[i:i + c] = m.float().mean(dim=(1, 2)).double().cpu().numpy()
    return ScanResult(ratios, scale, batch, time.perf_counter() - t0)


def scan_hole_ratios_full(g, poses: np.ndarray, K: np.ndarray, width: int, height: int, *, backend: str = "auto",
                          threshold: float = ALPHA_THRESHOLD) -> ScanResult:
    """Reference scan: every candidate rendered at full size, one by one, with colour (upstream)."""
    import time

    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    t0 = time.perf_counter()
    poses = np.asarray(poses, dtype=np.float64)
    ratios = np.zeros(poses.shape[0])
    dev = g.means.device
    Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        for i, p in enumerate(poses):
            vm = torch.as_tensor(invert_pose(p), dtype=torch.float32, device=dev)[None]
            res = render(g, vm, Kt, width, height, backend=backend)
            ratios[i] = float(hole_masks(res.alpha.float()).float().mean())
    return ScanResult(ratios, 1.0, 1, time.perf_counter() - t0)
