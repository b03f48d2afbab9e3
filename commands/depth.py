"""`vd depth`: estimate depth, intrinsics and validity for each image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.commands import common


def depth(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    backend: str = typer.Option("auto", "--backend", help="auto, moge or file (a user depth map)."),
    focal: Optional[float] = typer.Option(None, "--focal", help="Focal length in pixels (file backend)."),
    fov: Optional[float] = typer.Option(None, "--fov", help="Horizontal field of view in degrees (file backend)."),
    max_resolution: int = common.MAX_RES,
    device: Optional[str] = common.DEVICE,
    json_: bool = common.JSON,
    fetch: bool = common.FETCH,
) -> None:
    """Estimate depth for each IMAGE; writes depth.npy, depth.png, mask.png, intrinsics.json."""
    common.not_implemented("depth", "issue 5")
