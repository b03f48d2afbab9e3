"""The one memory plan: which inpainter (backend and quantisation), which offload mode, and where the depth model runs.

    (the options and their defaults: vd.params.FluxParams.offload, .quant and .vram_budget)
    p = plan(free, total, allocated=0, budget=16 * GIB, flux=True, depth=True,
             variants=("bf16", "q8_0"), offer=("q4_k",), depth_model="vitl",
             work_pixels=8 * 704 * 704, view_pixels=704 * 704)                # pure
    p.variant, p.backend, p.quant, p.offload, p.evict_for_ae, p.depth_on_gpu, p.text_encoder_on_gpu,
    p.views_per_call, p.reason, p.hint, p.fits, p.to_json()
    p = place("cuda", requested="auto", budget=..., variants=...)  # reads the device's free memory, then plan()
    configure(depth_backend, inpaint_backend, device=..., budget=...)   # a stage applies a plan
    variants_for(licence, installed=None)   # which inpainters a run may use, and which it could fetch

`plan` is a pure function of memory figures (vd.models.footprints, estimates until bench/gpu
measures them), so every rule is tested on a CPU. It walks the inpainters the run may use
(`variants`: installed and allowed by the licence) from the best quality down (bf16, q8_0, q5_k,
q4_k, FLUX.2 [klein]) and takes the first that fits with the transformer resident ("none") or
moved whole around its use ("model"), with the depth model on the GPU, else on the CPU: the depth
model leaves the GPU before the inpainter loses quality, and a lower quantisation is preferred to
block-by-block offload, which moves every weight across the bus at every step. Only when nothing
fits that way does it go block by block ("sequential"), with the fewest bytes per step above
5 bits first (q8_0, then bf16, ...). With model offload, `evict_for_ae` is False when the
transformer, the AE and the larger of the AE's activations and the render buffers fit beside the
scene ("model-resident"). A FLUX.2 [klein] text encoder runs only on a prompt-embedding cache
miss, before the transformer loads, so it counts alone: `text_encoder_on_gpu` says whether it fits.
A call on several views (`vd fine`'s, `work_pixels` in views of `view_pixels`) takes them through the
AE one at a time; the choice above assumes one view per transformer call too, and then
`views_per_call` is as many as still fit (speed comes after quality).
`offer` lists inpainters that are allowed but not installed: when one of them would run better,
`hint` names it with its `vd fetch` line. `--vram-budget` caps the memory vd plans for at BUDGET
minus what this process already holds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

from vd.models.footprints import (
    DEPTH_BYTES,
    FOOTPRINTS,
    INPAINT_VARIANTS,
    QUALITY_ORDER,
    SEQUENTIAL_ORDER,
    Footprints,
    InpaintVariant,
)
from vd.params import GIB, OFFLOAD_CHOICES, OFFLOAD_MODES

log = logging.getLogger(__name__)

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
    variant: Optional[str] = None  # bf16 | q8_0 | q5_k | q4_k | klein; None without an inpainter
    backend: Optional[str] = None  # flux-fill | flux2-klein
    quant: Optional[str] = None  # flux-fill's --quant (bf16 | q8_0 | q5_k | q4_k)
    weights: list = field(default_factory=list)  # the registry models the chosen inpainter reads
    depth_model: Optional[str] = None
    text_encoder_on_gpu: Optional[bool] = None  # flux2-klein: where its text encoder runs on a cache miss
    views_per_call: Optional[int] = None  # views through the transformer at once (None: all of a call's views)
    hint: str = ""  # a better inpainter that is allowed but not installed, with its vd fetch line

    def to_json(self) -> dict:
        return asdict(self)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _variant_fields(v: InpaintVariant) -> dict:
    return dict(
        variant=v.name,
        backend=v.backend,
        quant=v.name if v.backend == "flux-fill" else None,
        weights=list(v.fetch),
    )


def _candidates(requested: str, depth: bool, variants: Sequence[str]) -> Iterator[tuple[str, str, bool]]:
    """(variant, offload mode, depth model on the GPU) from the best down (see the module docstring)."""
    depth_places = (True, False) if depth else (True,)
    ordered = [v for v in QUALITY_ORDER if v in variants]
    if requested != "auto":
        yield from ((v, requested, d) for v in ordered for d in depth_places)
        return
    yield from ((v, m, d) for v in ordered for d in depth_places for m in ("none", "model"))
    yield from ((v, "sequential", d) for v in SEQUENTIAL_ORDER if v in variants for d in depth_places)


def _first_fit(requested, depth, variants, available, needs_of, depth_need) -> Optional[tuple[str, str, bool]]:
    for v, mode, gpu_depth in _candidates(requested, depth, variants):
        if needs_of(v)[mode] + (depth_need if gpu_depth else 0) <= available:
            return v, mode, gpu_depth
    return None


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
    view_pixels: Optional[int] = None,
    fp: Footprints = FOOTPRINTS,
    variants: Sequence[str] = ("bf16",),
    offer: Sequence[str] = (),
    depth_model: str = "vitl",
    have: Sequence[str] = (),
) -> Placement:
    """Choose the inpainter, its offload mode and the depth model's device from memory figures (bytes).

    free/total: the device's free and total memory; allocated: what this process holds already
    (counted against the budget); budget: cap on this process's memory, or None; requested: "auto"
    or a fixed offload mode; flux/depth: whether an inpainter and a depth model will run; variants:
    the inpainters to choose from (vd.models.footprints.INPAINT_VARIANTS names); offer: ones that
    could be fetched, for the hint; depth_model: the MoGe-2 size; have: registry models present (the
    hint's vd fetch line leaves them out); work_pixels/view_pixels: views x height x width of the
    inpainter's largest call and the pixels of one of its views (default: one view).
    """
    if requested not in OFFLOAD_CHOICES:
        raise ValueError(f"unknown offload mode {requested!r}")
    unknown = [v for v in (*variants, *offer) if v not in INPAINT_VARIANTS]
    if unknown or (flux and not variants):
        raise ValueError(f"unknown or no inpainter variants: {unknown or list(variants)}")
    available = free if budget is None else max(0, min(free, budget - allocated))
    where = (
        f"{_gib(available)} of the {_gib(budget)} budget"
        if budget is not None and budget - allocated < free
        else f"{_gib(free)} free of {_gib(total)}"
    )
    depth_need = DEPTH_BYTES[depth_model] if depth else 0
    base = fp.scene + fp.render
    common: dict[str, Any] = dict(
        free_bytes=int(free),
        total_bytes=int(total),
        budget_bytes=None if budget is None else int(budget),
        available_bytes=int(available),
        depth_model=depth_model if depth else None,
    )
    if not flux:
        on_gpu = depth and depth_need + base <= available
        what = (
            "the depth model on the GPU" if on_gpu else ("the depth model on the CPU" if depth else "no model to place")
        )
        return Placement(
            "none", on_gpu, f"{what} ({where})", True, **common, needs={"depth": depth_need, "scene": base}
        )

    # views of a batched call go through the transformer as many at a time as fit, one at least: the choice of
    # inpainter and mode assumes one (quality before speed), then as many as still fit are taken
    views = max(1, work_pixels // view_pixels) if view_pixels else 1
    per_view = work_pixels // views

    def needs_of(name: str, at_once: int = 1) -> dict:
        f = fp.for_variant(INPAINT_VARIANTS[name], depth_model)
        return {m: f.need(m, at_once * per_view, per_view) for m in (*OFFLOAD_MODES, "model-resident")}

    chosen = _first_fit(requested, depth, variants, available, needs_of, depth_need)
    if chosen is None:
        mode = "sequential" if requested == "auto" else requested
        name = min(variants, key=lambda n: needs_of(n)[mode])
        v = INPAINT_VARIANTS[name]
        return Placement(
            mode,
            False,
            (
                f"{_label(v, variants)}offload {mode}: it needs ~{_gib(needs_of(name)[mode])} and {where}; "
                "expect out-of-memory errors (try --device cpu or a smaller --max-resolution)"
            ),
            False,
            **common,
            needs={**needs_of(name), "depth": depth_need},
            **_variant_fields(v),
        )
    name, mode, gpu_depth = chosen
    gpu_depth = gpu_depth and depth
    v = INPAINT_VARIANTS[name]
    needs = needs_of(name)
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
    resident = needs["model-resident"]
    evict = mode == "sequential" or (mode == "model" and resident + (depth_need if gpu_depth else 0) > available)
    if mode == "model":
        why += (
            "; the transformer leaves the GPU while the autoencoder runs"
            if evict
            else f"; the transformer stays on the GPU between calls, ~{_gib(resident)}"
        )
    encoder_on_gpu = None
    if v.text_encoder:
        encoder_on_gpu = v.text_encoder + fp.scene <= available
        tail += (
            f"; text encoder on the GPU on a prompt cache miss (~{_gib(v.text_encoder)}, alone)"
            if encoder_on_gpu
            else f"; text encoder on the CPU on a prompt cache miss (~{_gib(v.text_encoder)} does not fit)"
        )
    key = "model-resident" if mode == "model" and not evict else mode  # what the chosen placement needs
    room = available - (depth_need if gpu_depth else 0)
    at_once = max((n for n in range(1, views + 1) if needs_of(name, n)[key] <= room), default=1)
    needs = needs_of(name, at_once)
    if views > 1:
        tail += f"; {at_once} of {views} views through the transformer at a time"
    better = _first_fit(requested, depth, [*variants, *offer], available, needs_of, depth_need)
    hint = ""
    if better is not None and better[0] in offer and better[:2] != (name, mode):
        b = INPAINT_VARIANTS[better[0]]
        fetch = " ".join(m for m in _needs_present(b.name, set(have)) if m not in set(have))
        hint = f"{variant_name(b)} ({b.quality}) would run with offload {better[1]} here: vd fetch {fetch}"
    return Placement(
        mode,
        gpu_depth,
        f"{_label(v, variants)}offload {mode} ({why}; {where}){tail}",
        True,
        evict_for_ae=evict,
        **common,
        needs={**needs, "depth": depth_need, "text_encoder": v.text_encoder},
        text_encoder_on_gpu=encoder_on_gpu,
        views_per_call=at_once if views > 1 else None,
        hint=hint,
        **_variant_fields(v),
    )


def variant_name(v: InpaintVariant) -> str:
    """ "flux-fill q8_0", "flux2-klein": the backend, and the quantisation where it has several."""
    return v.backend if v.backend != "flux-fill" else f"flux-fill {v.name}"


def _label(v: InpaintVariant, variants: Sequence[str]) -> str:
    """The inpainter and its quality, "flux-fill q8_0 (8-bit ...): ", when there was a choice; else nothing."""
    if tuple(variants) == (v.name,):
        return ""
    return f"{variant_name(v)} ({v.quality}): "


def _auto_why(mode: str, needs: dict) -> str:
    if mode == "none":
        return f"everything on the GPU needs ~{_gib(needs['none'])}"
    if mode == "model":
        return f"everything on the GPU would need ~{_gib(needs['none'])}"
    return f"model offload would need ~{_gib(needs['model'])}"


def variants_for(
    licence: str = "any", installed: Optional[Iterable[str]] = None, *, backend: Optional[str] = None
) -> tuple[list[str], list[str], list[str]]:
    """(variants a run may use, variants it could fetch, registry models present): the variants the licence
    allows (commercial: only permissively licensed ones), split by whether their weights are all present.
    `installed`: registry models known to be present (default: looked up on disk, no hashing); `backend`:
    only that backend's variants."""
    allowed = [
        n
        for n in QUALITY_ORDER
        if (licence != "commercial" or INPAINT_VARIANTS[n].commercial)
        and (backend is None or INPAINT_VARIANTS[n].backend == backend)
    ]
    if installed is None:
        installed = _present_models({m for n in allowed for m in INPAINT_VARIANTS[n].fetch} | {"flux-fill"})
    have = set(installed)
    ready = [n for n in allowed if all(m in have for m in _needs_present(n, have))]
    return ready, [n for n in allowed if n not in ready], sorted(have)


def _needs_present(name: str, have: set) -> tuple[str, ...]:
    """The registry models a variant must find: a GGUF variant reads the AE of an installed bf16 flux-fill too."""
    fetch = INPAINT_VARIANTS[name].fetch
    if "flux-ae" in fetch and "flux-fill" in have:
        return tuple(m for m in fetch if m != "flux-ae")
    return fetch


def _present_models(models: set) -> set:
    from vd.fetch.registry import known_models, status

    names = [m for m in models if m in set(known_models())]
    return {r["model"] for r in status(names) if r["state"] == "present"} if names else set()


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
    flux: bool = True,
    depth: bool = False,
    variants: Sequence[str] = ("bf16",),
    depth_model: str = "vitl",
    **plan_options,
) -> Placement:
    """`plan` with the free memory of `device` (`plan_options`: budget, work_pixels, view_pixels, offer, have); on a
    CPU device everything stays on the CPU."""
    cuda = str(device).startswith("cuda")
    if cuda:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        mode = "none" if requested == "auto" else requested
        v = INPAINT_VARIANTS[next((n for n in QUALITY_ORDER if n in variants), "bf16")] if flux else None
        return Placement(
            mode,
            False,
            f"no CUDA device ({device}): models run on the CPU",
            True,
            on_gpu=False,
            depth_model=depth_model if depth else None,
            **(_variant_fields(v) if v is not None else {}),
        )
    free, total, allocated = read_vram(device)
    return plan(
        free,
        total,
        allocated=allocated,
        requested=requested,
        flux=flux,
        depth=depth,
        variants=variants,
        depth_model=depth_model,
        **plan_options,
    )


