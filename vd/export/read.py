"""Reading Gaussians from any file vd writes or meets: INRIA-style PLY (and its variants),
PlayCanvas compressed PLY, and antimatter15 `.splat`."""

from __future__ import annotations

from pathlib import Path

from vd.export.compressed_ply import is_compressed_ply, read_compressed_ply
from vd.export.splat import read_splat
from vd.ply import gaussian_columns, parse_comments, read_ply, read_ply_columns


def gaussian_file_kind(path) -> str:
    """"splat", "compressed-ply" or "ply" (by suffix and header; the reader checks the content)."""
    p = Path(path)
    if p.suffix.lower() == ".splat":
        return "splat"
    return "compressed-ply" if is_compressed_ply(p) else "ply"


def read_gaussians(path) -> tuple[object, dict]:
    """(Gaussians on CPU, metadata) of a Gaussian file; InputError naming the problem otherwise.

    The metadata of a PLY is `vd.ply.read_ply`'s; the others give format, count, SH degree and,
    for a compressed PLY, its header comments."""
    kind = gaussian_file_kind(path)
    if kind == "splat":
        g = read_splat(path).to_gaussians()
        return g, {"format": "splat", "count": len(g), "sh_degree": 0, "comments": {}, "kind": "splat"}
    if kind == "compressed-ply":
        arrays, comments = read_compressed_ply(path)
        g = arrays.to_gaussians()
        return g, {"format": "binary_little_endian", "count": len(g), "sh_degree": g.sh_degree,
                   "comments": parse_comments(comments), "raw_comments": comments, "kind": "compressed"}
    return read_ply(path)


def read_columns(path) -> tuple[dict, dict]:
    """Raw vertex columns of a PLY for `vd inspect`; a compressed PLY is decoded to INRIA columns."""
    if gaussian_file_kind(path) != "compressed-ply":
        return read_ply_columns(path)
    g, meta = read_gaussians(path)
    n_chunks = (len(g) + 255) // 256
    return gaussian_columns(g), {"format": "binary_little_endian (PlayCanvas compressed, decoded)",
                                 "comments": meta["comments"], "raw_comments": meta["raw_comments"],
                                 "elements": {"chunk": n_chunks, "vertex": len(g)}, "count": len(g), "header_bytes": None}


__all__ = ["gaussian_file_kind", "read_gaussians", "read_columns"]
