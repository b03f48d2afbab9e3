"""Optional Rerun viewer integration; rerun is imported only when a viewer is asked for.

    viewer = open_viewer("auto", port=9876, rrd=None, wait=False, wait_seconds=None, app_id="vd")
    viewer.log_frame("input", K=K, world_from_camera=pose, rgb=rgb, depth=depth,
                     masks={"spawn": m}, tab="scaffold")
    viewer.log_gaussians("coarse", gaussians)          # -> world/coarse/gaussians
    viewer.log_video_frame(i, rgb, depth)              # timeline "frame", world/final/camera
    viewer.set_tab("final")
    viewer.close()                                     # flush, honour --wait, finish the .rrd

Modes (`--viewer`):

- ``auto``: a native viewer when a display is available (DISPLAY / WAYLAND_DISPLAY /
  WAYLAND_SOCKET, or macOS/Windows) and stdout is a terminal; a gRPC server plus the exact
  ``rerun --connect`` and ``ssh -L`` lines (stderr) when headless but interactive; nothing when
  not interactive (scripts, CI). Never spawns headless, never fails a run.
- ``none``: nothing (but ``--rrd`` still saves).
- ``spawn``: start a native viewer (or reuse the one already listening on the port).
- ``serve``: serve over gRPC on 127.0.0.1:PORT, or the next free port when it is taken.
- ``connect``: stream to a viewer already listening on 127.0.0.1:PORT.
- ``save``: only write ``--rrd PATH``.

``--rrd PATH`` tees into a file next to any live sink (one ``set_sinks`` call, never the
upstream "a later sink replaces the file" bug, docs/upstream.md#rerun-file-sink); the file is
written as ``PATH.part`` and renamed when the viewer closes. World coordinates are OpenCV RDF
with world = the input camera.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from vd.errors import UsageError, VdError
from vd.install import pip_install
from vd.viewer import env

log = logging.getLogger(__name__)

TABS = ("scaffold", "coarse", "fine", "final")
MODES = ("auto", "none", "spawn", "serve", "connect", "save")
DEFAULT_PORT = 9876

__all__ = [
    "TABS",
    "MODES",
    "DEFAULT_PORT",
    "Viewer",
    "NullViewer",
    "log_view",
    "open_viewer",
    "rerun_available",
    "resolve_auto",
]


class Viewer:
    """The viewer interface the stages call; every method is a no-op here (see NullViewer)."""

    mode: str = "none"
    rrd: Path | None = None
    url: str | None = None

    @property
    def enabled(self) -> bool:
        return False

    def log_frame(self, name, *, K, world_from_camera, rgb, depth=None, masks=None, tab="scaffold") -> None:
        pass

    def log_gaussians(self, entity, gaussians) -> None:
        pass

    def log_video_frame(self, index, rgb, depth=None, *, K=None, world_from_camera=None) -> None:
        pass

    def set_tab(self, tab) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self) -> None:
        """Close without waiting and delete the unfinished .rrd (the run failed; nothing to keep)."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullViewer(Viewer):
    """No viewer: logging calls cost nothing and import nothing."""

    def __repr__(self) -> str:
        return "NullViewer()"


def log_view(viewer, view, tab: str) -> None:
    """Log a `vd.views.View` (camera, image, depth and its three masks) as one frame of `tab`."""
    viewer.log_frame(
        view.name,
        K=view.K,
        world_from_camera=view.world_from_camera,
        rgb=view.rgb,
        depth=view.depth,
        masks={"supervise": view.supervise, "spawn": view.spawn, "hole": view.hole},
        tab=tab,
    )


def rerun_available() -> bool:
    return importlib.util.find_spec("rerun") is not None


def resolve_auto(*, interactive: bool | None = None, display: bool | None = None) -> str:
    """What `--viewer auto` means here: "spawn", "serve" or "none"."""
    interactive = env.is_interactive() if interactive is None else interactive
    display = env.has_display() if display is None else display
    if not interactive:
        return "none"
    return "spawn" if display else "serve"


def _check_rrd(rrd) -> Path:
    p = Path(rrd).expanduser()
    if p.is_dir():
        raise UsageError(f"--rrd must be a file path, not a directory: {p}")
    if p.suffix.lower() != ".rrd":
        raise UsageError(f"--rrd must end in .rrd: {p}")
    return p


def open_viewer(
    mode: str = "auto",
    *,
    port: int = DEFAULT_PORT,
    rrd=None,
    wait: bool = False,
    wait_seconds: float | None = None,
    app_id: str = "vd",
    recording_name: str | None = None,
    strict: bool = False,
) -> Viewer:
    """A Viewer for `mode` (see the module docstring); NullViewer when nothing is to be shown or saved.

    Raises UsageError for impossible combinations (save without --rrd, spawn without a display,
    a bad mode or port) and VdError when rerun-sdk is missing for an explicit request.
    `strict=True` makes logging errors raise instead of warning once (tests).
    """
    mode = str(getattr(mode, "value", mode) or "auto").strip().lower()
    if mode not in MODES:
        raise UsageError(f"--viewer must be one of {', '.join(MODES)}, not {mode!r}")
    if not (0 < int(port) < 65536):
        raise UsageError(f"--viewer-port must be between 1 and 65535, not {port}")
    if wait_seconds is not None and wait_seconds < 0:
        raise UsageError(f"--wait-seconds must be >= 0, not {wait_seconds}")
    if mode == "save" and rrd is None:
        raise UsageError("--viewer save needs --rrd PATH (the .rrd file to write)")
    rrd_path = _check_rrd(rrd) if rrd is not None else None

    live: str | None = resolve_auto() if mode == "auto" else mode
    if live in ("none", "save"):
        live = None
    if live is None and rrd_path is None:
        return NullViewer()
    if live == "spawn" and mode == "spawn":
        if not env.has_display():
            raise UsageError(
                "--viewer spawn needs a display (DISPLAY / WAYLAND_DISPLAY are not set); "
                "use --viewer serve to watch from another machine, or --rrd PATH to save a recording"
            )
    if not rerun_available():
        if mode == "auto" and rrd_path is None:
            log.info(f"viewer: rerun-sdk is not installed, no viewer ({pip_install('viewer')} to get one)")
            return NullViewer()
        raise VdError(f"the viewer needs rerun-sdk, which is not installed: {pip_install('viewer')}")

    from vd.viewer.rerun_viewer import RerunViewer  # rerun (optional) only when a viewer is asked for

    return RerunViewer.open(
        live,
        port=int(port),
        rrd=rrd_path,
        wait=bool(wait),
        wait_seconds=wait_seconds,
        app_id=app_id,
        recording_name=recording_name,
        auto=(mode == "auto"),
        strict=strict,
    )
