"""Quantised FLUX.1-Fill-dev (GGUF Q8_0 / Q5_K / Q4_K): tiny random transformers written to real GGUF
files and loaded through the production loader, the full-size BFL layout on the meta device, offload
with quantised weights, the registry and the `vd fetch` sentence of missing weights.

Measured velocity error of the tiny model against its unquantised self (relative L2, fp32 compute on
the CPU, seed 0), with the published files' tensor types (the input/output projections and embedders
unquantised): Q8_0 0.027 %, Q5_K 0.21 %, Q4_K 0.43 %; the bounds below leave about 2x of room.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("diffusers")

from gguf import GGMLQuantizationType as T  # noqa: E402

from vd.models import flux_fill as F  # noqa: E402
from vd.models import flux_gguf as G  # noqa: E402

REL_TOL = {T.Q8_0: 0.0006, T.Q5_K: 0.005, T.Q4_K: 0.009}
QUANT_OF = {"q8_0": T.Q8_0, "q5_k": T.Q5_K, "q4_k": T.Q4_K}


@pytest.fixture(scope="module")
def tiny_q(tmp_path_factory):
    from flux_gguf_tiny import tiny_gguf_transformer

    made = {}

    def get(qtype):
        if qtype not in made:
            made[qtype] = tiny_gguf_transformer(tmp_path_factory.mktemp(qtype.name), qtype)
        return made[qtype]

    return get


def _inputs(seed: int = 1, tokens: int = 16):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, tokens, 384, generator=g),
        encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
        pooled_projections=torch.randn(1, 16, generator=g),
        timestep=torch.tensor([0.7]),
        img_ids=torch.zeros(tokens, 3),
        txt_ids=torch.zeros(8, 3),
        guidance=torch.tensor([30.0]),
        return_dict=False,
    )


def _linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q5_K, T.Q4_K], ids=lambda q: q.name)
def test_gguf_file_loads_quantised_and_agrees_with_the_unquantised_model(tiny_q, qtype):
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    t = tiny_q(qtype)
    tr = F.load_transformer(t["gguf"], config=t["config"], dtype=torch.float32)  # the production loader
    quantised = {n: m for n, m in _linears(tr) if isinstance(m.weight, GGUFParameter)}
    written = {n.removesuffix(".weight") for n, q in t["types"].items() if q == qtype}
    assert set(quantised) == written and len(written) >= 20  # every weight written quantised stays quantised
    assert {m.weight.quant_type for m in quantised.values()} == {qtype}
    assert all(m.weight.dtype == torch.uint8 for m in quantised.values())
    # the published files keep img_in (Fill's 384 inputs) and the other projections in F32/F16 whatever
    # the quant: read as plain fp32 tensors like the F32 biases and norms
    assert t["types"]["x_embedder.weight"] == gguf.GGMLQuantizationType.F32
    assert t["types"]["context_embedder.weight"] == gguf.GGMLQuantizationType.F16
    for m in (tr.x_embedder, tr.context_embedder, tr.proj_out):
        assert not isinstance(m.weight, GGUFParameter) and m.weight.dtype == torch.float32
    assert tr.x_embedder.in_features == 384 and tr.x_embedder.bias.dtype == torch.float32
    # diffusers' dequantisation of what it read equals gguf-py's own (an independent implementation)
    reader = {x.name: x for x in gguf.GGUFReader(str(t["gguf"])).tensors}
    name, mod = next(iter(quantised.items()))
    ours = dequantize_gguf_tensor(mod.weight).float().numpy()
    ref = gguf.quants.dequantize(reader[name + ".weight"].data, qtype)
    # (diffusers computes in fp16, gguf-py in fp32: they agree to fp16 rounding of the largest weight)
    assert np.allclose(ours, ref, rtol=2e-3, atol=2e-3 * float(np.abs(ref).max()))

    with torch.no_grad():
        want = t["model"](**_inputs())[0]
        got = tr(**_inputs())[0]
    rel = float((got - want).norm() / want.norm())
    assert rel < REL_TOL[qtype], rel
    assert rel > 1e-5  # it really ran on quantised weights


@pytest.mark.parametrize("quant", ["q8_0", "q5_k", "q4_k"])
def test_full_size_bfl_layout_converts_with_quant_types_intact(quant):
    """The published files' BFL keys and tensor types at the real size (on the meta device: no 12 B
    allocation): diffusers' conversion keeps every block weight a GGUFParameter of the file's quant type,
    and the projections the files keep in F32/F16 (img_in with Fill's 384 inputs, ...) plain tensors."""
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from vd.models.flux_loading import count_blocks

    cfg_dir = F.config_dir() / "transformer"
    cfg = json.loads((cfg_dir / "config.json").read_text())
    layout = G.bfl_layout(cfg)
    qtype = QUANT_OF[quant]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    plain = {"F32": torch.float32, "F16": torch.float16}
    sd, kept = {}, set()
    for name, shape in layout.items():
        kind = G.published_tensor_type(name, shape, quant)
        if kind in plain:
            sd[name] = torch.empty(shape, dtype=plain[kind], device="meta")
            kept.add(name)
        else:
            assert kind == qtype.name and shape[1] % block == 0, (name, kind)
            data = torch.empty(shape[0], shape[1] // block * size, dtype=torch.uint8, device="meta")
            sd[name] = GGUFParameter(data, quant_type=qtype)
    assert count_blocks(sd) == (cfg["num_layers"], cfg["num_single_layers"])  # what the loader checks first
    tr = FluxTransformer2DModel.from_single_file(
        sd,
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
        config=str(cfg_dir),
        local_files_only=True,
        torch_dtype=torch.bfloat16,
        device="meta",
    )
    n_params = sum(int(np.prod(s)) for s in layout.values())
    assert n_params == 11_902_391_360  # the layout is the whole FLUX.1-Fill-dev transformer
    lin = dict(_linears(tr))
    unquantised = {"x_embedder", "context_embedder", "proj_out", "norm_out.linear"} | {
        f"time_text_embed.{e}.linear_{i}" for e in ("timestep_embedder", "guidance_embedder", "text_embedder")
        for i in (1, 2)}
    assert unquantised <= set(lin) and sum(len(s) == 2 for n, s in layout.items() if n in kept) == len(unquantised)
    for name, m in lin.items():
        if name in unquantised:
            assert not isinstance(m.weight, GGUFParameter), name
        else:
            assert isinstance(m.weight, GGUFParameter) and m.weight.quant_type == qtype, name
            assert tuple(m.weight.quant_shape) == (m.out_features, m.in_features)
    assert lin["x_embedder"].in_features == 384  # Fill: 64 noisy + 64 masked-image latent + 256 mask channels
    # the largest offload unit of the estimates: a double block, 339,831,296 weights
    assert sum(int(np.prod(s)) for n, s in layout.items() if n.startswith("double_blocks.0.")) == 339_831_296


def test_published_file_sizes_follow_from_the_layout_and_types():
    """The BFL layout with the published tensor types, written as GGUF, is exactly the publisher's Q4_K_S
    file (size in YarvixPA's LFS pointer): the key set, shapes and per-tensor types are those of the real
    files. The same layout gives the other sizes the registry and the memory plan use."""
    from vd.fetch.registry import model_spec

    cfg = json.loads((F.config_dir() / "transformer" / "config.json").read_text())
    q4 = model_spec("flux-fill-q4k").files[0]
    assert q4.size == 6_809_920_800 and G.published_gguf_bytes(cfg, "q4_k") == q4.size
    for quant, (model, _) in G.GGUF_FILES.items():
        assert G.published_gguf_bytes(cfg, quant) == G.GGUF_TRANSFORMER_BYTES[quant]
        assert model_spec(model).files[0].expected_bytes == G.GGUF_TRANSFORMER_BYTES[quant]
    # the same rules give city96's FLUX.1-dev files (64 input channels), another publisher's LFS pointers
    dev = dict(cfg, in_channels=64, out_channels=64)
    assert G.published_gguf_bytes(dev, "q4_k") == 6_805_988_640  # city96/FLUX.1-dev-gguf commit 7e7853b
    assert G.published_gguf_bytes(dev, "q5_k") == 8_285_267_232  # commit 0578fc2


def test_model_and_sequential_offload_keep_gguf_weights(tiny_q):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from vd.models.flux_offload import HostWeights, SequentialOffload, transformer_units

    t = tiny_q(T.Q8_0)
    tr = F.load_transformer(t["gguf"], config=t["config"], dtype=torch.float32)
    names = [n for n, m in _linears(tr) if isinstance(m.weight, GGUFParameter)]
    with torch.no_grad():
        ref = tr(**_inputs())[0]

    def quant_types():
        mods = dict(tr.named_modules())
        return {n: getattr(mods[n].weight, "quant_type", None) for n in names}

    # model offload: upload (meta stands in for a device) and drop keep the class and the quant type
    hw = HostWeights(tr)
    hw.upload("meta")
    assert set(quant_types().values()) == {T.Q8_0}
    assert {dict(tr.named_modules())[n].weight.device.type for n in names} == {"meta"}
    hw.drop()
    assert set(quant_types().values()) == {T.Q8_0}
    host = {id(sub): h for sub, kind, key, h in hw.slots if key == "weight"}
    mods = dict(tr.named_modules())
    assert all(isinstance(host[id(mods[n])], GGUFParameter) for n in names)  # the host copies stay quantised

    # sequential offload: each unit uploads for its forward and drops after; the output is unchanged
    seq = SequentialOffload(transformer_units(tr), torch.device("cpu"))
    try:
        with torch.no_grad():
            out = tr(**_inputs())[0]
    finally:
        seq.remove()
    assert torch.equal(out, ref)
    assert set(quant_types().values()) == {T.Q8_0}


def test_a_corrupt_or_wrong_gguf_file_names_the_refetch(tiny_q, tmp_path):
    from vd.errors import VdError

    t = tiny_q(T.Q8_0)
    bad = tmp_path / "flux1-fill-dev-Q8_0.gguf"
    bad.write_bytes(t["gguf"].read_bytes()[:5000])  # a download cut short
    with pytest.raises(VdError, match=r"cannot load the FLUX.1-Fill-dev transformer .*vd fetch flux-fill-q8 --force"):
        F.load_transformer(bad, config=t["config"], dtype=torch.float32)
    cfg = tmp_path / "two-blocks"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps(dict(json.loads((t["config"] / "config.json").read_text()),
                                                     num_layers=2)))
    q4 = tmp_path / "flux1-fill-dev-Q4_K_S.gguf"
    q4.write_bytes(t["gguf"].read_bytes())
    with pytest.raises(VdError, match=r"has 1 double- and 1 single-stream blocks where the model has 2 and 1; "
                                      r"re-fetch with: vd fetch flux-fill-q4k --force"):
        F.load_transformer(q4, config=cfg, dtype=torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["none", "model", "sequential"])
def test_gguf_offload_modes_on_gpu(vd_dirs, tmp_path, monkeypatch, tiny_q, offload):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    cfg = _install(vd_dirs, tmp_path, monkeypatch, tiny_q)
    b = F.FluxFillInpaint(device="cuda", quant="q8_0", config=cfg, offload=offload, steps=2)
    rgb = np.full((32, 48, 3), 100, np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 8:40] = True
    out = b.inpaint(rgb, mask, seed=0)
    assert np.array_equal(out[~mask], rgb[~mask])
    w = b.flux.transformer.transformer_blocks[0].attn.to_q.weight
    assert isinstance(w, GGUFParameter) and w.quant_type == T.Q8_0
    assert w.device.type == ("cuda" if offload == "none" else "cpu")
    if offload != "none":
        assert w.is_pinned()
    b.release()


def _install(vd_dirs, tmp_path, monkeypatch, tiny_q, *, ae_in: str = "flux-ae"):
    """The tiny Q8_0 file, AE and prompt embeddings placed where the registry looks; a user manifest
    lets flux-ae / flux-fill hold the tiny AE (their built-in entries have the real file's exact size)."""
    import shutil

    from flux_tiny import TINY_VAE, make_tiny_flux

    from vd.fetch.registry import model_dir

    base = make_tiny_flux(tmp_path / "tiny")
    t = tiny_q(T.Q8_0)
    src = {"flux-fill-q8/flux1-fill-dev-Q8_0.gguf": t["gguf"], f"{ae_in}/ae.safetensors": base["ae"],
           "flux-prompt/txt.pt": base["txt"], "flux-prompt/vec.pt": base["vec"]}
    for rel, path in src.items():
        model, name = rel.split("/")
        model_dir(model).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, model_dir(model) / name)
    builtin = json.loads((F.config_dir().parent / "weights.json").read_text())["models"]
    models = {}
    for m in ("flux-ae", "flux-fill"):
        models[m] = json.loads(json.dumps(builtin[m]))
        for f in models[m]["files"]:
            f["size"] = f["sha256"] = None
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"format": "vd-weights/1", "models": models}))
    monkeypatch.setenv("VD_MANIFEST", str(man))
    cfg = tmp_path / "cfg"
    shutil.copytree(t["config"], cfg / "transformer")
    (cfg / "vae").mkdir()
    (cfg / "vae" / "config.json").write_text(json.dumps(TINY_VAE))
    return cfg


