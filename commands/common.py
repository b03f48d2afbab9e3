"""Options and helpers shared by several subcommands (typer + stdlib only at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd import params
from vd.errors import NotImplementedYet
from vd.outputs import prepare_output_dirs

IMAGES = typer.Argument(
    ..., help="One or more input images (PNG, JPEG, WebP, TIFF, ...).", show_default=False, metavar="IMAGE"
)
OUT = typer.Option(
    None,
    "--out",
    "-o",
    help="Output folder (default: vd-out/<image stem>/; with several images, one sub-folder per image).",
)
JSON = typer.Option(False, "--json", help="Print one JSON object per image on stdout instead of paths.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an output folder that holds the results of another input.")


def shows_default(help: str, default) -> str:
    """`help` with the default shown after it, as typer shows a default (for options whose own default is None)."""
    if default is None:
        return help
    return f"{help} [dim]\\[default: {shown_default(default)}][/dim]"


def shown_default(default) -> str:
    """A default as --help shows it: numbers with %g, tuples space-separated."""
    if isinstance(default, tuple):
        return " ".join(f"{x:g}" for x in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def param_option(params_class, field: str, help: Optional[str] = None, **kw):
    """A typer option for a parameter-dataclass field: it defaults to None ("not given"; build the
    dataclass with `vd.params.given`) and --help shows the dataclass default; its option name and
    help text are the ones declared with the field (`vd.params.param`), so each is declared once."""
    default = getattr(params_class, field)
    option = params.option_of(params_class, field)
    if isinstance(default, bool) and "/" in option:  # --x/--no-x: the default is the flag that is on
        on, off = (name.strip().lstrip("-") for name in option.split("/"))
        default = on if default else off
    text = params.help_of(params_class, field) if help is None else help
    return typer.Option(None, option, help=shows_default(text, default), show_default=False, **kw)


def field_option(params_class, field: str, **kw):
    """A typer option that takes a parameter-dataclass field's default itself (typer shows it), with
    the option name and help text declared with the field."""
    return typer.Option(
        getattr(params_class, field),
        params.option_of(params_class, field),
        help=params.help_of(params_class, field),
        **kw,
    )


DEVICE = field_option(params.RunOptions, "device")
SEED = field_option(params.RunOptions, "seed")
MAX_RES = field_option(params.RunOptions, "max_resolution")
FETCH = field_option(params.RunOptions, "fetch")


def output_dir(out: Optional[Path], image: Path, n_images: int) -> Path:
    """The output folder for `image`: `--out` (a sub-folder per image when several), else vd-out/<stem>/."""
    if out is None:
        return Path("vd-out") / image.stem
    return out / image.stem if n_images > 1 else out


def output_dirs(
    out: Optional[Path],
    images: List[Path],
    *,
    overwrite: bool = False,
    bytes_per_pixel: int = 0,
    max_resolution: Optional[int] = None,
) -> List[Path]:
    """One distinct output folder per image, created and checked (writable, room for the outputs, not another
    input's results) before anything is computed."""

    return prepare_output_dirs(
        out, images, overwrite=overwrite, bytes_per_pixel=bytes_per_pixel, max_resolution=max_resolution
    )


def require_weights_first(
    images: List[Path],
    depth_backend: str,
    inpaint_backend: str,
    fetch: bool,
    quant: Optional[str] = None,
    *,
    depth_model: str = "vitl",
    licence: Optional[str] = None,
) -> None:
    """Before torch is imported (seconds): UsageError (exit 2) for weights of the named backends that the
    licence policy refuses (`licence`, else $VD_LICENCE), then MissingWeightsError (exit 3) for missing ones
    (Flux Fill's for `quant`)."""
    from vd.fetch.registry import require, require_all
    from vd.models import choose
    from vd.models.depth import sidecar_depth
    from vd.models.flux_gguf import weights_for
    from vd.models.moge import registry_model

    choose.check_licence(depth_backend, inpaint_backend, depth_model=depth_model, licence=licence)
    auto_fetch = True if fetch else None
    if depth_backend == "moge" or (depth_backend == "auto" and any(sidecar_depth(i) is None for i in images)):
        require(registry_model(depth_model), auto_fetch=auto_fetch)
    if inpaint_backend == "flux-fill":
        quant = quant or "auto"
        if quant != "auto":
            require_all(weights_for(quant), auto_fetch=auto_fetch)
        elif not choose.flux_weights_available(quant="auto"):  # any installed quantisation will do: the plan picks
            require_all(weights_for("bf16"), auto_fetch=auto_fetch)
    elif inpaint_backend == "flux2-klein":  # its text encoder only on a prompt cache miss: the stage says so then
        require("flux2-klein", auto_fetch=auto_fetch)


def not_implemented(command: str, issue: str) -> None:
    raise NotImplementedYet(f"`vd {command}` is not implemented yet ({issue}); no output was written")


__all__ = [
    "IMAGES",
    "OUT",
    "JSON",
    "DEVICE",
    "SEED",
    "MAX_RES",
    "FETCH",
    "OVERWRITE",
    "field_option",
    "param_option",
    "shows_default",
    "shown_default",
    "output_dir",
    "output_dirs",
    "require_weights_first",
    "not_implemented",
    "List",
    "Optional",
    "Path",
]
