"""FLUX.1-Fill-dev inpainting through diffusers, without any text encoder.

The backend (`FluxFillInpaint`, name `flux-fill`) follows the BFL reference sampler that the
VistaDream port uses (docs/upstream.md#flux-fill-sampler), with its bugs fixed: the seed comes from the caller (one
noise per stage key, not one fixed noise for every call), `steps`/`guidance`/`offload` are
really used, and nothing is left on the GPU after a call in the offload modes.

Reusable building blocks (the fine stage builds its multi-view sampler from these):

    ff = FluxFill.load(transformer_path, ae_path, txt_path, vec_path, device="cuda", offload="model")
    z    = ff.encode(images)                  # [B,3,H,W] in [-1,1] -> [B,16,H/8,W/8], scaled+shifted
    imgs = ff.decode(z)                       # inverse, [-1,1]
    tok  = pack_latents(z); z = unpack_latents(tok, H/8, W/8)   # 2x2 patches <-> [B, L, 64]
    cond = ff.condition(images, masks)        # [B, L, 320]: masked-image latent (64) + mask (256)
    ts   = schedule(steps, L)                 # steps+1 time-shifted sigmas from 1 to 0
    v    = ff.velocity(x_t, t, cond)          # one batched transformer call -> [B, L, 64]
    x0   = ff.denoise(x_T, cond, ts)          # Euler: x <- x + (t_next - t) * v
    x_T  = ff.noise(B, H, W, seed)            # packed N(0,1) noise from a CPU generator (device-independent)
    out  = ff.sample(images, masks, seed=..., steps=25, guidance=30.0)   # all of the above

Checkpoints: `flux1-fill-dev.safetensors` (BFL layout; a diffusers-layout single file works too)
and `ae.safetensors` (LDM layout), read by diffusers' `from_single_file` with the configs bundled
in `vd/assets/flux-fill/` (offline, `local_files_only=True`). Empty-prompt embeddings `txt.pt`
(T5, [1,512,4096]) and `vec.pt` (CLIP pooled, [1,768]) come from `vd fetch flux-prompt` and are
read with `torch.load(weights_only=True)`.

Offload modes (`--offload`; the default `auto` picks one from the free VRAM when the model loads,
see `vd.models.offload`):
- `none`: transformer and AE live on the GPU (fastest; needs ~24 GB for the bf16 weights alone);
- `model`: whole modules move GPU<->CPU around their use (AE for encode, transformer for the
  denoising loop, AE for decode); peak ~ the transformer's 22.2 GiB plus activations;
- `sequential`: the transformer stays on the CPU and each block moves to the GPU just for its
  own forward (forward pre/post hooks); peak ~ one block plus activations, slower.
"""

from __future__ import annotations

import gc
import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from vd import console
from vd.cache import file_hash
from vd.errors import MissingWeightsError, VdError
from vd.models.inpaint import InpaintBackend, check_inputs, keep_unmasked
from vd.models.memory import release_torch_memory
from vd.models.offload import DEFAULT_WORK_PIXELS, place

log = logging.getLogger(__name__)

BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
BASE_SEQ, MAX_SEQ = 256, 4096
LATENT_CHANNELS = 16
VAE_FACTOR = 8


def config_dir() -> Path:
    """The bundled diffusers configs (`transformer/config.json`, `vae/config.json`)."""
    return Path(__file__).resolve().parents[1] / "assets" / "flux-fill"


# --------------------------------------------------------------------------- schedule
def time_shift(mu: float, t):
    """BFL time shift: t' = e^mu / (e^mu + (1/t - 1)); t = 0 stays 0, t = 1 stays 1."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))
    return np.where(t <= 0, 0.0, out)


def shift_mu(image_seq_len: int) -> float:
    """mu linear in the token count through (256, 0.5) and (4096, 1.15)."""
    m = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ - BASE_SEQ)
    return m * image_seq_len + (BASE_SHIFT - m * BASE_SEQ)


def schedule(num_steps: int, image_seq_len: int) -> list[float]:
    """num_steps + 1 sigmas, linearly spaced from 1 to 0 then time-shifted (BFL `get_schedule`)."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    t = np.linspace(1.0, 0.0, num_steps + 1)
    return [float(x) for x in time_shift(shift_mu(image_seq_len), t)]


