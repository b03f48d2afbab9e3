"""`vd fine`'s cameras: the refined frame, the candidate poses, and the greedy choice of views.

View choice (VistaDream's 2026 "ratio sampling"; docs/upstream.md#mcs-fine-stage): the candidates are every 3rd
pose of the dense coarse trajectory plus the coarse views. A temporary scene starts with the anchor views only
(scaffold.ply: the input and the ring); `views` times, the candidate whose render of the
temporary scene has the largest hole ratio is picked, and the full coarse scene's render at that
pose is lifted into the temporary scene where it had holes. Each view is rendered at the input's
K and size plus a margin (rounded so both sides are multiples of 16 for the Flux packing), the
principal point shifted by the margin.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from vd.cameras import invert_pose
from vd.errors import InputError
from vd.holes import hole_masks, scan_hole_ratios
from vd.params import CoarseParams
from vd.render import render
from vd.stages.coarse_folder import CoarseScene
from vd.stages.coarse_view import dense_poses

HOLE_ALPHA = 0.5


@dataclass
class FinePose:
    """A camera picked for refinement: its pose and the hole ratio that picked it (not a view:
    its images are the renders and clean estimates of the MCS loop)."""

    index: int
    name: str
    world_from_camera: np.ndarray
    hole_ratio: float
    source: str  # "trajectory" or the coarse view's name

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "source": self.source,
            "hole_ratio": round(float(self.hole_ratio), 6),
            "world_from_camera": np.asarray(self.world_from_camera, dtype=float).round(8).tolist(),
        }


def fine_frame(K: np.ndarray, width: int, height: int, margin: int) -> tuple[np.ndarray, int, int]:
    """(K, W, H) of the refined views: `margin` px per side, rounded up so W and H are multiples
    of 16 (Flux packs 8x-downsampled latents in 2x2 tokens); the principal point moves with it."""
    W = int(width) + 2 * int(margin)
    H = int(height) + 2 * int(margin)
    W += (-W) % 16
    H += (-H) % 16
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0, 2] += (W - width) / 2.0
    K2[1, 2] += (H - height) / 2.0
    return K2, W, H


def scaled_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0] *= sx
    K2[1] *= sy
    return K2


def render_views(
    g,
    poses: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    backend: str = "auto",
    chunk: int = 4,
    with_grad: bool = False,
):
    """Render `g` at world_from_camera `poses` [C,4,4] -> (rgb [C,H,W,3], depth [C,H,W], alpha [C,H,W])."""
    import torch

    dev = g.means.device
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    vm = torch.as_tensor(invert_pose(poses), dtype=torch.float32, device=dev)
    Ks = torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=torch.float32, device=dev)
    rgbs, depths, alphas = [], [], []
    ctx = torch.enable_grad() if with_grad else torch.no_grad()
    with ctx:
        for i in range(0, len(poses), chunk):
            c = vm[i : i + chunk]
            r = render(g, c, Ks[None].expand(len(c), 3, 3).contiguous(), int(width), int(height), backend=backend)
            rgbs.append(r.rgb)
            depths.append(r.depth)
            alphas.append(r.alpha)
    return torch.cat(rgbs).clamp(0, 1), torch.cat(depths), torch.cat(alphas)


def candidate_poses(scene: CoarseScene, stride: int = 3) -> tuple[np.ndarray, list[str]]:
    """Every `stride`-th pose of the dense coarse trajectory, plus the coarse views' poses."""
    poses: list[np.ndarray] = []
    sources: list[str] = []
    inp = scene.input_view
    traj = _coarse_trajectory(scene)
    if traj is not None:
        for i in range(0, len(traj), max(int(stride), 1)):
            poses.append(traj[i])
            sources.append(f"trajectory:{i}")
    for v in scene.views:
        if v.kind not in ("input", "ring"):
            poses.append(np.asarray(v.world_from_camera, dtype=np.float64))
            sources.append(v.name)
    if not poses:
        raise InputError(f"{scene.folder} has no camera trajectory and no added views to refine")
    # drop candidates that coincide with the input camera: nothing to refine there
    keep = [i for i, p in enumerate(poses) if not np.allclose(p, inp.world_from_camera, atol=1e-9)]
    if not keep:
        raise InputError(f"every candidate pose of {scene.folder} is the input camera; nothing to refine")
    return np.stack([poses[i] for i in keep]), [sources[i] for i in keep]


