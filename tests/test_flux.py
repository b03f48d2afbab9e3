"""FLUX.1-Fill-dev: building blocks, tiny random models through the production loader, offload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from vd.models import flux_fill as F  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from flux_tiny import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("tinyflux"))


@pytest.fixture(scope="module")
def ff(tiny):
    return F.FluxFill.load(tiny["transformer"], tiny["ae"], tiny["txt"], tiny["vec"], device="cpu", config=tiny["config"])


def _backend(tiny, **kw):
    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    return F.FluxFillInpaint(device="cpu", paths=paths, config=tiny["config"], **kw)


def test_schedule_matches_bfl():
    ts = F.schedule(25, 1024)
    assert len(ts) == 26 and ts[0] == 1.0 and ts[-1] == 0.0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    mu = F.shift_mu(1024)
    assert mu == pytest.approx(0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256))
    assert F.shift_mu(256) == pytest.approx(0.5) and F.shift_mu(4096) == pytest.approx(1.15)
    t = 0.5
    assert ts[1] == pytest.approx(math.exp(mu) / (math.exp(mu) + (1 / (24 / 25) - 1)), rel=1e-12)
    # the shift pushes the midpoint above 0.5 (more time at high noise)
    assert F.time_shift(mu, [t])[0] == pytest.approx(math.exp(mu) / (math.exp(mu) + 1.0))
    assert F.time_shift(mu, [t])[0] > 0.5


def test_pack_unpack_roundtrip_and_layout():
    z = torch.arange(2 * 16 * 4 * 6, dtype=torch.float32).reshape(2, 16, 4, 6)
    tok = F.pack_latents(z)
    assert tok.shape == (2, 6, 64)
    assert torch.equal(F.unpack_latents(tok, 4, 6), z)
    # token 0 holds channel 0's 2x2 patch first: (0,0),(0,1),(1,0),(1,1)
    assert tok[0, 0, :4].tolist() == [z[0, 0, 0, 0], z[0, 0, 0, 1], z[0, 0, 1, 0], z[0, 0, 1, 1]]
    ids = F.latent_image_ids(4, 6)
    assert ids.shape == (6, 3) and ids[4].tolist() == [0, 1, 1]


def test_mask_tokens_layout():
    m = torch.zeros(1, 1, 32, 48)
    m[0, 0, 3, 5] = 1  # latent (0,0), in-cell offset (3,5) -> channel 3*8+5 of latent pixel (0,0)
    tok = F.mask_tokens(m)
    assert tok.shape == (1, (32 // 16) * (48 // 16), 256)
    assert tok.sum() == 1
    assert tok[0, 0, (3 * 8 + 5) * 4 + 0] == 1  # channel-major, patch position (0,0)


def test_tiny_models_load_through_single_file(tiny, ff):
    # weights survive the single-file formats and diffusers' converters exactly
    sd = ff.transformer.state_dict()
    assert all(torch.equal(sd[k], tiny["tr_state"][k]) for k in sd)
    sd = ff.ae.state_dict()
    assert set(sd) == set(tiny["ae_state"])
    assert all(torch.equal(sd[k], tiny["ae_state"][k]) for k in sd)
    assert ff.transformer.config.in_channels == 384 and ff.transformer.config.out_channels == 64
    assert ff.ae.config.latent_channels == 16
    assert ff.dtype == torch.float32 and ff.offload == "none"  # CPU: fp32, no offload


def test_building_blocks_shapes(ff):
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = ff.encode(x)
    assert z.shape == (2, 16, 4, 6) and z.dtype == torch.float32
    assert ff.decode(z).shape == (2, 3, 32, 48)
    m = torch.zeros(2, 1, 32, 48)
    m[:, :, 8:24, 8:40] = 1
    cond = ff.condition(x, m)
    assert cond.shape == (2, 6, 320)
    n = ff.noise(2, 32, 48, seed=3)
    assert n.shape == (2, 6, 64)
    assert torch.equal(n, ff.noise(2, 32, 48, seed=3)) and not torch.equal(n, ff.noise(2, 32, 48, seed=4))
    v = ff.velocity(n, 0.7, cond, height=32, width=48)
    assert v.shape == (2, 6, 64) and v.dtype == torch.float32
    # batched velocity == per-item velocity
    v0 = ff.velocity(n[:1], 0.7, cond[:1], height=32, width=48)
    assert torch.allclose(v[:1], v0, atol=1e-5)
    # a per-item timestep tensor works too
    v2 = ff.velocity(n, torch.tensor([0.7, 0.7]), cond, height=32, width=48)
    assert torch.allclose(v, v2, atol=1e-6)
    steps = []
    out = ff.denoise(n, cond, F.schedule(2, 6), height=32, width=48, callback=lambda i, k: steps.append((i, k)))
    assert out.shape == n.shape and steps == [(1, 2), (2, 2)]


def test_condition_ignores_masked_content(ff):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    y = x.clone()
    y[..., 8:24, 8:24] = -x[..., 8:24, 8:24]
    assert torch.allclose(ff.condition(x, m), ff.condition(y, m))


def test_inpaint_backend_mask_semantics(tiny):
    b = _backend(tiny, steps=2)
    assert b.name == "flux-fill" and "steps=2" in b.identity and "guidance=30.0" in b.identity
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 56, 3)) * 255).astype(np.uint8)  # not multiples of 16: padded internally
    mask = np.zeros((40, 56), bool)
    mask[10:30, 12:40] = True
    out = b.inpaint(rgb, mask, seed=1)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out[~mask], rgb[~mask])
    assert not np.array_equal(out[mask], rgb[mask])
    # deterministic per seed, different across seeds (upstream used one fixed noise for every call)
    assert np.array_equal(out, b.inpaint(rgb, mask, seed=1))
    assert not np.array_equal(out, b.inpaint(rgb, mask, seed=2))
    # empty mask: returned unchanged without running the model
    assert np.array_equal(b.inpaint(rgb, np.zeros_like(mask), seed=0), rgb)
    b.release()
    assert b._ff is None


def test_steps_and_guidance_are_used(tiny):
    rgb = np.full((32, 32, 3), 128, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    a = _backend(tiny, steps=1).inpaint(rgb, mask, seed=0)
    b = _backend(tiny, steps=3).inpaint(rgb, mask, seed=0)
    c = _backend(tiny, steps=3, guidance=3.0).inpaint(rgb, mask, seed=0)
    assert not np.array_equal(a, b)
    assert not np.array_equal(b, c)


@pytest.mark.parametrize("steps,seq", [(25, 1024), (4, 6), (10, 4096)])
def test_schedule_matches_diffusers_flux_scheduler(steps, seq):
    """Same sigmas as diffusers' FlowMatchEulerDiscreteScheduler configured as for FLUX.1 (the
    FluxFillPipeline passes linspace(1, 1/n, n) and mu from the token count; final sigma 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    sched.set_timesteps(sigmas=list(np.linspace(1.0, 1 / steps, steps)), mu=F.shift_mu(seq))
    assert np.allclose(sched.sigmas.numpy(), F.schedule(steps, seq), atol=1e-6)


