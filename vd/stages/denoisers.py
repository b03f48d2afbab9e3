"""What the MCS loop of `vd fine` samples with: Flux Fill, or a classical stand-in without a model,
and `choose_denoiser`, which picks one by name (`auto` says which and why).

A `Denoiser` encodes renders to latents, predicts a velocity at time t, decodes, and gives its
sampling schedule. `FluxDenoiser` is FLUX.1-Fill-dev in its packed latent space;
`ClassicalDenoiser` (`vd fine --inpaint-backend telea --allow-classical`) runs the same loop in
pixel space with v = (x_t - x0_telea) / t, x0_telea the OpenCV Telea inpaint of the holes of the
current scene's render.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from vd.errors import UsageError
from vd.fetch import licences
from vd.fetch.registry import require, require_all
from vd.models import flux_fill
from vd.models.choose import INPAINT_WEIGHTS, auto_inpainter
from vd.models.flux_fill import FluxFillInpaint
from vd.models.flux_gguf import resolve_quant, weights_for
from vd.models.inpaint import INPAINT_BACKENDS
from vd.models.telea import TeleaInpaint
from vd.params import OFFLOAD_CHOICES, FluxParams
from vd.paths import resolve_device

log = logging.getLogger(__name__)


class Denoiser:
    """What the MCS loop needs from a model; latents are [B, ...] tensors."""

    name = "?"
    identity = "?"
    dtype = "float32"
    registry_models: tuple[str, ...] = ()  # the registry models whose weights it loads (for summary.json)

    def prepare(self, rgb, holes) -> None:
        """Condition on the views' coarse renders (rgb [B,H,W,3] float 0..1) and holes [B,H,W]."""

    def encode(self, rgb):  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z):  # pragma: no cover - interface
        raise NotImplementedError

    def schedule(self, total_steps: int, height: int, width: int) -> list[float]:  # pragma: no cover
        raise NotImplementedError

    def velocity(self, x, t: float, state: dict):  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:
        pass


def by_views(call, views: int, placement: Optional[dict]):
    """`call(i, j)` over views [i, j) as many at a time as the memory plan allows (`views_per_call`; all when
    it set none), concatenated: each view's velocity depends on that view alone."""
    import torch

    n = (placement or {}).get("views_per_call") or views
    if n >= views:
        return call(0, views)
    return torch.cat([call(i, min(i + n, views)) for i in range(0, views, n)])


