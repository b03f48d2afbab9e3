"""The quantised FLUX.1-Fill-dev transformer: GGUF files (Q8_0, Q5_K_S, Q4_K_S) read by diffusers' own GGUF loading.

    quant = resolve_quant("auto")                  # "bf16" | "q8_0" | "q5_k" | "q4_k": the best installed
    models = weights_for(quant)                    # registry models the quant needs (`vd fetch ...`)
    tr = load_gguf_transformer(path, config=..., dtype=torch.bfloat16)   # GGUFLinear layers, GGUFParameter weights

The linear weights stay quantised in memory (diffusers' `GGUFParameter`, uint8 blocks with a
`quant_type`) and are dequantised one layer at a time in the forward, to bf16 on CUDA and fp32 on
the CPU; biases and norms are read as the file stores them (F32/F16) and cast to that dtype.
Published files use the BFL key layout (`double_blocks.N.img_attn.qkv.weight`, ...), which
diffusers' single-file loader converts, and keep the input/output projections and embedders in F32/F16
(`published_tensor_type`; sources in docs/quantised-flux.md); a diffusers-layout GGUF file loads too.

The autoencoder is not in the GGUF files: `flux-ae` holds `ae.safetensors` alone, and when the bf16
`flux-fill` model is installed its copy of the same file is used instead (no second download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from vd.errors import VdError

# registry model and file name of each quantisation
GGUF_FILES = {
    "q8_0": ("flux-fill-q8", "flux1-fill-dev-Q8_0.gguf"),
    "q5_k": ("flux-fill-q5k", "flux1-fill-dev-Q5_K_S.gguf"),
    "q4_k": ("flux-fill-q4k", "flux1-fill-dev-Q4_K_S.gguf"),
}
QUANT_PREFERENCE = ("bf16", "q8_0", "q5_k", "q4_k")  # best quality first: "auto" takes the first installed

# Footprint facts for the memory plan. ESTIMATES from the file sizes (GGUF_TRANSFORMER_BYTES) and from the
# model's parameter counts times each format's bytes per weight (34 bytes per 32 for Q8_0, 176 per 256 for
# Q5_K, 144 per 256 for Q4_K): not measured on a GPU yet. The file sizes are those of `published_gguf_bytes`:
# the Q4_K_S one is the publisher's own (YarvixPA commit 8aee749), Q8_0 equals two mirrors' copies, Q5_K_S
# is derived (docs/quantised-flux.md).
GGUF_TRANSFORMER_BYTES = {"q8_0": 12_727_035_168, "q5_k": 8_289_199_392, "q4_k": 6_809_920_800}
# the largest offload unit is a double-stream block (339,831,296 weights)
GGUF_LARGEST_UNIT_BYTES = {"q8_0": 361_100_000, "q5_k": 233_700_000, "q4_k": 191_200_000}
# a GGUFLinear dequantises its whole weight per call: the largest (3072 x 18432) as fp16 then bf16
GGUF_DEQUANT_TRANSIENT_BYTES = 226_500_000


def _present(model: str) -> bool:
    from vd.errors import MissingWeightsError
    from vd.fetch.registry import require

    try:
        require(model, auto_fetch=False)
        return True
    except MissingWeightsError:
        return False


def bf16_ae_present() -> bool:
    """Whether the bf16 `flux-fill` model's ae.safetensors is installed (reused by the GGUF variants)."""
    from vd.fetch.registry import file_state, model_spec

    spec = model_spec("flux-fill")
    return any(f.name == "ae.safetensors" and file_state("flux-fill", f).state == "present" for f in spec.files)


def weights_for(quant: str) -> list[str]:
    """Every registry model a quant needs: `flux-ae` only when flux-fill's own ae.safetensors is not there."""
    if quant == "bf16":
        return ["flux-fill", "flux-prompt"]
    ae = [] if bf16_ae_present() else ["flux-ae"]
    return [GGUF_FILES[quant][0], *ae, "flux-prompt"]


def quant_installed(quant: str) -> bool:
    return all(_present(m) for m in weights_for(quant))


