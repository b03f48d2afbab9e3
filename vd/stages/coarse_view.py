"""The coarse stage's added views: candidates, hole scan, selection, and one new view at a time
(docs/upstream.md#coarse-frame-selection).

`vd.stages.coarse` runs the loop; this module holds its steps. Loop (up to n_frames − 2 added views), over one
dense candidate trajectory of n_frames · dense_multiplier poses (or the poses of --trajectory FILE), rendered at
the input size + margin with the input focal and a centred principal point:

1. hole ratio of every candidate (`vd.holes.HoleScan`: alpha only, reduced resolution, updated
   with each view's new Gaussians; the close calls re-measured exactly at full size);
2. `vd.stages.select.select` (band, adjacency, fallback); nothing selected → diagnostics and stop;
3. render the chosen pose at full size; hole mask; inpaint the holes;
4. depth of the new view: the depth model on the inpainted image when it estimates novel views
   (MoGe), else `vd.align.complete_depth`'s far-side-first rule (the `file` backend); aligned to
   the rendered depth (`vd.align.align_depth`);
5. depth-edge pixels placed on their side (`vd.align.assign_edge_depth`); the hole pixels whose
   lifted point would hide a surface an earlier view sees are dropped
   (`vd.align.in_front_of_views`): new Gaussians go into true holes only, behind or beside the
   known geometry, never in front of what was right; spawn = supervise = hole ∧ ¬in front
   (∧ valid depth for spawn); new Gaussians from the spawn mask;
6. lift them as the scaffold does (`vd.stages.scaffold.lift_footprints`, nearly opaque),
   optimise the new Gaussians only (all earlier ones frozen) against all views, each over its
   supervised pixels (the input: all of them; the ring and added views: their generated pixels)
   and, weighted by `depth_weight`, against each view's depth where it spawned; then solve their
   colours against the new view (`vd.train.fit_colours`);
7. drop those that change the input camera's render (`out_of_sight`, `vd.unseen`): what the input
   view sees stays the scaffold's.

After the loop, `add_move_view` adds up to `move_views` views the same way (steps 3-7), each at the probe
move (LAYER_MOVE times the input's median depth along an axis or a diagonal, the input camera) that still
leaves the most pixels uncovered, while one leaves more than MOVE_UNCOVERED: what the trajectory's views
leave open depends on which candidates won the selection, and a user moves the camera as they like.

Last, `seal_moves`: the optimiser shrinks Gaussians along the axes a view foreshortens (it
sharpens that view at no cost the view can see), and a camera moved closer sees their rows part. The
gaps a move of LAYER_MOVE times the input's median depth opens are sealed by Gaussians behind them
(`vd.pinholes`), kept only where the canvas camera's render does not change. It runs once, on the
finished scene: sealing the scaffold instead put Gaussians the added views then rendered, inpainted
around and aligned their depth to (the street's novel-view depth error rose from 0.034 to 0.038).

Memoisation (`vd.stages.coarse` runs it and owns the keys): the scaffold and every added view are
separate cache entries; view k's key is `view_key(key of view k−1, k, ...)`, and a view entry stores only
that view and its (trained) Gaussians, which never change afterwards. A run killed after view k therefore resumes
at view k+1 with identical results, and a second identical run is all cache hits. Every random
choice is seeded from the entry's key.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from vd import cameras
from vd.align import align_depth, assign_edge_depth, complete_depth, in_front_of_views, spawn_edges
from vd.holes import hole_masks
from vd.models.depth import DepthBackend
from vd.models.inpaint import InpaintBackend
from vd.params import CoarseParams
from vd.render import render
from vd.stages.scaffold import LAYER_MOVE, LIFT_OPACITY, lift_footprints
from vd.stages.select import candidates_to_refine, diagnose, select
from vd.trajectory_file import load_trajectory
from vd.views import View, encode_record

EXACT_BATCH = 8  # close calls measured exactly per round of scan_ratios
MOVE_UNCOVERED = 0.0005  # share of the input camera's pixels a probe move may leave uncovered (add_move_view)
VIEW_COLOUR_FIT_ITERS = 3  # before and after the optimisation; each iteration renders the whole scene at the view


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
    move: Optional[int] = None  # a view at a probe move (`add_move_view`): its index in `move_poses`; dense_index -1


class CoarseResult:
    """What `run_coarse` returns: the summary, the written paths, and the scene: the views, the
    scaffold's Gaussians and all Gaussians (scaffold + every added view). A run served whole from the
    cache (`vd.stages.coarse.RUN_STAGE`) reads the scene from its output folder when first asked."""

    def __init__(
        self,
        summary: dict,
        paths: Optional[list[Path]] = None,
        *,
        views: Optional[list[View]] = None,
        scaffold: object = None,
        gaussians: object = None,
        folder: Optional[Path] = None,
    ):
        self.summary = summary
        self.paths = list(paths or [])
        self._scene = (views, scaffold, gaussians) if folder is None else None
        self._folder = folder

    def _read(self) -> tuple:
        if self._scene is None:
            from vd.stages.coarse_folder import read_coarse_folder

            assert self._folder is not None
            scene = read_coarse_folder(self._folder)
            self._scene = (scene.views, scene.scaffold, scene.gaussians)
        return self._scene

    @property
    def views(self) -> list[View]:
        return self._read()[0]

    @property
    def scaffold(self):
        return self._read()[1]

    @property
    def gaussians(self):
        return self._read()[2]


# ---------------------------------------------------------------------------------------------
# candidates


def seal_moves(g, views: list[View], render_backend: str):
    """The Gaussians that seal the pinholes a move of LAYER_MOVE times the input's median depth opens
    (`vd.pinholes`), and those a turn of the canvas camera by the canvas's reach beyond the input opens (the
    seam where the canvas's edge meets what the added views lifted past it: room, a turn of 8 degrees left,
    0.45 % of the view below alpha 0.9 along it), out of sight of the widest view at the input's pose (the
    ring's canvas, else the input). `views[0]` is the input view, at the identity pose."""
    from vd.pinholes import probe_poses, seal_pinholes, turn_poses

    d = views[0].depth[np.isfinite(views[0].depth) & (views[0].depth > 0)]
    if d.size == 0:
        return g.select(np.zeros(0, dtype=np.int64))
    camera = canvas_camera(views)
    poses = probe_poses(LAYER_MOVE * float(np.median(d)))
    yaw, pitch = canvas_reach(views)
    if yaw > 0 or pitch > 0:
        poses += turn_poses(yaw, pitch)
    return seal_pinholes(g, poses, *camera[1:], backend=render_backend, keep_from=camera)


