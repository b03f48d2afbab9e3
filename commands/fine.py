"""`vd fine`: multi-view consistency sampling (MCS) refinement of the coarse scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from vd import console
from vd.commands import common, tables
from vd.commands import viewer_options as vo
from vd.errors import InputError, UsageError, check_input_file
from vd.models import memory
from vd.outputs import check_distinct, prepare
from vd.params import FineParams, FluxParams, RunOptions, given

INPUTS = typer.Argument(
    ...,
    help="Coarse output folders (holding cameras.json and coarse.ply), or the images `vd coarse` was run on "
    "(their coarse folder is read from -o, else vd-out/<image stem>/).",
    show_default=False,
    metavar="IMAGE_OR_COARSE_DIR",
)


def _fine(field: str, **kw):
    return common.param_option(FineParams, field, **kw)


def fine(
    inputs: List[Path] = INPUTS,
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="For a COARSE_DIR: the output folder (default COARSE_DIR/fine). For an IMAGE: the coarse output "
        "folder given to `vd coarse -o` (fine results go to its fine/ sub-folder).",
    ),
    views: Optional[int] = _fine("views"),
    steps: Optional[int] = _fine("steps"),
    total_steps: Optional[int] = _fine("total_steps"),
    gs_iters: Optional[int] = _fine("gs_iters"),
    rect_weight: Optional[float] = _fine("rect_weight"),
    depth_weight: Optional[float] = _fine("depth_weight"),
    alpha_weight: Optional[float] = _fine("alpha_weight"),
    lr_means: Optional[float] = _fine("lr_means"),
    rescale: Optional[str] = _fine("rescale"),
    guidance: Optional[float] = _fine("guidance"),
    margin: Optional[int] = _fine("margin"),
    candidate_stride: Optional[int] = _fine("candidate_stride"),
    select_scale: Optional[float] = _fine("select_scale"),
    render_backend: Optional[str] = _fine("render_backend"),
    inpaint_backend: str = common.field_option(RunOptions, "inpaint_backend"),
    allow_classical: bool = common.field_option(RunOptions, "allow_classical"),
    licence: Optional[str] = common.field_option(RunOptions, "licence"),
    offload: Optional[str] = common.param_option(FluxParams, "offload", metavar="MODE"),
    vram_budget: Optional[float] = common.param_option(FluxParams, "vram_budget", metavar="GiB"),
    quant: Optional[str] = common.param_option(FluxParams, "quant"),
    device: Optional[str] = common.DEVICE,
    seed: int = common.SEED,
    json_: bool = common.JSON,
    fetch: bool = common.FETCH,
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
) -> None:
    """Refine coarse scenes for multi-view consistency with Flux Fill (MCS); writes fine.ply, steps/, summary.json."""
    # before the stages import torch
    common.require_weights_first([], "file", inpaint_backend, fetch, quant, licence=licence)
    from vd.stages.fine import prepare_fine

    params = FineParams(
        **given(
            views=views,
            steps=steps,
            total_steps=total_steps,
            gs_iters=gs_iters,
            rect_weight=rect_weight,
            depth_weight=depth_weight,
            alpha_weight=alpha_weight,
            lr_means=lr_means,
            rescale=rescale,
            guidance=guidance,
            margin=margin,
            candidate_stride=candidate_stride,
            select_scale=select_scale,
            render_backend=render_backend,
            seed=seed,
        )
    )
    options = RunOptions(
        inpaint_backend=inpaint_backend, device=device, allow_classical=allow_classical, licence=licence, fetch=fetch
    )
    flux = FluxParams(**given(offload=offload, vram_budget=vram_budget, quant=quant))
    params.validate()
    flux.validate()
    options.validate()
    jobs = resolve_jobs(inputs, out)
    check_distinct([(job.coarse_dir, job.out_dir) for job in jobs])
    for job in jobs:
        prepare(job.out_dir)
    runner = prepare_fine(params, options, flux)

    for job in jobs:
        with vo.viewer_for_image(
            viewer,
            viewer_port,
            rrd,
            wait,
            wait_seconds,
            image=job.source,
            n_images=len(jobs),
            default_rrd=job.out_dir / "fine.rrd",
        ) as v:
            result = runner.run(job.coarse_dir, job.out_dir, image=job.image, viewer=v, label=job.source.name)
        tables.print_fine_summary(result)
        if json_:
            console.out_json({"input": str(job.source), **result.to_json()})
        else:
            console.out(result.ply, result.summary_path, *result.strips)
    tables.print_memory(memory.records(), "vd fine: memory")


@dataclass
class FineJob:
    source: Path  # what the user named
    coarse_dir: Path
    out_dir: Path
    image: Optional[str]


def resolve_jobs(inputs, out: Optional[Path]) -> list[FineJob]:
    """Map the command's arguments to (coarse folder, output folder) pairs; InputError when missing.

    A folder is a coarse output folder; its results go to `out` (default <folder>/fine). An image
    names the folder `vd coarse IMAGE [-o OUT]` wrote (OUT, else vd-out/<stem>/, one sub-folder per
    image when several), and results go to its fine/ sub-folder.
    """
    from vd.export.read import GAUSSIAN_SUFFIXES
    from vd.stages.coarse_folder import is_coarse_folder, read_coarse_folder

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UsageError("give at least one coarse output folder or image")
    jobs = []
    n_dirs = sum(1 for p in inputs if p.is_dir())
    for p in inputs:
        if not p.exists():
            raise InputError(f"input not found: {p}")
        if p.is_dir():
            if not is_coarse_folder(p):
                read_coarse_folder(p)  # raises the precise InputError
            if out is None:
                dst = p / "fine"
            else:
                dst = out / p.name if n_dirs > 1 else out
            jobs.append(FineJob(p, p, dst, None))
        else:
            check_input_file(p, "input image")
            if p.suffix.lower() in GAUSSIAN_SUFFIXES:
                raise InputError(
                    f"{p} is a Gaussian file; vd fine takes the output folder of vd coarse (e.g. vd-out/photo) "
                    "or the image vd coarse ran on"
                )
            coarse_dir = common.output_dir(out, p, len(inputs))
            if not is_coarse_folder(coarse_dir):
                hint = f" -o {out}" if out is not None else ""
                raise InputError(f"no coarse scene for {p} in {coarse_dir}; run `vd coarse {p}{hint}` first")
            jobs.append(FineJob(p, coarse_dir, coarse_dir / "fine", str(p.resolve())))
    return jobs
