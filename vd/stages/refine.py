"""`vd refine`: optimise Gaussians on a refine dataset with RGB + continuous-surface supervision.

Per iteration (one view; docs/upstream.md#refine-supervision):

- RGB: L1 + 0.2 (1 - SSIM) between the render and the image (all pixels; `ssim_lambda`).
- Depth: the depth prior is aligned to the *detached* rendered depth by a per-view
  scale + shift least-squares fit on the supervised pixels (mask, rendered alpha > 0.5, both
  depths finite and positive); the loss is a Huber (SmoothL1) of the residual relative to the
  view's median depth, NaN/Inf safe (non-finite pixels never enter the loss or its gradient).
- Normals: from the rendered depth (back-project, central differences, cross product); the
  loss is ``1 - |n_render . n_prior|`` (sign-insensitive) on pixels where both are defined.
- Optional densify/prune: every `densify_every` iterations until `densify_until`, the Gaussians
  with the largest accumulated position gradient are split in two (scale / 1.6, jittered), and
  those with opacity below `prune_opacity` are removed.

There is deliberately no thinness/thickness regulariser: a config that asks for one is
rejected with a usage error (the seed's explicit non-goal).

Outputs: ``gaussians_refined.ply`` and ``refine_meta.json`` (inputs and hashes, parameters,
per-view alignment, depth/normal consistency metrics before and after, losses). Memoised in the
vd cache: the key covers the dataset's files, the initial PLY, every parameter, the backend and
the seed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vd import __version__
from vd.cache import Cache, content_hash, file_hash, stage_key
from vd.errors import InputError, UsageError, check_input_file
from vd.export.colmap import load_dataset
from vd.export.normals import normals_from_depth_torch
from vd.export.read import read_gaussians
from vd.fsio import atomic_write_bytes
from vd.geometry import quat_to_rotmat_torch
from vd.paths import resolve_device
from vd.ply import encode_ply
from vd.render import render, resolve_backend

VERSION = 1

DEFAULTS: dict[str, Any] = {
    "iters": 300,
    "depth_weight": 0.5,
    "normal_weight": 0.1,
    "densify": False,
    "ssim_lambda": 0.2,  # RGB loss = L1 + ssim_lambda * (1 - SSIM), as vd's other stages
    "huber_delta": 0.01,  # relative depth residual where the loss turns linear
    "lr_means": 5e-4,  # times the scene extent (median prior depth)
    "lr_scales": 5e-3,
    "lr_quats": 1e-3,
    "lr_opacity": 2.5e-2,
    "lr_sh": 2.5e-3,
    "densify_every": 100,
    "densify_from": 100,
    "densify_until": 0.6,  # fraction of iters
    "densify_fraction": 0.02,  # share of Gaussians split per densify step
    "prune_opacity": 0.005,
    "min_alpha": 0.5,  # rendered alpha above which the rendered depth counts as a surface
    "backend": "auto",
    "seed": 0,
}

_TYPES = {k: type(v) for k, v in DEFAULTS.items()}


# ------------------------------------------------------------------------------ config
def _forbidden_keys(obj, prefix="") -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}{k}"
            low = str(k).lower()
            if "thin" in low or "thick" in low:
                found.append(name)
            found += _forbidden_keys(v, name + ".")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _forbidden_keys(v, f"{prefix}{i}.")
    return found


def load_config(path) -> dict:
    """Read a refine config (JSON or TOML) and check it; UsageError on forbidden/unknown keys."""

    p = check_input_file(path, "refine config")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise InputError(f"reading TOML ({p.name}) needs Python 3.11 or newer; use a JSON config instead") from None
            cfg = tomllib.loads(text)
        else:
            cfg = json.loads(text)
    except Exception as e:
        raise InputError(f"refine config {p} could not be parsed ({type(e).__name__}: {e})") from None
    return check_config(cfg, str(p))


def check_config(cfg, where: str = "config") -> dict:
    if not isinstance(cfg, dict):
        raise UsageError(f"{where} must hold a table/object of refine parameters")
    bad = _forbidden_keys(cfg)
    if bad:
        raise UsageError(
            f"{where} asks for {', '.join(bad)}: thinness/thickness regularisers are an explicit non-goal "
            "of vd refine (it supervises depth and normals only); remove these keys"
        )
    unknown = [k for k in cfg if k not in DEFAULTS]
    if unknown:
        raise UsageError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(DEFAULTS)}")
    out = {}
    for k, v in cfg.items():
        t = _TYPES[k]
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise UsageError(f"{where}: {k} must be a {t.__name__}, got {v!r}")
        out[k] = v
    return out


def resolve_params(config: dict | None = None, **overrides) -> dict:
    """Defaults, then the config file, then explicit options (None = not given)."""
    p = dict(DEFAULTS)
    p.update(config or {})
    p.update({k: v for k, v in overrides.items() if v is not None})
    p = check_config(p, "refine parameters")
    if p["iters"] < 0:
        raise UsageError(f"--iters must be >= 0, got {p['iters']}")
    for k in ("depth_weight", "normal_weight"):
        if not math.isfinite(p[k]) or p[k] < 0:
            raise UsageError(f"--{k.replace('_', '-')} must be a finite number >= 0, got {p[k]}")
    if p["huber_delta"] <= 0:
        raise UsageError("huber_delta must be > 0")
    return p


# ------------------------------------------------------------------------------ losses
def align_scale_shift(prior, target, mask=None, *, min_pixels: int = 16):
    """Least-squares (s, b) minimising sum((s*prior + b - target)^2) over `mask` (and finite
    pixels). Works on numpy arrays or torch tensors (no gradient flows); returns floats and the
    pixel count. With too few pixels or a constant prior: s = 1, b = mean(target - prior)."""
    try:
        import torch

        if isinstance(prior, torch.Tensor):
            prior = prior.detach().double().cpu().numpy()
        if isinstance(target, torch.Tensor):
            target = target.detach().double().cpu().numpy()
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(prior, np.float64).reshape(-1)
    y = np.asarray(target, np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        ok &= np.asarray(mask, bool).reshape(-1)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n == 0:
        return 1.0, 0.0, 0
    mx, my = x.mean(), y.mean()
    vx = ((x - mx) ** 2).mean()
    if n < min_pixels or vx < 1e-12 * max(mx * mx, 1e-12):
        return 1.0, float(my - mx), n
    s = float(((x - mx) * (y - my)).mean() / vx)
    return s, float(my - s * mx), n


def huber_depth_loss(pred, target, mask, delta: float = 0.01, scale=None):
    """Mean SmoothL1 of (pred - target)/scale over `mask` pixels where both are finite; 0 when
    no pixel qualifies. Non-finite values never reach the loss or its gradient."""
    import torch

    ok = mask.bool() & torch.isfinite(pred) & torch.isfinite(target)
    if scale is None:
        scale = 1.0
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    if not bool(ok.any()):
        return zero + 0.0 * torch.nan_to_num(pred, 0.0, 0.0, 0.0).sum()
    p = torch.where(ok, pred, zero)
    t = torch.where(ok, target, zero)
    r = (p - t) / scale
    return torch.nn.functional.smooth_l1_loss(r[ok], torch.zeros_like(r[ok]), beta=delta)


def normal_loss(n_pred, n_prior, mask):
    """mean(1 - |n_pred . n_prior|) over mask: sign-insensitive (n and -n cost the same)."""
    import torch

    ok = mask.bool()
    if not bool(ok.any()):
        return torch.zeros((), dtype=n_pred.dtype, device=n_pred.device) + 0.0 * n_pred.sum()
    dot = (n_pred * n_prior).sum(-1)
    return (1.0 - dot.abs())[ok].mean()


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
            "out": str(self.out), "ply": str(self.ply), "meta": str(self.meta_path), "cached": self.cached,
            "gaussians": self.meta.get("gaussians", {}).get("final"),
            "before": {k: m.get("before", {}).get(k) for k in ("depth_abs_rel", "normal_deg", "psnr")},
            "after": {k: m.get("after", {}).get(k) for k in ("depth_abs_rel", "normal_deg", "psnr")},
        }


def dataset_hash(path: Path) -> str:
    entries = []
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            entries.append(f"{f.relative_to(path).as_posix()}:{file_hash(f)}")
    return content_hash("\n".join(entries).encode())


class _Views:
    """Dataset views as torch tensors on one device."""

    def __init__(self, views, device):
        import torch

        self.items = []
        for v in views:
            cfw = np.linalg.inv(v.world_from_camera)
            n = torch.from_numpy(v.normal.astype(np.float32)).to(device)
            self.items.append({
                "name": v.name,
                "rgb": torch.from_numpy(v.rgb.astype(np.float32) / 255.0).to(device),
                "depth": torch.from_numpy(v.depth.astype(np.float32)).to(device),
                "normal": n,
                "normal_ok": (n.norm(dim=-1) > 0.5),
                "mask": torch.from_numpy(v.supervise.astype(bool)).to(device),
                "K": torch.from_numpy(v.K.astype(np.float32)).to(device),
                "viewmat": torch.from_numpy(cfw.astype(np.float32)).to(device),
                "W": int(v.rgb.shape[1]), "H": int(v.rgb.shape[0]),
            })


def _view_losses(g, v, p, backend):
    """Render one view and compute (rgb, depth, normal) losses plus diagnostics."""
    import torch

    out = render(g, v["viewmat"][None], v["K"][None], v["W"], v["H"], backend=backend)
    rgb, d_r, alpha = out.rgb[0], out.depth[0], out.alpha[0]
    l1 = (rgb - v["rgb"]).abs().mean()
    l_rgb = l1
    if p["ssim_lambda"]:
        from vd.ssim import ssim

        l_rgb = l1 + p["ssim_lambda"] * (1.0 - ssim(rgb.clamp(0, 1), v["rgb"]))
    prior = v["depth"]
    surf = (alpha.detach() > p["min_alpha"]) & torch.isfinite(d_r.detach())
    valid = v["mask"] & surf & torch.isfinite(prior) & (prior > 0)
    s, b, npx = align_scale_shift(prior, d_r.detach(), valid)
    target = (s * prior + b).detach()
    scale = target[valid].median().clamp_min(1e-6) if npx else torch.ones((), device=prior.device)
    l_depth = huber_depth_loss(d_r, target, valid, p["huber_delta"], scale)
    d_safe = torch.where(surf, d_r, torch.zeros_like(d_r))
    n_r, n_ok = normals_from_depth_torch(d_safe, v["K"], surf)
    nvalid = n_ok & v["normal_ok"] & v["mask"]
    l_normal = normal_loss(n_r, v["normal"], nvalid)
    with torch.no_grad():
        abs_rel = (((d_r - target).abs() / target.abs().clamp_min(1e-6))[valid].mean().item()) if npx else float("nan")
        if bool(nvalid.any()):
            cos = (n_r * v["normal"]).sum(-1).abs().clamp(0, 1)[nvalid]
            ndeg = torch.rad2deg(torch.acos(cos)).mean().item()
        else:
            ndeg = float("nan")
        mse = ((rgb - v["rgb"]) ** 2).mean().item()
    diag = {
        "view": v["name"], "scale": s, "shift": b, "pixels": npx, "depth_abs_rel": abs_rel,
        "normal_deg": ndeg, "normal_loss": float(l_normal.item()), "normal_pixels": int(nvalid.sum().item()),
        "rgb_l1": float(l1.item()), "psnr": float(-10 * math.log10(max(mse, 1e-12))),
    }
    return l_rgb, l_depth, l_normal, diag


def evaluate(g, views: _Views, p, backend) -> dict:
    """Depth and normal consistency (and RGB) metrics of `g` against every view's priors."""
    import torch

    per = []
    with torch.no_grad():
        for v in views.items:
            *_, d = _view_losses(g, v, p, backend)
            per.append(d)

    def mean(key):
        vals = [d[key] for d in per if d[key] == d[key]]
        return float(np.mean(vals)) if vals else None

    return {
        "depth_abs_rel": mean("depth_abs_rel"), "normal_deg": mean("normal_deg"), "normal_loss": mean("normal_loss"),
        "rgb_l1": mean("rgb_l1"), "psnr": mean("psnr"), "per_view": per,
        "definition": {
            "depth_abs_rel": "mean |d_render - (s*d_prior + b)| / (s*d_prior + b) on mask & alpha>min_alpha, (s,b) fitted per view",
            "normal_deg": "mean angle (degrees, sign-insensitive) between normals of the rendered depth and the prior",
            "normal_loss": "mean 1 - |n_render . n_prior|",
        },
    }


