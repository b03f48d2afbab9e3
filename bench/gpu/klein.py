"""GPU bench section for the flux2-klein backend (FLUX.2 [klein] 4B): `section(ctx)`, wired into
bench/gpu/run.py by the integrator (see bench/gpu/sections.py for `Ctx` and `VramSampler`).

Real run (CUDA): random FULL-SIZE weights in bf16 built from the configs bundled in vd: first the
Qwen3-4B text encoder alone (one 512-token prompt encode, as on a prompt-embedding cache miss),
freed; then the klein transformer + autoencoder, one 4-step inpaint at 512 x 512 with a random
prompt embedding. Seconds and peak VRAM of each, and what the encoder leaves allocated once freed
(the two never share the device: the peak of a cold run is the larger of the two, not the sum).
Dry run (`ctx.dry`): the tiny test models on the CPU, in seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Qwen3-4B, the FLUX.2 [klein] 4B text encoder (ESTIMATE of the repository's text_encoder/config.json:
# Qwen3-4B's published architecture)
QWEN3_4B = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def _random_fill(model) -> None:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)


def _on_device(cls_build, device, dtype):
    """Build a model on the meta device, then allocate it on `device` in `dtype` (no fp32 copy)."""
    import torch

    with torch.device("meta"):
        m = cls_build().to(dtype)
    m = m.to_empty(device=device)
    _random_fill(m)
    return m.eval()


def _configs(ctx):
    import json

    from vd.models.flux2_klein_loading import config_dir

    if ctx.dry:
        sys.path.insert(0, str(REPO / "tests"))
        from klein_tiny import TINY_QWEN3, TINY_TRANSFORMER, TINY_VAE

        return TINY_TRANSFORMER, TINY_VAE, TINY_QWEN3, 64
    tr = json.loads((config_dir() / "transformer" / "config.json").read_text())
    vae = json.loads((config_dir() / "vae" / "config.json").read_text())
    return tr, vae, QWEN3_4B, 512


def _public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder(ctx, qcfg) -> None:
    """One prompt encode with a random Qwen3 of the given size (ids instead of a tokenizer)."""
    import torch
    from sections import VramSampler
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vd.models.flux2_klein_loading import MAX_PROMPT_TOKENS, TEXT_LAYERS
    from vd.models.memory import release_torch_memory

    dt = torch.float32 if ctx.dry else torch.bfloat16
    try:
        with VramSampler(ctx.device) as vs:
            t0 = time.perf_counter()
            te = _on_device(lambda: Qwen3ForCausalLM(Qwen3Config(**qcfg)), ctx.device, dt)
            _sync(ctx.device)
            t1 = time.perf_counter()
            ids = torch.randint(
                0, qcfg["vocab_size"], (1, MAX_PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)
            )
            mask = torch.zeros_like(ids)
            mask[:, :12] = 1  # a short chat-formatted prompt, padded to 512 as the pipeline does
            with torch.inference_mode():
                out = te(
                    input_ids=ids.to(ctx.device),
                    attention_mask=mask.to(ctx.device),
                    output_hidden_states=True,
                    use_cache=False,
                )
                emb = torch.stack([out.hidden_states[k] for k in TEXT_LAYERS], dim=1)
            _sync(ctx.device)
            t2 = time.perf_counter()
        ctx.record(
            "encoder",
            {
                "build_s": round(t1 - t0, 2),
                "encode_s": round(t2 - t1, 3),
                "embedding_shape": [1, MAX_PROMPT_TOKENS, int(emb.shape[1] * emb.shape[-1])],
                "params_b": round(sum(p.numel() for p in te.parameters()) / 1e9, 3),
                **vs.json(),
            },
        )
        del te, out, emb
        release_torch_memory()
        if ctx.device.startswith("cuda"):
            ctx.record("encoder_left_allocated_gib", round(torch.cuda.memory_allocated() / 2**30, 3))
    except torch.cuda.OutOfMemoryError:
        ctx.record("encoder", {"error": "CUDA out of memory"})


def inpaint(ctx, tcfg, vcfg, n: int) -> None:
    """One 4-step inpaint at n x n through vd's Flux2Klein (diffusers' Flux2KleinInpaintPipeline)."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from sections import VramSampler

    from vd.models.flux2_klein_loading import load_scheduler
    from vd.models.flux2_klein_model import Flux2Klein

    dt = torch.float32 if ctx.dry else torch.bfloat16
    kl = None
    try:
        with VramSampler(ctx.device) as vs:
            t0 = time.perf_counter()
            tr = _on_device(lambda: Flux2Transformer2DModel.from_config(_public(tcfg)), ctx.device, dt)
            vae = AutoencoderKLFlux2.from_config(_public(vcfg)).to(device=ctx.device, dtype=dt).eval()
            emb = torch.randn(1, 512, tcfg["joint_attention_dim"], generator=torch.Generator().manual_seed(1))
            kl = Flux2Klein(tr, vae, load_scheduler(), emb, device=ctx.device, dtype=dt, offload="none")
            _sync(ctx.device)
            t1 = time.perf_counter()
            img = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(2))
            mask = torch.zeros(1, 1, n, n)
            mask[..., n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1
            out = kl.inpaint(img, mask, seed=0, steps=4)
            _sync(ctx.device)
            t2 = time.perf_counter()
        ctx.record(
            "inpaint",
            {
                "size": n,
                "steps": 4,
                "build_s": round(t1 - t0, 2),
                "seconds": round(t2 - t1, 2),
                "per_step_s": round((t2 - t1) / 4, 3),
                "out_shape": list(out.shape),
                "transformer_params_b": round(sum(p.numel() for p in tr.parameters()) / 1e9, 3),
                **vs.json(),
            },
        )
    except torch.cuda.OutOfMemoryError:
        ctx.record("inpaint", {"error": "CUDA out of memory"})
    finally:
        if kl is not None:
            kl.close()


def section(ctx) -> None:
    sys.path.insert(0, str(HERE))
    tcfg, vcfg, qcfg, n = _configs(ctx)
    if ctx.dry:
        ctx.record("note", "CPU dry run: tiny models; figures say nothing about a GPU")
    encoder(ctx, qcfg)  # first, as on a cache miss: freed before the transformer is built
    inpaint(ctx, tcfg, vcfg, n)


__all__ = ["section", "QWEN3_4B"]
