"""The refine dataset: a COLMAP text model plus per-view depth/normal priors and masks.

Layout (readable by COLMAP, nerfstudio's `colmap` dataparser with ``--colmap-path sparse/0``,
gsplat's `examples/datasets/colmap.py`, and `vd refine`)::

    images/000000.png ...           RGB per view (8-bit PNG)
    masks/000000.png ...            255 = supervised pixel, 0 = ignored (nerfstudio convention): the
                                    view's supervision mask (`vd.views.View.supervise`) AND valid depth
    priors/depth/000000.npy ...     float32 [H,W] z-depth prior (0 outside the mask)
    priors/normal/000000.npy ...    float32 [H,W,3] unit normals from the depth prior, camera frame
                                    (OpenCV), oriented towards the camera; 0 where undefined
    sparse/0/cameras.txt            one PINHOLE camera per image: CAMERA_ID PINHOLE W H fx fy cx cy
    sparse/0/images.txt             IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then an empty
                                    POINTS2D line; world->camera, Hamilton wxyz, OpenCV axes
    sparse/0/points3D.txt           POINT3D_ID X Y Z R G B ERROR with empty tracks
    sparse/0/{cameras,images,points3D}.bin   the same model in COLMAP's binary format (readers
                                    prefer it; gsplat's pycolmap text reader stops at the first
                                    empty line, so it needs the binary files)
    meta.json                       conventions, provenance, view mapping (world_from_camera too), and
                                    the views left out (those that supervise no pixel: a mask without
                                    one is rejected by the readers)

The world frame is vd's: the input camera's OpenCV frame.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vd import __version__
from vd.colmap import (
    cameras_bin,
    cameras_txt,
    images_bin,
    images_txt,
    points3d_bin,
    points3d_txt,
    pose_from_colmap,
    read_cameras_txt,
    read_images_txt,
)
from vd.errors import InputError, UsageError
from vd.export.normals import normals_from_depth
from vd.export.transform import C0, SplatArrays, filter_splats
from vd.export.validate import SPARSE, check_dataset
from vd.fsio import atomic_dir
from vd.views import View

DATASET_FORMAT = "vd-colmap-dataset"
DATASET_VERSION = 1

CONVENTIONS = {
    "camera": (
        "OpenCV (x right, y down, z forward); the image origin is the top-left corner of the top-left pixel, "
        "so pixel (u,v) has its centre at (u+0.5, v+0.5) (COLMAP and gsplat convention)"
    ),
    "world": "vd world = the input camera's frame (OpenCV axes, -y is up)",
    "colmap_pose": (
        "images.txt holds world->camera (camera_from_world): R as a Hamilton wxyz quaternion, t; camera centre = -R^T t"
    ),
    "meta_pose": "meta.json views[].world_from_camera is the inverse (camera->world), 4x4 row-major",
    "depth": "priors/depth/*.npy: float32 [H,W] z-depth along the optical axis, scene units; 0 where not valid",
    "normal": (
        "priors/normal/*.npy: float32 [H,W,3] unit normals in the camera frame from the depth prior "
        "(back-project, central differences, cross product), oriented towards the camera; 0 where undefined"
    ),
    "mask": "masks/*.png: uint8 [H,W], 255 = valid (supervised) pixel, 0 = ignored",
}

log = logging.getLogger(__name__)


@dataclass
class DatasetReport:
    path: Path
    views: int
    points: int
    files: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "views": self.views, "points": self.points, "files": self.files}


# ------------------------------------------------------------------ loading vd output folders
# ------------------------------------------------------------------ writing
def points_from_gaussians(g, max_points: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float, rgb uint8) of the opaque, finite Gaussians (a seeded subsample above max_points)."""

    a, _ = filter_splats(SplatArrays.from_gaussians(g), min_alpha=0.1)
    idx = np.arange(len(a))
    if len(a) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(a), max_points, replace=False))
    rgb = np.clip(np.round((a.sh[idx, 0] * C0 + 0.5) * 255), 0, 255).astype(np.uint8)
    return a.means[idx], rgb


