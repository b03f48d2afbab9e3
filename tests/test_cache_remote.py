"""The shared remote tier: two machines' caches sharing one remote, S3 through a local moto
server, damaged remote objects, and a remote that cannot be reached."""

from __future__ import annotations

import json
import socket
import time

import pytest
from test_coarse import BASE, make_scene


def _stats():
    from vd.cache.store import stats

    return stats()


def _delta(before, after):
    return {k: after[k] - before[k] for k in after}


@pytest.mark.slow
def test_second_cache_sharing_a_file_remote_computes_nothing(run_vd, tmp_path, monkeypatch, one_torch_thread):
    img = make_scene(tmp_path / "in")
    remote = f"file://{tmp_path / 'shared'}"
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "machine-a"))
    s0 = _stats()
    r = run_vd("--cache-remote", remote, "coarse", img, "-o", tmp_path / "a", *BASE)
    assert r.code == 0, r
    first = _delta(s0, _stats())
    assert first["computed"] >= 3 and first["remote_hits"] == 0, first
    assert list((tmp_path / "shared" / "records").rglob("*.json"))

    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "machine-b"))
    monkeypatch.setenv("VD_CACHE_REMOTE", remote)
    s1 = _stats()
    r = run_vd("coarse", img, "-o", tmp_path / "b", *BASE)
    assert r.code == 0, r
    second = _delta(s1, _stats())
    assert second["computed"] == 0, second
    assert second["remote_hits"] >= 1, second
    assert (tmp_path / "a" / "coarse.ply").read_bytes() == (tmp_path / "b" / "coarse.ply").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(monkeypatch):
    """An S3 server (moto) on 127.0.0.1 with a bucket `vd-test`; credentials are fakes."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-never-printed",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="vd-test")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    yield endpoint
    server.stop()


def test_s3_remote_through_moto(moto_s3, tmp_path, capsys):
    from vd.cache import Cache

    a = Cache.open(tmp_path / "a", remote="s3://vd-test/cache")
    rec, hit = a.memoise("c" * 32, lambda: {"x": b"payload" * 1000}, stage="depth")
    assert not hit
    b = Cache.open(tmp_path / "b", remote="s3://vd-test/cache")
    s0 = _stats()
    rec_b, hit_b = b.memoise("c" * 32, lambda: pytest.fail("the second cache must not compute"), stage="depth")
    assert hit_b and rec_b.read("x") == b"payload" * 1000
    assert _delta(s0, _stats())["remote_hits"] == 1
    assert "testing-secret" not in capsys.readouterr().err


def test_truncated_remote_object_is_detected_and_recomputed(tmp_path, capsys):
    from vd.cache import Cache

    shared = tmp_path / "shared"
    a = Cache.open(tmp_path / "a", remote=f"file://{shared}")
    rec, _ = a.memoise("d" * 32, lambda: {"x": b"0123456789" * 500}, stage="depth")
    obj = next(p for p in (shared / "objects").rglob("*") if p.is_file())
    obj.write_bytes(obj.read_bytes()[:100])  # a truncated upload
    b = Cache.open(tmp_path / "b", remote=f"file://{shared}")
    calls = []

    def compute():
        calls.append(1)
        return {"x": b"0123456789" * 500}

    rec_b, hit = b.memoise("d" * 32, compute, stage="depth")
    assert not hit and calls == [1]
    assert "missing or corrupt" in capsys.readouterr().err
    assert obj.stat().st_size == 5000  # the recomputation re-uploaded the intact object
    c = Cache.open(tmp_path / "c", remote=f"file://{shared}")
    assert c.get("d" * 32).read("x") == b"0123456789" * 500


def test_unreachable_remote_warns_once_and_works_locally(tmp_path, monkeypatch, capsys):
    pytest.importorskip("s3fs")
    from vd.cache import Cache, remote

    monkeypatch.setattr(remote, "FAILED", set())

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    cache = Cache.open(tmp_path / "local", remote="s3://nowhere/cache")
    t = time.monotonic()
    for i in range(3):
        rec, hit = cache.memoise(f"{i:032x}", lambda: {"x": b"local"}, stage="depth")
        assert not hit and rec.read("x") == b"local"
    again = Cache.open(tmp_path / "local", remote="s3://nowhere/cache")  # a later stage of the same run
    assert again.memoise(f"{9:032x}", lambda: {"x": b"local"}, stage="depth")[0].read("x") == b"local"
    assert time.monotonic() - t < 30
    err = capsys.readouterr().err
    assert err.count("working with the local cache only") == 1, err
    assert "testing" not in err
    assert cache.get(f"{0:032x}") is not None


def test_push_and_pull_by_scope(run_vd, tmp_path, monkeypatch):
    from vd.cache import Cache

    with Cache.open(tmp_path / "a", remote=None) as a:
        a.put("1" * 32, {"x": b"one"}, stage="depth")
        a.put("2" * 32, {"x": b"two"}, stage="coarse-view")
    remote = f"file://{tmp_path / 'shared'}"
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "a"))
    r = run_vd("cache", "push", "--cache-remote", remote, "--stage", "depth", "--json")
    assert r.code == 0 and [x["stage"] for x in json.loads(r.stdout)["records"]] == ["depth"], r
    r = run_vd("cache", "push", "--cache-remote", remote)
    assert r.code == 0 and "pushed 1 record" in r.stdout, r
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "b"))
    r = run_vd("cache", "pull", "--cache-remote", remote, "--stage", "coarse-view")
    assert r.code == 0 and "pulled 1 record" in r.stdout, r
    with Cache.open(tmp_path / "b", remote=None) as b:
        assert b.get("2" * 32).read("x") == b"two" and b.get("1" * 32) is None
    r = run_vd("cache", "push")
    assert r.code == 2 and "no remote cache" in r.stderr, r


def test_remote_urls_are_shown_without_credentials():
    from vd.cache.remote import redact

    assert redact("s3://KEY:SECRET@bucket/p?token=x") == "s3://bucket/p"
    assert redact("file:///shared/cache") == "file:///shared/cache"


LEASE_SCRIPT = """
import json, sys, time, pathlib
from vd import console; console.install_log_handler()  # show the library's log lines, as the CLI does
from vd.cache import Cache
from vd.cache.store import stats
cache = Cache.open(sys.argv[1], remote=sys.argv[2])
def compute():
    pathlib.Path(sys.argv[3]).write_text("started")
    time.sleep(2.0)
    return {"a": b"computed on " + sys.argv[1].encode()}
rec, hit = cache.memoise("ef" * 16, compute, stage="depth")
print(json.dumps({**stats(), "value": rec.read("a").decode()}))
"""


def test_a_key_in_flight_on_another_machine_is_awaited_not_recomputed(tmp_path):
    import subprocess
    import sys

    remote = f"file://{tmp_path / 'shared'}"

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", LEASE_SCRIPT, str(tmp_path / name), remote, str(tmp_path / f"{name}.started")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    a = start("machine-a")
    deadline = time.monotonic() + 30
    while not (tmp_path / "machine-a.started").exists():
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()
        time.sleep(0.05)
    b = start("machine-b")
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=60), b.communicate(timeout=60)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    sa, sb = json.loads(out_a.splitlines()[-1]), json.loads(out_b.splitlines()[-1])
    assert sa["computed"] == 1 and sb["computed"] == 0, (sa, sb)
    assert sb["remote_hits"] == 1 and sb["waited"] == 1, sb
    assert sb["value"] == sa["value"] and not (tmp_path / "machine-b.started").exists()
    assert "waiting for another vd process on" in err_b
    assert not list((tmp_path / "shared" / "leases").rglob("*.json"))  # released
