"""Numpy helpers shared by the exporters: splat arrays, filters, up-axis rotation, Morton order.

vd's world frame is the input camera's OpenCV frame (x right, y down, z forward), so the
native "up" of a vd scene is -y. `--up` re-expresses the scene for tools with another
convention:

- ``-y``: unchanged (what SuperSplat / PlayCanvas expect from a PLY).
- ``+y``: 180 degrees about x: (x, y, z) -> (x, -y, -z)  (OpenGL / three.js style, y up).
- ``+z``: -90 degrees about x: (x, y, z) -> (x, z, -y)   (Blender / nerfstudio style, z up,
  the input camera looks along +y).

Positions, orientations and SH coefficients (all bands) are rotated together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vd.errors import UsageError
from vd.geometry import quat_multiply, rotmat_to_quat
from vd.splat_constants import ALPHA_MIN as MIN_ALPHA
from vd.splat_constants import C0

MIN_OPACITY_LOGIT = math.log(MIN_ALPHA / (1.0 - MIN_ALPHA))  # -5.5373, nerfstudio / gsplat threshold

UP_AXES = ("-y", "+y", "+z")

_UP_ROTATIONS = {
    "-y": np.eye(3),
    "+y": np.diag([1.0, -1.0, -1.0]),
    "+z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
}


UP_DESCRIPTIONS = {
    "-y": "OpenCV (x right, y down, z forward); world = input camera; -y is up",
    "+y": "vd world rotated 180 deg about x, (x, y, z) -> (x, -y, -z): x right, +y up, input camera looks along -z",
    "+z": "vd world rotated -90 deg about x, (x, y, z) -> (x, z, -y): x right, +z up, input camera looks along +y",
}


def up_rotation(up: str) -> np.ndarray:
    """The 3x3 rotation taking vd's world (OpenCV, -y up) to a frame whose up axis is `up`."""

    if up not in _UP_ROTATIONS:
        raise UsageError(f"--up must be one of {', '.join(UP_AXES)}, got {up!r}")
    return _UP_ROTATIONS[up].copy()


@dataclass
class SplatArrays:
    """Gaussians as float32 numpy arrays (pre-activation, INRIA convention, quats wxyz)."""

    means: np.ndarray  # [N,3]
    log_scales: np.ndarray  # [N,3]
    quats: np.ndarray  # [N,4] wxyz, any norm
    opacity_logits: np.ndarray  # [N]
    sh: np.ndarray  # [N,K,3]

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    def take(self, idx) -> SplatArrays:
        return SplatArrays(
            self.means[idx], self.log_scales[idx], self.quats[idx], self.opacity_logits[idx], self.sh[idx]
        )

    @classmethod
    def from_gaussians(cls, g) -> SplatArrays:
        if isinstance(g, SplatArrays):
            return g

        def f(t) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t), np.float32)

        sh = f(g.sh)
        if sh.ndim == 2:
            sh = sh[:, None, :]
        return cls(f(g.means), f(g.log_scales), f(g.quats), f(g.opacity_logits).reshape(-1), sh)

    def to_gaussians(self):
        from vd.gaussians import Gaussians

        return Gaussians(self.means, self.log_scales, self.quats, self.opacity_logits, self.sh)

    def with_sh_degree(self, degree: int | None) -> SplatArrays:
        if degree is None:
            return self
        if not 0 <= degree <= 3:
            raise UsageError(f"--sh-degree must be 0, 1, 2 or 3, got {degree}")
        k = (degree + 1) ** 2
        cur = self.sh.shape[1]
        if k <= cur:
            sh = self.sh[:, :k]
        else:
            sh = np.concatenate([self.sh, np.zeros((len(self), k - cur, 3), np.float32)], axis=1)
        return SplatArrays(self.means, self.log_scales, self.quats, self.opacity_logits, np.ascontiguousarray(sh))


@dataclass
class FilterReport:
    kept: int
    dropped_nonfinite: int
    dropped_transparent: int


