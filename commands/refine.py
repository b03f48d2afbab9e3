"""`vd refine`: optimise Gaussians on a COLMAP-style dataset with depth and normal priors.

Its parameter options are built from the fields of `vd.params.RefineParams` (`options_of`): each
option, its default and its help are declared once, with the field; an option left out is "not
given" (None), so a config file's value or the field's default applies.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from vd import console
from vd.commands import common
from vd.commands import viewer_options as vo
from vd.commands.export import problems_listed
from vd.errors import UsageError, VdError
from vd.params import RefineParams, check_device, option_name

PARAMS_PANEL = "Refine parameters (also settable in --config)"


def options_of(params_class, panel: str) -> list[inspect.Parameter]:
    """One keyword parameter per field of a parameter dataclass, each a typer option defaulting to
    None ("not given"), with the help (field metadata "help") and the default shown from the field.
    (A local use of `common.param_option`'s idea; help from the field's metadata.)"""
    out = []
    for f in fields(params_class):
        decl = f.metadata.get("option") or option_name(f.name)
        kind = type(f.default)
        if kind is bool:
            decl = f"{decl}/--no-{decl[2:]}"
        option = typer.Option(
            None,
            decl,
            help=common.shows_default(f.metadata["help"], f.default),
            show_default=False,
            rich_help_panel=panel,
        )
        out.append(
            inspect.Parameter(
                f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=Optional[kind]
            )
        )
    return out


def refine(
    dataset: Path = typer.Argument(
        ...,
        help="A dataset folder written by `vd export --format colmap`, or a vd output folder (its dataset is "
        "written into OUT/dataset first).",
        show_default=False,
    ),
    init: Optional[Path] = typer.Option(
        None,
        "--init",
        help="Initial Gaussians (PLY). Default with a vd output folder: its newest (fine.ply, else coarse.ply).",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (gaussians_refined.ply, refine_meta.json)."),
    config: Optional[Path] = typer.Option(
        None, "--config", show_default=False, help="JSON or TOML file of refine parameters; options given here win."
    ),
    device: Optional[str] = common.DEVICE,
    json_: bool = common.JSON,
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
    **params,
) -> None:
    """Refine Gaussians with RGB plus continuous-surface (depth, normal) supervision.

    Per view, the depth prior is aligned (scale + shift, least squares) to the detached rendered depth;
    a mask-aware Huber loss pulls the render to it, and 1 - |n_render . n_prior| aligns the normals of
    the rendered depth with the prior's. The dataset is validated first. Results are memoised.

    Example: vd refine vd-out/photo -o refined/ --iters 300

    On a dataset written by vd export: vd refine dataset/ --init vd-out/photo/coarse.ply -o refined/
    """
    from vd.stages.refine import load_config, resolve_params
    from vd.stages.refine import refine as run

    check_device(device)
    # usage errors (forbidden/unknown keys, bad values) before anything heavy
    resolve_params(load_config(config) if config is not None else {}, **params)
    dataset, init = dataset_and_init(dataset, init, out)
    prog = console.progress()
    with problems_listed(), prog:
        res = run(dataset, init, out, config=config, device=device, progress=prog, **params)
    report(res, json_)
    vo.log_outputs("refine", out, viewer=viewer, viewer_port=viewer_port, rrd=rrd, wait=wait, wait_seconds=wait_seconds)


def dataset_and_init(dataset: Path, init: Optional[Path], out: Path) -> tuple[Path, Path]:
    """The refine dataset and the initial Gaussians. A vd output folder (cameras.json) stands for the dataset
    written from it into OUT/dataset (as `vd export --format colmap` writes it) and, without --init, for its
    newest Gaussians."""
    from vd.export.source import resolve_source
    from vd.export.write import write_export

    if not Path(dataset).exists():
        raise VdError(f"dataset not found: {dataset}")
    if not (Path(dataset) / "cameras.json").is_file():
        if init is None:
            raise UsageError(
                f"--init is required with a refine dataset ({dataset}): the Gaussians to start from, "
                "e.g. --init vd-out/photo/coarse.ply"
            )
        return dataset, init
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"the output {out} exists and is not a folder")
    src = resolve_source(dataset)
    written = Path(out) / "dataset"
    write_export(src, "colmap", written, force=True)
    start = init if init is not None else Path(src.provenance["gaussians"])
    console.info(f"refine: the dataset of {dataset} written to {written}; starting from {start}")
    return written, start


def _with_param_options(command):
    """`command`'s signature with the RefineParams options in place of its **params (after --out)."""
    sig = inspect.signature(command)
    plain = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = [p.name for p in plain].index("out") + 1
    command.__signature__ = sig.replace(parameters=plain[:at] + options_of(RefineParams, PARAMS_PANEL) + plain[at:])
    return command


_with_param_options(refine)


def report(res, as_json: bool) -> None:
    """The before/after line on stderr; the written paths (or the result as JSON) on stdout."""

    m = res.meta.get("metrics", {})
    b, a = m.get("before", {}), m.get("after", {})

    def pct(x):
        return None if x is None else 100 * x

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    counts = res.meta.get("gaussians", {})
    held, sealed = counts.get("held_by_anchors"), counts.get("sealed")
    notes = ([] if held is None else [f"{held} trained by the photo and its ring alone"]) + (
        [] if not sealed else [f"{sealed} sealing pinholes"]
    )
    noted = f" ({', '.join(notes)})" if notes else ""
    console.info(
        f"refine{' (cached)' if res.cached else ''}: {counts.get('final')} Gaussians{noted}; "
        f"depth AbsRel {f(b.get('depth_abs_rel'), '.4f')} -> {f(a.get('depth_abs_rel'), '.4f')}, "
        f"normal error {f(b.get('normal_deg'), '.2f')}° -> {f(a.get('normal_deg'), '.2f')}°, "
        f"PSNR {f(b.get('psnr'), '.2f')} -> {f(a.get('psnr'), '.2f')} dB, "
        f"below alpha 0.9 {f(pct(b.get('alpha_below_0.9')), '.2f')} -> {f(pct(a.get('alpha_below_0.9')), '.2f')} %"
    )
    if as_json:
        console.out_json(res.to_dict())
    else:
        console.out(str(res.ply), str(res.meta_path))
