"""The `flux2-klein` inpaint backend: FLUX.2 [klein] 4B (Apache-2.0, commercial use allowed) through
diffusers' `Flux2KleinInpaintPipeline`, 4 steps, with a cached prompt embedding and no text encoder
beside the transformer.

Weights: `vd fetch flux2-klein` (transformer + autoencoder, ~7.9 GB), and `vd fetch flux2-klein-text`
(the Qwen3-4B text encoder, ~8.1 GB), which is needed only the first time a prompt is embedded
(`vd.models.flux2_klein_prompt`). The prompt is "" (as Flux Fill's precomputed embeddings): vd asks
the model to continue the picture, not to draw something described.

Holes are generated at strength 1.0 (pure noise inside them); known pixels are re-imposed on the
latents every step by the pipeline and pasted back exactly afterwards. The image given to the
pipeline, which it also uses as its reference tokens, has its holes filled with mid-grey (the
convention of Flux Fill's masked image), so the reference does not show whatever garbage a render
left there. The step-distilled model ignores guidance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from vd import console
from vd.cache import file_hash
from vd.errors import MissingWeightsError
from vd.models.inpaint import InpaintBackend, as_tensors, check_inputs, keep_unmasked, pad_to_multiple
from vd.models.memory import release_torch_memory
from vd.models.offload import DEFAULT_WORK_PIXELS, place

log = logging.getLogger(__name__)

MODEL = "flux2-klein"
TEXT_MODEL = "flux2-klein-text"
DEFAULT_STEPS = 4
DEFAULT_PROMPT = ""
TRANSFORMER_FILE = "flux-2-klein-4b.safetensors"
VAE_FILE = "vae.safetensors"


class Flux2KleinInpaint(InpaintBackend):
    name = MODEL
    registry_models: tuple[str, ...] = (
        MODEL,
        TEXT_MODEL,
    )  # the embedding comes from the text encoder: its licence counts too

    def __init__(
        self,
        *,
        device=None,
        offload: str = "auto",
        steps: int = DEFAULT_STEPS,
        prompt: str = DEFAULT_PROMPT,
        auto_fetch=None,
        paths: Optional[dict] = None,
        config=None,
        vram_budget: Optional[int] = None,
    ):
        """`paths` (transformer, vae; optionally text, a folder with the encoder files) and `config`
        (a folder with transformer/, vae/, scheduler/) override the registry and the bundled configs."""
        self._device = device
        self.offload = offload
        self.vram_budget = vram_budget
        self.work_pixels: Optional[int] = None  # views x height x width of a call, when known before loading
        self.view_pixels: Optional[int] = None  # height x width of one of its views
        self.placement: Optional[dict] = None
        self.steps = int(steps)
        self.prompt = str(prompt)
        self.auto_fetch = auto_fetch
        self._paths = dict(paths) if paths else None
        self.config = config
        self._model = None
        self._emb = None
        self._identity: Optional[str] = None

    def paths(self) -> dict:
        if self._paths is None:
            from vd.fetch.registry import require

            files = require(MODEL, auto_fetch=self.auto_fetch)
            self._paths = {"transformer": files[TRANSFORMER_FILE], "vae": files[VAE_FILE]}
        return self._paths

    def _compute_identity(self) -> str:
        paths = self.paths()  # fails first with the fetch command when missing
        ids = None
        from vd.fetch.registry import model_dir, weights_id

        if Path(paths["transformer"]).resolve().parent == model_dir(MODEL).resolve():
            ids = weights_id(MODEL)
        if ids is None:
            ids = f"{MODEL}:" + ",".join(
                f"{k}={file_hash(p)[:16]}" for k, p in sorted(paths.items()) if k in ("transformer", "vae")
            )
        dt = "bf16" if self.device.startswith("cuda") else "fp32"
        from vd.cache import content_hash

        emb = content_hash(self.embedding().numpy())[:16]  # what the text encoder made of the prompt
        return f"{ids}:steps={self.steps}:prompt={self.prompt!r}:emb={emb}:{dt}"

    def embedding(self):
        """The prompt embedding (cached; the text encoder runs, then is freed, only on a cache miss)."""
        if self._emb is None:
            from vd.models.flux2_klein_prompt import prompt_embedding

            text = (self._paths or {}).get("text")
            if self.placement is None:
                self._place()
            on_gpu = (self.placement or {}).get("text_encoder_on_gpu")
            device = "cpu" if on_gpu is False else self.device  # too large beside nothing: once, on the CPU
            self._emb = prompt_embedding(self.prompt, device=device, auto_fetch=self.auto_fetch, text_dir=text)
        return self._emb

    def _place(self) -> None:
        """The memory plan (vd.models.offload) for FLUX.2 [klein]: its offload mode when "auto", and
        where its text encoder runs on a prompt cache miss."""
        pl = place(
            self.device,
            requested=self.offload,
            budget=self.vram_budget,
            work_pixels=self.work_pixels or DEFAULT_WORK_PIXELS,
            view_pixels=self.view_pixels,
            variants=["klein"],
        )
        self.offload, self.placement = pl.offload, pl.to_json()
        if pl.on_gpu:
            (log.info if pl.fits else log.warning)(f"GPU memory: {pl.reason}")

    def _load(self):
        if self._model is None:
            from vd.models.flux2_klein_loading import load_scheduler, load_transformer, load_vae, require_klein_code
            from vd.models.flux2_klein_model import Flux2Klein

            require_klein_code()
            p = self.paths()
            import torch

            if self.offload == "auto":
                self._place()
            emb = self.embedding()  # the text encoder (only on a cache miss) is freed before the transformer loads
            dt = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            cfg = Path(self.config) if self.config is not None else None
            with console.status(f"loading FLUX.2 [klein] 4B (offload={self.offload}) on {self.device}"):
                tr = load_transformer(p["transformer"], config=cfg / "transformer" if cfg else None, dtype=dt)
                vae = load_vae(p["vae"], config=cfg / "vae" if cfg else None, dtype=dt)
                sched = load_scheduler(cfg / "scheduler" if cfg else None)
                self._check_embedding(emb, tr)
                self._model = Flux2Klein(tr, vae, sched, emb, device=self.device, dtype=dt, offload=self.offload)
        return self._model

    @staticmethod
    def _check_embedding(emb, transformer) -> None:
        from vd.errors import VdError

        want = int(transformer.config.joint_attention_dim)
        if emb.ndim != 3 or emb.shape[-1] != want:
            raise VdError(
                f"the FLUX.2 [klein] prompt embedding {tuple(emb.shape)} does not fit the transformer "
                f"(context {want}); the text encoder files do not belong to this model: "
                "re-fetch with: vd fetch flux2-klein-text --force"
            )

    @property
    def klein(self):
        """The loaded model and its building blocks (loads on first access)."""
        return self._load()

    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:
        rgb, mask = check_inputs(rgb, mask)
        if not mask.any():
            return rgb.copy()
        H, W = rgb.shape[:2]
        img, m = pad_to_multiple(rgb, mask)  # the padding is generated, then cropped away
        kl = self._load()
        x, mt = as_tensors(img, m)
        x = x * (1.0 - mt) + 0.5 * mt  # holes mid-grey in the image and in its reference tokens
        out = kl.inpaint(x, mt, seed=seed, steps=self.steps)[0]
        if out.shape[:2] != img.shape[:2]:  # the pipeline works at most at ~1 MP
            import cv2

            out = cv2.resize(out, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)
        out8 = (out * 255.0).round().clip(0, 255).astype(np.uint8)
        return keep_unmasked(rgb, out8[:H, :W], mask)

    def release(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
            release_torch_memory()


def klein_weights_available() -> bool:
    """Whether the flux2-klein transformer and autoencoder are on disk (nothing is downloaded)."""
    from vd.fetch.registry import require

    try:
        require(MODEL, auto_fetch=False)
        return True
    except MissingWeightsError:
        return False


__all__ = [
    "Flux2KleinInpaint",
    "klein_weights_available",
    "DEFAULT_STEPS",
]
