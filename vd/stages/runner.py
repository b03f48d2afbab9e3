"""What every stage runner shares: the viewer it logs to, with one error policy, and seeds from keys.

    viewer = StageViewer(viewer)        # any vd.viewer.Viewer; NullViewer() when nothing is shown
    viewer.log_frame("input", K=K, world_from_camera=pose, rgb=rgb, tab="scaffold")

The policy: the viewer never fails a stage. A viewer call that raises is warned about once per
method (the first error's sentence on stderr) and the stage goes on; later failures of the same
method are silent. Callers always pass a viewer object (`vd.viewer.NullViewer()` for none), never None.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from vd.viewer import NullViewer, Viewer

log = logging.getLogger(__name__)

NULL_VIEWER: Viewer = NullViewer()  # the default of every stage's `viewer` argument (stateless, shared)


class StageViewer:
    """A viewer as the stages call it: the Viewer interface, each call guarded by the one policy."""

    def __init__(self, viewer: Any):
        if viewer is None:
            raise TypeError("a stage needs a viewer object: pass vd.viewer.NullViewer() to show nothing")
        self.viewer: Any = viewer.viewer if isinstance(viewer, StageViewer) else viewer
        self.warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        try:
            return bool(self.viewer.enabled)
        except Exception:  # noqa: BLE001 - a broken viewer shows nothing
            return False

    def call(self, method: str, *args, **kw) -> None:
        """viewer.method(*args, **kw); an error is warned about once per method and never raised."""
        self._guarded(method, lambda: getattr(self.viewer, method)(*args, **kw))

    def show(self, what: str, fn: Callable[..., Any], *args, **kw) -> None:
        """fn(viewer, *args, **kw) when the viewer is enabled (work done for the viewer only, e.g. a
        fly-through), under the same policy as the viewer's own methods."""
        if self.enabled:
            self._guarded(what, lambda: fn(self.viewer, *args, **kw))

    def _guarded(self, what: str, thunk: Callable[[], Any]) -> None:
        try:
            thunk()
        except Exception as e:  # noqa: BLE001 - the viewer never fails a stage
            if what not in self.warned:
                self.warned.add(what)
                log.warning(f"viewer: {what} failed ({type(e).__name__}: {e}); the run continues")

    def log_frame(self, name, **kw) -> None:
        self.call("log_frame", name, **kw)

    def log_gaussians(self, entity, gaussians) -> None:
        self.call("log_gaussians", entity, gaussians)

    def log_video_frame(self, index, rgb, depth=None, **kw) -> None:
        self.call("log_video_frame", index, rgb, depth, **kw)

    def set_tab(self, tab) -> None:
        self.call("set_tab", tab)


def seed_from_key(key: str) -> int:
    """A step's random seed, derived from its cache key (a resumed run draws what the first one drew)."""
    return int(key[:8], 16) & 0x7FFFFFFF


__all__ = ["NULL_VIEWER", "StageViewer", "seed_from_key"]