def _densify_prune(g, grad_acc, grad_cnt, p, rng):
    import torch

    from vd.gaussians import Gaussians

    n = len(g)
    avg = grad_acc / grad_cnt.clamp_min(1)
    k = int(round(p["densify_fraction"] * n))
    split = torch.zeros(n, dtype=torch.bool)
    if k > 0 and bool((avg > 0).any()):
        idx = torch.topk(avg, min(k, n)).indices
        split[idx[avg[idx] > 0]] = True
    alive = (torch.sigmoid(g.opacity_logits.detach()) >= p["prune_opacity"]).cpu()
    keep = alive & ~split
    parts = [g.select(keep)]
    n_split = int((split & alive).sum())
    if n_split:
        s = g.select(split & alive)
        sig = torch.exp(s.log_scales)
        for _ in range(2):
            noise = torch.from_numpy(rng.normal(size=(n_split, 3)).astype(np.float32)).to(sig.device)
            R = quat_to_rotmat_torch(s.quats)
            off = (R @ (noise * sig)[..., None])[..., 0]
            parts.append(Gaussians(s.means + off, s.log_scales - math.log(1.6), s.quats, s.opacity_logits, s.sh))
    out = Gaussians.cat(parts).detach()
    return out, n_split, int((~alive).sum())


def _optimizer(g, p, extent):
    import torch

    g.requires_grad_(True)
    return torch.optim.Adam([
        {"params": [g.means], "lr": p["lr_means"] * extent},
        {"params": [g.log_scales], "lr": p["lr_scales"]},
        {"params": [g.quats], "lr": p["lr_quats"]},
        {"params": [g.opacity_logits], "lr": p["lr_opacity"]},
        {"params": [g.sh], "lr": p["lr_sh"]},
    ], eps=1e-15)


