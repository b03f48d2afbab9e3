"""Depth alignment: connect a new view's depth to the existing geometry (docs/upstream.md#depth-alignment).

`align_depth(rendered, predicted, hole)` follows upstream's `_affine_dpt_to_GS`:

1. global fit on the known pixels (¬hole, rendered > 0, predicted finite and < `pred_max`):
   rendered ≈ a·predicted + b by least squares when more than 10 pairs remain; a median
   ratio when the slope comes out negative; (1, 0) otherwise;
2. smooth residual propagation: the residual r = rendered − (a·pred + b) on known pixels is
   spread into the holes by repeated 15×15 box blurs with the known values reset every time.

Improvement over upstream, whose result is only close to the rendered depth on known pixels:
here it is **exactly** the rendered depth there (the field is reset once more after the last
blur), and the fit ignores pixels whose rendered
depth is unreliable (the caller passes `hole` that already contains every low-alpha pixel).

Depth completion for views without a depth model (`complete_depth`)
-------------------------------------------------------------------
With the `file` depth backend the user's depth exists for the input view only. A new view's
"predicted" depth is then the rendered depth of the current scene with every hole filled from
its surroundings: a wavefront grows from the known pixels into the holes one pixel per step,
each newly reached pixel taking the **largest** (farthest) depth among its already-known 3×3
neighbours, so a hole takes the depth of its nearest border and, where a foreground and a
background border meet, the background wins the ties (disocclusions reveal background).
The filled pixels are then smoothed with a 5×5 box blur. The alignment then runs on this
prediction, which leaves it unchanged since it equals the render on known pixels. The same
rule extends the input depth into the outpainted ring of the scaffold.

In the scaffold's ring, surfaces continue as planes (`continue_planes`; `planes=False` keeps the
flat rule alone, which the added views' holes use: mostly disocclusions). A flat copy of the
border's depth puts a wrong, constant depth on every surface that leaves the frame at a slant (a
floor getting nearer below it, side walls and facades receding at grazing angles, a ceiling). On a
plane the inverse depth 1/z is an affine function of the pixel (u, v), so each border pixel gets a
least-squares affine model of 1/z over the known pixels of a small window around it (pixels near a
depth jump, `spawn_edges`, and pixels far from the centre's 1/z left out), and each filled pixel
evaluates the model of its nearest known pixel; where its far-side-first depth is farther and a
neighbour's nearest known pixel has that far depth, it takes that neighbour's model instead (the
far side still wins where two fronts meet). Where the model is unreliable (too few pixels in its
window, too large a residual) or its depth leaves [1/`max_ratio`, `max_ratio`] × the source pixel's
depth (a floor carried up past its horizon, where 1/z reaches 0), the pixel keeps the
far-side-first value. Then the 5×5 blur as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vd.cameras import backproject, invert_pose


@dataclass
class AlignInfo:
    scale: float
    shift: float
    method: str  # "lstsq" | "median" | "identity" | "unchanged"
    n_pairs: int


def align_depth(
    rendered: np.ndarray,
    predicted: np.ndarray,
    hole: np.ndarray,
    *,
    iters: int = 100,
    kernel: int = 15,
    pred_max: float = 199.0,
    exact: bool = True,
    return_info: bool = False,
):
    """Aligned depth [H, W] float32 (see the module docstring)."""
    import cv2

    rendered = np.nan_to_num(np.asarray(rendered, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    pred = np.nan_to_num(np.asarray(predicted, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    hole = np.asarray(hole, dtype=bool)
    if not hole.any():
        out = rendered.copy()
        info = AlignInfo(1.0, 0.0, "unchanged", int(hole.size))
        return (out, info) if return_info else out
    known = ~hole & (rendered > 0)
    pairs = known & (pred > 0) & (pred < pred_max)
    n = int(pairs.sum())
    if n > 10:
        x = pred[pairs].astype(np.float64)
        y = rendered[pairs].astype(np.float64)
        A = np.stack([x, np.ones_like(x)], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
        method = "lstsq"
        if not np.isfinite(a) or a <= 0:
            a = float(np.median(y) / (np.median(x) + 1e-8))
            b = 0.0
            method = "median"
    else:
        a, b, method = 1.0, 0.0, "identity"
    aligned = (a * pred + b).astype(np.float32)
    if known.any():
        resid = np.zeros_like(aligned)
        resid[known] = rendered[known] - aligned[known]
        field = np.zeros_like(aligned)
        for _ in range(max(int(iters), 0)):
            field[known] = resid[known]
            field = cv2.blur(field, (kernel, kernel))
        if exact:
            field[known] = resid[known]
        aligned = aligned + field
    info = AlignInfo(float(a), float(b), method, n)
    return (aligned, info) if return_info else aligned


def complete_depth(
    depth: np.ndarray,
    fill: np.ndarray,
    *,
    smooth: int = 5,
    max_steps: int = 100000,
    planes: bool = True,
    window: int = 0,
    max_ratio: float = 3.0,
) -> np.ndarray:
    """The depth with the pixels of `fill` (plus any non-finite or <= 0 pixels) filled: surfaces
    continued as planes where that is reliable, else far side first (module docstring)."""
    import cv2

    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0).copy()
    todo = np.asarray(fill, dtype=bool) | (d <= 0)
    if not todo.any():
        return d
    if todo.all():
        raise ValueError("complete_depth: no known depth to complete from")
    known = ~todo
    d[todo] = 0.0
    far_src = _grow_far_side_first(d, known, max_steps)
    out = np.where(far_src >= 0, d.ravel()[np.maximum(far_src, 0)], 0.0).astype(np.float32)
    if planes:
        plane = continue_planes(d, known, window=window, max_ratio=max_ratio, far_depth=out)
        use = todo & (plane > 0)
        out[use] = plane[use]
    if smooth and smooth > 1:
        blurred = cv2.blur(out, (smooth, smooth))
        out[todo] = blurred[todo]
    return out


def _grow_far_side_first(d: np.ndarray, known: np.ndarray, max_steps: int) -> np.ndarray:
    """Flat index [H, W] of the known pixel whose depth each pixel takes when the known pixels grow
    one pixel a step, far side first (the pixel itself where known, -1 where not reached).

    The growth dilates a key that orders by depth first (quantised to 2**52 / pixels steps over the
    depth range), so a pixel takes the farthest of its 3×3 neighbours' depths, as when growing the
    depth itself, and the key's low digits carry that depth's pixel along."""
    import cv2

    n = d.size
    scale = (2.0**52 / n) / max(float(d.max()), 1e-30)
    idx = np.arange(n, dtype=np.float64).reshape(d.shape)
    key = np.where(known, np.floor(d.astype(np.float64) * scale) * n + idx, -1.0)
    reached = known.copy()
    kernel = np.ones((3, 3), np.uint8)
    steps = 0
    while not reached.all() and steps < max_steps:
        grown = cv2.dilate(key, kernel)  # the farthest of the 3x3 neighbourhood (unknown pixels are -1)
        new = ~reached & (grown >= 0)
        if not new.any():
            break
        key[new] = grown[new]
        reached |= new
        steps += 1
    return np.where(reached, np.mod(key, n), -1).astype(np.int64)


def plane_window(H: int, W: int) -> int:
    """The odd side of `continue_planes`' fitting window for an H×W image: 2 % of its short side, 7 to 15."""
    return min(15, max(7, 2 * round(0.02 * min(H, W)) + 1))


