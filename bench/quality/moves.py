"""The camera moves of the evaluation, relative to the input camera and sized by the scene.

Each move is the new camera's pose in the input camera's frame (world_from_camera with the world
= the input camera, as vd's views), so a vd scene can be scored at it directly. Translations are
fractions of the input view's median depth (all within 15 %), rotations a few degrees.
"""

from __future__ import annotations

import numpy as np

# name: (translation as fractions of the median depth (x right, y down, z forward), yaw°, pitch°)
MOVES = {
    "forward": ((0, 0, 0.15), 0, 0),
    "back": ((0, 0, -0.15), 0, 0),
    "left": ((-0.1, 0, 0), 0, 0),
    "right": ((0.1, 0, 0), 0, 0),
    "up": ((0, -0.1, 0), 0, 0),
    "down": ((0, 0.05, 0), 0, 0),
    "yaw-left": ((0, 0, 0), -8, 0),
    "yaw-right": ((0, 0, 0), 8, 0),
    "pitch-up": ((0, 0, 0), 0, 6),
    "back-right-yaw": ((0.08, 0, -0.1), -5, 0),
    "forward-up-pitch": ((0, -0.08, 0.1), 0, -5),
    "back-left-up": ((-0.07, -0.05, -0.1), 0, 0),
}


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera axes (columns) after turning right by yaw and up by pitch (OpenCV: y down)."""
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Ry @ Rx


def move_pose(name: str, median_depth: float) -> np.ndarray:
    t, yaw, pitch = MOVES[name]
    P = np.eye(4)
    P[:3, :3] = rotation(yaw, pitch)
    P[:3, 3] = np.asarray(t, float) * median_depth
    return P


def moves(median_depth: float, names=None) -> list[tuple[str, np.ndarray]]:
    return [(n, move_pose(n, median_depth)) for n in (names or MOVES)]
