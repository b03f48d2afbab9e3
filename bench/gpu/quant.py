"""GPU bench section `quant`: the GGUF-quantised FLUX.1-Fill-dev transformer (Q8_0, Q5_K, Q4_K) beside bf16.

For each quant: a random FULL-SIZE transformer in that quantisation is built on the GPU through the
same diffusers GGUF quantizer and BFL-key conversion as a published file (random bytes in the real
block layout, with finite fp16 scales, no 12 B file written), then one transformer step (one
velocity call of `vd.models.flux_model.FluxFill`, offload none) at flux_size² is timed twice (the
first call includes CUDA warm-up) with the peak VRAM of the steps. bf16 follows as the reference
when the section's time allows. Dry run (`ctx.dry`): a 256-wide tiny model in the diffusers key layout
on the CPU (diffusers' BFL conversion only knows the real 3072 width), in seconds.

    from quant import section; section(ctx)      # ctx: bench/gpu/sections.py Ctx
"""

from __future__ import annotations

import gc
import json
import sys
import time

from sections import GIB, REPO, VramSampler, _sync

QUANTS = ("q8_0", "q5_k", "q4_k")
SECTION_S = 60.0  # the whole section's share of the GPU run; bf16 is skipped when it would not fit
BF16_NEEDS_S = 15.0
# fp16 scale fields of each format's blocks, chosen so that dequantised weights are about +-0.04
SCALES = {"q8_0": (3e-4,), "q5_k": (5e-5, 1e-3), "q4_k": (1e-4, 1e-3)}


def _ggml(quant: str):
    from gguf import GGMLQuantizationType as T

    return {"q8_0": T.Q8_0, "q5_k": T.Q5_K, "q4_k": T.Q4_K}[quant]


def tensor_shapes(config: dict) -> tuple[dict, str]:
    """Float shapes of a checkpoint for `config`: BFL keys at the real width, else diffusers keys."""
    import torch
    from diffusers import FluxTransformer2DModel

    from vd.models.flux_gguf import bfl_layout

    if int(config["num_attention_heads"]) * int(config["attention_head_dim"]) == 3072:
        return bfl_layout(config), "bfl"
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, "diffusers"


def random_gguf_state(shapes: dict, quant: str, device, published: bool = False) -> dict:
    """Random GGUFParameters (whole-block rows) and float tensors (the rest) for a single-file load; with
    `published` (BFL keys), typed as the published files are (`flux_gguf.published_tensor_type`: embedders and
    the final layer kept F32 / F16, only the blocks' weights quantised), so the measured memory is theirs."""
    import gguf
    import torch
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from vd.models.flux_gguf import published_tensor_type

    qtype = _ggml(quant)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    head = torch.tensor(SCALES[quant], dtype=torch.float16).view(torch.uint8).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    out = {}
    for name, shape in shapes.items():
        kept = published and published_tensor_type(name, shape, quant) in ("F32", "F16")
        if published and kept and len(shape) > 1:
            dtype = torch.float16 if published_tensor_type(name, shape, quant) == "F16" else torch.float32
            out[name] = (torch.randn(shape, device=device, generator=g) * 0.02).to(dtype)
        elif len(shape) == 2 and shape[1] % block == 0 and not kept:
            data = torch.randint(0, 256, (shape[0], shape[1] // block * size), dtype=torch.uint8, device=device,
                                 generator=g)
            data.view(-1, size)[:, : head.numel()] = head  # finite d (and dmin) in every block
            out[name] = GGUFParameter(data, quant_type=qtype)
        elif len(shape) == 1 and name.endswith(("scale", "norm_q.weight", "norm_k.weight", "norm_added_q.weight",
                                                 "norm_added_k.weight")):
            out[name] = torch.ones(shape, device=device)
        else:
            out[name] = torch.randn(shape, device=device, generator=g) * 0.02
    return out


def random_gguf_transformer(config_dir, quant: str, device, dtype):
    """FluxTransformer2DModel with random `quant` weights, through diffusers' GGUF single-file path."""
    import torch
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    cfg = {k: v for k, v in json.loads((config_dir / "config.json").read_text()).items() if k[0] != "_"}
    shapes, layout = tensor_shapes(cfg)
    state = random_gguf_state(shapes, quant, device, published=layout == "bfl")
    tr = FluxTransformer2DModel.from_single_file(
        state,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        config=str(config_dir),
        local_files_only=True,
        torch_dtype=dtype,
        device=torch.device(device),
    )
    return tr.eval(), layout


def _tiny_parts(ctx, config_dir):
    """(tiny AE, txt, vec) matching the transformer config: the step needs no real AE."""
    import torch
    from diffusers import AutoencoderKL

    sys.path.insert(0, str(REPO / "tests"))
    from flux_tiny import TINY_VAE

    cfg = json.loads((config_dir / "config.json").read_text())
    ae = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if k[0] != "_"})
    txt_len = 8 if ctx.dry else 512
    return ae, torch.randn(1, txt_len, cfg["joint_attention_dim"]), torch.randn(1, cfg["pooled_projection_dim"])


