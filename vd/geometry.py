"""Quaternions and rotation matrices, once, for numpy (float64) and torch.

Conventions, the same for every function here:

- A quaternion is **Hamilton, scalar first**: ``(w, x, y, z)``, as in COLMAP's images.txt, the
  INRIA 3DGS PLY (``rot_0..rot_3``) and gsplat. It rotates a vector ``v`` as ``q v q*``; the
  matrix of ``q`` acts on column vectors (``R @ v``), and ``quat_multiply(a, b)`` is the rotation
  ``b`` followed by ``a`` (matrix ``R(a) @ R(b)``).
- **Normalisation**: ``quat_to_rotmat*`` accept any non-zero norm and divide it out first (the
  Gaussians store unnormalised quaternions). ``rotmat_to_quat*`` return unit quaternions.
- **Sign**: ``q`` and ``-q`` are the same rotation; ``rotmat_to_quat*`` return the one with
  ``w >= 0``. When ``w`` is exactly 0 (a half turn) the sign of the vector part is whichever the
  numerically safest branch gives.
- ``rotmat_to_quat*`` use Shepperd's method: of the four ways to read ``q`` off ``R``, the one
  whose divisor is largest, so it stays accurate near half turns. The input should be a proper
  rotation (orthonormal, det +1); nothing re-orthonormalises it.

Every function takes batches: ``[..., 4]`` quaternions, ``[..., 3, 3]`` matrices. This module
imports torch only inside the torch functions, so numpy-only callers (vd/export) stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


def _matrix_entries(w, x, y, z) -> list:
    """The nine entries, row-major, of the rotation matrix of the unit quaternion (w, x, y, z)."""
    return [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]


def _shepperd_candidates(m: list, s) -> list[list]:
    """The four readings of (w, x, y, z) off a rotation matrix (its nine entries `m`, row by row),
    each divided by its own `s` (4 x the component it is built around); the caller picks the one
    with the largest `s`."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    return [
        [s / 4, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s],
        [(m21 - m12) / s, s / 4, (m01 + m10) / s, (m02 + m20) / s],
        [(m02 - m20) / s, (m01 + m10) / s, s / 4, (m12 + m21) / s],
        [(m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, s / 4],
    ]


def _squared_components(m00, m11, m22) -> list:
    """4w², 4x², 4y², 4z² of the quaternion of a rotation matrix, read off its diagonal."""
    return [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22]


# --------------------------------------------------------------------------- numpy (float64)
def quat_to_rotmat(q) -> np.ndarray:
    """[..., 4] wxyz quaternions (any non-zero norm) -> [..., 3, 3] float64 rotation matrices.

    A zero or non-finite quaternion is a ValueError (it names no rotation)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(n)) or np.any(n < 1e-12):
        raise ValueError("zero or non-finite quaternion")
    w, x, y, z = np.moveaxis(q / n, -1, 0)
    return np.stack(_matrix_entries(w, x, y, z), axis=-1).reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R) -> np.ndarray:
    """[..., 3, 3] rotation matrices -> [..., 4] float64 unit wxyz quaternions with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m = [R[..., i, j] for i in range(3) for j in range(3)]
    sq = np.stack(_squared_components(m[0], m[4], m[8]), axis=-1)
    best = np.argmax(sq, axis=-1)
    s = np.maximum(np.sqrt(np.maximum(np.take_along_axis(sq, best[..., None], -1)[..., 0], 0.0)) * 2, 1e-12)
    cands = np.stack([np.stack(c, axis=-1) for c in _shepperd_candidates(m, s)], axis=-2)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_multiply(q1, q2) -> np.ndarray:
    """Hamilton product q1 * q2 of [..., 4] wxyz quaternions (broadcasting): q2's rotation, then q1's."""
    w1, x1, y1, z1 = np.moveaxis(np.asarray(q1, dtype=np.float64), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(np.asarray(q2, dtype=np.float64), -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


# --------------------------------------------------------------------------- torch
def quat_to_rotmat_torch(q: Tensor) -> Tensor:
    """[..., 4] wxyz quaternions (any norm) -> [..., 3, 3] rotation matrices, differentiable, in
    q's dtype and device. A zero quaternion gives the identity, not an error (training must not
    stop on one degenerate Gaussian)."""
    import torch

    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(_matrix_entries(w, x, y, z), dim=-1).reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat_torch(R) -> Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] float32 unit wxyz quaternions with w >= 0."""
    import torch

    R = torch.as_tensor(R, dtype=torch.float32)
    m = [R[..., i, j] for i in range(3) for j in range(3)]
    sq = torch.stack(_squared_components(m[0], m[4], m[8]), dim=-1).clamp_min(0)
    best = sq.argmax(dim=-1)
    s = (torch.sqrt(sq.gather(-1, best[..., None]).squeeze(-1)) * 2).clamp_min(1e-12)
    cands = torch.stack([torch.stack(c, -1) for c in _shepperd_candidates(m, s)], dim=-2)
    q = cands.gather(-2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = torch.where(q[..., :1] < 0, -q, q)
    return torch.nn.functional.normalize(q, dim=-1)


__all__ = ["quat_to_rotmat", "rotmat_to_quat", "quat_multiply", "quat_to_rotmat_torch", "rotmat_to_quat_torch"]
