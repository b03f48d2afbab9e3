"""Options and helpers shared by several subcommands (typer + stdlib only at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd import params
from vd.errors import NotImplementedYet
from vd.outputs import prepare_output_dirs

IMAGES = typer.Argument(..., help="One or more input images (PNG, JPEG, WebP, TIFF, ...).", show_default=False, metavar="IMAGE")
OUT = typer.Option(None, "--out", "-o", help="Output folder (default: vd-out/<image stem>/; with several images, one sub-folder per image).")
JSON = typer.Option(False, "--json", help="Print one JSON object per image on stdout instead of paths.")
DEVICE = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: $VD_DEVICE, else cuda when available).")
SEED = typer.Option(params.SEED, "--seed", help="Random seed; part of every cache key.")
MAX_RES = typer.Option(params.MAX_RESOLUTION, "--max-resolution", help="Long side cap in pixels; never upscales; sides become multiples of 16.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an output folder that holds the results of another input.")
FETCH = typer.Option(False, "--fetch", help="Download missing model weights first (also VD_AUTO_FETCH=1).")


OFFLOAD_HELP = ("Flux Fill GPU memory mode: auto (chosen from the free VRAM when the model loads), none (fastest), model "
                "(whole modules moved to the GPU while used), sequential (block by block, the least VRAM).")
VRAM_BUDGET_HELP = ("Cap on the GPU memory vd plans for, in GiB (e.g. 16 on a shared 24 GB card); --offload auto picks "
                    "within it.")


def shows_default(help: str, default) -> str:
    """`help` with the default shown after it, as typer shows a default (for options whose own default is None)."""
    if default is None:
        return help
    shown = " ".join(f"{x:g}" for x in default) if isinstance(default, tuple) else (
        f"{default:g}" if isinstance(default, float) else str(default))
    return f"{help} [dim]\\[default: {shown}][/dim]"


def param_option(params_class, field: str, help: str, **kw):
    """A typer option for a parameter-dataclass field: it defaults to None ("not given") and --help
    shows the dataclass default, so each default is declared once (in `vd.params`)."""
    return typer.Option(None, params.option_name(field), help=shows_default(help, getattr(params_class, field)),
                        show_default=False, **kw)


def output_dir(out: Optional[Path], image: Path, n_images: int) -> Path:
    """The output folder for `image`: `--out` (a sub-folder per image when several), else vd-out/<stem>/."""
    if out is None:
        return Path("vd-out") / image.stem
    return out / image.stem if n_images > 1 else out


def output_dirs(out: Optional[Path], images: List[Path], *, overwrite: bool = False, bytes_per_pixel: int = 0,
                max_resolution: Optional[int] = None) -> List[Path]:
    """One distinct output folder per image, created and checked (writable, room for the outputs, not another
    input's results) before anything is computed."""

    return prepare_output_dirs(out, images, overwrite=overwrite, bytes_per_pixel=bytes_per_pixel,
                               max_resolution=max_resolution)


def require_weights_first(images: List[Path], depth_backend: str, inpaint_backend: str, fetch: bool) -> None:
    """MissingWeightsError (exit 3) for the weights the named backends need, before torch is imported (seconds)."""
    from vd.fetch.registry import require
    from vd.models import choose
    from vd.models.depth import sidecar_depth

    auto_fetch = True if fetch else None
    if depth_backend == "moge" or (depth_backend == "auto" and any(sidecar_depth(i) is None for i in images)):
        require("moge", auto_fetch=auto_fetch)
    if inpaint_backend == "flux-fill":  # through the backend, which knows where its weights are
        choose.get_inpaint_backend("flux-fill", auto_fetch=auto_fetch, quiet_choice=True).paths()


def not_implemented(command: str, issue: str) -> None:
    raise NotImplementedYet(f"`vd {command}` is not implemented yet ({issue}); no output was written")


__all__ = ["IMAGES", "OUT", "JSON", "DEVICE", "SEED", "MAX_RES", "FETCH",
           "OVERWRITE", "param_option", "shows_default", "output_dir",
           "output_dirs", "require_weights_first", "not_implemented", "List", "Optional", "Path"]