def test_q8_inpaint_through_registry_files(vd_dirs, tmp_path, monkeypatch, tiny_q, one_torch_thread):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    cfg = _install(vd_dirs, tmp_path, monkeypatch, tiny_q)
    b = F.FluxFillInpaint(device="cpu", quant="q8_0", config=cfg, steps=2)
    rgb = np.full((32, 48, 3), 100, np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 8:40] = True
    out = b.inpaint(rgb, mask, seed=0)
    assert out.shape == rgb.shape and np.array_equal(out[~mask], rgb[~mask])
    assert not np.array_equal(out[mask], rgb[mask])
    assert isinstance(b.flux.transformer.transformer_blocks[0].attn.to_q.weight, GGUFParameter)
    assert b.paths()["ae"].parent.name == "flux-ae"
    ident = b.identity
    assert ":quant=q8_0" in ident and "flux-fill-q8:flux1-fill-dev-Q8_0.gguf=" in ident and "flux-ae:" in ident
    b.release()
    # "auto" with only the Q8_0 transformer installed loads it; a bf16 request has another key (it is missing)
    assert F.FluxFillInpaint(device="cpu", config=cfg).resolved_quant == "q8_0"
    assert F.FluxFillInpaint(device="cpu", config=cfg, quant="auto", steps=2).identity == ident
    from vd.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="vd fetch flux-fill"):
        _ = F.FluxFillInpaint(device="cpu", quant="bf16").identity


