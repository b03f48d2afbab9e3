"""Inpainting interface: telea, backend selection, mask semantics."""

from __future__ import annotations

import numpy as np
import pytest

from vd.errors import MissingWeightsError, UsageError
from vd.models.choose import get_inpaint_backend
from vd.models.inpaint import keep_unmasked


def _scene(h=64, w=96):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], -1).astype(np.uint8)
    return rgb


def test_telea_fills_hole_and_keeps_the_rest():
    rgb = _scene()
    mask = np.zeros(rgb.shape[:2], bool)
    mask[20:40, 30:60] = True
    broken = rgb.copy()
    broken[mask] = 0  # the hole's content must not matter
    b = get_inpaint_backend("telea")
    assert b.name == "telea" and b.identity.startswith("telea:")
    out = b.inpaint(broken, mask, seed=0)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out[~mask], broken[~mask])  # unmasked pixels returned exactly
    # a smooth gradient is reconstructed closely
    assert np.abs(out[mask].astype(int) - rgb[mask].astype(int)).mean() < 12
    b.release()


def test_telea_edge_cases():
    rgb = _scene(32, 32)
    b = get_inpaint_backend("telea")
    none = np.zeros((32, 32), bool)
    assert np.array_equal(b.inpaint(rgb, none, 0), rgb)
    full = np.ones((32, 32), bool)
    out = b.inpaint(rgb, full, 0)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    with pytest.raises(ValueError):
        b.inpaint(rgb.astype(np.float32), none, 0)
    with pytest.raises(ValueError):
        b.inpaint(rgb, np.zeros((16, 16), bool), 0)
    # non-bool masks: anything non-zero means "generate"
    m = np.zeros((32, 32), np.uint8)
    m[5:10, 5:10] = 255
    out = b.inpaint(rgb, m, 0)
    assert np.array_equal(out[m == 0], rgb[m == 0])


def test_keep_unmasked():
    a = np.zeros((4, 4, 3), np.uint8)
    g = np.full((4, 4, 3), 200, np.uint8)
    m = np.zeros((4, 4), bool)
    m[1, 2] = True
    out = keep_unmasked(a, g, m)
    assert out[1, 2, 0] == 200 and out.sum() == 600


def test_auto_is_telea_without_cuda(capsys, monkeypatch):
    monkeypatch.setenv("VD_DEVICE", "cpu")
    b = get_inpaint_backend("auto")
    assert b.name == "telea"
    assert "inpaint backend: telea" in capsys.readouterr().err


def test_bad_names_and_options():
    with pytest.raises(UsageError):
        get_inpaint_backend("sd15")
    with pytest.raises(UsageError):
        get_inpaint_backend("telea", offload="disk")
    with pytest.raises(UsageError):
        get_inpaint_backend("telea", steps=0)


def test_flux_named_explicitly_without_weights_fails_with_fetch_command(monkeypatch):
    monkeypatch.setenv("VD_DEVICE", "cpu")
    b = get_inpaint_backend("flux-fill")  # never substituted by telea
    assert b.name == "flux-fill"
    with pytest.raises(MissingWeightsError) as ei:
        b.inpaint(_scene(32, 32), np.ones((32, 32), bool), 0)
    assert "vd fetch" in str(ei.value) and "flux" in str(ei.value)
    assert ei.value.exit_code == 3
