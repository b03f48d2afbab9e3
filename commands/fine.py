"""`vd fine`: multi-view consistency sampling (MCS) refinement of the coarse scene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from vd import console
from vd.commands import common, tables
from vd.commands import viewer_options as vo
from vd.commands.common import OFFLOAD_HELP, VRAM_BUDGET_HELP
from vd.errors import InputError, UsageError, check_input_file
from vd.models import memory
from vd.outputs import check_distinct, prepare
from vd.params import FineParams, FluxParams, check_device, given

INPUTS = typer.Argument(
    ...,
    help="Coarse output folders (holding cameras.json and coarse.ply), or the images `vd coarse` was run on "
    "(their coarse folder is read from -o, else vd-out/<image stem>/).",
    show_default=False,
    metavar="IMAGE_OR_COARSE_DIR",
)


def fine(
    inputs: List[Path] = INPUTS,
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="For a COARSE_DIR: the output folder (default COARSE_DIR/fine). For an IMAGE: the coarse output "
        "folder given to `vd coarse -o` (fine results go to its fine/ sub-folder).",
    ),
    views: Optional[int] = common.param_option(FineParams, "views", "Number of refined views (greedy largest-hole choice)."),
    steps: Optional[int] = common.param_option(FineParams, "steps", "Refinement steps: the last STEPS of the schedule."),
    total_steps: Optional[int] = common.param_option(FineParams, "total_steps", "Length of the full sampling schedule."),
    gs_iters: Optional[int] = common.param_option(FineParams, "gs_iters", "Optimisation iterations of each scene rectification."),
    rect_weight: Optional[float] = common.param_option(FineParams, "rect_weight", "Weight of the rendered scene's velocity (0 = plain sampler, 1 = follow the scene)."),
    depth_weight: Optional[float] = common.param_option(FineParams, "depth_weight", "Weight of the anchors' depth error in each scene fit (0 = photometric only)."),
    rescale: Optional[str] = common.param_option(FineParams, "rescale", "Implied-velocity rescale to the predicted norm: shrink (only ever shortens it), match (both ways, can overshoot) or none."),
    render_backend: Optional[str] = common.param_option(FineParams, "render_backend", "auto, gsplat or torch."),
    inpaint_backend: str = typer.Option("auto", "--inpaint-backend", help="auto | flux-fill | telea (telea has no diffusion: needs --allow-classical)."),
    allow_classical: bool = typer.Option(False, "--allow-classical", help="With the telea backend, run the rectification loop on classical inpaints instead of failing."),
    offload: Optional[str] = common.param_option(FluxParams, "offload", OFFLOAD_HELP, metavar="MODE"),
    vram_budget: Optional[float] = common.param_option(FluxParams, "vram_budget", VRAM_BUDGET_HELP, metavar="GiB"),
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
    common.require_weights_first([], "file", inpaint_backend, fetch)  # before the stages import torch
    from vd.stages.denoisers import choose_denoiser
    from vd.stages.fine import run_fine

    params = FineParams(**given(views=views, steps=steps, total_steps=total_steps, gs_iters=gs_iters, rect_weight=rect_weight, depth_weight=depth_weight,
                                rescale=rescale, render_backend=render_backend, seed=seed))
    params.validate()
    flux = FluxParams(**given(offload=offload, vram_budget=vram_budget))
    flux.validate()
    check_device(device)
    jobs = resolve_jobs(inputs, out)
    check_distinct([(job.coarse_dir, job.out_dir) for job in jobs])
    for job in jobs:
        prepare(job.out_dir)
    dev, factory, _ = choose_denoiser(inpaint_backend, device=device, offload=flux.offload, vram_budget=flux.budget_bytes,
                                      allow_classical=allow_classical, guidance=params.guidance,
                                      auto_fetch=True if fetch else None)

    for job in jobs:
        v = vo.open_for_image(viewer, viewer_port, rrd, wait, wait_seconds, image=job.source, n_images=len(jobs),
                              default_rrd=job.out_dir / "fine.rrd")
        try:
            with memory.track(f"fine {job.source.name}", device=dev):
                result = run_fine(job.coarse_dir, job.out_dir, params, denoiser_factory=factory, device=dev,
                                        image=job.image, viewer=v if v.enabled else None)
        except BaseException:
            v.discard()
            raise
        v.close()
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
            coarse_dir = common.output_dir(out, p, len(inputs))
            if not is_coarse_folder(coarse_dir):
                hint = f" -o {out}" if out is not None else ""
                raise InputError(f"no coarse scene for {p} in {coarse_dir}; run `vd coarse {p}{hint}` first")
            jobs.append(FineJob(p, coarse_dir, coarse_dir / "fine", str(p.resolve())))
    return jobs
