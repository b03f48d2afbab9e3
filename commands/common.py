"""Options and helpers shared by several subcommands (typer + stdlib only at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.errors import NotImplementedYet

IMAGES = typer.Argument(..., help="One or more input images (PNG, JPEG, WebP, TIFF, ...).", show_default=False, metavar="IMAGE")
OUT = typer.Option(None, "--out", "-o", help="Output folder (default: vd-out/<image stem>/; with several images, one sub-folder per image).")
JSON = typer.Option(False, "--json", help="Print one JSON object per image on stdout instead of paths.")
DEVICE = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: $VD_DEVICE, else cuda when available).")
SEED = typer.Option(0, "--seed", help="Random seed; part of every cache key.")
MAX_RES = typer.Option(512, "--max-resolution", help="Long side cap in pixels; never upscales; sides become multiples of 16.")
FETCH = typer.Option(False, "--fetch", help="Download missing model weights first (also VD_AUTO_FETCH=1).")


def output_dir(out: Optional[Path], image: Path, n_images: int) -> Path:
    """The output folder for `image`: `--out` (a sub-folder per image when several), else vd-out/<stem>/."""
    if out is None:
        return Path("vd-out") / image.stem
    return out / image.stem if n_images > 1 else out


def output_dirs(out: Optional[Path], images: List[Path]) -> List[Path]:
    """One distinct output folder per image, created and checked before anything is computed."""
    from vd.outputs import prepare_output_dirs

    return prepare_output_dirs(out, images)


def not_implemented(command: str, issue: str) -> None:
    raise NotImplementedYet(f"`vd {command}` is not implemented yet ({issue}); no output was written")


__all__ = ["IMAGES", "OUT", "JSON", "DEVICE", "SEED", "MAX_RES", "FETCH", "output_dir", "output_dirs", "not_implemented", "List", "Optional", "Path"]
