"""Ground truth of a scene at the input view and every move, and the scores of Gaussians there.

Scores per view (vd's torch renderer, black background): coverage = fraction of pixels with
alpha > 0.5; on the covered pixels: PSNR and SSIM of the colour, and depth AbsRel
= mean |d − d_gt| / d_gt (expected depth of the render against the ray-cast z-depth), also
over the covered pixels the input view sees (``absrel_seen``: the geometry the depth map gave,
as opposed to what a method invents for disoccluded or outpainted regions), and both again of the
median depth (``absrel_median``, ``absrel_seen_median``: the first surface alone, as a mesh reads
it). PSNR and SSIM are also split into ``*_seen`` and ``*_unseen`` (covered pixels whose surface
the input view sees, or not);
``alpha_lt_090`` / ``alpha_lt_098`` are the shares of covered pixels with alpha below 0.9 / 0.98
(pinholes, which darken the colour over whatever background a viewer uses). A ground truth with a
``valid`` mask (a photo: its colour is known where its depth is not) scores colour there and depth
where its depth is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.quality import moves as mv
from bench.quality.scenes import Scene, render as cast_view


@dataclass
class GroundTruth:
    name: str
    rgb: np.ndarray  # uint8 [H,W,3]
    depth: np.ndarray  # float32 [H,W]
    K: np.ndarray  # [3,3]
    world_from_camera: np.ndarray  # in vd's world (the input camera)
    seen: np.ndarray | None = None  # bool [H,W]: the surface point is visible in the input view
    valid: np.ndarray | None = None  # bool [H,W]: pixels whose colour is known (default: depth > 0)


def seen_by(depth: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray, input_depth: np.ndarray,
            tol: float = 0.02) -> np.ndarray:
    """Pixels of a view whose surface point projects into the input view (identity pose, same K)
    at a pixel whose depth agrees within `tol`: the points the input view sees."""
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    X = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * depth, (v + 0.5 - K[1, 2]) / K[1, 1] * depth, depth], -1)
    Xw = X @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    z = Xw[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pu = np.floor(K[0, 0] * Xw[..., 0] / z + K[0, 2])
        pv = np.floor(K[1, 1] * Xw[..., 1] / z + K[1, 2])
    ok = (depth > 0) & (z > 0) & (pu >= 0) & (pu < W) & (pv >= 0) & (pv < H)
    D = np.zeros_like(z)
    D[ok] = input_depth[pv[ok].astype(int), pu[ok].astype(int)]
    return ok & (np.abs(D - z) <= tol * z)


def ground_truth(scene: Scene, move_names=None) -> list[GroundTruth]:
    """The input view (first) and one view per move, each ray-cast with the scene's K."""
    K = scene.K()
    W, H = scene.width, scene.height
    rgb, depth = cast_view(scene, scene.input_pose, K, W, H)
    out = [GroundTruth("input", rgb, depth, K, np.eye(4), depth > 0)]
    median = float(np.median(depth[depth > 0]))
    for name, pose in mv.moves(median, move_names):
        r, d = cast_view(scene, scene.input_pose @ pose, K, W, H)
        out.append(GroundTruth(name, r, d, K, pose, seen_by(d, K, pose, depth)))
    return out


