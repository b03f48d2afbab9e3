"""Hole masks of rendered views, and the batched reduced-resolution hole scan.

A *hole* is a pixel the current Gaussians do not cover (reference §6.5): alpha below a
threshold (0.5, upstream's round(alpha) == 0), cleaned by one 5×5 erosion (drops specks) and
three 5×5 dilations (grows holes by ~4 px so inpainting overlaps the seam). As upstream (bug
12) there is no depth test: disocclusions behind existing surfaces are not holes.

The coarse loop needs the hole ratio of ~100 candidate poses per added view. `scan_hole_ratios`
renders them in batches at a reduced resolution, asking the renderer for alpha only (DC colour,
no SH), upsamples alpha bilinearly to the candidate size and applies the same threshold and
morphology there, so the ratios match a full-size render closely. `scan_hole_ratios_full`
renders every candidate at full size, one by one (the reference the benchmark compares with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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


def _alpha_only(g):
    """The Gaussians with SH truncated to the DC band: alpha does not depend on colour."""
    if getattr(g, "sh", None) is not None and g.sh.shape[1] > 1:
        from vd.gaussians import Gaussians

        return Gaussians(means=g.means, log_scales=g.log_scales, quats=g.quats, opacity_logits=g.opacity_logits, sh=g.sh[:, :1].contiguous())
    return g


@dataclass
class ScanResult:
    ratios: np.ndarray  # [N] hole ratio per candidate
    scale: float
    batch: int
    seconds: float


def scan_hole_ratios(g, poses: np.ndarray, K: np.ndarray, width: int, height: int, *, scale: float = 0.25, batch: int = 16,
                     backend: str = "auto", threshold: float = ALPHA_THRESHOLD) -> ScanResult:
    """Hole ratios of every candidate pose (world_from_camera [N, 4, 4]) at size width × height.

    Renders alpha at `scale` of the size, `batch` cameras per call, then upsamples alpha to
    full size before thresholding and the morphology (module docstring)."""
    import time

    import torch
    import torch.nn.functional as F

    from vd.cameras import invert_pose
    from vd.render import render

    t0 = time.perf_counter()
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    ratios = np.zeros(n, dtype=np.float64)
    if n == 0:
        return ScanResult(ratios, scale, batch, 0.0)
    sw, sh = max(int(round(width * scale)), 8), max(int(round(height * scale)), 8)
    Ks = scale_intrinsics(K, sw / width)
    Ks[1] *= (sh / height) / (sw / width)
    ga = _alpha_only(g)
    dev = ga.means.device
    viewmats = torch.as_tensor(invert_pose(poses), dtype=torch.float32, device=dev)
    Kt = torch.as_tensor(Ks, dtype=torch.float32, device=dev)
    with torch.no_grad():
        for i in range(0, n, batch):
            vm = viewmats[i:i + batch]
            c = vm.shape[0]
            res = render(ga, vm, Kt[None].expand(c, 3, 3).contiguous(), sw, sh, backend=backend)
            alpha = res.alpha.float()
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
