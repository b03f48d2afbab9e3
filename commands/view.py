"""`vd view`: open a PLY, a processed image or an output folder in Rerun (or write an .rrd)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vd import console
from vd.commands import viewer_options as vo
from vd.errors import UsageError
from vd.viewer import open_viewer, resolve_auto


def view(
    source: Path = typer.Argument(
        ...,
        help="A Gaussian PLY, a processed image (its vd-out/<stem>/ folder) or an output folder.",
        show_default=False,
    ),
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
    fly_through: int = typer.Option(
        0,
        "--fly-through",
        min=0,
        help="Also render N frames of the scene along a loop around the input camera (timeline 'frame', tab final).",
    ),
    traj: str = typer.Option("spiral", "--traj", help="Fly-through loop: spiral, wobble or rot."),
    render_backend: str = typer.Option("auto", "--render-backend", help="auto, gsplat or torch (for --fly-through)."),
) -> None:
    """Show a result in Rerun. In scripts (stdout not a terminal) write <stem>.rrd and print its path.

    Serving (--viewer serve, or auto without a display) keeps the server open until Enter unless
    --wait-seconds is given.
    """
    from vd.viewer.show import log_source, resolve_source, source_stem

    kind, path = resolve_source(source)
    mode = vo._check_mode(viewer)
    live = resolve_auto() if mode == "auto" else mode
    if mode == "none" and rrd is None:
        raise UsageError("--viewer none shows nothing; give --rrd PATH or another --viewer mode")
    if (mode == "save" or (mode == "auto" and live == "none")) and rrd is None:
        rrd = Path(f"{source_stem(kind, path)}.rrd")
        mode = "save"
    if live == "serve" and not wait and wait_seconds is None:
        wait = True  # a server that exits at once shows nothing
    v = open_viewer(
        mode,
        port=viewer_port,
        rrd=rrd,
        wait=wait,
        wait_seconds=wait_seconds,
        app_id="vd_view",
        recording_name=path.name,
    )
    try:
        summary = log_source(v, kind, path)
        scene = summary.pop("_scene", None)
        if fly_through:
            if scene is None:
                raise UsageError(f"--fly-through needs Gaussians, and {path} has none")
            from vd.viewer.show import log_fly_through

            with console.progress() as bar:
                task = bar.add_task("fly-through", total=fly_through)
                n = log_fly_through(
                    v,
                    scene[0],
                    fly_through,
                    camera=scene[1],
                    traj=traj,
                    backend=render_backend,
                    progress=lambda i: bar.update(task, completed=i),
                )
            summary["frames"] = n
    except BaseException:
        v.discard()
        raise
    v.close()
    parts = [f"{summary['cameras']} cameras"] if summary["cameras"] else []
    parts += [f"{n} Gaussians ({tab})" for tab, n in summary["gaussians"].items()]
    parts += [f"{summary['frames']} fly-through frames"] if summary.get("frames") else []
    console.info(f"viewed {path}: " + (", ".join(parts) or "nothing to show"))
    if v.rrd is not None:
        console.out(str(v.rrd))
