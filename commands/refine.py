"""`vd refine`: optimise Gaussians on a COLMAP-style dataset with depth and normal priors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vd.commands import common


def refine(
    dataset: Path = typer.Argument(..., help="A dataset folder written by `vd export --format colmap`.", show_default=False),
    init: Path = typer.Option(..., "--init", help="Initial Gaussians (PLY)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
) -> None:
    """Refine Gaussians with RGB plus continuous-surface (depth, normal) supervision."""
    common.not_implemented("refine", "issue 8")
