"""PlayCanvas SOG (`.sog`: a zip of WebP images and `meta.json`), written by PlayCanvas's own
`splat-transform` (npm `@playcanvas/splat-transform`, MIT) when it is installed: vd writes its
INRIA PLY to a temporary folder and converts it. No Python library writes SOG (its SH palette is
a k-means over all splats and its images are WebP), so vd does not reimplement it.

Axes: SOG keeps the PLY's frame, vd's OpenCV world (x right, y down, z forward; -y up), which is
what SuperSplat expects from a PLY or SOG of a 3DGS scene.

splat-transform compresses SH on a GPU through WebGPU; where none is usable it is run again with
`--gpu cpu`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vd import settings
from vd.errors import InputError, UsageError
from vd.export.ply import export_ply
from vd.fsio import atomic_path

INSTALL_HINT = "npm install -g @playcanvas/splat-transform"


@dataclass
class SogReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    bytes: int
    converter: str


def splat_transform() -> str | None:
    """The `splat-transform` executable ($VD_SPLAT_TRANSFORM, else on PATH), or None."""
    return shutil.which(settings.splat_transform_command())


def splat_transform_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def _convert(exe: str, src: Path, dst: Path) -> None:
    """src -> dst with splat-transform: on its GPU first, then on the CPU."""
    last = None
    for extra in ([], ["--gpu", "cpu"]):
        dst.unlink(missing_ok=True)
        r = subprocess.run([exe, "-q", "-w", *extra, str(src), str(dst)], capture_output=True, text=True)
        if r.returncode == 0 and dst.is_file() and dst.stat().st_size > 0:
            return
        last = (r.stderr or r.stdout).strip().splitlines()
    why = next((line.strip() for line in reversed(last or []) if line.strip()), "no message")
    raise InputError(f"splat-transform could not write the SOG file ({why})")


def write_sog(path, g, *, sh_degree: int | None = None) -> SogReport:
    """Write Gaussians (vd's frame) as a `.sog` file through splat-transform, atomically."""
    exe = splat_transform()
    if exe is None:
        raise UsageError(f"--format sog needs PlayCanvas splat-transform, which is not installed; run: {INSTALL_HINT}")
    path = Path(path)
    if path.suffix.lower() != ".sog":
        raise UsageError(f"a SOG file name ends in .sog, got {path.name}")
    with tempfile.TemporaryDirectory(prefix="vd-sog-") as tmp, atomic_path(path, suffix=".sog") as out:
        ply = Path(tmp) / "scene.ply"
        rep = export_ply(g, ply, sh_degree=sh_degree)
        _convert(exe, ply, out)
    return SogReport(path, rep.written, rep.dropped_nonfinite, rep.dropped_transparent, path.stat().st_size, exe)


__all__ = ["INSTALL_HINT", "SogReport", "splat_transform", "splat_transform_version", "write_sog"]
