"""The real FLUX.1-Fill-dev loading path at the real width: a BFL single-file checkpoint (the keys of
flux1-fill-dev.safetensors, hidden size 3072 = 24 heads x 128, 384 in / 64 out channels) cut to one
double-stream and one single-stream block, read by diffusers' BFL -> diffusers conversion (which
hard-codes the width 3072) through vd's loader with the bundled config, then one velocity call.

~0.55 B parameters: 1.1 GB of bf16 on disk and about 3 GB of RAM while loading, ~10-30 s on one
core, so it is marked `slow`.
"""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from vd.models import flux_fill as F  # noqa: E402

pytestmark = pytest.mark.slow

D, MLP, HEAD = 3072, 12288, 128


def bfl_checkpoint(n_double: int, n_single: int, seed: int = 0) -> dict:
    """Random bf16 tensors under the BFL key names and shapes of FLUX.1-Fill-dev."""
    g = torch.Generator().manual_seed(seed)
    ck = {}

    def t(*shape, scale=0.02):
        return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)

    def lin(name, o, i):
        ck[f"{name}.weight"], ck[f"{name}.bias"] = t(o, i), t(o)

    lin("img_in", D, 384)
    lin("txt_in", D, 4096)
    for e, i in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        lin(f"{e}.in_layer", D, i)
        lin(f"{e}.out_layer", D, D)
    for b in range(n_double):
        for s in ("img", "txt"):
            p = f"double_blocks.{b}.{s}"
            lin(f"{p}_mod.lin", 6 * D, D)
            lin(f"{p}_attn.qkv", 3 * D, D)
            lin(f"{p}_attn.proj", D, D)
            ck[f"{p}_attn.norm.query_norm.scale"] = 1 + t(HEAD)
            ck[f"{p}_attn.norm.key_norm.scale"] = 1 + t(HEAD)
            lin(f"{p}_mlp.0", MLP, D)
            lin(f"{p}_mlp.2", D, MLP)
    for b in range(n_single):
        p = f"single_blocks.{b}"
        lin(f"{p}.linear1", 3 * D + MLP, D)
        lin(f"{p}.linear2", D, D + MLP)
        lin(f"{p}.modulation.lin", 3 * D, D)
        ck[f"{p}.norm.query_norm.scale"] = 1 + t(HEAD)
        ck[f"{p}.norm.key_norm.scale"] = 1 + t(HEAD)
    lin("final_layer.linear", 64, D)
    lin("final_layer.adaLN_modulation.1", 2 * D, D)
    return ck


@pytest.fixture(scope="module")
def full_width(tmp_path_factory):
    from diffusers import AutoencoderKL
    from flux_tiny import TINY_VAE, diffusers_vae_to_ldm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("flux-full-width")
    shipped = json.loads((F.config_dir() / "transformer" / "config.json").read_text())
    cut = dict(shipped, num_layers=1, num_single_layers=1)
    (folder / "config" / "transformer").mkdir(parents=True)
    (folder / "config" / "transformer" / "config.json").write_text(json.dumps(cut))
    (folder / "config" / "vae").mkdir()
    (folder / "config" / "vae" / "config.json").write_text(json.dumps(TINY_VAE))
    ck = bfl_checkpoint(1, 1)
    save_file(ck, folder / "flux1-fill-dev.safetensors")
    ae = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    save_file(diffusers_vae_to_ldm(ae.state_dict()), folder / "ae.safetensors")
    torch.save(torch.randn(1, 8, 4096), folder / "txt.pt")
    torch.save(torch.randn(1, 768), folder / "vec.pt")
    picked = {k: ck[k].clone() for k in ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight",
                                         "single_blocks.0.linear2.weight", "img_in.weight",
                                         "final_layer.adaLN_modulation.1.weight")}
    del ck
    yield folder, shipped, picked
    shutil.rmtree(folder, ignore_errors=True)


def test_bfl_checkpoint_at_full_width_loads_and_runs(full_width):
    folder, shipped, src = full_width
    ff = F.FluxFill.load(folder / "flux1-fill-dev.safetensors", folder / "ae.safetensors", folder / "txt.pt",
                         folder / "vec.pt", device="cpu", dtype=torch.bfloat16, config=folder / "config")
    tr = ff.transformer
    cfg = tr.config
    assert {k: cfg[k] for k in shipped if not k.startswith("_") and k not in ("num_layers", "num_single_layers")} == {
        k: v for k, v in shipped.items() if not k.startswith("_") and k not in ("num_layers", "num_single_layers")}
    assert cfg.num_attention_heads * cfg.attention_head_dim == D and tr.inner_dim == D
    assert (len(tr.transformer_blocks), len(tr.single_transformer_blocks)) == (1, 1)
    params = list(tr.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"cpu"}
    assert 0.5e9 < sum(p.numel() for p in params) < 0.6e9
    # the conversion split fused BFL tensors exactly where diffusers expects them
    qkv = src["double_blocks.0.img_attn.qkv.weight"]
    blk = tr.transformer_blocks[0].attn
    assert torch.equal(blk.to_q.weight, qkv[:D]) and torch.equal(blk.to_v.weight, qkv[2 * D:])
    single = tr.single_transformer_blocks[0]
    assert torch.equal(single.attn.to_k.weight, src["single_blocks.0.linear1.weight"][D:2 * D])
    assert torch.equal(single.proj_mlp.weight, src["single_blocks.0.linear1.weight"][3 * D:])
    assert torch.equal(single.proj_out.weight, src["single_blocks.0.linear2.weight"])
    assert torch.equal(tr.x_embedder.weight, src["img_in.weight"])
    shift, scale = src["final_layer.adaLN_modulation.1.weight"].chunk(2)
    assert torch.equal(tr.norm_out.linear.weight, torch.cat([scale, shift]))  # BFL (shift, scale) -> (scale, shift)
    # one velocity call at 32x32 through the Fill conditioning
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    v = ff.velocity(ff.noise(1, 32, 32, seed=0), 0.5, ff.condition(x, m), height=32, width=32)
    assert v.shape == (1, 4, 64) and torch.isfinite(v).all()
    ff.close()


def test_a_checkpoint_missing_blocks_is_refused(full_width, tmp_path):
    """Loading the cut checkpoint with the shipped 19 + 38 block config leaves most of the model unset:
    vd refuses instead of keeping empty or random layers."""
    from vd.errors import VdError

    folder, _, _ = full_width
    with pytest.raises(VdError, match=r"has 1 double- and 1 single-stream blocks where the model has 19 and 38"):
        F.load_transformer(folder / "flux1-fill-dev.safetensors")
