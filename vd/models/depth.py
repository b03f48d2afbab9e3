"""Depth backends behind one interface, plus the depth-edge mask.

    get_depth_backend(name="auto", *, image_path=None, focal=None, fov=None, device=None,
                      auto_fetch=None, intrinsics=None, depth_path=None) -> DepthBackend
    backend.name, backend.identity          # identity goes into cache keys
    backend.estimate(rgb uint8 [H,W,3], K_hint=None) -> DepthResult
    backend.release()                        # free the model (gc + torch.cuda.empty_cache())
    depth_edges(depth, valid, times=0.05) -> bool [H,W]

Backends:
- `moge`: MoGe-2 ViT-L (normal head) through the `moge` package (PyPI `dlr-moge`); metric
  z-depth, K (from its FoV estimate, or from K_hint / --focal / --fov when given), validity mask
  and normals. Weights from `vd fetch moge`.
- `file`: a depth map the user supplies (sidecar `<image stem>.depth.{npy,npz,png,tif}` found
  automatically, or `depth_path=`), with intrinsics from --focal, --fov, an intrinsics JSON
  (`intrinsics=`, `<image stem>.intrinsics.json` or `intrinsics.json` beside the image) or K_hint.
  It describes the input image only (`estimates_novel_views` is False).
- `auto`: `file` when a sidecar depth map sits next to the image, else `moge` (which fails with
  the `vd fetch moge` command when its weights are missing). It says which it picked on stderr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vd.errors import UsageError
from vd.models.backend import ModelBackend

DEPTH_BACKENDS = ("auto", "moge", "file")


@dataclass
class DepthResult:
    depth: np.ndarray  # float32 [H, W], z-depth along the optical axis (0 where invalid)
    K: np.ndarray  # float32 [3, 3], pixel units of the working image
    valid: np.ndarray  # bool [H, W]
    normals: Optional[np.ndarray] = None  # float32 [H, W, 3], OpenCV camera frame, or None

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    def fov_deg(self) -> tuple[float, float]:
        fx, fy = float(self.K[0, 0]), float(self.K[1, 1])
        return (math.degrees(2 * math.atan(self.width / (2 * fx))), math.degrees(2 * math.atan(self.height / (2 * fy))))

    def depth_range(self) -> tuple[float, float]:
        d = self.depth[self.valid]
        if d.size == 0:
            return (float("nan"), float("nan"))
        return float(d.min()), float(d.max())

    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if self.valid.size else 0.0


class DepthBackend(ModelBackend):
    """Interface; see the module docstring."""

    estimates_novel_views: bool = True

    def estimate(self, rgb: np.ndarray, K_hint=None) -> DepthResult:  # pragma: no cover - interface
        raise NotImplementedError


def K_from_focal(width: int, height: int, focal: float) -> np.ndarray:
    """Pinhole K with a centred principal point, c = (W/2, H/2): pixel (u, v) is centred at
    (u + 0.5, v + 0.5), the convention of the renderer and of `vd.lift`."""
    return np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]], dtype=np.float32)


def focal_from_fov(width: int, fov_deg: float) -> float:
    if not (0.5 < fov_deg < 179.5):
        raise UsageError(f"--fov must be a horizontal field of view in degrees between 0.5 and 179.5, got {fov_deg}")
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB [H,W,3], got {rgb.dtype} {tuple(rgb.shape)}")
    return rgb


def depth_edges(depth, valid=None, times: float = 0.05, kernel: int = 5) -> np.ndarray:
    """Depth discontinuities, scale-relative (the original VistaDream `edge_filter` rule).

    range = P95 - P5 of the valid depths; a valid pixel is an edge when the spread (max - min)
    of the valid depths in its `kernel`x`kernel` neighbourhood (replicate padding) exceeds
    `times * range`. Unlike the port's absolute gradient threshold this does not depend on the
    scene's units or scale (docs/upstream.md#scale-free-depth-edges).
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    v = np.isfinite(d) & (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(d))
    out = np.zeros(d.shape, dtype=bool)
    if v.sum() < 2:
        return out
    p5, p95 = np.percentile(d[v], [5, 95])
    rng = float(p95 - p5)
    if not rng > 0:
        return out
    big = np.float32(np.finfo(np.float32).max)
    hi = np.where(v, d, -big).astype(np.float32)
    lo = np.where(v, d, big).astype(np.float32)
    k = np.ones((kernel, kernel), np.uint8)
    mx = cv2.dilate(hi, k, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(lo, k, borderType=cv2.BORDER_REPLICATE)
    spread = mx - mn
    out = v & (spread > times * rng)
    return out


def sidecar_depth(image_path) -> Optional[Path]:
    """`<stem>.depth.<ext>` (or `<name>.depth.<ext>`) next to the image, if any."""
    from vd.models.depth_file import DEPTH_EXTS

    if image_path is None:
        return None
    p = Path(image_path)
    for base in (p.with_suffix(""), p):
        for ext in DEPTH_EXTS:
            c = base.parent / f"{base.name}.depth{ext}"
            if c.is_file():
                return c
    return None


def get_depth_backend(
    name: str = "auto",
    *,
    image_path=None,
    focal: Optional[float] = None,
    fov: Optional[float] = None,
    device: Optional[str] = None,
    auto_fetch: Optional[bool] = None,
    intrinsics=None,
    depth_path=None,
    quiet_choice: bool = False,
) -> DepthBackend:
    """Build (but do not load) a depth backend. Model weights are loaded on first `estimate`."""
    from vd import console

    name = (name or "auto").lower()
    if name not in DEPTH_BACKENDS:
        raise UsageError(f"unknown depth backend {name!r}; choose one of: {', '.join(DEPTH_BACKENDS)}")
    if focal is not None and fov is not None:
        raise UsageError("give either --focal or --fov, not both")
    if focal is not None and not focal > 0:
        raise UsageError(f"--focal must be a positive focal length in pixels, got {focal}")
    if fov is not None:
        focal_from_fov(100, fov)  # range check
    if name == "auto":
        if depth_path is not None or sidecar_depth(image_path) is not None:
            name = "file"
            why = f"a depth map next to the image ({(depth_path or sidecar_depth(image_path)).name})"
        else:
            name = "moge"
            why = "no depth map next to the image"
        if not quiet_choice:
            console.info(f"depth backend: {name} ({why})")
    if name == "file":
        from vd.models.depth_file import FileDepth

        return FileDepth(image_path=image_path, depth_path=depth_path, focal=focal, fov=fov, intrinsics=intrinsics)
    from vd.models.moge import MogeDepth

    return MogeDepth(device=device, focal=focal, fov=fov, auto_fetch=auto_fetch, intrinsics=intrinsics)


__all__ = [
    "DepthResult",
    "DepthBackend",
    "get_depth_backend",
    "depth_edges",
    "sidecar_depth",
    "K_from_focal",
    "focal_from_fov",
    "DEPTH_BACKENDS",
]
