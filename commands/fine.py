"""`vd fine`: multi-view consistency sampling (MCS) refinement of the coarse scene."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.commands import common
from vd.commands import viewer_options as vo

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
    views: int = typer.Option(8, "--views", min=1, help="Number of refined views (greedy largest-hole choice)."),
    steps: int = typer.Option(9, "--steps", min=1, help="Refinement steps: the last STEPS of the schedule."),
    total_steps: int = typer.Option(25, "--total-steps", min=1, help="Length of the full sampling schedule."),
    gs_iters: int = typer.Option(192, "--gs-iters", min=0, help="Optimisation iterations of each scene rectification."),
    rect_weight: float = typer.Option(0.5, "--rect-weight", min=0.0, max=1.0, help="Weight of the rendered scene's velocity (0 = plain sampler, 1 = follow the scene)."),
    rescale: str = typer.Option("shrink", "--rescale", help="Implied-velocity rescale to the predicted norm: shrink (only ever shortens it), match (both ways, can overshoot) or none."),
    render_backend: str = typer.Option("auto", "--render-backend", help="auto, gsplat or torch."),
    inpaint_backend: str = typer.Option("auto", "--inpaint-backend", help="auto | flux-fill | telea (telea has no diffusion: needs --allow-classical)."),
    allow_classical: bool = typer.Option(False, "--allow-classical", help="With the telea backend, run the rectification loop on classical inpaints instead of failing."),
    offload: str = typer.Option("model", "--offload", help="Flux memory mode: none | model | sequential."),
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
    from vd import console
    from vd.stages import fine as stage

    params = stage.FineParams(views=views, steps=steps, total_steps=total_steps, gs_iters=gs_iters,
                              rect_weight=rect_weight, rescale=rescale, render_backend=render_backend, seed=seed)
    params.validate()
    jobs = stage.resolve_inputs(inputs, out)
    from vd.outputs import check_distinct, prepare

    check_distinct([(job.coarse_dir, job.out_dir) for job in jobs])
    for job in jobs:
        prepare(job.out_dir)
    dev, factory, backend_name = stage.choose_denoiser(
        inpaint_backend, device=device, offload=offload, allow_classical=allow_classical,
        guidance=params.guidance, auto_fetch=True if fetch else None,
    )
    from vd.models import memory

    for job in jobs:
        v = vo.open_for_image(viewer, viewer_port, rrd, wait, wait_seconds, image=job.source, n_images=len(jobs),
                              default_rrd=job.out_dir / "fine.rrd")
        try:
            with memory.track(f"fine {job.source.name}", device=dev):
                result = stage.run_fine(job.coarse_dir, job.out_dir, params, denoiser_factory=factory, device=dev,
                                        image=job.image, viewer=v if v.enabled else None)
        except BaseException:
            v.discard()
            raise
        v.close()
        stage.print_summary(result)
        if json_:
            console.out_json({"input": str(job.source), **result.to_json()})
        else:
            console.out(result.ply, result.summary_path, *result.strips)
    memory.print_table("vd fine: memory")
