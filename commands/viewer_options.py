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

from pathlib import Path
from typing import Optional

import typer

PANEL = "Viewer"
MODES = ("auto", "none", "spawn", "serve", "connect", "save")
DEFAULT_PORT = 9876


def _check_mode(value: str) -> str:
    v = (value or "auto").strip().lower()
    if v not in MODES:
        raise typer.BadParameter(f"must be one of {', '.join(MODES)}")
    return v


VIEWER = typer.Option(
    "auto", "--viewer", envvar="VD_VIEWER", callback=_check_mode, rich_help_panel=PANEL,
    help="auto | none | spawn | serve | connect | save. auto: a native Rerun viewer with a display and a terminal, "
         "a gRPC server (prints the rerun --connect line) when headless, nothing in scripts. [env: VD_VIEWER]",
)
VIEWER_PORT = typer.Option(DEFAULT_PORT, "--viewer-port", min=1, max=65535, rich_help_panel=PANEL,
                           help="gRPC port of the viewer (serve moves to a free port when it is taken).")
RRD = typer.Option(None, "--rrd", dir_okay=False, rich_help_panel=PANEL,
                   help="Also save the recording to this .rrd file (works with every --viewer mode).")
WAIT = typer.Option(False, "--wait", rich_help_panel=PANEL,
                    help="At the end, keep the viewer connection / gRPC server open until Enter is pressed.")
WAIT_SECONDS = typer.Option(None, "--wait-seconds", min=0, rich_help_panel=PANEL, show_default=False,
                            help="At the end, keep the viewer connection / gRPC server open N seconds.")


def open_from_options(viewer: str = "auto", viewer_port: int = DEFAULT_PORT, rrd: Optional[Path] = None,
                      wait: bool = False, wait_seconds: Optional[float] = None, *, app_id: str = "vd",
                      recording_name: Optional[str] = None, default_rrd: Optional[Path] = None):
    """The Viewer the options ask for. `default_rrd` is used for `--viewer save` without `--rrd`."""
    from vd.viewer import open_viewer

    mode = _check_mode(getattr(viewer, "value", viewer))
    if mode == "save" and rrd is None:
        rrd = default_rrd
    return open_viewer(mode, port=viewer_port, rrd=rrd, wait=wait, wait_seconds=wait_seconds, app_id=app_id,
                       recording_name=recording_name)


__all__ = ["VIEWER", "VIEWER_PORT", "RRD", "WAIT", "WAIT_SECONDS", "MODES", "DEFAULT_PORT", "open_from_options"]
