"""Tiny random FLUX.2 [klein] parts for tests: the real classes (Flux2Transformer2DModel,
AutoencoderKLFlux2, Qwen3ForCausalLM, Qwen2TokenizerFast) at toy sizes, saved in the files
`vd fetch flux2-klein flux2-klein-text` installs: the transformer in the Black Forest Labs
single-file key layout, the autoencoder with diffusers keys, the text encoder as a sharded
safetensors checkpoint with its index, the tokenizer as tokenizer.json + tokenizer_config.json."""

from __future__ import annotations

import json
from pathlib import Path

TEXT_HIDDEN = 16
TINY_TRANSFORMER = {
    "_class_name": "Flux2Transformer2DModel",
    "attention_head_dim": 16,
    "axes_dims_rope": [4, 4, 4, 4],
    "eps": 1e-06,
    "guidance_embeds": False,
    "in_channels": 32,  # 8 latent channels in 2x2 patches
    "joint_attention_dim": 3 * TEXT_HIDDEN,  # three Qwen3 hidden layers stacked
    "mlp_ratio": 3.0,
    "num_attention_heads": 2,
    "num_layers": 1,
    "num_single_layers": 1,
    "out_channels": None,
    "patch_size": 1,
    "rope_theta": 2000,
    "timestep_guidance_channels": 32,
}
TINY_VAE = {
    "_class_name": "AutoencoderKLFlux2",
    "act_fn": "silu",
    "batch_norm_eps": 0.0001,
    "batch_norm_momentum": 0.1,
    "block_out_channels": [8, 8, 8, 8],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 8,
    "layers_per_block": 1,
    "mid_block_add_attention": True,
    "norm_num_groups": 4,
    "out_channels": 3,
    "patch_size": [2, 2],
    "sample_size": 64,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": True,
    "use_quant_conv": True,
}
TINY_QWEN3 = {
    "vocab_size": 64,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 32,
    "num_hidden_layers": 28,  # the pipeline reads hidden states 9, 18 and 27
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def diffusers_to_bfl(sd: dict) -> dict:
    """Inverse of diffusers' `convert_flux2_transformer_checkpoint_to_diffusers`: BFL key layout
    (fused q/k/v, `*_norm.scale`, final adaLN as (shift, scale))."""
    import torch

    out: dict = {}
    simple = {
        "x_embedder": "img_in",
        "context_embedder": "txt_in",
        "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
        "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
        "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
        "single_stream_modulation.linear": "single_stream_modulation.lin",
        "proj_out": "final_layer.linear",
    }
    double = {
        "attn.norm_q": "img_attn.norm.query_norm",
        "attn.norm_k": "img_attn.norm.key_norm",
        "attn.to_out.0": "img_attn.proj",
        "ff.linear_in": "img_mlp.0",
        "ff.linear_out": "img_mlp.2",
        "attn.norm_added_q": "txt_attn.norm.query_norm",
        "attn.norm_added_k": "txt_attn.norm.key_norm",
        "attn.to_add_out": "txt_attn.proj",
        "ff_context.linear_in": "txt_mlp.0",
        "ff_context.linear_out": "txt_mlp.2",
    }
    single = {
        "attn.to_qkv_mlp_proj": "linear1",
        "attn.to_out": "linear2",
        "attn.norm_q": "norm.query_norm",
        "attn.norm_k": "norm.key_norm",
    }
    fused: dict = {}
    for k, v in sd.items():
        v = v.contiguous()
        mod, param = k.rsplit(".", 1)
        if mod == "norm_out.linear":
            shift_scale = torch.cat([v.chunk(2, 0)[1], v.chunk(2, 0)[0]], 0)
            out[f"final_layer.adaLN_modulation.1.{param}"] = shift_scale
        elif mod in simple:
            out[f"{simple[mod]}.{param}"] = v
        elif mod.startswith("transformer_blocks."):
            _, i, inner = mod.split(".", 2)
            qkv = {
                "attn.to_q": ("img", 0),
                "attn.to_k": ("img", 1),
                "attn.to_v": ("img", 2),
                "attn.add_q_proj": ("txt", 0),
                "attn.add_k_proj": ("txt", 1),
                "attn.add_v_proj": ("txt", 2),
            }
            if inner in qkv:
                stream, j = qkv[inner]
                fused.setdefault((i, stream, param), [None] * 3)[j] = v
            else:
                name = double[inner]
                out[f"double_blocks.{i}.{name}.{'scale' if 'norm' in name else param}"] = v
        elif mod.startswith("single_transformer_blocks."):
            _, i, inner = mod.split(".", 2)
            name = single[inner]
            out[f"single_blocks.{i}.{name}.{'scale' if 'norm' in name else param}"] = v
        else:
            raise KeyError(k)
    for (i, stream, param), parts in fused.items():
        out[f"double_blocks.{i}.{stream}_attn.qkv.{param}"] = torch.cat(parts, 0).contiguous()
    return out


def make_tokenizer(folder: Path, chat_template: bool = True):
    """A tiny byte-level BPE trained here, wrapped as Qwen2TokenizerFast and saved in the real files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_QWEN3["vocab_size"],
        special_tokens=SPECIALS,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"),
    )
    tok.train_from_iterator(["a photo of a room", "user assistant", "the empty prompt"], trainer=trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None, bos_token=None
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return fast


def make_tiny_text(folder: Path, seed: int = 0, chat_template: bool = True) -> Path:
    """config.json, model.safetensors.index.json, shards, tokenizer.json, tokenizer_config.json, chat_template.jinja"""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_QWEN3))
    model.save_pretrained(str(folder), max_shard_size="200KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert (folder / "model.safetensors.index.json").exists() and len(shards) >= 2, shards
    (folder / "generation_config.json").unlink(missing_ok=True)
    make_tokenizer(folder, chat_template=chat_template)  # a template lands in chat_template.jinja
    return folder


def make_tiny_klein(folder: Path, seed: int = 0) -> dict:
    """flux-2-klein-4b.safetensors (BFL layout), vae.safetensors (diffusers keys) and a config
    folder (transformer/, vae/, scheduler/ = the bundled scheduler config) in `folder`."""
    import shutil

    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from safetensors.torch import save_file

    from vd.models.flux2_klein_loading import config_dir

    folder = Path(folder)
    cfg = folder / "config"
    for sub, c in (("transformer", TINY_TRANSFORMER), ("vae", TINY_VAE)):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
        (cfg / sub / "config.json").write_text(json.dumps(c))
    shutil.copytree(config_dir() / "scheduler", cfg / "scheduler", dirs_exist_ok=True)
    torch.manual_seed(seed)
    tr = Flux2Transformer2DModel.from_config({k: v for k, v in TINY_TRANSFORMER.items() if not k.startswith("_")})
    vae = AutoencoderKLFlux2.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    with torch.no_grad():  # batch-norm statistics that are not the identity, as a trained model's
        vae.bn.running_mean.uniform_(-0.5, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    save_file(diffusers_to_bfl(tr.state_dict()), folder / "flux-2-klein-4b.safetensors")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, folder / "vae.safetensors")
    return {
        "transformer": folder / "flux-2-klein-4b.safetensors",
        "vae": folder / "vae.safetensors",
        "config": cfg,
        "tr_state": tr.state_dict(),
        "vae_state": vae.state_dict(),
    }


__all__ = ["make_tiny_klein", "make_tiny_text", "diffusers_to_bfl", "TINY_TRANSFORMER", "TINY_VAE", "TINY_QWEN3"]
