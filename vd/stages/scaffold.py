"""The scaffold: outpainted canvas, depth, input and ring views, initial Gaussians
(docs/upstream.md#scaffold).

1. Canvas: the normalised input padded **symmetrically** by `pad_x = 8·round(W·expansion/2/8)`
   per side left/right (likewise top/bottom), so the canvas is W + 2·pad_x wide (a multiple of
   16 when W is, as FLUX needs) and ≈ W·(1 + expansion). Where the input's camera is known before
   outpainting (`input_camera`), a side's padding widens until the canvas reaches `reach` degrees
   beyond the input's edge (`canvas_padding`): 15 % of a side is 6–7° on a phone's photo but
   1.5° on a 19° telephoto shot, whose views a few degrees off the input looked past the canvas.
   Symmetric padding keeps one principal point for input and canvas: K_canvas = K_input shifted by (pad_x, pad_y)
   (upstream pads asymmetrically and so shifts them by 4–7 px:
   docs/upstream.md#symmetric-outpaint-padding). The ring (canvas minus the input rectangle) is
   outpainted by the inpaint backend; the input pixels are kept exactly.
2. Depth on the canvas: a model that estimates novel views (MoGe) runs once on the canvas and
   the input frame is its crop. The `file` backend knows the input only: its depth is used for
   the input and extended into the ring by `vd.align.complete_depth` (surfaces continued as planes).
3. Views: input (identity pose, supervises and spawns every pixel of valid depth) and ring (the
   canvas camera, same pose; supervises and spawns the ring ∧ valid). Depth-edge pixels
   (`vd.align.spawn_edges`: discontinuities, not smooth slopes) spawn too, on the surface they
   belong to (`vd.align.assign_edge_depth`): upstream left them out, which leaves a dark
   outline around every discontinuity (docs/upstream.md#depth-edges).
4. Gaussians from both views (`vd.lift`: nearly opaque, 0.7 of a pixel spacing wide, 0.25 on
   the near side of a depth jump, `lift_footprints`, so they do not tint the surface behind
   them), their colours solved so that the overlapping Gaussians reproduce the images
   (`vd.train.fit_colours`), optimised together for `init_iters` iterations against the images
   and, weighted by `depth_weight`, against the depth they were placed at (so the photometric
   loss cannot slide them along their rays) and, weighted by `alpha_weight`, against any pixel's
   alpha falling below 0.99 (`vd.train.coverage_loss`: no pinholes), and their colours solved again.
5. A hidden layer (`hidden_background`): the farther surface continued a few pixels under the
   near side of every depth jump, just behind the surface it continues, so that it cannot show at
   the input view. A camera that moves uncovers strips behind every edge and magnifies the near
   side, opening gaps along its outline; this layer fills them with the surface that continues
   there (as a layered depth image does) before any view has to be inpainted. It reaches
   BACKGROUND_BAND of the canvas under every jump, and farther where a move of LAYER_MOVE times the
   median depth would uncover more (f·move·(1/z_near − 1/z_far) pixels). It is not
   optimised here (no view sees it yet); `vd fine` and `vd refine` train it where their views do.

`--no-outpaint` skips 1 and keeps the input view only.

The runner, `run_scaffold`, memoises the result under `scaffold_key` (this module's STAGE and
VERSION, the parameters `vd.params.key_params(p, "scaffold")`, the image, the models, the
renderer and the seed) and shows it in the viewer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vd import console
from vd.align import assign_edge_depth, background_behind_edges, complete_depth, occluding_pixels, spawn_edges
from vd.cache import Cache, stage_key
from vd.image import LoadedImage
from vd.models import memory
from vd.params import CoarseParams, key_params
from vd.stages.runner import StageViewer, seed_from_key
from vd.viewer import log_view
from vd.views import View, decode_record, encode_record

log = logging.getLogger(__name__)

STAGE = "scaffold"
VERSION = 11  # 2: edge pixels spawn (assigned to a side), depth term; 3: colour fit, opaque lift, edge footprint;
# 4: hidden background layer behind depth edges; 5: a second hidden layer behind the first; 6: not past 3× its depth;
# 7: the colour fit steps over both views at once (it diverged along the ring's border); the lift takes a steep
# smooth slope for a surface, not an edge (vd.lift.SLOPE_STEP_RATIO, max_stretch 10); 8: the canvas reaches
# `reach` degrees beyond the input where its camera is known; the hidden layers reach as far as a move of
# LAYER_MOVE uncovers each jump; 9: the `file` backend's depth continues into the ring as planes
# (vd.align.continue_planes), not as a flat copy of the border's depth; 10: Gaussians beyond 10x the median distance
# from the cameras keep their normal (vd.train.FIXED_ORIENTATION_BEYOND); 11: the colour fit keeps a Gaussian on a
# depth edge within vd.train.MIXED_COLOUR_STEP of its colour (no complementary outline at other views)
LIFT_FOOTPRINT = 0.7  # Gaussians' extent in pixel spacings (vd.lift): sharper input views than 1.0, as much coverage
EDGE_FOOTPRINT = 0.25  # on the near side of a depth jump: no tint on the surface behind it
# nearly opaque: what a later view adds behind a surface must not show through it (at 0.8, 1–3 %
# of a 400 m sky behind a 20 m facade moved the facade's rendered depth by 20–60 %)
LIFT_OPACITY = 0.99
COLOUR_FIT_ITERS = 6  # vd.train.fit_colours iterations before and after the optimisation
# how far the hidden background layer reaches under the near side of a depth jump
# (vd.align.background_behind_edges), as a fraction of the canvas's larger side: 5 px at 166
# (the evaluation's 128×96 canvas); 0.015 covers as much there, 0.05 no more
BACKGROUND_BAND = 0.03
# ... and farther where a move uncovers more (issue 26: a seat 2.1 m before a floor at 3.5 m opens 15 px
# behind it at a move of 10 % of the median depth, against the 7 px band): as far as a move of LAYER_MOVE
# times the canvas's median depth opens the jump, at most MAX_BACKGROUND_BAND of the larger side
LAYER_MOVE = 0.15
MAX_BACKGROUND_BAND = 0.12
# the second hidden layer only where it lies within this factor of the first's depth: a far sky kept
# behind a facade's continuation leaks into the facade's rendered depth at moved views (street, 20 m
# before 400 m: seen AbsRel .030 -> .041 without the bound) while the crack it fills is a leaf's width
SECOND_LAYER_MAX_RATIO = 3.0
MAX_PAD_FRACTION = 0.5  # of a side, per side: the canvas is at most twice the input along each axis


def scaffold_key(
    image_hash: str,
    p: CoarseParams,
    *,
    depth_id: str,
    inpaint_id: Optional[str],
    render_backend: str,
    seed: int,
    max_resolution: int,
) -> str:
    """The scaffold's cache key; `p` with its iteration counts resolved (`CoarseParams.resolved`)."""
    return stage_key(
        stage=STAGE,
        version=VERSION,
        params={**key_params(p, STAGE), "max_resolution": max_resolution},
        inputs={"image": image_hash},
        models={"depth": depth_id, "inpaint": inpaint_id},
        backend=render_backend,
        dtype="float32",
        seed=seed,
    )


