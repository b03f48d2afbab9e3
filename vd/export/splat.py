"""The antimatter15 `.splat` format: 32 bytes per splat, no header, no SH.

Per splat (little-endian): position float32 x3; scale float32 x3 with exp already applied;
RGBA uint8 (``(0.5 + C0*f_dc)*255``, ``sigmoid(opacity)*255``); rotation uint8 x4
``q/|q|*128 + 128`` in (w, x, y, z) order. Splats are sorted by ``-exp(sum log_scale) *
sigmoid(opacity)`` (largest, most opaque first), as antimatter15's `convert.py` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.errors import InputError
from vd.export.transform import C0, SplatArrays, filter_splats
from vd.fsio import atomic_write_bytes

SPLAT_DTYPE = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert SPLAT_DTYPE.itemsize == 32


@dataclass
class SplatReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    bytes: int


def encode_splat(a: SplatArrays) -> bytes:
    n = len(a)
    alpha = 1.0 / (1.0 + np.exp(-a.opacity_logits.astype(np.float64)))
    order = np.argsort(-np.exp(a.log_scales.astype(np.float64).sum(1)) * alpha, kind="stable")
    rec = np.empty(n, SPLAT_DTYPE)
    rec["pos"] = a.means[order]
    rec["scale"] = np.exp(a.log_scales[order].astype(np.float64))
    rgb = a.sh[order, 0, :].astype(np.float64) * C0 + 0.5
    rgba = np.concatenate([rgb, alpha[order, None]], axis=1)
    rec["rgba"] = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    q = a.quats[order].astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    rec["rot"] = np.clip(np.round(q * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rec.tobytes()


def write_splat(path, g, *, comments=None) -> SplatReport:
    """Write Gaussians (or SplatArrays) as a `.splat` file, atomically (SH beyond DC is dropped)."""

    a, rep = filter_splats(SplatArrays.from_gaussians(g))
    if len(a) == 0:
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    data = encode_splat(a)
    atomic_write_bytes(path, data)
    return SplatReport(Path(path), len(a), rep.dropped_nonfinite, rep.dropped_transparent, len(data))


def read_splat(path) -> SplatArrays:
    """Decode a `.splat` file (positions exact; colour, opacity, rotation to 8 bits)."""

    data = Path(path).read_bytes()
    if len(data) % 32:
        raise InputError(f"not a .splat file (size {len(data)} is not a multiple of 32 bytes): {path}")
    rec = np.frombuffer(data, SPLAT_DTYPE)
    n = len(rec)
    rgba = rec["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], 0.5 / 255, 1 - 0.5 / 255)
    sh = np.zeros((n, 1, 3), np.float32)
    sh[:, 0] = (rgba[:, :3] - 0.5) / C0
    q = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    with np.errstate(divide="ignore"):
        log_scales = np.log(rec["scale"].astype(np.float64))
    return SplatArrays(
        rec["pos"].astype(np.float32).copy(),
        log_scales.astype(np.float32),
        q.astype(np.float32),
        (np.log(alpha) - np.log1p(-alpha)).astype(np.float32),
        sh,
    )


__all__ = ["SPLAT_DTYPE", "SplatReport", "encode_splat", "write_splat", "read_splat"]
