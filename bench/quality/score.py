"""Ground truth of a scene at the input view and every move, and the scores of Gaussians there.

Scores per view (vd's torch renderer, black background): coverage = fraction of pixels with
alpha > 0.5; on the covered pixels: PSNR and SSIM of the colour, and depth AbsRel
= mean |d − d_gt| / d_gt (expected depth of the render against the ray-cast z-depth), also
over the covered pixels the input view sees (``absrel_seen``: the geometry the depth map gave,
as opposed to what a method invents for disoccluded or outpainted regions).
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
        target = torch.from_numpy(gt.rgb.astype(np.float32) / 255.0)
        d_gt = torch.from_numpy(gt.depth)
        cov = (alpha > 0.5) & (d_gt > 0)
        n = int(cov.sum())
        out = {"view": gt.name, "coverage": float((alpha > 0.5).float().mean())}
        if n == 0:
            return dict(out, psnr=float("nan"), ssim=float("nan"), absrel=float("nan"), absrel_seen=float("nan"))
        mse = float(((rgb - target) ** 2)[cov].mean())
        out["psnr"] = 10 * math.log10(1.0 / max(mse, 1e-12))
        out["ssim"] = float(masked_ssim(rgb, target, cov))
        rel = (depth - d_gt).abs() / d_gt.clamp_min(1e-9)
        out["absrel"] = float(rel[cov].mean())
        seen = cov & torch.from_numpy(gt.seen if gt.seen is not None else gt.depth > 0)
        out["absrel_seen"] = float(rel[seen].mean()) if bool(seen.any()) else float("nan")
    return out


def render_view(g, gt: GroundTruth) -> np.ndarray:
    """uint8 [H,W,3] render of `g` at a ground-truth view (for looking at)."""
    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    with torch.no_grad():
        vm = torch.as_tensor(invert_pose(gt.world_from_camera), dtype=torch.float32)
        res = render(g.to("cpu"), vm, torch.as_tensor(gt.K, dtype=torch.float32), gt.rgb.shape[1], gt.rgb.shape[0],
                     backend="torch")
    return (res.rgb[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def summarise(rows: list[dict]) -> dict:
    """Input-view scores and the mean / worst over the novel views."""
    inp = rows[0]
    nov = rows[1:]
    mean = lambda k: float(np.nanmean([r[k] for r in nov]))  # noqa: E731
    return {
        "input_coverage": inp["coverage"], "input_psnr": inp["psnr"], "input_ssim": inp["ssim"],
        "input_absrel": inp["absrel"],
        "novel_coverage": mean("coverage"), "novel_coverage_worst": float(min(r["coverage"] for r in nov)),
        "novel_psnr": mean("psnr"), "novel_ssim": mean("ssim"), "novel_absrel": mean("absrel"),
        "novel_absrel_seen": mean("absrel_seen"),
    }
