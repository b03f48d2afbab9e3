"""glTF 2.0 binary (`.glb`) with Gaussian splats: the KHR_gaussian_splatting extension, written and read.

What the extension says (Khronos glTF, extensions/2.0/Khronos/KHR_gaussian_splatting, 2026): one mesh
primitive of mode POINTS (0) whose attributes are

- ``POSITION`` (float VEC3, with min/max as glTF requires);
- ``KHR_gaussian_splatting:ROTATION``: a unit quaternion, (x, y, z, w);
- ``KHR_gaussian_splatting:SCALE``: linear scales (not their logarithms), never negative;
- ``KHR_gaussian_splatting:OPACITY``: linear opacity in [0, 1] (after the sigmoid);
- ``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n``: float VEC3 (r, g, b) SH coefficients, degree 0 always,
  every coefficient of each degree written up to the scene's;
- ``COLOR_0`` (optional): the diffuse colour ``SH0 * 0.2820948 + 0.5`` and the opacity, for viewers that draw
  plain points; the primitive's extension object names kernel ``ellipse`` and colour space
  ``srgb_rec709_display``.

Axes and units: glTF is right-handed, +Y up, metres, and a camera looks along -Z. vd's world is the input
camera's OpenCV frame (x right, y down, z forward), so vd writes the scene rotated 180 degrees about x,
(x, y, z) -> (x, -y, -z), orientations and SH included: the input camera becomes a glTF camera at the
origin with no rotation, and vd writes that camera too (node "input camera", its vertical field of view and
aspect from K). Reading rotates back. (splat-transform maps a PLY to glTF by 180 degrees about z instead, so
its files read back turned 180 degrees about y from its PLY; both are +Y up.) Units: vd's depths are metric
when the depth model is (MoGe), so one unit is one metre.

Compression extensions (KHR_spz_gaussian_splats_compression) are still drafts and are not written.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vd import __version__
from vd.errors import InputError
from vd.export.transform import C0, SplatArrays, filter_splats, rotate_splats
from vd.fsio import atomic_write_bytes

EXT = "KHR_gaussian_splatting"
RDF_TO_GLTF = np.diag([1.0, -1.0, -1.0])  # its own inverse
GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, UBYTE, BYTE, USHORT, SHORT = 5126, 5121, 5120, 5123, 5122
ARRAY_BUFFER = 34962
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPES = {FLOAT: "<f4", UBYTE: "u1", BYTE: "i1", USHORT: "<u2", SHORT: "<i2"}
_NORMALISE = {UBYTE: 255.0, BYTE: 127.0, USHORT: 65535.0, SHORT: 32767.0}


@dataclass
class GlbReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    bytes: int
    sh_degree: int


def sh_attribute(k: int) -> str:
    """The attribute name of SH coefficient k (0 = DC, 1..3 degree 1, 4..8 degree 2, 9..15 degree 3)."""
    degree = math.isqrt(k)
    return f"{EXT}:SH_DEGREE_{degree}_COEF_{k - degree * degree}"


def _camera(K, width: int, height: int, world_from_camera) -> tuple[dict, dict]:
    """(camera, node) of the input camera in glTF's frame."""
    K = np.asarray(K, np.float64)
    cam = {
        "type": "perspective",
        "name": "input camera",
        "perspective": {
            "yfov": float(2 * math.atan(height / (2 * K[1, 1]))),
            "aspectRatio": float(width / height),
            "znear": 0.01,
        },
    }
    node = {"name": "input camera", "camera": 0}
    if world_from_camera is not None and not np.allclose(world_from_camera, np.eye(4)):
        C = np.diag([1.0, -1.0, -1.0, 1.0])
        M = C @ np.asarray(world_from_camera, np.float64) @ C  # glTF world from glTF camera (looks along -Z)
        node["matrix"] = M.T.reshape(-1).tolist()  # column-major
    return cam, node


