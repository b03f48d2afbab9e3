"""`vd fine`: multi-view consistency sampling (MCS) refinement of the coarse scene."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.commands import common


def fine(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    views: int = typer.Option(8, "--views", help="Number of refined views."),
    steps: int = typer.Option(9, "--steps", help="Refinement steps (the last steps of the schedule)."),
    json_: bool = common.JSON,
    device: Optional[str] = common.DEVICE,
    fetch: bool = common.FETCH,
) -> None:
    """Refine the coarse scene of each IMAGE for multi-view consistency; writes fine.ply."""
    common.not_implemented("fine", "issue 7")
