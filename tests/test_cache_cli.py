"""`vd cache ls | du | prune | verify | clear` through the CLI."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from vd.cache import Cache

DAY = 86400.0


def _fill(cache_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Four records: depth/coarse of a.png and b.png, with last use 40, 20, 5 and 0 days ago."""
    cache = Cache.open()
    now = time.time()
    keys = {}
    spec = [("depth", "a.png", 40, 1000), ("coarse", "a.png", 20, 2000), ("depth", "b.png", 5, 4000), ("coarse", "b.png", 0, 8000)]
    for i, (stage, img, age_days, size) in enumerate(spec):
        key = f"{i:x}" * 32
        cache.memoise(key, lambda i=i, size=size: {"data": bytes([i]) * size}, stage=stage, image=str(tmp_path / img))
        cache.touch(key, now - age_days * DAY)
        keys[f"{stage}:{img}"] = key
    cache.close()
    return keys


def _remaining(run_vd) -> set[str]:
    r = run_vd("cache", "ls", "--json")
    assert r.code == 0, r
    return {f"{x['stage']}:{Path(x['image']).name}" for x in json.loads(r.stdout)["records"]}


ALL = {"depth:a.png", "coarse:a.png", "depth:b.png", "coarse:b.png"}


def test_ls_empty_does_not_create_the_cache(run_vd, vd_dirs):
    r = run_vd("cache", "ls")
    assert r.code == 0 and r.stdout == "" and "no cached results" in r.stderr
    assert not vd_dirs["cache"].exists()
    r = run_vd("cache", "ls", "--json")
    assert json.loads(r.stdout) == {"root": str(vd_dirs["cache"]), "count": 0, "size": 0, "records": []}


def test_ls_table_and_filters(run_vd, vd_dirs, tmp_path):
    keys = _fill(vd_dirs["cache"], tmp_path)
    r = run_vd("cache", "ls")
    assert r.code == 0, r
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["KEY", "STAGE", "IMAGE", "SIZE"]
    assert len(lines) == 5
    assert keys["depth:a.png"][:12] in r.stdout and "5 weeks ago" in r.stdout and "8.0 kB" in r.stdout
    assert "4 records" in r.stderr
    r = run_vd("cache", "ls", "--stage", "depth", "--json")
    data = json.loads(r.stdout)
    assert data["count"] == 2 and {x["stage"] for x in data["records"]} == {"depth"}
    r = run_vd("cache", "ls", "--image", str(tmp_path / "b.png"), "--json")
    assert {x["key"] for x in json.loads(r.stdout)["records"]} == {keys["depth:b.png"], keys["coarse:b.png"]}


