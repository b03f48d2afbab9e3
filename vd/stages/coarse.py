"""The coarse stage: scaffold, then the warp-and-inpaint loop with frame selection (reference §8).

    result = run_coarse(image, CoarseParams(...), out=Path("vd-out/room"))

Loop (up to n_frames − 2 added views), over one dense candidate trajectory of
n_frames · dense_multiplier poses (or the poses of --trajectory FILE), rendered at the input
size + margin with the input focal and a centred principal point:

1. hole ratio of every candidate (`vd.holes.HoleScan`: alpha only, reduced resolution, updated
   with each view's new Gaussians; the close calls re-measured exactly at full size);
2. `vd.stages.select.select` (band, adjacency, fallback); nothing selected → diagnostics and stop;
3. render the chosen pose at full size; hole mask; inpaint the holes;
4. depth of the new view: the depth model on the inpainted image when it estimates novel views
   (MoGe), else the completion rule of `vd.align.complete_depth` (the `file` backend); aligned to
   the rendered depth (`vd.align.align_depth`);
5. spawn mask = hole ∧ ¬depth edges ∧ valid; new Gaussians from it;
6. optimise the new Gaussians only (all earlier ones frozen) against all frames.

Memoisation: the scaffold and every added view are separate cache entries; view k's key is
`step_key(key of view k−1, "view", k, ...)`, and a view entry stores only that view's frame and
its (trained) Gaussians, which never change afterwards. A run killed after view k therefore
resumes at view k+1 with identical results, and a second identical run is all cache hits.
Every random choice is seeded from the entry's key.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from vd.stages.scene_io import Frame

SCAFFOLD_VERSION = 1
VIEW_VERSION = 2  # 2: incremental hole scan (HoleScan), exact close calls by splatting

EXACT_BATCH = 8  # close calls measured exactly per round of scan_ratios
GPU_ITERS = (100, 500)  # upstream (PORT/FORK) init / per-view iterations
CPU_ITERS = (30, 60)  # documented CPU defaults (see bench/coarse.md); printed when used

# test hook: called as _after_view(k) after view k is memoised (kill-and-resume tests)
_after_view: Optional[Callable[[int], None]] = None


@dataclass
class CoarseParams:
    n_frames: int = 10
    dense_multiplier: int = 10
    margin: int = 32
    min_ratio: float = 0.05
    max_ratio: float = 0.25
    adjacent_exclusion: int = 1
    fallback: str = "none"
    traj: str = "spiral"
    trajectory_file: Optional[str] = None
    forward_ratio: float = 0.3
    backward_ratio: float = 0.4
    radius_percentiles: tuple = (5.0, 50.0)
    expansion: float = 0.3
    outpaint: bool = True
    init_iters: Optional[int] = None  # None: auto (GPU 100, CPU 30)
    view_iters: Optional[int] = None  # None: auto (GPU 500, CPU 60)
    scan_scale: Optional[float] = None  # None: 1/4, but at least 64 px on the long side (vd.holes)
    refine_tolerance: float = 0.03  # error bound of the fast scan (max 0.022 measured); closer calls are measured exactly
    edge_times: float = 0.05

    def validate(self) -> None:
        from vd.errors import UsageError

        from vd.cameras import TRAJECTORIES
        from vd.stages.select import FALLBACKS

        checks = [
            (self.n_frames >= 2, f"--n-frames must be at least 2 (input + ring), got {self.n_frames}"),
            (self.dense_multiplier >= 1, f"--dense-multiplier must be at least 1, got {self.dense_multiplier}"),
            (self.margin >= 0 and self.margin % 2 == 0, f"--margin must be an even number of pixels >= 0, got {self.margin}"),
            (0.0 <= self.min_ratio <= self.max_ratio <= 1.0, f"--min-ratio/--max-ratio must satisfy 0 <= min <= max <= 1, got {self.min_ratio:g} {self.max_ratio:g}"),
            (self.fallback in FALLBACKS, f"--fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}"),
            (self.traj in TRAJECTORIES, f"--traj must be one of {', '.join(TRAJECTORIES)}, got {self.traj!r}"),
            (self.forward_ratio >= 0 and self.backward_ratio >= 0, "--forward-ratio and --backward-ratio must be >= 0"),
            (0.0 <= self.expansion <= 2.0, f"--expansion is a total fraction between 0 and 2, got {self.expansion:g}"),
            (self.init_iters is None or self.init_iters >= 0, "--init-iters must be >= 0"),
            (self.view_iters is None or self.view_iters >= 0, "--view-iters must be >= 0"),
            (self.scan_scale is None or 0.0 < self.scan_scale <= 1.0, f"the scan scale must be in (0, 1], got {self.scan_scale}"),
            (len(self.radius_percentiles) == 2 and 0 <= self.radius_percentiles[0] < self.radius_percentiles[1] <= 100,
             f"--radius-percentiles must be LOW HIGH with 0 <= LOW < HIGH <= 100, got {tuple(self.radius_percentiles)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)

    def resolved_iters(self, device: str) -> tuple[int, int, bool]:
        """(init, view, auto_cpu): upstream counts on CUDA, the documented CPU defaults otherwise."""
        cuda = str(device).startswith("cuda")
        base = GPU_ITERS if cuda else CPU_ITERS
        init = base[0] if self.init_iters is None else int(self.init_iters)
        view = base[1] if self.view_iters is None else int(self.view_iters)
        auto = not cuda and (self.init_iters is None or self.view_iters is None)
        return init, view, auto


@dataclass
class ViewStat:
    view: int
    dense_index: int
    hole_ratio: float
    hole_pixels: int
    spawn_pixels: int
    added_gaussians: int
    final_loss: float
    fallback: bool
    cached: bool
    seconds: float = 0.0
    scan_ratio: float = float("nan")  # the ratio the selection saw (reduced-resolution scan)


@dataclass
class CoarseResult:
    frames: list
    scaffold: object  # Gaussians
    gaussians: object  # Gaussians (scaffold + every added view)
    summary: dict
    paths: list = field(default_factory=list)


def _vlog(viewer, method: str, *args, **kw) -> None:
    """Call a viewer method; a viewer problem is a warning, never a failed stage."""
    if viewer is None:
        return
    try:
        getattr(viewer, method)(*args, **kw)
    except Exception as e:  # noqa: BLE001
        from vd import console

        console.warn(f"viewer: {method} failed ({e})")


def _seed_from_key(key: str) -> int:
    return int(key[:8], 16) & 0x7FFFFFFF


def _frames_artifacts(frames: list[Frame], g, meta: dict) -> dict[str, bytes]:
    from vd.cache import codecs
    from vd.stages.scene_io import encode_frames, gaussians_to_arrays

    tensors, fmeta = encode_frames(frames, "f")
    if g is not None:
        tensors.update(gaussians_to_arrays(g))
    meta = dict(meta)
    meta["frames"] = fmeta
    return {"data.safetensors": codecs.encode_tensors(tensors), "meta.json": codecs.encode_json(meta)}


def _read_artifacts(record, device):
    from vd.cache import codecs
    from vd.stages.scene_io import decode_frames, gaussians_from_arrays

    meta = codecs.decode_json(record.read("meta.json"))
    tensors = codecs.decode_tensors(record.read("data.safetensors"))
    frames = decode_frames(tensors, meta.get("frames", []), "f")
    g = gaussians_from_arrays(tensors, device=device) if "g.means" in tensors else None
    return frames, g, meta


def candidate_camera(input_frame: Frame, margin: int):
    from vd.cameras import candidate_intrinsics

    return candidate_intrinsics(input_frame.K, input_frame.width, input_frame.height, margin)


def dense_poses(input_frame: Frame, p: CoarseParams) -> tuple[np.ndarray, float]:
    """The candidate poses [N, 4, 4] and the scene radius (radius over valid input pixels)."""
    from vd import cameras

    # valid input pixels: the spawn mask (valid depth, not a depth edge); depth > 0 if degenerate
    valid = input_frame.spawn if input_frame.spawn.sum() >= 3 else input_frame.depth > 0
    radius = cameras.scene_radius(input_frame.depth, input_frame.K, valid, p.radius_percentiles)
    if p.trajectory_file:
        return cameras.load_trajectory(p.trajectory_file), radius
    n = p.n_frames * p.dense_multiplier
    poses = cameras.trajectory(p.traj, n, radius, forward_ratio=p.forward_ratio, backward_ratio=p.backward_ratio,
                               width=input_frame.width, height=input_frame.height)
    return poses, radius


def scan_ratios(scan, selected: list, p: CoarseParams):
    """Hole ratios for selection from a `vd.holes.HoleScan` of the current scene, coarse to fine:
    every candidate from the reduced-resolution maps (error <= refine_tolerance), then the
    candidates too close to call (`candidates_to_refine`) exactly at full size, EXACT_BATCH at a
    time from the highest upper bound down (about half as many as all at once on the room).

    The selection on the merged ratios is the one an exact full-size scan gives whenever the
    error bound holds (measured in bench/coarse.md). Returns (ratios, n_exact, seconds), n_exact
    counting the candidates measured exactly, now or at an earlier view (their full-size maps
    are kept and updated)."""
    from vd.stages.select import candidates_to_refine

    t0 = time.perf_counter()
    ratios = scan.fast_ratios()
    tol = np.full(len(ratios), float(p.refine_tolerance) if not scan.exact_only else 0.0)
    known = scan.exact_indices
    if known and not scan.exact_only:
        ratios[known] = scan.exact_ratios(known)
        tol[known] = 0.0
    kw = dict(min_ratio=p.min_ratio, max_ratio=p.max_ratio, adjacent_exclusion=p.adjacent_exclusion, fallback=p.fallback)
    while tol.any():
        idx = candidates_to_refine(ratios, selected, tolerance=tol, **kw)
        if len(idx) == 0:
            break
        # the strongest contenders first: their exact ratios often settle the rest
        idx = idx[np.argsort(-(ratios[idx] + tol[idx]), kind="stable")][:EXACT_BATCH]
        ratios[idx] = scan.exact_ratios(idx)
        tol[idx] = 0.0
    return ratios, int((tol == 0).sum()) if not scan.exact_only else len(ratios), time.perf_counter() - t0


def add_view(g_all, frames: list[Frame], poses: np.ndarray, selected: list[int], k: int, p: CoarseParams, *,
             scan, depth_backend, inpaint_backend, render_backend: str, device: str, view_iters: int, seed: int):
    """One iteration of the loop. Returns (artifacts, meta) for the cache (module docstring)."""
    import torch

    from vd.align import align_depth, complete_depth, spawn_edges
    from vd.cameras import invert_pose
    from vd.gaussians import Gaussians
    from vd.holes import hole_masks
    from vd.lift import gaussians_from_rgbd
    from vd.render import render
    from vd.stages.select import diagnose, select
    from vd.train import optimise

    t0 = time.perf_counter()
    Kc, Wc, Hc = candidate_camera(frames[0], p.margin)
    ratios, n_exact, scan_s = scan_ratios(scan, selected, p)
    sel = select(ratios, selected, min_ratio=p.min_ratio, max_ratio=p.max_ratio,
                 adjacent_exclusion=p.adjacent_exclusion, fallback=p.fallback)
    base_meta = {"view": k, "ratios": [round(float(r), 6) for r in ratios], "scan_seconds": scan_s, "exact": n_exact}
    if sel is None:
        d = diagnose(ratios, selected, min_ratio=p.min_ratio, max_ratio=p.max_ratio,
                     adjacent_exclusion=p.adjacent_exclusion, fallback=p.fallback)
        meta = dict(base_meta, stopped=True, diagnostics=d.to_dict())
        return _frames_artifacts([], None, meta), {"stopped": True}
    pose = poses[sel.index]
    torch.manual_seed(seed)
    with torch.no_grad():
        vm = torch.as_tensor(invert_pose(pose), dtype=torch.float32, device=g_all.means.device)[None]
        Kt = torch.as_tensor(Kc, dtype=torch.float32, device=g_all.means.device)[None]
        res = render(g_all, vm, Kt, Wc, Hc, backend=render_backend)
        alpha = res.alpha[0].float()
        hole = hole_masks(alpha).cpu().numpy()
        rgb_r = (res.rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        depth_r = res.depth[0].float().cpu().numpy()
        alpha_np = alpha.cpu().numpy()
    if hole.any():
        inpainted = np.asarray(inpaint_backend.inpaint(rgb_r, hole, seed=seed), dtype=np.uint8)
    else:
        inpainted = rgb_r
    unknown = hole | (alpha_np < 0.5) | ~np.isfinite(depth_r) | (depth_r <= 0)
    if getattr(depth_backend, "estimates_novel_views", True):
        dr = depth_backend.estimate(inpainted, K_hint=np.asarray(Kc, dtype=np.float32))
        pred = np.asarray(dr.depth, dtype=np.float32)
        valid = np.asarray(dr.valid, dtype=bool)
        if pred.shape != hole.shape:
            import cv2

            pred = cv2.resize(pred, (Wc, Hc), interpolation=cv2.INTER_NEAREST)
            valid = cv2.resize(valid.astype(np.uint8), (Wc, Hc), interpolation=cv2.INTER_NEAREST) > 0
        render_known = np.where(unknown, 0.0, depth_r).astype(np.float32)
        aligned = align_depth(render_known, pred, unknown)
    else:
        render_known = np.where(unknown, 0.0, depth_r).astype(np.float32)
        pred = complete_depth(render_known, unknown)
        aligned = align_depth(render_known, pred, unknown)
        valid = np.ones_like(hole)
    valid = valid & np.isfinite(aligned) & (aligned > 0)
    edges = spawn_edges(aligned, valid, times=p.edge_times)
    spawn = hole & ~edges & valid
    frame = Frame(name=f"view_{k:02d}", kind="view", rgb=inpainted, depth=aligned.astype(np.float32),
                  K=np.asarray(Kc, dtype=np.float32), world_from_camera=np.asarray(pose, dtype=np.float64),
                  supervise=hole.copy(), spawn=spawn, hole=hole, dense_index=int(sel.index))
    new_g = gaussians_from_rgbd(inpainted, frame.depth, frame.K, pose.astype(np.float32), spawn).to(g_all.means.device)
    loss = float("nan")
    if len(new_g) > 0 and view_iters > 0:
        g2 = Gaussians.cat([g_all, new_g])
        trainable = torch.zeros(len(g2), dtype=torch.bool, device=g2.means.device)
        trainable[len(g_all):] = True
        views = [f.train_view(device) for f in frames] + [frame.train_view(device)]
        rep = optimise(g2, views, int(view_iters), trainable=trainable, seed=seed, backend=render_backend)
        loss = float(rep.final_loss)
        new_g = g2.select(torch.arange(len(g_all), len(g2), device=g2.means.device))
    stat = ViewStat(view=k, dense_index=int(sel.index), hole_ratio=float(hole.mean()), hole_pixels=int(hole.sum()),
                    spawn_pixels=int(spawn.sum()), added_gaussians=int(len(new_g)), final_loss=loss,
                    fallback=bool(sel.fallback), cached=False, seconds=time.perf_counter() - t0, scan_ratio=float(sel.ratio))
    meta = dict(base_meta, stopped=False, scan_ratio=float(sel.ratio), stat=asdict(stat))
    return _frames_artifacts([frame], new_g, meta), {"stopped": False}


def scaffold_key(image_hash: str, p: CoarseParams, *, depth_id: str, inpaint_id: Optional[str], render_backend: str,
                 init_iters: int, seed: int, max_resolution: int) -> str:
    from vd.cache import stage_key

    return stage_key(stage="scaffold", version=SCAFFOLD_VERSION,
                     params={"expansion": p.expansion, "outpaint": p.outpaint, "init_iters": init_iters,
                             "edge_times": p.edge_times, "max_resolution": max_resolution},
                     inputs={"image": image_hash}, models={"depth": depth_id, "inpaint": inpaint_id},
                     backend=render_backend, dtype="float32", seed=seed)


def loop_params(p: CoarseParams, view_iters: int, poses: np.ndarray) -> dict:
    from vd.cache import content_hash

    return {
        "version": VIEW_VERSION, "margin": p.margin, "min_ratio": p.min_ratio, "max_ratio": p.max_ratio,
        "adjacent_exclusion": p.adjacent_exclusion, "fallback": p.fallback, "view_iters": view_iters,
        "scan_scale": p.scan_scale, "refine_tolerance": p.refine_tolerance, "edge_times": p.edge_times,
        "poses": content_hash(np.ascontiguousarray(poses, dtype=np.float64)),
    }


class _deterministic:
    """torch deterministic algorithms for the duration of a run (restored afterwards), so a
    resumed run reproduces an uninterrupted one bit for bit where torch allows it."""

    def __enter__(self):
        import torch

        self.prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True, warn_only=True)
        return self

    def __exit__(self, *exc):
        import torch

        torch.use_deterministic_algorithms(self.prev[0], warn_only=self.prev[1])


def run_coarse(image, p: CoarseParams | None = None, **kw) -> CoarseResult:
    """Build (or load from the cache) the coarse scene of `image`; write `out` when given.

    Keyword arguments: depth_backend, inpaint_backend, render_backend ("auto"), max_resolution
    (512), device, seed (0), fetch, out (Path), viewer, focal, fov, cache (a vd.cache.Cache),
    inpaint_options (offload, vram_budget in bytes, steps, guidance for flux-fill)."""
    with _deterministic():
        return _run_coarse(image, p, **kw)


def _run_coarse(image, p: CoarseParams | None = None, *, depth_backend: str = "auto", inpaint_backend: str = "auto",
               render_backend: str = "auto", max_resolution: int = 512, device: Optional[str] = None, seed: int = 0,
               fetch: bool = False, out: Optional[Path] = None, viewer=None, focal: Optional[float] = None,
               fov: Optional[float] = None, cache=None, inpaint_options: Optional[dict] = None) -> CoarseResult:
    """Build (or load from the cache) the coarse scene of `image`; write `out` when given."""
    import torch

    from vd import console
    from vd.cache import Cache, step_key
    from vd.gaussians import Gaussians
    from vd.holes import HoleScan
    from vd.image import load_image
    from vd.models import memory
    from vd.models.depth import get_depth_backend
    from vd.models.inpaint import get_inpaint_backend
    from vd.models.offload import configure
    from vd.paths import default_device
    from vd.render import resolve_backend

    p = p or CoarseParams()
    p.validate()
    t_start = time.perf_counter()
    dev = str(device or default_device())
    if dev.startswith("cuda") and not torch.cuda.is_available():
        from vd.errors import UsageError

        raise UsageError(f"--device {dev} was asked for but CUDA is not available; use --device cpu")
    rname = resolve_backend(render_backend, dev)
    init_iters, view_iters, auto = p.resolved_iters(dev)
    if auto:
        console.info(f"CPU run: using {init_iters} scaffold and {view_iters} per-view optimisation iterations "
                     f"(upstream GPU defaults are {GPU_ITERS[0]}/{GPU_ITERS[1]}; set --init-iters/--view-iters to override)")
    img = load_image(image, max_resolution)
    cache = cache if cache is not None else Cache.open()
    dback = get_depth_backend(depth_backend, image_path=img.path, focal=focal, fov=fov, device=dev, auto_fetch=fetch or None)
    need_inpaint = p.outpaint or p.n_frames > 2
    iback = (get_inpaint_backend(inpaint_backend, device=dev, auto_fetch=fetch or None, **(inpaint_options or {}))
             if need_inpaint else None)
    memory_plan = configure(dback, iback, device=dev, budget=(inpaint_options or {}).get("vram_budget"))
    memory.reset()

    # --- scaffold ---------------------------------------------------------------------------
    skey = scaffold_key(img.content_hash, p, depth_id=dback.identity, inpaint_id=iback.identity if (iback and p.outpaint) else None,
                        render_backend=rname, init_iters=init_iters, seed=seed, max_resolution=max_resolution)

    def compute_scaffold():
        from vd.stages.scaffold import build_scaffold

        console.info("scaffold: outpaint, depth, Gaussians, optimisation ..." if p.outpaint else "scaffold: depth, Gaussians, optimisation ...")
        s = build_scaffold(img.rgb, depth_backend=dback, inpaint_backend=iback, expansion=p.expansion, outpaint=p.outpaint,
                           init_iters=init_iters, seed=_seed_from_key(skey), render_backend=rname, device=dev,
                           image_plan=getattr(img, "plan", None), edge_times=p.edge_times)
        meta = {"counts": s.counts, "loss": s.loss, "depth_valid_fraction": s.depth_valid_fraction}
        return _frames_artifacts(s.frames, s.gaussians, meta), {"gaussians": len(s.gaussians)}

    with memory.track("scaffold", dev):
        rec, s_hit = cache.memoise(skey, compute_scaffold, stage="scaffold", image=str(img.path))
        frames, g_scaffold, smeta = _read_artifacts(rec, dev)
    for f in frames:
        _vlog(viewer, "log_frame", f.name, K=f.K, world_from_camera=f.world_from_camera, rgb=f.rgb, depth=f.depth,
              masks={"spawn": f.spawn, "hole": f.hole}, tab="scaffold")
    _vlog(viewer, "log_gaussians", "scaffold", g_scaffold)
    console.info(f"scaffold: {len(g_scaffold)} Gaussians from {len(frames)} frame(s)" + (" (cached)" if s_hit else f", loss {smeta.get('loss', float('nan')):.4f}"))

    # --- coarse loop ------------------------------------------------------------------------
    poses, radius = dense_poses(frames[0], p)
    lp = loop_params(p, view_iters, poses)
    parts = [g_scaffold]
    g_all = g_scaffold
    selected: list[int] = []
    stats: list[ViewStat] = []
    stopped = None
    prev = skey
    max_views = p.n_frames - 2
    Kc, Wc, Hc = candidate_camera(frames[0], p.margin)
    scan = None  # the hole scan of the growing scene, built at the first view not in the cache
    for k in range(1, max_views + 1):
        vkey = step_key(prev, "view", k, **lp)
        seed_k = _seed_from_key(vkey)

        def compute_view(k=k, seed_k=seed_k):
            nonlocal scan
            if scan is None:
                scan = HoleScan(poses, Kc, Wc, Hc, scale=p.scan_scale, tolerance=p.refine_tolerance, seed=seed,
                                device=g_all.means.device)
            for part in parts[scan.chunks:]:  # on resume: the scaffold and every cached view, in order
                scan.add(part)
            arts, meta = add_view(g_all, frames, poses, selected, k, p, scan=scan, depth_backend=dback, inpaint_backend=iback,
                                  render_backend=rname, device=dev, view_iters=view_iters, seed=seed_k)
            return arts, meta

        with memory.track(f"view {k}", dev):
            vrec, v_hit = cache.memoise(vkey, compute_view, stage="coarse-view", image=str(img.path))
            vframes, g_new, vmeta = _read_artifacts(vrec, dev)
        if vmeta.get("stopped"):
            stopped = vmeta.get("diagnostics", {})
            console.info(f"view {k}/{max_views}: no candidate selected; stopping" + (" (cached)" if v_hit else ""))
            for line in _diag_lines(stopped):
                console.info(f"  {line}")
            break
        st = ViewStat(**{**vmeta["stat"], "cached": v_hit})
        stats.append(st)
        selected.append(st.dense_index)
        frames = frames + vframes
        if g_new is not None and len(g_new):
            parts.append(g_new)
            g_all = Gaussians.cat(parts)
        f = vframes[0]
        _vlog(viewer, "log_frame", f.name, K=f.K, world_from_camera=f.world_from_camera, rgb=f.rgb, depth=f.depth,
              masks={"hole": f.hole, "spawn": f.spawn}, tab="coarse")
        tag = " (fallback: outside the band)" if st.fallback else ""
        console.info(f"view {k}/{max_views}: pose {st.dense_index}, hole ratio {st.hole_ratio:.3f}{tag}, "
                     f"+{st.added_gaussians} Gaussians" + (" (cached)" if v_hit else f", loss {st.final_loss:.4f}, {st.seconds:.1f} s"))
        prev = vkey
        if _after_view is not None:
            _after_view(k)
    _vlog(viewer, "log_gaussians", "coarse", g_all)

    summary = {
        "image": str(img.path), "size": [int(img.rgb.shape[1]), int(img.rgb.shape[0])], "device": dev,
        "backends": {"depth": dback.name, "inpaint": iback.name if iback else None, "render": rname},
        "memory_plan": memory_plan,
        "params": {**{k: v for k, v in asdict(p).items() if k not in ("init_iters", "view_iters")},
                   "radius_percentiles": list(p.radius_percentiles), "max_resolution": max_resolution, "seed": seed},
        "iters": {"init": init_iters, "view": view_iters, "cpu_auto": auto},
        "scene_radius": radius, "candidates": int(len(poses)), "candidate_size": [Wc, Hc],
        "scaffold": {"gaussians": len(g_scaffold), "frames": len([f for f in frames if f.kind != "view"]),
                     "loss": smeta.get("loss"), "cached": s_hit, "key": skey},
        "views": [asdict(s) for s in stats],
        "selected": len(stats), "max_views": max_views,
        "stopped": stopped,
        "totals": {"frames": len(frames), "gaussians_scaffold": len(g_scaffold), "gaussians_total": len(g_all),
                   "hole_pixels": int(sum(s.hole_pixels for s in stats)), "spawn_pixels": int(sum(s.spawn_pixels for s in stats)),
                   "added_gaussians": int(sum(s.added_gaussians for s in stats))},
        "memory": [m.to_json() for m in memory.records()],
        "seconds": time.perf_counter() - t_start,
    }
    for b in (dback, iback):
        if b is not None:
            b.release()
    result = CoarseResult(frames=frames, scaffold=g_scaffold, gaussians=g_all, summary=summary)
    if out is not None:
        from vd.stages.scene_io import write_outputs

        comments = {"source_image": img.content_hash, "stage": "coarse"}
        result.paths = write_outputs(Path(out), frames, g_scaffold, g_all, summary, comments=comments)
        summary["outputs"] = [str(x) for x in result.paths]
    return result


def _diag_lines(d: dict) -> list[str]:
    if not d:
        return []
    from vd.stages.select import Diagnostics

    dd = dict(d)
    dd["top"] = [tuple(x) for x in dd.get("top", [])]
    return Diagnostics(**dd).lines()


def print_summary(summary: dict) -> None:
    """The rich summary table on stderr: per view, totals, peak memory per stage."""
    from rich.table import Table

    from vd import console

    if console.is_quiet():
        return
    t = Table(title=f"coarse: {summary['selected']}/{summary['max_views']} views added ({summary['candidates']} candidates)")
    for col in ("view", "dense pose", "hole ratio", "hole px", "spawn px", "added Gaussians", "final loss", "cached"):
        t.add_column(col, justify="right")
    for v in summary["views"]:
        t.add_row(str(v["view"]), str(v["dense_index"]), f"{v['hole_ratio']:.3f}" + (" *" if v["fallback"] else ""),
                  str(v["hole_pixels"]), str(v["spawn_pixels"]), str(v["added_gaussians"]),
                  "-" if v["final_loss"] != v["final_loss"] else f"{v['final_loss']:.4f}", "yes" if v["cached"] else "no")
    tot = summary["totals"]
    t.add_section()
    t.add_row("total", "", "", str(tot["hole_pixels"]), str(tot["spawn_pixels"]), str(tot["added_gaussians"]), "", "")
    console.err.print(t)
    console.info(f"Gaussians: scaffold {tot['gaussians_scaffold']}, coarse {tot['gaussians_total']} ({tot['frames']} frames)"
                 + ("; * = chosen by --fallback closest" if any(v["fallback"] for v in summary["views"]) else ""))
    if summary.get("stopped"):
        d = summary["stopped"]
        console.info(f"stopped early: {d.get('reason', '')}")
        console.info(f"hint: {d.get('hint', '')}")
    mem = summary.get("memory") or []
    if mem:
        m = Table(title="peak memory per stage")
        for col in ("stage", "seconds", "peak VRAM", "peak RSS"):
            m.add_column(col, justify="right")
        for r in mem:
            m.add_row(r["stage"], f"{r['seconds']:.1f}", _fmt(r.get("peak_vram_bytes")), _fmt(r.get("peak_rss_bytes")))
        console.err.print(m)


def _fmt(n) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
