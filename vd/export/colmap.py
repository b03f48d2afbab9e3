"""The refine dataset: a COLMAP text model plus per-view depth/normal priors and masks.

Layout (readable by COLMAP, nerfstudio's `colmap` dataparser with ``--colmap-path sparse/0``,
gsplat's `examples/datasets/colmap.py`, and `vd refine`)::

    images/000000.png ...           RGB per view (8-bit PNG)
    masks/000000.png ...            255 = supervised pixel, 0 = ignored (nerfstudio convention)
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
    meta.json                       conventions, provenance, view mapping (world_from_camera too)

The world frame is vd's: the input camera's OpenCV frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vd.errors import InputError, UsageError
from vd.geometry import quat_to_rotmat, rotmat_to_quat

DATASET_FORMAT = "vd-colmap-dataset"
DATASET_VERSION = 1
SPARSE = Path("sparse") / "0"

CONVENTIONS = {
    "camera": "OpenCV (x right, y down, z forward); the image origin is the top-left corner of the top-left pixel, so pixel (u,v) has its centre at (u+0.5, v+0.5) (COLMAP and gsplat convention)",
    "world": "vd world = the input camera's frame (OpenCV axes, -y is up)",
    "colmap_pose": "images.txt holds world->camera (camera_from_world): R as a Hamilton wxyz quaternion, t; camera centre = -R^T t",
    "meta_pose": "meta.json views[].world_from_camera is the inverse (camera->world), 4x4 row-major",
    "depth": "priors/depth/*.npy: float32 [H,W] z-depth along the optical axis, scene units; 0 where not valid",
    "normal": "priors/normal/*.npy: float32 [H,W,3] unit normals in the camera frame from the depth prior (back-project, central differences, cross product), oriented towards the camera; 0 where undefined",
    "mask": "masks/*.png: uint8 [H,W], 255 = valid (supervised) pixel, 0 = ignored",
}


@dataclass
class ViewData:
    """One view to export: uint8 RGB, z-depth, intrinsics, camera-to-world pose, valid mask."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray
    world_from_camera: np.ndarray
    mask: np.ndarray | None = None
    kind: str = "view"
    extra: dict = field(default_factory=dict)


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
def _fmt(x: float) -> str:
    return f"{float(x):.17g}"


def quat_from_rotmat(R: np.ndarray) -> np.ndarray:
    return rotmat_to_quat(R)


def colmap_pose(world_from_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q wxyz, t) of the world->camera transform of a camera-to-world 4x4 pose."""
    P = np.asarray(world_from_camera, np.float64)
    R = P[:3, :3].T
    t = -R @ P[:3, 3]
    return quat_from_rotmat(R), t


def cameras_txt(views: Sequence[ViewData]) -> str:
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(views)}"]
    for i, v in enumerate(views):
        h, w = v.rgb.shape[:2]
        K = v.K
        lines.append(f"{i + 1} PINHOLE {w} {h} {_fmt(K[0, 0])} {_fmt(K[1, 1])} {_fmt(K[0, 2])} {_fmt(K[1, 2])}")
    return "\n".join(lines) + "\n"


def images_txt(views: Sequence[ViewData], names: Sequence[str]) -> str:
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(views)}, mean observations per image: 0"]
    for i, (v, name) in enumerate(zip(views, names)):
        q, t = colmap_pose(v.world_from_camera)
        lines.append(f"{i + 1} {' '.join(_fmt(x) for x in q)} {' '.join(_fmt(x) for x in t)} {i + 1} {name}")
        lines.append("")  # POINTS2D: present, empty
    return "\n".join(lines) + "\n"


def points3d_txt(xyz: np.ndarray, rgb: np.ndarray) -> str:
    n = len(xyz)
    head = ["# 3D point list with one line of data per point:",
            "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
            f"# Number of points: {n}, mean track length: 0"]
    if n == 0:
        return "\n".join(head) + "\n"
    ids = np.arange(1, n + 1)
    body = "\n".join(
        f"{i} {x:.9g} {y:.9g} {z:.9g} {r} {g} {b} 0"
        for i, (x, y, z), (r, g, b) in zip(ids.tolist(), xyz.astype(np.float64).tolist(), rgb.astype(int).tolist())
    )
    return "\n".join(head) + "\n" + body + "\n"


def points_from_gaussians(g, max_points: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float, rgb uint8) of the opaque, finite Gaussians (a seeded subsample above max_points)."""
    from vd.export.transform import C0, SplatArrays, filter_splats

    a, _ = filter_splats(SplatArrays.from_gaussians(g), min_alpha=0.1)
    idx = np.arange(len(a))
    if len(a) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(a), max_points, replace=False))
    rgb = np.clip(np.round((a.sh[idx, 0] * C0 + 0.5) * 255), 0, 255).astype(np.uint8)
    return a.means[idx], rgb