def resolve_quant(quant: str, placement: Optional[dict] = None) -> str:
    """The quant to load: the user's when not "auto"; else the memory plan's (`placement["quant"]`);
    else the best installed of bf16 > q8_0 > q5_k > q4_k; else bf16 (whose error names `vd fetch flux-fill`)."""
    if quant != "auto":
        return quant
    planned = (placement or {}).get("quant")
    if planned:
        return str(planned)
    return next((q for q in QUANT_PREFERENCE if quant_installed(q)), "bf16")


def gguf_blocks(path) -> tuple[int, int]:
    """(double-stream, single-stream) block counts of a GGUF Flux checkpoint, from its tensor names."""
    from gguf import GGUFReader

    from vd.models.flux_loading import count_blocks

    return count_blocks(t.name for t in GGUFReader(str(path)).tensors)


def _fetch_hint(model: Optional[str]) -> str:
    return f"vd fetch {model} --force" if model else "vd fetch flux-fill-q8 --force (or the quant you use)"


def load_gguf_transformer(path, *, config, dtype, model: Optional[str] = None):
    """FluxTransformer2DModel from a GGUF file (BFL or diffusers keys), offline; weights stay quantised and
    compute in `dtype`. `model` names the registry entry in the re-fetch hint of the errors."""
    import json

    from vd.models.flux_loading import _first_line, _unset_weights, require_accelerate
    from vd.models.flux_offload import no_nan_fill

    require_accelerate()
    try:
        import gguf  # noqa: F401
    except ImportError:
        from vd.install import pip_install

        raise VdError(f"reading GGUF weights needs the gguf package; install it with: {pip_install('gpu')}") from None
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    cfg = Path(config)
    hint = _fetch_hint(model)
    try:
        want_cfg = json.loads((cfg / "config.json").read_text())
        have = gguf_blocks(path)
    except Exception:  # unreadable here: from_single_file says why below
        have = None
    if have is not None:
        want = (int(want_cfg.get("num_layers", 0)), int(want_cfg.get("num_single_layers", 0)))
        if have != want:
            raise VdError(
                f"the FLUX.1-Fill-dev GGUF file {path} has {have[0]} double- and {have[1]} single-stream "
                f"blocks where the model has {want[0]} and {want[1]}; re-fetch with: {hint}"
            )
    try:
        with no_nan_fill():
            tr = FluxTransformer2DModel.from_single_file(
                str(path),
                quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                config=str(cfg),
                local_files_only=True,
                torch_dtype=dtype,
                low_cpu_mem_usage=True,
            )
    except Exception as e:
        raise VdError(
            f"cannot load the FLUX.1-Fill-dev transformer from {path} ({_first_line(e)}); re-fetch with: {hint}"
        ) from None
    unset = _unset_weights(tr)
    if unset:
        raise VdError(
            f"the FLUX.1-Fill-dev GGUF file {path} lacks {len(unset)} of the model's weights "
            f"(first: {unset[0]}); re-fetch with: {hint}"
        )
    return tr


def bfl_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> float shape of every tensor of a BFL-layout Flux checkpoint (as GGUF files hold them) for a
    diffusers transformer config; linear weights are [out, in]."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    head, mlp = int(config["attention_head_dim"]), 4 * inner
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, n_in: int, n_out: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)

    for name, n_in in (("time_in", 256), ("vector_in", int(config["pooled_projection_dim"])), ("guidance_in", 256)):
        if name != "guidance_in" or config.get("guidance_embeds", True):
            linear(f"{name}.in_layer", n_in, inner)
            linear(f"{name}.out_layer", inner, inner)
    linear("txt_in", int(config["joint_attention_dim"]), inner)
    linear("img_in", int(config["in_channels"]), inner)
    for i in range(int(config["num_layers"])):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            linear(f"{b}_mod.lin", inner, 6 * inner)
            linear(f"{b}_attn.qkv", inner, 3 * inner)
            linear(f"{b}_attn.proj", inner, inner)
            linear(f"{b}_mlp.0", inner, mlp)
            linear(f"{b}_mlp.2", mlp, inner)
            shapes[f"{b}_attn.norm.query_norm.scale"] = shapes[f"{b}_attn.norm.key_norm.scale"] = (head,)
    for i in range(int(config["num_single_layers"])):
        b = f"single_blocks.{i}"
        linear(f"{b}.modulation.lin", inner, 3 * inner)
        linear(f"{b}.linear1", inner, 3 * inner + mlp)
        linear(f"{b}.linear2", inner + mlp, inner)
        shapes[f"{b}.norm.query_norm.scale"] = shapes[f"{b}.norm.key_norm.scale"] = (head,)
    out = int(config.get("patch_size", 1)) ** 2 * int(config.get("out_channels") or config["in_channels"])
    linear("final_layer.linear", inner, out)
    linear("final_layer.adaLN_modulation.1", inner, 2 * inner)
    return shapes


