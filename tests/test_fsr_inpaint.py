"""The `fsr` inpaint backend (OpenCV contrib's xphoto): a clear usage error without the contrib
wheel, and where the contrib wheel is installed, the interface's mask semantics and a real fill."""

from __future__ import annotations

import numpy as np
import pytest

from vd.errors import UsageError
from vd.models.choose import get_inpaint_backend
from vd.stages.denoisers import choose_denoiser


def _has_xphoto() -> bool:
    import cv2

    return hasattr(getattr(cv2, "xphoto", None), "INPAINT_FSR_FAST")


def _textured(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    v = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)
    return np.stack([v, 255 - v, np.full_like(v, 90)], -1).astype(np.uint8)


@pytest.mark.skipif(_has_xphoto(), reason="only without the contrib wheel (opencv-python-headless, vd's dependency)")
def test_fsr_without_contrib_is_a_usage_error_naming_the_wheel():
    with pytest.raises(UsageError, match="opencv-contrib-python-headless"):
        get_inpaint_backend("fsr")


@pytest.mark.skipif(not _has_xphoto(), reason="needs opencv-contrib-python-headless in place of opencv-python-headless")
def test_fsr_fills_a_hole_and_keeps_the_rest():
    rgb = _textured()
    mask = np.zeros(rgb.shape[:2], bool)
    mask[18:30, 24:40] = True
    broken = rgb.copy()
    broken[mask] = 0
    b = get_inpaint_backend("fsr")
    assert b.name == "fsr" and b.identity.startswith("fsr-fast:")
    out = b.inpaint(broken, mask, seed=0)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out[~mask], broken[~mask])
    assert np.abs(out[mask].astype(int) - rgb[mask].astype(int)).mean() < 25  # black would be ~100
    assert np.array_equal(b.inpaint(rgb, np.zeros_like(mask), 0), rgb)
    assert (b.inpaint(rgb, np.ones_like(mask), 0) == 127).all()


def test_fsr_is_a_known_name_and_vd_fine_treats_it_as_classical():
    """`--inpaint-backend fsr` is accepted by name; `vd fine` has no diffusion model with it, so it needs
    --allow-classical exactly as telea does (not the flux-fill path)."""
    with pytest.raises(UsageError, match="allow-classical"):
        choose_denoiser("fsr", device="cpu", offload="auto", allow_classical=False)
    dev, _, name = choose_denoiser("fsr", device="cpu", offload="auto", allow_classical=True)
    assert name == "telea" and dev == "cpu"
