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


def offload_option(panel: Optional[str] = None):
    """--offload; its default ("auto") lives in vd.models.offload.MemoryOptions."""
    return typer.Option(
        None, "--offload", show_default=False, metavar="MODE", rich_help_panel=panel,
        help="Flux Fill GPU memory mode: auto (default: chosen from the free VRAM when the model loads), none "
        "(fastest), model (whole modules moved to the GPU while used), sequential (block by block, the least VRAM).")


def vram_budget_option(panel: Optional[str] = None):
    """--vram-budget GiB (default: no cap)."""
    return typer.Option(
        None, "--vram-budget", show_default=False, metavar="GiB", rich_help_panel=panel,
        help="Cap on the GPU memory vd plans for, in GiB (e.g. 16 on a shared 24 GB card); --offload auto picks within it.")


def output_dir(out: Optional[Path], image: Path, n_images: int) -> Path:
    """The output folder for `image`: `--out` (a sub-folder per image when several), else vd-out/<stem>/."""
    if out is None:
        return Path("vd-out") / image.stem
    return out / image.stem if n_images > 1 else out


def not_implemented(command: str, issue: str) -> None:
    raise NotImplementedYet(f"`vd {command}` is not implemented yet ({issue}); no output was written")


__all__ = ["IMAGES", "OUT", "JSON", "DEVICE", "SEED", "MAX_RES", "FETCH", "offload_option", "vram_budget_option", "output_dir", "not_implemented", "List", "Optional", "Path"]
