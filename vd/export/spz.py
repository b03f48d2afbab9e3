"""Niantic's SPZ (`.spz`): a gzip stream of a 16-byte header and the Gaussians, attribute by attribute.

Layout (little-endian; facts from the nianticlabs/spz README and format code):

- header: uint32 magic 0x5053474e ("NGSP"), uint32 version, uint32 count, uint8 SH degree,
  uint8 fractional bits (12), uint8 flags (0x1 antialiased, 0x2 extension records follow), uint8 0;
- positions: 3 x 24-bit signed fixed point per splat (``round(p * 2**fractional_bits)``);
- alphas: uint8 ``sigmoid(opacity) * 255``;
- colours: uint8 x3 ``f_dc * 0.15 * 255 + 127.5`` (a wider range than RGB, so SH can bring it back);
- scales: uint8 x3 ``(log_scale + 10) * 16``;
- rotations, quaternion components in (x, y, z, w) order: version 2 stores x, y, z as uint8
  ``q * 127.5 + 127.5`` with w >= 0; version 3 stores "smallest three" in a uint32: 2 bits naming
  the largest component, then for each other component (first one in the highest bits) a sign bit
  and a 9-bit magnitude over [0, 1/sqrt 2];
- SH bands 1..3: uint8 ``x * 128 + 128``, colour channel fastest, coefficient next; degree-1
  coefficients rounded to 5 significant bits, higher ones to 4 (Niantic's defaults).

Axes: SPZ is RUB (x right, y up, z back: OpenGL / three.js). vd's world is OpenCV RDF, so writing
rotates the scene 180 degrees about x, (x, y, z) -> (x, -y, -z), orientations and SH included, and
reading rotates it back: a scene read from an SPZ is in vd's frame again.

Version 4 (splat-transform's default) is not gzipped: a 32-byte header (the 16 bytes above with byte 15
counting the streams, then uint32 32, the offset of the table, and 12 zero bytes), a table of (uint64
compressed size, uint64 raw size) per stream, then the streams, each one Zstandard frame: positions,
alphas, colours, scales, rotations (smallest three, as version 3) and, with SH, the SH bands. Their
raw bytes are version 3's body cut into attributes (facts read from files splat-transform 2.7 writes).

Versions written: 2 and 3 (default 3, see `vd.params.SPZ_VERSION`); read: 1 to 4.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.errors import InputError, UsageError
from vd.export.transform import SplatArrays, filter_splats, rotate_splats
from vd.fsio import atomic_write_bytes
from vd.params import SPZ_VERSIONS

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
SH1_BITS, SH_REST_BITS = 5, 4
RDF_TO_RUB = np.diag([1.0, -1.0, -1.0])  # its own inverse
GZIP_LEVEL = 6  # zlib's default; 9 is ~3x slower for ~2% smaller files
V4_HEADER = struct.Struct("<IIIBBBBI12x")
V4_STREAM = struct.Struct("<QQ")
GZIP_MAGIC = b"\x1f\x8b"
_SQRT1_2 = np.float32(0.7071067811865476)
_MAX_FIXED = (1 << 23) - 1


@dataclass
class SpzReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    bytes: int
    version: int


# ------------------------------------------------------------------------------------ writing
def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def finest_fractional_bits(means: np.ndarray, most: int = 20) -> int:
    """The most fractional bits (at most `most`, at least 12) that still hold every position in 24 bits."""
    reach = float(np.abs(means).max(initial=0.0))
    if reach <= 0 or not np.isfinite(reach):
        return most
    return int(np.clip(np.floor(np.log2(_MAX_FIXED / reach)), FRACTIONAL_BITS, most))


def _fixed24(means: np.ndarray, bits: int = FRACTIONAL_BITS) -> np.ndarray:
    """[N,3] positions -> [N*9] bytes of 24-bit two's complement fixed point."""
    fixed = np.round(means.astype(np.float64) * (1 << bits))
    lim = _MAX_FIXED / (1 << bits)
    if np.abs(fixed).max(initial=0) > _MAX_FIXED:
        raise InputError(
            f"the scene reaches {np.abs(means).max():.1f} units from the origin; SPZ positions stop at ±{lim:.0f}"
        )
    b = fixed.astype("<i4").reshape(-1, 1).view(np.uint8)  # [N*3, 4] little-endian
    return np.ascontiguousarray(b[:, :3]).reshape(-1)


