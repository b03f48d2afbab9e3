"""Choosing a backend by name: `auto` picks the best one that can run here and says which and why.

    get_depth_backend("auto" | "moge" | "file", ...) -> DepthBackend
    get_inpaint_backend("auto" | "flux-fill" | "flux2-klein" | "telea" | "fsr", ...) -> InpaintBackend

Backends are built, not loaded: weights load on first use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from vd.errors import MissingWeightsError, UsageError
from vd.fetch.registry import require
from vd.models.depth import DEPTH_BACKENDS, DepthBackend, sidecar_depth
from vd.models.depth_file import FileDepth
from vd.models.flux_fill import FluxFillInpaint
from vd.models.flux_gguf import QUANT_PREFERENCE, quant_installed
from vd.models.inpaint import INPAINT_BACKENDS, InpaintBackend
from vd.models.moge import MogeDepth
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
) -> DepthBackend:
    """Build (but do not load) a depth backend. Model weights are loaded on first `estimate`."""
    name = (name or "auto").lower()
    if name not in DEPTH_BACKENDS:
        raise UsageError(f"unknown depth backend {name!r}; choose one of: {', '.join(DEPTH_BACKENDS)}")
    check_intrinsics(focal, fov)
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
    return MogeDepth(device=device, focal=focal, fov=fov, auto_fetch=auto_fetch, intrinsics=intrinsics)


def flux_weights_available(auto_fetch: Optional[bool] = False, quant: str = "auto") -> bool:
    """Whether FLUX.1-Fill-dev (for `quant`; "auto": any of bf16 and the GGUF quants) and its prompt
    embeddings are present (nothing is downloaded)."""
    if quant != "auto":
        return quant_installed(quant)
    try:
        require("flux-fill", auto_fetch=False)
        require("flux-prompt", auto_fetch=False)
        return True
    except MissingWeightsError:
        return any(quant_installed(q) for q in QUANT_PREFERENCE[1:])


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
) -> InpaintBackend:
    """Build (but do not load) an inpainting backend; weights load on the first `inpaint` call."""
    name = (name or "auto").lower()
    if name not in INPAINT_BACKENDS:
        raise UsageError(f"unknown inpaint backend {name!r}; choose one of: {', '.join(INPAINT_BACKENDS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    if steps < 1:
        raise UsageError(f"the Flux Fill step count (--inpaint-steps) must be at least 1, got {steps}")
    if name == "auto":
        dev = device or default_device()
        has_cuda = str(dev).startswith("cuda")
        if has_cuda:
            import torch

            has_cuda = torch.cuda.is_available()
        have = flux_weights_available(quant=quant) if has_cuda else False
        if has_cuda and not have and auto_fetch:
            have = True  # require() below downloads them
        name = "flux-fill" if (has_cuda and have) else "telea"
        if not quiet_choice:
            why = (
                "CUDA and FLUX.1-Fill-dev weights found"
                if name == "flux-fill"
                else ("no FLUX.1-Fill-dev weights (vd fetch flux-fill flux-prompt)" if has_cuda else "no CUDA device")
            )
            log.info(f"inpaint backend: {name} ({why})")
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
        steps=steps,
        guidance=guidance,
        auto_fetch=auto_fetch,
        vram_budget=vram_budget,
        quant=quant,
    )


__all__ = ["get_depth_backend", "get_inpaint_backend", "flux_weights_available"]
