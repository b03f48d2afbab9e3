"""The content-addressed cache: keys, memoisation, integrity, crash safety, concurrency."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vd.cache import Cache, codecs, content_hash, file_hash, maintenance, stage_key, step_key
from vd.cache import objects as objmod
from vd.errors import CacheError

REPO = Path(__file__).resolve().parents[1]

BASE = dict(
    stage="depth",
    version=1,
    params={"max_resolution": 512, "focal": None, "fov": 60.0, "flags": ["a", "b"]},
    inputs={"image": content_hash(b"pixels")},
    models={"moge": "moge-2-vitl-normal:abc123"},
    backend="file",
    dtype="float32",
    seed=0,
)
# Pinned: the canonical form must not drift between versions or processes.
GOLDEN_KEY = "17944d8149a40231e6cd0e68ee3f8223"


def _object_files(root: Path) -> list[Path]:
    return [p for p in (root / "objects").rglob("*") if p.is_file()]


def _artifacts(n: int = 1) -> dict[str, bytes]:
    depth = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64) * n
    return {
        "depth.safetensors": codecs.encode_tensors({"depth": depth}),
        "meta.json": codecs.encode_json({"n": n}),
        "rgb.png": codecs.encode_png(np.full((8, 8, 3), n % 256, np.uint8)),
    }


def test_miss_then_hit(vd_dirs):
    cache = Cache.open()
    calls = []

    def compute():
        calls.append(1)
        return _artifacts(1)

    key = stage_key(**BASE)
    rec, hit = cache.memoise(key, compute, stage="depth", image="photo.png", meta={"note": "x"})
    assert (hit, len(calls)) == (False, 1)
    rec2, hit2 = cache.memoise(key, compute, stage="depth", image="photo.png")
    assert (hit2, len(calls)) == (True, 1)
    assert rec2.key == key and rec2.stage == "depth" and rec2.image == "photo.png"
    assert rec2.meta == {"note": "x"}
    assert rec2.read("meta.json") == _artifacts(1)["meta.json"]
    assert rec2.path("rgb.png").read_bytes() == _artifacts(1)["rgb.png"]
    assert rec2.size == sum(len(v) for v in _artifacts(1).values())
    # objects are content-addressed under objects/<2>/<30>
    digest = content_hash(_artifacts(1)["rgb.png"])
    assert rec2.path("rgb.png") == vd_dirs["cache"] / "objects" / digest[:2] / digest[2:]
    assert (vd_dirs["cache"] / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    # a fresh handle (another process, later) sees the same record
    assert Cache.open().get(key).names == ["depth.safetensors", "meta.json", "rgb.png"]


def test_compute_may_return_meta(vd_dirs):
    cache = Cache.open()
    rec, hit = cache.memoise("k" * 32, lambda: ({"a": b"1"}, {"loss": 0.5}), stage="s", meta={"p": 1})
    assert not hit and rec.meta == {"p": 1, "loss": 0.5}
    assert cache.get("k" * 32).meta == {"p": 1, "loss": 0.5}


def test_meta_is_stored_as_plain_json(vd_dirs):
    cache = Cache.open()
    meta = {"loss": np.float32(0.25), "shape": np.array([2, 3]), "path": Path("a/b"), "bad": float("inf")}
    rec, _ = cache.memoise("m" * 32, lambda: {"a": b"1"}, stage="s", meta=meta)
    assert Cache.open().get("m" * 32).meta == {"loss": 0.25, "shape": [2, 3], "path": "a/b", "bad": None}


def test_bad_artifacts_are_refused(vd_dirs):
    cache = Cache.open()
    with pytest.raises(TypeError):
        cache.memoise("x" * 32, lambda: {"a": "not bytes"}, stage="s")
    with pytest.raises(TypeError):
        cache.memoise("x" * 32, lambda: [b"1"], stage="s")
    assert "x" * 32 not in cache


def test_key_changes_with_params_version_models_seed():
    base = stage_key(**BASE)
    assert base == stage_key(**{**BASE, "params": dict(reversed(list(BASE["params"].items())))})
    changed = [
        {**BASE, "params": {**BASE["params"], "fov": 61.0}},
        {**BASE, "version": 2},
        {**BASE, "models": {"moge": "moge-2-vitl-normal:def456"}},
        {**BASE, "seed": 1},
        {**BASE, "backend": "moge"},
        {**BASE, "dtype": "bfloat16"},
        {**BASE, "inputs": {"image": content_hash(b"other")}},
        {**BASE, "stage": "scaffold"},
    ]
    keys = {stage_key(**c) for c in changed}
    assert base not in keys and len(keys) == len(changed)
    assert len(base) == 32 and int(base, 16) >= 0


def test_param_change_and_version_bump_miss(vd_dirs):
    cache = Cache.open()
    calls = []

    def compute():
        calls.append(1)
        return {"x": str(len(calls)).encode()}

    for kw in (BASE, {**BASE, "params": {**BASE["params"], "fov": 70.0}}, {**BASE, "version": 2}, BASE):
        cache.memoise(stage_key(**kw), compute, stage="depth")
    assert len(calls) == 3  # the last one is the first key again: a hit


def test_step_keys():
    parent = stage_key(**BASE)
    k3 = step_key(parent, "view", 3)
    assert k3 == step_key(parent, "view", 3)
    assert len({k3, step_key(parent, "view", 4), step_key(parent, "view", 3, radius=1.0), step_key(stage_key(**{**BASE, "seed": 9}), "view", 3)}) == 4


def test_keys_stable_across_processes_and_hash_seeds():
    script = textwrap.dedent(
        """
        import json, sys
        from vd.cache import stage_key, step_key
        kw = json.loads(sys.argv[1])
        k = stage_key(**kw)
        print(k, step_key(k, "view", 3, extra={"b": 1, "a": 2}))
        """
    )
    kw = json.dumps(BASE)
    outs = set()
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        p = subprocess.run([sys.executable, "-c", script, kw], capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        outs.add(p.stdout.strip())
    here = stage_key(**BASE)
    assert outs == {f"{here} {step_key(here, 'view', 3, extra={'a': 2, 'b': 1})}"}


def test_key_golden_value():
    """The canonical JSON and hash are part of the on-disk format: changing them orphans every cache."""
    from vd.cache.keys import canonical_json

    assert canonical_json({"b": [1, 2.5, None], "a": {"z": True, "y": "é"}}) == '{"a":{"y":"é","z":true},"b":[1,2.5,null]}'
    assert content_hash(b"") == "99aa06d3014798d86001c324468d497f"
    assert stage_key(stage="depth", version=1) == stage_key(stage="depth", version=1, params={}, inputs={}, models={})
    # regenerate GOLDEN_KEY only together with a KEY_SCHEMA bump
    assert stage_key(**BASE) == GOLDEN_KEY


def test_keys_refuse_ambiguous_values():
    with pytest.raises(ValueError):
        stage_key(stage="s", version=1, params={"x": float("nan")})
    with pytest.raises(TypeError):
        stage_key(stage="s", version=1, params={"x": object()})
    # numpy scalars and paths are normalised
    assert stage_key(stage="s", version=1, params={"x": np.float32(0.5), "p": Path("a/b")}) == stage_key(
        stage="s", version=1, params={"x": 0.5, "p": "a/b"}
    )


def test_file_hash_equals_content_hash(tmp_path):
    p = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    p.write_bytes(data)
    assert file_hash(p) == content_hash(data)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert content_hash(a) != content_hash(a.reshape(3, 2)) != content_hash(a.astype(np.float64))


def test_corrupt_object_is_detected_dropped_and_recomputed(vd_dirs, capsys):
    cache = Cache.open()
    calls = []

    def compute():
        calls.append(1)
        return _artifacts(2)

    key = stage_key(**BASE)
    rec, _ = cache.memoise(key, compute, stage="depth")
    victim = rec.path("depth.safetensors")
    os.chmod(victim, 0o644)
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF  # same size, one flipped byte
    victim.write_bytes(bytes(raw))
    capsys.readouterr()
    rec2, hit = cache.memoise(key, compute, stage="depth")
    assert not hit and len(calls) == 2
    err = capsys.readouterr().err
    assert "warning" in err and "corrupt" in err and key[:12] in err
    assert rec2.read("depth.safetensors") == _artifacts(2)["depth.safetensors"]
    assert objmod.verify(victim, content_hash(_artifacts(2)["depth.safetensors"]))


def test_missing_object_is_recomputed(vd_dirs):
    cache = Cache.open()
    calls = []
    key = stage_key(**BASE)
    rec, _ = cache.memoise(key, lambda: calls.append(1) or {"a": b"hello"}, stage="depth")
    os.unlink(rec.path("a"))
    rec2, hit = cache.memoise(key, lambda: calls.append(1) or {"a": b"hello"}, stage="depth")
    assert not hit and len(calls) == 2 and rec2.read("a") == b"hello"


def test_read_of_corrupted_record_raises_and_drops(vd_dirs):
    cache = Cache.open()
    key = stage_key(**BASE)
    rec, _ = cache.memoise(key, lambda: {"a": b"hello world"}, stage="depth")
    p = rec.path("a")
    os.chmod(p, 0o644)
    p.write_bytes(b"hello w0rld")
    with pytest.raises(CacheError, match="corrupt"):
        rec.read("a")
    assert key not in cache and not p.exists()


def test_find_filters_and_orders(vd_dirs, tmp_path):
    cache = Cache.open()
    img_a, img_b = tmp_path / "a.png", tmp_path / "b.png"
    for i, (stage, img) in enumerate([("depth", img_a), ("depth", img_b), ("coarse", img_a)]):
        cache.memoise(f"{i:032x}", lambda i=i: {"x": bytes([i])}, stage=stage, image=str(img))
        time.sleep(0.01)
    assert [r.key[-1] for r in cache.find()] == ["2", "1", "0"]
    assert [r.key[-1] for r in cache.find(stage="depth")] == ["1", "0"]
    assert [r.key[-1] for r in cache.find(image=img_a)] == ["2", "0"]
    assert [r.key[-1] for r in cache.find(image=str(img_a), stage="coarse")] == ["2"]
    # relative and absolute spellings of the same image match
    os.chdir(tmp_path)
    assert [r.key[-1] for r in cache.find(image="b.png")] == ["1"]


def test_codecs_roundtrip():
    t = {"depth": np.random.rand(5, 7).astype(np.float32), "mask": np.ones((5, 7), bool), "K": np.eye(3)}
    back = codecs.decode_tensors(codecs.encode_tensors(t, metadata={"units": "m"}))
    for k in t:
        assert back[k].dtype == t[k].dtype and np.array_equal(back[k], t[k])
    assert codecs.tensors_metadata(codecs.encode_tensors(t, metadata={"units": "m"})) == {"units": "m"}
    assert codecs.encode_tensors(t) == codecs.encode_tensors(dict(reversed(list(t.items()))))
    import torch

    tt = {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "x": torch.ones(2, requires_grad=True)}
    back = codecs.decode_tensors(codecs.encode_tensors(tt))
    assert back["w"].dtype == np.float32 and back["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    obj = {"b": 1, "a": [1.5, float("nan")], "arr": np.arange(3), "f": np.float32(2.0)}
    assert codecs.decode_json(codecs.encode_json(obj)) == {"a": [1.5, None], "arr": [0, 1, 2], "b": 1, "f": 2.0}
    for img in (
        np.random.randint(0, 255, (6, 5, 3), np.uint8),
        np.random.randint(0, 255, (6, 5), np.uint8),
        np.random.randint(0, 65535, (6, 5), np.uint16),
        np.random.randint(0, 255, (6, 5, 4), np.uint8),
    ):
        out = codecs.decode_png(codecs.encode_png(img))
        assert out.dtype == img.dtype and np.array_equal(out, img)
    assert np.array_equal(codecs.decode_png(codecs.encode_png(np.eye(3, dtype=bool))), np.eye(3, dtype=np.uint8) * 255)
    with pytest.raises(TypeError):
        codecs.encode_png(np.zeros((2, 2), np.float32))


# --------------------------------------------------------------------------- crash safety
_SLOW_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vd.cache import Cache
    from vd.cache import objects

    ready = Path(sys.argv[1])
    real = objects._write_all

    def slow(fd, view):
        step = 1 << 16
        for i in range(0, len(view), step):
            os.write(fd, view[i:i + step])
            if i == step * 4:
                ready.write_text("writing")
            time.sleep(0.01)

    objects._write_all = slow
    cache = Cache.open()
    cache.memoise("f" * 32, lambda: {"small": b"done-first", "big": os.urandom(64 << 20)}, stage="slow")
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("named_temps", [False, True], ids=["o_tmpfile", "named-temp"])
def test_sigkill_mid_write_leaves_no_entry_and_no_partial_object(vd_dirs, tmp_path, named_temps):
    ready = tmp_path / "ready"
    script = _SLOW_WRITER
    if named_temps:
        script = script.replace("cache = Cache.open()", "objects._tmpfile_ok['value'] = False\ncache = Cache.open()")
    proc = subprocess.Popen([sys.executable, "-c", script, str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "writer never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    cache = Cache.open()
    assert "f" * 32 not in cache and len(cache) == 0
    root = vd_dirs["cache"]
    # the object that was complete before the kill may exist (unreferenced); the big one must not
    for digest, p, st in objmod.iter_objects(root / "objects"):
        assert objmod.verify(p, digest), f"partial object {p}"
        assert st.st_size == len(b"done-first")
    leftovers = [p for p in _object_files(root) if p.name.startswith(objmod.TMP_PREFIX)]
    if not named_temps:
        assert leftovers == []  # anonymous temp files vanish with the process
    # verify --repair removes leftovers of the killed writer; the next run computes normally
    report = maintenance.verify(cache, repair=True)
    assert report["corrupt"] == [] and report["missing"] == []
    assert [p for p in _object_files(root) if p.name.startswith(objmod.TMP_PREFIX)] == []
    rec, hit = cache.memoise("f" * 32, lambda: {"small": b"done-first", "big": b"b" * 1000}, stage="slow")
    assert not hit and rec.read("big") == b"b" * 1000


_RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vd.cache import Cache

    go = Path(sys.argv[1])
    payload = bytes(range(256)) * (16 << 12)  # 16 MiB, identical in both processes
    cache = Cache.open()
    (go.parent / f"ready-{os.getpid()}").write_text("ready")
    while not go.exists():
        time.sleep(0.002)
    rec, hit = cache.memoise("e" * 32, lambda: {"big": payload, "json": b'{"a":1}'}, stage="race")
    assert rec.read("big") == payload
    print("hit" if hit else "miss", flush=True)
    """
)


