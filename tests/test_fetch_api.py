"""The weights API the stages use (require, weights_id, known_models) and the built-in registry."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netservers import HTTPTestServer  # noqa: E402

from vd.errors import MissingWeightsError, UsageError  # noqa: E402

DATA = os.urandom(50_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("HF_HOME", "VD_MODELSCOPE_ENDPOINT", "MODELSCOPE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("VD_FETCH_BACKOFF", "0.01")


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A test model 'tiny' (one file with a hash, one without) served on loopback, via VD_MANIFEST."""
    with HTTPTestServer() as srv:
        srv.add("/a.bin", data=DATA)
        srv.add("/b.bin", data=DATA[::-1])
        m = tmp_path / "m.json"
        m.write_text(json.dumps({"format": "vd-weights/1", "models": {"tiny": {"files": [
            {"name": "a.bin", "size": len(DATA), "sha256": SHA, "sources": [srv.url("/a.bin")]},
            {"name": "b.bin", "size": None, "sha256": None, "sources": [srv.url("/b.bin")]},
        ]}}}))
        monkeypatch.setenv("VD_MANIFEST", str(m))
        yield srv


def test_known_models_and_builtin_registry(monkeypatch):
    from vd.fetch import manifest
    from vd.fetch.registry import known_models, model_spec

    gguf = ["flux-fill-q4k", "flux-fill-q5k", "flux-fill-q8"]
    klein = ["flux2-klein", "flux2-klein-text"]
    moge = ["moge", "moge-vitb", "moge-vits"]
    assert known_models() == ["flux-ae", "flux-fill", *gguf, "flux-prompt", *klein, *moge]
    ff = model_spec("flux-fill")
    big = ff.file("flux1-fill-dev.safetensors")
    assert big.size == 23804922408 and big.sha256.startswith("03e289f5") and big.sha256.endswith("41ca")
    ae = ff.file("ae.safetensors")
    assert ae.size == 335304388 and ae.sha256.startswith("afc8e282") and ae.sha256.endswith("9e38")
    kinds = [s.kind for s in big.sources]
    assert kinds[0] == "modelscope" and kinds[1] == "hf" and big.sources[1].gated
    assert big.sources[0].url == ("https://modelscope.cn/models/AI-ModelScope/FLUX.1-Fill-dev/resolve/master/"
                                  "flux1-fill-dev.safetensors")
    assert big.sources[1].url == "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev/resolve/main/flux1-fill-dev.safetensors"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    monkeypatch.setenv("VD_MODELSCOPE_ENDPOINT", "http://ms.local")
    assert big.sources[1].url.startswith("https://hf-mirror.com/black-forest-labs/")
    assert big.sources[0].url.startswith("http://ms.local/models/AI-ModelScope/")
    assert {f.name for f in model_spec("flux-prompt").files} == {"txt.pt", "vec.pt"}
    assert model_spec("moge").file("model.pt").sources[0].repo == "Ruicheng/moge-2-vitl-normal"
    assert model_spec("moge-vitb").file("model.pt").sources[0].repo == "Ruicheng/moge-2-vitb-normal"
    assert model_spec("moge-vits").file("model.pt").sources[0].repo == "Ruicheng/moge-2-vits-normal"
    assert manifest.load().models.keys() == {"flux-ae", "flux-fill", *gguf, "flux-prompt", *klein, *moge}
    with pytest.raises(UsageError, match="known models: flux-ae, flux-fill, flux-fill-q4k, .*, moge-vitb, moge-vits"):
        model_spec("flux")


def test_require_missing_names_the_command(served):
    from vd.fetch.registry import require

    with pytest.raises(MissingWeightsError) as e:
        require("tiny")
    assert "run: vd fetch tiny" in str(e.value)
    assert e.value.exit_code == 3
    assert served.log == []                                        # never downloads silently


def test_require_auto_fetch_and_weights_id(served, vd_dirs):
    from vd.fetch.registry import require, weights_id

    paths = require("tiny", auto_fetch=True)
    assert set(paths) == {"a.bin", "b.bin"}
    assert paths["a.bin"].read_bytes() == DATA and paths["b.bin"].read_bytes() == DATA[::-1]
    sha_b = hashlib.sha256(DATA[::-1]).hexdigest()
    wid = weights_id("tiny")
    assert wid == f"tiny:a.bin={SHA[:16]},b.bin={sha_b[:16]}"
    assert weights_id("tiny") == wid
    n = len(served.log)
    assert require("tiny") == paths and len(served.log) == n      # present: no network


def test_vd_auto_fetch_env(served, monkeypatch):
    from vd.fetch.registry import fetch_flag, require

    assert fetch_flag(True) is True and fetch_flag(False) is None
    monkeypatch.setenv("VD_AUTO_FETCH", "1")
    assert require("tiny", auto_fetch=fetch_flag(False))["a.bin"].exists()


def test_auto_fetch_while_offline_says_so(served, monkeypatch):
    from vd.fetch.registry import require

    monkeypatch.setenv("VD_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="network is off.*run: vd fetch tiny"):
        require("tiny", auto_fetch=True)
    assert served.log == []


def test_weights_id_hashes_hand_placed_file(served, vd_dirs):
    from vd.fetch.registry import weights_id

    d = vd_dirs["models"] / "tiny"
    d.mkdir(parents=True)
    (d / "a.bin").write_bytes(DATA)
    with pytest.raises(MissingWeightsError, match="b.bin"):
        weights_id("tiny")
    (d / "b.bin").write_bytes(b"hand placed")
    wid = weights_id("tiny")
    assert wid.endswith("b.bin=" + hashlib.sha256(b"hand placed").hexdigest()[:16])
    assert (d / "b.bin.sha256").exists()


def test_require_links_from_hf_cache_without_network(tmp_path, monkeypatch, vd_dirs):
    from vd.fetch.registry import require

    snap = tmp_path / "hf-hub" / "models--org--repo" / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    (snap / "w.bin").write_bytes(DATA)
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"models": {"hubby": {"files": [
        {"name": "w.bin", "size": len(DATA), "sha256": SHA, "sources": [{"hf": "org/repo", "path": "w.bin"}]}]}}}))
    monkeypatch.setenv("VD_MANIFEST", str(m))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    paths = require("hubby")
    assert paths["w.bin"].read_bytes() == DATA


def test_proxy_helpers(monkeypatch):
    from vd.fetch.net import describe_proxies, normalise_proxy, proxy_mounts

    assert normalise_proxy("socks://h:1080") == "socks5://h:1080"
    assert normalise_proxy("SOCKS5H://h:1080") == "socks5h://h:1080"
    assert normalise_proxy("proxy.local:3128") == "http://proxy.local:3128"
    with pytest.raises(UsageError):
        normalise_proxy("socks4://h:1080")
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@p:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal")
    mounts = proxy_mounts()
    assert mounts["https://"] == "http://user:pw@p:8080" and mounts["all://localhost"] is None
    assert "pw" not in describe_proxies()
    assert proxy_mounts("socks5h://x:1") == {"all://": "socks5h://x:1"}


def test_fetch_command_line_is_fast_to_import():
    import subprocess

    code = ("import sys, vd.commands.fetch, vd.fetch.registry; "
            "print(any(m in sys.modules for m in ('torch', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