def test_the_bf16_models_ae_is_reused(vd_dirs, tmp_path, monkeypatch, tiny_q):
    _install(vd_dirs, tmp_path, monkeypatch, tiny_q, ae_in="flux-fill")
    assert G.weights_for("q8_0") == ["flux-fill-q8", "flux-prompt"]
    assert G.resolve_quant("auto") == "q8_0"  # flux-fill's transformer is not there: bf16 is not installed
    b = F.FluxFillInpaint(device="cpu", quant="q8_0")
    assert b.paths()["ae"].parent.name == "flux-fill"
    assert "flux-fill:ae.safetensors=" in b.identity and "flux-ae" not in b.identity


def test_auto_quant_rule(vd_dirs, tmp_path, monkeypatch, tiny_q):
    assert G.resolve_quant("auto") == "bf16"  # nothing installed: bf16, whose error names vd fetch flux-fill
    assert G.resolve_quant("q4_k") == "q4_k"
    _install(vd_dirs, tmp_path, monkeypatch, tiny_q)
    assert G.resolve_quant("auto") == "q8_0"
    assert G.resolve_quant("auto", {"quant": "q5_k"}) == "q5_k"  # the memory plan's choice wins
    assert G.weights_for("q5_k") == ["flux-fill-q5k", "flux-ae", "flux-prompt"]