def canvas_reach(views: list[View]) -> tuple[float, float]:
    """(horizontal, vertical) degrees the canvas reaches beyond the input's edges (its narrower side; 0
    without a ring)."""
    _, Kc, Wc, Hc = canvas_camera(views)
    photo = views[0]
    K = np.asarray(photo.K, dtype=np.float64)

    def beyond(k: np.ndarray, size: int, axis: int) -> float:
        f, c = k[axis, axis], k[axis, 2]
        return min(np.degrees(np.arctan(c / f)), np.degrees(np.arctan((size - c) / f)))

    return (
        max(0.0, beyond(Kc, Wc, 0) - beyond(K, photo.width, 0)),
        max(0.0, beyond(Kc, Hc, 1) - beyond(K, photo.height, 1)),
    )


def canvas_camera(views: list[View]):
    """(pose, K, width, height) of the widest view at the input's pose: the ring's canvas, else the input."""
    widest = next((v for v in views if v.kind == "ring"), views[0])
    return np.eye(4), np.asarray(widest.K, dtype=np.float64), widest.width, widest.height


def candidate_camera(input_view: View, margin: int):
    return cameras.candidate_intrinsics(input_view.K, input_view.width, input_view.height, margin)


def dense_poses(input_view: View, p: CoarseParams) -> tuple[np.ndarray, float]:
    """The candidate poses [N, 4, 4] and the scene radius (over the input's spawned pixels)."""
    spawn = input_view.spawn
    valid = spawn if spawn is not None and spawn.sum() >= 3 else input_view.depth > 0
    radius = cameras.scene_radius(input_view.depth, input_view.K, valid, p.radius_percentiles)
    if p.trajectory_file:
        return load_trajectory(p.trajectory_file), radius
    n = p.n_frames * p.dense_multiplier
    poses = cameras.trajectory(
        p.traj,
        n,
        radius,
        forward_ratio=p.forward_ratio,
        backward_ratio=p.backward_ratio,
        width=input_view.width,
        height=input_view.height,
    )
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
    t0 = time.perf_counter()
    ratios = scan.fast_ratios()
    tol = np.full(len(ratios), float(p.refine_tolerance) if not scan.exact_only else 0.0)
    known = scan.exact_indices
    if known and not scan.exact_only:
        ratios[known] = scan.exact_ratios(known)
        tol[known] = 0.0
    kw: dict[str, Any] = dict(
        min_ratio=p.min_ratio, max_ratio=p.max_ratio, adjacent_exclusion=p.adjacent_exclusion, fallback=p.fallback
    )
    while tol.any():
        idx = candidates_to_refine(ratios, selected, tolerance=tol, **kw)
        if len(idx) == 0:
            break
        # the strongest contenders first: their exact ratios often settle the rest
        idx = idx[np.argsort(-(ratios[idx] + tol[idx]), kind="stable")][:EXACT_BATCH]
        ratios[idx] = scan.exact_ratios(idx)
        tol[idx] = 0.0
    return ratios, int((tol == 0).sum()) if not scan.exact_only else len(ratios), time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# one added view


