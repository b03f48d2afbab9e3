"""`vd refine`: optimise Gaussians on a refine dataset with RGB + continuous-surface supervision.

It trains through vd's one optimiser (`vd.train.optimise`: its RGB loss, parameter groups, views
and densification), adding two terms of its own (`SurfaceTerms`, per iteration, one view;
docs/upstream.md#refine-supervision):

- RGB (vd.train): L1 + ssim_lambda (1 - SSIM) between the render and the image, all pixels.
- Depth: the depth prior is aligned to the *detached* rendered depth by a per-view
  scale + shift least-squares fit on the supervised pixels (mask, rendered alpha > min_alpha,
  both depths finite and positive); the loss is a Huber (SmoothL1) of the residual relative to
  the view's median depth, NaN/Inf safe (non-finite pixels never enter the loss or its gradient).
- Normals: from the rendered depth (back-project, central differences, cross product); the
  loss is ``1 - |n_render . n_prior|`` (sign-insensitive) on the supervised pixels with a prior
  depth where both normals are defined.
- Coverage (vd.train, weighted by `alpha_weight`): how far each pixel's alpha falls below 0.99,
  averaged over the view (`vd.train.coverage_loss`). A photo has no see-through pixels, but fitting a
  texture finer than the Gaussians slides them apart and opens pinholes that only darken the colour;
  this term holds them closed (as in `vd coarse` and `vd fine`).
- Anchors (``hold_anchored``): the Gaussians the dataset's anchor views (the photo and its outpainted
  ring, `vd.views.ANCHOR_KINDS`) blend into more than `vd.unseen.WEIGHT_LIMIT` of a pixel train on
  those views only; the added views train the rest. An added view's image is the scene's render from
  its pose plus the pixels generated there: resampled, it pulls what the photo sees away from the
  photo (holding it gave bench/quality's input views 0.9-1.6 dB on real photographs, 3.7-5.5 dB on
  rendered scenes), while what it alone shows needs it. A dataset without anchors (every view a
  "view") trains every Gaussian on every view.
- Seal (``seal``): after the fit, the pinholes a small move opens are sealed behind the surface, out of
  the input view's sight, as `vd coarse` ends (`vd.stages.coarse_view.seal_moves`); the fit slides
  Gaussians apart and reopens what the coarse seal closed. Needs the dataset's input view at the
  identity pose (vd's own datasets); others are left as fitted.
- Optional densify/prune (`vd.train.Densify`): every `densify_every` iterations from
  `densify_from` until `densify_until`, the Gaussians with the largest accumulated position
  gradient are split in two (scale / 1.6, jittered), and those with opacity below
  `prune_opacity` are removed; Adam's state of the others carries over.

Both terms are computed on the device, without reading anything back, so that a training step
never waits for the GPU (issue 29); the losses are read every `vd.train.LOG_EVERY` iterations.

There is deliberately no thinness/thickness regulariser: a config that asks for one is
rejected with a usage error (the seed's explicit non-goal).

Parameters: `vd.params.RefineParams` (defaults and help declared once). Outputs:
``gaussians_refined.ply`` and ``refine_meta.json`` (inputs and hashes, parameters, per-view
alignment, depth/normal consistency metrics before and after, losses). Memoised in the vd cache:
the key covers the dataset's files, the initial PLY, every parameter (`RefineParams.key_params`),
the backend and the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vd import __version__, console
from vd.cache import Cache, content_hash, file_hash, stage_key
from vd.errors import InputError, UsageError, check_input_file
from vd.export.colmap import load_dataset
from vd.export.normals import normals_from_depth_torch
from vd.export.read import read_gaussians
from vd.fsio import atomic_write_bytes
from vd.gaussians import Gaussians
from vd.params import RefineParams
from vd.paths import resolve_device
from vd.ply import encode_ply
from vd.render import render, resolve_backend
from vd.views import ANCHOR_KINDS, pixel_footprint

VERSION = 6  # 2: trained through vd.train (fused Adam kept across densification, torch-seeded view order);
# 3: the coverage term (alpha_weight); 4: far Gaussians keep their normal (vd.train.FIXED_ORIENTATION_BEYOND);
# 5: what the anchors see, the anchors train (hold_anchored); 6: the pinholes a move opens sealed (seal)


# ------------------------------------------------------------------------------ config
def load_config(path) -> dict:
    """Read a refine config (JSON or TOML) and check it; UsageError on forbidden/unknown keys."""

    p = check_input_file(path, "refine config")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise InputError(
                    f"reading TOML ({p.name}) needs Python 3.11 or newer; use a JSON config instead"
                ) from None
            cfg = tomllib.loads(text)
        else:
            cfg = json.loads(text)
    except Exception as e:
        raise InputError(f"refine config {p} could not be parsed ({type(e).__name__}: {e})") from None
    return check_config(cfg, str(p))


def check_config(cfg, where: str = "config") -> dict:
    """The fields a config sets, checked (`RefineParams.check_mapping`)."""
    return RefineParams.check_mapping(cfg, where)


def resolve_params(config: dict | None = None, **options) -> RefineParams:
    """Defaults, then the config file, then explicit options (None = not given); validated."""
    return RefineParams.resolve(config, **options)


# ------------------------------------------------------------------------------ losses
def fit_scale_shift(prior, target, mask=None, *, min_pixels: int = 16):
    """Least-squares (s, b) minimising sum((s*prior + b - target)^2) over `mask` (and finite
    pixels), as 0-d tensors on the inputs' device, with the pixel count n; nothing is read back
    to the host. With too few pixels or a constant prior: s = 1, b = mean(target - prior)."""
    import torch

    dtype = torch.float32 if prior.device.type == "mps" else torch.float64  # mps has no float64
    x, y = prior.detach().to(dtype).reshape(-1), target.detach().to(dtype).reshape(-1)
    ok = torch.isfinite(x) & torch.isfinite(y)
    if mask is not None:
        ok = ok & mask.reshape(-1).to(device=ok.device, dtype=torch.bool)
    zero = torch.zeros((), dtype=dtype, device=x.device)
    n = ok.sum()
    per = 1.0 / n.clamp_min(1).to(dtype)
    mx, my = torch.where(ok, x, zero).sum() * per, torch.where(ok, y, zero).sum() * per
    dx, dy = torch.where(ok, x - mx, zero), torch.where(ok, y - my, zero)
    vx, cov = (dx * dx).sum() * per, (dx * dy).sum() * per
    degenerate = (n < min_pixels) | (vx < 1e-12 * (mx * mx).clamp_min(1e-12))
    s = torch.where(degenerate, torch.ones_like(vx), cov / torch.where(degenerate, torch.ones_like(vx), vx))
    return s, my - s * mx, n


def align_scale_shift(prior, target, mask=None, *, min_pixels: int = 16):
    """`fit_scale_shift` of numpy arrays or torch tensors, as (s, b) floats and the pixel count."""
    import torch

    def tensor(a, dtype):
        return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, dtype=dtype))

    s, b, n = fit_scale_shift(
        tensor(prior, np.float64),
        tensor(target, np.float64),
        None if mask is None else tensor(mask, bool),
        min_pixels=min_pixels,
    )
    return float(s), float(b), int(n)


def huber_depth_loss(pred, target, mask, delta: float = 0.01, scale=None):
    """Mean SmoothL1 of (pred - target)/scale over `mask` pixels where both are finite; 0 when
    no pixel qualifies. Non-finite values never reach the loss or its gradient; computed
    tensor-side (no boolean indexing, no read of the device)."""
    import torch

    ok = mask.bool() & torch.isfinite(pred) & torch.isfinite(target)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    r = (torch.where(ok, pred, zero) - torch.where(ok, target, zero)) / (1.0 if scale is None else scale)
    per_pixel = torch.nn.functional.smooth_l1_loss(r, torch.zeros_like(r), beta=delta, reduction="none")
    return torch.where(ok, per_pixel, zero).sum() / ok.sum().clamp_min(1)


def normal_loss(n_pred, n_prior, mask):
    """mean(1 - |n_pred . n_prior|) over mask: sign-insensitive (n and -n cost the same); 0 on an
    empty mask. Tensor-side, no read of the device."""
    import torch

    ok = mask.bool()
    miss = 1.0 - (n_pred * n_prior).sum(-1).abs()
    return torch.where(ok, miss, torch.zeros((), dtype=miss.dtype, device=miss.device)).sum() / ok.sum().clamp_min(1)


@dataclass
class Surface:
    """One render's depth and normal terms against a view's priors, with what the metrics need."""

    depth_loss: Any
    normal_loss: Any
    scale: Any  # the prior's fitted scale and shift (0-d tensors) and the pixels they were fitted on
    shift: Any
    pixels: Any
    target: Any  # the aligned prior [H,W]
    valid: Any  # [H,W] pixels of the depth term
    normals: Any  # [H,W,3] normals of the rendered depth
    normal_valid: Any  # [H,W] pixels of the normal term


@dataclass
class SurfaceTerms:
    """vd refine's depth and normal terms, for `vd.train.optimise(terms=...)`."""

    depth_weight: float
    normal_weight: float
    huber_delta: float
    min_alpha: float
    weights: dict = field(init=False)

    def __post_init__(self):
        self.weights = {"depth": self.depth_weight, "normal": self.normal_weight}

    def __call__(self, out, view) -> dict:
        s = self.surface(out, view)
        return {"depth": s.depth_loss, "normal": s.normal_loss}

    def surface(self, out, view) -> Surface:
        """The terms of a render `out` (vd.render output) of `view` (a `vd.train.DeviceView` with
        a depth prior and, optionally, a normal prior)."""
        import torch

        d_r, alpha = out.depth[0], out.alpha[0]
        surf = (alpha.detach() > self.min_alpha) & torch.isfinite(d_r.detach())
        if view.depth is None:  # no prior: nothing to align to
            prior, prior_ok = torch.ones_like(d_r), torch.zeros_like(surf)
        else:
            prior, prior_ok = view.depth, view.depth_mask
        valid = prior_ok & surf
        s, b, n = fit_scale_shift(prior, d_r, valid)
        target = (s * prior + b).to(d_r.dtype)
        median = torch.where(valid, target, torch.full_like(target, math.nan)).nanmedian()
        scale = torch.where(n > 0, median.clamp_min(1e-6), torch.ones_like(median))
        l_depth = huber_depth_loss(d_r, target, valid, self.huber_delta, scale)
        n_r, n_ok = normals_from_depth_torch(torch.where(surf, d_r, torch.zeros_like(d_r)), view.K, surf)
        n_prior = torch.zeros_like(n_r) if view.normal is None else view.normal
        nvalid = n_ok & (n_prior.norm(dim=-1) > 0.5) & prior_ok
        return Surface(l_depth, normal_loss(n_r, n_prior, nvalid), s, b, n, target, valid, n_r, nvalid)


