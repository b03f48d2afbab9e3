"""`vd coarse`: scaffold plus the warp-and-inpaint loop; writes coarse.ply."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from vd import console
from vd.commands import common, tables
from vd.commands import viewer_options as vo
from vd.errors import check_input_file
from vd.params import CoarseParams, FluxParams, RunOptions, given

_SEL = "Frame selection"
_TRAJ = "Camera trajectory"
_SCAF = "Scaffold"
_OPT = "Optimisation"
_BACK = "Backends"

# at least scaffold.ply and coarse.ply: a 68-byte Gaussian (SH degree 0) per input pixel
COARSE_BYTES_PER_PIXEL = 2 * 68

HELP = (
    "Build the coarse scene for each IMAGE (the main job).\n\n"
    "Writes coarse.ply, scaffold.ply, cameras.json, summary.json and views/NNN/ into the output folder "
    "and prints the written paths (or one JSON summary per image with --json).\n\n"
    "Every step is cached: a second identical run is instant and an interrupted run resumes."
)


def _coarse(field: str, panel: str, **kw):
    return common.param_option(CoarseParams, field, rich_help_panel=panel, **kw)


def _flux(field: str, **kw):
    return common.param_option(FluxParams, field, rich_help_panel=_BACK, **kw)


def _run(field: str, **kw):
    return common.field_option(RunOptions, field, rich_help_panel=_BACK, **kw)


def coarse(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    n_frames: Optional[int] = _coarse("n_frames", _SEL),
    dense_multiplier: Optional[int] = _coarse("dense_multiplier", _SEL),
    margin: Optional[int] = _coarse("margin", _SEL),
    min_ratio: Optional[float] = _coarse("min_ratio", _SEL),
    max_ratio: Optional[float] = _coarse("max_ratio", _SEL),
    adjacent_exclusion: Optional[int] = _coarse("adjacent_exclusion", _SEL),
    fallback: Optional[str] = _coarse("fallback", _SEL),
    move_views: Optional[int] = _coarse("move_views", _SEL),
    scan_scale: Optional[float] = _coarse("scan_scale", _SEL),
    refine_tolerance: Optional[float] = _coarse("refine_tolerance", _SEL),
    traj: Optional[str] = _coarse("traj", _TRAJ),
    trajectory: Optional[Path] = _coarse("trajectory_file", _TRAJ),
    forward_ratio: Optional[float] = _coarse("forward_ratio", _TRAJ),
    backward_ratio: Optional[float] = _coarse("backward_ratio", _TRAJ),
    radius_percentiles: Optional[tuple[float, float]] = _coarse("radius_percentiles", _TRAJ),
    expansion: Optional[float] = _coarse("expansion", _SCAF),
    reach: Optional[float] = _coarse("reach", _SCAF, metavar="DEGREES"),
    outpaint: Optional[bool] = _coarse("outpaint", _SCAF),
    edge_times: Optional[float] = _coarse("edge_times", _SCAF),
    init_iters: Optional[int] = _coarse("init_iters", _OPT),
    view_iters: Optional[int] = _coarse("view_iters", _OPT),
    depth_weight: Optional[float] = _coarse("depth_weight", _OPT),
    alpha_weight: Optional[float] = _coarse("alpha_weight", _OPT),
    depth_backend: str = _run("depth_backend"),
    depth_model: str = _run("depth_model"),
    inpaint_backend: str = _run("inpaint_backend"),
    licence: Optional[str] = _run("licence"),
    render_backend: str = _run("render_backend"),
    offload: Optional[str] = _flux("offload", metavar="MODE"),
    vram_budget: Optional[float] = _flux("vram_budget", metavar="GiB"),
    quant: Optional[str] = _flux("quant"),
    inpaint_steps: Optional[int] = _flux("inpaint_steps"),
    guidance: Optional[float] = _flux("guidance"),
    focal: Optional[float] = _run("focal"),
    fov: Optional[float] = _run("fov"),
    max_resolution: int = common.MAX_RES,
    json_: bool = common.JSON,
    seed: int = common.SEED,
    device: Optional[str] = common.DEVICE,
    fetch: bool = common.FETCH,
    overwrite: bool = common.OVERWRITE,
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
) -> None:
    from vd.image import check_image
    from vd.stages.coarse import run_coarse

    params = CoarseParams(
        **given(
            n_frames=n_frames,
            dense_multiplier=dense_multiplier,
            margin=margin,
            min_ratio=min_ratio,
            max_ratio=max_ratio,
            adjacent_exclusion=adjacent_exclusion,
            fallback=fallback,
            move_views=move_views,
            traj=traj,
            trajectory_file=str(trajectory) if trajectory is not None else None,
            forward_ratio=forward_ratio,
            backward_ratio=backward_ratio,
            radius_percentiles=tuple(radius_percentiles) if radius_percentiles else None,
            expansion=expansion,
            reach=reach,
            outpaint=outpaint,
            init_iters=init_iters,
            view_iters=view_iters,
            scan_scale=scan_scale,
            refine_tolerance=refine_tolerance,
            edge_times=edge_times,
            depth_weight=depth_weight,
            alpha_weight=alpha_weight,
        )
    )
    options = RunOptions(
        depth_backend=depth_backend,
        depth_model=depth_model,
        inpaint_backend=inpaint_backend,
        licence=licence,
        render_backend=render_backend,
        device=device,
        seed=seed,
        max_resolution=max_resolution,
        focal=focal,
        fov=fov,
        fetch=fetch,
    )
    flux = FluxParams(
        **given(offload=offload, vram_budget=vram_budget, quant=quant, inpaint_steps=inpaint_steps, guidance=guidance)
    )
    params.validate()
    options.validate()
    flux.validate()
    for img in images:  # a wrong file is named as such before any model weights are asked for
        check_image(img)
    if trajectory is not None:
        check_input_file(trajectory, "trajectory file")
    dests = common.output_dirs(
        out, images, overwrite=overwrite, bytes_per_pixel=COARSE_BYTES_PER_PIXEL, max_resolution=max_resolution
    )
    common.require_weights_first(  # before the stages import torch
        images, depth_backend, inpaint_backend, fetch, quant, depth_model=depth_model, licence=licence
    )
    with console.Bar("coarse: images", len(images)) as done:  # drawn from the first of several
        for i, (img, dest) in enumerate(zip(images, dests, strict=False)):
            if len(images) > 1:
                console.info(str(img))
                done.update(i)
            rrd_default = dest / "coarse.rrd"
            with vo.viewer_for_image(
                viewer, viewer_port, rrd, wait, wait_seconds, image=img, n_images=len(images), default_rrd=rrd_default
            ) as v:
                res = run_coarse(img, params, options, flux=flux, out=dest, viewer=v)
            tables.print_coarse_summary(res.summary)
            if json_:
                console.out_json(res.summary)
            else:
                console.out(*res.paths)


coarse.__doc__ = HELP