@dataclass
class LoopContext:
    """What every added view needs: the candidates, the backends and the run's settings."""

    poses: np.ndarray
    p: CoarseParams
    depth_backend: DepthBackend
    inpaint_backend: Optional[InpaintBackend]  # None only without added views
    render_backend: str
    device: str
    view_iters: int


def add_view(
    g_all, views: list[View], selected: list[int], k: int, ctx: LoopContext, *, scan, seed: int, progress=None
):
    """One iteration of the loop: pick a pose, make its view, train its Gaussians. Returns the
    cache artifacts (the view, its Gaussians, the selection meta) and the record meta. `progress` is
    the training's (`train_new_view`)."""
    p = ctx.p
    t0 = time.perf_counter()
    ratios, n_exact, scan_s = scan_ratios(scan, selected, p)
    band: dict[str, Any] = dict(
        min_ratio=p.min_ratio, max_ratio=p.max_ratio, adjacent_exclusion=p.adjacent_exclusion, fallback=p.fallback
    )
    sel = select(ratios, selected, **band)
    base_meta = {"view": k, "ratios": [round(float(r), 6) for r in ratios], "scan_seconds": scan_s, "exact": n_exact}
    if sel is None:
        meta = dict(base_meta, stopped=True, diagnostics=diagnose(ratios, selected, **band).to_dict())
        return encode_record([], None, meta), {"stopped": True}
    view = make_view(g_all, views, ctx.poses[sel.index], int(sel.index), k, ctx, seed)
    new_g, loss = train_new_view(g_all, views, view, ctx, seed, progress=progress)
    assert view.hole is not None and view.spawn is not None, "make_view sets every mask"
    stat = ViewStat(
        view=k,
        dense_index=int(sel.index),
        hole_ratio=float(view.hole.mean()),
        hole_pixels=int(view.hole.sum()),
        spawn_pixels=int(view.spawn.sum()),
        added_gaussians=int(len(new_g)),
        final_loss=loss,
        fallback=bool(sel.fallback),
        cached=False,
        seconds=time.perf_counter() - t0,
        scan_ratio=float(sel.ratio),
    )
    meta = dict(base_meta, stopped=False, scan_ratio=float(sel.ratio), stat=asdict(stat))
    return encode_record([view], new_g, meta), {"stopped": False}


def move_poses(views: list[View]) -> list[np.ndarray]:
    """The probe moves of the coverage check: LAYER_MOVE times the input's median depth along each camera
    axis and diagonal (`vd.pinholes.probe_poses`), the input's orientation kept."""
    from vd.pinholes import probe_poses

    d = views[0].depth[np.isfinite(views[0].depth) & (views[0].depth > 0)]
    return probe_poses(LAYER_MOVE * float(np.median(d))) if d.size else []


def uncovered_shares(g_all, views: list[View], poses: list[np.ndarray], render_backend: str) -> np.ndarray:
    """[len(poses)]: the share of the input camera's pixels at each pose that nothing covers (alpha < 0.5) and
    that a view would inpaint (`vd.holes.hole_masks`: cracks narrower than its erosion are the seal's)."""
    import torch

    photo = views[0]
    dev = g_all.means.device
    vms = torch.as_tensor(np.stack([cameras.invert_pose(p) for p in poses]), dtype=torch.float32, device=dev)
    Ks = torch.as_tensor(photo.K, dtype=torch.float32, device=dev)[None].expand(len(poses), 3, 3)
    with torch.no_grad():
        alpha = render(g_all, vms, Ks, photo.width, photo.height, backend=render_backend).alpha
    return ((alpha < 0.5) & hole_masks(alpha)).float().mean(dim=(1, 2)).cpu().numpy()