def score_view(g, gt: GroundTruth) -> dict:
    """coverage, psnr, ssim, absrel of Gaussians `g` at one ground-truth view."""
    import torch

    from vd.cameras import invert_pose
    from vd.render import render
    from vd.ssim import masked_ssim

    with torch.no_grad():
        vm = torch.as_tensor(invert_pose(gt.world_from_camera), dtype=torch.float32)
        res = render(g.to("cpu"), vm, torch.as_tensor(gt.K, dtype=torch.float32), gt.rgb.shape[1], gt.rgb.shape[0],
                     backend="torch")
        rgb, depth, alpha = res.rgb[0].clamp(0, 1), res.depth[0], res.alpha[0]
        median = render(g.to("cpu"), vm, torch.as_tensor(gt.K, dtype=torch.float32), gt.rgb.shape[1],
                        gt.rgb.shape[0], backend="torch", depth_mode="median").depth[0]
        target = torch.from_numpy(gt.rgb.astype(np.float32) / 255.0)
        d_gt = torch.from_numpy(gt.depth)
        valid = torch.from_numpy(gt.valid) if gt.valid is not None else d_gt > 0
        cov = (alpha > 0.5) & valid
        n = int(cov.sum())
        covered = alpha > 0.5
        out = {"view": gt.name, "coverage": float(covered.float().mean()),
               "alpha_lt_090": float((alpha[covered] < 0.9).float().mean()) if bool(covered.any()) else float("nan"),
               "alpha_lt_098": float((alpha[covered] < 0.98).float().mean()) if bool(covered.any()) else float("nan")}
        if n == 0:
            return dict(out, psnr=float("nan"), ssim=float("nan"), absrel=float("nan"), absrel_seen=float("nan"))
        out["psnr"] = _psnr(rgb, target, cov)
        out["ssim"] = float(masked_ssim(rgb, target, cov))
        has_depth = cov & (d_gt > 0)
        rel = (depth - d_gt).abs() / d_gt.clamp_min(1e-9)
        out["absrel"] = float(rel[has_depth].mean()) if bool(has_depth.any()) else float("nan")
        seen_mask = torch.from_numpy(gt.seen if gt.seen is not None else gt.depth > 0)
        seen = has_depth & seen_mask
        out["absrel_seen"] = float(rel[seen].mean()) if bool(seen.any()) else float("nan")
        # the median depth (where the ray's accumulated alpha reaches 0.5) reads the first surface alone; the
        # expected depth mixes in whatever shows through it (a 400 m sky behind a 99.9 % opaque facade: +3 %)
        has_median = has_depth & (median > 0)
        rel_m = (median - d_gt).abs() / d_gt.clamp_min(1e-9)
        out["absrel_median"] = float(rel_m[has_median].mean()) if bool(has_median.any()) else float("nan")
        out["absrel_seen_median"] = float(rel_m[has_median & seen_mask].mean()) if bool(
            (has_median & seen_mask).any()) else float("nan")
        for part, m in (("seen", cov & seen_mask), ("unseen", cov & ~seen_mask)):
            out[f"{part}_share"] = float(m.float().mean())
            out[f"psnr_{part}"] = _psnr(rgb, target, m) if bool(m.any()) else float("nan")
            out[f"ssim_{part}"] = float(masked_ssim(rgb, target, m)) if bool(m.any()) else float("nan")
    return out


def _psnr(rgb, target, mask) -> float:
    mse = float(((rgb - target) ** 2)[mask].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def render_view(g, gt: GroundTruth, alpha: bool = False) -> np.ndarray:
    """uint8 [H,W,3] render of `g` at a ground-truth view (for looking at)."""
    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    with torch.no_grad():
        vm = torch.as_tensor(invert_pose(gt.world_from_camera), dtype=torch.float32)
        res = render(g.to("cpu"), vm, torch.as_tensor(gt.K, dtype=torch.float32), gt.rgb.shape[1], gt.rgb.shape[0],
                     backend="torch")
    if alpha:
        return (res.alpha[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return (res.rgb[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def summarise(rows: list[dict]) -> dict:
    """Input-view scores and the mean / worst over the novel views."""
    inp = rows[0]
    nov = rows[1:]
    mean = lambda k: float(np.nanmean([r.get(k, np.nan) for r in nov]))  # noqa: E731
    return {
        "input_coverage": inp["coverage"], "input_psnr": inp["psnr"], "input_ssim": inp["ssim"],
        "input_absrel": inp["absrel"], "input_alpha_lt_098": inp.get("alpha_lt_098", float("nan")),
        "novel_coverage": mean("coverage"), "novel_coverage_worst": float(min(r["coverage"] for r in nov)),
        "novel_psnr": mean("psnr"), "novel_ssim": mean("ssim"), "novel_absrel": mean("absrel"),
        "novel_absrel_seen": mean("absrel_seen"),
        "novel_absrel_median": mean("absrel_median"), "novel_absrel_seen_median": mean("absrel_seen_median"),
        "novel_psnr_seen": mean("psnr_seen"), "novel_ssim_seen": mean("ssim_seen"),
        "novel_psnr_unseen": mean("psnr_unseen"), "novel_ssim_unseen": mean("ssim_unseen"),
        "novel_alpha_lt_090": mean("alpha_lt_090"),
    }
