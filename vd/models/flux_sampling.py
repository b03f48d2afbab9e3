"""FLUX.1-Fill's sampling arithmetic: the time-shifted schedule and the packed token layout.

Pure functions (numpy, or torch imported inside): the BFL reference's `get_schedule`, 2x2 latent
patches <-> tokens, the position ids of the packed tokens, and the Fill mask tokens.
"""

from __future__ import annotations

import math

import numpy as np

BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
BASE_SEQ, MAX_SEQ = 256, 4096
LATENT_CHANNELS = 16
VAE_FACTOR = 8


def time_shift(mu: float, t):
    """BFL time shift: t' = e^mu / (e^mu + (1/t - 1)); t = 0 stays 0, t = 1 stays 1."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))
    return np.where(t <= 0, 0.0, out)


def shift_mu(image_seq_len: int) -> float:
    """mu linear in the token count through (256, 0.5) and (4096, 1.15)."""
    m = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ - BASE_SEQ)
    return m * image_seq_len + (BASE_SHIFT - m * BASE_SEQ)


def schedule(num_steps: int, image_seq_len: int) -> list[float]:
    """num_steps + 1 sigmas, linearly spaced from 1 to 0 then time-shifted (BFL `get_schedule`)."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    t = np.linspace(1.0, 0.0, num_steps + 1)
    return [float(x) for x in time_shift(shift_mu(image_seq_len), t)]


def pack_latents(z):
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C] (2x2 patches, channel-major within a patch)."""
    B, C, h, w = z.shape
    z = z.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(B, (h // 2) * (w // 2), C * 4)


def unpack_latents(tokens, h: int, w: int):
    """[B, (h/2)(w/2), 4C] -> [B, C, h, w]; h, w are latent sizes (image / 8)."""
    B, L, D = tokens.shape
    C = D // 4
    z = tokens.view(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(B, C, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=None):
    """[(h/2)(w/2), 3] position ids (0, row, col) of the packed tokens (h, w latent sizes)."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype or torch.float32)


def mask_tokens(masks):
    """[B, 1, H, W] float (1 = generate) -> [B, L, 256]: 8x8 pixel-unshuffle to 64 channels, then 2x2 pack."""
    B, _, H, W = masks.shape
    h, w = H // VAE_FACTOR, W // VAE_FACTOR
    m = masks[:, 0].reshape(B, h, VAE_FACTOR, w, VAE_FACTOR).permute(0, 2, 4, 1, 3)
    m = m.reshape(B, VAE_FACTOR * VAE_FACTOR, h, w)
    return pack_latents(m)


__all__ = [
    "BASE_SHIFT",
    "MAX_SHIFT",
    "BASE_SEQ",
    "MAX_SEQ",
    "LATENT_CHANNELS",
    "VAE_FACTOR",
    "time_shift",
    "shift_mu",
    "schedule",
    "pack_latents",
    "unpack_latents",
    "latent_image_ids",
    "mask_tokens",
]
