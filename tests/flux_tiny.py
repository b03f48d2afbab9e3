"""Tiny random FLUX.1-Fill-dev parts for tests: the real channel layout (384 in / 64 out, 16-channel
AE latent), saved in the single-file formats the production loader reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

TINY_TRANSFORMER = {
    "_class_name": "FluxTransformer2DModel",
    "attention_head_dim": 16,
    "axes_dims_rope": [4, 6, 6],
    "guidance_embeds": True,
    "in_channels": 384,
    "joint_attention_dim": 32,
    "num_attention_heads": 2,
    "num_layers": 1,
    "num_single_layers": 1,
    "out_channels": 64,
    "patch_size": 1,
    "pooled_projection_dim": 16,
}

TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [16, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 1,
    "mid_block_add_attention": True,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}


def diffusers_vae_to_ldm(sd: dict, n_blocks: int = 4) -> dict:
    """Inverse of diffusers' `convert_ldm_vae_checkpoint`: the `ae.safetensors` (LDM) key layout."""
    out = {}
    for k, v in sd.items():
        n = k
        n = n.replace("conv_norm_out", "norm_out")
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", n)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", n)
        m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)(.*)", n)
        if m:
            i = n_blocks - 1 - int(m.group(1))
            if m.group(2) == "resnets":
                n = f"decoder.up.{i}.block.{m.group(3)}{m.group(4)}"
            else:
                n = f"decoder.up.{i}.upsample{m.group(4)}"
        n = re.sub(r"mid_block\.resnets\.(\d+)", lambda mm: f"mid.block_{int(mm.group(1)) + 1}", n)
        if "mid_block.attentions.0" in n:
            n = n.replace("mid_block.attentions.0", "mid.attn_1")
            n = (n.replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")
                 .replace("to_out.0", "proj_out"))
            if v.ndim == 2:
                v = v[:, :, None, None]
        n = n.replace("conv_shortcut", "nin_shortcut")
        out[n] = v.contiguous()
    return out


def make_tiny_flux(folder: Path, seed: int = 0) -> dict:
    """Write flux1-fill-dev.safetensors (diffusers layout), ae.safetensors (LDM layout), txt.pt,
    vec.pt and a config folder (transformer/, vae/) into `folder`; return the paths."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "config" / "transformer").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "vae").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "transformer" / "config.json").write_text(json.dumps(TINY_TRANSFORMER))
    (folder / "config" / "vae" / "config.json").write_text(json.dumps(TINY_VAE))
    torch.manual_seed(seed)
    tr = FluxTransformer2DModel.from_config({k: v for k, v in TINY_TRANSFORMER.items() if not k.startswith("_")})
    ae = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    save_file({k: v.contiguous() for k, v in tr.state_dict().items()}, folder / "flux1-fill-dev.safetensors")
    save_file(diffusers_vae_to_ldm(ae.state_dict()), folder / "ae.safetensors")
    torch.save(torch.randn(1, 8, TINY_TRANSFORMER["joint_attention_dim"]), folder / "txt.pt")
    torch.save(torch.randn(1, TINY_TRANSFORMER["pooled_projection_dim"]), folder / "vec.pt")
    return {
        "transformer": folder / "flux1-fill-dev.safetensors",
        "ae": folder / "ae.safetensors",
        "txt": folder / "txt.pt",
        "vec": folder / "vec.pt",
        "config": folder / "config",
        "tr_state": tr.state_dict(),
        "ae_state": ae.state_dict(),
    }
