"""`vd coarse`: scaffold plus the warp-and-inpaint loop; writes coarse.ply."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.commands import common


def coarse(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    fallback: str = typer.Option("none", "--fallback", help="none or closest: what to do when no candidate view is in the hole-ratio band."),
    json_: bool = common.JSON,
    seed: int = common.SEED,
    device: Optional[str] = common.DEVICE,
    fetch: bool = common.FETCH,
) -> None:
    """Build the coarse scene for each IMAGE (the main job)."""
    common.not_implemented("coarse", "issue 6")
