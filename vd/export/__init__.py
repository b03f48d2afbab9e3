"""Export formats (PLY, compressed PLY, .splat, SPZ, SOG, a self-contained HTML viewer, COLMAP
dataset, video) and the dataset validator.

    from vd.export import export_gaussians
    report = export_gaussians(g, "scene.compressed.ply", "compressed-ply", up="-y", sh_degree=None)

Modules: `ply` (INRIA PLY with --up/--sh-degree), `compressed_ply` (PlayCanvas chunked format,
writer and decoder), `splat` (antimatter15 32-byte format, writer and reader), `spz` (Niantic,
writer and reader, versions 1-4), `sog` (PlayCanvas SOG through `splat-transform`), `sog_read` (its reader),
`glb` (glTF 2.0 binary with KHR_gaussian_splatting, writer and reader), `mesh` (a triangle mesh by TSDF fusion),
`html` (one page with the scene and a WebGL2 viewer), `content` (what a PLY holds), `read` (any Gaussian file),
`colmap` (the refine dataset), `validate` (its strict validator), `video` (MP4/GIF fly-throughs), `source`
(resolving `vd export SOURCE`), `transform` (filters, up-axis rotation, Morton order), `normals`.
numpy/torch are imported by those modules, not here.
"""

from __future__ import annotations

from pathlib import Path

from vd import __version__
from vd.errors import UsageError
from vd.export.compressed_ply import write_compressed_ply
from vd.export.ply import export_ply, prepare
from vd.export.splat import write_splat
from vd.export.spz import write_spz
from vd.export.transform import UP_DESCRIPTIONS
from vd.params import ExportParams

GAUSSIAN_FORMATS = ("ply", "compressed-ply", "splat", "spz")
FORMATS = GAUSSIAN_FORMATS + ("sog", "glb", "mesh", "html", "colmap", "video")
FIXED_FRAME_FORMATS = (
    "spz",
    "sog",
    "glb",
    "mesh",
    "html",
    "colmap",
    "video",
)  # written in one frame each: --up does not apply


# the file names each format writes (colmap writes a folder); `--format` is read from them when not given
SUFFIXES = {
    "ply": (".ply",),
    "compressed-ply": (".compressed.ply", ".ply"),
    "splat": (".splat",),
    "spz": (".spz",),
    "sog": (".sog",),
    "glb": (".glb",),
    "mesh": (".glb", ".ply", ".obj"),
    "html": (".html", ".htm"),
    "video": (".mp4", ".gif"),
}
_BY_SUFFIX = {".compressed.ply": "compressed-ply", ".obj": "mesh", ".mp4": "video", ".gif": "video", ".htm": "html"}


def _named(path) -> tuple[str, str] | None:
    """(format, suffix) that a file name asks for, the longest suffix first; None when its suffix names none."""
    name = Path(path).name.lower()
    for suffix in sorted({s for ss in SUFFIXES.values() for s in ss}, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return _BY_SUFFIX.get(suffix) or next(f for f, ss in SUFFIXES.items() if ss[0] == suffix), suffix
    return None


def format_of(path) -> str | None:
    """The format a file name asks for (`scene.spz`: spz, `scene.obj`: mesh), or None when its suffix names none."""
    named = _named(path)
    return named[0] if named else None


def check_name(fmt: str, path) -> None:
    """UsageError when `path` is named for another format than `fmt` (PLY bytes in `scene.spz` open nowhere); a
    suffix no format writes is the user's choice."""
    named = _named(path)
    name = Path(path).name
    if named is None or fmt == "colmap" or any(name.lower().endswith(s) for s in SUFFIXES[fmt]):
        return
    suffixes = SUFFIXES[fmt]
    listed = suffixes[0] if len(suffixes) == 1 else ", ".join(suffixes[:-1]) + " or " + suffixes[-1]
    raise UsageError(
        f"--format {fmt} writes {listed}, but the output {name} is named for {named[0]}; "
        f"name it {name[: -len(named[1])]}{suffixes[0]}, or pass --format {named[0]}"
    )


def export_gaussians(
    g,
    path,
    fmt: str,
    *,
    up: str = "-y",
    sh_degree: int | None = None,
    comments: dict | None = None,
    spz_version: int = ExportParams.spz_version,
) -> dict:
    """Write Gaussians in one of GAUSSIAN_FORMATS; returns a JSON-able report (SPZ is always RUB, so `up` is
    not used)."""

    path = Path(path)
    if fmt == "ply":
        rep = export_ply(g, path, up=up, sh_degree=sh_degree, comments=comments)
        return _report(fmt, path, rep, nbytes=path.stat().st_size, up=up)
    if fmt == "compressed-ply":
        lines = [f"{k}: {v}" for k, v in (comments or {}).items()] + [f"up: {up}", f"convention: {UP_DESCRIPTIONS[up]}"]
        rep = write_compressed_ply(path, prepare(g, up=up, sh_degree=sh_degree), comments=_vd_comments() + lines)
        return _report(fmt, path, rep, chunks=rep.chunks, up=up)
    if fmt == "splat":
        if sh_degree not in (None, 0):
            raise UsageError("the .splat format stores colour only (SH degree 0); drop --sh-degree or use ply")
        rep = write_splat(path, prepare(g, up=up, sh_degree=0))
        return _report(fmt, path, rep, up=up)
    if fmt == "spz":
        rep = write_spz(path, prepare(g, sh_degree=sh_degree), version=spz_version)
        return _report(fmt, path, rep, spz_version=rep.version, axes="RUB (x right, y up, z back)")
    raise UsageError(f"unknown Gaussian format {fmt!r}; choose one of {', '.join(GAUSSIAN_FORMATS)}")


def _report(fmt: str, path: Path, rep, nbytes: int | None = None, **extra) -> dict:
    """A writer's report as JSON: what it kept and dropped, the file's size, and format specifics."""
    return {
        "format": fmt,
        "path": str(path),
        "written": rep.written,
        "dropped_nonfinite": rep.dropped_nonfinite,
        "dropped_transparent": rep.dropped_transparent,
        "bytes": rep.bytes if nbytes is None else nbytes,
        **extra,
    }


def _vd_comments() -> list[str]:
    return [f"Generated by vd {__version__}"]


__all__ = [
    "FIXED_FRAME_FORMATS",
    "FORMATS",
    "GAUSSIAN_FORMATS",
    "SUFFIXES",
    "check_name",
    "export_gaussians",
    "format_of",
]