def run_refine(views_data, g0, p: dict, *, device: str, progress=None) -> tuple[Any, dict]:
    """Optimise `g0` on the dataset views; returns (refined Gaussians on CPU, run info)."""
    import torch

    torch.manual_seed(p["seed"])
    rng = np.random.default_rng(p["seed"])
    views = _Views(views_data, device)
    backend = resolve_backend(p["backend"], device)
    g = g0.to(device).clone()
    depths = np.concatenate([v.depth[v.supervise & (v.depth > 0)] for v in views_data]) if views_data else np.ones(1)
    extent = float(np.median(depths)) if depths.size else 1.0
    before = evaluate(g, views, p, backend)
    n0 = len(g)
    opt = _optimizer(g, p, extent)
    grad_acc = torch.zeros(len(g))
    grad_cnt = torch.zeros(len(g))
    order: list[int] = []
    history = []
    n_split_total = n_pruned_total = 0
    until = int(p["densify_until"] * p["iters"])
    t0 = time.perf_counter()
    task = progress.add_task("refine", total=p["iters"]) if progress is not None else None
    for it in range(1, p["iters"] + 1):
        if not order:
            order = rng.permutation(len(views.items)).tolist()
        v = views.items[order.pop()]
        l_rgb, l_depth, l_normal, _ = _view_losses(g, v, p, backend)
        loss = l_rgb + p["depth_weight"] * l_depth + p["normal_weight"] * l_normal
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            for t in (g.means, g.log_scales, g.quats, g.opacity_logits, g.sh):
                if t.grad is not None:
                    t.grad.nan_to_num_(0.0, 0.0, 0.0)
            if p["densify"]:
                grad_acc += g.means.grad.detach().norm(dim=-1).cpu() if g.means.grad is not None else 0
                grad_cnt += 1
            opt.step()
        rec = {"iter": it, "loss": float(loss.item()), "rgb": float(l_rgb.item()),
               "depth": float(l_depth.item()), "normal": float(l_normal.item())}
        if it == 1 or it % 10 == 0 or it == p["iters"]:
            history.append(rec)
        if task is not None:
            progress.update(task, advance=1, description=(
                f"refine loss {rec['loss']:.4f} rgb {rec['rgb']:.4f} depth {rec['depth']:.4f} normal {rec['normal']:.4f}"))
        if (p["densify"] and it >= p["densify_from"] and it <= until and it % p["densify_every"] == 0):
            g, n_split, n_pruned = _densify_prune(g.detach(), grad_acc, grad_cnt, p, rng)
            n_split_total += n_split
            n_pruned_total += n_pruned
            opt = _optimizer(g, p, extent)
            grad_acc = torch.zeros(len(g))
            grad_cnt = torch.zeros(len(g))
    seconds = time.perf_counter() - t0
    g = g.detach()
    after = evaluate(g, views, p, backend)
    info = {
        "backend": backend, "device": str(device), "extent": extent, "seconds": seconds,
        "iters_per_second": (p["iters"] / seconds) if seconds > 0 and p["iters"] else None,
        "gaussians": {"initial": n0, "final": len(g), "split": n_split_total, "pruned": n_pruned_total},
        "alignment": [{"view": d["view"], "scale": d["scale"], "shift": d["shift"], "pixels": d["pixels"]} for d in after["per_view"]],
        "metrics": {"before": before, "after": after},
        "losses": history,
    }
    return g.to("cpu"), info


