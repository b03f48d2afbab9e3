"""INRIA-layout PLY export: `--sh-degree`, `--up` (rotates positions, orientations and SH; the axis
is recorded in the header as ``comment up: <axis>``),
non-finite and transparent (alpha < 1/255) Gaussians dropped and counted (`vd.ply.write_ply`)."""

from __future__ import annotations

from pathlib import Path

from vd.errors import InputError
from vd.export.transform import UP_DESCRIPTIONS, SplatArrays, apply_up, up_rotation
from vd.ply import write_ply


def prepare(g, *, up: str = "-y", sh_degree: int | None = None) -> SplatArrays:
    """Gaussians -> SplatArrays at the requested SH degree, rotated to the requested up axis."""
    up_rotation(up)  # validates
    a = SplatArrays.from_gaussians(g).with_sh_degree(sh_degree)
    return apply_up(a, up)


def export_ply(g, path, *, up: str = "-y", sh_degree: int | None = None, comments: dict | None = None):
    """Write `g` as an INRIA PLY; returns `vd.ply.PlyReport` (written, dropped_nonfinite, dropped_transparent)."""

    a = prepare(g, up=up, sh_degree=sh_degree)
    c = dict(comments or {})
    c["up"] = up
    c["convention"] = UP_DESCRIPTIONS[up]
    rep = write_ply(Path(path), a.to_gaussians(), comments=c, sh_degree=a.sh_degree)
    if rep.written == 0:
        Path(path).unlink(missing_ok=True)
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    return rep


__all__ = ["prepare", "export_ply"]