# ------------------------------------------------------------------------------ run
@dataclass
class RefineResult:
    out: Path
    ply: Path
    meta_path: Path
    meta: dict
    cached: bool

    def to_dict(self) -> dict:
        m = self.meta.get("metrics", {})
        return {
            "out": str(self.out),
            "ply": str(self.ply),
            "meta": str(self.meta_path),
            "cached": self.cached,
            "gaussians": self.meta.get("gaussians", {}).get("final"),
            "held_by_anchors": self.meta.get("gaussians", {}).get("held_by_anchors"),
            "sealed": self.meta.get("gaussians", {}).get("sealed"),
            "before": {k: m.get("before", {}).get(k) for k in ("depth_abs_rel", "normal_deg", "psnr")},
            "after": {k: m.get("after", {}).get(k) for k in ("depth_abs_rel", "normal_deg", "psnr")},
        }


def dataset_hash(path: Path) -> str:
    entries = []
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            entries.append(f"{f.relative_to(path).as_posix()}:{file_hash(f)}")
    return content_hash("\n".join(entries).encode())


def train_views(views) -> list:
    """The `vd.train.TrainView`s of a refine dataset's views: the RGB supervises every pixel;
    the depth and normal priors, the supervised pixels (the dataset's masks). The input and the ring
    are the anchors (`vd.train.TrainView.anchor`)."""
    import torch

    from vd.train import TrainView

    def tensor(a, dtype=np.float32):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    return [
        TrainView(
            rgb=tensor(v.rgb.astype(np.float32) / 255.0),
            mask=torch.ones(v.height, v.width, dtype=torch.bool),
            K=tensor(v.K),
            camera_from_world=tensor(v.camera_from_world()),
            depth=tensor(v.depth),
            depth_mask=tensor(v.supervise, bool),
            normal=tensor(v.normal),
            anchor=v.kind in ANCHOR_KINDS,
        )
        for v in views
    ]