def _unit_xyzw(quats_wxyz: np.ndarray) -> np.ndarray:
    q = quats_wxyz.astype(np.float64)[:, [1, 2, 3, 0]]
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def pack_rotations_v2(quats_wxyz: np.ndarray) -> np.ndarray:
    """[N,3] uint8: x, y, z of the unit quaternion with w made non-negative."""
    q = _unit_xyzw(quats_wxyz)
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)
    return _u8(q[:, :3] * 127.5 + 127.5)


def pack_rotations_v3(quats_wxyz: np.ndarray) -> np.ndarray:
    """[N,4] uint8 (a little-endian uint32 each): "smallest three" of the unit quaternion."""
    q = _unit_xyzw(quats_wxyz)
    n = len(q)
    largest = np.argmax(np.abs(q), axis=1)
    q *= np.where(q[np.arange(n), largest] < 0, -1.0, 1.0)[:, None]  # the largest becomes positive
    word = largest.astype(np.uint32)
    for i in range(4):
        other = largest != i
        mag = np.floor(511.0 * np.abs(q[:, i]) / float(_SQRT1_2) + 0.5).astype(np.uint32)
        field = ((q[:, i] < 0).astype(np.uint32) << 9) | np.minimum(mag, 511)
        word = np.where(other, (word << 10) | field, word)
    return word.astype("<u4").view(np.uint8).reshape(n, 4)