def _config_dir(ctx, work):
    from vd.models.flux_fill import config_dir

    if not ctx.dry:
        return config_dir() / "transformer"
    sys.path.insert(0, str(REPO / "tests"))
    from flux_gguf_tiny import TINY_GGUF_TRANSFORMER

    d = work / "quant-tiny-config"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(TINY_GGUF_TRANSFORMER))
    return d


def _steps(ctx, ff) -> dict:
    """Two velocity calls at flux_size² (the first includes warm-up), timed, with their peak VRAM."""
    import torch

    n = ctx.sizes.flux_size
    tokens = (n // 16) ** 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, tokens, 64, generator=g)
    cond = torch.randn(1, tokens, 320, generator=g)
    with VramSampler(ctx.device) as vs:
        t0 = time.perf_counter()
        v = ff.velocity(x, 0.5, cond, height=n, width=n)
        _sync(ctx.device)
        t1 = time.perf_counter()
        ff.velocity(x, 0.5, cond, height=n, width=n)
        _sync(ctx.device)
        t2 = time.perf_counter()
    return {"size": n, "first_step_s": round(t1 - t0, 3), "step_s": round(t2 - t1, 3),
            "finite": bool(torch.isfinite(v).all()), **vs.json()}


def _free(*objs) -> None:
    import torch

    for o in objs:
        if o is not None and hasattr(o, "close"):
            o.close()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def section(ctx) -> None:
    import torch

    from vd.models.flux_gguf import GGUF_LARGEST_UNIT_BYTES, GGUF_TRANSFORMER_BYTES
    from vd.models.flux_model import FluxFill

    start = time.perf_counter()
    cfg_dir = _config_dir(ctx, ctx.work)
    dtype = torch.bfloat16 if ctx.device.startswith("cuda") else torch.float32
    ae, txt, vec = _tiny_parts(ctx, cfg_dir)
    for quant in QUANTS:
        key = f"quant={quant}"
        ff = None
        try:
            t0 = time.perf_counter()
            tr, layout = random_gguf_transformer(cfg_dir, quant, ctx.device, dtype)
            _sync(ctx.device)
            build_s = time.perf_counter() - t0
            weights = sum(p.numel() * p.element_size() for p in tr.parameters())
            ff = FluxFill(tr, ae, txt, vec, device=ctx.device, dtype=dtype, offload="none")
            row = {"layout": layout, "build_s": round(build_s, 2), "weights_gib": round(weights / GIB, 3),
                   "estimate_gib": round(GGUF_TRANSFORMER_BYTES[quant] / GIB, 3),
                   "largest_unit_estimate_gib": round(GGUF_LARGEST_UNIT_BYTES[quant] / GIB, 3), **_steps(ctx, ff)}
            if ctx.dry:
                row["note"] = "CPU dry run: tiny model, diffusers key layout"
            ctx.record(key, row)
        except torch.cuda.OutOfMemoryError:
            ctx.record(key, {"error": "CUDA out of memory"})
        finally:
            _free(ff)
            tr = ff = None
            _free()
    left = SECTION_S - (time.perf_counter() - start)
    if left < BF16_NEEDS_S and not ctx.dry:
        ctx.skip("bf16", f"{left:.0f} s of the section's {SECTION_S:.0f} s left")
        return
    ff = None
    try:
        sys.path.insert(0, str(REPO / "bench"))
        from random_flux import random_flux_parts

        t0 = time.perf_counter()
        cfg = json.loads((cfg_dir / "config.json").read_text())
        from flux_tiny import TINY_VAE

        tr = random_flux_parts(cfg if ctx.dry else None, TINY_VAE, device=ctx.device, dtype=dtype)[0]
        _sync(ctx.device)
        build_s = time.perf_counter() - t0
        ff = FluxFill(tr, ae, txt, vec, device=ctx.device, dtype=dtype, offload="none")
        weights = sum(p.numel() * p.element_size() for p in tr.parameters())
        ctx.record("bf16", {"build_s": round(build_s, 2), "weights_gib": round(weights / GIB, 3), **_steps(ctx, ff)})
    except torch.cuda.OutOfMemoryError:
        ctx.record("bf16", {"error": "CUDA out of memory"})
    finally:
        _free(ff)