def evaluate(g, views, names, terms: SurfaceTerms, backend) -> dict:
    """Depth and normal consistency (and RGB) metrics of `g` against every view's priors
    (`views`: `vd.train.DeviceView`s, `names`: theirs)."""
    import torch

    per = []
    with torch.no_grad():
        for name, v in zip(names, views, strict=False):
            out = render(g, v.camera_from_world[None], v.K[None], v.width, v.height, backend=backend)
            sf = terms.surface(out, v)
            npx = int(sf.pixels)
            rel = (out.depth[0] - sf.target).abs() / sf.target.abs().clamp_min(1e-6)
            abs_rel = rel[sf.valid].mean().item() if npx else float("nan")
            n_normal = int(sf.normal_valid.sum())
            if n_normal:
                cos = (sf.normals * v.normal).sum(-1).abs().clamp(0, 1)[sf.normal_valid]
                ndeg = torch.rad2deg(torch.acos(cos)).mean().item()
            else:
                ndeg = float("nan")
            mse = ((out.rgb[0] - v.rgb) ** 2).mean().item()
            alpha = out.alpha[0]
            per.append(
                {
                    "view": name,
                    "scale": float(sf.scale),
                    "shift": float(sf.shift),
                    "pixels": npx,
                    "depth_abs_rel": abs_rel,
                    "normal_deg": ndeg,
                    "normal_loss": float(sf.normal_loss),
                    "normal_pixels": n_normal,
                    "rgb_l1": float((out.rgb[0] - v.rgb).abs().mean()),
                    "psnr": float(-10 * math.log10(max(mse, 1e-12))),
                    "alpha_below_0.9": float((alpha < 0.9).float().mean()),
                    "alpha_below_0.98": float((alpha < 0.98).float().mean()),
                }
            )

    def mean(key):
        vals = [d[key] for d in per if d[key] == d[key]]
        return float(np.mean(vals)) if vals else None

    return {
        "depth_abs_rel": mean("depth_abs_rel"),
        "normal_deg": mean("normal_deg"),
        "normal_loss": mean("normal_loss"),
        "rgb_l1": mean("rgb_l1"),
        "psnr": mean("psnr"),
        "alpha_below_0.9": mean("alpha_below_0.9"),
        "alpha_below_0.98": mean("alpha_below_0.98"),
        "per_view": per,
        "definition": {
            "depth_abs_rel": "mean |d_render - (s*d_prior + b)| / (s*d_prior + b) on mask & alpha>min_alpha, "
            "(s,b) fitted per view",
            "normal_deg": "mean angle (degrees, sign-insensitive) between normals of the rendered depth and the prior",
            "normal_loss": "mean 1 - |n_render . n_prior|",
            "alpha_below_0.9": "share of a view's pixels whose rendered alpha is below 0.9 (pinholes, holes)",
        },
    }


