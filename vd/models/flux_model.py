"""A loaded FLUX.1-Fill-dev and its building blocks (the BFL reference sampler, fixed as vd needs it).

    ff = FluxFill.load(transformer_path, ae_path, txt_path, vec_path, device="cuda", offload="model")
    z    = ff.encode(images)                  # [B,3,H,W] in [-1,1] -> [B,16,H/8,W/8], scaled+shifted
    imgs = ff.decode(z)                       # inverse, [-1,1]
    cond = ff.condition(images, masks)        # [B, L, 320]: masked-image latent (64) + mask (256)
    v    = ff.velocity(x_t, t, cond)          # one batched transformer call -> [B, L, 64]
    x0   = ff.denoise(x_T, cond, ts)          # Euler: x <- x + (t_next - t) * v
    x_T  = ff.noise(B, H, W, seed)            # packed N(0,1) noise from a CPU generator (device-independent)
    out  = ff.sample(images, masks, seed=..., steps=25, guidance=30.0)   # all of the above

Offload modes (the default `auto` of the backend picks one from the free VRAM, see
`vd.models.offload`), all on a device other than the CPU:
- `none`: transformer and AE live on the device (fastest; ~24 GB for the bf16 weights alone);
- `model`: whole modules are uploaded around their use (AE for encode/decode, transformer for the
  velocity calls); with `evict_for_ae` False (the plan found room for both beside the scene) the
  transformer stays resident between calls until `park()`, else it leaves whenever the AE runs;
- `sequential`: the transformer stays on the CPU and each block is uploaded for its own forward.
Weights are never copied back: the CPU keeps one (pinned) copy of each (`vd.models.flux_offload`).
The prompt embeddings and position ids go to the device once per loaded model, not per call.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

from vd.errors import VdError
from vd.models.flux_loading import config_dir, load_ae, load_transformer, read_embedding
from vd.models.flux_offload import HostWeights, SequentialOffload, can_pin, no_nan_fill, transformer_units
from vd.models.flux_sampling import (
    LATENT_CHANNELS,
    VAE_FACTOR,
    latent_image_ids,
    mask_tokens,
    pack_latents,
    schedule,
    unpack_latents,
)


class FluxFill:
    """A loaded FLUX.1-Fill-dev (transformer + AE + empty-prompt embeddings) and its building blocks."""

    def __init__(
        self, transformer, ae, txt, vec, *, device="cpu", dtype=None, offload: str = "model", evict_for_ae: bool = True
    ):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.offload = offload if self.device.type != "cpu" else "none"  # nothing to offload to
        with no_nan_fill():  # a cast overwrites whole new allocations (see vd.models.flux_offload)
            self.transformer = _cast(transformer, self.dtype).eval()
            self.ae = _cast(ae, self.dtype).eval()
        for m in (self.transformer, self.ae):
            for p in m.parameters():
                p.requires_grad_(False)
        # a batch of views goes through the AE one view at a time: its decoder holds the most per pixel of all
        # (bench/gpu.md, "What each model call allocates"), and one view's worth is all the plan sets aside
        self.ae.enable_slicing()
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
        # model offload: the transformer leaves the device whenever the AE runs (lowest peak) unless
        # the memory plan found room to keep both resident (then only park() moves them off)
        self.evict_for_ae = bool(evict_for_ae)
        self._seq: Optional[SequentialOffload] = None
        self._host: dict[str, HostWeights] = {}
        self._consts: dict = {}  # device copies of the prompt embeddings and position ids
        pin = self.device.type == "cuda" and can_pin()
        if self.offload == "none":
            with no_nan_fill():
                self.transformer.to(self.device)
                self.ae.to(self.device)
        elif self.offload == "model":
            self._host = {"transformer": HostWeights(self.transformer, pin=pin), "ae": HostWeights(self.ae, pin=pin)}
        elif self.offload == "sequential":
            self._host = {"ae": HostWeights(self.ae, pin=pin)}
            self._seq = SequentialOffload(transformer_units(self.transformer), self.device, pin=pin)
        else:
            raise ValueError(f"unknown offload mode {offload!r}")

    @classmethod
    def load(
        cls,
        transformer_path,
        ae_path,
        txt_path,
        vec_path,
        *,
        device="cpu",
        dtype=None,
        offload="model",
        config=None,
        evict_for_ae: bool = True,
    ):
        """Load from files; `config` is a folder with transformer/ and vae/ configs (default: bundled)."""
        import torch

        dev = torch.device(device)
        dt = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        cdir = Path(config) if config is not None else config_dir()
        transformer = load_transformer(transformer_path, config=cdir / "transformer", dtype=dt)
        ae = load_ae(ae_path, config=cdir / "vae", dtype=dt)
        txt = read_embedding(txt_path, "T5 (txt.pt)")
        vec = read_embedding(vec_path, "CLIP (vec.pt)")
        return cls(transformer, ae, txt, vec, device=dev, dtype=dt, offload=offload, evict_for_ae=evict_for_ae)

    # ---- placement
    def _use(self, which: str):
        """Make `which` ("ae" or "transformer") ready on the device according to the offload mode."""
        if self.offload == "model":
            if self.evict_for_ae:
                self._host["transformer" if which == "ae" else "ae"].drop()
            self._host[which].upload(self.device)
        elif self.offload == "sequential" and which == "ae":
            self._host["ae"].upload(self.device)
        return self.ae if which == "ae" else self.transformer

    def park(self) -> None:
        """Drop the device copies of the weights (offload modes) and return cached GPU memory."""
        for w in self._host.values():
            w.drop()
        _empty_cache()

    def _after_call(self) -> None:
        """After a whole inpaint: park, unless the plan keeps both models resident between calls."""
        if self.offload != "model" or self.evict_for_ae:
            self.park()

    def close(self) -> None:
        self.park()
        if self._seq is not None:
            self._seq.remove()
            self._seq = None
        self._consts.clear()
        self.transformer = None
        self.ae = None

    def _const(self, key, make):
        """A device tensor made once per loaded model (prompt embeddings, position ids)."""
        if key not in self._consts:
            self._consts[key] = make()
        return self._consts[key]

    # ---- building blocks
    def encode(self, images):
        """[B,3,H,W] in [-1,1] -> scaled, shifted latents [B,16,H/8,W/8] (posterior mean), float32."""
        import torch

        ae = self._use("ae")
        with torch.inference_mode():
            z = ae.encode(images.to(self.device, self.dtype)).latent_dist.mode()
        return (z.float() - self.shift) * self.scale

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
        dev, dt = self.device, self.dtype
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(B)
        hs = torch.cat([x.to(dev, torch.float32), cond.to(dev, torch.float32)], dim=-1).to(dt)
        h, w = height // VAE_FACTOR, width // VAE_FACTOR
        txt = self._const("txt", lambda: self.txt.to(dev, dt))
        vec = self._const("vec", lambda: self.vec.to(dev, dt))
        txt_ids = self._const("txt_ids", lambda: torch.zeros(self.txt.shape[1], 3, device=dev, dtype=dt))
        img_ids = self._const(("img_ids", h, w), lambda: latent_image_ids(h, w, dev, dt))
        with torch.inference_mode():
            v = tr(
                hidden_states=hs,
                encoder_hidden_states=txt.expand(B, -1, -1),
                pooled_projections=vec.expand(B, -1),
                timestep=t.to(dev, dt),
                img_ids=img_ids,
                txt_ids=txt_ids,
                guidance=torch.full((B,), float(guidance), device=dev, dtype=dt),
                return_dict=False,
            )[0]
        return v.float()

    def denoise(
        self,
        x,
        cond,
        timesteps: Sequence[float],
        guidance: float = 30.0,
        *,
        height: int,
        width: int,
        callback: Optional[Callable[[int, int], None]] = None,
    ):
        """Euler flow sampling from timesteps[0] to timesteps[-1]: x <- x + (t_next - t) * v."""
        import torch

        x = x.to(self.device, dtype=torch.float32)
        n = len(timesteps) - 1
        for i, (t_cur, t_next) in enumerate(zip(timesteps[:-1], timesteps[1:], strict=False)):
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
            self._after_call()


def _cast(module, dtype):
    if getattr(module, "is_quantized", False):  # GGUF: uint8 blocks stay as they are, they compute in `dtype`
        return module
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module


def _empty_cache():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


__all__ = ["FluxFill"]