def refine(dataset, init, out, *, iters=None, depth_weight=None, normal_weight=None, densify=None,
           config=None, device=None, seed=None, progress=None) -> RefineResult:
    """Validate the dataset, refine `init` on it (memoised), write the outputs into `out`."""

    dataset = Path(dataset)
    init = check_input_file(init, "initial PLY (--init)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder")
    cfg = load_config(config) if config is not None else {}
    p = resolve_params(cfg, iters=iters, depth_weight=depth_weight, normal_weight=normal_weight,
                       densify=densify, seed=seed)
    device = resolve_device(device)
    views, dmeta = load_dataset(dataset)  # strict validation first
    g0, pmeta = read_gaussians(init)
    if len(g0) == 0:
        raise InputError(f"{init} holds no Gaussians")

    backend = resolve_backend(p["backend"], device)
    inputs = {"dataset": dataset_hash(dataset), "init": file_hash(init)}
    key = stage_key(stage="refine", version=VERSION, params={k: v for k, v in p.items() if k not in ("seed", "backend")},
                    inputs=inputs, models={}, backend=backend, dtype="float32", seed=p["seed"])

    def compute():
        g, info = run_refine(views, g0, p, device=device, progress=progress)
        meta = {
            "stage": "refine", "version": VERSION, "vd_version": __version__, "key": key,
            "inputs": {"dataset": str(dataset.resolve()), "dataset_hash": inputs["dataset"],
                       "dataset_format": dmeta.get("format"), "dataset_provenance": dmeta.get("provenance"),
                       "init": str(init.resolve()), "init_hash": inputs["init"], "init_count": len(g0),
                       "config": str(Path(config).resolve()) if config is not None else None,
                       "config_hash": file_hash(config) if config is not None else None},
            "params": p,
            "losses_used": {"rgb": "L1 + ssim_lambda * (1 - SSIM), all pixels", "depth": "SmoothL1 of the relative residual to the per-view scale+shift-aligned prior",
                            "normal": "1 - |n_render . n_prior|", "thinness_thickness": "none (explicit non-goal)"},
            **info,
        }
        ply_bytes, _ = encode_ply(g, comments={"stage": "refine", "refine_key": key,
                                               **{k: v for k, v in pmeta.get("comments", {}).items() if k in ("up", "image_hash", "intrinsics")}})
        meta = _clean(meta)
        return {"gaussians_refined.ply": ply_bytes, "refine_meta.json": json.dumps(meta, indent=2, default=_json_default).encode()}

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


__all__ = ["DEFAULTS", "VERSION", "RefineResult", "align_scale_shift", "huber_depth_loss", "normal_loss",
           "check_config", "load_config", "resolve_params", "refine", "run_refine", "evaluate", "dataset_hash"]