@pytest.mark.parametrize("command", ["coarse", "fine"])
def test_missing_gguf_weights_name_the_fetch_line(tmp_path, command):
    from pathlib import Path

    from conftest import vd_env

    example = Path(__file__).resolve().parents[1] / "examples" / "room" / "rgb.png"
    args = [command, str(example), "--quant", "q8_0", "--inpaint-backend", "flux-fill"]
    if command == "coarse":
        args += ["-o", str(tmp_path / "out")]
    code = "import sys; from vd.commands.app import run; c = run(sys.argv[1:]); print(c, 'torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=vd_env(), timeout=120,
                       cwd=tmp_path)
    assert r.stdout.split() == ["3", "False"], (r.stdout, r.stderr)
    assert "run: vd fetch flux-fill-q8 flux-ae flux-prompt" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_fine_takes_the_quant(monkeypatch):
    """`vd fine --quant` reaches the denoiser: the weights it requires are the quant's."""
    from vd.errors import MissingWeightsError
    from vd.params import FineParams, FluxParams, RunOptions
    from vd.stages.fine import prepare_fine

    opts = RunOptions(inpaint_backend="flux-fill", device="cpu")
    with pytest.raises(MissingWeightsError, match="vd fetch flux-fill-q4k flux-ae flux-prompt"):
        prepare_fine(FineParams(), opts, FluxParams(quant="q4_k"))
    with pytest.raises(MissingWeightsError, match="vd fetch flux-fill flux-prompt"):
        prepare_fine(FineParams(), opts, FluxParams(quant="bf16"))


