"""Camera trajectories from files: JSON pose lists, vd cameras.json, or a COLMAP images.txt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vd.cameras import invert_pose
from vd.colmap import read_trajectory
from vd.errors import InputError, check_input_file


def _check_pose(m, where: str) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise InputError(f"{where}: expected a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{where}: the matrix has non-finite values")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(f"{where}: the last row must be 0 0 0 1")
    R = a[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise InputError(f"{where}: the rotation part is not a proper rotation (orthonormal, det +1)")
    return a


def load_trajectory(path: str | Path) -> np.ndarray:
    """Poses [N, 4, 4] (world_from_camera, vd convention) from a trajectory file.

    Accepted:
    - JSON: a list of 4x4 world_from_camera matrices; or {"poses": [...]}; or a vd
      cameras.json ({"views": [{"world_from_camera": ...}, ...]}). Used as given: the world
      is the input camera, OpenCV axes.
    - COLMAP images.txt (any file that is not JSON): world->camera quaternions and
      translations. Poses are re-expressed relative to the first image (lowest IMAGE_ID),
      which becomes the input camera; units are kept as they are.
    """
    p = check_input_file(path, "trajectory file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"trajectory file is not text (expected JSON or COLMAP images.txt): {p}") from None
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"trajectory file {p} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(obj, dict):
            if "poses" in obj:
                obj = obj["poses"]
            elif "views" in obj:
                obj = [v.get("world_from_camera") if isinstance(v, dict) else None for v in obj["views"]]
            else:
                raise InputError(
                    f"trajectory file {p}: expected a list of 4x4 matrices, or an object with 'poses' or 'views'"
                )
        if not isinstance(obj, list) or not obj:
            raise InputError(f"trajectory file {p} holds no poses")
        return np.stack([_check_pose(m, f"{p}, pose {i}") for i, m in enumerate(obj)])
    entries = read_trajectory(text, str(p))
    if not entries:
        raise InputError(f"trajectory file {p} holds no poses (neither JSON nor COLMAP images.txt lines found)")
    poses = np.stack([e[1] for e in entries])
    ref = invert_pose(poses[0])
    return ref[None] @ poses


__all__ = ["load_trajectory"]
