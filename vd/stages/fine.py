"""The fine stage: multi-view consistency sampling (MCS) of the coarse scene with Flux Fill.

Upstream (reference §9) refines the coarse Gaussian scene by running the last `steps` of a
diffusion schedule on several views at once and, at each step, fitting a copy of the coarse
scene to every view's current clean prediction plus the anchor frames, then steering the
sampler towards the re-rendered scene. The flow-matching version of that steering is derived in
`vd.mcs`; this module wires it to the Flux Fill building blocks (`vd.models.flux_fill`), the
renderer (`vd.render`) and the optimiser (`vd.train`).

    run_fine(coarse_dir, out_dir, FineParams(...), denoiser_factory=..., device=...) -> FineResult
    choose_denoiser("auto" | "flux-fill" | "telea", device=..., offload=..., allow_classical=...)
        -> (device, denoiser_factory, backend name)

Steps:
1. Views (§9 step 1, the 2026 "ratio sampling" variant): candidate poses are every 3rd pose of
   the dense coarse trajectory plus the coarse views. A temporary scene starts with the anchor
   frames only (scaffold.ply: the input and ring frames); `views` times, the candidate whose
   render of the temporary scene has the largest hole ratio is picked, and the full coarse
   scene's render at that pose is lifted into the temporary scene where it had holes. Each view
   is rendered at the input frame's K and size plus a margin (16 px a side, rounded so both
   sides are multiples of 16 for the Flux packing), principal point shifted by the margin.
2. Start: the coarse renders are encoded with the Flux AE and noised to the start time of the
   last `steps` of the `total_steps` time-shifted schedule. Flux Fill is conditioned on each
   view's coarse render with its hole mask (`vd.holes.hole_masks`) as the region to generate.
3. Each step, batched over views: velocity -> clean estimate -> decode; fit a fresh copy of the
   coarse scene to the decoded estimates plus the anchor frames for `gs_iters`; re-render;
   encode; blend velocities (`vd.mcs.rectified_step`); step. Every step is memoised through
   `vd.cache` (`step_key(stage_key, "step", k)`), so a killed run resumes at the next step.
4. Final: the clean latent at t = 0 is decoded and the coarse scene is fitted once more to it
   (upstream 2026 also ends with one extra optimisation): that is `fine.ply`.

Outputs: fine.ply, steps/step_NN.png (per view: clean estimate above the rectified render),
steps/final.png, summary.json (views, one row per step with losses and timings, VRAM).

`ClassicalDenoiser` (`vd fine --inpaint-backend telea --allow-classical`) runs the same loop without a
diffusion model: the "model" predicts, for every view, the OpenCV Telea inpaint of the holes of the
current scene's render (pixel space, no AE), v = (x_t - x0_telea) / t.

Known limit (as upstream): a rectification optimises a copy of the coarse scene without
densification, so pixels no coarse Gaussian covers stay holes in the renders and in fine.ply.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vd.errors import InputError, UsageError
from vd.fsio import atomic_write_bytes

STAGE = "fine"
VERSION = 1
HOLE_ALPHA = 0.5


@dataclass
class FineParams:
    views: int = 8
    steps: int = 9
    total_steps: int = 25
    gs_iters: int = 192
    rect_weight: float = 0.5
    margin: int = 16  # pixels per side (rounded up so both sides are multiples of 16)
    candidate_stride: int = 3  # every 3rd dense pose (upstream 2026)
    select_scale: float = 0.25  # resolution of the hole-ratio renders used to pick views
    guidance: float = 30.0
    rescale: str = "shrink"  # vd.mcs: shrink (never lengthen v~), match (eq. 6 as written) or none
    seed: int = 0
    render_backend: str = "auto"

    def validate(self) -> None:
        if self.views < 1:
            raise UsageError(f"--views must be at least 1, got {self.views}")
        if self.total_steps < 1:
            raise UsageError(f"--total-steps must be at least 1, got {self.total_steps}")
        if not 1 <= self.steps <= self.total_steps:
            raise UsageError(f"--steps must be between 1 and --total-steps ({self.total_steps}), got {self.steps}")
        if self.gs_iters < 0:
            raise UsageError(f"--gs-iters must be 0 or more, got {self.gs_iters}")
        if not 0.0 <= self.rect_weight <= 1.0:
            raise UsageError(f"--rect-weight must be between 0 and 1, got {self.rect_weight:g}")
        if self.rescale not in ("shrink", "match", "none"):
            raise UsageError(f"--rescale must be shrink, match or none, got {self.rescale!r}")
        if self.render_backend not in ("auto", "gsplat", "torch"):
            raise UsageError(f"--render-backend must be auto, gsplat or torch, got {self.render_backend!r}")
        if self.margin < 0:
            raise UsageError(f"--margin must be 0 or more, got {self.margin}")

    def key_params(self) -> dict:
        d = asdict(self)
        d.pop("seed")
        d.pop("render_backend")
        return d


@dataclass
class FineView:
    """One refined view: its pose, intrinsics (with margin) and the hole ratio that picked it."""

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


@dataclass
class FineResult:
    out_dir: Path
    ply: Path
    summary_path: Path
    strips: list[Path]
    summary: dict
    cached_steps: int = 0

    def to_json(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "ply": str(self.ply),
            "summary": str(self.summary_path),
            "strips": [str(p) for p in self.strips],
            "steps": len(self.summary.get("steps", [])),
            "cached_steps": self.cached_steps,
            "views": len(self.summary.get("views", [])),
            "seconds": self.summary.get("timings", {}).get("total_s"),
            "peak_vram_bytes": self.summary.get("vram", {}).get("peak_bytes"),
        }


# ---------------------------------------------------------------------------------------------
# the coarse scene


@dataclass
class CoarseScene:
    folder: Path
    gaussians: Any  # vd.gaussians.Gaussians (CPU)
    scaffold: Any  # Gaussians of the anchor frames, or None
    views: list  # View-like objects: name, kind, rgb, depth, K, world_from_camera, mask
    summary: dict
    inputs: dict  # file hashes for the cache key

    @property
    def anchors(self) -> list:
        return [v for v in self.views if v.kind in ("input", "ring")]

    @property
    def input_view(self):
        for v in self.views:
            if v.kind == "input":
                return v
        return self.views[0]


@dataclass
class _View:
    name: str
    kind: str
    rgb: np.ndarray
    depth: Optional[np.ndarray]
    K: np.ndarray
    world_from_camera: np.ndarray
    mask: Optional[np.ndarray]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _load_views_fallback(folder: Path) -> list:
    """cameras.json reader used when vd.stages.scene_io is not available."""
    try:
        doc = json.loads((folder / "cameras.json").read_text())
        entries = doc["views"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read {folder / 'cameras.json'}: {e}") from None
    views = []
    for v in entries:
        try:
            rgb = _read_png(folder / v["rgb"])[..., :3].astype(np.uint8)
            depth = np.load(folder / v["depth"], allow_pickle=False).astype(np.float32) if v.get("depth") else None
            mask = _read_png(folder / v["mask"]).astype(bool) if v.get("mask") else None
            if mask is not None and mask.ndim == 3:
                mask = mask[..., 0]
            views.append(_View(str(v["name"]), str(v["kind"]), rgb, depth, np.asarray(v["K"], dtype=np.float64),
                               np.asarray(v["world_from_camera"], dtype=np.float64), mask))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"view {v.get('name', '?')!r} of {folder / 'cameras.json'} cannot be read: {e}") from None
    return views


def is_coarse_dir(path: Path) -> bool:
    return path.is_dir() and (path / "cameras.json").is_file() and (path / "coarse.ply").is_file()


def load_coarse(folder: Path) -> CoarseScene:
    """Read a coarse output folder (coarse.ply, scaffold.ply, cameras.json, views/)."""
    from vd.cache import file_hash
    from vd.ply import read_ply

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"coarse folder not found: {folder}")
    for name in ("cameras.json", "coarse.ply"):
        if not (folder / name).is_file():
            raise InputError(f"{folder} is not a coarse output folder ({name} is missing); run `vd coarse IMAGE -o {folder}` first")
    try:
        from vd.stages.scene_io import load_views
    except ImportError:
        load_views = _load_views_fallback
    views = list(load_views(folder))
    if not views:
        raise InputError(f"{folder / 'cameras.json'} lists no views")
    g, _ = read_ply(folder / "coarse.ply")
    if len(g) == 0:
        raise InputError(f"{folder / 'coarse.ply'} holds no Gaussians")
    scaffold = None
    if (folder / "scaffold.ply").is_file():
        scaffold, _ = read_ply(folder / "scaffold.ply")
    summary = {}
    if (folder / "summary.json").is_file():
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except ValueError:
            summary = {}
    inputs = {"coarse.ply": file_hash(folder / "coarse.ply"), "cameras.json": file_hash(folder / "cameras.json")}
    if scaffold is not None:
        inputs["scaffold.ply"] = file_hash(folder / "scaffold.ply")
    # the anchor frames' pixels supervise every rectification: key their content too
    from vd.cache import content_hash

    for v in views:
        if v.kind in ("input", "ring"):
            parts = [np.ascontiguousarray(v.rgb).tobytes()]
            if v.mask is not None:
                parts.append(np.ascontiguousarray(v.mask).tobytes())
            inputs[f"anchor:{v.name}"] = content_hash(b"".join(parts))
    return CoarseScene(folder, g, scaffold, views, summary if isinstance(summary, dict) else {}, inputs)


# ---------------------------------------------------------------------------------------------
# geometry helpers


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


def _scaled_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0] *= sx
    K2[1] *= sy
    return K2


def _invert(poses: np.ndarray) -> np.ndarray:
    from vd.cameras import invert_pose

    return invert_pose(np.asarray(poses, dtype=np.float64))


def render_views(g, poses: np.ndarray, K: np.ndarray, width: int, height: int, *, backend: str = "auto",
                 chunk: int = 4, with_grad: bool = False):
    """Render `g` at world_from_camera `poses` [C,4,4] -> (rgb [C,H,W,3], depth [C,H,W], alpha [C,H,W])."""
    import torch

    from vd.render import render

    dev = g.means.device
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    vm = torch.as_tensor(_invert(poses), dtype=torch.float32, device=dev)
    Ks = torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=torch.float32, device=dev)
    rgbs, depths, alphas = [], [], []
    ctx = torch.enable_grad() if with_grad else torch.no_grad()
    with ctx:
        for i in range(0, len(poses), chunk):
            c = vm[i:i + chunk]
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
    """The dense trajectory the coarse stage scanned, rebuilt from its summary.json params."""
    from vd import cameras

    s = scene.summary or {}
    params = s.get("params") if isinstance(s.get("params"), dict) else {}
    inp = scene.input_view
    try:
        tf = params.get("trajectory_file")
        if tf and Path(tf).is_file():
            return cameras.load_trajectory(tf)
        kind = str(params.get("traj", "spiral"))
        if kind not in cameras.TRAJECTORIES:
            kind = "spiral"
        n = max(int(params.get("n_frames", 10)) * int(params.get("dense_multiplier", 10)), 2)
        radius = s.get("scene_radius")
        if not isinstance(radius, (int, float)) or not np.isfinite(radius) or radius <= 0:
            if inp.depth is None:
                return None
            pct = tuple(float(x) for x in params.get("radius_percentiles", (5.0, 50.0)))
            valid = inp.mask if inp.mask is not None and inp.mask.sum() >= 3 else inp.depth > 0
            radius = cameras.scene_radius(inp.depth, inp.K, valid, pct)
        return cameras.trajectory(kind, n, float(radius), forward_ratio=float(params.get("forward_ratio", 0.3)),
                                  backward_ratio=float(params.get("backward_ratio", 0.4)),
                                  width=inp.rgb.shape[1], height=inp.rgb.shape[0])
    except Exception:  # noqa: BLE001 - a summary we cannot interpret: fall back to the coarse views
        return None


def select_views(scene: CoarseScene, n_views: int, K: np.ndarray, width: int, height: int, *,
                 stride: int = 3, scale: float = 0.25, backend: str = "auto", device="cpu") -> list[FineView]:
    """Greedy largest-hole selection (§9 step 1, 2026) against a growing scene of the anchors."""
    import torch

    from vd.gaussians import Gaussians
    from vd.holes import hole_masks, scan_hole_ratios

    poses, sources = candidate_poses(scene, stride)
    n_views = min(int(n_views), len(poses))
    sw = max(int(round(width * scale)), 8)
    sh = max(int(round(height * scale)), 8)
    Ks = _scaled_K(K, sw / width, sh / height)
    full = scene.gaussians.to(device)
    temp = scene.scaffold.to(device) if scene.scaffold is not None and len(scene.scaffold) else _lift_anchors(scene, device)
    chosen: list[int] = []
    views: list[FineView] = []
    for k in range(n_views):
        remaining = [i for i in range(len(poses)) if i not in chosen]
        if temp is not None and len(temp):
            ratios = scan_hole_ratios(temp, poses[remaining], K, width, height, scale=scale).ratios
        else:
            ratios = np.ones(len(remaining))
        j = int(np.argmax(ratios))  # ties -> lowest index
        i = remaining[j]
        chosen.append(i)
        views.append(FineView(k, f"fine_{k:03d}", poses[i], float(ratios[j]), sources[i]))
        if k == n_views - 1:
            break
        # add the full coarse scene's render at the pick where the temp scene had holes
        rgb, depth, alpha = render_views(full, poses[i:i + 1], Ks, sw, sh, backend=backend)
        if temp is not None and len(temp):
            _, _, talpha = render_views(temp, poses[i:i + 1], Ks, sw, sh, backend=backend)
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

    return gaussians_from_rgbd(rgb.detach().cpu().numpy(), depth.detach().cpu().numpy(), np.asarray(K, np.float32),
                               np.asarray(pose, np.float32), mask.detach().cpu().numpy())


def _lift_anchors(scene: CoarseScene, device):
    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd

    parts = []
    for v in scene.anchors:
        if v.depth is None:
            continue
        mask = (v.mask if v.mask is not None else np.ones(v.depth.shape, bool)) & np.isfinite(v.depth) & (v.depth > 0)
        if mask.any():
            parts.append(gaussians_from_rgbd(v.rgb.astype(np.float32) / 255.0, v.depth, np.asarray(v.K, np.float32),
                                             np.asarray(v.world_from_camera, np.float32), mask))
    if not parts:
        return None
    return Gaussians.cat(parts).to(device)


# ---------------------------------------------------------------------------------------------
# the denoisers: Flux Fill (latent flow matching) and the classical stand-in


class Denoiser:
    """What the MCS loop needs from a model; latents are [B, ...] tensors."""

    name = "?"
    identity = "?"
    dtype = "float32"

    def prepare(self, rgb, holes) -> None:
        """Condition on the views' coarse renders (rgb [B,H,W,3] float 0..1) and holes [B,H,W]."""

    def encode(self, rgb):  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z):  # pragma: no cover - interface
        raise NotImplementedError

    def schedule(self, total_steps: int, height: int, width: int) -> list[float]:  # pragma: no cover
        raise NotImplementedError

    def velocity(self, x, t: float, state: dict):  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:
        pass


