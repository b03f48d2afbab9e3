"""`vd refine`: optimise Gaussians on a COLMAP-style dataset with depth and normal priors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vd import console
from vd.commands import common
from vd.commands import viewer_options as vo
from vd.commands.export import problems_listed
from vd.params import check_device


def refine(
    dataset: Path = typer.Argument(..., help="A dataset folder written by `vd export --format colmap`.", show_default=False),
    init: Path = typer.Option(..., "--init", help="Initial Gaussians (PLY)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (gaussians_refined.ply, refine_meta.json)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Optimisation steps (default 300).", show_default=False),
    depth_weight: Optional[float] = typer.Option(None, "--depth-weight", help="Weight of the depth loss (default 0.5).", show_default=False),
    normal_weight: Optional[float] = typer.Option(None, "--normal-weight", help="Weight of the normal loss (default 0.1).", show_default=False),
    densify: Optional[bool] = typer.Option(None, "--densify/--no-densify", help="Split high-gradient and prune transparent Gaussians (default off).", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON or TOML file of refine parameters; options given here win.", show_default=False),
    device: Optional[str] = common.DEVICE,
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0); part of the cache key.", show_default=False),
    json_: bool = common.JSON,
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
) -> None:
    """Refine Gaussians with RGB plus continuous-surface (depth, normal) supervision.

    Per view, the depth prior is aligned (scale + shift, least squares) to the detached rendered depth;
    a mask-aware Huber loss pulls the render to it, and 1 - |n_render . n_prior| aligns the normals of
    the rendered depth with the prior's. The dataset is validated first. Results are memoised.

    Example: vd refine dataset/ --init vd-out/photo/coarse.ply -o refined/ --iters 300
    """
    from vd.stages.refine import load_config
    from vd.stages.refine import refine as run

    check_device(device)
    if config is not None:
        load_config(config)  # usage errors (forbidden/unknown keys) before anything heavy
    prog = console.progress()
    with problems_listed(), prog:
        res = run(dataset, init, out, iters=iters, depth_weight=depth_weight, normal_weight=normal_weight,
                  densify=densify, config=config, device=device, seed=seed, progress=prog)
    report(res, json_)
    vo.log_outputs("refine", out, viewer=viewer, viewer_port=viewer_port, rrd=rrd, wait=wait, wait_seconds=wait_seconds)


def report(res, as_json: bool) -> None:
    """The before/after line on stderr; the written paths (or the result as JSON) on stdout."""

    m = res.meta.get("metrics", {})
    b, a = m.get("before", {}), m.get("after", {})

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    console.info(
        f"refine{' (cached)' if res.cached else ''}: {res.meta.get('gaussians', {}).get('final')} Gaussians; "
        f"depth AbsRel {f(b.get('depth_abs_rel'), '.4f')} -> {f(a.get('depth_abs_rel'), '.4f')}, "
        f"normal error {f(b.get('normal_deg'), '.2f')}° -> {f(a.get('normal_deg'), '.2f')}°, "
        f"PSNR {f(b.get('psnr'), '.2f')} -> {f(a.get('psnr'), '.2f')} dB"
    )
    if as_json:
        console.out_json(res.to_dict())
    else:
        console.out(str(res.ply), str(res.meta_path))
