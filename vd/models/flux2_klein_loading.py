"""Reading FLUX.2 [klein] 4B from disk: transformer, autoencoder, scheduler and the Qwen3 text encoder.

Files (flat names in the model folders of `vd fetch flux2-klein flux2-klein-text`):
- `flux-2-klein-4b.safetensors`: the transformer, Black Forest Labs single-file layout (a
  diffusers-layout single file works too), read by diffusers' `from_single_file` with the config
  bundled in `vd/assets/flux2-klein/transformer/` (offline);
- `vae.safetensors`: the repository's `vae/diffusion_pytorch_model.safetensors` (diffusers keys),
  loaded strictly into an `AutoencoderKLFlux2` built from the bundled config;
- the text encoder folder: `config.json`, `model.safetensors.index.json` and its shards (a
  `Qwen3ForCausalLM`), `tokenizer.json` and `tokenizer_config.json` (a `Qwen2TokenizerFast`).

Every unreadable or incomplete file is one VdError sentence with the re-fetch command.
"""

from __future__ import annotations

from pathlib import Path

from vd.errors import VdError
from vd.install import pip_install
from vd.models.flux_loading import _first_line, require_accelerate, single_file_model

KLEIN_INSTALL = pip_install("gpu")
TEXT_LAYERS = (9, 18, 27)  # the Qwen3 hidden states the pipeline stacks into the prompt embedding
MAX_PROMPT_TOKENS = 512

# Qwen3's chat format for one user turn with thinking disabled, used only when the tokenizer files
# carry no chat template of their own (newer exports keep it in a separate chat_template.jinja)
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def config_dir() -> Path:
    """The bundled diffusers configs (`transformer/`, `vae/`, `scheduler/`)."""
    return Path(__file__).resolve().parents[1] / "assets" / "flux2-klein"


def require_klein_code() -> None:
    """diffusers with the FLUX.2 [klein] classes, and transformers for its pipeline module."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise VdError(f"FLUX.2 [klein] needs transformers; install it with: {KLEIN_INSTALL}") from None
    try:
        from diffusers import Flux2KleinInpaintPipeline  # noqa: F401
    except ImportError:
        raise VdError(
            "FLUX.2 [klein] needs a diffusers with Flux2KleinInpaintPipeline (0.42 is tested); "
            "upgrade it with: pip install -U diffusers"
        ) from None


def load_transformer(path, *, config=None, dtype=None):
    """Flux2Transformer2DModel from a single-file checkpoint, offline; every weight must be set."""
    require_klein_code()
    require_accelerate()
    from diffusers import Flux2Transformer2DModel

    cfg = Path(config) if config is not None else config_dir() / "transformer"
    return single_file_model(
        Flux2Transformer2DModel, path, config=cfg, dtype=dtype, what="FLUX.2 [klein]", model="flux2-klein"
    )


def load_vae(path, *, config=None, dtype=None):
    """AutoencoderKLFlux2 from a diffusers-layout safetensors file, loaded strictly, offline."""
    import torch

    require_klein_code()
    from diffusers import AutoencoderKLFlux2
    from safetensors.torch import load_file

    cfg = Path(config) if config is not None else config_dir() / "vae"
    vae = AutoencoderKLFlux2.from_config(AutoencoderKLFlux2.load_config(str(cfg)))
    try:
        state = load_file(str(path))
        vae.load_state_dict(state, strict=True)
    except Exception as e:
        raise VdError(
            f"cannot load the FLUX.2 [klein] autoencoder from {path} ({_first_line(e)}); "
            "re-fetch with: vd fetch flux2-klein --force"
        ) from None
    dt = dtype or torch.bfloat16
    return (vae if dt == torch.float32 else vae.to(dtype=dt)).eval()


def load_scheduler(config=None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = Path(config) if config is not None else config_dir() / "scheduler"
    return FlowMatchEulerDiscreteScheduler.from_config(FlowMatchEulerDiscreteScheduler.load_config(str(cfg)))


def load_text_encoder(folder, *, device="cpu", dtype=None):
    """(Qwen3ForCausalLM, Qwen2TokenizerFast) from the flux2-klein-text folder, offline."""
    import torch

    require_klein_code()
    from transformers import Qwen2TokenizerFast, Qwen3ForCausalLM

    folder = Path(folder)
    try:
        tokenizer = Qwen2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise VdError(
            f"cannot read the FLUX.2 [klein] tokenizer in {folder} ({_first_line(e)}); "
            "re-fetch with: vd fetch flux2-klein-text --force"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    try:
        model = Qwen3ForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=dtype or torch.bfloat16, low_cpu_mem_usage=True
        )
    except Exception as e:
        raise VdError(
            f"cannot load the FLUX.2 [klein] text encoder (Qwen3) from {folder} ({_first_line(e)}); "
            "re-fetch with: vd fetch flux2-klein-text --force"
        ) from None
    return model.to(device).eval(), tokenizer


def encode_prompt(text_encoder, tokenizer, prompt: str, *, device, dtype):
    """The prompt embedding [1, 512, 3 x hidden] exactly as the klein pipelines compute it."""
    import torch
    from diffusers import Flux2KleinInpaintPipeline

    with torch.inference_mode():
        return Flux2KleinInpaintPipeline._get_qwen3_prompt_embeds(
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            prompt=prompt,
            dtype=dtype,
            device=device,
            max_sequence_length=MAX_PROMPT_TOKENS,
            hidden_states_layers=TEXT_LAYERS,
        )


__all__ = [
    "config_dir",
    "require_klein_code",
    "load_transformer",
    "load_vae",
    "load_scheduler",
    "load_text_encoder",
    "encode_prompt",
    "TEXT_LAYERS",
    "MAX_PROMPT_TOKENS",
    "QWEN3_CHAT_TEMPLATE",
    "KLEIN_INSTALL",
]