# --------------------------------------------------------------------------- packing
def pack_latents(z):
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C] (2x2 patches, channel-major within a patch)."""
    B, C, h, w = z.shape
    z = z.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(B, (h // 2) * (w // 2), C * 4)


def unpack_latents(tokens, h: int, w: int):
    """[B, (h/2)(w/2), 4C] -> [B, C, h, w]; h, w are latent sizes (image / 8)."""
    B, L, D = tokens.shape
    C = D // 4
    z = tokens.view(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return z.reshape(B, C, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=None):
    """[(h/2)(w/2), 3] position ids (0, row, col) of the packed tokens (h, w latent sizes)."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype or torch.float32)


def mask_tokens(masks):
    """[B, 1, H, W] float (1 = generate) -> [B, L, 256]: 8x8 pixel-unshuffle to 64 channels, then 2x2 pack."""
    B, _, H, W = masks.shape
    h, w = H // VAE_FACTOR, W // VAE_FACTOR
    m = masks[:, 0].reshape(B, h, VAE_FACTOR, w, VAE_FACTOR).permute(0, 2, 4, 1, 3)
    m = m.reshape(B, VAE_FACTOR * VAE_FACTOR, h, w)
    return pack_latents(m)


# --------------------------------------------------------------------------- loading
def _read_embedding(path, what: str):
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VdError(f"cannot read the {what} embedding {path} ({str(e).strip()[:120]}); re-fetch with: vd fetch flux-prompt --force") from None
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if hasattr(v, "shape")]
        if len(tensors) != 1:
            raise VdError(f"the {what} embedding {path} should hold one tensor, found {len(tensors)}")
        obj = tensors[0]
    if not hasattr(obj, "shape"):
        raise VdError(f"the {what} embedding {path} is not a tensor")
    return obj


def load_transformer(path, *, config=None, dtype=None):
    """FluxTransformer2DModel from a single-file checkpoint (BFL or diffusers layout), offline."""
    import torch
    from diffusers import FluxTransformer2DModel

    cfg = Path(config) if config is not None else config_dir() / "transformer"
    try:
        return FluxTransformer2DModel.from_single_file(
            str(path), config=str(cfg), local_files_only=True, torch_dtype=dtype or torch.bfloat16
        )
    except Exception as e:
        raise VdError(
            f"cannot load the FLUX.1-Fill-dev transformer from {path} ({str(e).strip().splitlines()[0][:160]}); "
            f"re-fetch with: vd fetch flux-fill --force"
        ) from None


def load_ae(path, *, config=None, dtype=None):
    """The Flux AutoencoderKL from `ae.safetensors` (LDM layout), offline."""
    import torch
    from diffusers import AutoencoderKL

    cfg = Path(config) if config is not None else config_dir() / "vae"
    try:
        return AutoencoderKL.from_single_file(str(path), config=str(cfg), local_files_only=True, torch_dtype=dtype or torch.bfloat16)
    except Exception as e:
        raise VdError(
            f"cannot load the Flux autoencoder from {path} ({str(e).strip().splitlines()[0][:160]}); re-fetch with: vd fetch flux-fill --force"
        ) from None


# --------------------------------------------------------------------------- offload
class _SequentialOffload:
    """Per-block GPU placement: each unit moves to `device` for its forward, then back to CPU."""

    def __init__(self, units: Sequence, device):
        self.handles = []

        def to_device(module, args):
            module.to(device)  # returns None: the hook must not replace the arguments

        def to_cpu(module, args, output):
            module.to("cpu")  # returns None: the hook must not replace the output

        for u in units:
            self.handles.append(u.register_forward_pre_hook(to_device))
            self.handles.append(u.register_forward_hook(to_cpu))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def transformer_units(transformer) -> list:
    """The transformer split into offload units: its blocks and its small top-level modules."""
    units = []
    for name, child in transformer.named_children():
        if name in ("transformer_blocks", "single_transformer_blocks"):
            units.extend(list(child))
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units