def seen_by_anchors(g, views, backend) -> Any:
    """bool [N]: the Gaussians an anchor view (`views`: `vd.train.DeviceView`s) blends into more than
    `vd.unseen.WEIGHT_LIMIT` of a pixel; all False when the dataset has no anchor (every view is a "view")."""
    import torch

    from vd.unseen import WEIGHT_LIMIT, blend_weights

    seen = torch.zeros(len(g), dtype=torch.bool, device=g.means.device)
    nothing = g.select(seen)
    for v in views:
        if v.anchor:
            w = blend_weights(nothing, g, v.camera_from_world, v.K, v.width, v.height, backend)
            seen |= w > WEIGHT_LIMIT
    return seen


def sealing(g, views_data, backend):
    """The Gaussians that seal the pinholes a move opens in `g` (`vd.stages.coarse_view.seal_moves`, as `vd
    coarse` ends), out of the input view's sight; None when the dataset has no input view at the identity
    pose to place the moves around."""
    from vd.stages.coarse_view import seal_moves

    first = views_data[0] if views_data else None
    if first is None or first.kind != "input" or not np.allclose(first.world_from_camera, np.eye(4), atol=1e-6):
        return None
    with console.status("refine: sealing the pinholes a move opens"):
        return seal_moves(g, views_data, backend)


