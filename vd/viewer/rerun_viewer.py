"""The Rerun-backed Viewer (imported only when a viewer is asked for; imports rerun lazily).

Entity tree (world = the input camera, OpenCV RDF: x right, y down, z forward)::

    /                                   ViewCoordinates.RDF (static)
    world/<tab>/cameras/<name>          Transform3D (world_from_camera) + Pinhole (K, W, H)
    world/<tab>/cameras/<name>/rgb      JPEG-compressed RGB
    world/<tab>/cameras/<name>/depth    DepthImage (metres, z-depth; invalid = 0)
    world/<tab>/cameras/<name>/masks/*  masks as 0/255 images
    world/<tab>/gaussians               GaussianSplats3D (or Points3D, radii = mean exp(log_scale))
    world/final/camera[/rgb|/depth]     the fly-through, on the sequence timeline "frame"

Scene data is static (the newest log wins); the fly-through lives on the "frame" timeline.
<tab> is one of scaffold, coarse, fine, final; the blueprint has one tab for each.
"""

from __future__ import annotations

import atexit
import functools
import getpass
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from vd.errors import VdError
from vd.install import pip_install
from vd.splat_constants import C0
from vd.viewer import TABS, Viewer
from vd.viewer import env as venv

log = logging.getLogger(__name__)

MAX_2D_VIEWS = 4


# ---------------------------------------------------------------------------------------------
# array helpers (numpy or torch in, numpy out)


