"""Camera geometry: look-at poses, scene radius, candidate trajectories, trajectory files.

Convention (one for all of vd)
------------------------------
- Camera frame: OpenCV (x right, y down, z forward). Pixel (0, 0) is the top-left corner.
- World frame: the input camera's frame; the input camera has the identity pose.
- A *pose* is the 4x4 ``world_from_camera`` matrix (camera-to-world). Renderers take its
  inverse, ``camera_from_world`` (what gsplat calls ``viewmats``).

Trajectories (docs/upstream.md#spiral-trajectory)
------------------------------------------------
VistaDream's port uses its spiral output directly as world->camera, so its camera *sinks* and
``forward_ratio`` scales the *backward* pull.  vd generates camera **centres** and builds each
pose with a look-at, so the roles are as named: ``forward_ratio`` scales motion along +z (into
the scene), ``backward_ratio`` scales the pull-back along -z, and the camera rises (-y) like
the original VistaDream.  Both endpoints of ``spiral`` and ``wobble`` are the identity pose.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vd.errors import InputError, UsageError
from vd.params import TRAJECTORIES

CONVENTION = "OpenCV camera (x right, y down, z forward); world = input camera"


# ---------------------------------------------------------------------------------------------
# basic pose helpers


def look_at(
    position: Sequence[float], target: Sequence[float], up_hint: Sequence[float] = (0.0, -1.0, 0.0)
) -> np.ndarray:
    """world_from_camera for a camera at `position` looking at `target` (docs/upstream.md#look-at-poses).

    `up_hint` is the image "up" direction in world coordinates ((0, -1, 0) for OpenCV). With
    position 0 and the target on +z the result is the identity.
    """
    p = np.asarray(position, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    d = g - p
    n = np.linalg.norm(d)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError("look_at: target coincides with the camera position")
    d = d / n
    down = -np.asarray(up_hint, dtype=np.float64)
    right = np.cross(down, d)
    rn = np.linalg.norm(right)
    if rn < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up hint")
    right = right / rn
    down2 = np.cross(d, right)
    pose = np.eye(4)
    pose[:3, 0] = right
    pose[:3, 1] = down2
    pose[:3, 2] = d
    pose[:3, 3] = p
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (batched over leading dims)."""
    pose = np.asarray(pose, dtype=np.float64)
    R = pose[..., :3, :3]
    t = pose[..., :3, 3]
    out = np.zeros_like(pose)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Camera-space points [N, 3] of the pixels in `mask` (pixel centres at integer + 0.5)."""
    depth = np.asarray(depth, dtype=np.float64)
    H, W = depth.shape
    if mask is None:
        mask = np.ones((H, W), dtype=bool)
    v, u = np.nonzero(mask)
    z = depth[v, u]
    K = np.asarray(K, dtype=np.float64)
    x = (u + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (v + 0.5 - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=-1)


def scene_radius(
    depth: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None, percentiles: Sequence[float] = (5.0, 50.0)
) -> float:
    """Scene radius for trajectories, over *valid* pixels only (upstream counted depth-0 pixels
    too, and measured the outpainted canvas rather than the input: docs/upstream.md#scene-radius).

    Back-projects the valid pixels (finite depth > 0 and `valid`), takes per axis the range
    P_hi - P_lo of the coordinates, and returns the mean of the three ranges.
    """
    lo, hi = float(percentiles[0]), float(percentiles[1])
    if not (0.0 <= lo < hi <= 100.0):
        raise UsageError(f"--radius-percentiles must satisfy 0 <= low < high <= 100, got {lo:g} {hi:g}")
    depth = np.asarray(depth)
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if ok.sum() < 3:
        raise InputError("the input depth has fewer than 3 valid pixels, so no camera trajectory can be built")
    pts = backproject(depth, K, ok)
    ranges = np.percentile(pts, hi, axis=0) - np.percentile(pts, lo, axis=0)
    r = float(np.mean(ranges))
    if not np.isfinite(r) or r <= 0:
        # degenerate (e.g. a constant plane seen head-on with a tiny image): fall back to depth
        r = float(np.percentile(depth[ok], hi) * 0.1)
    return r


# ---------------------------------------------------------------------------------------------
# trajectories


def _damping(width: int, height: int) -> tuple[float, float]:
    # PORT: landscape (W/H > 1) 1.0 / 0.3, otherwise 0.6 / 0.3
    return (1.0, 0.3) if width / max(height, 1) > 1 else (0.6, 0.3)


def _t(n: int) -> np.ndarray:
    return np.zeros(1) if n == 1 else np.arange(n) / (n - 1)


def spiral(
    n: int,
    radius: float,
    *,
    forward_ratio: float = 0.3,
    backward_ratio: float = 0.4,
    width: int = 4,
    height: int = 3,
    rot_ratio: float = 0.3,
    look_at_ratio: float = 0.5,
) -> np.ndarray:
    """`n` world_from_camera poses [n, 4, 4] of the closed spiral loop (docs/upstream.md#spiral-trajectory).

    Camera centre at t in [0, 1]: r = sin(2πt)·R·rot_ratio,
    x = -r·cos(2πt)·x_damp, y = -|r·sin(2πt)|·y_damp (the camera rises),
    z = r·forward_ratio when r > 0 (into the scene) else r·backward_ratio; each camera looks at
    (0, 0, look_at_ratio·R). Both endpoints are the identity pose.
    """
    xd, yd = _damping(width, height)
    poses = []
    for t in _t(n):
        r = math.sin(2 * math.pi * t) * radius * rot_ratio
        th = 2 * math.pi * t
        x = -r * math.cos(th) * xd
        y = -abs(r * math.sin(th)) * yd
        z = r * (forward_ratio if r > 0 else backward_ratio)
        poses.append(look_at((x, y, z), (0.0, 0.0, look_at_ratio * radius)))
    return _snap_identity(np.stack(poses))


def wobble(
    n: int,
    radius: float,
    *,
    forward_ratio: float = 0.3,
    backward_ratio: float = 0.4,
    width: int = 4,
    height: int = 3,
    rot_ratio: float = 0.3,
    look_at_ratio: float = 0.5,
) -> np.ndarray:
    """The upstream "wobble" loop in vd's convention (docs/upstream.md#other-trajectories).

    Centre: r = sin(2πt)·R·rot_ratio, x = r·cos(2πt)·x_damp, y = -|r·sin(2πt)|·0.3,
    z = -r scaled by forward_ratio when it moves into the scene and backward_ratio otherwise.
    It is the spiral traversed the other way round: it backs off first, then moves in.
    """
    xd, _ = _damping(width, height)
    poses = []
    for t in _t(n):
        r = math.sin(2 * math.pi * t) * radius * rot_ratio
        th = 2 * math.pi * t
        x = r * math.cos(th) * xd
        y = -abs(r * math.sin(th)) * 0.3
        z = -r
        z = z * (forward_ratio if z > 0 else backward_ratio)
        poses.append(look_at((x, y, z), (0.0, 0.0, look_at_ratio * radius)))
    return _snap_identity(np.stack(poses))


def rot(n: int, radius: float = 1.0, **_: object) -> np.ndarray:
    """A 360° pan in place: centre 0, looking at (sin θ, 0, cos θ), θ = 2π·i/n
    (docs/upstream.md#other-trajectories)."""
    poses = [
        look_at((0.0, 0.0, 0.0), (math.sin(th), 0.0, math.cos(th))) for th in 2 * math.pi * np.arange(n) / max(n, 1)
    ]
    return _snap_identity(np.stack(poses))


def _snap_identity(poses: np.ndarray) -> np.ndarray:
    # remove float noise so the endpoints are bit-exact identities (stable cache keys)
    poses = np.where(np.abs(poses) < 1e-12, 0.0, poses)
    return poses


def trajectory(kind: str, n: int, radius: float, **kw) -> np.ndarray:
    """Dispatch by name: spiral | wobble | rot."""
    if n < 1:
        raise UsageError(f"the number of trajectory poses must be >= 1, got {n}")
    try:
        fn = {"spiral": spiral, "wobble": wobble, "rot": rot}[kind]
    except KeyError:
        raise UsageError(f"unknown trajectory {kind!r}; choose one of: {', '.join(TRAJECTORIES)}") from None
    return fn(n, radius, **kw)


def candidate_intrinsics(K: np.ndarray, width: int, height: int, margin: int) -> tuple[np.ndarray, int, int]:
    """(K, W, H) of the enlarged candidate frame: `margin` pixels added to each dimension,
    the principal point moved by margin/2 so the input frame stays centred in it."""
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0, 2] += margin / 2.0
    K2[1, 2] += margin / 2.0
    return K2, int(width + margin), int(height + margin)