def add_move_view(
    g_all, views: list[View], k: int, ctx: LoopContext, *, seed: int, taken: tuple[int, ...] = (), progress=None
):
    """One view after the trajectory's: at the probe move (`move_poses`, but those `taken` by earlier move
    views) that leaves the most of the input camera's pixels uncovered, while that is more than
    MOVE_UNCOVERED of them. The trajectory's views are
    chosen by their hole ratios at the candidate poses, which need not be the moves a user makes; what any
    move of LAYER_MOVE still uncovers is filled here (issue 26: the street with model-like depth kept a crack
    3 % of the view wide at a move back, or not, depending on which views the trajectory's selection took).
    Returns the cache artifacts and the record meta, as `add_view` (`progress` too)."""
    t0 = time.perf_counter()
    poses = move_poses(views)
    shares = uncovered_shares(g_all, views, poses, ctx.render_backend) if poses else np.zeros(0)
    base_meta = {"view": k, "move_shares": [round(float(x), 6) for x in shares]}
    open_ = np.where(np.isin(np.arange(len(shares)), list(taken)), 0.0, shares)
    if open_.size == 0 or float(open_.max()) <= MOVE_UNCOVERED:
        return encode_record([], None, dict(base_meta, stopped=True)), {"stopped": True}
    best = int(np.argmax(open_))
    view = make_view(g_all, views, poses[best], None, k, ctx, seed)
    new_g, loss = train_new_view(g_all, views, view, ctx, seed, progress=progress)
    assert view.hole is not None and view.spawn is not None, "make_view sets every mask"
    stat = ViewStat(
        view=k,
        dense_index=-1,
        hole_ratio=float(view.hole.mean()),
        hole_pixels=int(view.hole.sum()),
        spawn_pixels=int(view.spawn.sum()),
        added_gaussians=int(len(new_g)),
        final_loss=loss,
        fallback=False,
        cached=False,
        seconds=time.perf_counter() - t0,
        scan_ratio=float(shares[best]),
        move=best,
    )
    meta = dict(base_meta, stopped=False, stat=asdict(stat))
    return encode_record([view], new_g, meta), {"stopped": False}