def _np(x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy"):
        x = x.numpy()
    a = np.asarray(x)
    return a.astype(dtype, copy=False) if dtype is not None else a


def _rgb_u8(rgb) -> np.ndarray:
    a = _np(rgb)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an RGB image HxWx3, got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    a = a[..., :3]
    if a.dtype != np.uint8:
        f = a.astype(np.float32)
        if f.size and np.nanmax(f) <= 1.0 + 1e-3:
            f = f * 255.0
        a = np.clip(np.nan_to_num(f, nan=0.0), 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def _depth_f32(depth) -> np.ndarray:
    d = _np(depth, np.float32)
    d = np.squeeze(d)
    if d.ndim != 2:
        raise ValueError(f"expected a depth map HxW, got shape {d.shape}")
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    return np.ascontiguousarray(d)


def _mask_u8(mask) -> np.ndarray:
    m = np.squeeze(_np(mask))
    if m.ndim != 2:
        raise ValueError(f"expected a mask HxW, got shape {m.shape}")
    return np.ascontiguousarray((m > (127 if m.dtype == np.uint8 else 0)).astype(np.uint8) * 255)


def _part(name) -> str:
    """A safe entity path from a user name: [A-Za-z0-9_.-] per segment, '/' kept as hierarchy."""
    parts = [re.sub(r"[^A-Za-z0-9_.\-]", "_", p) for p in str(name).strip().split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    return "/".join(parts) or "unnamed"


def gaussian_arrays(g) -> dict:
    """Activated, finite numpy arrays of a Gaussians-like object (means, log_scales, quats wxyz,
    opacity_logits, sh [N,K,3]): centers, scales (exp), quaternions (xyzw, unit), rgba uint8, sh_rest."""
    means = _np(g.means, np.float32).reshape(-1, 3)
    n = len(means)
    log_scales = _np(g.log_scales, np.float32).reshape(n, -1)
    if log_scales.shape[1] == 2:  # 2D Gaussians: flat along the third axis
        log_scales = np.concatenate([log_scales, np.full((n, 1), -10.0, np.float32)], 1)
    quats = _np(g.quats, np.float32).reshape(n, 4)
    op = _np(g.opacity_logits, np.float32).reshape(n)
    sh = _np(g.sh, np.float32).reshape(n, -1, 3)
    ok = (
        np.isfinite(means).all(1)
        & np.isfinite(log_scales).all(1)
        & np.isfinite(quats).all(1)
        & np.isfinite(op)
        & np.isfinite(sh).all((1, 2))
    )
    norm = np.linalg.norm(quats, axis=1)
    ok &= norm > 1e-12
    means, log_scales, quats, op, sh, norm = means[ok], log_scales[ok], quats[ok], op[ok], sh[ok], norm[ok]
    q = quats / norm[:, None]
    xyzw = np.concatenate([q[:, 1:4], q[:, :1]], 1)
    rgb = np.clip(0.5 + C0 * sh[:, 0], 0.0, 1.0)
    alpha = 1.0 / (1.0 + np.exp(-np.clip(op, -60, 60)))
    rgba = (np.concatenate([rgb, alpha[:, None]], 1) * 255.0).round().astype(np.uint8)
    k = sh.shape[1]
    degree = int(round(np.sqrt(k))) - 1
    return {
        "centers": np.ascontiguousarray(means),
        "scales": np.ascontiguousarray(np.exp(np.clip(log_scales, -30, 10))),
        "quaternions": np.ascontiguousarray(xyzw, dtype=np.float32),
        "rgba": rgba,
        "sh_rest": sh[:, 1:] if k > 1 else None,
        "sh_degree": max(degree, 0),
        "dropped": int((~ok).sum()),
    }


def gaussians_archetype(g, *, force_points: bool = False):
    """rr.GaussianSplats3D for `g`; Points3D (radii = mean exp(log_scale)) when unavailable."""
    import rerun as rr

    a = gaussian_arrays(g)
    splats = None if force_points else getattr(rr, "GaussianSplats3D", None)
    if splats is None:
        return rr.Points3D(a["centers"], radii=a["scales"].mean(1).astype(np.float32), colors=a["rgba"])
    kw = {}
    if a["sh_rest"] is not None and a["sh_degree"] > 0:
        rest = np.zeros((len(a["centers"]), 15, 3), np.float32)
        rest[:, : a["sh_rest"].shape[1]] = a["sh_rest"][:, :15]
        kw = {"sh_coefficients": rest, "spherical_harmonics_degree": a["sh_degree"]}
    return splats(centers=a["centers"], scales=a["scales"], quaternions=a["quaternions"], colors=a["rgba"], **kw)


# ---------------------------------------------------------------------------------------------
# blueprint


def build_blueprint(cameras: dict, gaussians: dict, active: str, has_video: bool = False):
    """Tabs scaffold / coarse / fine / final: a 3D view of the tab's entities plus 2D views of its
    most recent cameras (RGB; depth and masks for the newest)."""
    import rerun.blueprint as rrb

    tabs = []
    for tab in TABS:
        if tab == "final":
            contents = ["+ world/final/**", "- world/final/camera/depth"]
            if "final" not in gaussians:
                for src in ("fine", "coarse", "scaffold"):
                    if src in gaussians:
                        contents.append(f"+ {gaussians[src]}")
                        break
            view3d = rrb.Spatial3DView(origin="world", contents=contents, name="final")
            if has_video:
                tabs.append(
                    rrb.Horizontal(
                        view3d,
                        rrb.Vertical(
                            rrb.Spatial2DView(
                                origin="world/final/camera", contents=["+ $origin/rgb"], name="fly-through"
                            ),
                            rrb.Spatial2DView(
                                origin="world/final/camera", contents=["+ $origin/depth"], name="fly-through depth"
                            ),
                        ),
                        column_shares=[3, 2],
                        name=tab,
                    )
                )
            else:
                tabs.append(rrb.Horizontal(view3d, name=tab))
            continue
        cams = list(cameras.get(tab, []))
        shown = cams + (list(cameras.get("scaffold", [])) if tab == "coarse" else [])
        contents = [f"+ world/{tab}/**"] + (["+ world/scaffold/cameras/**"] if tab == "coarse" else [])
        for cam in shown:
            contents += [f"- {cam}/depth", f"- {cam}/masks/**"]
        view3d = rrb.Spatial3DView(origin="world", contents=contents, name=f"{tab} 3D")
        if not cams:
            tabs.append(rrb.Horizontal(view3d, name=tab))
            continue
        recent = cams[-MAX_2D_VIEWS:]
        newest = recent[-1]
        short = newest.rsplit("/", 1)[-1]
        views2d = [
            rrb.Spatial2DView(origin=c, contents=["+ $origin/rgb"], name=c.split("/cameras/", 1)[-1]) for c in recent
        ]
        views2d += [
            rrb.Spatial2DView(origin=newest, contents=["+ $origin/depth"], name=f"{short} depth"),
            rrb.Spatial2DView(origin=newest, contents=["+ $origin/masks/**"], name=f"{short} masks"),
        ]
        tabs.append(rrb.Horizontal(view3d, rrb.Grid(*views2d), column_shares=[3, 2], name=tab))
    return rrb.Blueprint(
        rrb.Tabs(*tabs, active_tab=TABS.index(active)),
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
    )


# ---------------------------------------------------------------------------------------------
# spawning a native viewer


def spawn_viewer(port: int, *, timeout: float = 20.0) -> Optional[int]:
    """Start `rerun --port PORT` (analytics off, detached) and wait until it listens.

    Reuses a viewer already listening on the port (returns None); returns the new pid.
    Raises VdError with the viewer's own message when it cannot start (e.g. no display).
    """

    if venv.is_listening(port):
        return None
    exe = venv.rerun_executable()
    if not exe:
        raise VdError(f"the `rerun` viewer binary was not found (it ships with rerun-sdk: {pip_install('viewer')})")
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [exe, "--port", str(int(port)), "--memory-limit", "75%", "--expect-data-soon"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=venv.child_env(),
        start_new_session=True,
    )
    if venv.wait_listening(port, timeout=timeout, alive=lambda: proc.poll() is None):
        return proc.pid
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.seek(0)
    lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "error" in ln.lower() or "display" in ln.lower()), lines[-1] if lines else "")
    detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)[:300]
    raise VdError(f"the Rerun viewer did not start on port {port}" + (f": {detail}" if detail else ""))


