"""Optimise Gaussians against posed RGB views (VistaDream's GS_Train_Tool, fixed).

- Adam, one parameter group per attribute, learning rates from upstream (docs/upstream.md#training):
  means 1e-4, colour (SH) 5e-4, log-scales 5e-3, opacity logits 5e-2, quaternions 1e-3; no schedule,
  no densification.
- Each iteration renders one view, the views taken in a fresh random order every pass (seeded
  generator; upstream draws each independently, which on the scaffold's two views and 30 CPU
  iterations can give one view twice the other's share) and minimises
  masked L1 over the supervised pixels + λ·(1 − SSIM) over the same pixels (`vd.ssim.masked_ssim`),
  plus, for views that carry a depth target, ``depth_weight`` · the mean relative depth error
  |d_render − d| / d over the view's ``depth_mask`` (a photometric loss alone lets Gaussians
  slide along their rays: the depth term keeps the geometry the depth map gave).
- ``trainable``: a bool mask over the Gaussians; only those are optimised, the others are
  constants (no gradient, no Adam state). The trained values are written back into ``g`` in place.
  Each view is then rendered only over the window the trainable Gaussians can reach
  (`reach_window`), the loss summed there and divided by the whole view's pixel counts: the same
  gradients, a fraction of the pixels (an added view of the coarse loop trains its own new
  Gaussians only, often a few hundred; the 256×192 example's views took 22 s each, now 4–14 s).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from vd.gaussians import Gaussians
from vd.render import render, resolve_backend
from vd.ssim import masked_ssim, ssim_map

DEFAULT_LRS = {
    "means": 1e-4,
    "sh": 5e-4,
    "log_scales": 5e-3,
    "opacity_logits": 5e-2,
    "quats": 1e-3,
}
_FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh")


@dataclass
class TrainView:
    rgb: Tensor  # [H,W,3] float 0..1
    mask: Tensor  # [H,W] bool, supervised pixels
    K: Tensor  # [3,3]
    camera_from_world: Tensor  # [4,4] OpenCV
    depth: Tensor | None = None  # [H,W] z-depth target (optional)
    depth_mask: Tensor | None = None  # [H,W] bool, where the depth target is trusted (default: depth > 0)

    def __post_init__(self):
        def t(x, dtype=torch.float32):
            if isinstance(x, np.ndarray):
                if x.dtype == np.uint8 and dtype == torch.float32:
                    x = x.astype(np.float32) / 255.0
                x = torch.from_numpy(np.ascontiguousarray(x))
            x = torch.as_tensor(x)
            if x.dtype == torch.uint8 and dtype == torch.float32:
                x = x.float() / 255.0
            return x.to(dtype)

        self.rgb = t(self.rgb)
        self.K = t(self.K)
        self.camera_from_world = t(self.camera_from_world)
        self.mask = torch.ones(self.rgb.shape[:2], dtype=torch.bool) if self.mask is None else t(self.mask, torch.bool)
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.mask.shape != self.rgb.shape[:2]:
            raise ValueError(f"TrainView needs rgb [H,W,3] and mask [H,W]; got {tuple(self.rgb.shape)}, {tuple(self.mask.shape)}")
        if self.depth is not None:
            self.depth = t(self.depth)
            ok = torch.isfinite(self.depth) & (self.depth > 0)
            self.depth_mask = ok if self.depth_mask is None else (t(self.depth_mask, torch.bool) & ok)
            self.depth = torch.where(ok, self.depth, torch.ones_like(self.depth))
            if self.depth.shape != self.rgb.shape[:2] or self.depth_mask.shape != self.rgb.shape[:2]:
                raise ValueError(f"TrainView depth and depth_mask must be [H,W] = {tuple(self.rgb.shape[:2])}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass
class TrainReport:
    losses: list = field(default_factory=list)  # per iteration; with a trainable subset, its window's share
    final_loss: float = float("nan")  # the last iteration's view, over the whole view
    iters: int = 0
    seconds: float = 0.0
    backend: str = ""
    n_trainable: int = 0


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(torch.bool)
    if not bool(m.any()):
        return pred.sum() * 0.0
    return (pred - target).abs()[m].mean()


def view_loss(pred: Tensor, target: Tensor, mask: Tensor, ssim_lambda: float = 0.2) -> Tensor:
    """Upstream's form (no (1−λ) factor on L1): mean |pred − target| over the supervised pixels
    + λ·(1 − SSIM averaged over the same pixels). With a full mask on CUDA, fused-ssim is used
    when installed; a partial mask needs the per-pixel SSIM map, so the torch SSIM is used."""

    loss = masked_l1(pred, target, mask)
    if ssim_lambda:
        loss = loss + ssim_lambda * (1.0 - masked_ssim(pred.clamp(0, 1), target, mask))
    return loss


def depth_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean relative error |pred − target| / target over `mask` (0 when the mask is empty)."""
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return ((pred - target).abs() / target)[mask].mean()


