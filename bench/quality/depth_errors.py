"""Depth as a monocular model gives it: the exact depth of a synthetic scene with model-like errors.

Two errors, both smooth, as a depth network's are (its output is low-pass and its metric scale is
a guess):

- **edges blurred** over `blur_px` pixels: a Gaussian blur (sigma = blur_px) of the inverse depth, so
  a depth jump becomes a ramp of in-between depths a few pixels wide (the "flying pixels" between
  a thin pole and the sky), while flat surfaces keep their depth;
- **a smooth scale error**: the depth times 1 + `scale` · (a tilt across the image, −1 at the
  top-left corner to +1 at the bottom-right), here ±5 %: nearer on one side, farther on the other.

Only the input depth handed to vd changes; every score is against the exact ground truth.
"""

from __future__ import annotations

import numpy as np


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (numpy only)."""
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img.astype(np.float64), r, mode="edge")
    rows = sum(k[i] * p[:, i:i + img.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * rows[i:i + img.shape[0], :] for i in range(2 * r + 1))


def model_like_depth(depth: np.ndarray, blur_px: float = 1.5, scale: float = 0.05) -> np.ndarray:
    """The depth with blurred edges (in inverse depth) and a smooth scale error (see the module)."""
    inv = gaussian_blur(1.0 / np.maximum(depth, 1e-6), blur_px)
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    tilt = (u / max(W - 1, 1) + v / max(H - 1, 1)) - 1.0  # -1 .. +1
    return (1.0 / inv * (1.0 + scale * tilt)).astype(np.float32)
