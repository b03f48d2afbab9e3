"""FLUX.2 [klein] 4B as the denoiser of `vd fine`'s MCS loop (`--inpaint-backend flux2-klein`).

klein is a rectified-flow transformer predicting the velocity v = noise - clean, the convention
`vd.mcs` derives its update in, so the loop runs on it unchanged. Latents are the pipeline's packed
tokens [B, H/16 * W/16, 128] (32-channel autoencoder latents in 2x2 patches, normalised by the
autoencoder's batch-norm statistics). Conditioning: each view's coarse render, its holes mid-grey,
is encoded and appended as reference-image tokens (position ids at the reference time offset),
exactly as `Flux2KleinInpaintPipeline` appends its image; only the first L output tokens are the
velocity of the sample.

Schedule: the pipeline's own, for N = --total-steps: sigmas linspace(1, 1/N, N) time-shifted by
its empirical mu for the image size and N, then 0. The model is step-distilled for N = 4, so
`--total-steps 4 --steps 2` (or 3) samples as it was trained; with the default 25/9 it follows the
same flow with smaller Euler steps, which the distilled model was not tuned for (untested for
quality: no real weights here).
"""

from __future__ import annotations

from typing import Optional

from vd.params import FluxParams
from vd.stages.denoisers import Denoiser, by_views


class Flux2KleinDenoiser(Denoiser):
    name = "flux2-klein"
    registry_models: tuple[str, ...] = ("flux2-klein", "flux2-klein-text")

    def __init__(
        self,
        *,
        device="cpu",
        offload: str = FluxParams.offload,
        auto_fetch=None,
        backend=None,
        vram_budget: Optional[int] = None,
    ):
        from vd.models.flux2_klein import Flux2KleinInpaint

        self.backend = backend or Flux2KleinInpaint(
            device=device, offload=offload, auto_fetch=auto_fetch, vram_budget=vram_budget
        )
        self.dtype = "bfloat16" if str(self.backend.device).startswith("cuda") else "float32"
        self.identity = f"{self.backend.identity}:fine"
        self.ref: Optional[dict] = None
        self.hw: Optional[tuple[int, int]] = None

    @property
    def kl(self):
        return self.backend.klein

    def prepare(self, rgb, holes) -> None:
        import torch

        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        self.backend.work_pixels = int(rgb.shape[0] * rgb.shape[1] * rgb.shape[2])
        self.backend.view_pixels = int(rgb.shape[1] * rgb.shape[2])
        images = rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0
        masks = torch.as_tensor(holes)[:, None].float().to(images.device)
        self.ref = self.kl.reference(images * (1.0 - masks))  # holes mid-grey (0 in [-1, 1])

    def encode(self, rgb):
        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        return self.kl.encode(rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0)

    def decode(self, z):
        H, W = self.hw
        x = self.kl.decode(z.float(), H, W)
        return ((x + 1.0) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    def schedule(self, total_steps, height, width):
        # from the scheduler config alone: choosing the schedule does not load the model
        from vd.models.flux2_klein_loading import load_scheduler
        from vd.models.flux2_klein_model import schedule

        cfg = self.backend.config
        return schedule(load_scheduler(f"{cfg}/scheduler" if cfg else None), total_steps, height, width)

    def velocity(self, x, t, state):
        if self.ref is None:
            raise RuntimeError("Flux2KleinDenoiser.prepare must run before velocity")
        ref = self.ref
        return by_views(lambda i, j: self.kl.velocity(x[i:j], t, _views(ref, i, j)), x.shape[0], self.backend.placement)


def _views(ref: dict, i: int, j: int) -> dict:
    """Views [i, j) of the reference: its per-view tensors sliced (position ids shared by every view kept)."""
    views = ref["tokens"].shape[0]
    return {k: (v[i:j] if v.shape[0] == views and v.ndim == 3 else v) for k, v in ref.items()}

    def release(self) -> None:
        self.backend.release()


__all__ = ["Flux2KleinDenoiser"]