# ---------------------------------------------------------------------------------------------
# the viewer


def _guarded(method):
    """Logging never fails a run: an error warns once per method (raises when strict)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._closed:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001
            if self.strict:
                raise
            if method.__name__ not in self._warned:
                self._warned.add(method.__name__)
                log.warning(f"viewer: {method.__name__} failed ({type(e).__name__}: {e}); the run continues")
            return None

    return wrapper


class RerunViewer(Viewer):
    """A Viewer streaming to Rerun sinks: a live one (spawn / serve / connect) and/or an .rrd file."""

    def __init__(
        self,
        rec,
        *,
        mode: str,
        live: Optional[str],
        url: Optional[str],
        rrd: Optional[Path],
        part: Optional[Path],
        wait: bool,
        wait_seconds: Optional[float],
        strict: bool,
    ):
        self.rec = rec
        self.mode = mode
        self.live = live
        self.url = url
        self.rrd = rrd
        self._part = part
        self.wait = wait
        self.wait_seconds = wait_seconds
        self.strict = strict
        self._closed = False
        self._warned: set = set()
        self._cameras: dict = {}
        self._gaussians: dict = {}
        self._active = "scaffold"
        self._has_video = False
        self._sent_key: Optional[tuple] = None

    @property
    def enabled(self) -> bool:
        return not self._closed

    def __repr__(self) -> str:
        return f"RerunViewer(mode={self.mode!r}, url={self.url!r}, rrd={str(self.rrd) if self.rrd else None!r})"

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        live: Optional[str],
        *,
        port: int,
        rrd: Optional[Path],
        wait: bool,
        wait_seconds: Optional[float],
        app_id: str = "vd",
        recording_name: Optional[str] = None,
        auto: bool = False,
        strict: bool = False,
    ) -> RerunViewer:
        import rerun as rr

        missing = [n for n in ("set_sinks", "FileSink", "GrpcSink", "GrpcServerSink") if not hasattr(rr, n)]
        if missing:
            raise VdError(
                f"rerun-sdk {getattr(rr, '__version__', '?')} is too old for vd (no {', '.join(missing)}): "
                "pip install -U 'rerun-sdk>=0.41'"
            )
        app = re.sub(r"[^A-Za-z0-9_\-]", "_", app_id or "vd") or "vd"
        rec = rr.RecordingStream(app, recording_id=str(uuid.uuid4()), send_properties=False)
        sinks: list[rr.GrpcSink | rr.GrpcServerSink | rr.FileSink] = []
        url: Optional[str] = None
        served_port = port  # the port actually served (another one when `port` is taken)
        if live == "spawn":
            try:
                spawn_viewer(port)
                url = venv.grpc_url(port)
                sinks.append(rr.GrpcSink(url))
            except VdError as e:
                if not auto:
                    raise
                log.warning(f"{e}; serving over gRPC instead")
                live = "serve"
        if live == "serve":
            served_port = venv.pick_port(port)
            if served_port != port:
                log.warning(f"viewer: port {port} is taken; serving on port {served_port}")
            url = venv.grpc_url(served_port)
            sinks.append(rr.GrpcServerSink(bind_ip="127.0.0.1", port=served_port))
        elif live == "connect":
            if not venv.is_listening(port, timeout=2.0):
                raise VdError(
                    f"no Rerun viewer is listening on 127.0.0.1:{port}; start one with `rerun --port {port}` "
                    "or use --viewer spawn / serve"
                )
            url = venv.grpc_url(port)
            sinks.append(rr.GrpcSink(url))
        part = None
        if rrd is not None:
            rrd = Path(rrd)
            rrd.parent.mkdir(parents=True, exist_ok=True)
            part = rrd.with_name(rrd.name + ".part")
            sinks.append(rr.FileSink(str(part)))
        mode = live or "save"
        self = cls(
            rec, mode=mode, live=live, url=url, rrd=rrd, part=part, wait=wait, wait_seconds=wait_seconds, strict=strict
        )
        rec.set_sinks(*sinks, default_blueprint=build_blueprint({}, {}, "scaffold"))
        if recording_name:
            rec.send_recording_name(str(recording_name))
        rec.log("/", rr.ViewCoordinates.RDF, static=True)
        rec.log("world", rr.ViewCoordinates.RDF, static=True)
        if live == "serve":
            if not venv.wait_listening(served_port, timeout=5.0):
                log.warning(f"viewer: the gRPC server did not start on port {served_port}")
            self._print_connect_hints(served_port)
        elif live in ("spawn", "connect"):
            log.info(f"viewer: streaming to the Rerun viewer at {url}")
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            viewer = ref()
            if viewer is not None:
                viewer._close(wait=False)

        atexit.register(close_at_exit)
        return self

    @staticmethod
    def _print_connect_hints(port: int) -> None:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001
            user = "you"
        host = socket.gethostname() or "this-host"
        url = venv.grpc_url(port)
        try:
            import rerun as rr

            version = f"   (a {rr.__version__} viewer: pip install rerun-sdk=={rr.__version__})"
        except Exception:  # noqa: BLE001
            version = ""
        # The connect line is what the user needs to see anything: printed even with --quiet.
        sys.stderr.write(
            f"viewer: serving on {url}\n"
            f"  watch it:              rerun --connect {url}{version}\n"
            f"  from another machine:  ssh -L {port}:127.0.0.1:{port} {user}@{host}"
            "   (then the same rerun --connect there)\n"
        )
        sys.stderr.flush()

    # ----------------------------------------------------------------- blueprint
    def _sync_blueprint(self) -> None:
        key = (
            tuple((t, tuple(c)) for t, c in sorted(self._cameras.items())),
            tuple(sorted(self._gaussians.items())),
            self._active,
            self._has_video,
        )
        if key == self._sent_key:
            return
        self._sent_key = key
        self.rec.send_blueprint(
            build_blueprint(self._cameras, self._gaussians, self._active, self._has_video),
            make_active=True,
            make_default=True,
        )

    @staticmethod
    def _tab(tab) -> str:
        t = str(tab).strip().lower()
        if t not in TABS:
            raise ValueError(f"unknown tab {tab!r} (one of {', '.join(TABS)})")
        return t

    # ----------------------------------------------------------------- logging
    @_guarded
    def set_tab(self, tab) -> None:
        self._active = self._tab(tab)
        self._sync_blueprint()

    @_guarded
    def log_frame(self, name, *, K, world_from_camera, rgb, depth=None, masks=None, tab="scaffold") -> None:
        import rerun as rr

        tab = self._tab(tab)
        name = str(name)
        if name.startswith(f"{tab}/"):
            name = name[len(tab) + 1 :]
        cam = f"world/{tab}/cameras/{_part(name)}"
        img = _rgb_u8(rgb)
        h, w = img.shape[:2]
        K = _np(K, np.float64).reshape(3, 3)
        pose = _np(world_from_camera, np.float64).reshape(4, 4)
        d = _depth_f32(depth) if depth is not None else None
        plane = 0.1
        if d is not None and (d > 0).any():
            plane = float(np.median(d[d > 0])) * 0.05
        self.rec.log(cam, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), static=True)
        self.rec.log(
            cam,
            rr.Pinhole(
                image_from_camera=K, width=w, height=h, camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=plane
            ),
            static=True,
        )
        self.rec.log(f"{cam}/rgb", rr.Image(img, color_model="RGB").compress(jpeg_quality=90), static=True)
        if d is not None:
            self.rec.log(f"{cam}/depth", rr.DepthImage(d, meter=1.0), static=True)
        for key, m in (masks or {}).items():
            if m is not None:
                self.rec.log(f"{cam}/masks/{_part(key)}", rr.Image(_mask_u8(m), color_model="L"), static=True)
        lst = self._cameras.setdefault(tab, [])
        if cam not in lst:
            lst.append(cam)
        self._active = tab
        self._sync_blueprint()

    @_guarded
    def log_gaussians(self, entity, gaussians) -> None:
        ent = str(entity).strip().strip("/")
        tab: Optional[str]
        if ent.lower() in TABS:
            tab = ent.lower()
            path = f"world/{tab}/gaussians"
        else:
            path = _part(ent)
            if not path.startswith("world/"):
                path = f"world/{path}"
            seg = path.split("/")
            tab = seg[1] if len(seg) > 2 and seg[1] in TABS else None
        self.rec.log(path, gaussians_archetype(gaussians), static=True)
        if tab is not None:
            self._gaussians[tab] = path
        self._sync_blueprint()

    @_guarded
    def log_video_frame(self, index, rgb, depth=None, *, K=None, world_from_camera=None) -> None:
        import rerun as rr

        cam = "world/final/camera"
        img = _rgb_u8(rgb)
        h, w = img.shape[:2]
        self.rec.set_time("frame", sequence=int(index))
        try:
            if K is not None and world_from_camera is not None:
                pose = _np(world_from_camera, np.float64).reshape(4, 4)
                self.rec.log(cam, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
                self.rec.log(
                    cam,
                    rr.Pinhole(
                        image_from_camera=_np(K, np.float64).reshape(3, 3),
                        width=w,
                        height=h,
                        camera_xyz=rr.ViewCoordinates.RDF,
                        image_plane_distance=0.1,
                    ),
                )
            self.rec.log(f"{cam}/rgb", rr.Image(img, color_model="RGB").compress(jpeg_quality=90))
            if depth is not None:
                self.rec.log(f"{cam}/depth", rr.DepthImage(_depth_f32(depth), meter=1.0))
        finally:
            self.rec.reset_time()
        if not self._has_video or self._active != "final":
            self._has_video = True
            self._active = "final"
            self._sync_blueprint()

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        self._close(wait=True)

    def discard(self) -> None:
        self._close(wait=False, keep=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        # A failed run keeps its recording (it shows how far the run got) but does not wait.
        self._close(wait=exc_type is None)

    def _close(self, *, wait: bool, keep: bool = True) -> None:
        if self._closed:
            return
        self._closed = True

        try:
            self.rec.flush(timeout_sec=30.0)
        except Exception:  # noqa: BLE001 - a dead viewer must not fail the run
            pass
        if wait and self.live is not None:
            what = "the gRPC server" if self.live == "serve" else "the viewer connection"
            done = venv.wait_after_run(wait=self.wait, wait_seconds=self.wait_seconds, what=what)
            if done == "none" and self.live == "serve":
                log.info("viewer: the gRPC server stops when vd exits (--wait or --wait-seconds N keep it open)")
        try:
            self.rec.disconnect()
        except Exception:  # noqa: BLE001
            pass
        if self._part is not None and not keep:
            try:
                self._part.unlink()
            except OSError:
                pass
        elif self._part is not None and self.rrd is not None:
            try:
                if self._part.exists():
                    os.replace(self._part, self.rrd)
                    log.info(f"viewer: recording saved to {self.rrd}")
            except OSError as e:
                log.warning(f"viewer: could not write {self.rrd}: {e}")
