"""Tiny random FLUX.1-Fill transformers written as real GGUF files (gguf.GGUFWriter), for tests.

Tensor types as the published files have them (`vd.models.flux_gguf.published_tensor_type`): the
blocks' linear weights quantised (Q8_0 by gguf-py's own quantiser; Q4_K and Q5_K by `kquant` below, as
gguf-py only dequantises those), 1-D tensors (biases, norm scales) in F32, the input and output
projections kept F32 (x_embedder = img_in with Fill's 384 inputs, proj_out, the embedders' first
layers) and the other embedder layers F16. The model is 256 wide (2 heads of 128) so that its rows are
whole 256-value K-quant super-blocks.

Keys are in the diffusers layout: diffusers' conversion of the BFL layout (`double_blocks.N...`)
splits the fused single-block weights with the real model's sizes (3072 wide), so a tiny BFL file
cannot load; the BFL path is checked at full size on the meta device instead (test_flux_gguf.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flux_tiny import TINY_TRANSFORMER

TINY_GGUF_TRANSFORMER = dict(
    TINY_TRANSFORMER, attention_head_dim=128, axes_dims_rope=[16, 56, 56], num_attention_heads=2
)
QK_K = 256


def _pack_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per super-block -> the 12-byte K-quant scale field (n, 12)."""
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    out = np.zeros((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)
    return out


def kquant(w: np.ndarray, bits: int) -> np.ndarray:
    """Q4_K (bits=4) or Q5_K (bits=5) blocks of a float matrix whose rows are multiples of 256:
    per 32-value sub-block x ~ d*sc*q - dmin*m, with 6-bit sc and m; returns uint8 [rows, bytes]."""
    rows = w.shape[0]
    x = w.astype(np.float32).reshape(-1, 8, 32)  # super-blocks of 8 sub-blocks
    qmax = (1 << bits) - 1
    lo = np.minimum(x.min(-1), 0.0)  # the offset is a non-negative min subtracted
    scale = (x.max(-1) - lo) / qmax
    d = np.maximum(scale.max(-1), 1e-12) / 63
    dmin = np.maximum((-lo).max(-1), 1e-12) / 63
    d, dmin = d.astype(np.float16), dmin.astype(np.float16)
    sc = np.clip(np.round(scale / d.astype(np.float32)[:, None]), 1, 63)
    mn = np.clip(np.round(-lo / dmin.astype(np.float32)[:, None]), 0, 63)
    step = (d.astype(np.float32)[:, None] * sc)[..., None]
    off = (dmin.astype(np.float32)[:, None] * mn)[..., None]
    q = np.clip(np.round((x + off) / step), 0, qmax).astype(np.uint8)  # [n, 8, 32]
    low = q & 15
    qs = (low[:, 0::2] | (low[:, 1::2] << 4)).reshape(-1, 128)  # byte l of chunk c: sub-blocks 2c, 2c+1
    scales = _pack_scales(sc, mn)
    head = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales], 1)
    if bits == 4:
        blocks = np.concatenate([head, qs], 1)
    else:
        qh = np.zeros((q.shape[0], 32), np.uint8)
        for j in range(8):
            qh |= ((q[:, j] >> 4) & 1) << j
        blocks = np.concatenate([head, qh, qs], 1)
    return blocks.reshape(rows, -1)


def quantise(w: np.ndarray, qtype) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    if qtype == T.Q8_0:
        return quantize(w.astype(np.float32), T.Q8_0)
    return kquant(w, 4 if qtype == T.Q4_K else 5)


# diffusers name -> BFL name of the modules whose published type is not the file's quant type
BFL_NAME = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "proj_out": "final_layer.linear",
}
QUANT_NAME = {"Q8_0": "q8_0", "Q5_K": "q5_k", "Q4_K": "q4_k"}


def write_gguf(path: Path, state: dict, qtype) -> dict:
    """Write a diffusers-keyed state dict (name -> torch tensor) to a GGUF file with the tensor types
    the published files give the same tensors. Returns name -> GGML type written."""
    import gguf

    from vd.models.flux_gguf import published_tensor_type

    w = gguf.GGUFWriter(str(path), arch="flux")
    types = {}
    for name, t in state.items():
        a = t.detach().float().numpy()
        module, param = name.rsplit(".", 1)
        bfl = f"{BFL_NAME.get(module, 'double_blocks.0.img_mlp.0')}.{param}"  # any block weight stands for the rest
        kind = gguf.GGMLQuantizationType[published_tensor_type(bfl, a.shape, QUANT_NAME[qtype.name])]
        if kind == qtype:
            w.add_tensor(name, quantise(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a.astype(np.float32 if kind == gguf.GGMLQuantizationType.F32 else np.float16))
        types[name] = kind
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def tiny_gguf_transformer(folder: Path, qtype, seed: int = 0) -> dict:
    """A random tiny Fill transformer, its GGUF file and config folder: {model, gguf, config, types}."""
    import torch
    from diffusers import FluxTransformer2DModel

    folder = Path(folder)
    cfg = folder / "config" / "transformer"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.json").write_text(json.dumps(TINY_GGUF_TRANSFORMER))
    torch.manual_seed(seed)
    model = FluxTransformer2DModel.from_config({k: v for k, v in TINY_GGUF_TRANSFORMER.items() if k[0] != "_"})
    path = folder / f"tiny-{qtype.name}.gguf"
    types = write_gguf(path, model.state_dict(), qtype)
    return {"model": model.eval(), "gguf": path, "config": cfg, "types": types}
