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


def pad_to_multiple(rgb: np.ndarray, mask: np.ndarray, multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The image edge-padded and the mask padded with "generate" to sides that are multiples of
    `multiple` (what the Flux models' latent patches need); the caller crops the result back."""
    ph, pw = (-rgb.shape[0]) % multiple, (-rgb.shape[1]) % multiple
    if not (ph or pw):
        return rgb, mask
    return (
        np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge"),
        np.pad(mask, ((0, ph), (0, pw)), constant_values=True),
    )


def as_tensors(rgb: np.ndarray, mask: np.ndarray):
    """(image [1,3,H,W] float in [0, 1], mask [1,1,H,W] float, 1 = generate) for the diffusion backends."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    return x, torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()


def keep_unmasked(rgb: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paste the generated pixels into the hole only; everything else is the input, exactly."""
    out = rgb.copy()
    out[mask] = generated[mask]
    return out


__all__ = ["InpaintBackend", "check_inputs", "keep_unmasked", "pad_to_multiple", "as_tensors", "INPAINT_BACKENDS"]
