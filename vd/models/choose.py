"""Choosing a backend by name: `auto` picks the best one that can run here and says which and why.

    get_depth_backend("auto" | "moge" | "file", ..., model="vitl", licence=None) -> DepthBackend
    get_inpaint_backend("auto" | "flux-fill" | "flux2-klein" | "telea" | "fsr", ..., quant="auto",
                        licence=None) -> InpaintBackend
    check_licence(depth_backend, inpaint_backend, depth_model=..., licence=...) -> policy   # no torch

Backends are built, not loaded: weights load on first use. `licence` is the licence policy
(`--licence`, else $VD_LICENCE, else any; `vd.fetch.licences`): under "commercial" a backend
named explicitly whose weights forbid commercial use is refused (UsageError, exit 2, naming the
permissive alternative), and `auto` picks only among permissive diffusion inpainters. On CUDA,
`auto` asks the memory plan (vd.models.offload) which installed inpainter runs best in the free
VRAM (FLUX.1-Fill-dev in bf16 or a GGUF quantisation, or FLUX.2 [klein]).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from vd.errors import MissingWeightsError, UsageError
from vd.fetch import licences
from vd.fetch.registry import require
from vd.models.depth import DEPTH_BACKENDS, DepthBackend, sidecar_depth
from vd.models.depth_file import FileDepth
from vd.models.flux_fill import FluxFillInpaint
from vd.models.flux_gguf import QUANT_PREFERENCE, quant_installed
from vd.models.footprints import INPAINT_VARIANTS
from vd.models.inpaint import INPAINT_BACKENDS, InpaintBackend
from vd.models.moge import MogeDepth, registry_model
from vd.models.offload import place, variant_name, variants_for
from vd.models.telea import TeleaInpaint
from vd.params import OFFLOAD_CHOICES, FluxParams, check_intrinsics
from vd.paths import default_device

log = logging.getLogger(__name__)


def get_depth_backend(
    name: str = "auto",
    *,
    image_path=None,
    focal: Optional[float] = None,
    fov: Optional[float] = None,
    device: Optional[str] = None,
    auto_fetch: Optional[bool] = None,
    intrinsics=None,
    depth_path=None,
    quiet_choice: bool = False,
    model: str = "vitl",
    licence: Optional[str] = None,
) -> DepthBackend:
    """Build (but do not load) a depth backend. Model weights are loaded on first `estimate`.
    `model` is the MoGe-2 size (vitl, vitb, vits: the registry entries moge, moge-vitb, moge-vits)."""
    name = (name or "auto").lower()
    if name not in DEPTH_BACKENDS:
        raise UsageError(f"unknown depth backend {name!r}; choose one of: {', '.join(DEPTH_BACKENDS)}")
    check_intrinsics(focal, fov)
    entry = registry_model(model)
    if name == "auto":
        found = Path(depth_path) if depth_path is not None else sidecar_depth(image_path)
        if found is not None:
            name = "file"
            why = f"a depth map next to the image ({found.name})"
        else:
            name = "moge"
            why = "no depth map next to the image"
        if not quiet_choice:
            log.info(f"depth backend: {name} ({why})")
    if name == "file":
        return FileDepth(image_path=image_path, depth_path=depth_path, focal=focal, fov=fov, intrinsics=intrinsics)
    licences.check([entry], licences.policy(licence))
    return MogeDepth(device=device, focal=focal, fov=fov, auto_fetch=auto_fetch, intrinsics=intrinsics, model=model)


def weights_present(*models: str) -> bool:
    """Whether every file of the registry `models` is installed (nothing is downloaded)."""
    try:
        for m in models:
            require(m, auto_fetch=False)
        return True
    except MissingWeightsError:
        return False


def flux_weights_available(auto_fetch: Optional[bool] = False, quant: str = "auto") -> bool:
    """Whether FLUX.1-Fill-dev (for `quant`; "auto": any of bf16 and the GGUF quants) and its prompt
    embeddings are present (nothing is downloaded)."""
    if quant != "auto":
        return quant_installed(quant)
    return weights_present("flux-fill", "flux-prompt") or any(quant_installed(q) for q in QUANT_PREFERENCE[1:])


def diffusion_inpainters() -> list[tuple[str, str, Callable[[], bool]]]:
    """The diffusion inpaint backends `auto` picks from on a CUDA device, best first: (backend name, the
    registry model whose licence governs it, whether its weights are installed)."""
    return [
        ("flux-fill", "flux-fill", flux_weights_available),
        ("flux2-klein", "flux2-klein", lambda: weights_present("flux2-klein")),
    ]


# the registry models an inpaint backend named explicitly loads (checked against the licence policy)
INPAINT_WEIGHTS: dict[str, tuple[str, ...]] = {
    "flux-fill": FluxFillInpaint.registry_models,
    "flux2-klein": ("flux2-klein", "flux2-klein-text"),
}


def named_weights(depth_backend: str = "auto", inpaint_backend: str = "auto", *, depth_model: str = "vitl") -> list:
    """The registry models that backends named explicitly load (`auto` is not checked: it picks by licence)."""
    models = []
    if (depth_backend or "auto").lower() == "moge":
        models.append(registry_model(depth_model))
    models += INPAINT_WEIGHTS.get((inpaint_backend or "auto").lower(), ())
    return models


def check_licence(
    depth_backend: str = "auto", inpaint_backend: str = "auto", *, depth_model: str = "vitl", licence=None
) -> str:
    """The licence policy in force, after refusing (UsageError, exit 2, one sentence) the weights of an
    explicitly named backend that it does not allow. Reads only the registry: commands call it before torch."""
    policy = licences.policy(licence)
    licences.check(named_weights(depth_backend, inpaint_backend, depth_model=depth_model), policy)
    return policy


def auto_inpainter(
    device: Optional[str],
    auto_fetch: Optional[bool],
    policy: str,
    *,
    quant: str = "auto",
    vram_budget: Optional[int] = None,
) -> tuple[str, str]:
    """(backend, why) for `--inpaint-backend auto`: on CUDA, the installed diffusion inpainter the licence
    allows that the memory plan runs best in the free VRAM (with --fetch, the best allowed one if none is
    installed); else telea."""
    dev = device or default_device()
    has_cuda = str(dev).startswith("cuda")
    if has_cuda:
        import torch

        has_cuda = torch.cuda.is_available()
    if not has_cuda:
        return "telea", "no CUDA device"
    ready, offer, have = variants_for(policy)
    if quant != "auto":  # --quant is FLUX.1-Fill-dev's: a fixed one means that model, in that quantisation
        ready, offer = [v for v in ready if v == quant], [v for v in offer if v == quant]
    if ready:
        p = place(dev, budget=vram_budget, flux=True, depth=True, variants=ready, offer=offer, have=have)
        return str(p.backend), f"the memory plan: {variant_name(INPAINT_VARIANTS[str(p.variant)])} fits best"
    allowed = [(name, model) for name, model, _ in diffusion_inpainters() if licences.allows(model, policy)]
    if allowed and auto_fetch:
        return allowed[0][0], f"CUDA; --fetch downloads the {allowed[0][0]} weights"
    if policy == licences.COMMERCIAL:
        return "telea", f"no permissive diffusion inpainter installed; vd fetch {' '.join(licences.FLUX2_KLEIN.fetch)}"
    return "telea", "no diffusion inpainter installed (vd fetch flux-fill flux-prompt, or see vd doctor --vram)"


def get_inpaint_backend(
    name: str = "auto",
    *,
    device: Optional[str] = None,
    offload: str = FluxParams.offload,
    quant: str = FluxParams.quant,
    steps: int = FluxParams.inpaint_steps,
    guidance: float = FluxParams.guidance,
    auto_fetch: Optional[bool] = None,
    quiet_choice: bool = False,
    vram_budget: Optional[int] = None,
    licence: Optional[str] = None,
) -> InpaintBackend:
    """Build (but do not load) an inpainting backend; weights load on the first `inpaint` call.
    `licence` "commercial" refuses flux-fill and keeps `auto` to permissive weights."""
    name = (name or "auto").lower()
    if name not in INPAINT_BACKENDS:
        raise UsageError(f"unknown inpaint backend {name!r}; choose one of: {', '.join(INPAINT_BACKENDS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    if steps < 1:
        raise UsageError(f"the Flux Fill step count (--inpaint-steps) must be at least 1, got {steps}")
    policy = licences.policy(licence)
    if name == "auto":
        name, why = auto_inpainter(device, auto_fetch, policy, quant=quant, vram_budget=vram_budget)
        if not quiet_choice:
            log.info(f"inpaint backend: {name} ({why})")
    licences.check(INPAINT_WEIGHTS.get(name, ()), policy)
    if name == "telea":
        return TeleaInpaint()
    if name == "fsr":
        from vd.models.fsr_inpaint import FsrInpaint

        return FsrInpaint()
    if name == "flux2-klein":
        from vd.models.flux2_klein import DEFAULT_STEPS, Flux2KleinInpaint

        # the step-distilled model samples in 4 steps: Flux Fill's default count means "the backend's default"
        k_steps = DEFAULT_STEPS if steps == FluxParams.inpaint_steps else steps
        return Flux2KleinInpaint(
            device=device, offload=offload, steps=k_steps, auto_fetch=auto_fetch, vram_budget=vram_budget
        )
    return FluxFillInpaint(
        device=device,
        offload=offload,
        quant=quant,
        steps=steps,
        guidance=guidance,
        auto_fetch=auto_fetch,
        vram_budget=vram_budget,
    )


__all__ = [
    "get_depth_backend",
    "get_inpaint_backend",
    "flux_weights_available",
    "weights_present",
    "diffusion_inpainters",
    "auto_inpainter",
    "named_weights",
    "check_licence",
    "INPAINT_WEIGHTS",
]
