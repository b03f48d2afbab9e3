"""Reading FLUX.1-Fill-dev from disk: the transformer, the autoencoder and the empty-prompt embeddings.

Checkpoints: `flux1-fill-dev.safetensors` (BFL layout; a diffusers-layout single file works too)
and `ae.safetensors` (LDM layout), read by diffusers' `from_single_file` with the configs bundled
in `vd/assets/flux-fill/` (offline, `local_files_only=True`). Empty-prompt embeddings `txt.pt`
(T5, [1,512,4096]) and `vec.pt` (CLIP pooled, [1,768]) come from `vd fetch flux-prompt` and are
read with `torch.load(weights_only=True)`.

The transformer is built empty (meta device, through accelerate) and filled from the checkpoint
in bf16: without accelerate diffusers would first build all 12 B parameters in fp32 on the CPU
(~48 GB), so loading refuses instead and names the `gpu` extra. A checkpoint that leaves any of
the model's weights unset is refused too (diffusers would keep them empty or random).
"""

from __future__ import annotations

from pathlib import Path

from vd.errors import VdError
from vd.install import pip_install
from vd.models.flux_offload import no_nan_fill

ACCELERATE_INSTALL = pip_install("gpu")


def config_dir() -> Path:
    """The bundled diffusers configs (`transformer/config.json`, `vae/config.json`)."""
    return Path(__file__).resolve().parents[1] / "assets" / "flux-fill"


def read_embedding(path, what: str):
    """One tensor from a `torch.save`d file (a bare tensor or a dict holding one)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VdError(
            f"cannot read the {what} embedding {path} ({str(e).strip()[:120]}); "
            "re-fetch with: vd fetch flux-prompt --force"
        ) from None
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if hasattr(v, "shape")]
        if len(tensors) != 1:
            raise VdError(f"the {what} embedding {path} should hold one tensor, found {len(tensors)}")
        obj = tensors[0]
    if not hasattr(obj, "shape"):
        raise VdError(f"the {what} embedding {path} is not a tensor")
    return obj


def require_accelerate() -> None:
    """accelerate lets diffusers build the model empty and fill it in its final dtype."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise VdError(
            "loading FLUX.1-Fill-dev needs accelerate (without it diffusers builds the 12 B transformer "
            f"in fp32 on the CPU, ~48 GB of RAM); install it with: {ACCELERATE_INSTALL}"
        ) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _unset_weights(model) -> list[str]:
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]


def checkpoint_blocks(path) -> tuple[int, int]:
    """(double-stream, single-stream) block counts of a Flux checkpoint, BFL or diffusers keys, from its header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return count_blocks(f.keys())


def count_blocks(keys) -> tuple[int, int]:
    """(double-stream, single-stream) block counts from a Flux checkpoint's tensor names (BFL or diffusers)."""
    count: dict[str, set[int]] = {}
    for k in keys:
        parts = k.removeprefix("model.diffusion_model.").split(".")
        if (
            len(parts) > 2
            and parts[1].isdigit()
            and parts[0] in ("double_blocks", "transformer_blocks", "single_blocks", "single_transformer_blocks")
        ):
            kind = "single" if parts[0].startswith("single") else "double"
            count.setdefault(kind, set()).add(int(parts[1]))
    return len(count.get("double", ())), len(count.get("single", ()))


def _check_blocks(path, cfg_dir: Path) -> None:
    import json

    try:
        cfg = json.loads((cfg_dir / "config.json").read_text())
        have = checkpoint_blocks(path)
    except Exception:  # unreadable here: from_single_file says why below
        return
    want = (int(cfg.get("num_layers", 0)), int(cfg.get("num_single_layers", 0)))
    if have != want:
        raise VdError(
            f"the FLUX.1-Fill-dev checkpoint {path} has {have[0]} double- and {have[1]} single-stream "
            f"blocks where the model has {want[0]} and {want[1]}; re-fetch with: vd fetch flux-fill --force"
        )


def load_transformer(path, *, config=None, dtype=None):
    """FluxTransformer2DModel from a single-file checkpoint (BFL or diffusers layout), offline, in bf16.
    A `.gguf` file loads quantised through `vd.models.flux_gguf` (its weights compute in `dtype`)."""
    import torch

    cfg = Path(config) if config is not None else config_dir() / "transformer"
    if str(path).lower().endswith(".gguf"):
        from vd.models.flux_gguf import GGUF_FILES, load_gguf_transformer

        model = next((m for m, name in GGUF_FILES.values() if name == Path(path).name), None)
        return load_gguf_transformer(path, config=cfg, dtype=dtype or torch.bfloat16, model=model)
    require_accelerate()
    from diffusers import FluxTransformer2DModel

    _check_blocks(path, cfg)
    return single_file_model(
        FluxTransformer2DModel, path, config=cfg, dtype=dtype, what="FLUX.1-Fill-dev", model="flux-fill"
    )


def single_file_model(cls, path, *, config: Path, dtype, what: str, model: str):
    """A diffusers model from a single-file checkpoint, offline, in `dtype` (default bf16), every weight
    set; a file that does not load, or leaves weights unset, is one sentence naming `vd fetch MODEL --force`."""
    import torch

    try:
        with no_nan_fill():  # the weights are read into fresh allocations: no NaN fill first
            loaded = cls.from_single_file(
                str(path),
                config=str(config),
                local_files_only=True,
                torch_dtype=dtype or torch.bfloat16,
                low_cpu_mem_usage=True,
            )
    except Exception as e:
        raise VdError(
            f"cannot load the {what} transformer from {path} ({_first_line(e)}); "
            f"re-fetch with: vd fetch {model} --force"
        ) from None
    unset = _unset_weights(loaded)
    if unset:
        raise VdError(
            f"the {what} checkpoint {path} lacks {len(unset)} of the model's weights "
            f"(first: {unset[0]}); re-fetch with: vd fetch {model} --force"
        )
    return loaded


def load_ae(path, *, config=None, dtype=None):
    """The Flux AutoencoderKL from `ae.safetensors` (LDM layout), offline."""
    import torch
    from diffusers import AutoencoderKL

    cfg = Path(config) if config is not None else config_dir() / "vae"
    try:
        return AutoencoderKL.from_single_file(
            str(path), config=str(cfg), local_files_only=True, torch_dtype=dtype or torch.bfloat16
        )
    except Exception as e:
        raise VdError(
            f"cannot load the Flux autoencoder from {path} ({_first_line(e)}); "
            "re-fetch with: vd fetch flux-fill --force"
        ) from None


__all__ = [
    "single_file_model",
    "config_dir",
    "read_embedding",
    "require_accelerate",
    "load_transformer",
    "load_ae",
    "ACCELERATE_INSTALL",
]
