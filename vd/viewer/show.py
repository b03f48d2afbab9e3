"""`vd view`: log a PLY, an image or a vd output folder into a Viewer.

Sources:
- ``FILE.ply``: the Gaussians, in the "final" tab.
- an output folder (``cameras.json`` from `vd coarse`): every camera with RGB, depth and masks
  (input and ring frames in "scaffold", added views in "coarse"), scaffold.ply, coarse.ply,
  fine/fine.ply (or fine.ply) and gaussians_refined.ply when present.
- ``IMAGE``: its output folder ``vd-out/<stem>/`` when it exists, else the image alone.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np

from vd.cameras import trajectory
from vd.errors import InputError
from vd.export.read import read_gaussians
from vd.image import load_image
from vd.render import render
from vd.viewer import log_view
from vd.views import find_input, read_views

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
PLYS = (
    ("scaffold.ply", "scaffold"),
    ("coarse.ply", "coarse"),
    ("fine/fine.ply", "fine"),
    ("fine.ply", "fine"),
    ("gaussians_refined.ply", "final"),
)


def resolve_source(source, *, out_root: Optional[Path] = None) -> tuple[str, Path]:
    """("ply" | "dir" | "image", path) for what `vd view SOURCE` shows; InputError otherwise."""

    p = Path(source)
    if not p.exists():
        raise InputError(f"nothing to view: {p} does not exist")
    if p.is_dir():
        if (
            (p / "cameras.json").is_file()
            or any((p / name).is_file() for name, _ in PLYS)
            or (p / "depth.npy").is_file()
        ):
            return "dir", p
        raise InputError(f"{p} is not a vd output folder (no cameras.json, depth.npy or scene PLY in it)")
    suffix = p.suffix.lower()
    if suffix == ".ply":
        return "ply", p
    if suffix in IMAGE_SUFFIXES:
        folder = (Path("vd-out") if out_root is None else Path(out_root)) / p.stem
        if (folder / "cameras.json").is_file() or (folder / "depth.npy").is_file():
            return "dir", folder
        return "image", p
    raise InputError(f"cannot view {p}: expected a .ply file, an image or a vd output folder")


def source_stem(kind: str, path: Path) -> str:
    return (path.resolve().name if kind == "dir" else path.stem) or "scene"


def _default_K(width: int, height: int, fov_deg: float = 60.0):
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def log_source(viewer, kind: str, path: Path) -> dict:
    """Log `path` into `viewer`; returns a summary {"cameras": n, "gaussians": {tab: n}, ...}."""

    summary: dict = {"source": str(path), "kind": kind, "cameras": 0, "gaussians": {}}
    if kind == "ply":
        g, _meta = read_gaussians(path)
        viewer.log_gaussians("final", g)
        viewer.set_tab("final")
        summary["gaussians"]["final"] = len(g)
        summary["_scene"] = (g, None)
        return summary
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.thumbnail((2048, 2048))
                rgb = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise InputError(f"cannot read the image {path}: {e}") from None
        log.warning(
            f"no vd output for {path.name} in vd-out/{path.stem}/; showing the image only "
            f"(run `vd coarse {path}` first, or `vd view OUTPUT_DIR`)"
        )
        h, w = rgb.shape[:2]
        viewer.log_frame("input", K=_default_K(w, h), world_from_camera=np.eye(4), rgb=rgb, tab="scaffold")
        summary["cameras"] = 1
        return summary

    last_tab = "scaffold"
    camera = None
    if (path / "cameras.json").is_file():
        views = read_views(path)
        if views:
            first = find_input(views)
            camera = (first.K, first.width, first.height)
        for v in views:
            log_view(viewer, v, "coarse" if v.kind == "view" else "scaffold")
            summary["cameras"] += 1
    else:
        summary["cameras"] += log_depth_output(viewer, path)  # a `vd depth` folder
    seen = set()
    for name, tab in PLYS:
        f = path / name
        if tab in seen or not f.is_file():
            continue
        g, _ = read_gaussians(f)
        viewer.log_gaussians(tab, g)
        summary["gaussians"][tab] = len(g)
        seen.add(tab)
        last_tab = tab
        summary["_scene"] = (g, camera)
    viewer.set_tab(last_tab)  # the latest stage present
    return summary


def log_fly_through(
    viewer, g, n: int, *, camera=None, traj: str = "spiral", size=(512, 384), backend: str = "auto", progress=None
) -> int:
    """Render `n` frames of `g` along a `traj` loop around the input camera and log them with
    log_video_frame (timeline "frame", final tab). `camera` = (K, width, height) of the input view;
    without it a 60-degree camera of `size`. The loop's radius comes from the Gaussians in front
    of the input camera (the 5th..50th percentile range of their positions, as for depth maps)."""
    import torch

    if n <= 0:
        return 0
    if camera is None:
        w, h = int(size[0]), int(size[1])
        K = _default_K(w, h)
    else:
        K, w, h = np.asarray(camera[0], np.float64), int(camera[1]), int(camera[2])
    means = g.means.detach().cpu().numpy()
    front = means[np.isfinite(means).all(1) & (means[:, 2] > 0)]
    if len(front) < 3:
        raise InputError("no Gaussians in front of the input camera, so no fly-through can be rendered")
    radius = float(np.mean(np.percentile(front, 50, axis=0) - np.percentile(front, 5, axis=0)))
    if not np.isfinite(radius) or radius <= 0:
        radius = float(np.median(front[:, 2]) * 0.1)
    poses = trajectory(traj, int(n), radius, width=w, height=h)
    Kt = torch.as_tensor(K, dtype=torch.float32)
    with torch.no_grad():
        for i, pose in enumerate(poses):
            view = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32)
            r = render(g, view[None], Kt[None], w, h, backend=backend)
            rgb = (r.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            depth = torch.where(r.alpha[0] > 0.5, r.depth[0], torch.zeros_like(r.depth[0])).cpu().numpy()
            viewer.log_video_frame(i, rgb, depth, K=K, world_from_camera=pose)
            if progress is not None:
                progress(i + 1)
    return len(poses)


def log_depth_output(viewer, out_dir, *, rgb=None, image=None, max_resolution: int = 512, name: str = "input") -> int:
    """Log what `vd depth` wrote in `out_dir` (depth.npy, intrinsics.json, mask.png) as the input
    camera of the scaffold tab; `rgb` (HxWx3) or `image` (a path, loaded like the stage did) gives
    the colours, else depth.png. Returns the number of frames logged (0 when the files are absent)."""

    out_dir = Path(out_dir)
    if not (out_dir / "depth.npy").is_file() or not (out_dir / "intrinsics.json").is_file():
        return 0
    depth = np.load(out_dir / "depth.npy", allow_pickle=False).astype(np.float32)
    intr = json.loads((out_dir / "intrinsics.json").read_text())
    K = np.asarray(intr["K"], dtype=np.float64)
    h, w = depth.shape
    if rgb is None and image is not None:
        rgb = load_image(image, max_resolution=max_resolution).rgb
    if rgb is None and (out_dir / "depth.png").is_file():
        from PIL import Image

        with Image.open(out_dir / "depth.png") as im:
            rgb = np.asarray(im.convert("RGB"))
    if rgb is None:
        rgb = np.zeros((h, w, 3), np.uint8)
    if rgb.shape[:2] != (h, w):
        from PIL import Image

        rgb = np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).resize((w, h), Image.Resampling.BILINEAR))
    masks = {}
    if (out_dir / "mask.png").is_file():
        from PIL import Image

        with Image.open(out_dir / "mask.png") as im:
            masks["valid"] = np.asarray(im.convert("L")) > 127
    viewer.log_frame(name, K=K, world_from_camera=np.eye(4), rgb=rgb, depth=depth, masks=masks, tab="scaffold")
    return 1


def log_ply(viewer, path, tab: str = "final") -> int:
    """Log the Gaussians of a PLY into `tab` (world/<tab>/gaussians); returns their number."""
    g, _ = read_gaussians(path)
    viewer.log_gaussians(tab, g)
    viewer.set_tab(tab)
    return len(g)