def continue_planes(
    depth: np.ndarray,
    known: np.ndarray,
    *,
    window: int = 0,
    max_ratio: float = 3.0,
    min_known: float = 0.3,
    similar: float = 0.25,
    max_residual: float = 0.01,
    far_depth: np.ndarray | None = None,
) -> np.ndarray:
    """Depth [H, W] float32 on the unknown pixels, 0 where no reliable plane reaches (module docstring).

    Each unknown pixel takes the affine model of 1/z fitted in the `window`×`window` window (0:
    `plane_window`) of its nearest known pixel, over the known pixels there that are off any jump
    and whose 1/z is within `similar` of the centre's (the far side of a missed jump stays out).
    The model is reliable when those pixels fill at least `min_known` of the window and fit it
    within an rms of `max_residual` × the centre's 1/z; its depth is kept only within
    [1/`max_ratio`, `max_ratio`] × the centre's. With `far_depth` (the far-side-first depth), a
    pixel whose far-side-first depth is farther than its nearest known pixel's, and beside a pixel
    whose nearest known pixel has that far depth, takes that neighbour's model: the far side wins
    where two fronts meet.
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    known = np.asarray(known, dtype=bool) & (d > 0)
    H, W = d.shape
    out = np.zeros((H, W), np.float32)
    todo = ~known
    if not todo.any() or not known.any():
        return out
    k = int(window) or plane_window(H, W)
    with np.errstate(over="ignore", invalid="ignore"):  # depth_edges' sentinels in windows without depth
        jumps = spawn_edges(d, known, unknown_is_jump=False)
    _, labels = cv2.distanceTransformWithLabels(todo.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(labels.max()) + 1, np.int64)
    lut[labels[known]] = np.flatnonzero(known)
    src_of = lut[labels[todo]]  # flat index of each unknown pixel's nearest known pixel
    vt, ut = np.nonzero(todo)
    if far_depth is not None:
        src_of = _far_side_on_ties(d, todo, src_of, np.asarray(far_depth, np.float32), similar)
    src, inverse = np.unique(src_of, return_inverse=True)
    q = np.where(known, 1.0 / np.maximum(d, 1e-12), 0.0)
    fit = known & ~jumps
    coef, ok = np.zeros((len(src), 3)), np.zeros(len(src), bool)
    for i in range(0, len(src), 4096):  # bounded memory: [4096, k, k, 3] float64, 22 MB at k = 15
        coef[i : i + 4096], ok[i : i + 4096] = _plane_models(
            q, fit, src[i : i + 4096], k, min_known, similar, max_residual
        )
    vs, us = np.divmod(src, W)
    c = coef[inverse]
    q_ext = c[:, 0] + c[:, 1] * (ut - us[inverse]) + c[:, 2] * (vt - vs[inverse])
    q_src = q.ravel()[src_of]
    keep = ok[inverse] & (q_ext > q_src / max_ratio) & (q_ext < q_src * max_ratio)
    vals = np.zeros(q_ext.shape, np.float32)
    vals[keep] = (1.0 / q_ext[keep]).astype(np.float32)
    out[vt, ut] = vals
    return out


def _far_side_on_ties(d, todo, src_of, far_depth, similar: float) -> np.ndarray:
    """`src_of` (each unknown pixel's nearest known pixel, flat) with the far side winning ties: a
    pixel whose far-side-first depth is farther than its source's by more than `similar`, beside a
    pixel whose source has (within `similar`) that far depth, takes the farthest neighbour's source."""
    import cv2

    n = d.size
    src = np.arange(n, dtype=np.int64).reshape(d.shape)
    src[todo] = src_of
    z = d.ravel()[src]
    scale = (2.0**52 / n) / max(float(z.max()), 1e-30)
    key = cv2.dilate(np.floor(z.astype(np.float64) * scale) * n + src, np.ones((3, 3), np.uint8))
    nb_src = np.mod(key, n).astype(np.int64)[todo]
    z_src, z_nb, g = d.ravel()[src_of], d.ravel()[nb_src], far_depth[todo]
    tie = (g > z_src * (1 + similar)) & (np.abs(z_nb - g) <= similar * g)
    return np.where(tie, nb_src, src_of)


def _plane_models(q, fit, src, k: int, min_known: float, similar: float, max_residual: float):
    """((a, b, c) [n, 3], reliable [n]): 1/z ≈ a + b·du + c·dv about each flat pixel index in
    `src`, fitted over the `fit` pixels of its k×k window (see `continue_planes`)."""
    from numpy.lib.stride_tricks import sliding_window_view

    H, W = q.shape
    r = k // 2
    v0, u0 = np.divmod(src, W)
    qp = sliding_window_view(np.pad(q, r), (k, k))[v0, u0]  # [n, k, k]
    wp = sliding_window_view(np.pad(fit, r), (k, k))[v0, u0]
    q0 = q.ravel()[src][:, None, None]
    w = (wp & (np.abs(qp - q0) <= similar * q0)).astype(np.float64)
    dv, du = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    A = np.stack([np.ones_like(du), du, dv], -1)  # [k, k, 3]
    Aw = A[None] * w[..., None]  # [n, k, k, 3]
    M = np.einsum("nijk,ijl->nkl", Aw, A)
    rhs = np.einsum("nijk,nij->nk", Aw, qp)
    n = w.sum(axis=(1, 2))
    M[:, 1, 1] += 1e-6 * k * k * np.maximum(n, 1.0)  # ridge on the slopes: a thin strip fits a flat model
    M[:, 2, 2] += 1e-6 * k * k * np.maximum(n, 1.0)
    ok = n >= min_known * k * k
    coef = np.zeros((len(src), 3))
    if ok.any():
        coef[ok] = np.linalg.solve(M[ok], rhs[ok][..., None])[..., 0]
    resid = qp - np.einsum("ijk,nk->nij", A, coef)
    rms = np.sqrt((w * resid**2).sum(axis=(1, 2)) / np.maximum(n, 1.0))
    ok &= np.isfinite(coef).all(axis=1) & (rms <= max_residual * q0[:, 0, 0])
    return coef, ok


def depth_edges(depth, valid=None, times: float = 0.05, kernel: int = 5) -> np.ndarray:
    """Depth discontinuities, scale-relative (the original VistaDream `edge_filter` rule).

    range = P95 - P5 of the valid depths; a valid pixel is an edge when the spread (max - min)
    of the valid depths in its `kernel`x`kernel` neighbourhood (replicate padding) exceeds
    `times * range`. Unlike the port's absolute gradient threshold this does not depend on the
    scene's units or scale (docs/upstream.md#scale-free-depth-edges).
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    v = np.isfinite(d) & (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(d))
    out = np.zeros(d.shape, dtype=bool)
    if v.sum() < 2:
        return out
    p5, p95 = np.percentile(d[v], [5, 95])
    rng = float(p95 - p5)
    if not rng > 0:
        return out
    big = np.float32(np.finfo(np.float32).max)
    hi = np.where(v, d, -big).astype(np.float32)
    lo = np.where(v, d, big).astype(np.float32)
    k = np.ones((kernel, kernel), np.uint8)
    mx = cv2.dilate(hi, k, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(lo, k, borderType=cv2.BORDER_REPLICATE)
    with np.errstate(over="ignore"):  # -big - big where a window holds no valid pixel (masked out by v)
        spread = mx - mn
    out = v & (spread > times * rng)
    return out


def spawn_edges(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    times: float = 0.05,
    kernel: int = 5,
    *,
    unknown_is_jump: bool = True,
) -> np.ndarray:
    """Depth discontinuities for spawn masks: `depth_edges` (the percentile-range rule) restricted
    to pixels within kernel//2 px of a *jump*.

    A jump is a pixel whose second difference along x or y exceeds `times`·(P95 − P5)/2.
    Smooth slopes (floors, ceilings, side walls seen at grazing angles) have a large local spread,
    so the percentile-range rule alone flags them at low resolution, but a small second
    difference; true occlusion boundaries have both. With `unknown_is_jump` (the default) a pixel
    beside one without valid depth counts as a jump.
    """
    import cv2

    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    v = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    base = depth_edges(d, v, times=times, kernel=kernel)
    if not base.any():
        return base
    p5, p95 = np.percentile(d[v], [5, 95])
    thr = times * float(p95 - p5) / 2.0
    pad = np.pad(d, 1, mode="edge")
    d2x = np.abs(pad[1:-1, 2:] - 2 * pad[1:-1, 1:-1] + pad[1:-1, :-2])
    d2y = np.abs(pad[2:, 1:-1] - 2 * pad[1:-1, 1:-1] + pad[:-2, 1:-1])
    d2x[:, [0, -1]] = 0.0  # no second difference at the image border
    d2y[[0, -1], :] = 0.0
    vp = np.pad(v, 1, mode="edge")  # the image border itself is not a jump
    # a neighbour without valid depth counts as a jump too
    nb_invalid = ~(vp[1:-1, 2:] & vp[1:-1, :-2] & vp[2:, 1:-1] & vp[:-2, 1:-1])
    if unknown_is_jump:
        jump = ((np.maximum(d2x, d2y) > thr) | nb_invalid) & v
    else:  # second differences only across valid pixels
        d2x[~(vp[1:-1, 2:] & vp[1:-1, :-2])] = 0.0
        d2y[~(vp[2:, 1:-1] & vp[:-2, 1:-1])] = 0.0
        jump = (np.maximum(d2x, d2y) > thr) & v
    near = cv2.dilate(jump.astype(np.uint8), np.ones((kernel, kernel), np.uint8)) > 0
    return base & near


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """a[y + dy, x + dx] for every pixel (0 outside the image; trailing axes, e.g. colour, kept)."""
    p = np.pad(a, [(1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 2), mode="constant", constant_values=0)
    H, W = a.shape[:2]
    return p[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]


def assign_edge_depth(
    depth: np.ndarray, edges: np.ndarray, valid: np.ndarray | None = None, *, tol: float = 0.05, kernel: int = 5
) -> np.ndarray:
    """Depth with every edge pixel placed on the surface it belongs to (docs/upstream.md#depth-edges).

    A *flying pixel* is an edge pixel (`edges`, e.g. `spawn_edges`) that, along some direction
    (horizontal, vertical or diagonal), lies strictly between its two neighbours with a jump of
    more than `tol` (relative) to each, and continues neither side's surface: on a plane inverse
    depth is affine in the pixel coordinates, so a pixel continues a side when the second
    difference of inverse depth through its two pixels on that side is within `tol` (relative).
    That is what depth models put between a foreground and a background. It takes the nearer (in
    depth) of the nearest and the farthest depth of the other pixels of its `kernel`×`kernel`
    neighbourhood, joining the foreground or the background instead of hanging between them.
    Every other pixel keeps its depth: true surfaces (a step's two sides, slopes seen at grazing
    angles, creases) and thin structures (nearer than both neighbours). Then every edge pixel can
    spawn a Gaussian, without curtains and without an unspawned outline."""
    import cv2

    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    v = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    dv = np.where(v, d, 0.0).astype(np.float32)
    q = np.where(v, 1.0 / np.maximum(d, 1e-30), 0.0).astype(np.float32)  # inverse depth
    flying = np.zeros(d.shape, dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, b = _shifted(dv, dy, dx), _shifted(dv, -dy, -dx)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        between = (lo > 0) & (d - lo > tol * d) & (hi - d > tol * d)
        continues = np.zeros_like(between)
        for s in (1, -1):  # the side at +1, +2 and the side at -1, -2 along the direction
            q1, q2 = _shifted(q, s * dy, s * dx), _shifted(_shifted(q, s * dy, s * dx), s * dy, s * dx)
            # a side that leaves the image or the valid pixels cannot be ruled out: it continues
            continues |= (q2 <= 0) | (np.abs(q - 2 * q1 + q2) <= tol * q)
        flying |= between & ~continues
    flying &= np.asarray(edges, dtype=bool) & v
    out = d.copy()
    if not flying.any():
        return out
    solid = v & ~flying
    big = np.float32(np.finfo(np.float32).max)
    k = np.ones((kernel, kernel), np.uint8)
    near = cv2.erode(np.where(solid, d, big).astype(np.float32), k, borderType=cv2.BORDER_REPLICATE)
    far = cv2.dilate(np.where(solid, d, 0.0).astype(np.float32), k, borderType=cv2.BORDER_REPLICATE)
    fix = flying & (far > 0)
    out[fix] = np.where(d - near <= far - d, near, far)[fix]
    return out


def occluding_pixels(
    depth: np.ndarray, edges: np.ndarray, valid: np.ndarray | None = None, *, tol: float = 0.05
) -> np.ndarray:
    """The edge pixels (`edges`, e.g. `spawn_edges`) on the near side of a depth jump: some
    8-neighbour lies more than `tol` (relative) farther. A Gaussian lifted there overlaps the
    farther surface beside it and tints it, which colour alone cannot undo when the far side is
    darker; lifting these with a smaller footprint keeps the outline sharp."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    v = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    dv = np.where(v, d, 0.0).astype(np.float32)
    out = np.zeros(d.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                out |= _shifted(dv, dy, dx) > d * (1.0 + tol)
    return out & v & np.asarray(edges, dtype=bool)


def background_behind_edges(
    depth: np.ndarray,
    rgb: np.ndarray,
    edges: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    band: int = 4,
    tol: float = 0.05,
    behind_by: float = 0.01,
    parallax: float = 0.0,
    max_band: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The farther surface continued behind the near side of every depth jump, up to `band` pixels,
    or farther (up to `max_band`) where a camera move uncovers more: `parallax` is the focal length
    in pixels times the move (in depth units), so a jump from z_near to z_far opens a strip
    parallax·(1/z_near − 1/z_far) pixels wide.

    Returns (mask [H,W] bool, depth [H,W] float32, rgb [H,W,3] float32 in the units of `rgb`): the
    pixels where the view sees a nearer surface in front of the continued one, and that surface's
    depth and colour there. It starts at the occluding pixels (`occluding_pixels`), each taking the
    mean depth and colour of its neighbours more than `tol` farther, and grows one pixel a step
    into pixels nearer than the layer beside them. A camera that moves reveals a strip behind each
    edge (and magnifies the near side, opening sub-pixel gaps at its outline); Gaussians of this
    hidden layer fill it with the surface that continues there, as a layered depth image does,
    where otherwise only an inpainted view would."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    v = (d > 0) if valid is None else (np.asarray(valid, dtype=bool) & (d > 0))
    d = np.where(v, d, 0.0).astype(np.float32)
    col = np.asarray(rgb, dtype=np.float32)
    layer = np.zeros(d.shape, dtype=np.float32)
    layer_rgb = np.zeros(col.shape, dtype=np.float32)
    mask = np.zeros(d.shape, dtype=bool)
    # sources for the first step: the pixels themselves; later steps: the layer grown so far
    src_d, src_rgb, src_ok = d, col, v
    front = occluding_pixels(d, edges, v, tol=tol)
    steps = max(int(band), int(max_band or 0), 0)
    for step in range(steps):
        cand = v & ~mask if mask.any() else front
        acc_d = np.zeros(d.shape, dtype=np.float32)
        acc_c = np.zeros(col.shape, dtype=np.float32)
        cnt = np.zeros(d.shape, dtype=np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if not (dy or dx):
                    continue
                nd = _shifted(np.where(src_ok, src_d, 0.0), dy, dx)
                behind = cand & (nd > d * (1.0 + tol))
                if step >= band:  # past the fixed band: only as far as a move can uncover here
                    with np.errstate(divide="ignore"):
                        behind &= parallax * (1.0 / np.maximum(d, 1e-12) - 1.0 / np.maximum(nd, 1e-12)) > step
                acc_d = np.maximum(acc_d, np.where(behind, nd, 0.0))
                acc_c += np.where(behind[..., None], _shifted(src_rgb, dy, dx), 0.0)
                cnt += behind
        new = cnt > 0
        if not new.any():
            break
        layer[new] = acc_d[new] * (1.0 + behind_by) if not mask.any() else acc_d[new]
        layer_rgb[new] = acc_c[new] / cnt[new][:, None]
        mask |= new
        src_d, src_rgb, src_ok = layer, layer_rgb, mask.copy()
    return mask, layer, layer_rgb


def in_front_of_views(
    depth: np.ndarray, K, world_from_camera, views, mask: np.ndarray, *, tol: float = 0.05
) -> np.ndarray:
    """Pixels of `mask` whose lifted point would hide a surface an earlier view sees.

    The pixels of a new view (z-depth `depth`, intrinsics K, pose world_from_camera) are lifted
    and projected into each earlier view (objects with depth, K, world_from_camera, e.g.
    `vd.views.View`); a point is *in front* when it lands inside that view nearer than D·(1 − tol),
    D the farthest known depth of the four pixel centres around it. Gaussians spawned there would occlude geometry that
    was right (ORIG's occlusion removal, docs/upstream.md#depth-edges); a true hole lies behind
    what the earlier views see, or outside them."""
    m = np.asarray(mask, dtype=bool) & (np.asarray(depth) > 0)
    out = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return out
    P = backproject(np.asarray(depth, dtype=np.float64), np.asarray(K, dtype=np.float64), m)  # [N,3] camera
    Tw = np.asarray(world_from_camera, dtype=np.float64)
    Pw = P @ Tw[:3, :3].T + Tw[:3, 3]
    hit = np.zeros(len(Pw), dtype=bool)
    for v in views:
        cw = invert_pose(np.asarray(v.world_from_camera, dtype=np.float64))
        Pc = Pw @ cw[:3, :3].T + cw[:3, 3]
        Kv = np.asarray(v.K, dtype=np.float64)
        z = Pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            # the four pixel centres around the projected point
            u0 = np.floor(Kv[0, 0] * Pc[:, 0] / z + Kv[0, 1] * Pc[:, 1] / z + Kv[0, 2] - 0.5).astype(
                np.int64, copy=False
            )
            w0 = np.floor(Kv[1, 1] * Pc[:, 1] / z + Kv[1, 2] - 0.5).astype(np.int64, copy=False)
        depth_v = np.asarray(v.depth)
        H, W = depth_v.shape
        # the farthest of them: a point between a silhouette and the background beside it (an
        # interpolated depth at the rim of a hole) is in front of that background, and a Gaussian
        # there would overlap it
        D = np.zeros(len(z))
        for du in (0, 1):
            for dw in (0, 1):
                u, w = u0 + du, w0 + dw
                ok = (z > 1e-6) & (u >= 0) & (u < W) & (w >= 0) & (w < H)
                D[ok] = np.maximum(D[ok], depth_v[w[ok], u[ok]])
        hit |= (D > 0) & (z < D * (1.0 - tol))
    out[m] = hit
    return out
