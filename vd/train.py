"""Optimise Gaussians against posed RGB views (VistaDream's GS_Train_Tool, fixed): the one
optimiser of vd (scaffold, coarse views, fine and refine all train through `optimise`).

- Adam, one parameter group per attribute, learning rates from upstream (docs/upstream.md#training):
  means 1e-4, colour (SH) 5e-4, log-scales 5e-3, opacity logits 5e-2, quaternions 1e-3; no schedule.
- Each iteration renders one view, the views taken in a fresh random order every pass (seeded
  generator; upstream draws each independently, which on the scaffold's two views and 30 CPU
  iterations can give one view twice the other's share) and minimises
  masked L1 over the supervised pixels + λ·(1 − SSIM) over the same pixels (`vd.ssim.masked_ssim`),
  plus, for views that carry a depth target, ``depth_weight`` · the mean relative depth error
  |d_render − d| / d over the view's ``depth_mask`` (a photometric loss alone lets Gaussians
  slide along their rays: the depth term keeps the geometry the depth map gave), plus
  ``alpha_weight`` · the mean shortfall of the accumulated alpha below COVERAGE_FLOOR over the
  supervised pixels (`coverage_loss`: a photo has no see-through pixels, but to fit a texture
  finer than the Gaussians the photometric loss slides them apart by fractions of a pixel and
  opens gaps, pinholes, that nothing else penalises), plus a caller's weighted ``terms`` on the
  whole-view render (`vd refine`'s depth and normal priors).
- ``trainable``: a bool mask over the Gaussians; only those are optimised, the others are
  constants (no gradient, no Adam state). The trained values are written back into ``g`` in place.
  Each view is then rendered only over the window the trainable Gaussians can reach
  (`reach_window`), the loss summed there and divided by the whole view's pixel counts: the same
  gradients, a fraction of the pixels (an added view of the coarse loop trains its own new
  Gaussians only, often a few hundred; the 256×192 example's views took 22 s each, now 4–14 s).
- ``held``: a bool mask over the Gaussians that only the anchor views (`TrainView.anchor`) train; the other
  views render them as constants (`vd refine`: what the photo sees is fitted to the photo, not to the added
  views' resampled renders of it). A held Gaussian still takes Adam's step on its momentum when another view
  trains: stopping it there too (as gsplat's SelectiveAdam stops the Gaussians out of view) left both real
  photos' input views 1.6-2 dB lower after 100 refine iterations (bench/quality.md).
- ``max_opacity``: the opacities a fit may reach (`vd fine` asks for MAX_OPACITY, 0.99). A rasteriser skips the
  Gaussian that would take a pixel's transmittance below 1e-4 (as gsplat does), so above 0.99 a pixel can drop
  its own Gaussian and show the background through the few per cent its neighbours left uncovered.
- ``densify`` (`Densify`): split the Gaussians whose positions got the largest gradients, prune
  the transparent ones. Adam's moments of the surviving Gaussians carry over, new Gaussians start
  with zero moments and each group's step count continues (`GaussianAdam.keep_and_add`, as
  gsplat's strategy ops do); ``g``'s tensors are then replaced, not written in place.
- No host read in a training step (each one would wait for the GPU): the losses stay on the
  device and are read every ``log_every`` iterations and at the end, masks are counted once per
  view, the losses are masked tensor-side, and Adam is the fused implementation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from vd.gaussians import Gaussians
from vd.geometry import quat_to_rotmat_torch
from vd.render import render, resolve_backend
from vd.render.culling import in_view
from vd.ssim import masked_ssim, ssim_map

DEFAULT_LRS = {
    "means": 1e-4,
    "sh": 5e-4,
    "log_scales": 5e-3,
    "opacity_logits": 5e-2,
    "quats": 1e-3,
}
_FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh")
LOG_EVERY = 10  # iterations between two reads of the losses (each read waits for the device)
SPLIT_SHRINK = 1.6  # a split Gaussian's children have its scales / 1.6 (3DGS)
_FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps", "xpu")
# the accumulated alpha the coverage term asks of a supervised pixel: a lifted Gaussian's own opacity
# (vd.stages.scaffold.LIFT_OPACITY). Pixels at or above it get no gradient from the term, so a covered
# surface is left to the photometric loss (a mean of 1 − alpha, pushing every pixel to 1, cost the real
# photo's input view 0.2 dB at weight 3 in bench/quality, this floor 0.04 dB)
COVERAGE_FLOOR = 0.99
# fit_colours: a Gaussian whose pixels render a depth more than this share from its own sits on a depth edge, and
# its colour moves at most MIXED_COLOUR_STEP from the colour it came in with (bench/quality.md, "Complementary
# outlines at depth edges": 0.03 and 0.1 gave the moved views 0.04-0.5 dB on every scene, the input view -1.4 to
# +0.3 dB; a step of 0.05 took 2-4 dB from the input view, clamping every Gaussian at 0.1 up to 4)
MIXED_DEPTH = 0.03
MIXED_COLOUR_STEP = 0.1
# the opacities a fit may reach when it asks for a cap (optimise's max_opacity): a pixel at least 99 % covered
# before it skips a Gaussian (T_MIN), as the lift's 0.99 leaves it
MAX_OPACITY = 0.99
# Gaussians farther from every view's camera than this many times the median keep their normal (they still turn
# about it): a move of 15 % of the median depth sees them from directions under a degree apart, so nothing in the
# loss fixes their tilt, and Adam's normalised steps tilted bench/quality's street sky (400 m, 40x the median) by
# 3.5 degrees, which moved the depth a ray reads off it (the median depth, the mesh) by 0.2-0.4 m. From 3x the
# median, the street's far end (30-60 m) kept its normal too, and its input view lost 0.15 dB; from 10x, nothing
FIXED_ORIENTATION_BEYOND = 10.0


@dataclass
class TrainView:
    rgb: Tensor  # [H,W,3] float 0..1
    mask: Tensor  # [H,W] bool, supervised pixels
    K: Tensor  # [3,3]
    camera_from_world: Tensor  # [4,4] OpenCV
    depth: Tensor | None = None  # [H,W] z-depth target (optional)
    depth_mask: Tensor | None = None  # [H,W] bool, where the depth target is trusted (default: depth > 0)
    normal: Tensor | None = None  # [H,W,3] normal prior (refine datasets), zero where unknown
    anchor: bool = True  # False: the view leaves `optimise`'s held Gaussians to the anchor views

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
            raise ValueError(
                f"TrainView needs rgb [H,W,3] and mask [H,W]; got {tuple(self.rgb.shape)}, {tuple(self.mask.shape)}"
            )
        if self.depth is not None:
            self.depth = t(self.depth)
            ok = torch.isfinite(self.depth) & (self.depth > 0)
            self.depth_mask = ok if self.depth_mask is None else (t(self.depth_mask, torch.bool) & ok)
            self.depth = torch.where(ok, self.depth, torch.ones_like(self.depth))
            if self.depth.shape != self.rgb.shape[:2] or self.depth_mask.shape != self.rgb.shape[:2]:
                raise ValueError(f"TrainView depth and depth_mask must be [H,W] = {tuple(self.rgb.shape[:2])}")
        if self.normal is not None:
            self.normal = torch.nan_to_num(t(self.normal), 0.0, 0.0, 0.0)
            if self.normal.shape != self.rgb.shape:
                raise ValueError(f"TrainView normal must be [H,W,3] = {tuple(self.rgb.shape)}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass
class DeviceView:
    """A `TrainView`'s tensors on the training device, with its masks' pixel counts (read once,
    so that no training step reads them back from the device)."""

    rgb: Tensor
    mask: Optional[Tensor]  # None: every pixel is supervised
    K: Tensor
    camera_from_world: Tensor
    width: int
    height: int
    n_supervised: int
    depth: Optional[Tensor] = None
    depth_mask: Optional[Tensor] = None
    n_depth: int = 0
    normal: Optional[Tensor] = None
    anchor: bool = True

    @classmethod
    def of(cls, v: TrainView, device, *, depth: bool) -> DeviceView:
        mask = v.mask.to(device)
        n = int(mask.sum())
        target = v.depth.to(device) if depth and v.depth is not None else None
        trusted = v.depth_mask.to(device) if target is not None and v.depth_mask is not None else None
        return cls(
            rgb=v.rgb.to(device),
            mask=None if n == mask.numel() else mask,
            K=v.K.to(device),
            camera_from_world=v.camera_from_world.to(device),
            width=v.width,
            height=v.height,
            n_supervised=n,
            depth=None if trusted is None else target,
            depth_mask=trusted,
            n_depth=0 if trusted is None else int(trusted.sum()),
            normal=None if v.normal is None else v.normal.to(device),
            anchor=v.anchor,
        )


class LossTerms(Protocol):
    """Extra loss terms on each whole-view render: `weights` (name -> weight) and a call
    (render output, view) -> name -> unweighted scalar loss (kept on the device)."""

    weights: dict[str, float]

    def __call__(self, out, view: DeviceView) -> dict[str, Tensor]: ...


@dataclass
class Densify:
    """Split and prune (vd refine's schedule), at the iterations (1-based) from `start` to `until`
    that are multiples of `every`: of the Gaussians whose position gradients, averaged since the
    last step, are above 0, the `fraction` largest are replaced by two children each (scales /
    1.6, centres drawn from the parent's Gaussian); those with opacity below `prune_opacity` are
    removed."""

    every: int = 100
    start: int = 100
    until: int = 0
    fraction: float = 0.02
    prune_opacity: float = 0.005

    def due(self, iteration: int) -> bool:
        return self.start <= iteration <= self.until and iteration % self.every == 0


@dataclass
class TrainReport:
    losses: list = field(default_factory=list)  # per iteration; with a trainable subset, its window's share
    final_loss: float = float("nan")  # the last iteration's view, over the whole view
    iters: int = 0
    seconds: float = 0.0
    backend: str = ""
    n_trainable: int = 0
    log: list = field(default_factory=list)  # {"iter" (1-based), "loss", each term}: first, every log_every, last
    split: int = 0  # Gaussians split by densification
    pruned: int = 0  # Gaussians removed by densification
    adam_steps: int = 0  # Adam's step count at the end (densification does not reset it)


class GaussianAdam:
    """Gaussian attributes [N, ...] as Adam parameters, one group per attribute (named as the
    attribute), whose rows can be kept, dropped and added without losing Adam's state."""

    def __init__(self, values: dict[str, Tensor], lrs: dict[str, float]):
        self.params = {k: torch.nn.Parameter(values[k].detach().clone()) for k in _FIELDS}
        self.sources: Tensor | None = None  # after a densify step: each row's row before it
        fused = self.params["means"].device.type in _FUSED_ADAM_DEVICES  # no host read of the step count
        self.opt = torch.optim.Adam(
            [{"params": [self.params[k]], "lr": lrs[k], "name": k} for k in _FIELDS], eps=1e-15, fused=fused or None
        )

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    def step(self, loss: Tensor, fixed_normal: Tensor | None = None) -> None:
        """Back-propagate `loss` and take one Adam step (non-finite gradients count as 0); the rows of
        `fixed_normal` (bool [N]) turn only about their normal (their thinnest axis)."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.params.values():
            if p.grad is not None:
                p.grad.nan_to_num_(0.0, 0.0, 0.0)
        quats = self.params["quats"]
        if fixed_normal is not None:  # every row, masked: no host read of which rows (each one stalls a GPU)
            axis = self.params["log_scales"].detach().argmin(1)
            normal = _axis(quats.detach(), axis)
        self.opt.step()
        if fixed_normal is not None:
            with torch.no_grad():
                q = quats.detach()
                quats.copy_(torch.where(fixed_normal[:, None], _turned(q, _axis(q, axis), normal), q))

    def state(self, name: str) -> dict:
        """Adam's state of one attribute ({} before the first step)."""
        return self.opt.state.get(self.params[name], {})

    def keep_and_add(self, keep: Tensor, added: dict[str, Tensor] | None = None) -> None:
        """Make every attribute its rows `keep` (bool [N]) followed by the rows of `added` (all
        attributes, or None). The kept rows keep their Adam moments, the added rows start at zero,
        and the step counts continue."""
        for group in self.opt.param_groups:
            name = group["name"]
            (old,) = group["params"]
            extra = None if added is None else added[name].to(old)
            value = old.detach()[keep]
            new = torch.nn.Parameter(value if extra is None else torch.cat([value, extra]))
            state = self.opt.state.pop(old, {})
            for key, v in list(state.items()):
                if isinstance(v, Tensor) and v.shape == old.shape:  # per-row moments (not the step count)
                    v = v[keep]
                    state[key] = v if extra is None else torch.cat([v, torch.zeros_like(extra, dtype=v.dtype)])
            if state:
                self.opt.state[new] = state
            group["params"] = [new]
            self.params[name] = new

    def densify(self, grad_mean: Tensor, d: Densify, generator: torch.Generator) -> tuple[int, int]:
        """One split-and-prune step (`Densify`); `grad_mean` [N]: each Gaussian's mean position-
        gradient norm. Returns (split, pruned) counts; `sources` then gives each row's row before."""
        p = {k: v.detach() for k, v in self.params.items()}
        n = len(self)
        split = torch.zeros(n, dtype=torch.bool, device=grad_mean.device)
        k = int(round(d.fraction * n))
        if k > 0:
            top = torch.topk(grad_mean, min(k, n)).indices
            split[top[grad_mean[top] > 0]] = True
        alive = torch.sigmoid(p["opacity_logits"]) >= d.prune_opacity
        parents = split & alive
        n_split = int(parents.sum())
        children = None
        if n_split:
            src = {k: v[parents] for k, v in p.items()}
            sigma = src["log_scales"].exp()
            R = quat_to_rotmat_torch(src["quats"])
            made = []
            for _ in range(2):
                noise = torch.randn(n_split, 3, generator=generator).to(sigma)
                made.append(
                    {
                        **src,
                        "means": src["means"] + (R @ (noise * sigma)[..., None])[..., 0],
                        "log_scales": src["log_scales"] - math.log(SPLIT_SHRINK),
                    }
                )
            children = {k: torch.cat([m[k] for m in made]) for k in _FIELDS}
        kept = alive & ~split
        self.keep_and_add(kept, children)
        born = parents.nonzero().squeeze(1)
        self.sources = torch.cat([kept.nonzero().squeeze(1), born, born])  # two children a parent, in that order
        return n_split, int((~alive).sum())


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean |pred − target| over the pixels in `mask` (None: all); 0 when the mask is empty."""
    err = (pred - target).abs()
    if mask is None:
        return err.mean()
    m = mask.to(torch.bool)
    total = torch.where(m[..., None], err, torch.zeros((), dtype=err.dtype, device=err.device)).sum()
    return total / (m.sum() * err.shape[-1]).clamp_min(1)


def view_loss(pred: Tensor, target: Tensor, mask: Tensor | None, ssim_lambda: float = 0.2) -> Tensor:
    """Upstream's form (no (1−λ) factor on L1): mean |pred − target| over the supervised pixels
    + λ·(1 − SSIM averaged over the same pixels). With a full mask (None) on CUDA, fused-ssim is
    used when installed; a partial mask needs the per-pixel SSIM map, so the torch SSIM is used."""

    loss = masked_l1(pred, target, mask)
    if ssim_lambda:
        loss = loss + ssim_lambda * (1.0 - masked_ssim(pred.clamp(0, 1), target, mask))
    return loss


def coverage_loss(alpha: Tensor, mask: Tensor | None, floor: float = COVERAGE_FLOOR) -> Tensor:
    """Mean max(0, floor − alpha) over the pixels in `mask` (None: all): how far the supervised
    pixels' accumulated alpha falls below `floor`; 0 when none does."""
    gap = (floor - alpha).clamp_min(0.0)
    if mask is None:
        return gap.mean()
    return torch.where(mask, gap, torch.zeros((), dtype=gap.dtype, device=gap.device)).sum() / mask.sum().clamp_min(1)


def depth_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean relative error |pred − target| / target over `mask` (0 when the mask is empty)."""
    rel = torch.where(mask, (pred - target).abs() / target, torch.zeros((), dtype=pred.dtype, device=pred.device))
    return rel.sum() / mask.sum().clamp_min(1)


def optimise(
    g: Gaussians,
    views: list,
    iters: int,
    *,
    trainable: Tensor | None = None,
    lrs: dict | None = None,
    ssim_lambda: float = 0.2,
    depth_weight: float = 0.0,
    alpha_weight: float = 0.0,
    terms: LossTerms | None = None,
    densify: Densify | None = None,
    seed: int = 0,
    backend: str = "auto",
    log_every: int = LOG_EVERY,
    progress: Callable[[int, float], None] | None = None,
    fixed_orientation_beyond: float | None = FIXED_ORIENTATION_BEYOND,
    held: Tensor | None = None,
    max_opacity: float | None = None,
) -> TrainReport:
    """Optimise `g` on `views` (`TrainView`s, or `DeviceView`s already on g's device) for `iters`
    iterations; returns the loss history.

    fixed_orientation_beyond: Gaussians farther than this many times the median distance of `g` from the
    views' cameras keep their normal, turning about it only (None: every rotation trains); see
    FIXED_ORIENTATION_BEYOND.

    held: bool [N], Gaussians that only the anchor views train (`TrainView.anchor`): a view that is not an
    anchor draws them as constants, so it moves only the others (a split Gaussian's children stay held).

    max_opacity: the opacities the fit may reach (None: any). A rasteriser skips the Gaussian that would take a
    pixel's transmittance below 1e-4 (`vd.splat_constants.T_MIN`, as gsplat does), so a pixel whose neighbours
    leave 3 % of it uncovered drops its own Gaussian of opacity 0.998 and shows the background through those 3 %;
    with every opacity at most 0.99 a skipped Gaussian finds the pixel at least 99 % covered.

    progress: optional callable(iteration, loss), called after the iterations whose losses are
    read: the first, every `log_every`-th and the last.
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
        if densify is not None:
            raise ValueError("densification trains every Gaussian: give no trainable subset with it")
        idx = tm.nonzero().squeeze(1)
        n_train = int(idx.numel())
    if held is not None:
        held = torch.as_tensor(held, device=dev)
        if held.dtype != torch.bool or held.shape != (len(g),):
            raise ValueError(f"held must be a bool tensor [{len(g)}]")
        held = held if idx is None else held[idx]  # over Adam's rows
    rep.n_trainable = n_train
    if n_train == 0:
        return rep
    lr = dict(DEFAULT_LRS)
    if lrs:
        unknown = set(lrs) - set(lr)
        if unknown:
            raise ValueError(f"unknown learning-rate keys {sorted(unknown)}; known: {sorted(lr)}")
        lr.update(lrs)
    names = ["rgb"] + (["depth"] if depth_weight else []) + (["alpha"] if alpha_weight else [])
    weights = {
        "rgb": 1.0,
        "depth": float(depth_weight),
        "alpha": float(alpha_weight),
        **(terms.weights if terms is not None else {}),
    }
    for extra in terms.weights if terms is not None else {}:
        if extra in names:
            raise ValueError(f"the loss term {extra!r} is vd.train's own")
        names.append(extra)

    base = {k: getattr(g, k).detach() for k in _FIELDS}
    adam = GaussianAdam(base if idx is None else {k: base[k][idx] for k in _FIELDS}, lr)
    gen = torch.Generator().manual_seed(int(seed))
    with_depth = bool(depth_weight) or terms is not None
    views_dev = [v if isinstance(v, DeviceView) else DeviceView.of(v, dev, depth=with_depth) for v in views]
    # with a trainable subset, each view is rendered only over the window those Gaussians reach
    # (the rest of the view is a constant of the loss: same gradients, far fewer pixels)
    # Adam moves a value by about its learning rate a step (more only where gradients jump)
    travel, growth = iters * lr["means"], math.exp(iters * lr["log_scales"])
    windows = (
        [None] * len(views_dev)
        if idx is None or terms is not None
        else [
            reach_window(
                adam.params["means"].detach(),
                adam.params["log_scales"].detach(),
                v.camera_from_world,
                v.K,
                v.width,
                v.height,
                travel=travel,
                growth=growth,
            )
            for v in views_dev
        ]
    )
    # with a trainable subset, a view's (or its window's) renders leave out the fixed Gaussians it does not
    # show: the same image, far less work
    shown: list[tuple[Tensor, Tensor] | None] = [
        None
        if idx is None or (w is not None and (w[2] <= w[0] or w[3] <= w[1]))
        else _shown_in_window(base, idx, v, w or (0, 0, v.width, v.height))
        for v, w in zip(views_dev, windows, strict=True)
    ]
    far_reach = _far_reach(base["means"], views_dev, fixed_orientation_beyond)
    history = torch.zeros(iters, 1 + len(names), device=dev)
    zero = torch.zeros((), device=dev)
    grad_sum = torch.zeros(len(adam), device=dev) if densify is not None else None
    grad_steps = 0
    t0 = time.perf_counter()
    order: list[int] = []  # views in a fresh random order each pass, so that each gets its share
    for it in range(iters):
        if not order:
            order = torch.randperm(len(views_dev), generator=gen).tolist()
        vi = order.pop()
        window_rows = shown[vi]
        values = adam.params if held is None or views_dev[vi].anchor else _holding(adam.params, held)
        if idx is None:
            cur = Gaussians(**values)
        elif window_rows is None:
            cur = Gaussians(**{k: base[k].index_put((idx,), values[k]) for k in _FIELDS})
        else:
            rows, at = window_rows
            cur = Gaussians(**{k: base[k][rows].index_put((at,), values[k]) for k in _FIELDS})
        parts = _loss_terms(
            cur, views_dev[vi], windows[vi], name, ssim_lambda, bool(depth_weight), terms, bool(alpha_weight)
        )
        loss = _weighted(parts, weights)
        if it == iters - 1 and windows[vi] is not None:  # a window's loss leaves out constants: the whole one
            with torch.no_grad():
                every = Gaussians(**{k: base[k].index_put((idx,), adam.params[k].detach()) for k in _FIELDS})
                whole = _loss_terms(
                    every, views_dev[vi], None, name, ssim_lambda, bool(depth_weight), terms, bool(alpha_weight)
                )
                rep.final_loss = float(_weighted(whole, weights))
        adam.step(loss, None if far_reach is None else _beyond(adam.params["means"].detach(), *far_reach))
        if max_opacity is not None:
            with torch.no_grad():
                adam.params["opacity_logits"].clamp_(max=math.log(max_opacity / (1.0 - max_opacity)))
        means_grad = adam.params["means"].grad
        if densify is not None and grad_sum is not None and means_grad is not None and it + 1 <= densify.until:
            grad_sum += means_grad.norm(dim=-1)
            grad_steps += 1
        history[it] = torch.stack([loss.detach(), *(parts.get(k, zero).detach() for k in names)])
        if it == 0 or (it + 1) % log_every == 0 or it == iters - 1:
            row = history[it].tolist()  # the one read of the device in a logged step
            rep.log.append({"iter": it + 1, "loss": row[0], **dict(zip(names, row[1:], strict=False))})
            if progress is not None:
                progress(it, row[0])
        if densify is not None and grad_sum is not None and densify.due(it + 1):
            n_split, n_pruned = adam.densify(grad_sum / max(grad_steps, 1), densify, gen)
            if held is not None and adam.sources is not None:
                held = held[adam.sources]
            rep.split += n_split
            rep.pruned += n_pruned
            grad_sum, grad_steps = torch.zeros(len(adam), device=dev), 0
    rep.seconds = time.perf_counter() - t0
    rep.iters = iters
    rep.losses = history[:, 0].tolist()
    if windows[vi] is None:
        rep.final_loss = rep.losses[-1]
    rep.adam_steps = int(adam.state("means").get("step", 0))
    with torch.no_grad():
        for k in _FIELDS:
            t, value = getattr(g, k), adam.params[k].detach()
            if idx is not None:
                t[idx] = value
            elif t.shape == value.shape:
                t.copy_(value)
            else:  # densified: a different number of Gaussians
                setattr(g, k, value.clone())
    return rep


def _holding(params: Mapping[str, Tensor], held: Tensor) -> dict[str, Tensor]:
    """The attributes with the `held` rows (bool [N]) detached: a render of them moves only the others."""
    return {k: torch.where(held.view(-1, *([1] * (v.ndim - 1))), v.detach(), v) for k, v in params.items()}


def _shown_in_window(base: dict[str, Tensor], idx: Tensor, view: DeviceView, window) -> tuple[Tensor, Tensor]:
    """The rows of `base` a `window` (x0, y0, x1, y1) of `view` renders while those at `idx` train: (the
    trainable rows and the fixed rows the window shows, in their order in `base`; the positions of the
    trainable rows among them). Keeping the order keeps the render's depth ties, so the window renders
    the same image as from every Gaussian. Indices only: a copy of the rows for each view would cost a
    large scene's GPU memory several times over."""
    x0, y0, x1, y1 = window
    Kw = view.K.clone()
    Kw[0, 2] -= x0
    Kw[1, 2] -= y0
    rows = in_view(Gaussians(**base), view.camera_from_world, Kw, x1 - x0, y1 - y0)
    rows[idx] = True
    rows = rows.nonzero().squeeze(1)
    return rows, torch.searchsorted(rows, idx)


def _axis(quats: Tensor, axis: Tensor) -> Tensor:
    """[N,3] the world direction of each Gaussian's axis `axis` [N] (0, 1 or 2)."""
    R = quat_to_rotmat_torch(quats)
    return R[torch.arange(len(R), device=R.device), :, axis]


def _turned(quats: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """[N,4] wxyz `quats` turned by the shortest rotation that takes unit directions a [N,3] to b [N,3] (their
    norms kept, so that Adam's steps keep their size)."""
    c = torch.cat([1.0 + (a * b).sum(-1, keepdim=True), torch.cross(a, b, dim=-1)], -1)
    c = torch.nn.functional.normalize(c, dim=-1)
    w1, x1, y1, z1 = c.unbind(-1)
    w2, x2, y2, z2 = quats.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        -1,
    )


def _camera_centres(views) -> Tensor:
    """[V,3] world positions of the views' cameras."""
    R = torch.stack([v.camera_from_world[:3, :3] for v in views])
    t = torch.stack([v.camera_from_world[:3, 3] for v in views])
    return -(R.transpose(1, 2) @ t[..., None])[..., 0]


def _far_reach(means: Tensor, views, beyond: float | None) -> tuple[Tensor, Tensor] | None:
    """(camera centres [V,3], distance): a Gaussian farther than `distance` from every centre is far, where
    distance is `beyond` times the median distance of `means` from the nearest centre; None when off."""
    if beyond is None or len(means) == 0:
        return None
    centres = _camera_centres(views).to(means)
    return centres, beyond * torch.cdist(means, centres).amin(1).median()


def _beyond(means: Tensor, centres: Tensor, distance: Tensor) -> Tensor:
    """bool [N]: farther than `distance` from every camera centre."""
    return torch.cdist(means, centres).amin(1) > distance


REACH_MARGIN = 12  # px around the Gaussians' reach: the SSIM window's diameter (11), and one


def reach_window(
    means: Tensor,
    log_scales: Tensor,
    camera_from_world: Tensor,
    K: Tensor,
    W: int,
    H: int,
    *,
    travel: float = 0.0,
    growth: float = 1.0,
    margin: int = REACH_MARGIN,
) -> tuple[int, int, int, int] | None:
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


def _weighted(parts: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """The loss: Σ weight · term."""
    total = None
    for k, v in parts.items():
        total = weights[k] * v if total is None else total + weights[k] * v
    assert total is not None  # there is always an "rgb" term
    return total


def _loss_terms(
    g: Gaussians,
    view: DeviceView,
    window,
    backend: str,
    ssim_lambda: float,
    with_depth: bool,
    terms: LossTerms | None,
    with_alpha: bool = False,
) -> dict[str, Tensor]:
    """One view's unweighted loss terms: "rgb" (`view_loss`), "depth" (the relative depth error,
    when `with_depth` and the view has a depth target), "alpha" (`coverage_loss`, when
    `with_alpha`) and the `terms`' own, over the whole view;
    or, over a `window`, each term's sum over its pixels divided by the whole view's counts (the
    same gradient when nothing outside the window can change). No read of the device."""
    if window is None:
        out = render(g, view.camera_from_world[None], view.K[None], view.width, view.height, backend=backend)
        parts = {"rgb": view_loss(out.rgb[0], view.rgb, view.mask, ssim_lambda)}
        if with_depth and view.depth is not None and view.depth_mask is not None:
            parts["depth"] = depth_loss(out.depth[0], view.depth, view.depth_mask)
        if with_alpha:
            parts["alpha"] = coverage_loss(out.alpha[0], view.mask)
        if terms is not None:
            parts.update(terms(out, view))
        return parts
    x0, y0, x1, y1 = window
    n = view.n_supervised
    if x1 <= x0 or y1 <= y0 or n == 0:  # nothing trainable in sight: no gradient
        return {"rgb": g.means.sum() * 0.0}
    Kw = view.K.clone()
    Kw[0, 2] -= x0
    Kw[1, 2] -= y0
    out = render(g, view.camera_from_world[None], Kw[None], x1 - x0, y1 - y0, backend=backend)
    pred, win = out.rgb[0], (slice(y0, y1), slice(x0, x1))
    target = view.rgb[win]
    m = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device) if view.mask is None else view.mask[win]
    none = torch.zeros((), dtype=pred.dtype, device=pred.device)
    rgb = torch.where(m[..., None], (pred - target).abs(), none).sum() / (3 * n)
    if ssim_lambda:
        mixed = torch.where(m[..., None], pred.clamp(0, 1), target)
        rgb = rgb + ssim_lambda * (1.0 - torch.where(m, ssim_map(mixed, target), none).sum() / n)
    parts = {"rgb": rgb}
    if with_alpha:
        parts["alpha"] = torch.where(m, (COVERAGE_FLOOR - out.alpha[0]).clamp_min(0.0), none).sum() / n
    if with_depth and view.depth is not None and view.depth_mask is not None and view.n_depth:
        d, dm = view.depth[win], view.depth_mask[win]
        parts["depth"] = torch.where(dm, (out.depth[0] - d).abs() / d, none).sum() / view.n_depth
    return parts


class _ColourTarget(NamedTuple):
    """One view (or the window of it that trainable Gaussians reach) for `fit_colours`."""

    rgb: Tensor  # [H,W,3]
    mask: Tensor  # [H,W] bool
    K: Tensor  # [1,3,3] the window's intrinsics
    vm: Tensor  # [1,4,4] camera_from_world
    W: int
    H: int
    rows: Tensor  # [M] the Gaussians the window shows (indices: no copy of them for each view)


def fit_colours(
    g: Gaussians, views: list, iters: int = 8, *, trainable: Tensor | None = None, backend: str = "auto"
) -> None:
    """Solve, in place, for the base colours (SH DC) that reproduce `views` over their supervised
    pixels with the geometry and opacities fixed.

    A lifted Gaussian overlaps its neighbours, so its pixel's own colour renders blurred; the
    rendered colour is linear in the Gaussians' colours, and a few SIRT iterations (residual
    divided by each pixel's alpha, back-projected with the compositing weights, divided by each
    Gaussian's total weight) deconvolve it. Cheaper than the optimiser's iterations, whose colour
    learning rate moves a colour by about 0.01 in 30 steps.

    Across a depth edge the deconvolution cancels the nearer surface's blur with the farther one's
    colour: the wall beside a red box turns cyan. Any other view shifts the two apart and shows that
    complement as an outline, so a Gaussian whose pixels mix depth layers (`mixed_layers`) keeps its
    colour within MIXED_COLOUR_STEP of the one it came in with.
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
        box = (
            None
            if keep is None
            else reach_window(fixed["means"][keep], fixed["log_scales"][keep], vm, K, v.width, v.height)
        )
        x0, y0, x1, y1 = (0, 0, v.width, v.height) if box is None else box
        if x1 <= x0 or y1 <= y0:
            continue
        Kw = K.clone()
        Kw[0, 2] -= x0
        Kw[1, 2] -= y0
        # the Gaussians the window shows, in their order (the same image as from all of them)
        rows = in_view(Gaussians(sh=g.sh.detach(), **fixed), vm, Kw, x1 - x0, y1 - y0).nonzero().squeeze(1)
        targets.append(_ColourTarget(rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1], Kw[None], vm[None], x1 - x0, y1 - y0, rows))
    if not targets:
        return

    def weights(dc: Tensor, t: _ColourTarget, residual) -> Tensor:
        part = dc[t.rows].detach().requires_grad_(True)
        out = render(
            Gaussians(sh=torch.cat([part[:, None], sh_rest[t.rows]], 1), **{k: v[t.rows] for k, v in fixed.items()}),
            t.vm,
            t.K,
            t.W,
            t.H,
            backend=name,
        )
        m = t.mask[..., None].float()
        if residual == "depth":  # Σ_p w_i(p) D_p, D the rendered (expected) depth
            weighted = (out.rgb[0] * out.depth[0].detach()[..., None] * m).sum()
        elif residual:  # Σ_p w_i(p) (t_p − r_p) / α_p
            r = (t.rgb - out.rgb[0]).detach() / out.alpha[0].detach().clamp_min(1e-3)[..., None]
            weighted = (out.rgb[0] * r * m).sum()
        else:  # Σ_p w_i(p)
            weighted = (out.rgb[0] * m).sum()
        if not weighted.requires_grad:  # nothing is drawn into the window
            return torch.zeros_like(dc)
        weighted.backward()
        assert part.grad is not None
        return torch.zeros_like(dc).index_put_((t.rows,), part.grad / C0)

    dc = g.sh[:, 0].detach().clone()
    with torch.enable_grad():
        # one step over all views at once: each Gaussian's back-projected residuals summed over the views,
        # divided by its total weight in them. Stepping view by view, each step normalised by that view's
        # weights alone, over-corrects the Gaussians two views share (the canvas's ring meets the input
        # frame along its border) and diverged there: real photos' input views lost 2-5 dB at 12 iterations
        per_view = [weights(dc, t, residual=False) for t in targets]
        column = torch.stack(per_view).sum(0)
        ok = column > 1e-3 if keep is None else (column > 1e-3) & keep[:, None]
        mixed = torch.zeros(len(dc), dtype=torch.bool, device=dev)
        for t, w in zip(targets, per_view, strict=True):
            at_depth = weights(dc, t, residual="depth")
            mixed |= mixed_layers(w[:, 0], at_depth[:, 0], fixed["means"], t.vm[0])
        reach = torch.where(mixed, MIXED_COLOUR_STEP / C0, float("inf"))[:, None]
        dc0 = dc.clone()
        for _ in range(int(iters)):
            step = torch.stack([weights(dc, t, residual=True) for t in targets]).sum(0) / column.clamp_min(1e-6)
            step = torch.where(ok, step, torch.zeros_like(step))  # no boolean indexing: no wait for the GPU
            dc = torch.minimum(torch.maximum(dc + step / C0, dc0 - reach), dc0 + reach)
    with torch.no_grad():
        g.sh[:, 0] = dc


def mixed_layers(weight: Tensor, weighted_depth: Tensor, means: Tensor, camera_from_world: Tensor) -> Tensor:
    """[N] bool: the Gaussians whose pixels in a view render, weighted by the Gaussian's own compositing
    weight there (`weighted_depth` / `weight`), a depth more than MIXED_DEPTH (relative) from its own: the
    ones on a depth edge, whose pixels blend a nearer and a farther surface."""
    z = (means @ camera_from_world[:3, :3].T + camera_from_world[:3, 3])[:, 2]
    seen = weight > 1e-3
    mean_depth = weighted_depth / weight.clamp_min(1e-6)
    return seen & ((mean_depth - z).abs() > MIXED_DEPTH * z.clamp_min(1e-6))


__all__ = [
    "COVERAGE_FLOOR",
    "MAX_OPACITY",
    "MIXED_COLOUR_STEP",
    "MIXED_DEPTH",
    "DEFAULT_LRS",
    "LOG_EVERY",
    "Densify",
    "DeviceView",
    "GaussianAdam",
    "LossTerms",
    "TrainReport",
    "TrainView",
    "coverage_loss",
    "depth_loss",
    "fit_colours",
    "masked_l1",
    "mixed_layers",
    "optimise",
    "reach_window",
    "view_loss",
]
