"""The cache and output folders under stress: a full disk, concurrent runs of one key, a damaged
index, read-only or occupied outputs and inputs that share a stem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from diskfull import fill, free_bytes, tiny_tmpfs
from test_coarse import BASE, make_scene


def _put_three(root: Path) -> None:
    from vd.cache import Cache

    with Cache.open(root, remote=None) as c:
        for i in range(3):
            c.put(f"{i:032x}", {"a": os.urandom(60_000)}, stage="depth" if i < 2 else "coarse", image=f"/img{i}.png")


def test_cache_maintenance_works_on_a_full_disk(run_vd, tmp_path, monkeypatch):
    with tiny_tmpfs(tmp_path / "fs", "1m") as fs:
        root = fs / "cache"
        monkeypatch.setenv("VD_CACHE_DIR", str(root))
        _put_three(root)
        fill(fs)
        assert free_bytes(fs) < 8192
        from vd.cache import Cache

        with pytest.raises(Exception, match="no space left"):
            Cache.open(root, remote=None)  # a computing command says so in one sentence
        r = run_vd("cache", "ls")
        assert r.code == 0 and r.stdout.count("depth") == 2, r
        r = run_vd("cache", "du", "--json")
        assert r.code == 0 and json.loads(r.stdout)["records"] == 3, r
        r = run_vd("cache", "prune", "--stage", "depth")
        assert r.code == 0 and "deleted 2 records" in r.stdout, r
        assert free_bytes(fs) >= 40_000  # 120 kB of objects, less the WAL of the deletes
        r = run_vd("cache", "ls", "--json")
        assert r.code == 0 and [x["stage"] for x in json.loads(r.stdout)["records"]] == ["coarse"], r
        fill(fs)
        r = run_vd("cache", "clear", "--yes")
        assert r.code == 0 and "deleted 1 record" in r.stdout, r
        assert not any((root / "objects").rglob("*")) or all(p.is_dir() for p in (root / "objects").rglob("*"))


@pytest.mark.slow
def test_coarse_output_on_a_full_disk_leaves_no_partial_files(run_vd, tmp_path, one_torch_thread):
    img = make_scene(tmp_path / "in")
    with tiny_tmpfs(tmp_path / "fs", "1m") as fs:
        out = fs / "out"
        fill(fs, leave=500_000)  # the views and scaffold.ply fit, coarse.ply does not
        r = run_vd("coarse", img, "-o", out, *BASE)
        assert r.code == 1, r
        assert r.stderr.strip().splitlines()[-1].startswith("error: no space left on the device holding"), r
        assert "requested and" not in r.stderr
        left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        assert left == [], left


SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from vd import console; console.install_log_handler()  # show the library's log lines, as the CLI does
    from vd.cache import Cache
    from vd.cache.store import stats
    cache = Cache.open(sys.argv[1], remote=None)
    def compute():
        with open(sys.argv[2], "a") as f:
            f.write("computed\\n")
        time.sleep(1.5)
        return {"a": b"result"}
    rec, hit = cache.memoise("ab" * 16, compute, stage="depth")
    assert rec.read("a") == b"result"
    print(json.dumps(stats()))
    """
)


def test_same_key_in_flight_is_computed_once(tmp_path):
    log = tmp_path / "computed.log"
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path / "cache"), str(log)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    counters = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs), key=lambda s: s["computed"])
    assert log.read_text().count("computed") == 1
    assert counters[0]["computed"] == 0 and counters[0]["hits"] == 1 and counters[0]["waited"] == 1, counters
    assert counters[1]["computed"] == 1 and counters[1]["hits"] == 0, counters
    assert any("waiting for another vd process" in e for _, e in outs)


def test_a_damaged_index_is_rebuilt_from_the_record_files(run_vd, vd_dirs):
    root = vd_dirs["cache"]
    _put_three(root)
    db = root / "index" / "cache.db"
    db.write_bytes(b"this is not a database" * 100)
    r = run_vd("cache", "ls")
    assert r.code == 1 and "vd cache verify --rebuild" in r.stderr and "clear" not in r.stderr, r
    r = run_vd("cache", "verify", "--rebuild")
    assert r.code == 0 and "rebuilt the index from 3 record files" in r.stderr, r
    from vd.cache import Cache

    with Cache.open(root, remote=None) as c:
        assert len(c) == 3
        assert len(c.get(f"{0:032x}").read("a")) == 60_000


def test_rebuild_skips_records_whose_objects_are_gone(vd_dirs):
    from vd.cache import Cache, maintenance
    from vd.cache import objects as objs

    root = vd_dirs["cache"]
    _put_three(root)
    with Cache.open(root, remote=None) as c:
        victim = c.get(f"{1:032x}")
        objs.object_path(c.objects_dir, victim.artifacts["a"]["hash"]).unlink()
    assert maintenance.rebuild_index(root) == {"records": 2, "skipped": 1}


# ------------------------------------------------------------------------------ output folders
def test_an_occupied_output_fails_before_computing(run_vd, tmp_path):
    img = make_scene(tmp_path / "in")
    occupied = tmp_path / "taken"
    occupied.write_text("a file")
    # moge without weights would exit 3 after loading; the output check comes first
    r = run_vd("coarse", img, "-o", occupied, "--depth-backend", "moge", "--device", "cpu")
    assert r.code == 1 and "output folder is a file" in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_vd("depth", img, "-o", occupied / "sub", "--backend", "file", "--focal", "56")
    assert r.code == 1 and "is a file" in r.stderr, r


def test_a_read_only_output_fails_before_computing(run_vd, tmp_path):
    img = make_scene(tmp_path / "in")
    with tiny_tmpfs(tmp_path / "ro", "64k", readonly=True) as ro:
        r = run_vd("coarse", img, "-o", ro / "out", "--depth-backend", "moge", "--device", "cpu")
        assert r.code == 1 and "not writable" in r.stderr, r


def test_inputs_sharing_a_stem_get_distinct_folders(run_vd, tmp_path):
    from PIL import Image

    for sub, value in (("sa", 40), ("sb", 200)):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.full((32, 48, 3), value, np.uint8)).save(tmp_path / sub / "x.png")
        np.save(tmp_path / sub / "x.depth.npy", np.full((32, 48), value / 10, np.float32))
    out = tmp_path / "D"
    r = run_vd("depth", tmp_path / "sa" / "x.png", tmp_path / "sb" / "x.png", "-o", out, "--backend", "file", "--focal", "40")
    assert r.code == 0, r
    a, b = np.load(out / "sa" / "x" / "depth.npy"), np.load(out / "sb" / "x" / "depth.npy")
    assert a.max() == pytest.approx(4.0) and b.max() == pytest.approx(20.0)
    assert not (out / "x").exists()


def test_output_dirs_names():
    from vd.outputs import output_dirs

    assert output_dirs(Path("D"), [Path("a.png")]) == [Path("D")]
    assert output_dirs(None, [Path("/i/a.png"), Path("/i/b.png")]) == [Path("vd-out/a"), Path("vd-out/b")]
    assert output_dirs(Path("D"), [Path("/i/s/a/x.png"), Path("/i/t/x.png")]) == [Path("D/s/a/x"), Path("D/t/x")]
    assert output_dirs(Path("D"), [Path("/i/x.png"), Path("/i/x.jpg")]) == [Path("D/x-png"), Path("D/x-jpg")]
    assert output_dirs(Path("D"), [Path("/i/x.png"), Path("/i/x.png")]) == [Path("D"), Path("D")]