def run_refine(views_data, g0, p: RefineParams, *, device: str, progress=None) -> tuple[Any, dict]:
    """Optimise `g0` on the dataset views through `vd.train.optimise`; returns (refined Gaussians
    on CPU, run info)."""
    import torch

    from vd.train import Densify, DeviceView, optimise

    torch.manual_seed(p.seed)
    backend = resolve_backend(p.backend, device)
    g = g0.to(device).clone()
    footprint = pixel_footprint(views_data)
    views = [DeviceView.of(t, device, depth=True) for t in train_views(views_data)]
    names = [v.name for v in views_data]
    terms = SurfaceTerms(p.depth_weight, p.normal_weight, p.huber_delta, p.min_alpha)
    before = evaluate(g, views, names, terms, backend)
    n0 = len(g)
    held = seen_by_anchors(g, views, backend) if p.hold_anchored else None
    lrs = {
        "means": p.lr_means * footprint,
        "log_scales": p.lr_scales,
        "quats": p.lr_quats,
        "opacity_logits": p.lr_opacity,
        "sh": p.lr_sh,
    }
    densify = (
        Densify(
            every=p.densify_every,
            start=p.densify_from,
            until=int(p.densify_until * p.iters),
            fraction=p.densify_fraction,
            prune_opacity=p.prune_opacity,
        )
        if p.densify
        else None
    )
    report = None
    if progress is not None:
        task = progress.add_task("refine", total=p.iters)

        def report(it: int, loss: float) -> None:
            progress.update(task, completed=it + 1, description=f"refine loss {loss:.4f}")

    rep = optimise(
        g,
        views,
        p.iters,
        lrs=lrs,
        ssim_lambda=p.ssim_lambda,
        alpha_weight=p.alpha_weight,
        terms=terms,
        densify=densify,
        seed=p.seed,
        backend=backend,
        progress=report,
        held=held,
    )
    sealed = sealing(g, views_data, backend) if p.seal else None
    if sealed is not None:
        g = Gaussians.cat([g, sealed])
    after = evaluate(g, views, names, terms, backend)
    info = {
        "backend": backend,
        "device": str(device),
        "pixel_footprint": footprint,  # the unit of lr_means
        "seconds": rep.seconds,
        "iters_per_second": (p.iters / rep.seconds) if rep.seconds > 0 and p.iters else None,
        "gaussians": {
            "initial": n0,
            "final": len(g),
            "split": rep.split,
            "pruned": rep.pruned,
            "held_by_anchors": None if held is None else int(held.sum()),
            "sealed": None if sealed is None else len(sealed),
        },
        "adam_steps": rep.adam_steps,
        "alignment": [{k: d[k] for k in ("view", "scale", "shift", "pixels")} for d in after["per_view"]],
        "metrics": {"before": before, "after": after},
        "losses": rep.log,
    }
    return g.to("cpu"), info


