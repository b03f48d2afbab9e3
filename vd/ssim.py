"""SSIM for training: fused-ssim (CUDA) when installed, else a plain torch implementation.

Both use the standard 11×11 Gaussian window (σ = 1.5), C1 = 0.01², C2 = 0.03², data range 1,
"same" zero padding. `masked_ssim` averages the SSIM map over the supervised pixels only; pixels
outside the mask are taken from the target in both images, so they add no error and receive no
gradient (upstream computed SSIM over the whole frame: docs/upstream.md#training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

C1 = 0.01**2
C2 = 0.03**2

_window_cache: dict = {}


def _window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    key = (size, sigma, channels, str(device), dtype)
    w = _window_cache.get(key)
    if w is None:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g = (g / g.sum()).to(dtype)
        w = (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous().to(device)
        _window_cache[key] = w
    return w


def ssim_map(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of two images [H,W,C] (or [B,C,H,W]) in [0,1]; returns [H,W] (or [B,H,W])."""
    squeeze = a.ndim == 3
    if squeeze:
        a = a.permute(2, 0, 1)[None]
        b = b.permute(2, 0, 1)[None]
    c = a.shape[1]
    w = _window(window_size, sigma, c, a.device, a.dtype)
    pad = window_size // 2
    conv = lambda x: F.conv2d(x, w, padding=pad, groups=c)  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    s_aa = conv(a * a) - mu_aa
    s_bb = conv(b * b) - mu_bb
    s_ab = conv(a * b) - mu_ab
    m = ((2 * mu_ab + C1) * (2 * s_ab + C2)) / ((mu_aa + mu_bb + C1) * (s_aa + s_bb + C2))
    m = m.mean(1)
    return m[0] if squeeze else m


def fused_available() -> bool:
    try:
        import fused_ssim  # noqa: F401
    except Exception:
        return False
    return True


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two [H,W,C] images (fused-ssim on CUDA when installed)."""
    if a.is_cuda and fused_available():
        from fused_ssim import fused_ssim

        return fused_ssim(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], padding="same")
    return ssim_map(a, b).mean()


def masked_ssim(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean SSIM over the pixels in `mask` [H,W] (bool); images [H,W,C] in [0,1]. Pass None for a
    full mask (fused-ssim on CUDA when installed). 1 when the mask is empty.

    Computed tensor-side (no boolean indexing, no host read), so a training step never waits on
    the GPU here."""
    if mask is None:
        return ssim(pred, target)
    m = mask.to(torch.bool)
    mixed = torch.where(m[..., None], pred, target)
    smap = torch.where(m, ssim_map(mixed, target), torch.zeros((), dtype=pred.dtype, device=pred.device))
    n = m.sum()
    return torch.where(n > 0, smap.sum() / n.clamp_min(1), torch.ones((), dtype=pred.dtype, device=pred.device))


__all__ = ["fused_available", "masked_ssim", "ssim", "ssim_map"]