def _quantise_sh(rest: np.ndarray) -> np.ndarray:
    """[N,K-1,3] SH bands 1.. -> uint8, 5 bits for band 1 and 4 bits beyond (bucket centres hold 0)."""
    q = np.round(rest.astype(np.float64) * 128.0) + 128.0
    bucket = np.full(rest.shape[1], 1 << (8 - SH_REST_BITS), np.float64)
    bucket[:3] = 1 << (8 - SH1_BITS)
    b = bucket[None, :, None]
    q = np.floor((q + b // 2) / b) * b
    return np.clip(q, 0, 255).astype(np.uint8)


def encode_spz(a: SplatArrays, version: int = 3, fractional_bits: int = FRACTIONAL_BITS) -> bytes:
    """The SPZ bytes of splats in vd's frame (already filtered), gzip-compressed. Positions are stored with
    `fractional_bits` (Niantic's 12 by default; readers take the header's value)."""
    if version not in SPZ_VERSIONS:
        raise UsageError(f"--spz-version must be one of {', '.join(map(str, SPZ_VERSIONS))}, got {version}")
    r = rotate_splats(a, RDF_TO_RUB)
    n = len(r)
    alpha = 1.0 / (1.0 + np.exp(-r.opacity_logits.astype(np.float64)))
    rot = pack_rotations_v3(r.quats) if version >= 3 else pack_rotations_v2(r.quats)
    parts = [
        HEADER.pack(MAGIC, version, n, r.sh_degree, fractional_bits, 0, 0),
        _fixed24(r.means, fractional_bits).tobytes(),
        _u8(alpha * 255.0).tobytes(),
        _u8(r.sh[:, 0, :].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5).tobytes(),
        _u8((r.log_scales.astype(np.float64) + 10.0) * 16.0).tobytes(),
        rot.tobytes(),
        _quantise_sh(r.sh[:, 1:, :]).tobytes() if r.sh_degree > 0 else b"",
    ]
    return gzip.compress(b"".join(parts), compresslevel=GZIP_LEVEL, mtime=0)


def write_spz(path, g, *, version: int = 3) -> SpzReport:
    """Write Gaussians (or SplatArrays, vd's frame) as an SPZ file, atomically."""
    a, rep = filter_splats(SplatArrays.from_gaussians(g))
    if len(a) == 0:
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    data = encode_spz(a, version)
    atomic_write_bytes(path, data)
    return SpzReport(Path(path), len(a), rep.dropped_nonfinite, rep.dropped_transparent, len(data), version)


# ------------------------------------------------------------------------------------ reading
@dataclass
class SpzHeader:
    version: int
    count: int
    sh_degree: int
    fractional_bits: int
    flags: int


def _parse_header(raw: bytes, where: str) -> SpzHeader:
    if len(raw) < HEADER.size:
        raise InputError(f"{where} is not an SPZ file (shorter than its 16-byte header)")
    magic, version, n, deg, frac, flags, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise InputError(f"{where} is not an SPZ file (no NGSP magic number after decompression)")
    if version == 4:
        raise InputError(
            f"{where} holds an SPZ version 4 header inside gzip, but version 4 files are not gzipped; "
            "the file is damaged"
        )
    if version not in (1, 2, 3):
        raise InputError(f"{where} is SPZ version {version}; vd reads versions 1 to 4")
    if deg > 3:
        raise InputError(f"{where} holds SH degree {deg}; vd reads SPZ files up to SH degree 3")
    if flags & FLAG_EXTENSIONS:
        raise InputError(f"{where} carries SPZ extension records, which vd does not read yet")
    return SpzHeader(version, n, deg, frac, flags)


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{where} is not a readable SPZ file (its gzip stream is broken: {e})") from None


def _v4_body(data: bytes, where: str) -> tuple[SpzHeader, bytes]:
    """(header, version 3's body layout) of an SPZ version 4 file: its Zstandard streams, decompressed and joined."""
    import zstandard

    if len(data) < V4_HEADER.size:
        raise InputError(f"{where} is truncated (shorter than the 32-byte SPZ version 4 header)")
    _, version, n, deg, frac, flags, streams, table = V4_HEADER.unpack_from(data)
    if version != 4:
        raise InputError(f"{where} is SPZ version {version} without gzip; only version 4 files are stored so")
    if deg > 3:
        raise InputError(f"{where} holds SH degree {deg}; vd reads SPZ files up to SH degree 3")
    if flags & FLAG_EXTENSIONS:
        raise InputError(f"{where} carries SPZ extension records, which vd does not read yet")
    expected = 5 + (deg > 0)
    if streams != expected or table < V4_HEADER.size:
        raise InputError(
            f"{where} has {streams} streams in its SPZ version 4 table (expected {expected} for SH degree {deg})"
        )
    off = table + streams * V4_STREAM.size
    if len(data) < off:
        raise InputError(f"{where} is truncated inside its SPZ version 4 stream table")
    parts = []
    for i in range(streams):
        packed, raw = V4_STREAM.unpack_from(data, table + i * V4_STREAM.size)
        if off + packed > len(data):
            raise InputError(f"{where} is truncated: stream {i + 1} of {streams} needs {packed} bytes past byte {off}")
        try:
            body = zstandard.ZstdDecompressor().decompress(data[off : off + packed], max_output_size=raw)
        except zstandard.ZstdError as e:
            raise InputError(f"{where}: stream {i + 1} of its SPZ version 4 data is broken ({e})") from None
        if len(body) != raw:
            raise InputError(f"{where}: stream {i + 1} holds {len(body)} bytes, its table says {raw}")
        parts.append(body)
        off += packed
    return SpzHeader(4, n, deg, frac, flags), b"".join(parts)


def _positions(buf: bytes, off: int, h: SpzHeader) -> tuple[np.ndarray, int]:
    n = h.count
    if h.version == 1:  # float16 positions (never released by Niantic, still readable)
        return np.frombuffer(buf, "<f2", 3 * n, off).astype(np.float32).reshape(n, 3), off + 6 * n
    b = np.frombuffer(buf, np.uint8, 9 * n, off).reshape(n * 3, 3).astype(np.int32)
    fixed = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    return (fixed.astype(np.float64) / (1 << h.fractional_bits)).astype(np.float32).reshape(n, 3), off + 9 * n


def unpack_rotations_v2(b: np.ndarray) -> np.ndarray:
    """[N,3] uint8 -> [N,4] wxyz."""
    xyz = b.astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.clip(1.0 - (xyz**2).sum(1), 0.0, None))
    return np.concatenate([w[:, None], xyz], 1).astype(np.float32)


def unpack_rotations_v3(b: np.ndarray) -> np.ndarray:
    """[N,4] uint8 -> [N,4] wxyz."""
    word = np.ascontiguousarray(b).view("<u4").reshape(-1).astype(np.uint32)
    n = len(word)
    largest = (word >> 30).astype(np.int64)
    q = np.zeros((n, 4), np.float64)  # xyzw
    for i in (3, 2, 1, 0):  # the last component written sits in the lowest bits
        other = largest != i
        mag = (word & 511).astype(np.float64) * float(_SQRT1_2) / 511.0
        val = np.where((word >> 9) & 1, -mag, mag)
        q[:, i] = np.where(other, val, 0.0)
        word = np.where(other, word >> 10, word)
    q[np.arange(n), largest] = np.sqrt(np.clip(1.0 - (q**2).sum(1), 0.0, None))
    return q[:, [3, 0, 1, 2]].astype(np.float32)


def decode_spz(raw: bytes, where: str = "the SPZ data") -> tuple[SplatArrays, SpzHeader]:
    """(splats in vd's frame, header) of decompressed SPZ bytes (versions 1 to 3)."""
    h = _parse_header(raw, where)
    return _decode_body(raw, HEADER.size, h, where), h


def _decode_body(raw: bytes, start: int, h: SpzHeader, where: str) -> SplatArrays:
    """Splats (vd's frame) from the attribute arrays that begin at `start`."""
    n, k = h.count, (h.sh_degree + 1) ** 2
    rot_bytes = 4 if h.version >= 3 else 3
    need = start + n * ((6 if h.version == 1 else 9) + 1 + 3 + 3 + rot_bytes + 3 * (k - 1))
    if len(raw) < need:
        raise InputError(f"{where} is truncated: {n} splats need {need} bytes, the stream holds {len(raw)}")
    means, off = _positions(raw, start, h)
    alpha = np.frombuffer(raw, np.uint8, n, off).astype(np.float64) / 255.0
    off += n
    colors = np.frombuffer(raw, np.uint8, 3 * n, off).reshape(n, 3).astype(np.float64)
    off += 3 * n
    log_scales = np.frombuffer(raw, np.uint8, 3 * n, off).reshape(n, 3).astype(np.float32) / 16.0 - 10.0
    off += 3 * n
    rb = np.frombuffer(raw, np.uint8, rot_bytes * n, off).reshape(n, rot_bytes)
    quats = unpack_rotations_v3(rb) if rot_bytes == 4 else unpack_rotations_v2(rb)
    off += rot_bytes * n
    sh = np.empty((n, k, 3), np.float32)
    sh[:, 0] = (colors / 255.0 - 0.5) / COLOR_SCALE
    if k > 1:
        sh[:, 1:] = (
            np.frombuffer(raw, np.uint8, 3 * (k - 1) * n, off).reshape(n, k - 1, 3).astype(np.float32) - 128.0
        ) / 128.0
    alpha = np.clip(alpha, 0.5 / 255, 1 - 0.5 / 255)
    logits = (np.log(alpha) - np.log1p(-alpha)).astype(np.float32)
    return rotate_splats(SplatArrays(means, log_scales, quats, logits, sh), RDF_TO_RUB)


def read_spz(path) -> tuple[SplatArrays, SpzHeader]:
    """Decode an `.spz` file of any version (1-3 gzipped, 4 raw with Zstandard streams): (splats in vd's frame,
    header)."""
    p = Path(path)
    data = p.read_bytes()
    if data[:4] == struct.pack("<I", MAGIC):
        h, body = _v4_body(data, str(p))
        return _decode_body(body, 0, h, str(p)), h
    return decode_spz(_gunzip(data, str(p)), str(p))


__all__ = [
    "SpzHeader",
    "SpzReport",
    "decode_spz",
    "encode_spz",
    "finest_fractional_bits",
    "pack_rotations_v2",
    "pack_rotations_v3",
    "read_spz",
    "unpack_rotations_v2",
    "unpack_rotations_v3",
    "write_spz",
]
