"""The coarse stage: the scaffold, then the warp-and-inpaint loop that adds views where the scene has holes.

    result = run_coarse(image, CoarseParams(...), RunOptions(...), flux=FluxParams(...), out=Path("vd-out/room"),
                        viewer=viewer)

`run_coarse` is the runner `vd coarse` and `vd batch` both call. The scaffold is
`vd.stages.scaffold.run_scaffold` (which owns its key); the loop's steps live in
`vd.stages.coarse_view` (its docstring describes them); this module owns the loop's cache key
(`view_key`, VIEW_VERSION). `CoarseRun` holds one run's state, every attribute declared.
Memoisation: the scaffold and every added view are separate cache entries; view k's key is
`view_key(key of view k−1, k, ...)`, so a run killed after view k resumes at view k+1 with
identical results, and a second identical run is all cache hits. The views at probe moves
(`vd.stages.coarse_view.add_move_view`) chain on after the trajectory's the same way, and the pinholes
of the finished scene are sealed last (`vd.stages.coarse_view.seal_moves`), an entry keyed by the last
view's key.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vd import console
from vd.cache import Cache, content_hash, file_hash, step_key
from vd.fetch.licences import licences_of
from vd.holes import HoleScan
from vd.image import LoadedImage, load_image
from vd.models import memory
from vd.models.choose import get_depth_backend, get_inpaint_backend
from vd.models.offload import configure
from vd.params import GPU_ITERS, CoarseParams, FluxParams, RunOptions, key_params
from vd.paths import resolve_device
from vd.render import resolve_backend
from vd.stages import coarse_view as stage
from vd.stages.coarse_folder import SUMMARY as SUMMARY_NAME
from vd.stages.coarse_folder import folder_files, write_coarse_folder, write_folder_files
from vd.stages.runner import NULL_VIEWER, StageViewer, seed_from_key
from vd.stages.scaffold import ScaffoldRecord, key_of_run, run_scaffold
from vd.stages.select import Diagnostics
from vd.viewer import Viewer, log_view
from vd.views import View, decode_record, encode_record

VIEW_STAGE = "coarse-view"
VIEW_VERSION = 6  # 2: incremental hole scan (HoleScan); 3: no spawn in front of known surfaces, edges spawn,
# depth term; 4: colour fit, opaque lift, edge footprint, rim points in front of the background beside them dropped;
# 5: a view's Gaussians that change the input camera's render are dropped (coarse_view.out_of_sight); 6: the colour
# fit keeps a Gaussian on a depth edge within vd.train.MIXED_COLOUR_STEP of its colour
RUN_STAGE = "coarse"  # a whole run's output folder, so that an identical rerun computes (and imports) nothing
RUN_VERSION = 2  # bump when what the folder holds changes (vd.stages.coarse_folder, vd.views, vd.ply writers);
# 2: the finished scene's pinholes sealed
SEAL_STAGE = "coarse-seal"
SEAL_VERSION = 4  # 2: turns of the canvas camera by the canvas's reach probed as well; 3: cracks at depth
# jumps sealed with the farther side (vd.pinholes.farther_side); 4: what shows through a surface backed (leaks)
FLY_THROUGH_FRAMES = 48  # the viewer's final tab: the coarse scene along the spiral

log = logging.getLogger(__name__)

# test hook: called as _after_view(k) after view k is memoised (kill-and-resume tests)
_after_view: Optional[Callable[[int], None]] = None


def view_key(prev_key: str, k: int, p: CoarseParams, poses: np.ndarray) -> str:
    """The key of added view k: it chains from the previous view's key (the scaffold's for view 1),
    and holds every parameter of `p` that the loop's results depend on (`p` resolved:
    `CoarseParams.resolved`) and the candidate poses by content."""
    return step_key(
        prev_key,
        "view",
        k,
        version=VIEW_VERSION,
        params=key_params(p, VIEW_STAGE),
        poses=content_hash(np.ascontiguousarray(poses, dtype=np.float64)),
    )


def run_key(scaffold_key: str, p: CoarseParams, trajectory_hash: Optional[str]) -> str:
    """The key of a whole run's output folder: it holds what the chain of view keys holds (the
    scaffold's key, the loop's version and parameters; the candidate poses follow from these and
    the trajectory file, keyed by content), and what the seal's key holds, so it changes exactly when
    some view's key or the seal's would."""
    return step_key(
        scaffold_key,
        "run",
        version=RUN_VERSION,
        view_version=VIEW_VERSION,
        params=key_params(p, VIEW_STAGE),
        move_views=p.move_views,  # left out of the views' keys: it changes only the views after theirs
        seal_version=SEAL_VERSION,  # the folder holds the sealed scene
        trajectory=trajectory_hash,
    )


@dataclass(slots=True)
class CoarseRun:
    """The state of one run. Every attribute is declared here (slots: no other can be set); `open`
    fills the first group and checks everything a user can get wrong before any work, `run` the rest."""

    p: CoarseParams  # the iteration counts resolved
    options: RunOptions
    img: LoadedImage
    dev: str
    rname: str  # the render backend
    cpu_auto: bool  # the CPU iteration defaults were used
    memory_plan: Any  # vd.models.offload.configure's placement (summary.json)
    dback: Any  # the depth backend
    iback: Any  # the inpaint backend (None without outpainting and added views)
    viewer: StageViewer
    cache: Cache
    t_start: float
    scaffold: Optional[ScaffoldRecord] = None
    views: list[View] = field(default_factory=list)
    parts: list = field(default_factory=list)  # the scaffold's Gaussians, then each added view's
    stats: list[stage.ViewStat] = field(default_factory=list)
    stopped: Optional[dict] = None  # the selection's diagnostics when the loop stopped early
    poses: Optional[np.ndarray] = None  # the candidate poses
    radius: float = 0.0  # the scene radius that sized the trajectory
    ctx: Optional[stage.LoopContext] = None
    scan: Optional[HoleScan] = None  # the hole scan of the growing scene, built at the first view not in the cache
    last_key: Optional[str] = None  # the key of the last view added (the scaffold's when none was)
    sealed: int = 0  # Gaussians behind the finished scene's pinholes (the last part)
    seal_seconds: float = 0.0  # the time sealing them took (when computed)
    views_bar: Optional[console.Bar] = None  # the added views' progress, while `run` adds them

    @classmethod
    def open(
        cls, image, p: CoarseParams, options: RunOptions, *, flux: FluxParams, viewer: Viewer, cache: Optional[Cache]
    ) -> CoarseRun:
        p.validate()
        options.validate()
        flux.validate()
        dev = resolve_device(options.device)
        rname = resolve_backend(options.render_backend, dev)
        resolved = p.resolved(dev)
        auto = not str(dev).startswith("cuda") and (p.init_iters is None or p.view_iters is None)
        if auto:
            log.info(
                f"CPU run: using {resolved.init_iters} scaffold and {resolved.view_iters} per-view "
                f"optimisation iterations (upstream GPU defaults are {GPU_ITERS[0]}/{GPU_ITERS[1]}; "
                "set --init-iters/--view-iters to override)"
            )
        img = load_image(image, options.max_resolution)
        dback = get_depth_backend(
            options.depth_backend,
            image_path=img.path,
            focal=options.focal,
            fov=options.fov,
            device=dev,
            auto_fetch=options.auto_fetch,
            model=options.depth_model,
            licence=options.licence,
        )
        iback = None
        if p.outpaint or p.n_frames > 2:
            iback = get_inpaint_backend(
                options.inpaint_backend,
                device=dev,
                auto_fetch=options.auto_fetch,
                licence=options.licence,
                **flux.backend_options(),
            )
        memory_plan = configure(dback, iback, device=dev, budget=flux.budget_bytes)
        return cls(
            p=resolved,
            options=options,
            img=img,
            dev=dev,
            rname=rname,
            cpu_auto=auto,
            memory_plan=memory_plan,
            dback=dback,
            iback=iback,
            viewer=StageViewer(viewer),
            cache=cache if cache is not None else Cache.open(),
            t_start=time.perf_counter(),
        )

    @property
    def g_all(self):
        from vd.gaussians import Gaussians

        return self.parts[0] if len(self.parts) == 1 else Gaussians.cat(self.parts)

    def folder_key(self) -> str:
        scaffold_key = key_of_run(
            self.img,
            self.p,
            depth_backend=self.dback,
            inpaint_backend=self.iback,
            render_backend=self.rname,
            seed=self.options.seed,
            max_resolution=self.options.max_resolution,
        )
        traj = self.p.trajectory_file
        return run_key(scaffold_key, self.p, file_hash(traj) if traj else None)

    def cached_folder(self, out: Path) -> Optional[stage.CoarseResult]:
        """The output folder of an identical earlier run written from the cache, with nothing
        computed or decoded; None when the cache has none."""
        record = self.cache.lookup(self.folder_key())
        if record is None:
            return None
        files = {name: record.read(name) for name in record.names}
        summary = json.loads(files[SUMMARY_NAME])
        summary.update(
            image=str(self.img.path),
            device=self.dev,
            memory_plan=self.memory_plan,
            licences=licences_of(self.weights_used()),
            memory=[],
            seconds=time.perf_counter() - self.t_start,
        )
        summary["scaffold"]["cached"] = True
        for v in summary["views"]:
            v["cached"] = True
        log.info(
            f"coarse: the whole scene is cached ({summary['totals']['gaussians_total']} Gaussians, "
            f"{summary['totals']['frames']} frames)"
        )
        paths = write_folder_files(Path(out), files, summary)
        summary["outputs"] = [str(x) for x in paths]
        return stage.CoarseResult(summary, paths, folder=Path(out))

    def run(self, out: Optional[Path]) -> stage.CoarseResult:
        memory.reset()
        try:
            self.build_scaffold()
            moves = int(self.p.move_views) if self.p.n_frames > 2 else 0
            with console.Bar("coarse: views", max(self.p.n_frames - 2, 0) + moves) as self.views_bar:
                self.add_views()
                self.add_move_views()
            self.views_bar = None
            self.seal()
        finally:
            for b in (self.dback, self.iback):
                if b is not None:
                    b.release()
        self.viewer.log_gaussians("coarse", self.g_all)
        result = stage.CoarseResult(self.summary(), views=self.views, scaffold=self.parts[0], gaussians=self.g_all)
        if out is not None:
            comments = {"source_image": self.img.content_hash, "stage": "coarse"}
            result.paths = write_coarse_folder(
                Path(out), self.views, result.scaffold, result.gaussians, result.summary, comments=comments
            )
            result.summary["outputs"] = [str(x) for x in result.paths]
            self.cache.put(self.folder_key(), folder_files(Path(out)), stage=RUN_STAGE, image=str(self.img.path))
        self.viewer.show("fly-through", _log_fly_through, result, self.rname)
        return result

    # --- scaffold ---------------------------------------------------------------------------

    def build_scaffold(self) -> None:
        self.scaffold = run_scaffold(
            self.img,
            self.p,
            depth_backend=self.dback,
            inpaint_backend=self.iback,
            render_backend=self.rname,
            device=self.dev,
            seed=self.options.seed,
            max_resolution=self.options.max_resolution,
            cache=self.cache,
            viewer=self.viewer,
        )
        self.views = list(self.scaffold.views)
        self.parts = [self.scaffold.gaussians]

    # --- the view loop ----------------------------------------------------------------------

    def add_views(self) -> None:
        p = self.p
        assert self.scaffold is not None, "build_scaffold first"
        self.poses, self.radius = stage.dense_poses(self.views[0], p)
        self.ctx = stage.LoopContext(
            poses=self.poses,
            p=p,
            depth_backend=self.dback,
            inpaint_backend=self.iback,
            render_backend=self.rname,
            device=self.dev,
            view_iters=int(p.view_iters or 0),
        )
        prev = self.scaffold.key
        for k in range(1, p.n_frames - 1):
            vkey = view_key(prev, k, p, self.poses)
            with memory.track(f"view {k}", self.dev) as row:
                vrec, hit = self.cache.memoise(
                    vkey, partial(self._compute_view, k, vkey), stage=VIEW_STAGE, image=str(self.img.path)
                )
                vviews, g_new, vmeta = decode_record(vrec, self.dev)
                if vmeta.get("stopped"):  # the search found no view: the next row "view k" is a move's
                    row.stage = "view search (none chosen)"
            if vmeta.get("stopped"):
                self._stop(k, vmeta.get("diagnostics", {}), hit)
                if not hit:  # the views still to come are the moves'
                    self._count_views(k - 1, total=k - 1 + (int(p.move_views) if p.n_frames > 2 else 0))
                break
            self._append(k, vviews[0], g_new, vmeta, hit)
            prev = vkey
            if _after_view is not None:
                _after_view(k)
        self.last_key = prev

    def add_move_views(self) -> None:
        """Up to `move_views` views at the probe moves that still uncover pixels
        (`vd.stages.coarse_view.add_move_view`), each memoised after the one before."""
        assert self.last_key is not None and self.ctx is not None, "add_views first"
        prev = self.last_key
        for j in range(int(self.p.move_views) if self.p.n_frames > 2 else 0):  # --n-frames 2: the scaffold alone
            k = len(self.stats) + 1
            mkey = step_key(prev, "move-view", j, version=VIEW_VERSION)
            with memory.track(f"view {k}", self.dev) as row:
                compute = partial(self._compute_move_view, k, mkey)
                vrec, hit = self.cache.memoise(mkey, compute, stage=VIEW_STAGE, image=str(self.img.path))
                vviews, g_new, vmeta = decode_record(vrec, self.dev)
                if vmeta.get("stopped"):
                    row.stage = "move search (none chosen)"
            if vmeta.get("stopped"):
                if not hit:
                    self._count_views(k - 1, total=k - 1)
                break
            self._append(k, vviews[0], g_new, vmeta, hit)
            prev = mkey
        self.last_key = prev

    def _compute_move_view(self, k: int, key: str):
        assert self.ctx is not None
        taken = tuple(int(s.move) for s in self.stats if s.move is not None)
        self._count_views(k - 1)
        with console.Bar(f"coarse: view {k} fit", self.ctx.view_iters) as fit:
            return stage.add_move_view(
                self.g_all,
                self.views,
                k,
                self.ctx,
                seed=seed_from_key(key),
                taken=taken,
                progress=lambda iteration, _: fit.update(iteration + 1),
            )

    def _count_views(self, done: int, total: Optional[int] = None) -> None:
        """Show `done` views added (of `total`, when it changed) on the views' bar, when there is one."""
        if self.views_bar is not None:
            self.views_bar.update(done, total=total)

    def seal(self) -> None:
        """Seal the pinholes a move opens in the finished scene (memoised after the last view)."""
        assert self.last_key is not None, "add_views first"
        key = step_key(self.last_key, "seal", version=SEAL_VERSION)

        def compute():
            t = time.perf_counter()
            with console.status("coarse: sealing the pinholes a move opens"):
                sealed = stage.seal_moves(self.g_all, self.views, self.rname)
            meta = {"sealed": len(sealed), "seconds": round(time.perf_counter() - t, 3)}
            return encode_record([], sealed, meta), {"gaussians": len(sealed)}

        rec, hit = self.cache.memoise(key, compute, stage=SEAL_STAGE, image=str(self.img.path))
        _, g, meta = decode_record(rec, self.dev)
        if g is not None and len(g):
            self.parts.append(g)
        self.sealed = int(meta.get("sealed", 0))
        self.seal_seconds = float(meta.get("seconds", 0.0))
        if self.sealed:
            done = " (cached)" if hit else f", {self.seal_seconds:.1f} s"
            log.info(f"coarse: {self.sealed} Gaussians behind the pinholes a move opens{done}")

    def _compute_view(self, k: int, vkey: str):
        assert self.poses is not None and self.ctx is not None
        if self.scan is None:
            Kc, Wc, Hc = stage.candidate_camera(self.views[0], self.p.margin)
            self.scan = HoleScan(
                self.poses,
                Kc,
                Wc,
                Hc,
                scale=self.p.scan_scale,
                tolerance=self.p.refine_tolerance,
                seed=self.options.seed,
                device=self.parts[0].means.device,
            )
        for part in self.parts[self.scan.chunks :]:  # on resume: the scaffold and every cached view, in order
            self.scan.add(part)
        self._count_views(k - 1)
        with console.Bar(f"coarse: view {k} fit", self.ctx.view_iters) as fit:
            return stage.add_view(
                self.g_all,
                self.views,
                [s.dense_index for s in self.stats],
                k,
                self.ctx,
                scan=self.scan,
                seed=seed_from_key(vkey),
                progress=lambda iteration, _: fit.update(iteration + 1),
            )

    def _stop(self, k: int, diagnostics: dict, hit: bool) -> None:
        self.stopped = diagnostics
        log.info(f"view {k}/{self.p.n_frames - 2}: no candidate selected; stopping" + (" (cached)" if hit else ""))
        if diagnostics:
            d = dict(diagnostics, top=[tuple(x) for x in diagnostics.get("top", [])])
            for line in Diagnostics(**d).lines():
                log.info(f"  {line}")

    def _append(self, k: int, view: View, g_new, meta: dict, hit: bool) -> None:
        st = stage.ViewStat(**{**meta["stat"], "cached": hit})
        self.stats.append(st)
        self.views = self.views + [view]
        if g_new is not None and len(g_new):
            self.parts.append(g_new)
        log_view(self.viewer, view, "coarse")
        tag = " (fallback: outside the band)" if st.fallback else ""
        if st.move is None:
            head = f"view {k}/{self.p.n_frames - 2}: pose {st.dense_index}"
        else:
            head = f"view {k}: probe move {st.move}, {100 * st.scan_ratio:.2f}% uncovered"
        log.info(
            f"{head}, hole ratio {st.hole_ratio:.3f}{tag}, "
            f"+{st.added_gaussians} Gaussians"
            + (" (cached)" if hit else f", loss {_number(st.final_loss)}, {st.seconds:.1f} s")
        )

    # --- summary ----------------------------------------------------------------------------

    def weights_used(self) -> list[str]:
        """The registry models whose weights the run's backends load (none for file depth and telea)."""
        return [*self.dback.registry_models, *(self.iback.registry_models if self.iback is not None else ())]

    def summary(self) -> dict:
        p, stats, sc = self.p, self.stats, self.scaffold
        assert sc is not None and self.poses is not None
        Kc, Wc, Hc = stage.candidate_camera(self.views[0], p.margin)
        n_scaffold = len(self.parts[0])
        return {
            "image": str(self.img.path),
            "size": [int(self.img.rgb.shape[1]), int(self.img.rgb.shape[0])],
            "device": self.dev,
            "backends": {
                "depth": self.dback.name,
                "inpaint": self.iback.name if self.iback else None,
                "render": self.rname,
            },
            "licences": licences_of(self.weights_used()),
            "memory_plan": self.memory_plan,
            "params": {
                **{k: v for k, v in asdict(p).items() if k not in ("init_iters", "view_iters")},
                "radius_percentiles": list(p.radius_percentiles),
                "max_resolution": self.options.max_resolution,
                "seed": self.options.seed,
            },
            "iters": {"init": p.init_iters, "view": p.view_iters, "cpu_auto": self.cpu_auto},
            "scene_radius": self.radius,
            "candidates": int(len(self.poses)),
            "candidate_size": [Wc, Hc],
            "scaffold": {
                "gaussians": n_scaffold,
                "frames": len([v for v in self.views if v.kind != "view"]),
                "loss": sc.meta.get("loss"),
                "hidden": sc.meta.get("hidden", 0),
                "cached": sc.hit,
                "key": sc.key,
            },
            "views": [asdict(s) for s in stats],
            "selected": len(stats),
            "move_views": sum(s.move is not None for s in stats),
            "max_views": p.n_frames - 2,
            "stopped": self.stopped,
            "totals": {
                "frames": len(self.views),
                "gaussians_scaffold": n_scaffold,
                "gaussians_total": int(sum(len(g) for g in self.parts)),
                "hole_pixels": int(sum(s.hole_pixels for s in stats)),
                "spawn_pixels": int(sum(s.spawn_pixels for s in stats)),
                "added_gaussians": int(sum(s.added_gaussians for s in stats)),
                "sealed_gaussians": self.sealed,
                "seal_seconds": self.seal_seconds,
            },
            "memory": [m.to_json() for m in memory.records()],
            "seconds": time.perf_counter() - self.t_start,
        }


