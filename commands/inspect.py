"""`vd inspect`: statistics of Gaussian PLY files."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from vd.commands import common


def inspect(
    files: List[Path] = typer.Argument(..., help="PLY files to inspect.", show_default=False),
    json_: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any value is NaN or Inf."),
) -> None:
    """Print count, bounds, SH degree and per-column statistics of each PLY."""
    common.not_implemented("inspect", "issue 3")
