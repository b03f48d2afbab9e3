"""`vd export`: write a scene as PLY, compressed PLY, .splat, a COLMAP dataset or a video."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vd.commands import common


def export(
    source: Optional[Path] = typer.Argument(None, help="A processed image (its latest stage) or a PLY file.", show_default=False),
    format_: str = typer.Option("ply", "--format", "-f", help="ply, compressed-ply, splat, colmap or video."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (or folder for colmap)."),
) -> None:
    """Export a scene to a file format other tools read."""
    common.not_implemented("export", "issue 8")