def test_fetch_list_shows_the_quantised_entries(run_vd):
    r = run_vd("fetch", "--list")
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    for model, name in [*G.GGUF_FILES.values(), ("flux-ae", "ae.safetensors")]:
        assert any(ln.split()[:2] == [model, name] and "missing" in ln for ln in lines), (model, r.stdout)
    q8 = next(ln for ln in r.stdout.splitlines() if "flux1-fill-dev-Q8_0.gguf" in ln)
    assert "~12.7 GB" in q8 and "not published" in q8
    q5 = next(ln for ln in r.stdout.splitlines() if "flux1-fill-dev-Q5_K_S.gguf" in ln)
    assert "~8.3 GB" in q5 and "555e1cc1d84d" in q5
    q4 = next(ln for ln in r.stdout.splitlines() if "flux1-fill-dev-Q4_K_S.gguf" in ln)
    assert " 6.8 GB " in q4 and "3782c22eda06" in q4  # exact size and sha256 from the publisher's LFS pointer
    from vd.fetch.registry import model_spec

    for m in ("flux-fill-q8", "flux-fill-q5k", "flux-fill-q4k", "flux-ae"):
        assert model_spec(m).license == "FLUX.1 [dev] Non-Commercial License"
    spec = json.loads((F.config_dir().parent / "weights.json").read_text())["models"]
    assert all(spec[m]["commercial"] is False for m in ("flux-fill-q8", "flux-fill-q5k", "flux-fill-q4k", "flux-ae"))
    assert spec["flux-ae"]["files"] == [f for f in spec["flux-fill"]["files"] if f["name"] == "ae.safetensors"]


def test_footprint_estimates_follow_the_file_sizes():
    from vd.fetch.registry import model_spec

    for quant, (model, _) in G.GGUF_FILES.items():
        assert G.GGUF_TRANSFORMER_BYTES[quant] == model_spec(model).files[0].expected_bytes
    per_weight = {"q8_0": 34 / 32, "q5_k": 176 / 256, "q4_k": 144 / 256}
    for quant, b in per_weight.items():
        assert abs(G.GGUF_LARGEST_UNIT_BYTES[quant] - 339_831_296 * b) < 1e6
