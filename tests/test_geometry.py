"""vd.geometry: one set of quaternion <-> rotation conversions, numpy and torch, same conventions."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from vd.geometry import quat_multiply, quat_to_rotmat, quat_to_rotmat_torch, rotmat_to_quat, rotmat_to_quat_torch

# 90 degrees about z, Hamilton wxyz: maps x to y
QZ90 = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def random_unit_quats(n: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def half_turns() -> np.ndarray:
    """Rotations by 180 degrees (w = 0) and near it: where a naive trace formula breaks down."""
    axes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, -1], [1, 2, 3]], float)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    out = []
    for angle in (math.pi, math.pi - 1e-4):
        for a in axes:
            out.append(np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * a]))
    return np.array(out)


def test_known_rotation_numpy_and_torch():
    assert np.allclose(quat_to_rotmat(QZ90), RZ90, atol=1e-12)
    assert np.allclose(quat_to_rotmat(QZ90) @ [1.0, 0, 0], [0.0, 1, 0], atol=1e-12)
    assert np.allclose(rotmat_to_quat(RZ90), QZ90, atol=1e-12)
    Rt = quat_to_rotmat_torch(torch.tensor(QZ90, dtype=torch.float32))
    assert torch.allclose(Rt, torch.tensor(RZ90, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(rotmat_to_quat_torch(RZ90), torch.tensor(QZ90, dtype=torch.float32), atol=1e-6)


def test_numpy_round_trips_in_float64():
    q = np.concatenate([random_unit_quats(500, 0), half_turns()])
    q = np.where(q[:, :1] < 0, -q, q)
    R = quat_to_rotmat(q)
    assert R.dtype == np.float64 and R.shape == (len(q), 3, 3)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1.0, atol=1e-12)
    back = rotmat_to_quat(R)
    same = np.isclose(back, q, atol=1e-9).all(1)
    flipped = np.isclose(back, -q, atol=1e-9).all(1) & (np.abs(q[:, 0]) < 1e-9)   # w == 0: sign is free
    assert (same | flipped).all()
    assert np.allclose(quat_to_rotmat(back), R, atol=1e-12)


def test_torch_round_trip():
    q = torch.tensor(np.concatenate([random_unit_quats(500, 1), half_turns()[:6]]), dtype=torch.float32)
    back = rotmat_to_quat_torch(quat_to_rotmat_torch(q))
    assert torch.allclose(quat_to_rotmat_torch(back), quat_to_rotmat_torch(q), atol=1e-5)
    assert torch.allclose(back[:500], q[:500], atol=1e-5)


def test_numpy_and_torch_agree():
    q = np.concatenate([random_unit_quats(300, 2), half_turns()])
    qs = 2.5 * q                                                  # any norm is accepted
    Rn = quat_to_rotmat(qs)
    Rt = quat_to_rotmat_torch(torch.tensor(qs, dtype=torch.float64))
    assert Rt.dtype == torch.float64
    assert np.allclose(Rn, Rt.numpy(), atol=1e-12)
    qn = rotmat_to_quat(Rn)
    qt = rotmat_to_quat_torch(Rn).double().numpy()
    assert np.allclose(qn[:300], qt[:300], atol=1e-6)
    assert np.allclose(quat_to_rotmat(qn), quat_to_rotmat(qt), atol=1e-6)


def test_sign_is_canonical_and_norm_is_one():
    q = random_unit_quats(200, 3)
    for back in (rotmat_to_quat(quat_to_rotmat(-q)), rotmat_to_quat_torch(quat_to_rotmat(-q)).numpy()):
        assert (back[:, 0] >= 0).all()
        assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)


def test_product_composes_rotations():
    a, b = random_unit_quats(50, 4), random_unit_quats(50, 5)
    assert np.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)
    assert np.allclose(quat_multiply(QZ90, [1.0, 0, 0, 0]), QZ90)


def test_zero_or_non_finite_quaternion_is_an_error_in_numpy():
    for bad in ([0.0, 0, 0, 0], [math.nan, 0, 0, 1], [[1.0, 0, 0, 0], [0.0, 0, 0, 0]]):
        with pytest.raises(ValueError):
            quat_to_rotmat(bad)
    assert torch.equal(quat_to_rotmat_torch(torch.zeros(4)), torch.eye(3))  # training never stops on one


def test_importing_geometry_does_not_import_torch():
    code = "import sys, vd.geometry, vd.export.transform; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
