"""Viewer options shared by the stage commands and `vd view` (typer + stdlib at import time).

Use in a command signature::

    from vd.commands import viewer_options as vo

    def coarse(..., viewer: str = vo.VIEWER, viewer_port: int = vo.VIEWER_PORT, rrd: Optional[Path] = vo.RRD,
               wait: bool = vo.WAIT, wait_seconds: Optional[float] = vo.WAIT_SECONDS):
        with vo.open_from_options(viewer, viewer_port, rrd, wait, wait_seconds) as v:
            run_stage(..., viewer=v)

`open_from_options` returns a `vd.viewer.Viewer` (a NullViewer, without importing rerun, when
nothing is to be shown or saved); use it as a context manager or call `.close()` at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from vd import console
from vd.errors import VdError
from vd.viewer import DEFAULT_PORT, MODES, open_viewer

PANEL = "Viewer"


def _check_mode(value: str) -> str:
    v = (value or "auto").strip().lower()
    if v not in MODES:
        raise typer.BadParameter(f"must be one of {', '.join(MODES)}")
    return v


VIEWER = typer.Option(
    "auto",
    "--viewer",
    envvar="VD_VIEWER",
    callback=_check_mode,
    rich_help_panel=PANEL,
    help="auto | none | spawn | serve | connect | save. auto: a native Rerun viewer with a display and a terminal, "
    "a gRPC server (prints the rerun --connect line) when headless, nothing in scripts. [env: VD_VIEWER]",
)
VIEWER_PORT = typer.Option(
    DEFAULT_PORT,
    "--viewer-port",
    min=1,
    max=65535,
    rich_help_panel=PANEL,
    help="gRPC port of the viewer (serve moves to a free port when it is taken).",
)
RRD = typer.Option(
    None,
    "--rrd",
    dir_okay=False,
    rich_help_panel=PANEL,
    help="Also save the recording to this .rrd file (works with every --viewer mode).",
)
WAIT = typer.Option(
    False,
    "--wait",
    rich_help_panel=PANEL,
    help="At the end, keep the viewer connection / gRPC server open until Enter is pressed.",
)
WAIT_SECONDS = typer.Option(
    None,
    "--wait-seconds",
    min=0,
    rich_help_panel=PANEL,
    show_default=False,
    help="At the end, keep the viewer connection / gRPC server open N seconds.",
)


def open_from_options(
    viewer: str = "auto",
    viewer_port: int = DEFAULT_PORT,
    rrd: Optional[Path] = None,
    wait: bool = False,
    wait_seconds: Optional[float] = None,
    *,
    app_id: str = "vd",
    recording_name: Optional[str] = None,
    default_rrd: Optional[Path] = None,
):
    """The Viewer the options ask for. `default_rrd` is used for `--viewer save` without `--rrd`."""

    mode = _check_mode(getattr(viewer, "value", viewer))
    if mode == "save" and rrd is None:
        rrd = default_rrd
    return open_viewer(
        mode,
        port=viewer_port,
        rrd=rrd,
        wait=wait,
        wait_seconds=wait_seconds,
        app_id=app_id,
        recording_name=recording_name,
    )


def rrd_for(rrd: Optional[Path], image, n_images: int = 1) -> Optional[Path]:
    """The --rrd path for one of several images: PATH itself for one image, else PATH_<image stem>.rrd."""
    if rrd is None or n_images <= 1:
        return rrd
    rrd = Path(rrd)
    return rrd.with_name(f"{rrd.stem}_{Path(image).stem}{rrd.suffix}")


def open_for_image(
    viewer: str = "auto",
    viewer_port: int = DEFAULT_PORT,
    rrd: Optional[Path] = None,
    wait: bool = False,
    wait_seconds: Optional[float] = None,
    *,
    image,
    n_images: int = 1,
    default_rrd: Optional[Path] = None,
):
    """One Viewer (one recording) per input image of a multi-image command; `--viewer save`
    without --rrd writes `default_rrd` (e.g. OUT/coarse.rrd)."""
    return open_from_options(
        viewer,
        viewer_port,
        rrd_for(rrd, image, n_images),
        wait,
        wait_seconds,
        recording_name=Path(image).name,
        default_rrd=default_rrd,
    )


@contextmanager
def viewer_for_image(
    viewer: str,
    viewer_port: int,
    rrd: Optional[Path],
    wait: bool,
    wait_seconds: Optional[float],
    *,
    image,
    n_images: int,
    default_rrd: Path,
) -> Iterator:
    """`open_for_image` around one image's run: closed (saved, kept open as asked) when the run ends,
    discarded when it fails."""
    v = open_for_image(
        viewer, viewer_port, rrd, wait, wait_seconds, image=image, n_images=n_images, default_rrd=default_rrd
    )
    try:
        yield v
    except BaseException:
        v.discard()
        raise
    v.close()


def log_outputs(
    kind: str,
    out_dir,
    *,
    viewer: str = "auto",
    viewer_port: int = DEFAULT_PORT,
    rrd: Optional[Path] = None,
    wait: bool = False,
    wait_seconds: Optional[float] = None,
    image=None,
    n_images: int = 1,
    max_resolution: int = 512,
) -> None:
    """For stages that take no viewer: show what they wrote in `out_dir` once they are done.

    kind "depth": depth.npy + intrinsics.json + mask.png with the image's colours (scaffold tab);
    kind "refine": gaussians_refined.ply (final tab). `--viewer save` without --rrd writes
    OUT_DIR/<kind>.rrd. Never fails the command (its results are already written): any viewer
    problem, bad options included, is a warning. Does nothing, and imports nothing heavy, when no
    viewer is asked for.
    """

    try:
        v = open_from_options(
            viewer,
            viewer_port,
            rrd_for(rrd, image or Path(out_dir), n_images),
            wait,
            wait_seconds,
            recording_name=Path(image or out_dir).name,
            default_rrd=Path(out_dir) / f"{kind}.rrd",
        )
    except VdError as e:
        console.warn(f"viewer: {e}")
        return
    if not v.enabled:
        v.close()
        return
    try:
        from vd.viewer.show import log_depth_output, log_ply

        if kind == "depth":
            log_depth_output(
                v,
                out_dir,
                image=image,
                max_resolution=max_resolution,
                name=Path(image).stem if image is not None else "input",
            )
        elif kind == "refine":
            log_ply(v, Path(out_dir) / "gaussians_refined.ply", "final")
        else:
            raise ValueError(f"unknown output kind {kind!r}")
    except Exception as e:  # noqa: BLE001 - the stage's results are written; the viewer never fails it
        console.warn(f"viewer: could not show {out_dir} ({e})")
        v.discard()
        return
    v.close()


__all__ = [
    "VIEWER",
    "VIEWER_PORT",
    "RRD",
    "WAIT",
    "WAIT_SECONDS",
    "MODES",
    "DEFAULT_PORT",
    "open_from_options",
    "rrd_for",
    "open_for_image",
    "viewer_for_image",
    "log_outputs",
]
