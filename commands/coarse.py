"""`vd coarse`: scaffold plus the warp-and-inpaint loop; writes coarse.ply."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd import console
from vd.commands import common, tables
from vd.commands import viewer_options as vo
from vd.commands.common import OFFLOAD_HELP, VRAM_BUDGET_HELP
from vd.errors import check_input_file
from vd.params import CoarseParams, FluxParams, check_device, check_intrinsics, check_max_resolution, given

_SEL = "Frame selection"
_TRAJ = "Camera trajectory"
_SCAF = "Scaffold"
_OPT = "Optimisation"
_BACK = "Backends"

# at least scaffold.ply and coarse.ply: a 68-byte Gaussian (SH degree 0) per input pixel
COARSE_BYTES_PER_PIXEL = 2 * 68


def coarse(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    n_frames: Optional[int] = common.param_option(CoarseParams, "n_frames", "Frames in the scene: input + ring + up to N-2 added views.", rich_help_panel=_SEL),
    dense_multiplier: Optional[int] = common.param_option(CoarseParams, "dense_multiplier", "Candidate poses = n_frames x this.", rich_help_panel=_SEL),
    margin: Optional[int] = common.param_option(CoarseParams, "margin", "Pixels added to the width and height of candidate views.", rich_help_panel=_SEL),
    min_ratio: Optional[float] = common.param_option(CoarseParams, "min_ratio", "Smallest hole ratio a candidate may have to be added.", rich_help_panel=_SEL),
    max_ratio: Optional[float] = common.param_option(CoarseParams, "max_ratio", "Largest hole ratio a candidate may have to be added.", rich_help_panel=_SEL),
    adjacent_exclusion: Optional[int] = common.param_option(CoarseParams, "adjacent_exclusion", "Candidates within +-N of an added one are skipped.", rich_help_panel=_SEL),
    fallback: Optional[str] = common.param_option(CoarseParams, "fallback", "none or closest: what to do when no candidate view is in the hole-ratio band.", rich_help_panel=_SEL),
    traj: Optional[str] = common.param_option(CoarseParams, "traj", "Candidate trajectory: spiral, wobble or rot.", rich_help_panel=_TRAJ),
    trajectory: Optional[Path] = typer.Option(None, "--trajectory", help="Candidate poses from a file: JSON list of 4x4 world-from-camera matrices (OpenCV, world = input camera) or a COLMAP images.txt.", rich_help_panel=_TRAJ),
    forward_ratio: Optional[float] = common.param_option(CoarseParams, "forward_ratio", "Scales the camera's motion into the scene (+z).", rich_help_panel=_TRAJ),
    backward_ratio: Optional[float] = common.param_option(CoarseParams, "backward_ratio", "Scales the camera's pull-back (-z).", rich_help_panel=_TRAJ),
    radius_percentiles: Optional[tuple[float, float]] = common.param_option(CoarseParams, "radius_percentiles", "LOW HIGH depth percentiles (valid input pixels) that size the trajectory.", rich_help_panel=_TRAJ),
    expansion: Optional[float] = common.param_option(CoarseParams, "expansion", "Outpainted canvas size as a total fraction of the input (0.3 = 15% per side).", rich_help_panel=_SCAF),
    no_outpaint: bool = typer.Option(False, "--no-outpaint", help="Skip the outpainted canvas (input frame only).", rich_help_panel=_SCAF),
    init_iters: Optional[int] = typer.Option(None, "--init-iters", help="Scaffold optimisation iterations (default: 100 on GPU, 30 on CPU).", show_default=False, rich_help_panel=_OPT),
    view_iters: Optional[int] = typer.Option(None, "--view-iters", help="Optimisation iterations per added view (default: 500 on GPU, 60 on CPU).", show_default=False, rich_help_panel=_OPT),
    depth_weight: Optional[float] = common.param_option(CoarseParams, "depth_weight", "Weight of the depth error in the optimisation (keeps Gaussians at the depth they were placed; 0 = photometric only).", rich_help_panel=_OPT),
    depth_backend: str = typer.Option("auto", "--depth-backend", help="auto, moge or file (a depth map next to the image).", rich_help_panel=_BACK),
    inpaint_backend: str = typer.Option("auto", "--inpaint-backend", help="auto, flux-fill or telea.", rich_help_panel=_BACK),
    render_backend: str = typer.Option("auto", "--render-backend", help="auto, gsplat or torch.", rich_help_panel=_BACK),
    offload: Optional[str] = common.param_option(FluxParams, "offload", OFFLOAD_HELP, metavar="MODE", rich_help_panel=_BACK),
    vram_budget: Optional[float] = common.param_option(FluxParams, "vram_budget", VRAM_BUDGET_HELP, metavar="GiB", rich_help_panel=_BACK),
    inpaint_steps: Optional[int] = common.param_option(FluxParams, "inpaint_steps", "Flux Fill sampling steps.", rich_help_panel=_BACK),
    guidance: Optional[float] = common.param_option(FluxParams, "guidance", "Flux Fill guidance.", rich_help_panel=_BACK),
    focal: Optional[float] = typer.Option(None, "--focal", help="Focal length in pixels (file depth backend).", rich_help_panel=_BACK),
    fov: Optional[float] = typer.Option(None, "--fov", help="Horizontal field of view in degrees (file depth backend).", rich_help_panel=_BACK),
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
    """Build the coarse scene for each IMAGE (the main job).

    Writes coarse.ply, scaffold.ply, cameras.json, summary.json and views/NNN/ into the output
    folder and prints the written paths (or one JSON summary per image with --json). Every
    step is cached: a second identical run is instant and an interrupted run resumes.
    """
    from vd.stages.coarse import run_coarse

    params = CoarseParams(**given(
        n_frames=n_frames, dense_multiplier=dense_multiplier, margin=margin, min_ratio=min_ratio, max_ratio=max_ratio,
        adjacent_exclusion=adjacent_exclusion, fallback=fallback, traj=traj,
        trajectory_file=str(trajectory) if trajectory is not None else None, forward_ratio=forward_ratio,
        backward_ratio=backward_ratio, radius_percentiles=tuple(radius_percentiles) if radius_percentiles else None,
        expansion=expansion, outpaint=False if no_outpaint else None, init_iters=init_iters, view_iters=view_iters,
        depth_weight=depth_weight,
    ))
    params.validate()
    check_intrinsics(focal, fov)
    check_max_resolution(max_resolution)
    check_device(device)
    for img in images:
        check_input_file(img, "image")
    if trajectory is not None:
        check_input_file(trajectory, "trajectory file")
    flux = FluxParams(**given(offload=offload, vram_budget=vram_budget, inpaint_steps=inpaint_steps, guidance=guidance))
    flux.validate()
    dests = common.output_dirs(out, images, overwrite=overwrite, bytes_per_pixel=COARSE_BYTES_PER_PIXEL,
                               max_resolution=max_resolution)
    common.require_weights_first(images, depth_backend, inpaint_backend, fetch)  # before the stages import torch
    for img, dest in zip(images, dests):
        if len(images) > 1:
            console.info(str(img))
        v = vo.open_for_image(viewer, viewer_port, rrd, wait, wait_seconds, image=img, n_images=len(images),
                              default_rrd=dest / "coarse.rrd")
        try:
            res = run_coarse(img, params, depth_backend=depth_backend, inpaint_backend=inpaint_backend,
                             render_backend=render_backend, max_resolution=max_resolution, device=device, seed=seed,
                             fetch=fetch, out=dest, focal=focal, fov=fov, viewer=v if v.enabled else None,
                             inpaint_options=flux.backend_options())
            if v.enabled:
                _log_fly_through(v, res, render_backend)
        except BaseException:
            v.discard()
            raise
        v.close()
        tables.print_coarse_summary(res.summary)
        if json_:
            console.out_json(res.summary)
        else:
            console.out(*res.paths)


FLY_THROUGH_FRAMES = 48


def _log_fly_through(v, res, render_backend: str) -> None:
    """The final tab of the viewer: the coarse scene rendered along the spiral at the input camera."""
    from vd.viewer.show import log_fly_through

    first = next((f for f in res.views if f.kind == "input"), res.views[0])
    camera = (first.K, first.rgb.shape[1], first.rgb.shape[0])
    log_fly_through(v, res.gaussians, FLY_THROUGH_FRAMES, camera=camera, backend=render_backend)
