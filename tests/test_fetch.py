"""`vd fetch` against misbehaving servers started on 127.0.0.1 (never the real network)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netservers import HTTPTestServer, Socks5Server  # noqa: E402

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _fetch_env(monkeypatch, tmp_path):
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_TOKEN_PATH", "VD_MODELSCOPE_ENDPOINT", "MODELSCOPE_ENDPOINT",
                 "MODELSCOPE_CACHE", "VD_FETCH_FSYNC",
                 "VD_FETCH_RETRIES", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))      # empty unless a test fills it
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("VD_FETCH_BACKOFF", "0.01")                    # tiny retry backoff
    monkeypatch.setenv("VD_FETCH_TIMEOUT", "10")


@pytest.fixture
def srv():
    with HTTPTestServer() as s:
        yield s


def manifest(tmp_path: Path, files, model="tiny", name="m.json") -> Path:
    """files: list of dicts {name, size, sha256, sources}."""
    p = tmp_path / name
    p.write_text(json.dumps({"format": "vd-weights/1", "models": {model: {"description": "test", "files": files}}}))
    return p


def one_file(tmp_path, urls, *, data=DATA, sha=True, size=True, name="w.bin", model="tiny"):
    return manifest(tmp_path, [{"name": name, "size": len(data) if size else None,
                                "sha256": hashlib.sha256(data).hexdigest() if sha else None,
                                "sources": urls}], model=model)


def installed(vd_dirs, model="tiny", name="w.bin") -> Path:
    return vd_dirs["models"] / model / name


def leftovers(vd_dirs, model="tiny"):
    d = vd_dirs["models"] / model
    return sorted(p.name for p in d.glob("*.incomplete")) if d.is_dir() else []


# --------------------------------------------------------------------------- happy path
def test_complete_download_list_and_verify(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [srv.url("/w.bin")])
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 0, r
    assert r.stdout.strip() == str(installed(vd_dirs))
    assert installed(vd_dirs).read_bytes() == DATA
    assert leftovers(vd_dirs) == []
    assert len(route.requests) == 1 and "range" not in route.requests[0]
    assert route.requests[0].get("accept-encoding") == "identity"

    r = run_vd("fetch", "tiny", "--manifest", m)              # second run: nothing to do
    assert r.code == 0 and len(route.requests) == 1

    r = run_vd("fetch", "--verify", "tiny", "--manifest", m)
    assert r.code == 0, r
    assert r.stdout.startswith("ok\t")

    r = run_vd("fetch", "--list", "--json", "--manifest", m)
    info = json.loads(r.stdout)
    tiny = next(x for x in info["models"] if x["model"] == "tiny")
    assert tiny["state"] == "present" and tiny["files"][0]["sha256"] == SHA
    assert {"flux-fill", "flux-prompt", "moge", "moge-vitb", "moge-vits"} <= {x["model"] for x in info["models"]}

    r = run_vd("fetch", "--list", "--manifest", m)
    assert r.code == 0 and "tiny" in r.stdout and "present" in r.stdout and "flux1-fill-dev.safetensors" in r.stdout

    installed(vd_dirs).write_bytes(b"x" * len(DATA))               # corrupt it (same size)
    r = run_vd("fetch", "--verify", "tiny", "--manifest", m)
    assert r.code == 1 and "failed verification" in r.stderr and "Traceback" not in r.stderr


def test_force_downloads_again_and_replaces_only_when_verified(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [srv.url("/w.bin")])
    assert run_vd("fetch", "tiny", "--manifest", m).code == 0
    installed(vd_dirs).write_bytes(b"z" * len(DATA))               # corrupt, same size
    r = run_vd("fetch", "tiny", "--manifest", m, "--force")
    assert r.code == 0, r
    assert len(route.requests) == 2 and installed(vd_dirs).read_bytes() == DATA
    route.data = bytes(reversed(DATA))                             # the source goes bad
    r = run_vd("fetch", "tiny", "--manifest", m, "--force")
    assert r.code == 1 and "sha256 mismatch" in r.stderr
    assert installed(vd_dirs).read_bytes() == DATA                 # the good copy stays
    assert run_vd("fetch", "tiny", "--manifest", m, "--force", "--offline").code == 2


def test_json_result_and_manifest_from_env(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    srv.add("/w.bin", data=DATA)
    monkeypatch.setenv("VD_MANIFEST", str(one_file(tmp_path, [srv.url("/w.bin")])))
    r = run_vd("fetch", "tiny", "--json")
    assert r.code == 0, r
    out = json.loads(r.stdout)
    (f,) = out["files"]
    assert f["action"] == "downloaded" and f["sha256"] == SHA and f["path"] == str(installed(vd_dirs))


# --------------------------------------------------------------------------- resume / retries
def test_dropped_connection_resumes_with_range(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA, drop_after=100_000)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]), "--json")
    assert r.code == 0, r
    assert installed(vd_dirs).read_bytes() == DATA
    assert len(route.requests) == 2
    assert "range" not in route.requests[0]
    assert route.requests[1]["range"] == "bytes=100000-"
    assert json.loads(r.stdout)["files"][0]["resumed_from"] == 100_000
    assert leftovers(vd_dirs) == []


def test_leftover_partial_from_an_earlier_run_is_resumed(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    d = vd_dirs["models"] / "tiny"
    d.mkdir(parents=True)
    (d / "w.bin.0badc0de.incomplete").write_bytes(DATA[:50_000])
    (d / "w.bin.12345678.incomplete").write_bytes(DATA[:120_000])   # the largest one wins
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert route.requests[0]["range"] == "bytes=120000-"
    assert installed(vd_dirs).read_bytes() == DATA
    assert leftovers(vd_dirs) == []


def test_complete_partial_gets_416_and_is_installed(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    d = vd_dirs["models"] / "tiny"
    d.mkdir(parents=True)
    (d / "w.bin.0badc0de.incomplete").write_bytes(DATA)            # killed just before the rename
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert [q.get("range") for q in route.requests] == [f"bytes={len(DATA)}-"]
    assert installed(vd_dirs).read_bytes() == DATA and leftovers(vd_dirs) == []


def test_flaky_connection_completes_over_several_resumes(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    monkeypatch.setenv("VD_FETCH_RETRIES", "1")                    # progress resets the retry count
    route = srv.add("/w.bin", data=DATA, drop_after=70_000, drop_times=100)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert [q.get("range") for q in route.requests] == [None] + [f"bytes={k * 70_000}-" for k in range(1, 5)]
    assert installed(vd_dirs).read_bytes() == DATA


def test_stale_partial_with_wrong_bytes_restarts_from_zero(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    d = vd_dirs["models"] / "tiny"
    d.mkdir(parents=True)
    (d / "w.bin.0badc0de.incomplete").write_bytes(b"\0" * 70_000)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert [q.get("range") for q in route.requests] == ["bytes=70000-", None]
    assert installed(vd_dirs).read_bytes() == DATA


def test_server_ignoring_range_restarts(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA, drop_after=100_000, ignore_range=True)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert len(route.requests) == 2 and route.requests[1]["range"] == "bytes=100000-"
    assert "ignored the Range request" in r.stderr
    assert installed(vd_dirs).read_bytes() == DATA
    assert installed(vd_dirs).stat().st_size == len(DATA)


def test_503_twice_then_200(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA, fail=2, fail_status=503)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 0, r
    assert len(route.requests) == 3
    assert installed(vd_dirs).read_bytes() == DATA


def test_persistent_5xx_gives_up_with_one_sentence(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    monkeypatch.setenv("VD_FETCH_RETRIES", "2")
    route = srv.add("/w.bin", data=DATA, fail=100, fail_status=502)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1
    assert len(route.requests) == 3
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not download tiny/w.bin")
    assert "HTTP 502" in r.stderr and "Traceback" not in r.stderr
    assert not installed(vd_dirs).exists()


def test_connection_refused_falls_through_to_next_source(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    monkeypatch.setenv("VD_FETCH_RETRIES", "1")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()                                                     # nothing listens there now
    srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [f"http://127.0.0.1:{dead}/w.bin", srv.url("/w.bin")])
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 0, r
    assert installed(vd_dirs).read_bytes() == DATA


# --------------------------------------------------------------------------- sources
def test_404_then_second_source(srv, tmp_path, vd_dirs, run_vd):
    a = srv.add("/a/w.bin", status=404)
    b = srv.add("/b/w.bin", data=DATA)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/a/w.bin"), srv.url("/b/w.bin")]))
    assert r.code == 0, r
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert "trying the next source" in r.stderr
    assert installed(vd_dirs).read_bytes() == DATA


def test_wrong_hash_rejected_then_next_source(srv, tmp_path, vd_dirs, run_vd):
    bad = bytes(reversed(DATA))
    srv.add("/bad/w.bin", data=bad)
    good = srv.add("/good/w.bin", data=DATA)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/bad/w.bin"), srv.url("/good/w.bin")]))
    assert r.code == 0, r
    assert "sha256 mismatch" in r.stderr
    assert "range" not in good.requests[0]                        # the bad bytes were not resumed from
    assert installed(vd_dirs).read_bytes() == DATA


def test_wrong_hash_only_source_never_installed(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/bad/w.bin", data=bytes(reversed(DATA)))
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/bad/w.bin")]))
    assert r.code == 1
    assert "sha256 mismatch" in r.stderr and "Traceback" not in r.stderr
    assert not installed(vd_dirs).exists()
    assert leftovers(vd_dirs) == []


def test_html_error_page_with_200_is_rejected(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/w.bin", html=True)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1
    assert "HTML page" in r.stderr
    assert not installed(vd_dirs).exists() and leftovers(vd_dirs) == []


def test_html_page_disguised_as_binary_is_caught_by_the_hash(srv, tmp_path, vd_dirs, run_vd):
    page = b"<html><body>Access denied</body></html>"
    srv.add("/w.bin", data=page)                                  # 200, application/octet-stream
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")], size=False))
    assert r.code == 1
    assert "sha256 mismatch" in r.stderr
    assert not installed(vd_dirs).exists() and leftovers(vd_dirs) == []


def test_size_mismatch_is_rejected_before_the_body(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/w.bin", data=DATA[:1000])
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1 and "expected 300000" in r.stderr
    assert not installed(vd_dirs).exists()


def test_close_delimited_body_without_content_length(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/w.bin", data=DATA, no_length=True)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin").replace("127.0.0.1", "localhost")]))
    assert r.code == 0, r
    assert installed(vd_dirs).read_bytes() == DATA


def test_file_url_source_for_air_gapped_sites(tmp_path, vd_dirs, run_vd):
    src = tmp_path / "mirror" / "w.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [src.as_uri()]))
    assert r.code == 0, r
    assert installed(vd_dirs).read_bytes() == DATA


def test_unpublished_hash_is_recorded_on_first_download(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [srv.url("/w.bin")], sha=False, size=False)
    r = run_vd("fetch", "--list", "--manifest", m, "tiny")
    assert "not published" in r.stdout
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 0, r
    side = installed(vd_dirs).with_name("w.bin.sha256")
    assert side.read_text() == f"{SHA}  w.bin\n"
    r = run_vd("fetch", "--list", "--manifest", m, "tiny")
    assert "(recorded)" in r.stdout and "recorded on the first verified download" in r.stdout
    r = run_vd("fetch", "--verify", "--manifest", m, "tiny")
    assert r.code == 0 and r.stdout.startswith("ok\t")


# --------------------------------------------------------------------------- hub endpoints, token, cache
def hub_manifest(tmp_path, gated=False):
    return manifest(tmp_path, [{"name": "w.bin", "size": len(DATA), "sha256": SHA, "sources": [
        {"modelscope": "org/repo", "path": "w.bin"},
        {"hf": "org/repo", "path": "sub/w.bin", "gated": gated}]}])


def test_modelscope_endpoint_first(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    ms = srv.add("/ms/models/org/repo/resolve/master/w.bin", data=DATA)
    hf = srv.add("/hf/org/repo/resolve/main/sub/w.bin", data=DATA)
    monkeypatch.setenv("VD_MODELSCOPE_ENDPOINT", srv.url("/ms"))
    monkeypatch.setenv("HF_ENDPOINT", srv.url("/hf"))
    monkeypatch.setenv("HF_TOKEN", "secret")
    r = run_vd("fetch", "tiny", "--manifest", hub_manifest(tmp_path))
    assert r.code == 0, r
    assert len(ms.requests) == 1 and len(hf.requests) == 0
    assert "authorization" not in ms.requests[0]                  # the HF token never goes elsewhere


def test_gated_hf_uses_token_and_explains_401(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    srv.add("/ms/models/org/repo/resolve/master/w.bin", status=404)
    hf = srv.add("/hf/org/repo/resolve/main/sub/w.bin", data=DATA, bearer="secret")
    monkeypatch.setenv("VD_MODELSCOPE_ENDPOINT", srv.url("/ms"))
    monkeypatch.setenv("HF_ENDPOINT", srv.url("/hf"))
    m = hub_manifest(tmp_path, gated=True)
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 1
    assert "HTTP 401" in r.stderr and "HF_TOKEN" in r.stderr and "accept its licence" in r.stderr
    monkeypatch.setenv("HF_TOKEN", "secret")
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 0, r
    assert hf.requests[-1]["authorization"] == "Bearer secret"


def test_reuses_verified_file_from_hf_hub_cache(tmp_path, vd_dirs, run_vd, monkeypatch):
    hub = tmp_path / "hf-hub" / "models--org--repo"
    blob = hub / "blobs" / SHA
    blob.parent.mkdir(parents=True)
    blob.write_bytes(DATA)
    snap = hub / "snapshots" / "abc123" / "sub"
    snap.mkdir(parents=True)
    (snap / "w.bin").symlink_to(os.path.relpath(blob, snap))
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")       # would fail if contacted
    monkeypatch.setenv("VD_MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    r = run_vd("fetch", "tiny", "--manifest", hub_manifest(tmp_path), "--offline", "--json")
    assert r.code == 0, r
    assert json.loads(r.stdout)["files"][0]["action"] in ("linked", "copied")
    assert installed(vd_dirs).read_bytes() == DATA


def test_reuses_file_from_modelscope_cache(tmp_path, vd_dirs, run_vd, monkeypatch):
    f = tmp_path / "ms-cache" / "hub" / "models" / "org" / "repo" / "w.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(DATA)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    r = run_vd("fetch", "tiny", "--manifest", hub_manifest(tmp_path), "--offline", "--json")
    assert r.code == 0, r
    assert "ModelScope cache" in json.loads(r.stdout)["files"][0]["source"]
    assert installed(vd_dirs).read_bytes() == DATA


def test_corrupt_hub_cache_copy_is_ignored(tmp_path, vd_dirs, run_vd, monkeypatch):
    snap = tmp_path / "hf-hub" / "models--org--repo" / "snapshots" / "abc123" / "sub"
    snap.mkdir(parents=True)
    (snap / "w.bin").write_bytes(b"y" * len(DATA))
    r = run_vd("fetch", "tiny", "--manifest", hub_manifest(tmp_path), "--offline")
    assert r.code == 3
    assert not installed(vd_dirs).exists()


# --------------------------------------------------------------------------- proxies
@pytest.mark.parametrize("how", ["ALL_PROXY=socks5", "ALL_PROXY=socks5h", "ALL_PROXY=socks", "--proxy"])
def test_socks5_proxy(srv, tmp_path, vd_dirs, run_vd, monkeypatch, how):
    route = srv.add("/w.bin", data=DATA)
    with Socks5Server() as proxy:
        args = ["fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")])]
        if how == "--proxy":
            args += ["--proxy", proxy.url("socks5")]
        else:
            monkeypatch.setenv("ALL_PROXY", proxy.url(how.split("=")[1]))
        r = run_vd(*args)
        assert r.code == 0, r
        assert ("127.0.0.1", srv.port) in proxy.connections
    assert len(route.requests) == 1
    assert installed(vd_dirs).read_bytes() == DATA


def test_dead_proxy_is_named_in_the_error(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    monkeypatch.setenv("VD_FETCH_RETRIES", "1")
    srv.add("/w.bin", data=DATA)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")         # nothing listens on port 9
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1 and "socks5://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
    assert not installed(vd_dirs).exists()


def test_no_proxy_bypasses_the_proxy(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    srv.add("/w.bin", data=DATA)
    with Socks5Server() as proxy:
        monkeypatch.setenv("ALL_PROXY", proxy.url())
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
        assert r.code == 0, r
        assert proxy.connections == []


def test_unsupported_proxy_scheme_is_a_usage_error(srv, tmp_path, run_vd, monkeypatch):
    srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [srv.url("/w.bin")])
    r = run_vd("fetch", "tiny", "--manifest", m, "--proxy", "socks4://127.0.0.1:1080")
    assert r.code == 2 and "unsupported proxy" in r.stderr and "Traceback" not in r.stderr
    monkeypatch.setenv("ALL_PROXY", "socks4://127.0.0.1:1080")
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 2 and "ALL_PROXY" in r.stderr


# --------------------------------------------------------------------------- offline, locks
@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_with_files_missing_exits_3(srv, tmp_path, vd_dirs, run_vd, monkeypatch, how):
    route = srv.add("/w.bin", data=DATA)
    args = ["fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")])]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv("VD_OFFLINE", "1")
    r = run_vd(*args)
    assert r.code == 3
    assert "vd fetch tiny" in r.stderr and "tiny/w.bin" in r.stderr
    assert route.requests == []


def test_two_concurrent_fetches_of_one_file(srv, tmp_path, vd_dirs):
    size = 3_000_000
    data = os.urandom(size)
    route = srv.add("/w.bin", data=data, rate=1_200_000)            # ~2.5 s per download
    m = one_file(tmp_path, [srv.url("/w.bin")], data=data)
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "vd.commands.app", "fetch", "tiny", "--manifest", str(m)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(installed(vd_dirs))
    assert installed(vd_dirs).read_bytes() == data
    assert len(route.requests) == 1                                   # the second waited, then reused
    assert any("waiting for another process" in err for _, err in outs)
    assert leftovers(vd_dirs) == []


# --------------------------------------------------------------------------- bad input
def test_unknown_model_lists_known_ones(run_vd):
    r = run_vd("fetch", "nonesuch")
    assert r.code == 2
    known = "flux-ae, flux-fill, flux-fill-q4k, flux-fill-q5k, flux-fill-q8, flux-prompt, flux2-klein, flux2-klein-text, moge, moge-vitb, moge-vits"
    assert r.stderr.strip() == f"error: unknown model 'nonesuch'; known models: {known}"


def test_unwritable_models_dir(srv, tmp_path, run_vd, monkeypatch):
    srv.add("/w.bin", data=DATA)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the models folder should be")
    monkeypatch.setenv("VD_MODELS_DIR", str(blocker / "models"))
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1
    assert "is not writable" in r.stderr and "VD_MODELS_DIR" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_models_dir(srv, tmp_path, run_vd, monkeypatch):
    srv.add("/w.bin", data=DATA)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    monkeypatch.setenv("VD_MODELS_DIR", str(ro))
    try:
        r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    finally:
        ro.chmod(0o700)
    assert r.code == 1 and "is not writable" in r.stderr


def test_disk_too_small_refuses_before_downloading(srv, tmp_path, vd_dirs, run_vd, monkeypatch):
    route = srv.add("/w.bin", data=DATA)
    import vd.fetch.download as dl

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    r = run_vd("fetch", "tiny", "--manifest", one_file(tmp_path, [srv.url("/w.bin")]))
    assert r.code == 1
    assert "not enough free disk space" in r.stderr and "Traceback" not in r.stderr
    assert route.requests == []
    assert not installed(vd_dirs).exists() and leftovers(vd_dirs) == []


def test_huge_manifest_size_refuses(srv, tmp_path, vd_dirs, run_vd):
    route = srv.add("/w.bin", data=DATA)
    m = manifest(tmp_path, [{"name": "w.bin", "size": 10**16, "sha256": SHA, "sources": [srv.url("/w.bin")]}])
    r = run_vd("fetch", "tiny", "--manifest", m)
    assert r.code == 1 and "not enough free disk space" in r.stderr
    assert route.requests == []


@pytest.mark.parametrize("text,msg", [("{not json", "not valid JSON"),
                                       ('{"models": {"x": {"files": []}}}', "non-empty"),
                                       ('{"models": {"x": {"files": [{"name": "a", "sha256": "zz", "sources": ["http://h/a"]}]}}}', "64 hex")])
def test_bad_manifest_is_one_sentence(tmp_path, run_vd, text, msg):
    p = tmp_path / "bad.json"
    p.write_text(text)
    r = run_vd("fetch", "--list", "--manifest", p)
    assert r.code == 1 and msg in r.stderr and "Traceback" not in r.stderr
    r = run_vd("fetch", "--list", "--manifest", tmp_path / "missing.json")
    assert r.code == 1 and "not found" in r.stderr


def test_verify_never_rewrites_a_recorded_hash(srv, tmp_path, vd_dirs, run_vd):
    srv.add("/w.bin", data=DATA)
    m = one_file(tmp_path, [srv.url("/w.bin")], sha=False, size=False)
    assert run_vd("fetch", "tiny", "--manifest", m).code == 0
    path = installed(vd_dirs)
    side = path.with_name("w.bin.sha256")
    recorded = side.read_text()
    os.utime(side, ns=(1, 1))  # the record older than the file, as after any later write to it
    corrupt = bytearray(DATA)
    corrupt[len(corrupt) // 2] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    for _ in range(2):
        r = run_vd("fetch", "--verify", "--manifest", m, "tiny")
        assert r.code == 1, r
        assert r.stdout.startswith("mismatch\t") and "failed verification" in r.stderr, r
        assert side.read_text() == recorded
    r = run_vd("fetch", "--verify", "--json", "--manifest", m, "tiny")
    row = json.loads(r.stdout)["files"][0]
    assert row["expected"] == SHA and row["sha256"] == hashlib.sha256(bytes(corrupt)).hexdigest()


@pytest.mark.parametrize("size", [True, False], ids=["size-published", "size-unknown"])
def test_a_full_models_disk_names_the_models_folder_and_VD_MODELS_DIR(srv, tmp_path, monkeypatch, run_vd, size):
    from diskfull import tiny_tmpfs

    big = os.urandom(600_000)
    srv.add("/w.bin", data=big)
    m = one_file(tmp_path, [srv.url("/w.bin")], data=big, sha=size, size=size)
    with tiny_tmpfs(tmp_path / "disk", "512k") as mnt:
        monkeypatch.setenv("VD_MODELS_DIR", str(mnt / "models"))
        r = run_vd("fetch", "tiny", "--manifest", m)
        assert r.code == 1, r
        assert "with -o" not in r.stderr and "VD_MODELS_DIR" in r.stderr and str(mnt / "models") in r.stderr, r.stderr
        assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (mnt / "models" / "tiny" / "w.bin").exists()
