"""Inpainting backends behind one interface.

    vd.models.choose.get_inpaint_backend(name="auto", *, device=None, offload="auto", steps=25, guidance=30.0,
                                         auto_fetch=None, vram_budget=None) -> InpaintBackend
    backend.name, backend.identity       # identity goes into cache keys
    backend.inpaint(rgb uint8 [H,W,3], mask bool [H,W] (True = generate), seed: int) -> uint8 [H,W,3]
        # pixels where mask is False are returned exactly (bit-identical)
    backend.release()                    # free the model (gc + torch.cuda.empty_cache())

Backends: `flux-fill` (FLUX.1-Fill-dev via diffusers, bf16, CUDA; weights from `vd fetch flux-fill`
and `vd fetch flux-prompt`), `flux2-klein` (FLUX.2 [klein] 4B, Apache-2.0, 4 steps; `vd fetch flux2-klein
flux2-klein-text`, the text encoder only until the prompt embedding is cached), `telea` (OpenCV, CPU, no
weights), `fsr` (OpenCV contrib's
frequency-selective reconstruction, CPU, no weights; needs opencv-contrib-python-headless). `auto` picks flux-fill
when CUDA is available and its weights are on disk, else telea, and says which on stderr. A backend named
explicitly is never substituted: missing weights raise MissingWeightsError with the fetch command.
"""

from __future__ import annotations

import numpy as np

from vd.models.backend import ModelBackend

INPAINT_BACKENDS = ("auto", "flux-fill", "flux2-klein", "telea", "fsr")


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


__all__ = ["InpaintBackend", "check_inputs", "keep_unmasked", "INPAINT_BACKENDS"]
