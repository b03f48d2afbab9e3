"""PlayCanvas compressed PLY (`.compressed.ply`), as read by SuperSplat, the PlayCanvas engine
and `splat-transform` (reference: splat-transform `write-compressed-ply.ts` / `decompress-ply.ts`,
gsplat `exporter.py`).

Layout:
- ``element chunk ceil(N/256)``: float ``min_x,min_y,min_z,max_x,max_y,max_z,
  min_scale_x..z,max_scale_x..z,min_r,min_g,min_b,max_r,max_g,max_b`` (18 columns).
- ``element vertex N``: uint ``packed_position`` (11/10/11 unorm within the chunk bounds),
  ``packed_rotation`` (2 bits index of the largest component + 3 x 10 bits "smallest three",
  scaled by sqrt(2)/2 and offset 0.5, sign flipped so the largest is positive),
  ``packed_scale`` (11/10/11 within the chunk's log-scale bounds, clamped to [-20, 20]),
  ``packed_color`` (8/8/8/8: linear RGB within the chunk colour bounds, alpha = sigmoid(opacity)).
- optional ``element sh N``: uchar ``f_rest_0..`` (9, 24 or 45), ``trunc((v/8+0.5)*256)``.

Splats are Morton-ordered before chunking; non-finite rows and alpha <= 1/255 are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.errors import InputError
from vd.export.transform import C0, SplatArrays, filter_splats, morton_order
from vd.fsio import atomic_write_bytes

CHUNK = 256
CHUNK_PROPS = (
    "min_x",
    "min_y",
    "min_z",
    "max_x",
    "max_y",
    "max_z",
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
    "min_r",
    "min_g",
    "min_b",
    "max_r",
    "max_g",
    "max_b",
)
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


@dataclass
class CompressedReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    chunks: int
    bytes: int


def _normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """splat-transform's normalize: 0 below min, 1 above max, 0 for a degenerate range."""
    rng = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rng < 1e-5, 0.0, (x - lo) / np.where(rng < 1e-5, 1.0, rng))
    t = np.where(x <= lo, 0.0, np.where(x >= hi, 1.0, t))
    return t


def _pack_unorm(v: np.ndarray, bits: int) -> np.ndarray:
    t = (1 << bits) - 1
    return np.clip(np.floor(v * t + 0.5), 0, t).astype(np.uint32)


def _pack_111011(x, y, z) -> np.ndarray:
    return (_pack_unorm(x, 11) << np.uint32(21)) | (_pack_unorm(y, 10) << np.uint32(11)) | _pack_unorm(z, 11)


def pack_rotation(q: np.ndarray) -> np.ndarray:
    """[M,4] quaternions (wxyz, any norm) -> uint32 smallest-three codes (2-10-10-10)."""
    q = q.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    sign = np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    norm = math.sqrt(2) * 0.5
    code = largest.astype(np.uint32)
    # the three other components, in index order
    order = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    for j in range(3):
        comp = q[np.arange(len(q)), order[:, j]]
        code = (code << np.uint32(10)) | _pack_unorm(comp * norm + 0.5, 10)
    return code


def unpack_rotation(code: np.ndarray) -> np.ndarray:
    code = code.astype(np.uint32)
    norm = 1.0 / (math.sqrt(2) * 0.5)
    un = lambda v: (v & np.uint32(1023)).astype(np.float64) / 1023.0  # noqa: E731
    a = (un(code >> np.uint32(20)) - 0.5) * norm
    b = (un(code >> np.uint32(10)) - 0.5) * norm
    c = (un(code) - 0.5) * norm
    m = np.sqrt(np.maximum(0.0, 1.0 - (a * a + b * b + c * c)))
    which = (code >> np.uint32(30)).astype(np.int64)
    out = np.empty((len(code), 4))
    order = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[which]
    rows = np.arange(len(code))
    out[rows, which] = m
    out[rows, order[:, 0]] = a
    out[rows, order[:, 1]] = b
    out[rows, order[:, 2]] = c
    return out


