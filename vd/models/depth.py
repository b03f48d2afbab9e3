"""The depth backends' interface: what `estimate` returns, and where a sidecar depth map lies.

    vd.models.choose.get_depth_backend(name="auto", *, image_path=None, focal=None, fov=None, device=None,
                                       auto_fetch=None, intrinsics=None, depth_path=None, model="vitl",
                                       licence=None) -> DepthBackend
    backend.name, backend.identity          # identity goes into cache keys
    backend.estimate(rgb uint8 [H,W,3], K_hint=None) -> DepthResult
    backend.release()                        # free the model (gc + torch.cuda.empty_cache())

Backends:
- `moge`: MoGe-2 (normal head) through the `moge` package (PyPI `dlr-moge`); metric
  z-depth, K (from its FoV estimate, or from K_hint / --focal / --fov when given), validity mask
  and normals. `model=` picks the size: vitl (weights from `vd fetch moge`), vitb (`vd fetch
  moge-vitb`) or vits (`vd fetch moge-vits`).
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

from vd.models.backend import ModelBackend

DEPTH_BACKENDS = ("auto", "moge", "file")
DEPTH_EXTS = (".npy", ".npz", ".png", ".tif", ".tiff", ".exr")  # sidecar depth maps


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

    def estimate(self, rgb: np.ndarray, K_hint=None, *, plan=None) -> DepthResult:  # pragma: no cover - interface
        raise NotImplementedError


def check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB [H,W,3], got {rgb.dtype} {tuple(rgb.shape)}")
    return rgb


def sidecar_depth(image_path) -> Optional[Path]:
    """`<stem>.depth.<ext>` (or `<name>.depth.<ext>`) next to the image, if any."""
    if image_path is None:
        return None
    p = Path(image_path)
    for base in (p.with_suffix(""), p):
        for ext in DEPTH_EXTS:
            c = base.parent / f"{base.name}.depth{ext}"
            if c.is_file():
                return c
    return None


__all__ = ["DepthResult", "DepthBackend", "check_rgb", "sidecar_depth", "DEPTH_BACKENDS", "DEPTH_EXTS"]
