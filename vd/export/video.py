"""Fly-through videos: render a camera trajectory with `vd.render`, encode MP4 (imageio-ffmpeg,
H.264, yuv420p) or GIF (imageio's Pillow plugin). Optionally RGB and depth side by side (depth as
inverse depth, turbo colour map, range fixed over the whole video from the 1st-99th percentiles).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.cameras import TRAJECTORIES, invert_pose, trajectory
from vd.errors import UsageError
from vd.fsio import atomic_path
from vd.render import render
from vd.trajectory_file import load_trajectory

VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_SIDE = 4096  # 4K: DCI 4096x2160 or UHD 3840x2160
MAX_PIXELS = 4096 * 2160


def parse_size(text: str) -> tuple[int, int]:
    """ "WxH" -> (W, H), each side 16 to 4096 pixels and at most 4K's pixel count; UsageError otherwise."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1920x1080; got {text!r}")
    w, h = (int(p) for p in parts)
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE) or w * h > MAX_PIXELS:
        raise UsageError(f"--size must be between 16x16 and 4K (4096x2160 or 3840x2160 pixels); got {w}x{h}")
    return w, h


def fit_camera(K, width: int, height: int, size: tuple[int, int] | None) -> tuple[np.ndarray, int, int]:
    """(K, W, H) of a camera resized to `size` (None: unchanged): the same view, scaled with square pixels to
    cover the new frame and centred, so a frame of another aspect crops the scene's view rather than stretching it."""
    K = np.asarray(K, np.float64)
    if size is None:
        return K, int(width), int(height)
    w, h = size
    s = max(w / width, h / height)
    K2 = K.copy()
    K2[0, 0], K2[1, 1] = K[0, 0] * s, K[1, 1] * s
    K2[0, 2] = K[0, 2] * s + (w - width * s) / 2
    K2[1, 2] = K[1, 2] * s + (h - height * s) / 2
    return K2, int(w), int(h)


@dataclass
class VideoReport:
    path: Path
    frames: int
    width: int
    height: int
    fps: float
    seconds: float
    bytes: int
    trajectory: str

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def colorize_depth(depths: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[N,H,W] depths -> uint8 [N,H,W,3] turbo images of inverse depth (invalid pixels black)."""
    import cv2

    inv = np.where(valid, 1.0 / np.maximum(depths, 1e-6), np.nan)
    vals = inv[np.isfinite(inv)]
    if vals.size:
        lo, hi = np.percentile(vals, [1, 99])
    else:
        lo, hi = 0.0, 1.0
    t = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    t = np.nan_to_num(t, nan=0.0)
    out = np.empty(depths.shape + (3,), np.uint8)
    for i in range(len(depths)):
        bgr = cv2.applyColorMap((t[i] * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
        out[i] = bgr[..., ::-1]
        out[i][~valid[i]] = 0
    return out


def trajectory_poses(traj: str, frames: int, *, radius: float, width: int, height: int) -> np.ndarray:
    """world_from_camera poses [N,4,4]: a named trajectory (spiral, wobble, rot) or a file."""

    if traj in TRAJECTORIES:
        return (
            trajectory(traj, frames, radius, width=width, height=height)
            if traj != "rot"
            else trajectory(traj, frames, radius)
        )
    p = Path(traj)
    if p.exists():
        return load_trajectory(p)
    raise UsageError(
        f"--traj must be one of {', '.join(TRAJECTORIES)} or a trajectory file (JSON or COLMAP images.txt); "
        f"{traj!r} is neither"
    )


def render_frames(
    g,
    poses: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    backend="auto",
    side_by_side_depth=False,
    progress=None,
    batch: int = 1,
) -> np.ndarray:
    import torch

    rgbs, depths, alphas = [], [], []
    task = progress.add_task("video: rendering", total=len(poses)) if progress is not None else None
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=g.device)
    with torch.no_grad():
        for i in range(0, len(poses), batch):
            vm = torch.as_tensor(invert_pose(poses[i : i + batch]), dtype=torch.float32, device=g.device)
            out = render(g, vm, Kt[None].expand(len(vm), 3, 3), width, height, backend=backend)
            rgbs.append((out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            if side_by_side_depth:
                depths.append(out.depth.float().cpu().numpy())
                alphas.append(out.alpha.float().cpu().numpy())
            if task is not None:
                progress.update(task, advance=len(vm))
    frames = np.concatenate(rgbs)
    if side_by_side_depth:
        d = np.concatenate(depths)
        a = np.concatenate(alphas)
        frames = np.concatenate([frames, colorize_depth(d, (a > 0.5) & np.isfinite(d) & (d > 0))], axis=2)
    return frames


def encode(frames: np.ndarray, path: Path, fps: float) -> int:
    """Write uint8 frames [N,H,W,3] to `path` (.mp4 or .gif) atomically; returns the file size."""
    import imageio.v3 as iio

    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UsageError(f"the video output must end in .mp4 or .gif, got {path.name}")
    n, h, w = frames.shape[:3]
    if suffix == ".mp4":
        # yuv420p needs even sizes: pad by one black row/column when odd
        ph, pw = h % 2, w % 2
        if ph or pw:
            frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".mp4":
            import imageio.v2 as iio2

            writer = iio2.get_writer(
                str(tmp),
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=1,
                quality=8,
                ffmpeg_log_level="error",
            )
            try:
                for f in frames:
                    writer.append_data(f)
            finally:
                writer.close()
        else:
            iio.imwrite(tmp, list(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return os.path.getsize(path)


def export_video(
    g,
    path,
    *,
    K,
    width: int,
    height: int,
    traj: str = "spiral",
    frames: int = 60,
    fps: float = 20.0,
    radius: float,
    side_by_side_depth: bool = False,
    backend: str = "auto",
    device=None,
    progress=None,
) -> VideoReport:

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"the video output must end in .mp4 or .gif, got {path.name}")
    if frames < 1:
        raise UsageError(f"--frames must be >= 1, got {frames}")
    if fps <= 0:
        raise UsageError(f"--fps must be > 0, got {fps}")
    t0 = time.perf_counter()
    poses = trajectory_poses(traj, frames, radius=radius, width=width, height=height)
    if device is not None:
        g = g.to(device)
    imgs = render_frames(
        g, poses, K, width, height, backend=backend, side_by_side_depth=side_by_side_depth, progress=progress
    )
    size = encode(imgs, path, fps)
    return VideoReport(
        path, len(imgs), int(imgs.shape[2]), int(imgs.shape[1]), fps, time.perf_counter() - t0, size, traj
    )


def read_video(path) -> np.ndarray:
    """Decode a written video back to uint8 frames [N,H,W,3] (for tests)."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return np.stack(list(iio.imiter(str(path), plugin="FFMPEG")))
    arr = iio.imread(str(path), index=None)
    return np.asarray(arr)[..., :3]


__all__ = [
    "MAX_SIDE",
    "VideoReport",
    "export_video",
    "fit_camera",
    "parse_size",
    "render_frames",
    "encode",
    "colorize_depth",
    "trajectory_poses",
    "read_video",
]
