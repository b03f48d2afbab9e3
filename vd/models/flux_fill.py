"""The `flux-fill` inpaint backend: FLUX.1-Fill-dev through diffusers, without any text encoder.

It follows the BFL reference sampler that the VistaDream port uses (docs/upstream.md#flux-fill-sampler),
with its bugs fixed: the seed comes from the caller (one noise per stage key, not one fixed noise
for every call), `steps`/`guidance`/`offload` are really used, and nothing is left on the GPU
after a call unless the memory plan keeps the model resident.

The pieces live in modules named for their job, re-exported here for the callers that build
samplers from them (the fine stage, the benches):
- `vd.models.flux_sampling`: schedule, time shift, latent packing, position ids, mask tokens;
- `vd.models.flux_loading`: the single-file loaders and the prompt embeddings;
- `vd.models.flux_offload`: CPU-owned weights, per-block hooks, offload units;
- `vd.models.flux_model`: `FluxFill`, the loaded model and its building blocks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from vd import console
from vd.cache import file_hash
from vd.errors import MissingWeightsError, UsageError
from vd.models.flux_gguf import GGUF_FILES, resolve_quant, weights_for
from vd.models.flux_loading import config_dir, load_ae, load_transformer
from vd.models.flux_model import FluxFill
from vd.models.flux_offload import SequentialOffload, transformer_units
from vd.models.flux_sampling import (
    LATENT_CHANNELS,
    VAE_FACTOR,
    latent_image_ids,
    mask_tokens,
    pack_latents,
    schedule,
    shift_mu,
    time_shift,
    unpack_latents,
)
from vd.models.footprints import QUANT_OF_VARIANT
from vd.models.inpaint import InpaintBackend, as_tensors, check_inputs, keep_unmasked, pad_to_multiple
from vd.models.memory import release_torch_memory
from vd.models.offload import DEFAULT_WORK_PIXELS, inpaint_variants, place
from vd.params import FLUX_QUANTS

log = logging.getLogger(__name__)


class FluxFillInpaint(InpaintBackend):
    name = "flux-fill"
    registry_models: tuple[str, ...] = ("flux-fill", "flux-prompt")

    def __init__(
        self,
        *,
        device=None,
        offload: str = "auto",
        steps: int = 25,
        guidance: float = 30.0,
        auto_fetch=None,
        paths: Optional[dict] = None,
        config=None,
        vram_budget: Optional[int] = None,
        quant: str = "auto",
    ):
        """`paths` (transformer, ae, txt, vec) and `config` (a folder with transformer/ and vae/)
        override the registry and the bundled configs (tests use tiny models this way).
        offload "auto" is decided from the free VRAM (capped at `vram_budget` bytes) when the model loads.
        `quant`: "bf16" (flux-fill), "q8_0" | "q5_k" | "q4_k" (GGUF, `vd.models.flux_gguf`), or "auto":
        the memory plan's `placement["quant"]` when it set one, else the best installed."""
        if quant not in FLUX_QUANTS:
            raise UsageError(f"--quant must be one of {', '.join(FLUX_QUANTS)}, got {quant!r}")
        self.quant = quant
        self._device = device
        self.offload = offload
        self.vram_budget = vram_budget
        self.work_pixels: Optional[int] = None  # views x height x width of a call, when known before loading
        self.view_pixels: Optional[int] = None  # height x width of one of its views
        self.placement: Optional[dict] = None  # the vd.models.offload decision, for summaries
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.auto_fetch = auto_fetch
        self._paths = dict(paths) if paths else None
        self.config = config
        self._ff: Optional[FluxFill] = None
        self._identity: Optional[str] = None
        self._quant: Optional[str] = None  # resolved from `quant` on first use
        self._models: Optional[list] = None  # registry models the paths came from (None: given paths)

    @property
    def resolved_quant(self) -> str:
        """The quant this backend loads ("bf16" | "q8_0" | "q5_k" | "q4_k"), decided once."""
        if self._quant is None:
            if self.quant == "auto" and self._paths is not None:  # given files: the transformer's format says
                name = Path(self._paths["transformer"]).name
                gguf = [q for q, (_, file) in GGUF_FILES.items() if file == name]
                self._quant = gguf[0] if gguf else ("gguf" if name.lower().endswith(".gguf") else "bf16")
            else:
                if self.quant == "auto" and self.placement is None:
                    self._place()  # the plan picks among the installed quantisations
                self._quant = resolve_quant(self.quant, self.placement)
        return self._quant

    def paths(self) -> dict:
        if self._paths is None:
            try:
                from vd.fetch.registry import require_all
            except ImportError:  # pragma: no cover
                raise MissingWeightsError(
                    "FLUX.1-Fill-dev weights are missing; run: vd fetch flux-fill flux-prompt"
                ) from None
            quant = self.resolved_quant
            models = weights_for(quant)
            files = require_all(models, auto_fetch=self.auto_fetch)
            if quant == "bf16":
                transformer = files["flux-fill"]["flux1-fill-dev.safetensors"]
            else:
                model, name = GGUF_FILES[quant]
                transformer = files[model][name]
            if "flux-ae" in files or "flux-fill" in files:
                ae = files["flux-ae" if "flux-ae" in files else "flux-fill"]["ae.safetensors"]
            else:  # a GGUF transformer beside the bf16 model's autoencoder (weights_for found it there)
                from vd.fetch.registry import model_dir

                ae = model_dir("flux-fill") / "ae.safetensors"
            self._paths = {
                "transformer": transformer,
                "ae": ae,
                "txt": files["flux-prompt"]["txt.pt"],
                "vec": files["flux-prompt"]["vec.pt"],
            }
            self._models = models
            self.registry_models = tuple(models)  # the quantisation's own files, for summary.json's licences
        return self._paths

    def _compute_identity(self) -> str:
        if self._identity is None:
            paths = self.paths()  # fails first with the fetch command when missing
            ids = None
            quant = self.resolved_quant
            try:
                from vd.fetch.registry import model_spec, weights_id

                if self._models is not None:  # from the registry: the weights ids of every model used
                    ids = "+".join(weights_id(m) for m in self._models)
                    if quant != "bf16" and "flux-ae" not in self._models:  # flux-fill's autoencoder
                        ae_sha = next(f.sha256 for f in model_spec("flux-fill").files if f.name == "ae.safetensors")
                        ids += f"+flux-fill:ae.safetensors={(ae_sha or file_hash(paths['ae']))[:16]}"
            except ImportError:  # pragma: no cover
                pass
            if ids is None:
                ids = "flux-fill:" + ",".join(f"{k}={file_hash(p)[:16]}" for k, p in sorted(paths.items()))
            dt = "bf16" if self.device.startswith("cuda") else "fp32"
            # bf16 keeps the key it always had; a quantised transformer adds its quant (and its file's id above)
            q = "" if quant == "bf16" else f":quant={quant}"
            self._identity = f"{ids}:steps={self.steps}:guidance={self.guidance}:{dt}{q}"
        return self._identity

    def _load(self) -> FluxFill:
        if self._ff is None:
            p = self.paths()
            if self.offload == "auto" or self.placement is None:  # a fixed mode still plans views per call
                self._place()
            q = "" if self.resolved_quant == "bf16" else f", {self.resolved_quant} GGUF"
            with console.status(f"loading FLUX.1-Fill-dev (offload={self.offload}{q}) on {self.device}"):
                self._ff = self._build(p)
        return self._ff

    def _build(self, p: dict) -> FluxFill:
        return FluxFill.load(
            p["transformer"],
            p["ae"],
            p["txt"],
            p["vec"],
            device=self.device,
            offload=self.offload,
            config=self.config,
            evict_for_ae=self.evict_for_ae,
        )

    @property
    def evict_for_ae(self) -> bool:
        """Whether model offload must move the transformer off for the AE (from the memory plan)."""
        return bool((self.placement or {}).get("evict_for_ae", True))

    def _place(self) -> None:
        """The memory plan for this backend: its offload mode and, with --quant auto, which installed
        quantisation fits best (vd.models.offload)."""
        if self._paths is None and self.quant == "auto":
            variants, offer, have = inpaint_variants(self)
        else:
            q = self.resolved_quant
            variants, offer, have = [q if q in QUANT_OF_VARIANT else "q8_0"], [], []  # "gguf": an unnamed file
        pl = place(
            self.device,
            requested=self.offload,
            budget=self.vram_budget,
            work_pixels=self.work_pixels or DEFAULT_WORK_PIXELS,
            view_pixels=self.view_pixels,
            variants=variants,
            offer=offer,
            have=have,
        )
        self.offload, self.placement = pl.offload, pl.to_json()
        if pl.on_gpu:
            (log.info if pl.fits else log.warning)(f"GPU memory: {pl.reason}")
            if pl.hint:
                log.info(f"GPU memory: {pl.hint}")

    @property
    def flux(self) -> FluxFill:
        """The loaded building blocks (loads on first access)."""
        return self._load()

    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:
        rgb, mask = check_inputs(rgb, mask)
        if not mask.any():
            return rgb.copy()
        H, W = rgb.shape[:2]
        img, m = pad_to_multiple(rgb, mask)  # the padding is generated, then cropped away
        ff = self._load()
        x, mt = as_tensors(img, m)
        x = x * 2.0 - 1.0  # Flux Fill works in [-1, 1]
        with console.Bar(f"FLUX.1-Fill: inpainting {W}x{H}", self.steps) as bar:
            out = ff.sample(
                x, mt, seed=seed, steps=self.steps, guidance=self.guidance, callback=lambda done, _: bar.update(done)
            )
        out8 = ((out[0].permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        return keep_unmasked(rgb, out8[:H, :W], mask)

    def release(self) -> None:
        if self._ff is not None:
            self._ff.park()
            self._ff.close()
            self._ff = None

            release_torch_memory()


__all__ = [
    "FluxFill",
    "FluxFillInpaint",
    "SequentialOffload",
    "load_transformer",
    "load_ae",
    "schedule",
    "time_shift",
    "shift_mu",
    "pack_latents",
    "unpack_latents",
    "latent_image_ids",
    "mask_tokens",
    "transformer_units",
    "config_dir",
    "LATENT_CHANNELS",
    "VAE_FACTOR",
]