class FluxFill:
    """A loaded FLUX.1-Fill-dev (transformer + AE + empty-prompt embeddings) and its building blocks."""

    def __init__(self, transformer, ae, txt, vec, *, device="cpu", dtype=None, offload: str = "model"):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.offload = offload if self.device.type == "cuda" else "none"
        self.transformer = _cast(transformer, self.dtype).eval()
        self.ae = _cast(ae, self.dtype).eval()
        for m in (self.transformer, self.ae):
            for p in m.parameters():
                p.requires_grad_(False)
        txt = txt.float()
        vec = vec.float()
        self.txt = (txt[None] if txt.ndim == 2 else txt)[:1]
        self.vec = (vec[None] if vec.ndim == 1 else vec)[:1]
        cfg = self.transformer.config
        if self.txt.shape[-1] != cfg.joint_attention_dim or self.vec.shape[-1] != cfg.pooled_projection_dim:
            raise VdError(
                f"the prompt embeddings (txt {tuple(self.txt.shape)}, vec {tuple(self.vec.shape)}) do not match the "
                f"transformer (context {cfg.joint_attention_dim}, pooled {cfg.pooled_projection_dim})"
            )
        if cfg.in_channels != 4 * LATENT_CHANNELS + 4 * LATENT_CHANNELS + 4 * VAE_FACTOR * VAE_FACTOR:
            raise VdError(f"the transformer is not a Fill model: {cfg.in_channels} input channels, expected 384")
        self.scale = float(getattr(self.ae.config, "scaling_factor", 0.3611))
        self.shift = float(getattr(self.ae.config, "shift_factor", 0.1159) or 0.0)
        self._seq = None
        # model offload: move the transformer off the GPU whenever the AE runs (lowest peak, as
        # upstream). A sampler that interleaves velocity and decode calls (the fine stage) can set
        # this to False to keep the transformer resident until park() (+ the AE's activations).
        self.evict_for_ae = True
        if self.offload == "none":
            self.transformer.to(self.device)
            self.ae.to(self.device)
        elif self.offload == "sequential":
            self._seq = _SequentialOffload(transformer_units(self.transformer), self.device)

    @classmethod
    def load(cls, transformer_path, ae_path, txt_path, vec_path, *, device="cpu", dtype=None, offload="model",
             config=None):
        """Load from files; `config` is a folder with transformer/ and vae/ configs (default: bundled)."""
        import torch

        dev = torch.device(device)
        dt = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        cdir = Path(config) if config is not None else config_dir()
        transformer = load_transformer(transformer_path, config=cdir / "transformer", dtype=dt)
        ae = load_ae(ae_path, config=cdir / "vae", dtype=dt)
        txt = _read_embedding(txt_path, "T5 (txt.pt)")
        vec = _read_embedding(vec_path, "CLIP (vec.pt)")
        return cls(transformer, ae, txt, vec, device=dev, dtype=dt, offload=offload)

    # ---- placement
    def _use(self, which: str):
        """Make `which` ("ae" or "transformer") ready on the device according to the offload mode."""
        if self.offload == "model":
            other = self.transformer if which == "ae" else self.ae
            evict = which == "transformer" or self.evict_for_ae
            if evict and next(other.parameters()).device != _cpu():
                other.to("cpu")
                _empty_cache()
            mod = self.ae if which == "ae" else self.transformer
            if next(mod.parameters()).device != self.device:
                mod.to(self.device)
        elif self.offload == "sequential" and which == "ae":
            self.ae.to(self.device)
        return self.ae if which == "ae" else self.transformer

    def park(self) -> None:
        """Move everything back to the CPU (offload modes) and return cached GPU memory."""
        if self.offload in ("model", "sequential"):
            self.ae.to("cpu")
            if self.offload == "model":
                self.transformer.to("cpu")
        _empty_cache()

    def close(self) -> None:
        if self._seq is not None:
            self._seq.remove()
            self._seq = None
        self.transformer = None
        self.ae = None

    # ---- building blocks
    def encode(self, images):
        """[B,3,H,W] in [-1,1] -> scaled, shifted latents [B,16,H/8,W/8] (posterior mean), float32."""
        import torch

        ae = self._use("ae")
        with torch.inference_mode():
            z = ae.encode(images.to(self.device, self.dtype)).latent_dist.mode()
        return ((z.float() - self.shift) * self.scale)

    def decode(self, latents):
        """Scaled latents [B,16,h,w] -> images [B,3,8h,8w] in [-1,1] (clamped), float32."""
        import torch

        ae = self._use("ae")
        with torch.inference_mode():
            x = ae.decode((latents / self.scale + self.shift).to(self.device, self.dtype)).sample
        return x.float().clamp(-1, 1)

    def condition(self, images, masks):
        """Fill conditioning tokens [B, L, 320] from images [-1,1] [B,3,H,W] and masks [B,1,H,W] (1 = generate)."""
        import torch

        masks = (masks > 0.5).to(torch.float32).to(images.device)
        masked = images.float() * (1.0 - masks)
        z = self.encode(masked)
        return torch.cat([pack_latents(z), mask_tokens(masks.to(z.device))], dim=-1)

    def noise(self, batch: int, height: int, width: int, seed: int):
        """Packed standard-normal noise [B, L, 64] for an image of height x width, from a seeded CPU generator."""
        import torch

        g = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        h = 2 * math.ceil(height / 16)
        w = 2 * math.ceil(width / 16)
        z = torch.randn((batch, LATENT_CHANNELS, h, w), generator=g, dtype=torch.float32)
        return pack_latents(z).to(self.device)

    def velocity(self, x, t, cond, guidance: float = 30.0, *, height: int, width: int):
        """One transformer call: x [B,L,64] at time t (float or [B]) with cond [B,L,320] -> v [B,L,64] float32.

        height/width are the image size in pixels (for the token position ids).
        """
        import torch

        tr = self._use("transformer")
        B = x.shape[0]
        dev = self.device
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(B)
        hs = torch.cat([x.to(dev, torch.float32), cond.to(dev, torch.float32)], dim=-1).to(self.dtype)
        h, w = height // VAE_FACTOR, width // VAE_FACTOR
        with torch.inference_mode():
            v = tr(
                hidden_states=hs,
                encoder_hidden_states=self.txt.to(dev, self.dtype).expand(B, -1, -1),
                pooled_projections=self.vec.to(dev, self.dtype).expand(B, -1),
                timestep=t.to(dev, self.dtype),
                img_ids=latent_image_ids(h, w, dev, self.dtype),
                txt_ids=torch.zeros(self.txt.shape[1], 3, device=dev, dtype=self.dtype),
                guidance=torch.full((B,), float(guidance), device=dev, dtype=self.dtype),
                return_dict=False,
            )[0]
        return v.float()

    def denoise(self, x, cond, timesteps: Sequence[float], guidance: float = 30.0, *, height: int, width: int,
                callback: Optional[Callable[[int, int], None]] = None):
        """Euler flow sampling from timesteps[0] to timesteps[-1]: x <- x + (t_next - t) * v."""
        import torch

        x = x.to(self.device, dtype=torch.float32)
        n = len(timesteps) - 1
        for i, (t_cur, t_next) in enumerate(zip(timesteps[:-1], timesteps[1:])):
            v = self.velocity(x, t_cur, cond, guidance, height=height, width=width)
            x = x + (t_next - t_cur) * v
            if callback is not None:
                callback(i + 1, n)
        return x

    def sample(self, images, masks, *, seed: int, steps: int = 25, guidance: float = 30.0, callback=None):
        """Inpaint: images [B,3,H,W] in [-1,1], masks [B,1,H,W] (1 = generate) -> images [-1,1] on the CPU."""
        B, _, H, W = images.shape
        if H % 16 or W % 16:
            raise ValueError(f"Flux Fill needs sides that are multiples of 16, got {W}x{H}")
        try:
            cond = self.condition(images, masks)
            x = self.noise(B, H, W, seed)
            ts = schedule(steps, (H // 16) * (W // 16))
            x = self.denoise(x, cond, ts, guidance, height=H, width=W, callback=callback)
            out = self.decode(unpack_latents(x, H // VAE_FACTOR, W // VAE_FACTOR))
            return out.cpu()
        finally:
            self.park()


def _cast(module, dtype):
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module


def _cpu():
    import torch

    return torch.device("cpu")


def _empty_cache():
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the backend
class FluxFillInpaint(InpaintBackend):
    name = "flux-fill"

    def __init__(self, *, device=None, offload: str = "auto", steps: int = 25, guidance: float = 30.0,
                 auto_fetch=None, paths: Optional[dict] = None, config=None, vram_budget: Optional[int] = None):
        """`paths` (transformer, ae, txt, vec) and `config` (a folder with transformer/ and vae/)
        override the registry and the bundled configs (tests use tiny models this way).
        offload "auto" is decided from the free VRAM (capped at `vram_budget` bytes) when the model loads."""
        self._device = device
        self.offload = offload
        self.vram_budget = vram_budget
        self.work_pixels: Optional[int] = None  # views x height x width of a call, when known before loading
        self.placement: Optional[dict] = None  # the vd.models.offload decision, for summaries
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.auto_fetch = auto_fetch
        self._paths = dict(paths) if paths else None
        self.config = config
        self._ff: Optional[FluxFill] = None
        self._identity: Optional[str] = None

    def paths(self) -> dict:
        if self._paths is None:
            try:
                from vd.fetch.registry import require_all
            except ImportError:  # pragma: no cover
                raise MissingWeightsError("FLUX.1-Fill-dev weights are missing; run: vd fetch flux-fill flux-prompt") from None
            files = require_all(["flux-fill", "flux-prompt"], auto_fetch=self.auto_fetch)
            self._paths = {
                "transformer": files["flux-fill"]["flux1-fill-dev.safetensors"],
                "ae": files["flux-fill"]["ae.safetensors"],
                "txt": files["flux-prompt"]["txt.pt"],
                "vec": files["flux-prompt"]["vec.pt"],
            }
        return self._paths

    @property
    def identity(self) -> str:
        if self._identity is None:
            paths = self.paths()  # fails first with the fetch command when missing
            ids = None
            try:
                from vd.fetch.registry import model_dir, weights_id

                if Path(paths["transformer"]).resolve().parent == model_dir("flux-fill").resolve():
                    ids = f"{weights_id('flux-fill')}+{weights_id('flux-prompt')}"
            except ImportError:  # pragma: no cover
                pass
            if ids is None:
                ids = "flux-fill:" + ",".join(f"{k}={file_hash(p)[:16]}" for k, p in sorted(paths.items()))
            dt = "bf16" if self.device.startswith("cuda") else "fp32"
            self._identity = f"{ids}:steps={self.steps}:guidance={self.guidance}:{dt}"
        return self._identity

    def _load(self) -> FluxFill:
        if self._ff is None:
            p = self.paths()
            if self.offload == "auto":
                self._place()
            with console.status(f"loading FLUX.1-Fill-dev (offload={self.offload}) on {self.device}"):
                self._ff = self._build(p)
        return self._ff

    def _build(self, p: dict) -> FluxFill:
        return FluxFill.load(p["transformer"], p["ae"], p["txt"], p["vec"], device=self.device, offload=self.offload,
                             config=self.config)

    def _place(self) -> None:
        pl = place(self.device, budget=self.vram_budget, work_pixels=self.work_pixels or DEFAULT_WORK_PIXELS)
        self.offload, self.placement = pl.offload, pl.to_json()
        if pl.on_gpu:
            (log.info if pl.fits else log.warning)(f"GPU memory: {pl.reason}")

    @property
    def flux(self) -> FluxFill:
        """The loaded building blocks (loads on first access)."""
        return self._load()

    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:
        import torch

        rgb, mask = check_inputs(rgb, mask)
        if not mask.any():
            return rgb.copy()
        H, W = rgb.shape[:2]
        ph, pw = (-H) % 16, (-W) % 16
        img, m = rgb, mask
        if ph or pw:  # pad to multiples of 16; the padding is generated, then cropped away
            img = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
            m = np.pad(mask, ((0, ph), (0, pw)), constant_values=True)
        ff = self._load()
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        mt = torch.from_numpy(np.ascontiguousarray(m))[None, None].float()
        out = ff.sample(x, mt, seed=seed, steps=self.steps, guidance=self.guidance)
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
]