def test_du(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    (vd_dirs["models"] / "moge").mkdir(parents=True)
    (vd_dirs["models"] / "moge" / "model.pt").write_bytes(b"w" * 5000)
    r = run_vd("cache", "du", "--json")
    data = json.loads(r.stdout)
    assert data["records"] == 4 and data["size"] == 15000 and data["models_size"] == 5000
    assert data["stages"] == {"coarse": {"records": 2, "size": 10000}, "depth": {"records": 2, "size": 5000}}
    r = run_vd("cache", "du")
    assert r.code == 0 and "15.0 kB" in r.stdout and "5.0 kB" in r.stdout and str(vd_dirs["models"]) in r.stdout


def test_prune_needs_a_scope(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    r = run_vd("cache", "prune")
    assert r.code == 2 and "scope" in r.stderr and r.stdout == ""
    assert _remaining(run_vd) == ALL


@pytest.mark.parametrize(
    "args, gone",
    [
        (["--older-than", "30d"], {"depth:a.png"}),
        (["--older-than", "10d"], {"depth:a.png", "coarse:a.png"}),
        (["--stage", "coarse"], {"coarse:a.png", "coarse:b.png"}),
        (["--image", "IMG_A"], {"depth:a.png", "coarse:a.png"}),
        (["--stage", "depth", "--older-than", "1w"], {"depth:a.png"}),
        (["--max-size", "12kB"], {"depth:a.png", "coarse:a.png"}),  # LRU until <= 12 kB (15 -> 14 -> 12)
        (["--max-size", "12kB", "--stage", "depth"], {"depth:a.png", "depth:b.png"}),
        (["--older-than", "30d", "--max-size", "100GB"], {"depth:a.png"}),
    ],
)
def test_prune_scopes_and_dry_run(run_vd, vd_dirs, tmp_path, args, gone):
    _fill(vd_dirs["cache"], tmp_path)
    args = [str(tmp_path / "a.png") if a == "IMG_A" else a for a in args]
    before = sorted(p for p in (vd_dirs["cache"] / "objects").rglob("*") if p.is_file())

    r = run_vd("cache", "prune", *args, "--dry-run", "--json")
    assert r.code == 0, r
    plan = json.loads(r.stdout)
    assert plan["dry_run"] is True
    assert {f"{x['stage']}:{Path(x['image']).name}" for x in plan["records"]} == gone
    assert _remaining(run_vd) == ALL  # dry run deleted nothing
    assert sorted(p for p in (vd_dirs["cache"] / "objects").rglob("*") if p.is_file()) == before

    r = run_vd("cache", "prune", *args)
    assert r.code == 0, r
    assert r.stdout.strip().splitlines()[-1].startswith(f"deleted {len(gone)} record")
    assert _remaining(run_vd) == ALL - gone
    assert run_vd("cache", "verify").code == 0
    # freed objects are really gone
    n_files = len([p for p in (vd_dirs["cache"] / "objects").rglob("*") if p.is_file()])
    assert n_files == 4 - len(gone)


def test_prune_never_touches_models_unless_asked(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    weights = vd_dirs["models"] / "flux-fill" / "ae.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w" * 100)
    assert run_vd("cache", "prune", "--older-than", "0s").code == 0
    assert _remaining(run_vd) == set() and weights.exists()
    assert run_vd("cache", "clear", "--yes").code == 0 and weights.exists()
    r = run_vd("cache", "prune", "--include-models", "--dry-run")
    assert r.code == 0 and "flux-fill" in r.stdout and weights.exists()
    r = run_vd("cache", "prune", "--include-models", "--older-than", "1d")
    assert r.code == 0 and weights.exists()  # fresh weights are younger than a day
    r = run_vd("cache", "prune", "--include-models")
    assert r.code == 0 and not weights.exists()


def test_prune_bad_values_are_usage_errors(run_vd):
    for args in (["--older-than", "soon"], ["--max-size", "big"]):
        r = run_vd("cache", "prune", *args)
        assert r.code == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_verify_detects_and_repairs(run_vd, vd_dirs, tmp_path):
    keys = _fill(vd_dirs["cache"], tmp_path)
    assert run_vd("cache", "verify").code == 0
    rec = Cache.open().get(keys["coarse:b.png"])
    p = rec.path("data")
    os.chmod(p, 0o644)
    p.write_bytes(b"\0" * 8000)
    r = run_vd("cache", "verify")
    assert r.code == 1 and "corrupt" in r.stdout and "verify --repair" in r.stderr
    r = run_vd("cache", "verify", "--repair", "--json")
    data = json.loads(r.stdout)
    assert r.code == 0 and data["ok"] and len(data["corrupt"]) == 1
    assert "coarse:b.png" not in _remaining(run_vd)
    assert run_vd("cache", "verify").code == 0


def test_clear(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    r = run_vd("cache", "clear")
    assert r.code == 2 and "--yes" in r.stderr and _remaining(run_vd) == ALL
    r = run_vd("cache", "clear", "--yes")
    assert r.code == 0 and "deleted 4 records" in r.stdout
    assert _remaining(run_vd) == set()
    assert [p for p in (vd_dirs["cache"] / "objects").rglob("*") if p.is_file()] == []
    assert (vd_dirs["cache"] / "CACHEDIR.TAG").exists()


def test_unwritable_cache_dir_through_cli(run_vd, vd_dirs, tmp_path, monkeypatch):
    _fill(vd_dirs["cache"], tmp_path)
    import vd.cache.store as store

    with monkeypatch.context() as m:
        m.setattr(store.os, "access", lambda *a, **k: False)
        r = run_vd("cache", "clear", "--yes")
    assert r.code == 1 and r.stdout == ""
    assert r.stderr.startswith("error: cache directory is not writable") and r.stderr.count("\n") == 1
    assert _remaining(run_vd) == ALL  # nothing deleted


def test_full_disk_through_cli(run_vd, vd_dirs, tmp_path, monkeypatch):
    _fill(vd_dirs["cache"], tmp_path)
    from vd.cache import maintenance

    def boom(cache):
        raise OSError(errno.ENOSPC, "No space left on device", str(vd_dirs["cache"]))

    monkeypatch.setattr(maintenance, "clear", boom)
    r = run_vd("cache", "clear", "--yes")
    assert r.code == 1 and r.stdout == ""
    assert r.stderr.startswith("error: no space left") and r.stderr.count("\n") == 1


def test_corrupt_index_is_one_sentence_and_clear_recovers(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    weights = vd_dirs["models"] / "moge" / "model.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    (vd_dirs["cache"] / "index" / "cache.db").write_bytes(b"this is not sqlite" * 1000)
    r = run_vd("cache", "ls")
    assert r.code == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: the cache index") and r.stderr.count("\n") == 1
    r = run_vd("cache", "clear", "--yes")
    assert r.code == 0, r
    assert "unreadable" in r.stderr and r.stdout.startswith("deleted")
    assert _remaining(run_vd) == set() and weights.exists()
    assert [p for p in (vd_dirs["cache"] / "objects").rglob("*") if p.is_file()] == []


def test_verify_reports_progress_only_on_a_terminal(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    r = run_vd("cache", "verify")
    assert r.code == 0 and r.stderr == ""  # no bar when stderr is not a TTY
    assert r.stdout.startswith("checked 4 records and 4 objects: 0 problems")


def test_prune_models_without_a_cache(run_vd, vd_dirs):
    weights = vd_dirs["models"] / "moge" / "model.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w" * 10)
    r = run_vd("cache", "prune", "--stage", "depth")
    assert r.code == 0 and "deleted 0 records" in r.stdout and weights.exists()
    r = run_vd("cache", "prune", "--include-models")
    assert r.code == 0 and "moge" in r.stdout and not weights.exists()
    assert not vd_dirs["cache"].joinpath("index").exists()  # pruning never creates a cache


def test_a_stage_no_record_has_is_named_with_the_stages_the_cache_holds(run_vd, vd_dirs, tmp_path):
    _fill(vd_dirs["cache"], tmp_path)
    r = run_vd("cache", "prune", "--stage", "coarsee")
    assert r.code == 0 and "deleted 0 records" in r.stdout
    assert "no record of stage 'coarsee'; the cache holds coarse, depth" in r.stderr
    r = run_vd("cache", "ls", "--stage", "coarsee")
    assert r.code == 0 and "the cache holds coarse, depth" in r.stderr
    r = run_vd("cache", "prune", "--stage", "coarse", "--dry-run")
    assert r.code == 0 and "no record of stage" not in r.stderr
    assert _remaining(run_vd) == ALL
    r = run_vd("cache", "prune", "--stage", "coarse")  # the records it deletes were there
    assert r.code == 0 and "deleted 2 records" in r.stdout and "no record of stage" not in r.stderr
