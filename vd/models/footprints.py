"""How much GPU memory each model vd can run holds: the figures the memory plan (vd.models.offload) works from.

The peaks they add up to are ESTIMATES until bench/gpu/run.sh measures them on a GPU (bench/gpu.md).
The weights are checked: each transformer's bytes below agree within 3 % with the model diffusers
builds from vd's configs (bf16 parameter counts; the GGUF ones built with random blocks in the real
layout, on the CPU: bench/gpu.md "Weights"). Activations are an allowance per megapixel of work; every
call's tensors, traced at full size on the CPU (bench/gpu/traced.py), stay under it (2.4-8x below for the
inpainters; the AE decode comes closest), which leaves room for what a GPU adds and a trace cannot see.
They are data, apart from the rules that use them, so a measurement replaces a number here and
nothing else.

    v = INPAINT_VARIANTS["q8_0"]         # an inpainter's weights: transformer, AE, largest offload unit
    FOOTPRINTS.for_variant(v).need("model", work_pixels, view_pixels)   # peak bytes of a stage in that mode
    DEPTH_BYTES["vitb"]                  # a MoGe-2 size, weights and activations
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from vd.models.flux_gguf import GGUF_DEQUANT_TRANSIENT_BYTES, GGUF_LARGEST_UNIT_BYTES, GGUF_TRANSFORMER_BYTES

GIB = 2**30
_GB = 1e9  # the publishers' file sizes are decimal gigabytes


@dataclass(frozen=True)
class InpaintVariant:
    """One inpainter that fits a card differently: which backend runs it, which weights it reads."""

    name: str  # bf16 | q8_0 | q5_k | q4_k | klein
    backend: str  # the inpaint backend: flux-fill | flux2-klein
    weights: str  # its registry model (vd fetch NAME)
    fetch: tuple[str, ...]  # every registry model it needs (vd fetch ...)
    commercial: bool  # whether its licence allows commercial use
    transformer: int  # bytes on the GPU while resident (GGUF: quantised blocks + one dequantised layer)
    block: int  # the largest sequential-offload unit
    ae: int
    text_encoder: int = 0  # loaded only on a prompt-embedding cache miss, freed before the transformer
    quality: str = ""  # one phrase for the plan's reason
    # the transformer's activations per megapixel of one batched call (views x height x width)
    transformer_per_mpx: int = int(1.5 * GIB)


# GGUF weights stay quantised on the GPU; each layer is dequantised for its own matmul (vd.models.flux_gguf)
_DEQUANT = GGUF_DEQUANT_TRANSIENT_BYTES
_FLUX_AE = 167_639_366  # the Flux autoencoder in bf16: 83.8 M parameters (ae.safetensors is 335 MB in fp32)
_FILL = ("flux-prompt",)


def _gguf(quant: str, model: str, quality: str) -> InpaintVariant:
    """FLUX.1-Fill-dev with a GGUF transformer (vd.models.flux_gguf): the bf16 AE beside it."""
    return InpaintVariant(
        quant,
        "flux-fill",
        model,
        (model, "flux-ae", *_FILL),
        False,
        GGUF_TRANSFORMER_BYTES[quant] + _DEQUANT,
        GGUF_LARGEST_UNIT_BYTES[quant] + _DEQUANT,
        _FLUX_AE,
        quality=quality,
    )


INPAINT_VARIANTS: dict[str, InpaintVariant] = {
    v.name: v
    for v in (
        InpaintVariant(
            "bf16",
            "flux-fill",
            "flux-fill",
            ("flux-fill", *_FILL),
            False,
            23_804_782_720,  # 11,902,391,360 parameters in bf16 (the 23.8 GB file)
            679_662_592,  # one double-stream block
            _FLUX_AE,
            quality="full precision",
        ),
        _gguf("q8_0", "flux-fill-q8", "8-bit, close to full precision"),
        _gguf("q5_k", "flux-fill-q5k", "5-bit"),
        _gguf("q4_k", "flux-fill-q4k", "4-bit"),
        InpaintVariant(
            "klein",
            "flux2-klein",
            "flux2-klein",
            ("flux2-klein", "flux2-klein-text"),
            True,
            7_751_089_152,  # 3,875,544,576 parameters in bf16 (flux-2-klein-4b.safetensors: 7.75 GB)
            # one double-stream block (hidden 3072, MLP ratio 3): 2 x (4 + 9) x 3072^2 weights in bf16
            2 * (4 + 9) * 3072 * 3072 * 2,
            168_092_230,  # AutoencoderKLFlux2, 84.0 M parameters in bf16
            text_encoder=int(8.05 * _GB) + int(0.5 * GIB),  # Qwen3-4B (4.97 + 3.08 GB shards) and a 512-token pass
            quality="Apache-2.0, 4 steps",
            transformer_per_mpx=3 * GIB,  # the image rides along as reference tokens: twice the sequence
        ),
    )
}
# what the plan tries first: quality, then size (a FLUX.1-Fill quantisation beats FLUX.2 [klein] at inpainting)
QUALITY_ORDER = ("bf16", "q8_0", "q5_k", "q4_k", "klein")
# block by block the weights cross the bus at every step: fewer bytes first, above 5 bits
SEQUENTIAL_ORDER = ("q8_0", "bf16", "q5_k", "q4_k", "klein")
QUANT_OF_VARIANT = {"bf16": "bf16", "q8_0": "q8_0", "q5_k": "q5_k", "q4_k": "q4_k"}

# MoGe-2 with its normal head: the published model.pt weights (fp32), plus what its forward holds at resolution
# level 9 (3600 tokens). Traced at full size (bench/gpu.md, "What each model call allocates"), the forward holds
# 0.49 GiB in fp16 and 0.98 GiB in fp32, whatever the backbone and the image size: its heads, at 16x the token
# grid, hold most of it. Autocast computes between the two; the allowance is the fp32 figure and a quarter more.
DEPTH_WEIGHTS_BYTES = {"vitl": 1_324_000_000, "vitb": 420_000_000, "vits": 141_000_000}
DEPTH_ACTIVATIONS_BYTES = int(1.25 * GIB)
DEPTH_BYTES = {size: w + DEPTH_ACTIVATIONS_BYTES for size, w in DEPTH_WEIGHTS_BYTES.items()}


@dataclass(frozen=True)
class Footprints:
    """Bytes each piece holds on the GPU for one inpainter (default: FLUX.1-Fill-dev in bf16)."""

    transformer: int = INPAINT_VARIANTS["bf16"].transformer
    ae: int = INPAINT_VARIANTS["bf16"].ae
    block: int = INPAINT_VARIANTS["bf16"].block
    activations_fixed: int = int(0.5 * GIB)
    # per megapixel: of a whole batched transformer call (views x height x width), and of one view through the
    # AE, which encodes and decodes a batch a view at a time (its decoder holds the most per pixel)
    transformer_per_mpx: int = INPAINT_VARIANTS["bf16"].transformer_per_mpx
    ae_per_mpx: int = 3 * GIB
    depth: int = DEPTH_BYTES["vitl"]
    scene: int = 1 * GIB  # Gaussians and optimiser state, resident for the whole stage
    render: int = 1 * GIB  # render and gradient buffers while optimising

    def for_variant(self, v: InpaintVariant, depth_model: Optional[str] = None) -> Footprints:
        depth = self.depth if depth_model is None else DEPTH_BYTES[depth_model]
        return replace(
            self,
            transformer=v.transformer,
            ae=v.ae,
            block=v.block,
            depth=depth,
            transformer_per_mpx=v.transformer_per_mpx,
        )

    def activations(self, work_pixels: int, view_pixels: Optional[int] = None) -> int:
        """Bytes of the inpainter's activations for a call on `work_pixels` (views x height x width), in views
        of `view_pixels` (default: one view of all of them)."""
        view = work_pixels if view_pixels is None else min(view_pixels, work_pixels)
        per_call = max(self.transformer_per_mpx * work_pixels, self.ae_per_mpx * view)
        return self.activations_fixed + int(per_call / 1e6)

    def need(self, mode: str, work_pixels: int, view_pixels: Optional[int] = None) -> int:
        """Peak bytes of a stage with the inpainter in `mode` (the depth model not included). "model-resident":
        model offload that keeps the transformer and the AE on the GPU between calls; the AE's
        activations and the render buffers are never live at once, so the larger of the two counts."""
        act = self.activations(work_pixels, view_pixels)
        if mode == "model-resident":
            return self.transformer + self.ae + max(act, self.render) + self.scene
        if mode == "none":  # the inpainter stays resident while the scene is optimised
            return self.transformer + self.ae + act + self.scene + self.render
        # evicting model offload and sequential offload park the inpainter on the CPU after every call, so it
        # never meets the render buffers ("model-resident" keeps it, see vd.models.offload.plan)
        flux = max(self.transformer, self.ae) + act if mode == "model" else self.block + self.ae + act
        return max(flux, self.render) + self.scene


FOOTPRINTS = Footprints()

__all__ = [
    "GIB",
    "InpaintVariant",
    "INPAINT_VARIANTS",
    "QUALITY_ORDER",
    "SEQUENTIAL_ORDER",
    "QUANT_OF_VARIANT",
    "DEPTH_BYTES",
    "DEPTH_WEIGHTS_BYTES",
    "DEPTH_ACTIVATIONS_BYTES",
    "Footprints",
    "FOOTPRINTS",
]