def points_from_views(views: Sequence[View], max_points: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every view's valid depth pixels to world points (seeded subsample)."""
    xyz_parts: list[np.ndarray] = []
    rgb_parts: list[np.ndarray] = []
    for v in views:
        if v.depth is None:
            continue
        ok = np.isfinite(v.depth) & (v.depth > 0) & v.supervise
        vv, uu = np.nonzero(ok)
        z = v.depth[vv, uu].astype(np.float64)
        x = (uu + 0.5 - v.K[0, 2]) / v.K[0, 0] * z
        y = (vv + 0.5 - v.K[1, 2]) / v.K[1, 1] * z
        P = np.stack([x, y, z], 1) @ v.world_from_camera[:3, :3].T + v.world_from_camera[:3, 3]
        xyz_parts.append(P)
        rgb_parts.append(v.rgb[vv, uu])
    if not xyz_parts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    xyz, rgb = np.concatenate(xyz_parts), np.concatenate(rgb_parts)
    if len(xyz) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
        xyz, rgb = xyz[idx], rgb[idx]
    return xyz, rgb


def check_target(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"the output folder {out} is not empty; pass --force to replace it")


def relative_paths(provenance: dict, folder: Path) -> dict:
    """The provenance with every absolute path made relative to the dataset folder (the folder can move with its
    sources, and no local user name or layout is written into it)."""
    base = Path(os.path.abspath(folder))
    out = {}
    for k, v in provenance.items():
        if isinstance(v, str) and Path(v).is_absolute():
            try:
                v = Path(os.path.relpath(v, base)).as_posix()
            except ValueError:  # another drive (Windows): keep the name only
                v = Path(v).name
        out[k] = v
    return out


def supervised_pixels(v: View) -> np.ndarray:
    """bool [H,W]: the pixels a view supervises that have a depth (its dataset mask)."""
    depth = np.asarray(v.depth, np.float32)
    return np.isfinite(depth) & (depth > 0) & np.asarray(v.supervise, bool)


def write_colmap_dataset(
    out,
    views: Sequence[View],
    *,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    provenance: dict | None = None,
    force: bool = False,
) -> DatasetReport:
    """Write the refine dataset to `out` (built in a temporary folder, then moved into place)."""
    from PIL import Image

    out = Path(out)
    check_target(out, force)
    if not views:
        raise InputError("there are no views to export")
    # a view that supervises no pixel with a depth (a move view of `vd coarse` whose uncovered pixels all hid
    # what another view sees) would be a mask without a pixel, which the dataset's readers reject
    left_out = [
        v.name
        for v in views
        if v.depth is not None and np.shape(v.depth) == np.shape(v.supervise) and not supervised_pixels(v).any()
    ]
    views = [v for v in views if v.name not in left_out]
    for name in left_out:
        log.info("view %s supervises no pixel; left out of the dataset", name)
    names = [f"{i:06d}.png" for i in range(len(views))]
    if points is None:
        points = points_from_views(views)
    n_files = 0
    meta_views = []
    with atomic_dir(out) as tmp:
        for sub in ("images", "masks", "priors/depth", "priors/normal", "sparse/0"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        for i, (v, name) in enumerate(zip(views, names, strict=True)):
            stem = name[:-4]
            rgb = np.ascontiguousarray(v.rgb[..., :3].astype(np.uint8))
            h, w = rgb.shape[:2]
            if v.depth is None:
                raise InputError(
                    f"view {v.name} has no depth map; the refine dataset needs a depth prior for every view"
                )
            depth = np.asarray(v.depth, np.float32)
            if depth.shape != (h, w):
                raise InputError(f"view {v.name}: depth {depth.shape} does not match the image ({h}, {w})")
            valid = np.isfinite(depth) & (depth > 0)
            mask = supervised_pixels(v)
            normal, nvalid = normals_from_depth(depth, v.K, valid)
            Image.fromarray(rgb).save(tmp / "images" / name)
            Image.fromarray((mask * 255).astype(np.uint8)).save(tmp / "masks" / name)
            np.save(tmp / "priors" / "depth" / f"{stem}.npy", np.where(valid, depth, 0).astype(np.float32))
            np.save(tmp / "priors" / "normal" / f"{stem}.npy", normal)
            n_files += 4
            meta_views.append(
                {
                    "index": i,
                    "image_id": i + 1,
                    "camera_id": i + 1,
                    "name": name,
                    "source_name": v.name,
                    "kind": v.kind,
                    "width": w,
                    "height": h,
                    "K": np.asarray(v.K, float).tolist(),
                    "world_from_camera": np.asarray(v.world_from_camera, float).tolist(),
                    "image": f"images/{name}",
                    "mask": f"masks/{name}",
                    "depth": f"priors/depth/{stem}.npy",
                    "normal": f"priors/normal/{stem}.npy",
                    "mask_pixels": int(mask.sum()),
                    "normal_pixels": int((nvalid & mask).sum()),
                    "mask_rule": "supervised pixels AND finite depth > 0",
                    **({"extra": {"dense_index": v.dense_index}} if v.dense_index is not None else {}),
                }
            )
        xyz, prgb = points
        cams = [(v.K, v.width, v.height) for v in views]
        poses = [v.world_from_camera for v in views]
        (tmp / "sparse/0/cameras.txt").write_text(cameras_txt(cams))
        (tmp / "sparse/0/images.txt").write_text(images_txt(poses, names))
        (tmp / "sparse/0/points3D.txt").write_text(points3d_txt(np.asarray(xyz), np.asarray(prgb)))
        (tmp / "sparse/0/cameras.bin").write_bytes(cameras_bin(cams))
        (tmp / "sparse/0/images.bin").write_bytes(images_bin(poses, names))
        (tmp / "sparse/0/points3D.bin").write_bytes(
            points3d_bin(np.asarray(xyz, np.float64), np.asarray(prgb, np.uint8))
        )
        meta = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "conventions": CONVENTIONS,
            "colmap": {
                "sparse": "sparse/0",
                "camera_model": "PINHOLE",
                "text": True,
                "binary": True,
                "nerfstudio": "ns-train splatfacto colmap --data <DIR> --colmap-path sparse/0",
                "gsplat": "python examples/simple_trainer.py default --data_dir <DIR> --data_factor 1",
            },
            "provenance": {"vd_version": __version__, "mode": "single-image", **relative_paths(provenance or {}, out)},
            "points3D": {"count": int(len(xyz)), "source": (provenance or {}).get("points_source", "depth")},
            "views": meta_views,
            "left_out": [{"source_name": n, "why": "supervises no pixel"} for n in left_out],
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        n_files += 7
    return DatasetReport(out, len(views), int(len(xyz)), n_files)


# ------------------------------------------------------------------ reading (used by refine)
def load_dataset(path) -> tuple[list[View], dict]:
    """Validate (strictly) and load a refine dataset: its views (named by image file, masks as
    their supervision) and meta.json. DatasetInvalid, listing every problem, when invalid."""
    from PIL import Image

    path = Path(path)
    check_dataset(path)
    meta = json.loads((path / "meta.json").read_text())
    cams = read_cameras_txt((path / SPARSE / "cameras.txt").read_text(), "cameras.txt")
    imgs = read_images_txt((path / SPARSE / "images.txt").read_text(), "images.txt")
    kinds = {v.get("name"): v.get("kind", "view") for v in meta.get("views", []) if isinstance(v, dict)}
    views = []
    for _image_id, q, t, cam_id, name in sorted(imgs, key=lambda e: e[0]):
        model, w, h, prm = cams[cam_id]
        fx, fy, cx, cy = prm if model == "PINHOLE" else (prm[0], prm[0], prm[1], prm[2])
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
        stem = Path(name).stem
        rgb = np.asarray(Image.open(path / "images" / name).convert("RGB"))
        mask = np.asarray(Image.open(path / "masks" / f"{stem}.png").convert("L")) > 127
        depth = np.load(path / "priors" / "depth" / f"{stem}.npy", allow_pickle=False).astype(np.float32)
        normal = np.load(path / "priors" / "normal" / f"{stem}.npy", allow_pickle=False).astype(np.float32)
        views.append(
            View(
                name=name,
                kind=kinds.get(name, "view"),
                rgb=rgb,
                depth=depth,
                K=K,
                world_from_camera=pose_from_colmap(q, t),
                supervise=mask,
                normal=normal,
            )
        )
    return views, meta


__all__ = [
    "CONVENTIONS",
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "SPARSE",
    "DatasetReport",
    "write_colmap_dataset",
    "points_from_gaussians",
    "points_from_views",
    "check_target",
    "load_dataset",
]