def _number(x: Optional[float]) -> str:
    """A loss for the log: a view that trained nothing has none (NaN, read back from JSON as None)."""
    return "none" if x is None or x != x else f"{x:.4f}"


def _log_fly_through(viewer, result: stage.CoarseResult, render_backend: str) -> None:
    """The viewer's final tab: the coarse scene rendered along the spiral at the input camera."""
    from vd.viewer.show import log_fly_through

    first = next((f for f in result.views if f.kind == "input"), result.views[0])
    camera = (first.K, first.rgb.shape[1], first.rgb.shape[0])
    log_fly_through(viewer, result.gaussians, FLY_THROUGH_FRAMES, camera=camera, backend=render_backend)


class _deterministic:
    """torch deterministic algorithms for the duration of a run (restored afterwards), so a
    resumed run reproduces an uninterrupted one bit for bit where torch allows it.

    The flag is set on torch's C core directly: `torch.use_deterministic_algorithms` also sets
    the flag of torch.compile's inductor, whose import takes about a second, half of a fully
    cached run; vd compiles nothing."""

    @staticmethod
    def _set(mode: bool, warn_only: bool) -> None:
        import torch

        setter = getattr(torch._C, "_set_deterministic_algorithms", None)
        if setter is None:  # a torch without the private setter
            torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        else:
            setter(mode, warn_only=warn_only)

    def __enter__(self):
        import torch

        self.prev = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        self._set(True, True)
        return self

    def __exit__(self, *exc):
        self._set(*self.prev)