def optimise(
    g: Gaussians,
    views: list,
    iters: int,
    *,
    trainable: Tensor | None = None,
    lrs: dict | None = None,
    ssim_lambda: float = 0.2,
    depth_weight: float = 0.0,
    seed: int = 0,
    backend: str = "auto",
    progress: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Optimise `g` in place on `views` for `iters` iterations; returns the loss history.

    progress: optional callable(iteration, loss) called after every step.
    """

    rep = TrainReport()
    if len(g) == 0 or not views or iters <= 0:
        return rep
    dev = g.device
    name = resolve_backend(backend, dev)
    rep.backend = name
    if trainable is None:
        idx = None
        n_train = len(g)
    else:
        tm = torch.as_tensor(trainable, device=dev)
        if tm.dtype != torch.bool or tm.shape != (len(g),):
            raise ValueError(f"trainable must be a bool tensor [{len(g)}]")
        idx = tm.nonzero().squeeze(1)
        n_train = int(idx.numel())
    rep.n_trainable = n_train
    if n_train == 0:
        return rep
    lr = dict(DEFAULT_LRS)
    if lrs:
        unknown = set(lrs) - set(lr)
        if unknown:
            raise ValueError(f"unknown learning-rate keys {sorted(unknown)}; known: {sorted(lr)}")
        lr.update(lrs)

    base = {k: getattr(g, k).detach() for k in _FIELDS}
    params = {
        k: torch.nn.Parameter((base[k] if idx is None else base[k][idx]).clone()) for k in _FIELDS
    }
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lr[k], "name": k} for k in _FIELDS], eps=1e-15)
    gen = torch.Generator().manual_seed(int(seed))
    views_dev = [
        (v.rgb.to(dev), v.mask.to(dev), v.K.to(dev), v.camera_from_world.to(dev), v.width, v.height,
         None if v.depth is None or not depth_weight else (v.depth.to(dev), v.depth_mask.to(dev)))
        for v in views
    ]
    # with a trainable subset, each view is rendered only over the window those Gaussians reach
    # (the rest of the view is a constant of the loss: same gradients, far fewer pixels)
    # Adam moves a value by about its learning rate a step (more only where gradients jump)
    travel, growth = iters * lr["means"], math.exp(iters * lr["log_scales"])
    windows = [None] * len(views_dev) if idx is None else [
        reach_window(params["means"].detach(), params["log_scales"].detach(), vm, K, W, H, travel=travel, growth=growth)
        for _, _, K, vm, W, H, _ in views_dev]
    t0 = time.perf_counter()
    order: list[int] = []  # views in a fresh random order each pass, so that each gets its share
    for it in range(iters):
        if not order:
            order = torch.randperm(len(views_dev), generator=gen).tolist()
        vi = order.pop()
        if idx is None:
            cur = Gaussians(**params)
        else:
            cur = Gaussians(**{k: base[k].index_put((idx,), params[k]) for k in _FIELDS})
        loss = _loss(cur, views_dev[vi], windows[vi], name, ssim_lambda, depth_weight)
        if it == iters - 1 and windows[vi] is not None:  # a window's loss leaves out constants: the whole one
            with torch.no_grad():
                rep.final_loss = float(_loss(cur, views_dev[vi], None, name, ssim_lambda, depth_weight))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        rep.losses.append(lv)
        if progress is not None:
            progress(it, lv)
    rep.seconds = time.perf_counter() - t0
    rep.iters = iters
    if windows[vi] is None:
        rep.final_loss = rep.losses[-1] if rep.losses else math.nan
    with torch.no_grad():
        for k in _FIELDS:
            t = getattr(g, k)
            if idx is None:
                t.copy_(params[k].detach())
            else:
                t[idx] = params[k].detach()
    return rep


REACH_MARGIN = 12  # px around the Gaussians' reach: the SSIM window's diameter (11), and one


def reach_window(means: Tensor, log_scales: Tensor, camera_from_world: Tensor, K: Tensor, W: int, H: int, *,
                 travel: float = 0.0, growth: float = 1.0, margin: int = REACH_MARGIN) -> tuple[int, int, int, int] | None:
    """The pixel box (x0, y0, x1, y1) of a view that Gaussians [N] can change, with `margin`; None
    when it is (nearly) the whole view, or when some Gaussian is at or behind the camera plane.

    A Gaussian reaches 3 of its largest standard deviations (times `growth`, what its scales may
    grow by while it trains) around its projected centre, which may move `travel` (world units);
    its pixels' SSIM then reaches `margin` further."""
    if means.shape[0] == 0:
        return (0, 0, 0, 0)
    R, t = camera_from_world[:3, :3], camera_from_world[:3, 3]
    pc = means @ R.T + t
    z = pc[:, 2]
    if bool((z <= 1e-6).any()):
        return None
    f = torch.maximum(K[0, 0].abs(), K[1, 1].abs())
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    r = f * (3.0 * growth * log_scales.max(dim=1).values.exp() + travel) / z + margin
    x0 = max(int(torch.floor((u - r).min())), 0)
    y0 = max(int(torch.floor((v - r).min())), 0)
    x1 = min(int(torch.ceil((u + r).max())) + 1, W)
    y1 = min(int(torch.ceil((v + r).max())) + 1, H)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    if (x1 - x0) * (y1 - y0) > 0.8 * W * H:
        return None
    return x0, y0, x1, y1


def _loss(g: Gaussians, view, window, backend: str, ssim_lambda: float, depth_weight: float) -> Tensor:
    """One view's training loss: the whole view's (`view_loss` + depth term), or, over a `window`,
    the sum over its pixels divided by the whole view's counts (the same gradient when nothing
    outside the window can change)."""
    rgb, mask, K, vm, W, H, dt = view
    if window is None:
        out = render(g, vm[None], K[None], W, H, backend=backend)
        loss = view_loss(out.rgb[0], rgb, mask, ssim_lambda)
        if dt is not None:
            loss = loss + depth_weight * depth_loss(out.depth[0], *dt)
        return loss
    x0, y0, x1, y1 = window
    n = int(mask.sum())
    if x1 <= x0 or y1 <= y0 or n == 0:  # nothing trainable in sight: no gradient
        return g.means.sum() * 0.0
    Kw = K.clone()
    Kw[0, 2] -= x0
    Kw[1, 2] -= y0
    out = render(g, vm[None], Kw[None], x1 - x0, y1 - y0, backend=backend)
    pred, win = out.rgb[0], (slice(y0, y1), slice(x0, x1))
    target, m = rgb[win], mask[win]
    loss = (pred - target).abs()[m].sum() / (3 * n)
    if ssim_lambda:
        mixed = torch.where(m[..., None], pred.clamp(0, 1), target)
        loss = loss + ssim_lambda * (1.0 - ssim_map(mixed, target)[m].sum() / n)
    if dt is not None and int(dt[1].sum()):
        d, dm = dt[0][win], dt[1][win]
        loss = loss + depth_weight * ((out.depth[0] - d).abs() / d)[dm].sum() / int(dt[1].sum())
    return loss


def fit_colours(g: Gaussians, views: list, iters: int = 8, *, trainable: Tensor | None = None,
                backend: str = "auto") -> None:
    """Solve, in place, for the base colours (SH DC) that reproduce `views` over their supervised
    pixels with the geometry and opacities fixed.

    A lifted Gaussian overlaps its neighbours, so its pixel's own colour renders blurred; the
    rendered colour is linear in the Gaussians' colours, and a few SIRT iterations (residual
    divided by each pixel's alpha, back-projected with the compositing weights, divided by each
    Gaussian's total weight) deconvolve it. Cheaper than the optimiser's iterations, whose colour
    learning rate moves a colour by about 0.01 in 30 steps.
    """
    from vd.render.sh import C0

    if len(g) == 0 or iters <= 0 or not views:
        return
    dev = g.device
    name = resolve_backend(backend, dev)
    keep = None if trainable is None else torch.as_tensor(trainable, device=dev).to(torch.bool)
    fixed = {k: getattr(g, k).detach() for k in ("means", "log_scales", "quats", "opacity_logits")}
    sh_rest = g.sh[:, 1:].detach()
    targets = []
    for v in views:  # with a trainable subset, only the window those Gaussians reach (as in `optimise`)
        rgb, mask, K, vm = v.rgb.to(dev), v.mask.to(dev), v.K.to(dev), v.camera_from_world.to(dev)
        box = None if keep is None else reach_window(fixed["means"][keep], fixed["log_scales"][keep], vm, K,
                                                         v.width, v.height)
        if box is None:
            targets.append((rgb, mask, K[None], vm[None], v.width, v.height))
            continue
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            continue
        Kw = K.clone()
        Kw[0, 2] -= x0
        Kw[1, 2] -= y0
        targets.append((rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1], Kw[None], vm[None], x1 - x0, y1 - y0))
    if not targets:
        return

    def weights(dc: Tensor, rgb, mask, K, vm, W, H, residual: bool) -> Tensor:
        dc = dc.detach().requires_grad_(True)
        out = render(Gaussians(sh=torch.cat([dc[:, None], sh_rest], 1), **fixed), vm, K, W, H, backend=name)
        m = mask[..., None].float()
        if residual:  # Σ_p w_i(p) (t_p − r_p) / α_p
            r = (rgb - out.rgb[0]).detach() / out.alpha[0].detach().clamp_min(1e-3)[..., None]
            (out.rgb[0] * r * m).sum().backward()
        else:  # Σ_p w_i(p)
            (out.rgb[0] * m).sum().backward()
        return dc.grad / C0

    dc = g.sh[:, 0].detach().clone()
    with torch.enable_grad():
        column = [weights(dc, *t, residual=False) for t in targets]
        for it in range(int(iters)):
            for t, col in zip(targets, column):
                step = weights(dc, *t, residual=True) / col.clamp_min(1e-6)
                step = torch.where(col > 1e-3, step, torch.zeros_like(step))
                if keep is not None:
                    step[~keep] = 0.0
                dc = dc + step / C0
    with torch.no_grad():
        g.sh[:, 0] = dc


__all__ = ["DEFAULT_LRS", "TrainReport", "TrainView", "depth_loss", "fit_colours", "masked_l1", "optimise", "reach_window",
           "view_loss"]