def key_of_run(
    img: LoadedImage,
    p: CoarseParams,
    *,
    depth_backend,
    inpaint_backend,
    render_backend: str,
    seed: int,
    max_resolution: int,
) -> str:
    """`scaffold_key` of a run's image and backends; `p` resolved."""
    use_inpaint = inpaint_backend is not None and p.outpaint
    return scaffold_key(
        img.content_hash,
        p,
        depth_id=depth_backend.identity,
        inpaint_id=inpaint_backend.identity if use_inpaint else None,
        render_backend=render_backend,
        seed=seed,
        max_resolution=max_resolution,
    )


@dataclass
class ScaffoldRecord:
    """The scaffold as `run_scaffold` returns it: read from the cache or just computed."""

    key: str
    hit: bool
    views: list[View]  # input (+ ring)
    gaussians: object  # vd.gaussians.Gaussians on the run's device
    meta: dict  # counts, hidden, loss, depth_valid_fraction


def run_scaffold(
    img: LoadedImage,
    p: CoarseParams,
    *,
    depth_backend,
    inpaint_backend,
    render_backend: str,
    device: str,
    seed: int,
    max_resolution: int,
    cache: Cache,
    viewer: StageViewer,
) -> ScaffoldRecord:
    """The scaffold of `img` (memoised), logged to the viewer's scaffold tab; a computed one shows a bar of
    its optimisation."""
    p = p.resolved(device)
    key = key_of_run(
        img,
        p,
        depth_backend=depth_backend,
        inpaint_backend=inpaint_backend,
        render_backend=render_backend,
        seed=seed,
        max_resolution=max_resolution,
    )

    def compute():
        log.info(
            "scaffold: outpaint, depth, Gaussians, optimisation ..."
            if p.outpaint
            else "scaffold: depth, Gaussians, optimisation ..."
        )
        with console.Bar("coarse: scaffold fit", int(p.init_iters or 0)) as bar:
            s = build_scaffold(
                img.rgb,
                depth_backend=depth_backend,
                inpaint_backend=inpaint_backend,
                expansion=p.expansion,
                reach=p.reach,
                outpaint=p.outpaint,
                init_iters=int(p.init_iters or 0),
                seed=seed_from_key(key),
                render_backend=render_backend,
                device=device,
                image_plan=img.plan,
                edge_times=p.edge_times,
                depth_weight=p.depth_weight,
                alpha_weight=p.alpha_weight,
                progress=lambda iteration, _: bar.update(iteration + 1),
            )
        meta = {"counts": s.counts, "hidden": s.hidden, "loss": s.loss, "depth_valid_fraction": s.depth_valid_fraction}
        return encode_record(s.views, s.gaussians, meta), {"gaussians": len(s.gaussians)}

    with memory.track("scaffold", device):
        rec, hit = cache.memoise(key, compute, stage=STAGE, image=str(img.path))
        views, g, meta = decode_record(rec, device)
    for v in views:
        log_view(viewer, v, "scaffold")
    viewer.log_gaussians("scaffold", g)
    hidden = meta.get("hidden", 0)
    log.info(
        f"scaffold: {len(g)} Gaussians from {len(views)} view(s)"
        + (f", {hidden} of them behind depth edges" if hidden else "")
        + (" (cached)" if hit else "" if meta.get("loss") is None else f", loss {meta['loss']:.4f}")
    )
    return ScaffoldRecord(key=key, hit=hit, views=views, gaussians=g, meta=meta)


