"""The coarse stage: the scaffold, then the warp-and-inpaint loop that adds views where the scene has holes.

    result = run_coarse(image, CoarseParams(...), out=Path("vd-out/room"))

The loop's steps live in `vd.stages.coarse_view` (its docstring describes them); `CoarseRun`
holds one run's state: backends opened once, the scaffold, the memoised views, the summary.
Memoisation: the scaffold and every added view are separate cache entries; view k's key is
`step_key(key of view k−1, "view", k, ...)`, so a run killed after view k resumes at view k+1
with identical results, and a second identical run is all cache hits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from vd.cache import Cache, step_key
from vd.holes import HoleScan
from vd.image import load_image
from vd.models import memory
from vd.models.choose import get_depth_backend, get_inpaint_backend
from vd.models.offload import configure
from vd.params import MAX_RESOLUTION, SEED, CoarseParams, check_intrinsics, check_max_resolution
from vd.paths import resolve_device
from vd.render import resolve_backend
from vd.stages import coarse_view as stage
from vd.stages.coarse_folder import write_coarse_folder
from vd.stages.scaffold import build_scaffold
from vd.stages.select import Diagnostics
from vd.views import View, decode_record, encode_record

log = logging.getLogger(__name__)

# test hook: called as _after_view(k) after view k is memoised (kill-and-resume tests)
_after_view: Optional[Callable[[int], None]] = None


class CoarseRun:
    """The state of one run; `open` checks everything a user can get wrong before any work."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.views: list[View] = []
        self.parts: list = []  # the scaffold's Gaussians, then each added view's
        self.stats: list[stage.ViewStat] = []
        self.stopped: Optional[dict] = None
        self.scan = None  # the hole scan of the growing scene, built at the first view not in the cache

    @classmethod
    def open(cls, image, p: CoarseParams, *, depth_backend: str, inpaint_backend: str, render_backend: str,
             max_resolution: int, device: Optional[str], seed: int, fetch: bool, viewer, focal: Optional[float],
             fov: Optional[float], cache: Optional[Cache], inpaint_options: Optional[dict]) -> "CoarseRun":
        p.validate()
        check_intrinsics(focal, fov)
        check_max_resolution(max_resolution)
        dev = resolve_device(device)
        rname = resolve_backend(render_backend, dev)
        init_iters, view_iters, auto = stage.resolved_iters(p, dev)
        if auto:
            log.info(f"CPU run: using {init_iters} scaffold and {view_iters} per-view optimisation iterations "
                         f"(upstream GPU defaults are {stage.GPU_ITERS[0]}/{stage.GPU_ITERS[1]}; "
                         "set --init-iters/--view-iters to override)")
        img = load_image(image, max_resolution)
        dback = get_depth_backend(depth_backend, image_path=img.path, focal=focal, fov=fov, device=dev, auto_fetch=fetch or None)
        iback = None
        if p.outpaint or p.n_frames > 2:
            iback = get_inpaint_backend(inpaint_backend, device=dev, auto_fetch=fetch or None, **(inpaint_options or {}))
        memory_plan = configure(dback, iback, device=dev, budget=(inpaint_options or {}).get("vram_budget"))
        return cls(p=p, img=img, dev=dev, rname=rname, init_iters=init_iters, view_iters=view_iters, cpu_auto=auto,
                   memory_plan=memory_plan,
                   dback=dback, iback=iback, seed=seed, max_resolution=max_resolution, viewer=viewer,
                   cache=cache if cache is not None else Cache.open(), t_start=time.perf_counter())

    @property
    def g_all(self):
        from vd.gaussians import Gaussians

        return self.parts[0] if len(self.parts) == 1 else Gaussians.cat(self.parts)

    def run(self, out: Optional[Path]) -> stage.CoarseResult:
        memory.reset()
        try:
            self.build_scaffold()
            self.add_views()
        finally:
            for b in (self.dback, self.iback):
                if b is not None:
                    b.release()
        stage.log_to_viewer(self.viewer, "log_gaussians", "coarse", self.g_all)
        result = stage.CoarseResult(views=self.views, scaffold=self.parts[0], gaussians=self.g_all, summary=self.summary())
        if out is not None:
            comments = {"source_image": self.img.content_hash, "stage": "coarse"}
            result.paths = write_coarse_folder(Path(out), self.views, result.scaffold, result.gaussians, result.summary,
                                               comments=comments)
            result.summary["outputs"] = [str(x) for x in result.paths]
        return result

    # --- scaffold ---------------------------------------------------------------------------

    def build_scaffold(self) -> None:
        p = self.p
        self.skey = stage.scaffold_key(self.img.content_hash, p, depth_id=self.dback.identity,
                                       inpaint_id=self.iback.identity if (self.iback and p.outpaint) else None,
                                       render_backend=self.rname, init_iters=self.init_iters, seed=self.seed,
                                       max_resolution=self.max_resolution)
        with memory.track("scaffold", self.dev):
            rec, self.scaffold_hit = self.cache.memoise(self.skey, self._compute_scaffold, stage="scaffold",
                                                        image=str(self.img.path))
            self.views, g, self.scaffold_meta = decode_record(rec, self.dev)
        self.parts = [g]
        for v in self.views:
            stage.log_to_viewer(self.viewer, "log_frame", v.name, K=v.K, world_from_camera=v.world_from_camera, rgb=v.rgb,
                                depth=v.depth, masks={"supervise": v.supervise, "spawn": v.spawn, "hole": v.hole},
                                tab="scaffold")
        stage.log_to_viewer(self.viewer, "log_gaussians", "scaffold", g)
        hidden = self.scaffold_meta.get("hidden", 0)
        log.info(f"scaffold: {len(g)} Gaussians from {len(self.views)} view(s)"
                     + (f", {hidden} of them behind depth edges" if hidden else "")
                     + (" (cached)" if self.scaffold_hit else f", loss {self.scaffold_meta.get('loss', float('nan')):.4f}"))

    def _compute_scaffold(self):
        p = self.p
        log.info("scaffold: outpaint, depth, Gaussians, optimisation ..." if p.outpaint
                     else "scaffold: depth, Gaussians, optimisation ...")
        s = build_scaffold(self.img.rgb, depth_backend=self.dback, inpaint_backend=self.iback, expansion=p.expansion,
                           outpaint=p.outpaint, init_iters=self.init_iters, seed=stage.seed_from_key(self.skey),
                           render_backend=self.rname, device=self.dev, image_plan=getattr(self.img, "plan", None),
                           edge_times=p.edge_times, depth_weight=p.depth_weight)
        meta = {"counts": s.counts, "hidden": s.hidden, "loss": s.loss, "depth_valid_fraction": s.depth_valid_fraction}
        return encode_record(s.views, s.gaussians, meta), {"gaussians": len(s.gaussians)}

    # --- the view loop ----------------------------------------------------------------------

    def add_views(self) -> None:
        p = self.p
        self.poses, self.radius = stage.dense_poses(self.views[0], p)
        self.ctx = stage.LoopContext(poses=self.poses, p=p, depth_backend=self.dback, inpaint_backend=self.iback,
                                     render_backend=self.rname, device=self.dev, view_iters=self.view_iters)
        lp = stage.loop_params(p, self.view_iters, self.poses)
        prev = self.skey
        for k in range(1, p.n_frames - 1):
            vkey = step_key(prev, "view", k, **lp)
            with memory.track(f"view {k}", self.dev):
                vrec, hit = self.cache.memoise(vkey, lambda k=k, vkey=vkey: self._compute_view(k, vkey),
                                               stage="coarse-view", image=str(self.img.path))
                vviews, g_new, vmeta = decode_record(vrec, self.dev)
            if vmeta.get("stopped"):
                self._stop(k, vmeta.get("diagnostics", {}), hit)
                break
            self._append(k, vviews[0], g_new, vmeta, hit)
            prev = vkey
            if _after_view is not None:
                _after_view(k)

    def _compute_view(self, k: int, vkey: str):
        if self.scan is None:
            Kc, Wc, Hc = stage.candidate_camera(self.views[0], self.p.margin)
            self.scan = HoleScan(self.poses, Kc, Wc, Hc, scale=self.p.scan_scale, tolerance=self.p.refine_tolerance,
                                 seed=self.seed, device=self.parts[0].means.device)
        for part in self.parts[self.scan.chunks:]:  # on resume: the scaffold and every cached view, in order
            self.scan.add(part)
        return stage.add_view(self.g_all, self.views, [s.dense_index for s in self.stats], k, self.ctx, scan=self.scan,
                              seed=stage.seed_from_key(vkey))

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
        stage.log_to_viewer(self.viewer, "log_frame", view.name, K=view.K, world_from_camera=view.world_from_camera,
                            rgb=view.rgb, depth=view.depth,
                            masks={"supervise": view.supervise, "hole": view.hole, "spawn": view.spawn}, tab="coarse")
        tag = " (fallback: outside the band)" if st.fallback else ""
        log.info(f"view {k}/{self.p.n_frames - 2}: pose {st.dense_index}, hole ratio {st.hole_ratio:.3f}{tag}, "
                     f"+{st.added_gaussians} Gaussians"
                     + (" (cached)" if hit else f", loss {st.final_loss:.4f}, {st.seconds:.1f} s"))

    # --- summary ----------------------------------------------------------------------------

    def summary(self) -> dict:
        p, stats = self.p, self.stats
        Kc, Wc, Hc = stage.candidate_camera(self.views[0], p.margin)
        n_scaffold = len(self.parts[0])
        return {
            "image": str(self.img.path), "size": [int(self.img.rgb.shape[1]), int(self.img.rgb.shape[0])], "device": self.dev,
            "backends": {"depth": self.dback.name, "inpaint": self.iback.name if self.iback else None, "render": self.rname},
            "memory_plan": self.memory_plan,
            "params": {**{k: v for k, v in asdict(p).items() if k not in ("init_iters", "view_iters")},
                       "radius_percentiles": list(p.radius_percentiles), "max_resolution": self.max_resolution,
                       "seed": self.seed},
            "iters": {"init": self.init_iters, "view": self.view_iters, "cpu_auto": self.cpu_auto},
            "scene_radius": self.radius, "candidates": int(len(self.poses)), "candidate_size": [Wc, Hc],
            "scaffold": {"gaussians": n_scaffold, "frames": len([v for v in self.views if v.kind != "view"]),
                         "loss": self.scaffold_meta.get("loss"), "cached": self.scaffold_hit, "key": self.skey},
            "views": [asdict(s) for s in stats],
            "selected": len(stats), "max_views": p.n_frames - 2,
            "stopped": self.stopped,
            "totals": {"frames": len(self.views), "gaussians_scaffold": n_scaffold,
                       "gaussians_total": int(sum(len(g) for g in self.parts)),
                       "hole_pixels": int(sum(s.hole_pixels for s in stats)),
                       "spawn_pixels": int(sum(s.spawn_pixels for s in stats)),
                       "added_gaussians": int(sum(s.added_gaussians for s in stats))},
            "memory": [m.to_json() for m in memory.records()],
            "seconds": time.perf_counter() - self.t_start,
        }


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

        self.prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        self._set(True, True)
        return self

    def __exit__(self, *exc):
        self._set(*self.prev)


