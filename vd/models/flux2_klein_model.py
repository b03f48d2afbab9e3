"""A loaded FLUX.2 [klein] 4B (transformer + autoencoder + scheduler + a prompt embedding) and its
building blocks, on diffusers' own `Flux2KleinInpaintPipeline` built without a text encoder.

    kl = Flux2Klein(transformer, vae, scheduler, prompt_embeds, device="cuda", offload="none")
    out = kl.inpaint(images, masks, seed=0, steps=4)    # [B,3,H,W] in [0,1], masks 1 = generate
    # the pieces `vd fine`'s MCS loop samples with (tokens are [B, L, 128], L = H/16 * W/16):
    z    = kl.encode(images)          # [-1,1] -> patchified, batch-norm-normalised packed latents
    imgs = kl.decode(z)               # inverse, [-1,1]
    ref  = kl.reference(images)       # conditioning tokens + their position ids (the image as a reference)
    v    = kl.velocity(x, t, ref)     # one transformer call, reference tokens appended, -> [B, L, 128]
    ts   = kl.schedule(n, H, W)       # the pipeline's sigmas for n steps at this size, ending at 0

Offload modes: `none` (everything on the device), `model` (diffusers' model CPU offload: each
module is uploaded for its own forward), `sequential` (diffusers' sequential offload).
"""

from __future__ import annotations

from vd import console

VAE_FACTOR = 16  # pixels per latent token side: 8x autoencoder, then 2x2 patches


class Flux2Klein:
    def __init__(self, transformer, vae, scheduler, prompt_embeds, *, device="cpu", dtype=None, offload="none"):
        import torch
        from diffusers import Flux2KleinInpaintPipeline

        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.offload = offload if self.device.type != "cpu" else "none"
        for m in (transformer, vae):
            if any(p.dtype != self.dtype for p in m.parameters()):
                m.to(dtype=self.dtype)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        vae.enable_slicing()  # a batch of views through the AE one view at a time, as FluxFill does
        self.pipe = Flux2KleinInpaintPipeline(
            scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer, is_distilled=True
        )
        self.pipe.set_progress_bar_config(disable=True)
        if self.offload == "none":
            self.pipe.to(self.device)
        elif self.offload == "model":
            self.pipe.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            self.pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            raise ValueError(f"unknown offload mode {offload!r}")
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        self.text_ids = self.pipe._prepare_text_ids(self.prompt_embeds).to(self.device)

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def vae(self):
        return self.pipe.vae

    def close(self) -> None:
        try:
            self.pipe.remove_all_hooks()
        except Exception:  # no hooks (offload "none")
            pass
        self.pipe = None
        self.prompt_embeds = None

    # ---- the whole inpaint, through the pipeline
    def inpaint(self, images, masks, *, seed: int, steps: int = 4):
        """images [B,3,H,W] in [0,1] (sides multiples of 16), masks [B,1,H,W] (1 = generate) ->
        [B,H',W',3] float numpy in [0,1] (the pipeline shrinks inputs over 1024 x 1024 pixels)."""
        import torch

        g = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        B = images.shape[0]

        def step_done(pipe, i: int, t, tensors: dict) -> dict:
            bar.update(i + 1)
            return {}  # nothing replaced: the pipeline keeps its latents

        H, W = int(images.shape[2]), int(images.shape[3])
        with torch.inference_mode(), console.Bar(f"FLUX.2 [klein]: inpainting {W}x{H}", int(steps)) as bar:
            out = self.pipe(
                image=images.float(),
                mask_image=masks.float(),
                prompt_embeds=self.prompt_embeds.expand(B, -1, -1),
                height=int(images.shape[2]),
                width=int(images.shape[3]),
                strength=1.0,
                num_inference_steps=int(steps),
                guidance_scale=1.0,
                generator=g,
                output_type="np",
                callback_on_step_end=step_done,
            ).images
        return out

    # ---- building blocks for the MCS loop
    def _vae_device(self):
        return self.device if self.offload == "none" else self.pipe._execution_device

    def encode(self, images):
        """[B,3,H,W] in [-1,1] -> packed latents [B, H/16 * W/16, 4 x latent channels], float32."""
        import torch

        with torch.inference_mode():
            z = self.pipe._encode_vae_image(images.to(self._vae_device(), self.dtype), generator=None)
        return self.pipe._pack_latents(z).float()

    def decode(self, tokens, height: int, width: int):
        """Packed latents -> images [B,3,H,W] in [-1,1] (clamped), float32."""
        import torch

        vae = self.vae
        B, L, C = tokens.shape
        h, w = height // VAE_FACTOR, width // VAE_FACTOR
        z = tokens.float().permute(0, 2, 1).reshape(B, C, h, w).to(self._vae_device())
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z.device, torch.float32)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1).to(z.device, torch.float32) + vae.config.batch_norm_eps)
        z = self.pipe._unpatchify_latents(z * std + mean)
        with torch.inference_mode():
            x = vae.decode(z.to(self.dtype), return_dict=False)[0]
        return x.float().clamp(-1, 1)

    def reference(self, images) -> dict:
        """The image(s) [B,3,H,W] in [-1,1] as the pipeline's reference: tokens and position ids."""
        import torch

        B = images.shape[0]
        with torch.inference_mode():
            z = self.pipe._encode_vae_image(images.to(self._vae_device(), self.dtype), generator=None)
        ref_ids = self.pipe._prepare_image_ids([z], B).to(self.device)
        latent_ids = self.pipe._prepare_latent_ids(z).to(self.device)
        return {"tokens": self.pipe._pack_latents(z).to(self.device), "ids": ref_ids, "latent_ids": latent_ids}

    def velocity(self, x, t, ref: dict):
        """x [B,L,C] at flow time t in [0,1] (1 = noise) with the reference -> v [B,L,C] float32;
        the Euler step is x + (t_next - t) * v, as the pipeline's scheduler takes it."""
        import torch

        B, L = x.shape[:2]
        tt = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        if tt.numel() == 1:
            tt = tt.expand(B)
        hs = torch.cat([x.to(self.device, self.dtype), ref["tokens"].to(self.device, self.dtype)], dim=1)
        ids = torch.cat([ref["latent_ids"], ref["ids"]], dim=1)
        with torch.inference_mode():
            v = self.transformer(
                hidden_states=hs,
                timestep=tt.to(self.device, self.dtype),
                guidance=None,
                encoder_hidden_states=self.prompt_embeds.expand(B, -1, -1),
                txt_ids=self.text_ids.expand(B, -1, -1),
                img_ids=ids,
                return_dict=False,
            )[0]
        return v[:, :L].float()

    def schedule(self, steps: int, height: int, width: int) -> list[float]:
        """The pipeline's sigmas for `steps` steps at this image size (linspace(1, 1/n, n) time-shifted
        by its empirical mu), with the final 0: steps + 1 floats from 1 down to 0."""
        return schedule(self.pipe.scheduler, steps, height, width)


def schedule(scheduler, steps: int, height: int, width: int) -> list[float]:
    import numpy as np
    from diffusers.pipelines.flux2.pipeline_flux2_klein_inpaint import compute_empirical_mu

    n = int(steps)
    seq = (int(height) // VAE_FACTOR) * (int(width) // VAE_FACTOR)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / n, n), mu=compute_empirical_mu(seq, n))
    return [float(s) for s in scheduler.sigmas]


__all__ = ["Flux2Klein", "schedule", "VAE_FACTOR"]