def test_two_processes_writing_the_same_key(vd_dirs, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2:  # both imported, cache open, waiting
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.time() < deadline
        time.sleep(0.01)
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    # usually both miss and write at the same time; either way exactly one record and one copy
    assert sorted(o.strip() for o, _ in outs) in (["miss", "miss"], ["hit", "miss"])
    cache = Cache.open()
    assert len(cache) == 1
    files = _object_files(vd_dirs["cache"])
    assert len(files) == 2 and all(not p.name.startswith(".") for p in files)
    assert maintenance.verify(cache)["corrupt"] == []
    assert cache.get("e" * 32).read("big") == bytes(range(256)) * (16 << 12)


# --------------------------------------------------------------------------- bad cache dirs
def test_cache_dir_under_a_file_is_one_sentence(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("VD_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CacheError) as e:
        Cache.open()
    msg = str(e.value)
    assert "\n" not in msg and str(blocker) in msg and "VD_CACHE_DIR" in msg
    monkeypatch.setenv("VD_CACHE_DIR", str(blocker))
    with pytest.raises(CacheError, match="is a file"):
        Cache.open()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_cache_dir(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setenv("VD_CACHE_DIR", str(ro / "cache"))
    try:
        with pytest.raises(CacheError, match="not writable"):
            Cache.open()
    finally:
        ro.chmod(0o755)


def test_unwritable_cache_dir_is_one_sentence(vd_dirs, monkeypatch):
    import vd.cache.store as store

    monkeypatch.setattr(store.os, "access", lambda *a, **k: False)
    with pytest.raises(CacheError, match="not writable") as e:
        Cache.open()
    assert "\n" not in str(e.value)


def test_full_disk_leaves_nothing_half_written(vd_dirs, monkeypatch):
    cache = Cache.open()
    real_write = os.write
    calls = {"n": 0}

    def enospc(fd, data):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(objmod, "CHUNK", 1024)
    monkeypatch.setattr(objmod.os, "write", enospc)
    with pytest.raises(CacheError) as e:
        cache.memoise("d" * 32, lambda: {"big": os.urandom(100_000)}, stage="full")
    assert "no space left" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(objmod.os, "write", real_write)
    assert "d" * 32 not in cache
    assert _object_files(vd_dirs["cache"]) == []  # no object, no temp file


# --------------------------------------------------------------------------- gc
def test_gc_keeps_shared_objects(vd_dirs):
    cache = Cache.open()
    cache.memoise("1" * 32, lambda: {"shared": b"S" * 100, "own": b"a"}, stage="s")
    cache.memoise("2" * 32, lambda: {"shared": b"S" * 100, "own": b"b"}, stage="s")
    assert len(_object_files(vd_dirs["cache"])) == 3
    cache.delete("1" * 32)
    n, size = maintenance.gc(cache, candidates={content_hash(b"S" * 100), content_hash(b"a")})
    assert (n, size) == (1, 1)
    assert cache.get("2" * 32).read("shared") == b"S" * 100