def run_coarse(image: Path | str, params: Optional[CoarseParams] = None, *, depth_backend: str = "auto",
               inpaint_backend: str = "auto", render_backend: str = "auto", max_resolution: int = MAX_RESOLUTION,
               device: Optional[str] = None, seed: int = SEED, fetch: bool = False, out: Optional[Path] = None,
               viewer=None, focal: Optional[float] = None, fov: Optional[float] = None, cache: Optional[Cache] = None,
               inpaint_options: Optional[dict] = None) -> stage.CoarseResult:
    """Build (or load from the cache) the coarse scene of `image`; write the output folder `out` when given.

    `inpaint_options` go to the inpaint backend (flux-fill: `vd.params.FluxParams.backend_options()`:
    offload, vram_budget in bytes, steps, guidance); `offload="auto"` is planned before any model
    loads (`vd.models.offload.configure`) and recorded as the summary's "memory_plan". `viewer`
    receives every view and the Gaussians as they are made (see `vd.viewer`)."""
    with _deterministic():
        run = CoarseRun.open(image, params or CoarseParams(), depth_backend=depth_backend, inpaint_backend=inpaint_backend,
                             render_backend=render_backend, max_resolution=max_resolution, device=device, seed=seed,
                             fetch=fetch, viewer=viewer, focal=focal, fov=fov, cache=cache, inpaint_options=inpaint_options)
        return run.run(out)


__all__ = ["CoarseParams", "CoarseRun", "run_coarse"]