def make_view(
    g_all, views: list[View], pose: np.ndarray, dense_index: Optional[int], k: int, ctx: LoopContext, seed: int
) -> View:
    """Render the scene at `pose`, inpaint its holes, give it depth aligned to the scene, and mark
    what it supervises and spawns: its holes, less what would hide a surface an earlier view sees."""
    import torch

    Kc, Wc, Hc = candidate_camera(views[0], ctx.p.margin)
    torch.manual_seed(seed)
    with torch.no_grad():
        dev = g_all.means.device
        vm = torch.as_tensor(cameras.invert_pose(pose), dtype=torch.float32, device=dev)[None]
        res = render(
            g_all, vm, torch.as_tensor(Kc, dtype=torch.float32, device=dev)[None], Wc, Hc, backend=ctx.render_backend
        )
        alpha = res.alpha[0].float()
        hole = hole_masks(alpha).cpu().numpy()
        rgb_r = (res.rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        depth_r = res.depth[0].float().cpu().numpy()
        alpha_np = alpha.cpu().numpy()
    assert ctx.inpaint_backend is not None, "added views need an inpaint backend"
    inpainted = np.asarray(ctx.inpaint_backend.inpaint(rgb_r, hole, seed=seed), dtype=np.uint8) if hole.any() else rgb_r
    unknown = hole | (alpha_np < 0.5) | ~np.isfinite(depth_r) | (depth_r <= 0)
    aligned, valid = new_view_depth(
        inpainted, np.where(unknown, 0.0, depth_r).astype(np.float32), unknown, Kc, ctx.depth_backend
    )
    aligned = assign_edge_depth(aligned, spawn_edges(aligned, valid, times=ctx.p.edge_times), valid)
    # the hole mask reaches ~4 px into covered pixels (so inpainting overlaps the seam): Gaussians
    # there would duplicate known surfaces with inpainted colours, so only uncovered pixels are new
    open_ = hole & (alpha_np < 0.5)
    new = open_ & ~in_front_of_views(aligned, Kc, pose, views, open_)
    return View(
        name=f"view_{k:02d}",
        kind="view",
        rgb=inpainted,
        depth=aligned.astype(np.float32),
        K=np.asarray(Kc, dtype=np.float32),
        world_from_camera=np.asarray(pose, dtype=np.float64),
        supervise=new,
        spawn=new & valid,
        hole=hole,
        dense_index=dense_index,
    )


def new_view_depth(rgb: np.ndarray, render_known: np.ndarray, unknown: np.ndarray, K, depth_backend):
    """(depth aligned to the rendered depth, valid) for a new view: the depth model's estimate
    when it estimates novel views (MoGe), else the rendered depth completed into the unknown pixels."""

    H, W = unknown.shape
    if getattr(depth_backend, "estimates_novel_views", True):
        dr = depth_backend.estimate(rgb, K_hint=np.asarray(K, dtype=np.float32))
        pred: np.ndarray = np.asarray(dr.depth, dtype=np.float32)
        valid = np.asarray(dr.valid, dtype=bool)
        if pred.shape != unknown.shape:
            import cv2

            pred = cv2.resize(pred, (W, H), interpolation=cv2.INTER_NEAREST)
            valid = cv2.resize(valid.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    else:
        # the flat far-side-first rule: planes carried across the holes (mostly disocclusions) cost the
        # street's added views depth and coverage (bench/quality.md, "The `file` backend's ring continued as planes")
        pred = complete_depth(render_known, unknown, planes=False)
        valid = np.ones_like(unknown)
    aligned = align_depth(render_known, pred, unknown)
    return aligned, valid & np.isfinite(aligned) & (aligned > 0)


def train_new_view(g_all, views: list[View], view: View, ctx: LoopContext, seed: int, progress=None):
    """(the new view's Gaussians, final loss): lifted from its spawn mask, then optimised against
    every view with all earlier Gaussians frozen; `progress(iteration, loss)` is the optimiser's."""
    import torch

    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd
    from vd.train import fit_colours, optimise

    valid = np.isfinite(view.depth) & (view.depth > 0)
    footprint = lift_footprints(view.depth, spawn_edges(view.depth, valid, times=ctx.p.edge_times), valid)
    new_g = gaussians_from_rgbd(
        view.rgb,
        view.depth,
        view.K,
        view.world_from_camera.astype(np.float32),
        view.spawn,
        footprint=footprint,
        opacity=LIFT_OPACITY,
    ).to(g_all.means.device)
    if len(new_g) == 0 or ctx.view_iters <= 0:
        return out_of_sight(new_g, g_all, views, ctx.render_backend), float("nan")
    g2 = Gaussians.cat([g_all, new_g])
    trainable = torch.zeros(len(g2), dtype=torch.bool, device=g2.means.device)
    trainable[len(g_all) :] = True
    dw = float(ctx.p.depth_weight)
    targets = [v.train_view(ctx.device, depth=dw > 0) for v in views + [view]]
    fit_colours(g2, targets[-1:], VIEW_COLOUR_FIT_ITERS, trainable=trainable, backend=ctx.render_backend)
    rep = optimise(
        g2,
        targets,
        int(ctx.view_iters),
        trainable=trainable,
        seed=seed,
        backend=ctx.render_backend,
        depth_weight=dw,
        alpha_weight=float(ctx.p.alpha_weight),
        progress=progress,
    )
    fit_colours(g2, targets[-1:], VIEW_COLOUR_FIT_ITERS, trainable=trainable, backend=ctx.render_backend)
    new_g = g2.select(torch.arange(len(g_all), len(g2), device=g2.means.device))
    return out_of_sight(new_g, g_all, views, ctx.render_backend), float(rep.final_loss)


def out_of_sight(new_g, g_all, views: list[View], render_backend: str):
    """The new view's Gaussians that leave the input camera's render of the scene as it was (`vd.unseen`):
    spawned behind or beside what the earlier views see, some still reach into the input view once
    trained (a Gaussian stretched along a slope the new view sees at a grazing angle; the street's added
    views cost its input view up to 0.2 dB that way). Those are dropped: the input view stays the scaffold's.
    The ring's canvas is not protected: a surface continued past its edge (the street's road, below it)
    reaches into its border, and dropping that opened a crack 3 % of the view wide at a move back."""
    from vd.unseen import unseen_by

    if len(new_g) == 0:
        return new_g
    photo = views[0]
    camera = (np.eye(4), np.asarray(photo.K, dtype=np.float64), photo.width, photo.height)
    keep, _ = unseen_by(camera, g_all, render_backend)(new_g, [])
    return new_g.select(keep)
