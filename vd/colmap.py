"""The COLMAP sparse model, text and binary: one reader and one writer for vd.

- cameras: one PINHOLE camera per image (``CAMERA_ID PINHOLE W H fx fy cx cy``);
- images: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then a POINTS2D line (vd writes it
  empty; readers require it to be present): world->camera (camera_from_world), R as a Hamilton
  wxyz quaternion, OpenCV camera axes, camera centre = -R^T t;
- points3D: ``POINT3D_ID X Y Z R G B ERROR`` with empty tracks.

The binary files carry the same model in COLMAP's little-endian layout (COLMAP, and gsplat's
pycolmap reader, prefer them; the latter's text reader stops at the first empty line).
Writers take cameras as (K, width, height) and poses as world_from_camera 4x4 matrices.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from vd.errors import InputError
from vd.geometry import quat_to_rotmat, rotmat_to_quat


def _fmt(x: float) -> str:
    return f"{float(x):.17g}"


def colmap_pose(world_from_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q wxyz, t) of the world->camera transform of a camera-to-world 4x4 pose."""
    P = np.asarray(world_from_camera, np.float64)
    R = P[:3, :3].T
    t = -R @ P[:3, 3]
    return rotmat_to_quat(R), t


def cameras_txt(cameras: Sequence[tuple]) -> str:
    """cameras.txt for (K, width, height) per image."""
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    for i, (K, w, h) in enumerate(cameras):
        lines.append(f"{i + 1} PINHOLE {w} {h} {_fmt(K[0, 0])} {_fmt(K[1, 1])} {_fmt(K[0, 2])} {_fmt(K[1, 2])}")
    return "\n".join(lines) + "\n"


def images_txt(poses: Sequence[np.ndarray], names: Sequence[str]) -> str:
    """images.txt for world_from_camera `poses` (image i uses camera i; IDs from 1)."""
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(poses)}, mean observations per image: 0",
    ]
    for i, (pose, name) in enumerate(zip(poses, names, strict=True)):
        q, t = colmap_pose(pose)
        lines.append(f"{i + 1} {' '.join(_fmt(x) for x in q)} {' '.join(_fmt(x) for x in t)} {i + 1} {name}")
        lines.append("")  # POINTS2D: present, empty
    return "\n".join(lines) + "\n"


def points3d_txt(xyz: np.ndarray, rgb: np.ndarray) -> str:
    n = len(xyz)
    head = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {n}, mean track length: 0",
    ]
    if n == 0:
        return "\n".join(head) + "\n"
    ids = np.arange(1, n + 1)
    body = "\n".join(
        f"{i} {x:.9g} {y:.9g} {z:.9g} {r} {g} {b} 0"
        for i, (x, y, z), (r, g, b) in zip(
            ids.tolist(), xyz.astype(np.float64).tolist(), rgb.astype(int).tolist(), strict=True
        )
    )
    return "\n".join(head) + "\n" + body + "\n"


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
            raise InputError(
                f"{where}, line {i + 1}: not a COLMAP images.txt line "
                "(expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME')"
            )
        try:
            out.append(
                (
                    int(p[0]),
                    np.array([float(x) for x in p[1:5]]),
                    np.array([float(x) for x in p[5:8]]),
                    int(p[8]),
                    " ".join(p[9:]),
                )
            )
        except ValueError:
            raise InputError(f"{where}, line {i + 1}: not a valid image line") from None
        if i + 1 >= len(lines) or (i + 1 == len(lines) - 1 and lines[i + 1] == "") or not _is_points2d(lines[i + 1]):
            raise InputError(
                f"{where}, line {i + 2}: the POINTS2D line after image {p[0]} is missing "
                "(it may be empty, but it must be present)"
            )
        i += 2
    return out


def pose_from_colmap(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """world_from_camera of an image's (q wxyz, t) world->camera transform."""
    R = quat_to_rotmat(np.asarray(q, dtype=np.float64))
    P = np.eye(4)
    P[:3, :3] = R.T
    P[:3, 3] = -R.T @ t
    return P


# COLMAP binary model (what COLMAP, and gsplat's pycolmap SceneManager, read first when present;
# the latter's text reader stops at the first empty line, i.e. at an empty POINTS2D line).
_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1}


def cameras_bin(cameras: Sequence[tuple]) -> bytes:
    """cameras.bin for (K, width, height) per image."""
    parts = [struct.pack("<Q", len(cameras))]
    for i, (K, w, h) in enumerate(cameras):
        parts.append(struct.pack("<IiQQ4d", i + 1, _MODEL_IDS["PINHOLE"], w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    return b"".join(parts)


def images_bin(poses: Sequence[np.ndarray], names: Sequence[str]) -> bytes:
    """images.bin for world_from_camera `poses` (image i uses camera i; IDs from 1)."""
    parts = [struct.pack("<Q", len(poses))]
    for i, (pose, name) in enumerate(zip(poses, names, strict=True)):
        q, t = colmap_pose(pose)
        parts.append(struct.pack("<I4d3dI", i + 1, *q, *t, i + 1))
        parts.append(name.encode("utf-8") + b"\0")
        parts.append(struct.pack("<Q", 0))  # no 2D points
    return b"".join(parts)


POINT_BIN_DTYPE = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track", "<u8")])


def points3d_bin(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    rec = np.zeros(len(xyz), POINT_BIN_DTYPE)
    rec["id"] = np.arange(1, len(xyz) + 1)
    rec["xyz"] = xyz
    rec["rgb"] = rgb
    return struct.pack("<Q", len(xyz)) + rec.tobytes()


def read_cameras_bin(data: bytes, where: str) -> dict[int, tuple[str, int, int, list[float]]]:
    names = {v: k for k, v in _MODEL_IDS.items()}
    try:
        (n,), off, cams = struct.unpack_from("<Q", data, 0), 8, {}
        for _ in range(n):
            cid, model, w, h = struct.unpack_from("<IiQQ", data, off)
            off += 24
            k = {0: 3, 1: 4}.get(model)
            if k is None:
                raise InputError(
                    f"{where}: camera {cid} has model id {model}; only PINHOLE (1) or SIMPLE_PINHOLE (0) is supported"
                )
            cams[cid] = (names[model], w, h, list(struct.unpack_from(f"<{k}d", data, off)))
            off += 8 * k
    except struct.error:
        raise InputError(f"{where} is truncated") from None
    if off != len(data):
        raise InputError(f"{where} has {len(data) - off} trailing bytes")
    return cams


def read_images_bin(data: bytes, where: str) -> list[tuple[int, np.ndarray, np.ndarray, int, str]]:
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


def read_trajectory(text: str, where: str = "images.txt") -> list[tuple[str, np.ndarray]]:
    """(name, world_from_camera) for each image of an images.txt, sorted by IMAGE_ID."""
    return [
        (name, pose_from_colmap(q, t)) for _, q, t, _, name in sorted(read_images_txt(text, where), key=lambda e: e[0])
    ]


__all__ = [
    "colmap_pose",
    "pose_from_colmap",
    "cameras_txt",
    "images_txt",
    "points3d_txt",
    "cameras_bin",
    "images_bin",
    "points3d_bin",
    "read_cameras_txt",
    "read_images_txt",
    "read_cameras_bin",
    "read_images_bin",
    "read_trajectory",
    "POINT_BIN_DTYPE",
]