def filter_splats(a: SplatArrays, min_alpha: float = MIN_ALPHA) -> tuple[SplatArrays, FilterReport]:
    """Drop rows with NaN/Inf anywhere (or a zero quaternion) and rows with alpha <= min_alpha."""
    n = len(a)
    finite = (
        np.isfinite(a.means).all(1)
        & np.isfinite(a.log_scales).all(1)
        & np.isfinite(a.quats).all(1)
        & (np.abs(a.quats).sum(1) > 0)
        & ~np.isnan(a.opacity_logits)
        & np.isfinite(a.sh.reshape(n, -1)).all(1)
    )
    thr = math.log(min_alpha / (1.0 - min_alpha))
    opaque = a.opacity_logits > thr
    keep = finite & opaque
    rep = FilterReport(int(keep.sum()), int((~finite).sum()), int((finite & ~opaque).sum()))
    if rep.kept == n:
        return a, rep
    return a.take(np.nonzero(keep)[0]), rep


# ---------------------------------------------------------------------- rotation
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """Real SH basis [M,(deg+1)^2] in the 3DGS (INRIA `eval_sh`) convention, for unit dirs [M,3]."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    cols = [np.full_like(x, C0)]
    if degree >= 1:
        cols += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        cols += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy), _C2[3] * x * z, _C2[4] * (xx - yy)]
    if degree >= 3:
        cols += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return np.stack(cols, axis=1)


def sh_rotation_matrix(R: np.ndarray, degree: int) -> np.ndarray:
    """[K,K] matrix T with sh' = T @ sh, so that eval(sh', R d) == eval(sh, d) for every direction d.

    Built per band by least squares on well-spread directions (exact: each band is a closed
    representation of SO(3))."""
    k = (degree + 1) ** 2
    T = np.zeros((k, k))
    T[0, 0] = 1.0
    if degree == 0:
        return T
    rng = np.random.default_rng(0)
    d = rng.normal(size=(256, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    A = sh_basis(d, degree)  # Y(d')
    B = sh_basis(d @ np.asarray(R, np.float64), degree)  # Y(R^T d') (row form: d'^T R)
    for band in range(1, degree + 1):
        s = slice(band * band, (band + 1) * (band + 1))
        T[s, s] = np.linalg.lstsq(A[:, s], B[:, s], rcond=None)[0]
    return T


def rotate_splats(a: SplatArrays, R: np.ndarray) -> SplatArrays:
    """Rotate a scene about the origin by the 3x3 rotation R (positions, orientations, SH)."""
    R = np.asarray(R, np.float64)
    if np.allclose(R, np.eye(3)):
        return a
    means = (a.means.astype(np.float64) @ R.T).astype(np.float32)
    qR = rotmat_to_quat(R)
    quats = quat_multiply(qR[None, :], a.quats.astype(np.float64)).astype(np.float32)
    sh = a.sh
    if a.sh_degree > 0:
        T = sh_rotation_matrix(R, a.sh_degree)
        sh = np.einsum("ij,njc->nic", T, a.sh.astype(np.float64)).astype(np.float32)
    return SplatArrays(means, a.log_scales.copy(), quats, a.opacity_logits.copy(), np.ascontiguousarray(sh))


def apply_up(a: SplatArrays, up: str) -> SplatArrays:
    return rotate_splats(a, up_rotation(up))


# ---------------------------------------------------------------------- ordering
def _part1by2(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64) & np.uint64(0x3FF)
    v = (v | (v << np.uint64(16))) & np.uint64(0xFF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x0300F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x030C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x09249249)
    return v


def morton_order(means: np.ndarray) -> np.ndarray:
    """Indices sorting points along a 30-bit Morton (Z-order) curve over their bounding box."""
    if len(means) == 0:
        return np.zeros(0, np.int64)
    lo = means.min(0)
    ext = means.max(0) - lo
    ext = np.where(ext > 0, ext, 1.0)
    q = np.clip(((means - lo) / ext) * 1023.0, 0, 1023).astype(np.uint32)
    code = (_part1by2(q[:, 0]) << np.uint64(2)) | (_part1by2(q[:, 1]) << np.uint64(1)) | _part1by2(q[:, 2])
    return np.argsort(code, kind="stable")


__all__ = [
    "C0",
    "MIN_ALPHA",
    "MIN_OPACITY_LOGIT",
    "UP_AXES",
    "SplatArrays",
    "FilterReport",
    "filter_splats",
    "up_rotation",
    "rotate_splats",
    "apply_up",
    "sh_basis",
    "sh_rotation_matrix",
    "morton_order",
]
