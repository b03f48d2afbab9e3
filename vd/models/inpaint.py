"""Inpainting backends behind one interface.

    get_inpaint_backend(name="auto", *, device=None, offload="auto", steps=25, guidance=30.0,
                        auto_fetch=None, vram_budget=None) -> InpaintBackend
    backend.name, backend.identity       # identity goes into cache keys
    backend.inpaint(rgb uint8 [H,W,3], mask bool [H,W] (True = generate), seed: int) -> uint8 [H,W,3]
        # pixels where mask is False are returned exactly (bit-identical)
    backend.release()                    # free the model (gc + torch.cuda.empty_cache())

Backends: `flux-fill` (FLUX.1-Fill-dev via diffusers, bf16, CUDA; weights from `vd fetch flux-fill`
and `vd fetch flux-prompt`), `telea` (OpenCV, CPU, no weights). `auto` picks flux-fill when CUDA is
available and its weights are on disk, else telea, and says which on stderr. A backend named
explicitly is never substituted: missing weights raise MissingWeightsError with the fetch command.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from vd.errors import UsageError
from vd.models.backend import ModelBackend
from vd.models.offload import OFFLOAD_CHOICES, OFFLOAD_MODES

INPAINT_BACKENDS = ("auto", "flux-fill", "telea")


class InpaintBackend(ModelBackend):
    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


def check_inputs(rgb, mask) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb)
    mask = np.asarray(mask)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"inpaint expects uint8 RGB [H,W,3], got {rgb.dtype} {tuple(rgb.shape)}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"inpaint mask shape {tuple(mask.shape)} does not match the image {tuple(rgb.shape[:2])}")
    return rgb, mask.astype(bool)


def keep_unmasked(rgb: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paste the generated pixels into the hole only; everything else is the input, exactly."""
    out = rgb.copy()
    out[mask] = generated[mask]
    return out


def flux_weights_available(auto_fetch: Optional[bool] = False) -> bool:
    try:
        from vd.fetch.registry import require
    except ImportError:
        return False
    from vd.errors import MissingWeightsError

    try:
        require("flux-fill", auto_fetch=False)
        require("flux-prompt", auto_fetch=False)
        return True
    except MissingWeightsError:
        return False


def get_inpaint_backend(
    name: str = "auto",
    *,
    device: Optional[str] = None,
    offload: str = "auto",
    steps: int = 25,
    guidance: float = 30.0,
    auto_fetch: Optional[bool] = None,
    quiet_choice: bool = False,
    vram_budget: Optional[int] = None,
) -> InpaintBackend:
    """Build (but do not load) an inpainting backend; weights load on the first `inpaint` call."""
    from vd import console

    name = (name or "auto").lower()
    if name not in INPAINT_BACKENDS:
        raise UsageError(f"unknown inpaint backend {name!r}; choose one of: {', '.join(INPAINT_BACKENDS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    if steps < 1:
        raise UsageError(f"the Flux Fill step count (--inpaint-steps) must be at least 1, got {steps}")
    if name == "auto":
        from vd.paths import default_device

        dev = device or default_device()
        has_cuda = str(dev).startswith("cuda")
        if has_cuda:
            import torch

            has_cuda = torch.cuda.is_available()
        have = flux_weights_available() if has_cuda else False
        if has_cuda and not have and auto_fetch:
            have = True  # require() below downloads them
        name = "flux-fill" if (has_cuda and have) else "telea"
        if not quiet_choice:
            why = (
                "CUDA and FLUX.1-Fill-dev weights found"
                if name == "flux-fill"
                else ("no FLUX.1-Fill-dev weights (vd fetch flux-fill flux-prompt)" if has_cuda else "no CUDA device")
            )
            console.info(f"inpaint backend: {name} ({why})")
    if name == "telea":
        from vd.models.telea import TeleaInpaint

        return TeleaInpaint()
    from vd.models.flux_fill import FluxFillInpaint

    return FluxFillInpaint(device=device, offload=offload, steps=steps, guidance=guidance, auto_fetch=auto_fetch,
                           vram_budget=vram_budget)


__all__ = [
    "InpaintBackend",
    "get_inpaint_backend",
    "check_inputs",
    "keep_unmasked",
    "INPAINT_BACKENDS",
    "OFFLOAD_MODES",
]