def canvas_padding(
    width: int, height: int, expansion: float, *, K: Optional[np.ndarray] = None, reach: float = 0.0
) -> tuple[int, int]:
    """Per-side padding (pad_x, pad_y) in pixels, multiples of 8: `expansion`'s share of each side
    (a total fraction; 0: no canvas), widened where the input's camera `K` is known until the canvas
    reaches `reach` degrees beyond each edge of the input, at most MAX_PAD_FRACTION of the side."""
    if expansion <= 0:
        return 0, 0
    px = max(8 * int(round(width * expansion / 2 / 8)), 8)
    py = max(8 * int(round(height * expansion / 2 / 8)), 8)
    if K is None or reach <= 0:
        return px, py
    K = np.asarray(K, dtype=np.float64)

    def reaching(side: int, focal: float, centre: float, pad: int) -> int:
        half = max(centre, side - centre)  # symmetric padding: the edge farther from the principal point
        edge = math.atan(half / focal) + math.radians(reach)
        need = focal * math.tan(min(edge, math.radians(89.0))) - half
        most = 8 * int(MAX_PAD_FRACTION * side // 8)
        return max(pad, min(8 * math.ceil(need / 8), most))

    return reaching(width, float(K[0, 0]), float(K[0, 2]), px), reaching(height, float(K[1, 1]), float(K[1, 2]), py)


def input_camera(rgb: np.ndarray, depth_backend, image_plan=None) -> np.ndarray:
    """The input's K before any outpainting: what the backend knows without a model pass
    (`known_K`: a given focal, field of view or intrinsics), else its estimate on the input
    (the `file` backend reads its intrinsics; a model runs once on the input)."""
    H, W = rgb.shape[:2]
    known = getattr(depth_backend, "known_K", None)
    if known is not None:
        K = known(W, H, plan=image_plan)
        if K is not None:
            return np.asarray(K, dtype=np.float64)
    kw = {"plan": image_plan} if image_plan is not None else {}
    return np.asarray(depth_backend.estimate(rgb, **kw).K, dtype=np.float64)


@dataclass
class ScaffoldResult:
    views: list[View]  # input (+ ring)
    gaussians: object  # Gaussians (all frames, optimised)
    counts: list[int]  # Gaussians per view, in view order
    hidden: int  # Gaussians of the layer behind depth edges (after the views')
    loss: float
    depth_valid_fraction: float


def build_scaffold(
    rgb: np.ndarray,
    *,
    depth_backend,
    inpaint_backend=None,
    expansion: float = 0.3,
    reach: float = 0.0,
    outpaint: bool = True,
    init_iters: int = 100,
    seed: int = 0,
    render_backend: str = "auto",
    device: str = "cpu",
    image_plan=None,
    edge_times: float = 0.05,
    depth_weight: float = 0.0,
    alpha_weight: float = 0.0,
    progress=None,
) -> ScaffoldResult:
    """Compute the scaffold from an RGB uint8 [H, W, 3] image (see the module docstring); `progress(iteration,
    loss)` is its optimiser's."""
    import torch

    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd
    from vd.train import fit_colours, optimise

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    H, W = rgb.shape[:2]
    px, py = (0, 0)
    if outpaint and expansion > 0:
        K_input = input_camera(rgb, depth_backend, image_plan) if reach > 0 else None
        px, py = canvas_padding(W, H, expansion, K=K_input, reach=reach)
        if K_input is not None and (px, py) != canvas_padding(W, H, expansion):
            log.info(f"scaffold: canvas {W + 2 * px}x{H + 2 * py}, widened to reach {reach:g}° beyond the input")
    use_ring = outpaint and (px > 0 or py > 0)
    inner = (slice(py, py + H), slice(px, px + W))
    ring = np.ones((H + 2 * py, W + 2 * px), dtype=bool)
    ring[inner] = False
    canvas = outpaint_canvas(rgb, ring, inner, inpaint_backend, seed) if use_ring else rgb
    depth_c, valid_c, K_in, K_c = canvas_depth(rgb, canvas, ring, inner, depth_backend, image_plan, use_ring)
    edges_c = spawn_edges(depth_c, valid_c, times=edge_times)
    depth_c = assign_edge_depth(depth_c, edges_c, valid_c)
    footprint_c = lift_footprints(depth_c, edges_c, valid_c)

    eye = np.eye(4)
    d_in, v_in = depth_c[inner].copy(), valid_c[inner].copy()
    views = [
        View(
            name="input",
            kind="input",
            rgb=rgb,
            depth=d_in,
            K=K_in.astype(np.float32),
            world_from_camera=eye,
            supervise=np.ones((H, W), dtype=bool),
            spawn=v_in,
            hole=np.zeros((H, W), dtype=bool),
        )
    ]
    if use_ring:
        views.append(
            View(
                name="ring",
                kind="ring",
                rgb=canvas,
                depth=depth_c,
                K=K_c.astype(np.float32),
                world_from_camera=eye.copy(),
                supervise=ring.copy(),
                spawn=ring & valid_c,
                hole=ring.copy(),
            )
        )

    footprints = [footprint_c[inner]] + ([footprint_c] if use_ring else [])
    parts = [
        gaussians_from_rgbd(
            v.rgb,
            v.depth,
            v.K.astype(np.float32),
            v.world_from_camera.astype(np.float32),
            v.spawn,
            footprint=fp,
            opacity=LIFT_OPACITY,
        )
        for v, fp in zip(views, footprints, strict=False)
    ]
    g = Gaussians.cat(parts).to(device)
    torch.manual_seed(int(seed))
    targets = [v.train_view(device, depth=depth_weight > 0) for v in views]
    fit_colours(g, targets, COLOUR_FIT_ITERS, backend=render_backend)
    rep = optimise(
        g,
        targets,
        int(init_iters),
        seed=int(seed),
        backend=render_backend,
        depth_weight=depth_weight,
        alpha_weight=alpha_weight,
        progress=progress,
    )
    hidden = hidden_background(canvas, depth_c, edges_c, valid_c, K_c)
    visible = torch.ones(len(g) + len(hidden), dtype=torch.bool, device=g.means.device)
    visible[len(g) :] = False
    g = Gaussians.cat([g, hidden.to(device)])
    # the optimiser's first steps blur colours again; the hidden layer stays the colour it continues
    fit_colours(g, targets, COLOUR_FIT_ITERS, trainable=visible, backend=render_backend)
    return ScaffoldResult(
        views=views,
        gaussians=g,
        counts=[len(p) for p in parts],
        hidden=len(hidden),
        loss=float(rep.final_loss),
        depth_valid_fraction=float(valid_c[inner].mean()),
    )


def hidden_background(canvas: np.ndarray, depth: np.ndarray, edges: np.ndarray, valid: np.ndarray, K: np.ndarray):
    """Gaussians of the farther surfaces continued behind the near side of each depth jump
    (`hidden_layers`), hidden at the input view and revealed when the camera moves."""
    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd

    band = int(round(BACKGROUND_BAND * max(depth.shape)))
    max_band = int(round(MAX_BACKGROUND_BAND * max(depth.shape)))
    parallax = float(K[0, 0]) * LAYER_MOVE * float(np.median(depth[valid & (depth > 0)]))
    parts = [
        gaussians_from_rgbd(rgb, d, K.astype(np.float32), mask=m, footprint=LIFT_FOOTPRINT, opacity=LIFT_OPACITY)
        for m, d, rgb in hidden_layers(
            canvas.astype(np.float32) / 255.0, depth, edges, valid, band, parallax=parallax, max_band=max_band
        )
    ]
    return Gaussians.cat(parts)


def hidden_layers(
    colour: np.ndarray,
    depth: np.ndarray,
    edges: np.ndarray,
    valid: np.ndarray,
    band: int,
    *,
    parallax: float = 0.0,
    max_band: int | None = None,
):
    """[(mask, depth, colour)] of two hidden layers, `band` pixels each: the farther surface continued
    under the near side of each jump (`vd.align.background_behind_edges`, BACKGROUND_BAND of the canvas's
    larger side), then the surface continued behind *that* where it is itself in front of a farther one.

    One layer is not enough where two near objects overlap before a far one (a leaf before a leaf
    before a wall, issue 26): under the nearest the first layer continues the middle one, and a
    sideways move uncovers the wall behind both as a black crack; the second layer holds it, where it
    lies within SECOND_LAYER_MAX_RATIO of the first layer's depth."""

    def grow(d, c, e):
        return background_behind_edges(d, c, e, valid, band=band, parallax=parallax, max_band=max_band)

    first = grow(depth, colour, edges)
    mask = first[0]
    under = np.where(mask, first[1], depth).astype(np.float32)  # the scene with the nearest surfaces lifted off
    under_colour = np.where(mask[..., None], first[2], colour).astype(np.float32)
    m2, d2, c2 = grow(under, under_colour, spawn_edges(under, valid))
    return [first, (m2 & mask & (d2 <= SECOND_LAYER_MAX_RATIO * first[1]), d2, c2)]


def lift_footprints(depth: np.ndarray, edges: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[H,W] footprint of each pixel's Gaussian: LIFT_FOOTPRINT, EDGE_FOOTPRINT on the near side of a depth jump."""
    return np.where(occluding_pixels(depth, edges, valid), EDGE_FOOTPRINT, LIFT_FOOTPRINT).astype(np.float32)


def outpaint_canvas(rgb: np.ndarray, ring: np.ndarray, inner: tuple, inpaint_backend, seed: int) -> np.ndarray:
    """The canvas with its `ring` outpainted; the input pixels are kept exactly."""
    if inpaint_backend is None:
        raise ValueError("outpainting needs an inpaint backend")
    canvas = np.zeros(ring.shape + (3,), dtype=np.uint8)
    canvas[inner] = rgb
    canvas = np.asarray(inpaint_backend.inpaint(canvas, ring, seed=int(seed)), dtype=np.uint8)
    canvas[inner] = rgb
    return canvas


def canvas_depth(rgb, canvas, ring, inner, depth_backend, image_plan, use_ring):
    """(depth, valid, K_input, K_canvas) on the canvas.

    A model that estimates novel views runs once on the canvas and the input is its crop; the
    `file` backend knows the input only, so its depth is extended into the ring by
    `vd.align.complete_depth` (invalid input pixels stay invalid)."""
    px, py = inner[1].start, inner[0].start
    if getattr(depth_backend, "estimates_novel_views", True):
        dr = depth_backend.estimate(canvas)
        depth_c = _finite(dr.depth)
        valid_c = np.asarray(dr.valid, dtype=bool) & (depth_c > 0)
        K_c = np.asarray(dr.K, dtype=np.float64)
        K_in = K_c.copy()
        K_in[0, 2] -= px
        K_in[1, 2] -= py
        return depth_c, valid_c, K_in, K_c
    kw = {"plan": image_plan} if image_plan is not None else {}
    dr = depth_backend.estimate(rgb, **kw)
    d_in = _finite(dr.depth)
    v_in = np.asarray(dr.valid, dtype=bool) & (d_in > 0)
    K_in = np.asarray(dr.K, dtype=np.float64)
    depth_c = np.zeros(ring.shape, dtype=np.float32)
    depth_c[inner] = np.where(v_in, d_in, 0.0)
    valid_c = np.zeros(ring.shape, dtype=bool)
    valid_c[inner] = v_in
    if use_ring:
        depth_c = complete_depth(depth_c, ring)
        valid_c |= ring & (depth_c > 0)
    K_c = K_in.copy()
    K_c[0, 2] += px
    K_c[1, 2] += py
    return depth_c, valid_c, K_in, K_c


def _finite(depth) -> np.ndarray:
    return np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