INPAINTERS = ("flux-fill", "flux2-klein")  # the inpaint backends the plan places (the classical ones need no GPU)


def inpaint_variants(inpaint_backend, licence: str = "any") -> tuple[list[str], list[str], list[str]]:
    """`variants_for` a built inpaint backend: its fixed --quant, or with --quant auto every installed
    quantisation of FLUX.1-Fill-dev."""
    name = getattr(inpaint_backend, "name", None)
    if name == "flux2-klein":
        return ["klein"], [], []
    quant = getattr(inpaint_backend, "quant", "bf16")
    if quant != "auto":
        return [quant], [], []
    ready, offer, have = variants_for(licence, backend="flux-fill")
    return ready or ["bf16"], offer, have


def configure(depth_backend, inpaint_backend, *, device, budget: Optional[int] = None, licence: str = "any") -> dict:
    """Plan the GPU memory of a stage before its models load, apply it to the backends, say it on stderr.

    Sets the inpainter's offload mode when it is "auto" (and, for flux-fill with --quant auto, records
    the chosen quantisation in its placement) and moves the depth model to the CPU when it does not
    fit. Returns the placement as JSON (for summary.json)."""

    flux = getattr(inpaint_backend, "name", None) in INPAINTERS
    depth = getattr(depth_backend, "name", None) == "moge"
    requested = getattr(inpaint_backend, "offload", "auto") if flux else "auto"
    variants, offer, have = inpaint_variants(inpaint_backend, licence) if flux else (["bf16"], [], [])
    depth_model = getattr(depth_backend, "model", "vitl") if depth else "vitl"
    p = place(
        device,
        requested=requested,
        budget=budget,
        flux=flux,
        depth=depth,
        variants=variants,
        offer=offer,
        depth_model=depth_model,
        have=have,
    )
    if flux:
        inpaint_backend.offload = p.offload
        inpaint_backend.placement = p.to_json()
    if depth and not p.depth_on_gpu:
        depth_backend._device = "cpu"
    if p.on_gpu and (flux or depth):
        (log.info if p.fits else log.warning)(f"GPU memory: {p.reason}")
        if p.hint:
            log.info(f"GPU memory: {p.hint}")
    return p.to_json()


__all__ = [
    "Footprints",
    "FOOTPRINTS",
    "Placement",
    "plan",
    "place",
    "read_vram",
    "configure",
    "inpaint_variants",
    "variants_for",
    "variant_name",
    "INPAINTERS",
]