# Tensors the published files keep unquantised (city96's ComfyUI-GGUF tools/lcpp.patch, which the
# quantiser of YarvixPA's files applies): F32 for the first and last projections, F16 for the other embedders.
_KEPT_F32 = ("img_in.", "time_in.in_layer.", "vector_in.in_layer.", "guidance_in.in_layer.", "final_layer.linear.")
_KEPT_F16 = ("txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")


def published_tensor_type(name: str, shape: tuple[int, ...], quant: str) -> str:
    """GGML type ("F32", "F16", "Q8_0", "Q5_K" or "Q4_K") of a BFL-named tensor in the published GGUF file of
    `quant`: 1-D tensors and the _KEPT_F32 projections F32, the _KEPT_F16 ones F16, every other weight (the
    blocks' linears, whose rows are whole 256-value super-blocks) quantised."""
    if len(shape) == 1 or name.startswith(_KEPT_F32):
        return "F32"
    if name.startswith(_KEPT_F16):
        return "F16"
    return {"q8_0": "Q8_0", "q5_k": "Q5_K", "q4_k": "Q4_K"}[quant]


# bytes per weight of each type: (block values, block bytes)
_TYPE_BLOCKS = {"F32": (1, 4), "F16": (1, 2), "Q8_0": (32, 34), "Q5_K": (256, 176), "Q4_K": (256, 144)}
_GGUF_KV = ({"general.architecture": "flux"}, ("general.quantization_version", "general.file_type"))


def published_gguf_bytes(config: dict, quant: str) -> int:
    """The exact size of a FLUX.1 GGUF file written as the published ones are (GGUF v3, 32-byte alignment,
    the architecture string and two uint32 keys, `bfl_layout(config)` with `published_tensor_type`)."""
    layout = bfl_layout(config)
    header = 4 + 4 + 8 + 8  # magic, version, tensor count, key count
    strings, ints = _GGUF_KV
    header += sum(8 + len(k) + 4 + 8 + len(v) for k, v in strings.items()) + sum(8 + len(k) + 4 + 4 for k in ints)
    data = 0
    for name, shape in layout.items():
        header += 8 + len(name.encode()) + 4 + 8 * len(shape) + 4 + 8  # name, dims, type, offset
        per, size = _TYPE_BLOCKS[published_tensor_type(name, shape, quant)]
        n = 1
        for d in shape:
            n *= int(d)
        data += -(-(n // per * size) // 32) * 32  # each tensor's data padded to the alignment
    return -(-header // 32) * 32 + data


def is_quantised(module) -> bool:
    """Whether a module holds GGUF-quantised weights (they must never be cast to another dtype)."""
    return any(hasattr(p, "quant_type") for p in module.parameters())


__all__ = [
    "GGUF_FILES",
    "QUANT_PREFERENCE",
    "GGUF_TRANSFORMER_BYTES",
    "GGUF_LARGEST_UNIT_BYTES",
    "GGUF_DEQUANT_TRANSIENT_BYTES",
    "weights_for",
    "quant_installed",
    "resolve_quant",
    "bf16_ae_present",
    "gguf_blocks",
    "load_gguf_transformer",
    "is_quantised",
    "bfl_layout",
    "published_tensor_type",
    "published_gguf_bytes",
]