class ClassicalDenoiser(Denoiser):
    """No diffusion: pixel-space "latents" ([B,3,H,W] in [-1,1]) and a velocity that points at the
    Telea inpaint of the holes of the current scene's render, v = (x_t - x0_telea) / t."""

    name = "classical-telea"

    def __init__(self, device="cpu"):
        from vd.models.telea import TeleaInpaint

        self.device = device
        self.telea = TeleaInpaint()
        self.identity = f"classical:{self.telea.identity}"

    def encode(self, rgb):
        return rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0

    def decode(self, z):
        return ((z.float() + 1.0) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    def schedule(self, total_steps, height, width):
        return [1.0 - i / total_steps for i in range(total_steps)] + [0.0]

    def velocity(self, x, t, state):
        import torch

        rgb = state["render_rgb"]  # uint8 [B,H,W,3] numpy
        holes = state["render_holes"]  # bool [B,H,W]
        filled = np.stack([self.telea.inpaint(rgb[i], holes[i]) for i in range(len(rgb))])
        x0 = self.encode(torch.from_numpy(filled.astype(np.float32) / 255.0).to(x.device))
        return (x.float() - x0) / t


class FluxDenoiser(Denoiser):
    """Flux Fill through `vd.models.flux_fill` building blocks; latents are packed tokens [B, L, 64].

    Conditioning: each view's coarse render with its hole mask as the region to generate, so the
    model keeps what the coarse scene already shows and fills what it does not. The model loads
    lazily (on the first step that is not cached) and its identity keys the cache.
    """

    name = "flux-fill"

    def __init__(self, *, device="cpu", offload: str = "auto", guidance: float = 30.0, auto_fetch=None,
                 backend=None, vram_budget: Optional[int] = None):
        from vd.models.flux_fill import FluxFillInpaint

        self.backend = backend or FluxFillInpaint(device=device, offload=offload, guidance=guidance, auto_fetch=auto_fetch,
                                                  vram_budget=vram_budget)
        self.guidance = float(guidance)
        self.dtype = "bfloat16" if str(self.backend.device).startswith("cuda") else "float32"
        self.identity = f"{self.backend.identity}:fine-guidance={self.guidance}"
        self.cond = None
        self.hw: Optional[tuple[int, int]] = None

    @property
    def ff(self):
        return self.backend.flux

    def prepare(self, rgb, holes) -> None:
        import torch

        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        self.backend.work_pixels = int(rgb.shape[0] * rgb.shape[1] * rgb.shape[2])  # sizes "auto" offload
        images = rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0
        masks = torch.as_tensor(holes)[:, None].float()
        self.cond = self.ff.condition(images, masks)

    def encode(self, rgb):
        from vd.models.flux_fill import pack_latents

        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        return pack_latents(self.ff.encode(rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0))

    def decode(self, z):
        from vd.models.flux_fill import VAE_FACTOR, unpack_latents

        H, W = self.hw
        x = self.ff.decode(unpack_latents(z.float(), H // VAE_FACTOR, W // VAE_FACTOR))
        return ((x + 1.0) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    def schedule(self, total_steps, height, width):
        from vd.models.flux_fill import schedule

        return schedule(total_steps, (height // 16) * (width // 16))

    def velocity(self, x, t, state):
        H, W = self.hw
        return self.ff.velocity(x, t, self.cond, self.guidance, height=H, width=W)

    def release(self) -> None:
        self.backend.release()


def make_flux_denoiser(*, device, offload: str, guidance: float, auto_fetch: Optional[bool],
                       vram_budget: Optional[int] = None) -> Denoiser:
    return FluxDenoiser(device=device, offload=offload, guidance=guidance, auto_fetch=auto_fetch, vram_budget=vram_budget)


# ---------------------------------------------------------------------------------------------
# the loop


def _to_uint8(rgb) -> np.ndarray:
    a = rgb.detach().float().cpu().numpy() if hasattr(rgb, "detach") else np.asarray(rgb, dtype=np.float32)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _strip(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Views side by side: `top` [B,H,W,3] above `bottom` (uint8)."""
    return np.concatenate([np.concatenate(list(top), axis=1), np.concatenate(list(bottom), axis=1)], axis=0)


def _ply_bytes(g, comments: dict) -> tuple[bytes, dict]:
    from vd.ply import write_ply

    fd, tmp = tempfile.mkstemp(suffix=".ply", prefix="vd-fine-")
    os.close(fd)
    try:
        rep = write_ply(tmp, g, comments=comments)
        return Path(tmp).read_bytes(), rep.to_dict()
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _train_views(scene: CoarseScene, images, poses, K, device):
    """TrainViews: the anchor frames (their spawn masks) and the refined views (all pixels)."""
    import torch

    from vd.train import TrainView

    out = []
    # upstream 2026 alternates one step on the anchor frames and one on the views: repeat the
    # anchors so that uniform view sampling spends half the steps on each side
    reps = max(1, int(round(len(images) / max(len(scene.anchors), 1))))
    for v in [a for a in scene.anchors for _ in range(reps)]:
        mask = anchor_supervision(v)
        out.append(TrainView(
            rgb=torch.from_numpy(v.rgb.astype(np.float32) / 255.0).to(device),
            mask=torch.from_numpy(np.ascontiguousarray(mask)).to(device),
            K=torch.as_tensor(np.asarray(v.K, np.float32), device=device),
            camera_from_world=torch.as_tensor(_invert(v.world_from_camera).astype(np.float32), device=device),
        ))
    Kt = torch.as_tensor(np.asarray(K, np.float32), device=device)
    for i in range(len(images)):
        img = images[i].float().to(device)
        out.append(TrainView(
            rgb=img,
            mask=torch.ones(img.shape[:2], dtype=torch.bool, device=device),
            K=Kt,
            camera_from_world=torch.as_tensor(_invert(poses[i]).astype(np.float32), device=device),
        ))
    return out


def anchor_supervision(v) -> np.ndarray:
    """Supervised pixels of an anchor frame: the input's spawned pixels, the ring's generated ones."""
    full = np.ones(v.rgb.shape[:2], bool)
    hole = getattr(v, "hole_mask", None)
    if v.kind == "ring" and hole is not None and hole.any():
        return np.asarray(hole, bool)
    return np.asarray(v.mask, bool) if v.mask is not None and v.mask.any() else full


def rectify(scene: CoarseScene, images, poses, K, *, iters: int, seed: int, backend: str, device):
    """Fit a fresh copy of the coarse scene to the anchors plus `images` at `poses`; (g, losses)."""
    from vd.train import optimise

    g = scene.gaussians.clone().to(device)
    if iters <= 0:
        return g, []
    # one iteration = one anchor step and one view step on average (see _train_views)
    rep = optimise(g, _train_views(scene, images, poses, K, device), 2 * int(iters), seed=int(seed), backend=backend)
    g_out = getattr(rep, "gaussians", None)
    g_out = g if g_out is None else g_out
    return g_out.detach(), [float(x) for x in getattr(rep, "losses", [])]


def _tail_mean(losses: list) -> Optional[float]:
    """Mean of the last tenth of a loss history (single-view steps are noisy); None when empty."""
    if not losses:
        return None
    n = max(1, len(losses) // 10)
    return float(np.mean(losses[-n:]))


def run_fine(
    coarse_dir: Path,
    out_dir: Path,
    params: FineParams,
    *,
    denoiser_factory: Callable[[], Denoiser],
    device: str = "cpu",
    cache=None,
    image: Optional[str] = None,
    viewer=None,
) -> FineResult:
    """Run MCS on the coarse scene in `coarse_dir`; write fine.ply, steps/, summary.json to `out_dir`."""
    import torch

    from vd import console, mcs
    from vd.cache import Cache, codecs, stage_key, step_key
    from vd.holes import hole_masks
    from vd.ply import read_ply

    params.validate()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    scene = load_coarse(coarse_dir)
    if image is None and isinstance(scene.summary.get("image"), str):
        image = scene.summary["image"]  # cache records name their source image (vd export IMAGE finds them)
    inp = scene.input_view
    K, W, H = fine_frame(inp.K, inp.rgb.shape[1], inp.rgb.shape[0], params.margin)
    cache = cache or Cache.open()
    render_backend = _resolve_render_backend(params.render_backend, device)

    t0 = time.perf_counter()
    # view selection, memoised on its own (it depends on the scene and the selection params only)
    vkey = stage_key(stage="fine-views", version=VERSION, inputs=scene.inputs, backend=render_backend,
                     params={"views": params.views, "stride": params.candidate_stride, "scale": params.select_scale,
                             "frame": [W, H], "K": np.round(K, 6).tolist()})

    def compute_views():
        with console.status("fine: choosing views"):
            sel = select_views(scene, params.views, K, W, H, stride=params.candidate_stride,
                               scale=params.select_scale, backend=render_backend, device=device)
        return {"views.json": codecs.encode_json([v.to_json() for v in sel])}

    vrec, _ = cache.memoise(vkey, compute_views, stage=STAGE, image=image, meta={"step": "views"})
    views = [FineView(d["index"], d["name"], np.asarray(d["world_from_camera"], dtype=np.float64), d["hole_ratio"],
                      d["source"]) for d in codecs.decode_json(vrec.read("views.json"))]
    timings["select_s"] = time.perf_counter() - t0
    if len(views) < params.views:
        console.warn(f"only {len(views)} candidate poses are available; refining {len(views)} views instead of {params.views}")
    poses = np.stack([v.world_from_camera for v in views])

    denoiser = denoiser_factory()
    key = stage_key(
        stage=STAGE, version=VERSION, params={**params.key_params(), "frame": [W, H], "K": np.round(K, 6).tolist(),
                                              "poses": np.round(poses, 8).tolist()},
        inputs=scene.inputs, models={"denoiser": denoiser.identity}, backend=render_backend,
        dtype=denoiser.dtype, seed=int(params.seed),
    )
    state: dict = {}
    rgb0 = holes0 = None
    if viewer is not None:
        try:
            viewer.set_tab("fine")
        except Exception:  # noqa: BLE001 - the viewer never fails a run
            pass

    steps_rows: list[dict] = []
    strips: list[bytes] = []
    cached = 0
    x = None
    sched: list[float] = []
    start = mcs.start_index(params.total_steps, params.steps)
    prepared = False

    def ensure_prepared():
        nonlocal prepared, x, state, rgb0, holes0
        if prepared:
            return
        t = time.perf_counter()
        # the coarse scene's renders at every view: Flux Fill's condition and the starting point
        rgb0, _, alpha0 = render_views(scene.gaussians.to(device), poses, K, W, H, backend=render_backend)
        holes0 = hole_masks(alpha0).cpu()
        denoiser.prepare(rgb0, holes0)
        if x is None:  # not resumed: encode and noise the coarse renders
            state = {"render_rgb": _to_uint8(rgb0), "render_holes": holes0.numpy()}
            z = denoiser.encode(rgb0)
            gen = torch.Generator(device="cpu").manual_seed(int(params.seed))
            noise = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(z.device, z.dtype)
            x = mcs.add_noise(z, noise, sched[start])
        timings["prepare_s"] = timings.get("prepare_s", 0.0) + time.perf_counter() - t
        prepared = True

    sched = [float(s) for s in denoiser.schedule(params.total_steps, H, W)]
    if len(sched) != params.total_steps + 1 or abs(sched[-1]) > 0:
        raise RuntimeError(f"the {denoiser.name} schedule must have {params.total_steps + 1} points ending at 0")

    # (no progress bar: loading the model shows a spinner, and rich allows one live display)
    try:
        for k in range(params.steps):
            t, t_next = sched[start + k], sched[start + k + 1]
            skey = step_key(key, "step", k)

            def compute(k=k, t=t, t_next=t_next):
                ensure_prepared()
                return _mcs_step(k, t, t_next, x, state, denoiser, scene, poses, K, W, H, params, render_backend, device)

            ts = time.perf_counter()
            rec, hit = cache.memoise(skey, compute, stage=STAGE, image=image, meta={"step": k, "t": t})
            cached += int(hit)
            arrays = codecs.decode_tensors(rec.read("state.safetensors"))
            x = torch.from_numpy(arrays["x"]).to(device)
            state = {"render_rgb": arrays["render_rgb"], "render_holes": arrays["render_holes"].astype(bool)}
            row = codecs.decode_json(rec.read("step.json"))
            row["cached"] = bool(hit)
            row["wall_s"] = round(time.perf_counter() - ts, 3)
            steps_rows.append(row)
            strips.append(rec.read("strip.png"))
            console.info(f"fine: step {k + 1}/{params.steps} t {t:.3f} -> {t_next:.3f}"
                         + (" (cached)" if hit else f", GS loss {row.get('gs_loss_final') or 0:.4f}, {row['wall_s']:.1f} s"))
            if viewer is not None:
                _log_viewer(viewer, k, state["render_rgb"], poses, K)

        fkey = step_key(key, "final")

        def compute_final():
            ensure_prepared()
            tf = time.perf_counter()
            imgs = denoiser.decode(x.to(device)).float()
            g, losses = rectify(scene, imgs, poses, K, iters=params.gs_iters, seed=params.seed + 10_000,
                                backend=render_backend, device=device)
            rgb, _, _ = render_views(g, poses, K, W, H, backend=render_backend)
            ply, rep = _ply_bytes(g.to("cpu"), {"vd_stage": "fine", "vd_fine_key": key})
            info = {"gs_loss_first": losses[0] if losses else None, "gs_loss_final": _tail_mean(losses),
                    "gaussians": rep["written"], "seconds": round(time.perf_counter() - tf, 3)}
            return {"fine.ply": ply, "strip.png": codecs.encode_png(_strip(_to_uint8(imgs), _to_uint8(rgb))),
                    "final.json": codecs.encode_json(info)}

        ts = time.perf_counter()
        frec, fhit = cache.memoise(fkey, compute_final, stage=STAGE, image=image, meta={"step": "final"})
        final_info = codecs.decode_json(frec.read("final.json"))
        final_info.update(cached=bool(fhit), wall_s=round(time.perf_counter() - ts, 3))
    finally:
        denoiser.release()

    # outputs (each file written atomically)
    out_dir = Path(out_dir)
    (out_dir / "steps").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "steps").glob("step_*.png"):  # from an earlier run with more steps
        if stale.name not in {f"step_{k:02d}.png" for k in range(len(strips))}:
            stale.unlink()
    strip_paths = []
    for k, png in enumerate(strips):
        p = out_dir / "steps" / f"step_{k:02d}.png"
        atomic_write_bytes(p, png)
        strip_paths.append(p)
    pf = out_dir / "steps" / "final.png"
    atomic_write_bytes(pf, frec.read("strip.png"))
    strip_paths.append(pf)
    ply_path = out_dir / "fine.ply"
    atomic_write_bytes(ply_path, frec.read("fine.ply"))
    fine_g, _ = read_ply(ply_path)

    timings["total_s"] = round(time.perf_counter() - t_all, 3)
    timings["select_s"] = round(timings["select_s"], 3)
    if "prepare_s" in timings:
        timings["prepare_s"] = round(timings["prepare_s"], 3)
    summary = {
        "stage": STAGE,
        "version": VERSION,
        "key": key,
        "coarse": str(Path(coarse_dir).resolve()),
        "denoiser": {"name": denoiser.name, "identity": denoiser.identity, "dtype": denoiser.dtype},
        "memory_plan": getattr(getattr(denoiser, "backend", None), "placement", None),
        "render_backend": render_backend,
        "device": str(device),
        "params": asdict(params),
        "frame": {"width": W, "height": H, "K": np.asarray(K).round(6).tolist()},
        "schedule": [round(s, 6) for s in sched],
        "start_index": start,
        "views": [v.to_json() for v in views],
        "steps": steps_rows,
        "final": final_info,
        "gaussians": {"coarse": len(scene.gaussians), "fine": len(fine_g)},
        "timings": timings,
        "vram": {"peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None},
        "outputs": {"ply": "fine.ply", "strips": [str(p.relative_to(out_dir)) for p in strip_paths]},
    }
    summary_path = out_dir / "summary.json"
    atomic_write_bytes(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    if viewer is not None:
        try:
            viewer.log_gaussians("fine", fine_g)
        except Exception:  # noqa: BLE001 - the viewer never fails a run
            pass
    return FineResult(out_dir, ply_path, summary_path, strip_paths, summary, cached)


def _mcs_step(k, t, t_next, x, state, denoiser: Denoiser, scene, poses, K, W, H, params: FineParams, backend, device):
    """One MCS step -> cache artifacts (state.safetensors, step.json, strip.png)."""
    import torch

    from vd import mcs
    from vd.cache import codecs
    from vd.holes import hole_masks

    tm: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        v = denoiser.velocity(x, t, state)
        x0 = mcs.predict_x0(x.float(), v.float(), t)
        imgs = denoiser.decode(x0).float()
    tm["model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g, losses = rectify(scene, imgs, poses, K, iters=params.gs_iters, seed=params.seed + k, backend=backend, device=device)
    tm["rectify_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rgb, _, alpha = render_views(g, poses, K, W, H, backend=backend)
    with torch.no_grad():
        z_render = denoiser.encode(rgb)
        x_next, stats = mcs.rectified_step(x, v, z_render, t, t_next, params.rect_weight, rescale=params.rescale)
    tm["render_encode_s"] = time.perf_counter() - t0
    render_u8 = _to_uint8(rgb)
    est_u8 = _to_uint8(imgs)
    holes = hole_masks(alpha).cpu().numpy()
    row = {
        "step": k,
        "t": round(t, 6),
        "t_next": round(t_next, 6),
        "gs_loss_first": losses[0] if losses else None,
        "gs_loss_final": _tail_mean(losses),
        "render_vs_estimate_l1": float(np.abs(render_u8.astype(np.float32) - est_u8.astype(np.float32)).mean() / 255.0),
        "hole_ratio": float(holes.mean()),
        "rescale": [round(r, 6) for r in stats["rescale"]] if stats["rescale"] is not None else None,
        "norm_v": [round(n, 4) for n in stats["norm_v"]],
        "norm_v_implied": [round(n, 4) for n in stats["norm_v_implied"]] if stats["norm_v_implied"] is not None else None,
        **{k2: round(v2, 3) for k2, v2 in tm.items()},
    }
    arrays = {
        "x": x_next.detach().float().cpu(),
        "render_rgb": render_u8,
        "render_holes": holes.astype(np.uint8),
    }
    return {
        "state.safetensors": codecs.encode_tensors(arrays),
        "step.json": codecs.encode_json(row),
        "strip.png": codecs.encode_png(_strip(est_u8, render_u8)),
    }


def _log_viewer(viewer, k, rgb_u8, poses, K) -> None:
    try:
        for i in range(len(rgb_u8)):
            viewer.log_frame(f"fine/view_{i:03d}", K=K, world_from_camera=poses[i], rgb=rgb_u8[i], tab="fine")
    except Exception:  # noqa: BLE001 - the viewer never fails a run
        pass


def _resolve_render_backend(name: str, device) -> str:
    """A concrete renderer name for cache keys ("gsplat" on CUDA when installed, else "torch");
    UsageError for gsplat without CUDA or without the package."""
    from vd.render import resolve_backend

    return str(resolve_backend((name or "auto").lower(), device))


# ---------------------------------------------------------------------------------------------
# command helpers


@dataclass
class FineJob:
    source: Path  # what the user named
    coarse_dir: Path
    out_dir: Path
    image: Optional[str]


def resolve_inputs(inputs, out: Optional[Path]) -> list[FineJob]:
    """Map the command's arguments to (coarse folder, output folder) pairs; InputError when missing.

    A folder is a coarse output folder; its results go to `out` (default <folder>/fine). An image
    names the folder `vd coarse IMAGE [-o OUT]` wrote (OUT, else vd-out/<stem>/, one sub-folder per
    image when several), and results go to its fine/ sub-folder.
    """
    from vd.commands.common import output_dir

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UsageError("give at least one coarse output folder or image")
    jobs = []
    n_dirs = sum(1 for p in inputs if p.is_dir())
    for p in inputs:
        if not p.exists():
            raise InputError(f"input not found: {p}")
        if p.is_dir():
            if not is_coarse_dir(p):
                load_coarse(p)  # raises the precise InputError
            if out is None:
                dst = p / "fine"
            else:
                dst = out / p.name if n_dirs > 1 else out
            jobs.append(FineJob(p, p, dst, None))
        else:
            from vd.errors import check_input_file

            check_input_file(p, "input image")
            coarse_dir = output_dir(out, p, len(inputs))
            if not is_coarse_dir(coarse_dir):
                hint = f" -o {out}" if out is not None else ""
                raise InputError(f"no coarse scene for {p} in {coarse_dir}; run `vd coarse {p}{hint}` first")
            jobs.append(FineJob(p, coarse_dir, coarse_dir / "fine", str(p.resolve())))
    return jobs


def choose_denoiser(name: str, *, device: Optional[str], offload: str, allow_classical: bool,
                    guidance: float = 30.0, auto_fetch: Optional[bool] = None, vram_budget: Optional[int] = None):
    """(device, denoiser factory, backend name) for --inpaint-backend; UsageError (exit 2) for telea
    without --allow-classical, MissingWeightsError (exit 3) for flux-fill without weights."""
    from vd import console
    from vd.models.inpaint import INPAINT_BACKENDS, OFFLOAD_CHOICES
    from vd.paths import default_device

    name = (name or "auto").lower()
    if name not in INPAINT_BACKENDS:
        raise UsageError(f"unknown inpaint backend {name!r}; choose one of: {', '.join(INPAINT_BACKENDS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    dev = device or default_device()
    if str(dev).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {dev} was asked for but CUDA is not available; use --device cpu")
    why = ""
    if name == "auto":
        from vd.models.inpaint import flux_weights_available

        has_cuda = str(dev).startswith("cuda")
        if has_cuda and (flux_weights_available() or auto_fetch):
            name = "flux-fill"
        else:
            name = "telea"
            why = "no CUDA device" if not has_cuda else "no FLUX.1-Fill-dev weights (run: vd fetch flux-fill flux-prompt)"
        console.info(f"inpaint backend: {name}" + (f" ({why})" if why else ""))
    if name == "telea":
        if not allow_classical:
            reason = f" ({why})" if why else ""
            raise UsageError(
                f"`vd fine` refines with a diffusion model, but the inpaint backend is telea{reason}, which has none; "
                "use --inpaint-backend flux-fill, or --allow-classical to rectify with classical inpaints"
            )
        console.warn("no diffusion model: the rectification loop runs on classical (Telea) inpaints")
        return dev, (lambda: ClassicalDenoiser(dev)), "telea"
    if not str(dev).startswith("cuda"):
        console.warn(f"running Flux Fill on {dev}: fine for tiny test models, very slow for the real one")
    # resolve the weights now so a missing model fails before any work (exit 3)
    from vd.fetch.registry import require

    require("flux-fill", auto_fetch=auto_fetch)
    require("flux-prompt", auto_fetch=auto_fetch)
    return dev, (lambda: make_flux_denoiser(device=dev, offload=offload, guidance=guidance, auto_fetch=auto_fetch,
                                            vram_budget=vram_budget)), "flux-fill"


def print_summary(result: FineResult) -> None:
    """The per-step table (and the memory table) on stderr."""
    from rich.table import Table

    from vd import console

    if console.is_quiet():
        return
    s = result.summary
    t = Table(title=f"vd fine: {len(s['views'])} views, {len(s['steps'])} steps ({s['denoiser']['name']})",
              title_justify="left", show_edge=False)
    for col, just in [("step", "right"), ("t", "right"), ("GS loss", "right"), ("|render - x0|", "right"),
                      ("rescale", "right"), ("holes", "right"), ("time", "right"), ("", "left")]:
        t.add_column(col, justify=just)

    def f(x, fmt="{:.4f}"):
        return "-" if x is None else fmt.format(x)

    for r in s["steps"]:
        resc = r.get("rescale")
        t.add_row(str(r["step"]), f"{r['t']:.3f} → {r['t_next']:.3f}", f(r.get("gs_loss_final")),
                  f(r.get("render_vs_estimate_l1")), f(float(np.mean(resc)) if resc else None, "{:.3f}"),
                  f(r.get("hole_ratio"), "{:.1%}"), f(r.get("wall_s"), "{:.1f} s"), "cached" if r.get("cached") else "")
    fi = s["final"]
    t.add_row("final", "0", f(fi.get("gs_loss_final")), "-", "-", "-", f(fi.get("wall_s"), "{:.1f} s"),
              "cached" if fi.get("cached") else "")
    console.err.print(t)
    vram = s.get("vram", {}).get("peak_bytes")
    console.info(f"total {s['timings']['total_s']:.1f} s, peak VRAM "
                 + (f"{vram / 2**30:.2f} GiB" if vram else "n/a (CPU)")
                 + f", {s['gaussians']['fine']} Gaussians -> {result.ply}")


__all__ = [
    "FineParams",
    "FineView",
    "FineResult",
    "CoarseScene",
    "Denoiser",
    "ClassicalDenoiser",
    "FluxDenoiser",
    "load_coarse",
    "is_coarse_dir",
    "fine_frame",
    "candidate_poses",
    "select_views",
    "render_views",
    "rectify",
    "run_fine",
    "make_flux_denoiser",
    "resolve_inputs",
    "choose_denoiser",
    "print_summary",
    "anchor_supervision",
]
