"""Reading Gaussians from any file vd writes or meets: INRIA-style PLY (and its variants),
PlayCanvas compressed PLY and SOG, antimatter15 `.splat`, Niantic SPZ (versions 1 to 4) and glTF binary
with KHR_gaussian_splatting (in vd's frame: see `vd.export.glb` for the axes).

A PLY that is not Gaussian splats (a triangle mesh, a bare point cloud) is read with defaults for
what it lacks; `require_splats=True` refuses it instead, naming what it is (`vd.export.content`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vd.errors import InputError
from vd.export.compressed_ply import is_compressed_ply, read_compressed_ply
from vd.export.content import ply_content
from vd.export.glb import read_glb
from vd.export.sog_read import read_sog
from vd.export.splat import read_splat
from vd.export.spz import read_spz
from vd.ply import gaussian_columns, parse_comments, read_ply, read_ply_columns

if TYPE_CHECKING:
    from vd.gaussians import Gaussians

AS_SPLATS_HINT = "pass --as-splats to read its vertices as opaque grey splats of scale 0.01 with no rotation"
GAUSSIAN_SUFFIXES = (".ply", ".splat", ".spz", ".sog", ".glb")
DECODED = {
    "compressed-ply": "binary_little_endian (PlayCanvas compressed, decoded)",
    "splat": "splat (antimatter15, decoded)",
    "sog": "sog (PlayCanvas, decoded)",
    "glb": "glb (glTF 2.0, KHR_gaussian_splatting, decoded)",
}


def gaussian_file_kind(path) -> str:
    """ "splat", "spz", "sog", "glb", "compressed-ply" or "ply" (by suffix and header; the reader checks the
    content)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".splat", ".spz", ".sog", ".glb"):
        return suffix[1:]
    return "compressed-ply" if is_compressed_ply(p) else "ply"


def read_gaussians(path, *, require_splats: bool = False) -> tuple[Gaussians, dict]:
    """(Gaussians on CPU, metadata) of a Gaussian file; InputError naming the problem otherwise.

    The metadata of a PLY is `vd.ply.read_ply`'s plus ``content`` (what the file holds, see
    `vd.export.content`); the others give format, count, SH degree and, for a compressed PLY,
    its header comments. require_splats: refuse a PLY that is not Gaussian splats."""
    kind = gaussian_file_kind(path)
    if kind == "splat":
        g = read_splat(path).to_gaussians()
        return g, {"format": "splat", "count": len(g), "sh_degree": 0, "comments": {}, "kind": "splat"}
    if kind == "spz":
        a, h = read_spz(path)
        return a.to_gaussians(), {
            "format": f"spz v{h.version}",
            "count": len(a),
            "sh_degree": h.sh_degree,
            "comments": {},
            "kind": "spz",
            "antialiased": bool(h.flags & 1),
        }
    if kind == "sog":
        a, meta = read_sog(path)
        generator = (meta.get("asset") or {}).get("generator")
        return a.to_gaussians(), {
            "format": "sog v2",
            "count": len(a),
            "sh_degree": a.sh_degree,
            "kind": "sog",
            "comments": {"generator": generator} if generator else {},
        }
    if kind == "glb":
        a, gltf = read_glb(path)
        generator = (gltf.get("asset") or {}).get("generator")
        return a.to_gaussians(), {
            "format": "glb (KHR_gaussian_splatting)",
            "count": len(a),
            "sh_degree": a.sh_degree,
            "kind": "glb",
            "comments": {"generator": generator} if generator else {},
        }
    if kind == "compressed-ply":
        arrays, comments = read_compressed_ply(path)
        g = arrays.to_gaussians()
        return g, {
            "format": "binary_little_endian",
            "count": len(g),
            "sh_degree": g.sh_degree,
            "comments": parse_comments(comments),
            "raw_comments": comments,
            "kind": "compressed",
        }
    g, meta = read_ply(path)
    content = ply_content(meta["properties"], meta["elements"])
    if require_splats and not content.is_splats:
        raise InputError(f"{path} is {content.describe()}, not Gaussian splats; {AS_SPLATS_HINT}")
    return g, {**meta, "content": content.kind}


def read_columns(path) -> tuple[dict, dict]:
    """Raw vertex columns of a Gaussian file for `vd inspect`; compressed PLY, SPZ and .splat are
    decoded to INRIA columns."""
    kind = gaussian_file_kind(path)
    if kind == "ply":
        return read_ply_columns(path)
    g, meta = read_gaussians(path)
    elements = {"chunk": (len(g) + 255) // 256, "vertex": len(g)} if kind == "compressed-ply" else {"vertex": len(g)}
    fmt = DECODED.get(kind, f"{meta['format']} (decoded)")
    return gaussian_columns(g), {
        "format": fmt,
        "comments": meta["comments"],
        "raw_comments": meta.get("raw_comments", []),
        "elements": elements,
        "count": len(g),
        "header_bytes": None,
    }


__all__ = ["AS_SPLATS_HINT", "GAUSSIAN_SUFFIXES", "gaussian_file_kind", "read_gaussians", "read_columns"]
