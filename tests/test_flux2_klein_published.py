"""FLUX.2 [klein] 4B as published, against what vd bundles and assumes (sources in docs/quantised-flux.md):
the transformer and autoencoder configs, the sampling schedule of Black Forest Labs' reference code,
the prompt embedding's layers and length, the Qwen3 chat format of the fallback template, and an
autoencoder file saved without BatchNorm's step counter."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from vd.models import flux2_klein_loading as L  # noqa: E402

# diffusers' scripts/convert_flux2_to_diffusers.py ("klein-4b") and the diffusers transformer/config.json
# of the repository (as mirrored by YuCollection/FLUX.2-klein-4B-Diffusers)
PUBLISHED_TRANSFORMER = {
    "patch_size": 1, "in_channels": 128, "out_channels": None, "num_layers": 5, "num_single_layers": 20,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 7680,
    "timestep_guidance_channels": 256, "mlp_ratio": 3.0, "axes_dims_rope": [32, 32, 32, 32], "rope_theta": 2000,
    "eps": 1e-06, "guidance_embeds": False,
}
# vae/config.json of the repository at revision e7b7dc27 (as copied in codeShare/Flux-Klein-SDNQ-4bit;
# its "force_upcast" is not an argument of diffusers' AutoencoderKLFlux2)
PUBLISHED_VAE = {
    "act_fn": "silu", "batch_norm_eps": 0.0001, "batch_norm_momentum": 0.1, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 32, "layers_per_block": 2,
    "mid_block_add_attention": True, "norm_num_groups": 32, "out_channels": 3, "patch_size": [2, 2],
    "sample_size": 1024, "up_block_types": ["UpDecoderBlock2D"] * 4, "use_post_quant_conv": True,
    "use_quant_conv": True,
}


def _bundled(sub: str) -> dict:
    cfg = json.loads((L.config_dir() / sub / "config.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _params(model_cls, cfg: dict) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = model_cls.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def test_bundled_configs_are_the_published_ones_and_match_the_file_sizes():
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    from vd.fetch.registry import model_spec

    tr, vae = _bundled("transformer"), _bundled("vae")
    assert tr == PUBLISHED_TRANSFORMER
    assert {k: v for k, v in vae.items() if k != "decoder_block_out_channels"} == PUBLISHED_VAE
    assert vae.get("decoder_block_out_channels") is None  # the decoder as wide as the encoder
    # bf16 files: 2 bytes a weight (the transformer listed at 7.22 GiB, the vae/ file at 168 MB)
    from vd.models.flux2_klein import TRANSFORMER_FILE, VAE_FILE

    files = {f.name: f.expected_bytes for f in model_spec("flux2-klein").files}
    n_tr, n_vae = _params(Flux2Transformer2DModel, tr), _params(AutoencoderKLFlux2, vae)
    assert n_tr == 3_875_544_576 and abs(2 * n_tr / files[TRANSFORMER_FILE] - 1) < 0.005
    assert abs(2 * n_vae / files[VAE_FILE] - 1) < 0.005


def bfl_schedule(steps: int, seq_len: int) -> list[float]:
    """black-forest-labs/flux2 src/flux2/sampling.py get_schedule: linspace(1, 0) time-shifted by the
    empirical mu (generalized_time_snr_shift with sigma 1)."""
    a1, b1, a2, b2 = 8.73809524e-05, 1.89833333, 0.00016927, 0.45666666
    if seq_len > 4300:
        mu = a2 * seq_len + b2
    else:
        m_200, m_10 = a2 * seq_len + b2, a1 * seq_len + b1
        a = (m_200 - m_10) / 190.0
        mu = a * steps + (m_200 - 200.0 * a)
    ts = [1 - i / steps for i in range(steps + 1)]
    return [0.0 if t == 0 else math.exp(mu) / (math.exp(mu) + (1 / t - 1)) for t in ts]


@pytest.mark.parametrize(("steps", "height", "width"), [(4, 512, 768), (4, 1152, 1152), (28, 1024, 1024)])
def test_the_bundled_scheduler_gives_the_reference_schedule(steps, height, width):
    """Only use_dynamic_shifting and the exponential time shift of the bundled scheduler config matter
    (the pipeline passes its own mu); with them the pipeline's sigmas are BFL's reference timesteps."""
    from vd.models.flux2_klein_model import VAE_FACTOR, schedule

    got = schedule(L.load_scheduler(), steps, height, width)
    want = bfl_schedule(steps, (height // VAE_FACTOR) * (width // VAE_FACTOR))
    assert got == pytest.approx(want, abs=1e-5)


def test_prompt_embedding_settings_are_the_reference_ones():
    """BFL's Qwen3Embedder (src/flux2/text_encoder.py): hidden states 9, 18, 27, 512 tokens; and the
    same defaults in diffusers' klein inpaint pipeline, which vd calls with its own constants."""
    import inspect

    from diffusers import Flux2KleinInpaintPipeline

    assert L.TEXT_LAYERS == (9, 18, 27) and L.MAX_PROMPT_TOKENS == 512
    params = inspect.signature(Flux2KleinInpaintPipeline.__call__).parameters
    assert tuple(params["text_encoder_out_layers"].default) == L.TEXT_LAYERS
    assert params["max_sequence_length"].default == L.MAX_PROMPT_TOKENS
    assert 3 * 2560 == PUBLISHED_TRANSFORMER["joint_attention_dim"]  # three Qwen3-4B hidden states of 2560


def test_the_fallback_chat_template_renders_qwen3_with_thinking_off(tmp_path):
    """Tokenizer files without a chat template get vd's fallback, which renders one user turn as Qwen3's
    template does with enable_thinking=False (the call of BFL's embedder and of the pipeline)."""
    from klein_tiny import make_tiny_text

    folder = make_tiny_text(tmp_path / "text", chat_template=False)
    assert not (folder / "chat_template.jinja").exists()
    _, tokenizer = L.load_text_encoder(folder, device="cpu", dtype=torch.float32)
    assert tokenizer.chat_template == L.QWEN3_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a room"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert text == "<|im_start|>user\na room<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_an_autoencoder_file_without_the_batch_norm_counter_loads(tmp_path):
    """The autoencoder is loaded strictly; a file written without BatchNorm's num_batches_tracked (a
    conversion that keeps only running_mean/running_var) still loads, with the same statistics."""
    from klein_tiny import make_tiny_klein
    from safetensors.torch import load_file, save_file

    tiny = make_tiny_klein(tmp_path / "klein")
    state = load_file(str(tiny["vae"]))
    assert "bn.num_batches_tracked" in state
    del state["bn.num_batches_tracked"]
    bare = tmp_path / "vae.safetensors"
    save_file(state, str(bare))
    vae = L.load_vae(bare, config=tiny["config"] / "vae", dtype=torch.float32)
    assert torch.equal(vae.bn.running_mean, tiny["vae_state"]["bn.running_mean"])
    assert torch.equal(vae.bn.running_var, tiny["vae_state"]["bn.running_var"])