def _header(n: int, nchunks: int, n_rest: int, comments: list[str]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element chunk {nchunks}")
    lines += [f"property float {p}" for p in CHUNK_PROPS]
    lines.append(f"element vertex {n}")
    lines += [f"property uint {p}" for p in VERTEX_PROPS]
    if n_rest:
        lines.append(f"element sh {n}")
        lines += [f"property uchar f_rest_{i}" for i in range(n_rest)]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def encode_compressed_ply(a: SplatArrays, comments: list[str] | None = None) -> tuple[bytes, int, int, int]:
    """Encode already-filtered splats; returns (file bytes, n written, n chunks, n dropped=0)."""
    n = len(a)
    order = morton_order(a.means)
    a = a.take(order)
    nchunks = (n + CHUNK - 1) // CHUNK
    pad = nchunks * CHUNK - n

    def chunked(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0)
        return x.reshape((nchunks, CHUNK) + x.shape[1:])

    pos = chunked(a.means)  # [C,256,3]
    scl = chunked(a.log_scales)
    col = chunked(a.sh[:, 0, :]) * C0 + 0.5
    p_lo, p_hi = pos.min(1, keepdims=True), pos.max(1, keepdims=True)
    s_lo = np.clip(scl.min(1, keepdims=True), -20, 20)
    s_hi = np.clip(scl.max(1, keepdims=True), -20, 20)
    c_lo, c_hi = col.min(1, keepdims=True), col.max(1, keepdims=True)
    pn = _normalize(pos, p_lo, p_hi)
    sn = _normalize(scl, s_lo, s_hi)
    cn = _normalize(col, c_lo, c_hi)
    with np.errstate(over="ignore"):
        alpha = 1.0 / (1.0 + np.exp(-a.opacity_logits.astype(np.float32)))

    packed = np.empty((nchunks * CHUNK, 4), np.uint32)
    pn, sn, cn = pn.reshape(-1, 3), sn.reshape(-1, 3), cn.reshape(-1, 3)
    packed[:, 0] = _pack_111011(pn[:, 0], pn[:, 1], pn[:, 2])
    packed[:n, 1] = pack_rotation(a.quats)
    packed[:, 2] = _pack_111011(sn[:, 0], sn[:, 1], sn[:, 2])
    a8 = np.zeros(nchunks * CHUNK, np.float32)
    a8[:n] = alpha
    packed[:, 3] = (
        (_pack_unorm(cn[:, 0], 8) << np.uint32(24))
        | (_pack_unorm(cn[:, 1], 8) << np.uint32(16))
        | (_pack_unorm(cn[:, 2], 8) << np.uint32(8))
        | _pack_unorm(a8, 8)
    )
    packed = packed[:n]
    chunk_data = np.concatenate(
        [p_lo[:, 0], p_hi[:, 0], s_lo[:, 0], s_hi[:, 0], c_lo[:, 0], c_hi[:, 0]], axis=1
    ).astype("<f4")  # [C,18]

    n_rest = 3 * (a.sh.shape[1] - 1)
    parts = [_header(n, nchunks, n_rest, comments or []), chunk_data.tobytes(), packed.astype("<u4").tobytes()]
    if n_rest:
        rest = np.ascontiguousarray(np.transpose(a.sh[:, 1:, :], (0, 2, 1))).reshape(n, n_rest)  # channel-major (INRIA)
        # trunc((v/8 + 0.5) * 256) = trunc(32 v + 128), clamped to 0..255 (astype truncates)
        q = np.clip(rest.astype(np.float32) * np.float32(32.0) + np.float32(128.0), 0, 255).astype(np.uint8)
        parts.append(q.tobytes())
    return b"".join(parts), n, nchunks, 0


def write_compressed_ply(
    path, g, *, sh_degree: int | None = None, comments: list[str] | None = None
) -> CompressedReport:
    """Write Gaussians (or SplatArrays) as a PlayCanvas compressed PLY, atomically."""

    a = SplatArrays.from_gaussians(g).with_sh_degree(sh_degree)
    a, rep = filter_splats(a)
    if len(a) == 0:
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    data, n, nchunks, _ = encode_compressed_ply(a, comments)
    atomic_write_bytes(path, data)
    return CompressedReport(Path(path), n, rep.dropped_nonfinite, rep.dropped_transparent, nchunks, len(data))


def is_compressed_ply(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"ply") and b"element chunk" in head and b"packed_position" in head


def read_compressed_ply(path) -> tuple[SplatArrays, list[str]]:
    """Decode a compressed PLY the way splat-transform does; returns (splats, header comments).

    Alpha is clamped to [0.5/255, 1-0.5/255] before the logit so opacities stay finite."""
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
        chunk = ply["chunk"].data
        vert = ply["vertex"].data
    except Exception as e:  # plyfile raises many kinds
        raise InputError(f"not a readable compressed PLY: {path} ({e})") from None
    n = len(vert)
    nchunks = len(chunk)
    if nchunks != (n + CHUNK - 1) // CHUNK:
        raise InputError(f"compressed PLY {path}: {nchunks} chunks for {n} splats (expected ceil(N/256))")
    ci = np.arange(n) // CHUNK
    g = lambda name: np.asarray(chunk[name], np.float64)[ci]  # noqa: E731
    un = lambda v, bits: (v & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)  # noqa: E731
    lerp = lambda lo, hi, t: lo * (1 - t) + hi * t  # noqa: E731

    pp = np.asarray(vert["packed_position"], np.uint32)
    ps = np.asarray(vert["packed_scale"], np.uint32)
    pc = np.asarray(vert["packed_color"], np.uint32)
    pr = np.asarray(vert["packed_rotation"], np.uint32)

    def unpack3(v, prefix_lo, prefix_hi, names):
        t = [un(v >> np.uint32(21), 11), un(v >> np.uint32(11), 10), un(v, 11)]
        return np.stack([lerp(g(f"{prefix_lo}{k}"), g(f"{prefix_hi}{k}"), t[i]) for i, k in enumerate(names)], 1)

    means = unpack3(pp, "min_", "max_", "xyz")
    log_scales = unpack3(ps, "min_scale_", "max_scale_", "xyz")
    cr = [un(pc >> np.uint32(24), 8), un(pc >> np.uint32(16), 8), un(pc >> np.uint32(8), 8)]
    alpha = un(pc, 8)
    names = chunk.dtype.names or ()
    if "min_r" in names:
        rgb = np.stack([lerp(g(f"min_{k}"), g(f"max_{k}"), cr[i]) for i, k in enumerate("rgb")], 1)
    else:
        rgb = np.stack(cr, 1)
    alpha = np.clip(alpha, 0.5 / 255, 1 - 0.5 / 255)
    opacity = np.log(alpha) - np.log1p(-alpha)
    quats = unpack_rotation(pr)
    sh_dc = (rgb - 0.5) / C0
    k = 1
    rest = None
    if "sh" in [e.name for e in ply.elements]:
        shel = ply["sh"].data
        n_rest = len(shel.dtype.names)
        if n_rest not in (9, 24, 45):
            raise InputError(f"compressed PLY {path}: sh element has {n_rest} columns (expected 9, 24 or 45)")
        raw = np.stack([np.asarray(shel[f"f_rest_{i}"], np.float64) for i in range(n_rest)], 1)
        nv = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256.0))
        rest = (nv - 0.5) * 8.0
        k = n_rest // 3 + 1
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0] = sh_dc
    if rest is not None:
        sh[:, 1:, :] = np.transpose(rest.reshape(n, 3, k - 1), (0, 2, 1))
    comments = [str(c) for c in ply.comments]
    arr = SplatArrays(
        means.astype(np.float32),
        log_scales.astype(np.float32),
        quats.astype(np.float32),
        opacity.astype(np.float32),
        sh,
    )
    return arr, comments


__all__ = [
    "CompressedReport",
    "write_compressed_ply",
    "read_compressed_ply",
    "encode_compressed_ply",
    "is_compressed_ply",
    "pack_rotation",
    "unpack_rotation",
    "CHUNK",
]