def encode_glb(a: SplatArrays, *, camera: dict | None = None) -> bytes:
    """The .glb bytes of filtered splats in vd's frame. camera: {"K", "width", "height", "world_from_camera"}."""
    r = rotate_splats(a, RDF_TO_GLTF)
    n = len(r)
    q = r.quats.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rgb = r.sh[:, 0].astype(np.float64) * C0 + 0.5
    alpha = 1.0 / (1.0 + np.exp(-r.opacity_logits.astype(np.float64)))
    colour = np.clip(np.round(np.concatenate([rgb, alpha[:, None]], 1) * 255), 0, 255).astype(np.uint8)
    columns = [
        ("POSITION", r.means.astype("<f4"), "VEC3"),
        ("COLOR_0", colour, "VEC4"),
        (f"{EXT}:ROTATION", q[:, [1, 2, 3, 0]].astype("<f4"), "VEC4"),
        (f"{EXT}:SCALE", np.exp(r.log_scales.astype(np.float64)).astype("<f4"), "VEC3"),
        (f"{EXT}:OPACITY", alpha.astype("<f4"), "SCALAR"),
    ]
    columns += [(sh_attribute(k), r.sh[:, k].astype("<f4"), "VEC3") for k in range(r.sh.shape[1])]
    blob, views, accessors, attributes = bytearray(), [], [], {}
    for i, (name, arr, kind) in enumerate(columns):
        data = np.ascontiguousarray(arr).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": ARRAY_BUFFER})
        acc = {"bufferView": i, "componentType": UBYTE if arr.dtype == np.uint8 else FLOAT, "count": n, "type": kind}
        if name == "POSITION":
            acc.update(min=r.means.min(0).astype(float).tolist(), max=r.means.max(0).astype(float).tolist())
        if name == "COLOR_0":
            acc["normalized"] = True
        accessors.append(acc)
        attributes[name] = i
        blob += data + b"\0" * (-len(data) % 4)
    primitive = {
        "attributes": attributes,
        "mode": 0,
        "extensions": {
            EXT: {
                "kernel": "ellipse",
                "colorSpace": "srgb_rec709_display",
                "sortingMethod": "cameraDistance",
                "projection": "perspective",
            }
        },
    }
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": f"vd {__version__}"},
        "extensionsUsed": [EXT],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "scene", "mesh": 0}],
        "meshes": [{"name": "gaussian splats", "primitives": [primitive]}],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if camera is not None:
        cam, node = _camera(camera["K"], camera["width"], camera["height"], camera.get("world_from_camera"))
        gltf["cameras"] = [cam]
        gltf["nodes"].append(node)
        gltf["scenes"][0]["nodes"].append(1)
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return (
        struct.pack("<III", GLB_MAGIC, 2, total)
        + struct.pack("<II", len(text), JSON_CHUNK)
        + text
        + struct.pack("<II", len(blob), BIN_CHUNK)
        + bytes(blob)
    )


def write_glb(path, g, *, sh_degree: int | None = None, camera: dict | None = None) -> GlbReport:
    """Write Gaussians (vd's frame) as a .glb with KHR_gaussian_splatting, atomically."""
    a, rep = filter_splats(SplatArrays.from_gaussians(g))
    if len(a) == 0:
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    a = a.with_sh_degree(sh_degree)
    data = encode_glb(a, camera=camera)
    atomic_write_bytes(path, data)
    return GlbReport(Path(path), len(a), rep.dropped_nonfinite, rep.dropped_transparent, len(data), a.sh_degree)


# ------------------------------------------------------------------------------------ reading
def parse_glb(data: bytes, where: str) -> tuple[dict, bytes]:
    """(glTF JSON, binary chunk) of .glb bytes; InputError when they are not a glTF binary."""
    if len(data) < 20 or struct.unpack_from("<I", data)[0] != GLB_MAGIC:
        raise InputError(f"{where} is not a glTF binary (.glb) file (no glTF magic number)")
    _, version, total = struct.unpack_from("<III", data)
    if version != 2:
        raise InputError(f"{where} is glTF binary version {version}; vd reads version 2")
    if total > len(data):
        raise InputError(f"{where} is truncated: its header says {total} bytes, the file holds {len(data)}")
    off, gltf, blob = 12, None, b""
    while off + 8 <= total:
        size, kind = struct.unpack_from("<II", data, off)
        chunk = data[off + 8 : off + 8 + size]
        if kind == JSON_CHUNK:
            try:
                gltf = json.loads(chunk)
            except ValueError as e:
                raise InputError(f"{where}: its glTF JSON is not readable ({e})") from None
        elif kind == BIN_CHUNK and not blob:
            blob = chunk
        off += 8 + size + (-size % 4)
    if not isinstance(gltf, dict):
        raise InputError(f"{where} has no glTF JSON chunk")
    return gltf, blob