def run_coarse(
    image: Path | str,
    params: Optional[CoarseParams] = None,
    options: Optional[RunOptions] = None,
    *,
    flux: Optional[FluxParams] = None,
    out: Optional[Path] = None,
    viewer: Viewer = NULL_VIEWER,
    cache: Optional[Cache] = None,
    **option_values: Any,
) -> stage.CoarseResult:
    """Build (or load from the cache) the coarse scene of `image`; write the output folder `out` when given.

    `options` (backends, device, seed, max resolution, intrinsics) may also be given field by field
    (`run_coarse(img, p, depth_backend="file", device="cpu")`). `flux` configures the flux-fill
    inpaint backend; its `offload="auto"` is planned before any model loads
    (`vd.models.offload.configure`) and recorded as the summary's "memory_plan". `viewer` (a
    `vd.viewer.Viewer`; NullViewer by default) receives every view and the Gaussians as they are
    made, then a fly-through; its failures never fail the run (`vd.stages.runner.StageViewer`)."""
    options = replace(options or RunOptions(), **option_values)
    run = CoarseRun.open(
        image, params or CoarseParams(), options, flux=flux or FluxParams(), viewer=viewer, cache=cache
    )
    if out is not None and not run.viewer.enabled:  # a viewer wants every view and Gaussian: decode them
        cached = run.cached_folder(out)
        if cached is not None:
            return cached
    with _deterministic():
        return run.run(out)


__all__ = [
    "CoarseParams",
    "CoarseRun",
    "FLY_THROUGH_FRAMES",
    "RUN_STAGE",
    "RUN_VERSION",
    "run_key",
    "VIEW_STAGE",
    "VIEW_VERSION",
    "run_coarse",
    "view_key",
]