class ClassicalDenoiser(Denoiser):
    """No diffusion: pixel-space "latents" ([B,3,H,W] in [-1,1]) and a velocity that points at the
    Telea inpaint of the holes of the current scene's render, v = (x_t - x0_telea) / t."""

    name = "classical-telea"

    def __init__(self, device="cpu"):
        self.device = device
        self.telea = TeleaInpaint()
        self.identity = f"classical:{self.telea.identity}"

    def encode(self, rgb):
        return rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0

    def decode(self, z):
        return ((z.float() + 1.0) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    def schedule(self, total_steps, height, width):
        return [1.0 - i / total_steps for i in range(total_steps)] + [0.0]

    def velocity(self, x, t, state):
        import torch

        rgb = state["render_rgb"]  # uint8 [B,H,W,3] numpy
        holes = state["render_holes"]  # bool [B,H,W]
        filled = np.stack([self.telea.inpaint(rgb[i], holes[i]) for i in range(len(rgb))])
        x0 = self.encode(torch.from_numpy(filled.astype(np.float32) / 255.0).to(x.device))
        return (x.float() - x0) / t


class FluxDenoiser(Denoiser):
    """Flux Fill through `vd.models.flux_fill` building blocks; latents are packed tokens [B, L, 64].

    Conditioning: each view's coarse render with its hole mask as the region to generate, so the
    model keeps what the coarse scene already shows and fills what it does not. The model loads
    lazily (on the first step that is not cached) and its identity keys the cache.
    """

    name = "flux-fill"

    def __init__(
        self,
        *,
        device="cpu",
        offload: str = FluxParams.offload,
        guidance: float = FluxParams.guidance,
        auto_fetch=None,
        backend=None,
        vram_budget: Optional[int] = None,
        quant: str = FluxParams.quant,
    ):
        self.backend = backend or FluxFillInpaint(
            device=device,
            offload=offload,
            guidance=guidance,
            auto_fetch=auto_fetch,
            vram_budget=vram_budget,
            quant=quant,
        )
        self.guidance = float(guidance)
        self.dtype = "bfloat16" if str(self.backend.device).startswith("cuda") else "float32"
        self.identity = f"{self.backend.identity}:fine-guidance={self.guidance}"
        self.cond = None
        self.hw: Optional[tuple[int, int]] = None

    @property
    def registry_models(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.backend.registry_models)

    @property
    def ff(self):
        return self.backend.flux

    def prepare(self, rgb, holes) -> None:
        import torch

        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        self.backend.work_pixels = int(rgb.shape[0] * rgb.shape[1] * rgb.shape[2])  # sizes "auto" offload
        self.backend.view_pixels = int(rgb.shape[1] * rgb.shape[2])
        images = rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0
        masks = torch.as_tensor(holes)[:, None].float()
        self.cond = self.ff.condition(images, masks)

    def encode(self, rgb):
        self.hw = (int(rgb.shape[1]), int(rgb.shape[2]))
        return flux_fill.pack_latents(self.ff.encode(rgb.permute(0, 3, 1, 2).float() * 2.0 - 1.0))

    def decode(self, z):
        H, W = self.hw
        f = flux_fill.VAE_FACTOR
        x = self.ff.decode(flux_fill.unpack_latents(z.float(), H // f, W // f))
        return ((x + 1.0) * 0.5).clamp(0, 1).permute(0, 2, 3, 1)

    def schedule(self, total_steps, height, width):
        return flux_fill.schedule(total_steps, (height // 16) * (width // 16))

    def velocity(self, x, t, state):
        H, W = self.hw
        return by_views(
            lambda i, j: self.ff.velocity(x[i:j], t, self.cond[i:j], self.guidance, height=H, width=W),
            x.shape[0],
            self.backend.placement,
        )

    def release(self) -> None:
        self.backend.release()


def make_flux_denoiser(
    *,
    device,
    offload: str,
    guidance: float,
    auto_fetch: Optional[bool],
    vram_budget: Optional[int] = None,
    quant: str = FluxParams.quant,
) -> Denoiser:
    return FluxDenoiser(
        device=device, offload=offload, guidance=guidance, auto_fetch=auto_fetch, vram_budget=vram_budget, quant=quant
    )


def choose_denoiser(
    name: str,
    *,
    device: Optional[str],
    offload: str,
    allow_classical: bool,
    guidance: float = FluxParams.guidance,
    auto_fetch: Optional[bool] = None,
    vram_budget: Optional[int] = None,
    quant: str = FluxParams.quant,
    licence: Optional[str] = None,
):
    """(device, denoiser factory, backend name) for --inpaint-backend; UsageError (exit 2) for telea
    without --allow-classical or for flux-fill under `licence` "commercial" (`auto` then never picks it),
    MissingWeightsError (exit 3) for flux-fill without weights (for `quant`)."""
    name = (name or "auto").lower()
    if name not in INPAINT_BACKENDS:
        raise UsageError(f"unknown inpaint backend {name!r}; choose one of: {', '.join(INPAINT_BACKENDS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    dev = resolve_device(device)
    policy = licences.policy(licence)
    why = ""
    if name == "auto":
        name, why = auto_inpainter(str(dev), auto_fetch, policy, quant=quant, vram_budget=vram_budget)
        if name == "telea":
            log.info(f"inpaint backend: telea ({why})")
        else:
            log.info(f"inpaint backend: {name}")
            why = ""
    licences.check(INPAINT_WEIGHTS.get(name, ()), policy)
    if name == "fsr":
        name = "telea"  # the rectification loop's classical stand-in is telea whatever fills the coarse views
    if name == "telea":
        if not allow_classical:
            reason = f" ({why})" if why else ""
            diffusion = "flux2-klein" if policy == licences.COMMERCIAL else "flux-fill"
            raise UsageError(
                f"`vd fine` refines with a diffusion model, but the inpaint backend is telea{reason}, which has none; "
                f"use --inpaint-backend {diffusion}, or --allow-classical to rectify with classical inpaints"
            )
        log.warning("no diffusion model: the rectification loop runs on classical (Telea) inpaints")
        return dev, (lambda: ClassicalDenoiser(dev)), "telea"
    if name == "flux2-klein":
        return choose_klein_denoiser(dev, offload=offload, auto_fetch=auto_fetch, vram_budget=vram_budget)
    if not str(dev).startswith("cuda"):
        log.warning(f"running Flux Fill on {dev}: fine for tiny test models, very slow for the real one")
    # resolve the weights now so a missing model fails before any work (exit 3)
    require_all(weights_for(resolve_quant(quant)), auto_fetch=auto_fetch)
    return (
        dev,
        (
            lambda: make_flux_denoiser(
                device=dev,
                offload=offload,
                guidance=guidance,
                auto_fetch=auto_fetch,
                vram_budget=vram_budget,
                quant=quant,
            )
        ),
        "flux-fill",
    )


def choose_klein_denoiser(dev, *, offload: str, auto_fetch: Optional[bool], vram_budget: Optional[int] = None):
    """FLUX.2 [klein] for the MCS loop (vd.stages.klein_denoiser); its weights are resolved now (exit 3)."""
    if not str(dev).startswith("cuda"):
        log.warning(f"running FLUX.2 [klein] on {dev}: fine for tiny test models, slow for the real one")
    require("flux2-klein", auto_fetch=auto_fetch)

    def make():
        from vd.stages.klein_denoiser import Flux2KleinDenoiser

        return Flux2KleinDenoiser(device=dev, offload=offload, auto_fetch=auto_fetch, vram_budget=vram_budget)

    return dev, make, "flux2-klein"


__all__ = [
    "Denoiser",
    "ClassicalDenoiser",
    "FluxDenoiser",
    "make_flux_denoiser",
    "choose_denoiser",
    "choose_klein_denoiser",
]