def _accessor(gltf: dict, blob: bytes, index: int, where: str) -> np.ndarray:
    """[count, components] float64 values of an accessor (normalised integers scaled to [-1, 1] / [0, 1])."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    if view.get("buffer", 0) != 0:
        raise InputError(f"{where}: accessor {index} reads an external buffer; vd reads self-contained .glb files only")
    comps, ctype, count = _COMPONENTS[acc["type"]], acc["componentType"], acc["count"]
    dt = np.dtype(_DTYPES[ctype])
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride") or dt.itemsize * comps
    if start + stride * (count - 1) + dt.itemsize * comps > len(blob):
        raise InputError(f"{where}: accessor {index} reaches past the end of the binary chunk (truncated file?)")
    rows = np.lib.stride_tricks.as_strided(
        np.frombuffer(blob, np.uint8, offset=start), (count, dt.itemsize * comps), (stride, 1)
    )
    vals = np.ascontiguousarray(rows).view(dt).reshape(count, comps).astype(np.float64)
    if acc.get("normalized") and ctype in _NORMALISE:
        vals = np.maximum(vals / _NORMALISE[ctype], -1.0)
    return vals


def read_glb(path) -> tuple[SplatArrays, dict]:
    """(splats in vd's frame, glTF JSON) of the first KHR_gaussian_splatting primitive of a .glb file."""
    p = Path(path)
    where = str(p)
    gltf, blob = parse_glb(p.read_bytes(), where)
    prims = [pr for m in gltf.get("meshes", []) for pr in m.get("primitives", []) if EXT in pr.get("extensions", {})]
    if not prims:
        raise InputError(
            f"{where} holds no Gaussian splats (no mesh primitive with the {EXT} extension); "
            "a triangle mesh cannot be read as splats"
        )
    attrs = prims[0]["attributes"]
    need = ["POSITION", f"{EXT}:ROTATION", f"{EXT}:SCALE", f"{EXT}:OPACITY", sh_attribute(0)]
    missing = [a for a in need if a not in attrs]
    if missing:
        raise InputError(f"{where}: its splat primitive lacks {', '.join(missing)}")
    try:
        col = {name: _accessor(gltf, blob, attrs[name], where) for name in need}
        k = 1
        while k < 16 and sh_attribute(k) in attrs:
            k += 1
        k = max(d * d for d in (1, 2, 3, 4) if d * d <= k)  # whole degrees only
        sh = [col[sh_attribute(0)]] + [_accessor(gltf, blob, attrs[sh_attribute(i)], where) for i in range(1, k)]
    except (KeyError, IndexError, TypeError) as e:
        raise InputError(f"{where}: its glTF JSON lacks or mangles a field vd needs ({e!r})") from None
    q = col[f"{EXT}:ROTATION"][:, [3, 0, 1, 2]]
    scale = col[f"{EXT}:SCALE"]
    alpha = np.clip(col[f"{EXT}:OPACITY"][:, 0], 1e-7, 1 - 1e-7)
    with np.errstate(divide="ignore"):
        log_scales = np.log(np.maximum(scale, 1e-30))
    a = SplatArrays(
        col["POSITION"].astype(np.float32),
        log_scales.astype(np.float32),
        q.astype(np.float32),
        np.log(alpha / (1 - alpha)).astype(np.float32),
        np.stack(sh, 1).astype(np.float32),
    )
    return rotate_splats(a, RDF_TO_GLTF), gltf


__all__ = ["EXT", "GlbReport", "encode_glb", "parse_glb", "read_glb", "sh_attribute", "write_glb"]
