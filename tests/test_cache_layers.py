"""The cache's layers: one object-store interface for the local folder and the remote, objects
hashed once then trusted by their read-only mode, size and mtime; and the cache's rough edges of
issue 30 (a cache path that is a file, a lost index, damaged remote objects in push/pull)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import xxhash

from vd.cache import Cache, content_hash
from vd.cache.objectstore import LocalObjects, ObjectStore
from vd.cache.remote import Remote
from vd.errors import CacheError


@pytest.fixture
def hash_calls(monkeypatch):
    """Counts every xxh3-128 computed anywhere (one-shot digests and streaming hashers)."""
    calls = {"n": 0}
    real_digest, real_hasher = xxhash.xxh3_128_hexdigest, xxhash.xxh3_128

    def digest(data, *a, **k):
        calls["n"] += 1
        return real_digest(data, *a, **k)

    def hasher(*a, **k):
        calls["n"] += 1
        return real_hasher(*a, **k)

    monkeypatch.setattr(xxhash, "xxh3_128_hexdigest", digest)
    monkeypatch.setattr(xxhash, "xxh3_128", hasher)
    return calls


PAYLOAD = {"big": os.urandom(200_000), "small": b'{"a": 1}'}


def _fill(key: str = "a" * 32) -> Path:
    with Cache.open(remote=None) as c:
        rec, hit = c.memoise(key, lambda: dict(PAYLOAD), stage="depth")
        assert not hit
        return rec.path("big")


def _tamper(path: Path, keep_mtime: bool = False) -> None:
    """Change one byte of an object (same size), as a stray writer would, and make it read-only again."""
    st = path.stat()
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.chmod(path, 0o444)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_local_and_remote_objects_share_one_interface(tmp_path):
    local = LocalObjects(tmp_path / "objects")
    remote = Remote(f"file://{tmp_path / 'shared'}").objects
    for store in (local, remote):
        assert isinstance(store, ObjectStore)
        d = store.put(b"hello")
        assert d == content_hash(b"hello")
        assert store.has(d) and store.has(d, 5) and not store.has(d, 6) and store.size(d) == 5
        assert store.get(d) == b"hello"
        with store.open(d) as f:
            assert f.read() == b"hello"
        assert list(store.iterate()) == [(d, 5)]
        store.delete(d)
        assert not store.has(d) and store.get(d) is None and list(store.iterate()) == []


def test_a_hit_does_not_hash_its_objects_again(vd_dirs, hash_calls):
    _fill()
    cache = Cache.open(remote=None)  # a later run: a fresh handle on the same cache
    hash_calls["n"] = 0
    rec, hit = cache.memoise("a" * 32, lambda: pytest.fail("must be a hit"), stage="depth")
    assert hit and rec.read("big") == PAYLOAD["big"] and rec.read("small") == PAYLOAD["small"]
    assert hash_calls["n"] == 0 and cache.objects.hashed == 0
    # and the stamps survive in the index: another handle trusts them too
    again = Cache.open(remote=None)
    assert again.get("a" * 32).read("big") == PAYLOAD["big"] and hash_calls["n"] == 0


def test_a_tampered_object_is_detected_on_a_hit(vd_dirs, hash_calls, capsys):
    victim = _fill()
    _tamper(victim)  # bytes and mtime changed, still read-only and of the same size
    calls = []
    cache = Cache.open(remote=None)
    rec, hit = cache.memoise("a" * 32, lambda: calls.append(1) or dict(PAYLOAD), stage="depth")
    assert not hit and calls == [1]
    err = capsys.readouterr().err
    assert "corrupt" in err and ("a" * 12) in err
    assert rec.read("big") == PAYLOAD["big"]


def test_a_tampered_object_is_detected_on_read(vd_dirs):
    cache = Cache.open(remote=None)
    rec, _ = cache.memoise("a" * 32, lambda: dict(PAYLOAD), stage="depth")
    _tamper(rec.path("big"))  # after the record was loaded: read() must not trust the old stamp
    with pytest.raises(CacheError, match="corrupt"):
        rec.read("big")
    assert "a" * 32 not in cache


def test_a_touched_but_intact_object_is_hashed_once_then_trusted_again(vd_dirs, hash_calls):
    victim = _fill()
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    cache = Cache.open(remote=None)
    hash_calls["n"] = 0
    assert cache.memoise("a" * 32, lambda: pytest.fail("intact"), stage="depth")[1]
    assert hash_calls["n"] == 1  # the changed mtime: hashed once, found intact, stamp renewed
    assert Cache.open(remote=None).memoise("a" * 32, lambda: pytest.fail("intact"), stage="depth")[1]
    assert hash_calls["n"] == 1


def test_verify_rehashes_even_what_a_hit_would_trust(vd_dirs, run_vd):
    victim = _fill()
    _tamper(victim, keep_mtime=True)  # a change that hides from the stamp
    r = run_vd("cache", "verify")
    assert r.code == 1 and "corrupt" in r.stdout, r


def test_an_existing_corrupt_object_is_not_trusted_by_a_new_put(vd_dirs):
    victim = _fill()
    _tamper(victim, keep_mtime=True)
    with Cache.open(remote=None) as c:
        c.put("b" * 32, dict(PAYLOAD), stage="depth")  # the same bytes again: must repair the object
        assert c.get("b" * 32).read("big") == PAYLOAD["big"]
    assert victim.read_bytes() == PAYLOAD["big"]


# ------------------------------------------------------------------------------ issue 30
@pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["verify"], ["du"], ["clear", "--yes"],
                                  ["prune", "--stage", "depth"]])
def test_a_cache_path_that_is_a_file_fails_like_the_stages(run_vd, tmp_path, monkeypatch, args):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("VD_CACHE_DIR", str(blocker))
    with pytest.raises(CacheError) as stage_error:
        Cache.open()
    r = run_vd("cache", *args)
    assert r.code == 1 and r.stdout == "", r
    assert r.stderr == f"error: {stage_error.value}\n", r
    assert blocker.read_text() == "x"


def _three(root: Path) -> list[str]:
    keys = [f"{i:032x}" for i in range(3)]
    with Cache.open(root, remote=None) as c:
        for k in keys:
            c.put(k, {"a": k.encode() * 100}, stage="depth", image="/img.png")
    return keys


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_lost_index_is_rebuilt_from_the_records_once(vd_dirs, run_vd, damage):
    root = vd_dirs["cache"]
    keys = _three(root)
    if damage == "deleted":
        shutil.rmtree(root / "index")
    else:
        import diskcache

        with diskcache.Cache(str(root / "index"), disk=diskcache.JSONDisk) as db:
            db.clear()
    r = run_vd("cache", "ls", "--json")
    assert r.code == 0 and json.loads(r.stdout)["count"] == 3, r
    assert r.stderr.count("\n") == 1 and "rebuilt it from the 3" in r.stderr and "vd cache verify --rebuild" in r.stderr
    r = run_vd("cache", "ls", "--json")
    assert r.code == 0 and r.stderr == "" and json.loads(r.stdout)["count"] == 3  # said once
    with Cache.open(root, remote=None) as c:
        for k in keys:
            rec, hit = c.memoise(k, lambda: pytest.fail("recomputed although cached"), stage="depth")
            assert hit and rec.read("a") == k.encode() * 100


def test_a_stage_run_rebuilds_a_deleted_index_instead_of_recomputing(vd_dirs, capsys):
    root = vd_dirs["cache"]
    keys = _three(root)
    shutil.rmtree(root / "index")
    cache = Cache.open(remote=None)
    assert "verify --rebuild" in capsys.readouterr().err
    assert cache.memoise(keys[0], lambda: pytest.fail("recomputed"), stage="depth")[1]


def _shared_with_one_corrupt(tmp_path: Path) -> tuple[str, str, Path]:
    remote = f"file://{tmp_path / 'shared'}"
    with Cache.open(tmp_path / "a", remote=remote) as a:
        a.put("1" * 32, {"x": b"one" * 1000}, stage="depth")
        a.put("2" * 32, {"x": b"two" * 1000}, stage="coarse-view")
    obj = tmp_path / "shared" / "objects" / content_hash(b"two" * 1000)[:2] / content_hash(b"two" * 1000)[2:]
    obj.write_bytes(b"garbage" * 10)
    return remote, "2" * 32, obj


def test_pull_fails_naming_records_with_corrupt_remote_objects(run_vd, tmp_path, monkeypatch):
    remote, bad_key, _ = _shared_with_one_corrupt(tmp_path)
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "b"))
    r = run_vd("cache", "pull", "--cache-remote", remote)
    assert r.code == 1, r
    assert "pulled 1 record" in r.stdout
    assert bad_key[:12] in r.stderr and "corrupt" in r.stderr and r.stderr.count("\n") == 1, r
    with Cache.open(tmp_path / "b", remote=None) as b:
        assert b.get("1" * 32).read("x") == b"one" * 1000 and b.get(bad_key) is None


def test_a_corrupt_remote_object_is_warned_about_once(tmp_path, capsys):
    remote, bad_key, _ = _shared_with_one_corrupt(tmp_path)
    b = Cache.open(tmp_path / "b", remote=remote)
    rec, hit = b.memoise(bad_key, lambda: {"x": b"two" * 1000}, stage="coarse-view")
    assert not hit and rec.read("x") == b"two" * 1000
    assert capsys.readouterr().err.count("missing or corrupt") == 1


def test_push_dry_run_totals_what_would_be_sent(run_vd, tmp_path, monkeypatch):
    with Cache.open(tmp_path / "a", remote=None) as a:
        a.put("1" * 32, {"x": b"1" * 3000, "y": b"2" * 2000}, stage="depth")
        a.put("2" * 32, {"x": b"1" * 3000}, stage="depth")  # shares its object with the first
    remote = f"file://{tmp_path / 'shared'}"
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "a"))
    r = run_vd("cache", "push", "--cache-remote", remote, "--dry-run", "--json")
    assert r.code == 0, r
    dry = json.loads(r.stdout)
    assert not (tmp_path / "shared" / "records").exists()
    r = run_vd("cache", "push", "--cache-remote", remote, "--json")
    assert r.code == 0, r
    assert dry["bytes"] == json.loads(r.stdout)["bytes"] > 0
    r = run_vd("cache", "push", "--cache-remote", remote, "--dry-run")
    assert r.code == 0 and "would push 0 records (0 B)" in r.stdout, r


def test_push_never_uploads_a_corrupt_local_object(run_vd, tmp_path, monkeypatch):
    with Cache.open(tmp_path / "a", remote=None) as a:
        victim = a.put("1" * 32, {"x": b"1" * 3000}, stage="depth").path("x")
    _tamper(victim, keep_mtime=True)
    remote = f"file://{tmp_path / 'shared'}"
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "a"))
    r = run_vd("cache", "push", "--cache-remote", remote)
    assert r.code == 1 and "corrupt" in r.stderr and "verify --repair" in r.stderr, r
    assert not list((tmp_path / "shared").rglob("*.json"))
    assert not [p for p in (tmp_path / "shared").rglob("*") if p.is_file() and "objects" in p.parts]
