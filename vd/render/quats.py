"""Rotations as both renderers must read them: unit wxyz quaternions, a degenerate one as the identity.

gsplat's kernels divide a quaternion by its norm (a zero one gives NaN everywhere it lands) while
torch's `normalize` clamps the norm (a zero one gives the identity). Both backends get their
quaternions from `unit_quats`, so a Gaussian whose quaternion collapsed (|q| < `QUAT_EPS`, e.g.
after an optimiser step) renders the same, unrotated, in either.
"""

from __future__ import annotations

QUAT_EPS = 1e-8


def unit_quats(q):
    """[..., 4] wxyz -> unit quaternions; those with norm below QUAT_EPS become (1, 0, 0, 0). Differentiable."""
    import torch

    norm = q.norm(dim=-1, keepdim=True)
    identity = torch.zeros_like(q)
    identity[..., 0] = 1
    return torch.where(norm < QUAT_EPS, identity, q / norm.clamp_min(QUAT_EPS))


__all__ = ["unit_quats", "QUAT_EPS"]