def cache_key(p: RefineParams, inputs: dict, backend: str) -> str:
    """The cache key of a refine run: its parameters (`RefineParams.key_params`, every field but the
    seed and the renderer, keyed apart), the inputs' hashes, the resolved `backend` and the seed."""
    return stage_key(
        stage="refine",
        version=VERSION,
        params=p.key_params(),
        inputs=inputs,
        models={},
        backend=backend,
        dtype="float32",
        seed=p.seed,
    )


def refine(dataset, init, out, *, config=None, device=None, progress=None, **options) -> RefineResult:
    """Validate the dataset, refine `init` on it (memoised), write the outputs into `out`.
    `options`: RefineParams fields (None: not given), over the `config` file's, over the defaults."""

    dataset = Path(dataset)
    init = check_input_file(init, "initial PLY (--init)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder")
    cfg = load_config(config) if config is not None else {}
    p = resolve_params(cfg, **options)
    device = resolve_device(device)
    views, dmeta = load_dataset(dataset)  # strict validation first
    g0, pmeta = read_gaussians(init)
    if len(g0) == 0:
        raise InputError(f"{init} holds no Gaussians")

    backend = resolve_backend(p.backend, device)
    inputs = {"dataset": dataset_hash(dataset), "init": file_hash(init)}
    key = cache_key(p, inputs, backend)

    def compute():
        g, info = run_refine(views, g0, p, device=device, progress=progress)
        meta = {
            "stage": "refine",
            "version": VERSION,
            "vd_version": __version__,
            "key": key,
            "inputs": {
                "dataset": str(dataset.resolve()),
                "dataset_hash": inputs["dataset"],
                "dataset_format": dmeta.get("format"),
                "dataset_provenance": dmeta.get("provenance"),
                "init": str(init.resolve()),
                "init_hash": inputs["init"],
                "init_count": len(g0),
                "config": str(Path(config).resolve()) if config is not None else None,
                "config_hash": file_hash(config) if config is not None else None,
            },
            "params": asdict(p),
            "losses_used": {
                "rgb": "L1 + ssim_lambda * (1 - SSIM), all pixels",
                "depth": "SmoothL1 of the relative residual to the per-view scale+shift-aligned prior",
                "normal": "1 - |n_render . n_prior|",
                "thinness_thickness": "none (explicit non-goal)",
            },
            **info,
        }
        kept = {k: v for k, v in pmeta.get("comments", {}).items() if k in ("up", "image_hash", "intrinsics")}
        ply_bytes, _ = encode_ply(g, comments={"stage": "refine", "refine_key": key, **kept})
        meta = _clean(meta)
        meta_json = json.dumps(meta, indent=2, default=_json_default).encode()
        return {"gaussians_refined.ply": ply_bytes, "refine_meta.json": meta_json}

    cache = Cache.open()
    record, hit = cache.memoise(key, compute, stage="refine", image=None, meta={"dataset": str(dataset)})
    out.mkdir(parents=True, exist_ok=True)
    ply_path = atomic_write_bytes(out / "gaussians_refined.ply", record.read("gaussians_refined.ply"))
    meta_bytes = record.read("refine_meta.json")
    meta_path = atomic_write_bytes(out / "refine_meta.json", meta_bytes)
    return RefineResult(out, ply_path, meta_path, json.loads(meta_bytes), hit)


def _clean(o):
    """NaN/Inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(type(o).__name__)


__all__ = [
    "VERSION",
    "RefineResult",
    "Surface",
    "SurfaceTerms",
    "align_scale_shift",
    "cache_key",
    "check_config",
    "dataset_hash",
    "evaluate",
    "fit_scale_shift",
    "huber_depth_loss",
    "load_config",
    "normal_loss",
    "refine",
    "resolve_params",
    "run_refine",
    "train_views",
]