def test_transformer_units_cover_every_parameter(ff):
    units = F.transformer_units(ff.transformer)
    n_units = sum(p.numel() for u in units for p in u.parameters())
    assert n_units == sum(p.numel() for p in ff.transformer.parameters())
    assert len(units) >= 2 + 5  # 1 double + 1 single block + embedders and output layers


def test_bundled_config_matches_the_bfl_checkpoint_layout():
    """The BFL key set of FLUX.1-Fill-dev (as meta tensors) converts onto a model built from the
    bundled config with every key and shape matched: the real checkpoint loads with it."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    cfg = json.loads((F.config_dir() / "transformer" / "config.json").read_text())
    D, mlp, hd = 3072, 12288, 128
    meta = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    ck = {}

    def lin(name, o, i, bias=True):
        ck[f"{name}.weight"] = meta(o, i)
        if bias:
            ck[f"{name}.bias"] = meta(o)

    lin("img_in", D, 384)
    lin("txt_in", D, 4096)
    for e, i in (("time_in", 256), ("vector_in", 768), ("guidance_in", 256)):
        lin(f"{e}.in_layer", D, i)
        lin(f"{e}.out_layer", D, D)
    for b in range(19):
        for s in ("img", "txt"):
            p = f"double_blocks.{b}.{s}"
            lin(f"{p}_mod.lin", 6 * D, D)
            lin(f"{p}_attn.qkv", 3 * D, D)
            lin(f"{p}_attn.proj", D, D)
            ck[f"{p}_attn.norm.query_norm.scale"] = meta(hd)
            ck[f"{p}_attn.norm.key_norm.scale"] = meta(hd)
            lin(f"{p}_mlp.0", mlp, D)
            lin(f"{p}_mlp.2", D, mlp)
    for b in range(38):
        p = f"single_blocks.{b}"
        lin(f"{p}.linear1", 3 * D + mlp, D)
        lin(f"{p}.linear2", D, D + mlp)
        lin(f"{p}.modulation.lin", 3 * D, D)
        ck[f"{p}.norm.query_norm.scale"] = meta(hd)
        ck[f"{p}.norm.key_norm.scale"] = meta(hd)
    lin("final_layer.linear", 64, D)
    lin("final_layer.adaLN_modulation.1", 2 * D, D)
    converted = convert_flux_transformer_checkpoint_to_diffusers(ck)
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert got == want
    assert sum(math.prod(s) for s in want.values()) > 11.8e9  # the 12B FLUX.1 transformer


def test_sequential_hooks_keep_outputs(ff):
    """The per-block hooks move modules and leave arguments and outputs alone (CPU stand-in)."""
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    cond = ff.condition(x, m)
    n = ff.noise(1, 32, 32, seed=0)
    ref = ff.velocity(n, 0.5, cond, height=32, width=32)
    moved = []
    seq = F.SequentialOffload(F.transformer_units(ff.transformer), torch.device("cpu"))
    probe = ff.transformer.transformer_blocks[0].register_forward_hook(lambda mod, a, o: moved.append(type(o)))
    try:
        out = ff.velocity(n, 0.5, cond, height=32, width=32)
    finally:
        seq.remove()
        probe.remove()
    assert torch.equal(out, ref)
    assert moved and moved[0] is tuple  # the block still returned its (encoder, hidden) outputs


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["none", "model", "sequential"])
def test_offload_modes_on_gpu(tiny, offload):
    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    b = F.FluxFillInpaint(device="cuda", paths=paths, config=tiny["config"], offload=offload, steps=2)
    rgb = np.full((32, 48, 3), 100, np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 8:40] = True
    out = b.inpaint(rgb, mask, seed=0)
    assert np.array_equal(out[~mask], rgb[~mask])
    ff = b.flux
    assert ff.dtype == torch.bfloat16
    on_gpu = {p.device.type for m in (ff.transformer, ff.ae) for p in m.parameters()}
    assert on_gpu == ({"cuda"} if offload == "none" else {"cpu"})
    b.release()
