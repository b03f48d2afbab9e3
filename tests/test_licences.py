"""Licences (issue 28): every registry entry says whether its weights allow commercial use; `--licence
commercial` / VD_LICENCE refuses the others in one sentence naming the permissive alternative, before
torch; `auto` never picks them; `vd fetch --list` shows licences; summary.json records what a scene used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import vd_env

FLUX_REFUSAL = (
    "error: --licence commercial refuses flux-fill (FLUX.1 [dev] Non-Commercial License: no commercial use); "
    "use --inpaint-backend flux2-klein (FLUX.2 [klein] 4B, Apache-2.0): vd fetch flux2-klein flux2-klein-text"
)
MIT = {"license": "MIT (MoGe); DINOv2 backbone Apache-2.0", "commercial": True}


def _photo(path, w=64, h=48):
    from PIL import Image

    Image.new("RGB", (w, h), (90, 120, 150)).save(path)
    return path


def _vd_without_torch(*args, env=None):
    """Run the CLI in a child process; (exit code, stderr, whether torch was imported)."""
    code = (
        "import sys\nfrom vd.commands.app import run\n"
        f"c = run({[str(a) for a in args]!r})\n"
        "print('torch' in sys.modules)\nsys.exit(c)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=vd_env(env), timeout=120)
    return p.returncode, p.stderr, p.stdout.strip().splitlines()[-1] == "True"


# ------------------------------------------------------------------------------ the registry
def test_every_builtin_entry_states_commercial_use_and_each_refused_one_has_an_alternative():
    from vd.fetch.licences import COMMERCIAL_ALTERNATIVES
    from vd.fetch.registry import manifest

    models = manifest().models
    assert {m: s.commercial for m, s in models.items()} == {
        "flux-fill": False, "flux-prompt": False, "moge": True, "moge-vitb": True, "moge-vits": True,
        "flux-fill-q8": False, "flux-fill-q5k": False, "flux-fill-q4k": False, "flux-ae": False,
        "flux2-klein": True, "flux2-klein-text": True,
    }
    for name, spec in models.items():
        assert isinstance(spec.commercial, bool) and spec.license, name
        if not spec.commercial:
            assert name in COMMERCIAL_ALTERNATIVES, name


def test_a_manifest_may_omit_commercial_but_not_give_a_non_boolean(tmp_path):
    from vd.errors import InputError
    from vd.fetch import manifest

    entry = {"files": [{"name": "w.bin", "sources": ["file:///x"]}]}
    m = manifest.parse({"models": {"a": entry, "b": {**entry, "commercial": False, "license": "X-NC"}}}, "m.json")
    assert m.models["a"].commercial is None and m.models["b"].commercial is False
    with pytest.raises(InputError, match='"commercial" must be true, false or null'):
        manifest.parse({"models": {"a": {**entry, "commercial": "yes"}}}, "m.json")


# ------------------------------------------------------------------------------ the policy
def test_policy_option_then_env_then_any(monkeypatch):
    from vd.errors import UsageError
    from vd.fetch.licences import policy

    assert policy(None) == "any"
    monkeypatch.setenv("VD_LICENCE", "Commercial")
    assert policy(None) == "commercial" and policy("any") == "any"
    monkeypatch.setenv("VD_LICENCE", "free")
    with pytest.raises(UsageError, match="VD_LICENCE must be one of any, commercial, got 'free'") as e:
        policy(None)
    assert e.value.exit_code == 2


def test_unknown_licence_is_refused_under_commercial_and_allowed_under_any(tmp_path, monkeypatch):
    from vd.errors import UsageError
    from vd.fetch.licences import check

    m = tmp_path / "m.json"
    m.write_text(json.dumps({"models": {"mystery": {"files": [{"name": "w.bin", "sources": ["file:///x"]}]}}}))
    monkeypatch.setenv("VD_MANIFEST", str(m))
    check(["mystery", "flux-fill"], "any")
    with pytest.raises(UsageError, match=r"refuses mystery \(its entry in .*m.json does not say whether"):
        check(["mystery"], "commercial")
    check(["moge", "moge-vits"], "commercial")


# ------------------------------------------------------------------------------ the commands refuse, before torch
def test_vd_coarse_licence_commercial_refuses_flux_fill_before_torch(tmp_path):
    img = _photo(tmp_path / "p.png")
    code, err, torch_loaded = _vd_without_torch(
        "coarse", img, "--inpaint-backend", "flux-fill", "--licence", "commercial", "-o", tmp_path / "o"
    )
    assert code == 2 and err.strip() == FLUX_REFUSAL
    assert not torch_loaded and not (tmp_path / "o" / "summary.json").exists()
    # the same command under the default policy gets past the licence: to the missing weights (exit 3)
    code, err, _ = _vd_without_torch("coarse", img, "--inpaint-backend", "flux-fill", "-o", tmp_path / "o")
    assert code == 3 and "run: vd fetch" in err and "refuses" not in err


def test_vd_licence_env_refuses_like_the_option(tmp_path, run_vd, monkeypatch):
    img = _photo(tmp_path / "p.png")
    monkeypatch.setenv("VD_LICENCE", "commercial")
    for args in (["coarse", img, "--inpaint-backend", "flux-fill", "-o", tmp_path / "o"],
                 ["fine", tmp_path / "o", "--inpaint-backend", "flux-fill"],
                 ["batch", img, "--inpaint-backend", "flux-fill", "--executor", "serial", "-o", tmp_path / "b"]):
        r = run_vd(*args)
        assert r.code == 2 and FLUX_REFUSAL[len("error: "):] in r.stderr, (args, r)
        assert "Traceback" not in r.output
    assert not (tmp_path / "b" / "results.jsonl").exists()
    r = run_vd("coarse", img, "--inpaint-backend", "flux-fill", "--licence", "any", "-o", tmp_path / "o")
    assert r.code == 3, r  # the option wins over VD_LICENCE
    monkeypatch.setenv("VD_LICENCE", "perhaps")
    r = run_vd("coarse", img, "-o", tmp_path / "o")
    assert r.code == 2 and "VD_LICENCE must be one of any, commercial" in r.stderr


def test_vd_depth_refuses_weights_a_manifest_marks_non_commercial(tmp_path, run_vd, monkeypatch):
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"models": {"moge-vits": {"license": "CC-BY-NC-4.0", "commercial": False,
                                                      "files": [{"name": "model.pt", "sources": ["file:///x"]}]}}}))
    monkeypatch.setenv("VD_MANIFEST", str(m))
    img = _photo(tmp_path / "p.png")
    r = run_vd("depth", img, "--backend", "moge", "--depth-model", "vits", "--licence", "commercial",
               "-o", tmp_path / "d")
    assert r.code == 2, r
    assert "--licence commercial refuses moge-vits (CC-BY-NC-4.0: no commercial use)" in r.stderr
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------ auto picks by licence
@pytest.fixture
def fake_flux_weights(tmp_path, vd_dirs, monkeypatch):
    """flux-fill and flux-prompt installed (tiny stand-in files: `auto` only looks whether they are there),
    and a CUDA device as far as the choice is concerned."""
    torch = pytest.importorskip("torch")
    files = {"flux-fill": ["flux1-fill-dev.safetensors", "ae.safetensors"], "flux-prompt": ["txt.pt", "vec.pt"]}
    models = {}
    for model, names in files.items():
        for n in names:
            (vd_dirs["models"] / model).mkdir(parents=True, exist_ok=True)
            (vd_dirs["models"] / model / n).write_bytes(b"stand-in")
        models[model] = {"license": "FLUX.1 [dev] Non-Commercial License", "commercial": False,
                         "files": [{"name": n, "sources": ["file:///x"]} for n in names]}
    m = tmp_path / "flux.json"
    m.write_text(json.dumps({"models": models}))
    monkeypatch.setenv("VD_MANIFEST", str(m))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import vd.models.offload as off  # the memory plan reads an idle 80 GiB card

    monkeypatch.setattr(off, "read_vram", lambda device: (80 * 2**30, 80 * 2**30, 0))


def test_auto_never_picks_flux_fill_under_commercial(fake_flux_weights, caplog):
    from vd.errors import UsageError
    from vd.models.choose import get_inpaint_backend

    assert get_inpaint_backend("auto", device="cuda").name == "flux-fill"  # installed: auto picks it under "any"
    b = get_inpaint_backend("auto", device="cuda", licence="commercial")
    assert b.name == "telea"
    assert "no permissive diffusion inpainter installed; vd fetch flux2-klein flux2-klein-text" in caplog.text
    # with --fetch, auto under commercial takes the permissive inpainter, which it would download
    assert get_inpaint_backend("auto", device="cuda", licence="commercial", auto_fetch=True).name == "flux2-klein"
    with pytest.raises(UsageError, match="refuses flux-fill"):
        get_inpaint_backend("flux-fill", device="cuda", licence="commercial")


def test_fine_auto_never_picks_flux_fill_under_commercial(fake_flux_weights, monkeypatch):
    from vd.errors import UsageError
    from vd.stages.denoisers import choose_denoiser

    _, _, name = choose_denoiser("auto", device="cuda", offload="auto", allow_classical=True)
    assert name == "flux-fill"
    _, _, name = choose_denoiser("auto", device="cuda", offload="auto", allow_classical=True, licence="commercial")
    assert name == "telea"
    with pytest.raises(UsageError, match="no permissive diffusion inpainter installed.*--inpaint-backend flux2-klein"):
        choose_denoiser("auto", device="cuda", offload="auto", allow_classical=False, licence="commercial")
    monkeypatch.setenv("VD_LICENCE", "commercial")
    with pytest.raises(UsageError, match="refuses flux-fill"):
        choose_denoiser("flux-fill", device="cuda", offload="auto", allow_classical=True)


# ------------------------------------------------------------------------------ vd fetch
def test_fetch_list_shows_licences(run_vd):
    r = run_vd("fetch", "--list")
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("flux-fill "))
    lic = next(line for line in lines[i + 1 :] if "licence:" in line)  # the model's rows, then its licence
    assert "FLUX.1 [dev] Non-Commercial License (commercial: no)" in lic
    assert r.stdout.count("MIT (MoGe); DINOv2 backbone Apache-2.0 (commercial: yes)") == 3
    rows = {m["model"]: m for m in json.loads(run_vd("fetch", "--list", "--json").stdout)["models"]}
    assert rows["flux-fill"]["commercial"] is False and rows["moge-vitb"]["commercial"] is True
    assert rows["moge-vits"]["license"] == MIT["license"]


def test_fetch_licence_commercial_refuses_and_fetches_only_permissive(tmp_path, vd_dirs, run_vd):
    r = run_vd("fetch", "--licence", "commercial", "flux-fill")
    assert r.code == 2 and r.stderr.strip() == FLUX_REFUSAL
    assert not (vd_dirs["models"] / "flux-fill").exists()
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights")
    one = {"files": [{"name": "w.bin", "sources": [src.as_uri()]}]}
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"models": {"free": {**one, "license": "MIT", "commercial": True},
                                        "nc": {**one, "license": "CC-BY-NC-4.0", "commercial": False},
                                        "unsaid": one}}))
    r = run_vd("fetch", "--licence", "commercial", "nc", "--manifest", m)
    assert r.code == 2 and "refuses nc (CC-BY-NC-4.0: no commercial use)" in r.stderr
    r = run_vd("fetch", "--list", "--manifest", m)
    assert "CC-BY-NC-4.0 (commercial: no)" in r.stdout and "not stated (commercial: unknown)" in r.stdout
    r = run_vd("fetch", "--licence", "commercial", "free", "--manifest", m)
    assert r.code == 0 and (vd_dirs["models"] / "free" / "w.bin").read_bytes() == b"weights"
    r = run_vd("fetch", "--licence", "commercial", "unsaid", "--manifest", m)
    assert r.code == 2 and "does not say whether its licence allows commercial use" in r.stderr
    assert not (vd_dirs["models"] / "nc").exists() and not (vd_dirs["models"] / "unsaid").exists()


def test_fetch_everything_under_commercial_fetches_only_what_it_allows(tmp_path, vd_dirs, run_vd):
    """No names: every model the policy allows (the built-in moge and flux2-klein entries, pointed at local copies
    here, and the manifest's permissive one); flux-fill, flux-prompt and the manifest's non-commercial one are
    left alone."""
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights")
    local = {"files": [{"name": "model.pt", "sources": [src.as_uri()]}], "license": "MIT", "commercial": True}
    models = {m: local for m in ("moge", "moge-vitb", "moge-vits", "flux2-klein", "flux2-klein-text", "free")}
    models["nc"] = {**local, "commercial": False}
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"models": models}))
    r = run_vd("fetch", "--licence", "commercial", "--manifest", m)
    assert r.code == 0, r
    got = sorted(p.parent.name for p in vd_dirs["models"].glob("*/model.pt"))
    assert got == ["flux2-klein", "flux2-klein-text", "free", "moge", "moge-vitb", "moge-vits"]
    nc = ("nc", "flux-fill", "flux-prompt", "flux-ae", "flux-fill-q8", "flux-fill-q5k", "flux-fill-q4k")
    assert not any((vd_dirs["models"] / x).exists() for x in nc)


# ------------------------------------------------------------------------------ summary.json
def test_coarse_summary_records_the_licences_of_the_weights_used(tmp_path, monkeypatch, vd_dirs, run_vd):
    """A tiny CPU `vd coarse` with MoGe-2 ViT-B (random, the vitb architecture) and telea: moge-vitb's licence only."""
    pytest.importorskip("moge.model.v2", reason="dlr-moge not installed")
    from moge_tiny import write_tiny_moge
    from test_coarse import BASE, make_scene

    write_tiny_moge(monkeypatch, vd_dirs["models"], "moge-vitb", "vitb")
    img = make_scene(tmp_path / "in")
    args = [a if a != "file" else "moge" for a in BASE] + ["--depth-model", "vitb", "--fallback", "closest"]
    r = run_vd("coarse", img, "-o", tmp_path / "out", *args, "--licence", "commercial", "--json")
    assert r.code == 0, r
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["backends"]["depth"] == "moge" and s["backends"]["inpaint"] == "telea"
    assert s["licences"] == {"moge-vitb": MIT}
    assert json.loads(r.stdout.strip().splitlines()[-1])["licences"] == {"moge-vitb": MIT}
