"""The Gaussians container."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vd.gaussians import C0, Gaussians, safe_logit


def make(n=5, deg=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen), torch.randn(n, 4, generator=gen),
                     torch.randn(n, generator=gen), torch.randn(n, (deg + 1) ** 2, 3, generator=gen))


def test_shapes_degree_len_and_validation():
    g = make(7, deg=2)
    assert len(g) == 7 and g.sh_degree == 2 and g.sh.shape == (7, 9, 3)
    with pytest.raises(ValueError):
        Gaussians(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3, 1, 3))
    with pytest.raises(ValueError):
        Gaussians(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 5, 3))
    # numpy and float64 inputs become float32 tensors; [N,3] colours become DC-only SH
    g = Gaussians(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), np.zeros((2, 3)))
    assert g.means.dtype == torch.float32 and g.sh.shape == (2, 1, 3)


def test_cat_select_clone_detach_to():
    a, b = make(3, deg=0), make(4, deg=1, seed=1)
    c = Gaussians.cat([a, b])
    assert len(c) == 7 and c.sh_degree == 1
    assert torch.equal(c.sh[:3, 0], a.sh[:, 0]) and torch.equal(c.sh[:3, 1:], torch.zeros(3, 3, 3))
    assert torch.equal(c.select(torch.tensor([3, 4, 5, 6])).means, b.means)
    mask = torch.zeros(7, dtype=torch.bool)
    mask[1] = True
    assert torch.equal(c.select(mask).quats, a.quats[1:2])
    assert torch.equal(c.select(np.array([0, 2])).means, a.means[[0, 2]])
    assert len(c[2:5]) == 3
    assert len(Gaussians.cat([])) == 0
    d = c.clone()
    d.means += 1
    assert not torch.equal(d.means, c.means)
    assert c.to("cpu").device.type == "cpu"
    c.requires_grad_(True)
    assert not c.detach().means.requires_grad
    assert c.with_sh_degree(0).sh.shape == (7, 1, 3)


def test_activations_and_helpers():
    g = Gaussians.from_rgb(torch.zeros(3, 3), torch.tensor([[0.0, 0, 0], [1.0, 1, 1], [0.25, 0.5, 0.75]]), 0.1, opacity=1.0)
    assert torch.isfinite(g.opacity_logits).all() and g.opacities().min() > 0.999
    assert torch.allclose(g.scales(), torch.full((3, 3), 0.1))
    assert torch.allclose(g.colors()[2], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(g.sh[1, 0], torch.full((3,), 0.5 / C0))
    assert torch.equal(g.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(3, 4))
    assert math.isfinite(float(safe_logit(0.0))) and math.isfinite(float(safe_logit(1.0)))
    assert torch.allclose(g.normalized_quats().norm(dim=-1), torch.ones(3))


def test_tensors_round_trip_through_safetensors_bytes():
    from safetensors.numpy import load, save

    g = make(6, deg=1)
    blob = save({k: v.numpy() for k, v in g.tensors().items()})
    g2 = Gaussians.from_tensors(load(blob))
    for k, v in g.tensors().items():
        assert torch.equal(v, getattr(g2, k))
    with pytest.raises(ValueError, match="missing"):
        Gaussians.from_tensors({"means": np.zeros((1, 3))})