def _coarse_trajectory(scene: CoarseScene) -> Optional[np.ndarray]:
    """The dense trajectory the coarse stage scanned, rebuilt from the parameters in its summary.json
    (None when they cannot be read: the coarse views are the candidates then)."""
    saved = (scene.summary or {}).get("params")
    known = {f.name for f in fields(CoarseParams)}
    try:
        p = (
            CoarseParams(**{k: v for k, v in saved.items() if k in known})
            if isinstance(saved, dict)
            else CoarseParams()
        )
        p.radius_percentiles = tuple(p.radius_percentiles)
        if p.trajectory_file and not Path(p.trajectory_file).is_file():
            p.trajectory_file = None
        p.validate()
        return dense_poses(scene.input_view, p)[0]
    except Exception:  # noqa: BLE001 - a summary we cannot interpret
        return None


def select_views(
    scene: CoarseScene,
    n_views: int,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    stride: int = 3,
    scale: float = 0.25,
    backend: str = "auto",
    device="cpu",
) -> list[FinePose]:
    """Greedy largest-hole selection against a growing scene of the anchors (the module docstring)."""
    import torch

    from vd.gaussians import Gaussians

    poses, sources = candidate_poses(scene, stride)
    n_views = min(int(n_views), len(poses))
    sw = max(int(round(width * scale)), 8)
    sh = max(int(round(height * scale)), 8)
    Ks = scaled_K(K, sw / width, sh / height)
    full = scene.gaussians.to(device)
    temp = (
        scene.scaffold.to(device)
        if scene.scaffold is not None and len(scene.scaffold)
        else _lift_anchors(scene, device)
    )
    chosen: list[int] = []
    views: list[FinePose] = []
    for k in range(n_views):
        remaining = [i for i in range(len(poses)) if i not in chosen]
        if temp is not None and len(temp):
            ratios = scan_hole_ratios(temp, poses[remaining], K, width, height, scale=scale).ratios
        else:
            ratios = np.ones(len(remaining))
        j = int(np.argmax(ratios))  # ties -> lowest index
        i = remaining[j]
        chosen.append(i)
        views.append(FinePose(k, f"fine_{k:03d}", poses[i], float(ratios[j]), sources[i]))
        if k == n_views - 1:
            break
        # add the full coarse scene's render at the pick where the temp scene had holes
        rgb, depth, alpha = render_views(full, poses[i : i + 1], Ks, sw, sh, backend=backend)
        if temp is not None and len(temp):
            _, _, talpha = render_views(temp, poses[i : i + 1], Ks, sw, sh, backend=backend)
            holes = hole_masks(talpha[0]).to(alpha.device)
        else:
            holes = torch.ones_like(alpha[0], dtype=torch.bool)
        fill = holes & (alpha[0] >= HOLE_ALPHA) & torch.isfinite(depth[0]) & (depth[0] > 0)
        if bool(fill.any()):
            add = _lift(rgb[0], depth[0], Ks, poses[i], fill)
            temp = add.to(device) if temp is None or not len(temp) else Gaussians.cat([temp, add.to(device)])
    return views


def _lift(rgb, depth, K, pose, mask):
    from vd.lift import gaussians_from_rgbd

    return gaussians_from_rgbd(
        rgb.detach().cpu().numpy(),
        depth.detach().cpu().numpy(),
        np.asarray(K, np.float32),
        np.asarray(pose, np.float32),
        mask.detach().cpu().numpy(),
    )


def _lift_anchors(scene: CoarseScene, device):
    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd

    parts = []
    for v in scene.anchors:
        mask = v.spawn & np.isfinite(v.depth) & (v.depth > 0)
        if mask.any():
            parts.append(
                gaussians_from_rgbd(
                    v.rgb.astype(np.float32) / 255.0,
                    v.depth,
                    np.asarray(v.K, np.float32),
                    np.asarray(v.world_from_camera, np.float32),
                    mask,
                )
            )
    if not parts:
        return None
    return Gaussians.cat(parts).to(device)


__all__ = ["FinePose", "fine_frame", "scaled_K", "render_views", "candidate_poses", "select_views", "HOLE_ALPHA"]
