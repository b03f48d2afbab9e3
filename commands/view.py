"""`vd view`: open a PLY or a processed image in the Rerun viewer (or write an .rrd)."""

from __future__ import annotations

from pathlib import Path

import typer

from vd.commands import common


def view(
    source: Path = typer.Argument(..., help="A PLY file or a processed image.", show_default=False),
) -> None:
    """Show a result in Rerun; headless, write an .rrd file instead."""
    common.not_implemented("view", "issue 9")