def points_from_views(views: Sequence[ViewData], max_points: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every view's valid depth pixels to world points (seeded subsample)."""
    xyz, rgb = [], []
    for v in views:
        if v.depth is None:
            continue
        ok = np.isfinite(v.depth) & (v.depth > 0)
        if v.mask is not None:
            ok &= v.mask
        vv, uu = np.nonzero(ok)
        z = v.depth[vv, uu].astype(np.float64)
        x = (uu + 0.5 - v.K[0, 2]) / v.K[0, 0] * z
        y = (vv + 0.5 - v.K[1, 2]) / v.K[1, 1] * z
        P = np.stack([x, y, z], 1) @ v.world_from_camera[:3, :3].T + v.world_from_camera[:3, 3]
        xyz.append(P)
        rgb.append(v.rgb[vv, uu])
    if not xyz:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    xyz, rgb = np.concatenate(xyz), np.concatenate(rgb)
    if len(xyz) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
        xyz, rgb = xyz[idx], rgb[idx]
    return xyz, rgb


# COLMAP binary model (what COLMAP, and gsplat's pycolmap SceneManager, read first when present;
# the latter's text reader stops at the first empty line, i.e. at an empty POINTS2D line).
_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1}


def cameras_bin(views: Sequence[ViewData]) -> bytes:
    import struct

    parts = [struct.pack("<Q", len(views))]
    for i, v in enumerate(views):
        h, w = v.rgb.shape[:2]
        K = v.K
        parts.append(struct.pack("<IiQQ4d", i + 1, _MODEL_IDS["PINHOLE"], w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    return b"".join(parts)


def images_bin(views: Sequence[ViewData], names: Sequence[str]) -> bytes:
    import struct

    parts = [struct.pack("<Q", len(views))]
    for i, (v, name) in enumerate(zip(views, names)):
        q, t = colmap_pose(v.world_from_camera)
        parts.append(struct.pack("<I4d3dI", i + 1, *q, *t, i + 1))
        parts.append(name.encode("utf-8") + b"\0")
        parts.append(struct.pack("<Q", 0))  # no 2D points
    return b"".join(parts)


POINT_BIN_DTYPE = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track", "<u8")])


def points3d_bin(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    import struct

    rec = np.zeros(len(xyz), POINT_BIN_DTYPE)
    rec["id"] = np.arange(1, len(xyz) + 1)
    rec["xyz"] = xyz
    rec["rgb"] = rgb
    return struct.pack("<Q", len(xyz)) + rec.tobytes()


def read_cameras_bin(data: bytes, where: str) -> dict[int, tuple[str, int, int, list[float]]]:
    import struct

    names = {v: k for k, v in _MODEL_IDS.items()}
    try:
        (n,), off, cams = struct.unpack_from("<Q", data, 0), 8, {}
        for _ in range(n):
            cid, model, w, h = struct.unpack_from("<IiQQ", data, off)
            off += 24
            k = {0: 3, 1: 4}.get(model)
            if k is None:
                raise InputError(f"{where}: camera {cid} has model id {model}; only PINHOLE (1) or SIMPLE_PINHOLE (0) is supported")
            cams[cid] = (names[model], w, h, list(struct.unpack_from(f"<{k}d", data, off)))
            off += 8 * k
    except struct.error:
        raise InputError(f"{where} is truncated") from None
    if off != len(data):
        raise InputError(f"{where} has {len(data) - off} trailing bytes")
    return cams


def read_images_bin(data: bytes, where: str) -> list[tuple[int, np.ndarray, np.ndarray, int, str]]:
    import struct

    out = []
    try:
        (n,), off = struct.unpack_from("<Q", data, 0), 8
        for _ in range(n):
            iid, *vals = struct.unpack_from("<I4d3dI", data, off)
            off += 64
            end = data.index(b"\0", off)
            name = data[off:end].decode("utf-8")
            off = end + 1
            (npts,) = struct.unpack_from("<Q", data, off)
            off += 8 + 24 * npts
            out.append((iid, np.array(vals[:4]), np.array(vals[4:7]), int(vals[7]), name))
    except (struct.error, ValueError, UnicodeDecodeError):
        raise InputError(f"{where} is truncated or malformed") from None
    if off != len(data):
        raise InputError(f"{where} has {len(data) - off} trailing bytes")
    return out


def check_target(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"the output folder {out} is not empty; pass --force to replace it")


def write_colmap_dataset(
    out,
    views: Sequence[ViewData],
    *,
    points: tuple[np.ndarray, np.ndarray] | None = None,
    provenance: dict | None = None,
    force: bool = False,
) -> DatasetReport:
    """Write the refine dataset to `out` (built in a temporary folder, then moved into place)."""
    from PIL import Image

    from vd import __version__
    from vd.fsio import atomic_dir
    from vd.export.normals import normals_from_depth

    out = Path(out)
    check_target(out, force)
    if not views:
        raise InputError("there are no views to export")
    names = [f"{i:06d}.png" for i in range(len(views))]
    if points is None:
        points = points_from_views(views)
    n_files = 0
    meta_views = []
    with atomic_dir(out) as tmp:
        for sub in ("images", "masks", "priors/depth", "priors/normal", "sparse/0"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        for i, (v, name) in enumerate(zip(views, names)):
            stem = name[:-4]
            rgb = np.ascontiguousarray(v.rgb[..., :3].astype(np.uint8))
            h, w = rgb.shape[:2]
            if v.depth is None:
                raise InputError(f"view {v.name} has no depth map; the refine dataset needs a depth prior for every view")
            depth = np.asarray(v.depth, np.float32)
            if depth.shape != (h, w):
                raise InputError(f"view {v.name}: depth {depth.shape} does not match the image ({h}, {w})")
            valid = np.isfinite(depth) & (depth > 0)
            mask = valid if v.mask is None else (valid & np.asarray(v.mask, bool))
            normal, nvalid = normals_from_depth(depth, v.K, valid)
            Image.fromarray(rgb).save(tmp / "images" / name)
            Image.fromarray((mask * 255).astype(np.uint8)).save(tmp / "masks" / name)
            np.save(tmp / "priors" / "depth" / f"{stem}.npy", np.where(valid, depth, 0).astype(np.float32))
            np.save(tmp / "priors" / "normal" / f"{stem}.npy", normal)
            n_files += 4
            meta_views.append({
                "index": i, "image_id": i + 1, "camera_id": i + 1, "name": name, "source_name": v.name,
                "kind": v.kind, "width": w, "height": h, "K": np.asarray(v.K, float).tolist(),
                "world_from_camera": np.asarray(v.world_from_camera, float).tolist(),
                "image": f"images/{name}", "mask": f"masks/{name}",
                "depth": f"priors/depth/{stem}.npy", "normal": f"priors/normal/{stem}.npy",
                "mask_pixels": int(mask.sum()), "normal_pixels": int((nvalid & mask).sum()),
                "mask_rule": "source mask AND finite depth > 0" if v.mask is not None else "finite depth > 0",
                **({"extra": v.extra} if v.extra else {}),
            })
        xyz, prgb = points
        (tmp / "sparse/0/cameras.txt").write_text(cameras_txt(views))
        (tmp / "sparse/0/images.txt").write_text(images_txt(views, names))
        (tmp / "sparse/0/points3D.txt").write_text(points3d_txt(np.asarray(xyz), np.asarray(prgb)))
        (tmp / "sparse/0/cameras.bin").write_bytes(cameras_bin(views))
        (tmp / "sparse/0/images.bin").write_bytes(images_bin(views, names))
        (tmp / "sparse/0/points3D.bin").write_bytes(points3d_bin(np.asarray(xyz, np.float64), np.asarray(prgb, np.uint8)))
        meta = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "conventions": CONVENTIONS,
            "colmap": {"sparse": "sparse/0", "camera_model": "PINHOLE", "text": True, "binary": True,
                       "nerfstudio": "ns-train splatfacto colmap --data <DIR> --colmap-path sparse/0",
                       "gsplat": "python examples/simple_trainer.py default --data_dir <DIR> --data_factor 1"},
            "provenance": {"vd_version": __version__, "mode": "single-image", **(provenance or {})},
            "points3D": {"count": int(len(xyz)), "source": (provenance or {}).get("points_source", "depth")},
            "views": meta_views,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        n_files += 7
    return DatasetReport(out, len(views), int(len(xyz)), n_files)


# ------------------------------------------------------------------ reading (used by refine)
@dataclass
class DatasetView:
    name: str
    image_id: int
    rgb: np.ndarray  # uint8 [H,W,3]
    K: np.ndarray  # [3,3]
    world_from_camera: np.ndarray  # [4,4]
    depth: np.ndarray  # float32 [H,W]
    normal: np.ndarray  # float32 [H,W,3]
    mask: np.ndarray  # bool [H,W]


def read_cameras_txt(text: str, where: str) -> dict[int, tuple[str, int, int, list[float]]]:
    cams = {}
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = s.split()
        try:
            cams[int(p[0])] = (p[1], int(p[2]), int(p[3]), [float(x) for x in p[4:]])
        except (ValueError, IndexError):
            raise InputError(f"{where}, line {ln}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]'") from None
    return cams


def _is_points2d(line: str) -> bool:
    toks = line.split()
    if len(toks) % 3:
        return False
    try:
        [float(t) for t in toks]
    except ValueError:
        return False
    return True


def read_images_txt(text: str, where: str) -> list[tuple[int, np.ndarray, np.ndarray, int, str]]:
    """[(image_id, q wxyz, t, camera_id, name)] in file order; the POINTS2D line must follow each."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not s or s.startswith("#"):
            i += 1
            continue
        p = s.split()
        if len(p) < 10:
            raise InputError(f"{where}, line {i + 1}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
        try:
            out.append((int(p[0]), np.array([float(x) for x in p[1:5]]), np.array([float(x) for x in p[5:8]]),
                        int(p[8]), " ".join(p[9:])))
        except ValueError:
            raise InputError(f"{where}, line {i + 1}: not a valid image line") from None
        if i + 1 >= len(lines) or (i + 1 == len(lines) - 1 and lines[i + 1] == "") or not _is_points2d(lines[i + 1]):
            raise InputError(f"{where}, line {i + 2}: the POINTS2D line after image {p[0]} is missing (it may be empty, but it must be present)")
        i += 2
    return out


def pose_from_colmap(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    R = quat_to_rotmat(q)
    P = np.eye(4)
    P[:3, :3] = R.T
    P[:3, 3] = -R.T @ t
    return P


def load_dataset(path) -> tuple[list[DatasetView], dict]:
    """Validate (strictly) and load a refine dataset; raises InputError naming the first problem
    class when invalid (use `validate_dataset` to list all of them)."""
    from PIL import Image

    from vd.export.validate import validate_dataset

    path = Path(path)
    problems = validate_dataset(path)
    if problems:
        raise InputError(f"{path} is not a valid refine dataset: {problems[0]} ({len(problems)} problem(s); run `vd export --validate {path}`)")
    meta = json.loads((path / "meta.json").read_text())
    cams = read_cameras_txt((path / SPARSE / "cameras.txt").read_text(), "cameras.txt")
    imgs = read_images_txt((path / SPARSE / "images.txt").read_text(), "images.txt")
    views = []
    for image_id, q, t, cam_id, name in sorted(imgs, key=lambda e: e[0]):
        model, w, h, prm = cams[cam_id]
        fx, fy, cx, cy = prm if model == "PINHOLE" else (prm[0], prm[0], prm[1], prm[2])
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
        stem = Path(name).stem
        rgb = np.asarray(Image.open(path / "images" / name).convert("RGB"))
        mask = np.asarray(Image.open(path / "masks" / f"{stem}.png").convert("L")) > 127
        depth = np.load(path / "priors" / "depth" / f"{stem}.npy", allow_pickle=False).astype(np.float32)
        normal = np.load(path / "priors" / "normal" / f"{stem}.npy", allow_pickle=False).astype(np.float32)
        views.append(DatasetView(name, image_id, rgb, K, pose_from_colmap(q, t), depth, normal, mask))
    return views, meta


__all__ = [
    "CONVENTIONS", "DATASET_FORMAT", "DATASET_VERSION", "ViewData", "DatasetReport", "DatasetView",
    "write_colmap_dataset", "points_from_gaussians", "points_from_views", "check_target",
    "colmap_pose", "pose_from_colmap", "read_cameras_txt", "read_images_txt", "load_dataset",
    "cameras_txt", "images_txt", "points3d_txt", "cameras_bin", "images_bin", "points3d_bin",
    "read_cameras_bin", "read_images_bin",
]
