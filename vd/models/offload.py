"""GPU memory placement: which Flux offload mode and which device for the depth model.

    (the options and their defaults: vd.params.FluxParams.offload and .vram_budget)
    p = plan(free, total, allocated=0, budget=16 * GIB, flux=True, depth=True)   # pure
    p.offload ("none" | "model" | "sequential"), p.evict_for_ae, p.depth_on_gpu, p.reason, p.fits, p.to_json()
    p = place("cuda", requested="auto", budget=...)      # reads the device's free memory, then plan()
    configure(depth_backend, inpaint_backend, device=..., budget=...)   # a stage applies a plan

`plan` is a pure function of memory figures, so every rule is tested on a CPU. It prefers the
fastest Flux placement that fits beside the Gaussians and the optimiser, with the depth model on
the GPU; block-by-block offload costs more than MoGe on the CPU, so when the depth model does not
fit beside whole-model offload it moves to the CPU before Flux goes block by block. With model
offload, `evict_for_ae` is False when the transformer, the AE and the larger of the AE's
activations and the render buffers fit beside the scene ("model-resident"): the transformer then
stays on the GPU between calls and MCS steps instead of moving out and back around every AE call.
`--vram-budget` caps the memory vd plans for at BUDGET minus what this process already holds.

The footprints are estimates from parameter counts (bf16 Flux, fp32 MoGe-2 ViT-L) and a rough
activation allowance; bench/gpu/run.sh measures the peaks that check them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from vd.params import GIB, OFFLOAD_CHOICES, OFFLOAD_MODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Footprints:
    """Bytes each piece holds on the GPU (estimates; see the module docstring)."""

    transformer: int = int(22.2 * GIB)  # FLUX.1-Fill-dev, 11.9 B parameters in bf16
    ae: int = int(0.16 * GIB)  # the Flux autoencoder in bf16
    block: int = int(0.65 * GIB)  # the largest offload unit (one double-stream block)
    activations_fixed: int = int(0.5 * GIB)
    activations_per_mpx: int = 3 * GIB  # per megapixel of work (views x height x width); the AE decoder dominates
    depth: int = int(2.5 * GIB)  # MoGe-2 ViT-L weights in fp32 plus its activations
    scene: int = 1 * GIB  # Gaussians and optimiser state, resident for the whole stage
    render: int = 1 * GIB  # render and gradient buffers while optimising

    def need(self, mode: str, work_pixels: int) -> int:
        """Peak bytes of a stage with Flux in `mode` (the depth model not included). "model-resident":
        model offload that keeps the transformer and the AE on the GPU between calls; the AE's
        activations and the render buffers are never live at once, so the larger of the two counts."""
        act = self.activations_fixed + int(self.activations_per_mpx * work_pixels / 1e6)
        if mode == "model-resident":
            return self.transformer + self.ae + max(act, self.render) + self.scene
        if mode == "none":  # Flux stays resident while the scene is optimised
            return self.transformer + self.ae + act + self.scene + self.render
        # evicting model offload and sequential offload park Flux on the CPU after every call, so it never
        # meets the render buffers ("model-resident" keeps it, see plan)
        flux = max(self.transformer, self.ae) + act if mode == "model" else self.block + self.ae + act
        return max(flux, self.render) + self.scene


FOOTPRINTS = Footprints()
DEFAULT_WORK_PIXELS = 672 * 672  # a 512-pixel input outpainted by 30 %


@dataclass
class Placement:
    offload: str  # none | model | sequential
    depth_on_gpu: bool
    reason: str
    fits: bool = True  # False: even the smallest placement exceeds what is available
    evict_for_ae: bool = True  # model offload: the transformer leaves the GPU while the AE runs and between calls
    on_gpu: bool = True  # False: no CUDA device, everything runs on the CPU
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    budget_bytes: Optional[int] = None
    available_bytes: Optional[int] = None
    needs: dict = field(default_factory=dict)  # bytes each considered placement needs

    def to_json(self) -> dict:
        return asdict(self)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def plan(
    free: int,
    total: int,
    *,
    allocated: int = 0,
    budget: Optional[int] = None,
    requested: str = "auto",
    flux: bool = True,
    depth: bool = False,
    work_pixels: int = DEFAULT_WORK_PIXELS,
    fp: Footprints = FOOTPRINTS,
) -> Placement:
    """Choose the Flux offload mode and the depth model's device from memory figures (bytes).

    free/total: the device's free and total memory; allocated: what this process holds already
    (counted against the budget); budget: cap on this process's memory, or None; requested: "auto"
    or a fixed mode (then only the depth device is chosen); flux/depth: whether Flux and a depth
    model will run.
    """
    if requested not in OFFLOAD_CHOICES:
        raise ValueError(f"unknown offload mode {requested!r}")
    available = free if budget is None else max(0, min(free, budget - allocated))
    where = (
        f"{_gib(available)} of the {_gib(budget)} budget"
        if budget is not None and budget - allocated < free
        else f"{_gib(free)} free of {_gib(total)}"
    )
    depth_need = fp.depth if depth else 0
    base = fp.scene + fp.render
    common: dict[str, Any] = dict(
        free_bytes=int(free),
        total_bytes=int(total),
        budget_bytes=None if budget is None else int(budget),
        available_bytes=int(available),
    )
    if not flux:
        on_gpu = depth and depth_need + base <= available
        what = (
            "the depth model on the GPU" if on_gpu else ("the depth model on the CPU" if depth else "no model to place")
        )
        return Placement(
            "none", on_gpu, f"{what} ({where})", True, **common, needs={"depth": depth_need, "scene": base}
        )
    needs = {m: fp.need(m, work_pixels) for m in OFFLOAD_MODES}
    chosen = next(
        (
            (m, gpu_depth)
            for m, gpu_depth in _candidates(requested, depth)
            if needs[m] + (depth_need if gpu_depth else 0) <= available
        ),
        None,
    )
    extra = {"depth": depth_need}
    if chosen is None:
        mode = "sequential" if requested == "auto" else requested
        return Placement(
            mode,
            False,
            (
                f"offload {mode}: it needs ~{_gib(needs[mode])} and {where}; "
                "expect out-of-memory errors (try --device cpu or a smaller --max-resolution)"
            ),
            False,
            **common,
            needs={**needs, **extra},
        )
    mode, gpu_depth = chosen[0], chosen[1] and depth
    why = "--offload" if requested != "auto" else _auto_why(mode, needs)
    tail = (
        ""
        if not depth
        else (
            "; depth model on the GPU"
            if gpu_depth
            else f"; depth model on the CPU (another {_gib(depth_need)} does not fit)"
        )
    )
    resident = fp.need("model-resident", work_pixels)
    evict = mode == "sequential" or (mode == "model" and resident + (depth_need if gpu_depth else 0) > available)
    if mode == "model":
        why += (
            "; the transformer leaves the GPU while the autoencoder runs"
            if evict
            else f"; the transformer stays on the GPU between calls, ~{_gib(resident)}"
        )
    return Placement(
        mode,
        gpu_depth,
        f"offload {mode} ({why}; {where}){tail}",
        True,
        evict_for_ae=evict,
        **common,
        needs={**needs, "model-resident": resident, **extra},
    )


def _candidates(requested: str, depth: bool) -> list[tuple[str, bool]]:
    """(offload mode, depth model on the GPU) from the fastest down. Block-by-block offload is slower
    than the depth model on the CPU, so the depth model leaves the GPU first."""
    depth_places = (True, False) if depth else (True,)
    if requested != "auto":
        return [(requested, d) for d in depth_places]
    return [(m, d) for d in depth_places for m in ("none", "model")] + [("sequential", d) for d in depth_places]


def _auto_why(mode: str, needs: dict) -> str:
    if mode == "none":
        return f"everything on the GPU needs ~{_gib(needs['none'])}"
    if mode == "model":
        return f"everything on the GPU would need ~{_gib(needs['none'])}"
    return f"model offload would need ~{_gib(needs['model'])}"


def read_vram(device) -> tuple[int, int, int]:
    """(free, total, allocated) bytes of a CUDA device; memory torch caches but does not use counts as free."""
    import torch

    dev = torch.device(device)
    free, total = torch.cuda.mem_get_info(dev)
    allocated = torch.cuda.memory_allocated(dev)
    cached_unused = torch.cuda.memory_reserved(dev) - allocated
    return int(free + cached_unused), int(total), int(allocated)


def place(
    device,
    *,
    requested: str = "auto",
    budget: Optional[int] = None,
    flux: bool = True,
    depth: bool = False,
    work_pixels: int = DEFAULT_WORK_PIXELS,
) -> Placement:
    """`plan` with the free memory of `device`; on a CPU device everything stays on the CPU."""
    cuda = str(device).startswith("cuda")
    if cuda:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        mode = "none" if requested == "auto" else requested
        return Placement(mode, False, f"no CUDA device ({device}): models run on the CPU", True, on_gpu=False)
    free, total, allocated = read_vram(device)
    return plan(
        free,
        total,
        allocated=allocated,
        budget=budget,
        requested=requested,
        flux=flux,
        depth=depth,
        work_pixels=work_pixels,
    )


def configure(depth_backend, inpaint_backend, *, device, budget: Optional[int] = None) -> dict:
    """Plan the GPU memory of a stage before its models load, apply it to the backends, say it on stderr.

    Sets the Flux backend's offload mode when it is "auto" and moves the depth model to the CPU
    when it does not fit. Returns the placement as JSON (for summary.json)."""

    flux = getattr(inpaint_backend, "name", None) == "flux-fill"
    depth = getattr(depth_backend, "name", None) == "moge"
    requested = getattr(inpaint_backend, "offload", "auto") if flux else "auto"
    p = place(device, requested=requested, budget=budget, flux=flux, depth=depth)
    if flux:
        inpaint_backend.offload = p.offload
        inpaint_backend.placement = p.to_json()
    if depth and not p.depth_on_gpu:
        depth_backend._device = "cpu"
    if p.on_gpu and (flux or depth):
        (log.info if p.fits else log.warning)(f"GPU memory: {p.reason}")
    return p.to_json()


__all__ = ["Footprints", "FOOTPRINTS", "Placement", "plan", "place", "read_vram", "configure"]
