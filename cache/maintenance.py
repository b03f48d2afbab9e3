"""Cache maintenance as plain functions of a `Cache`: verify (re-hash everything), gc (collect
unreferenced objects), clear, and the index rebuilt from the record files.

    from vd.cache import maintenance
    report = maintenance.verify(cache, repair=False)
    count, size = maintenance.gc(cache, candidates={...})
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from vd.cache import index as index_mod
from vd.cache import objects, records
from vd.cache.objectstore import LocalObjects
from vd.cache.store import Cache, check_root, now, root_of

GC_GRACE_S = 600.0  # orphan objects younger than this may belong to a write in progress


def referenced(cache: Cache) -> dict[str, int]:
    """digest -> size of every object some record refers to."""
    out = {}
    for r in cache.records():
        for a in r.artifacts.values():
            out[a["hash"]] = a["size"]
    return out


def objects_size(cache: Cache) -> tuple[int, int]:
    """(count, bytes) of the object files on disk."""
    n = total = 0
    for _, size in cache.objects.iterate():
        n += 1
        total += size
    return n, total


def tree_size_and_mtime(path: Path) -> tuple[int, float]:
    """Bytes under `path` (a file or a folder) and the newest modification time there."""
    if path.is_file() or path.is_symlink():
        st = path.lstat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return size, newest


def gc(
    cache: Cache, *, candidates: Optional[set[str]] = None, grace_s: float = GC_GRACE_S, dry_run: bool = False
) -> tuple[int, int]:
    """Delete unreferenced objects; returns (count, bytes).

    Objects in `candidates` (from records just deleted) go at once; other orphans only when
    older than `grace_s` (they may belong to a write in progress in another process).
    """
    count = size = 0

    def do():
        nonlocal count, size
        refs = referenced(cache)
        t = now()
        for digest, p, st in cache.objects.stat_all():
            if digest in refs:
                continue
            if (candidates is None or digest not in candidates) and t - st.st_mtime < grace_s:
                continue
            count += 1
            size += st.st_size
            if not dry_run:
                objects.remove(p)
        if not dry_run:
            for p in cache.objects.stale_temporaries():
                objects.remove(p)

    if dry_run:
        do()
    else:
        cache.index.locked(do)
    return count, size


def _set_stamps(stamps: dict) -> Callable[[dict], None]:
    """An index-entry update that records `stamps` (digest -> [size, mtime_ns] when last hashed)."""

    def update(entry: dict) -> None:
        entry["stamps"] = stamps

    return update


def empty_report(repair: bool = False) -> dict[str, Any]:
    """What `verify` reports for a cache with nothing in it."""
    return {
        "records": 0,
        "objects": 0,
        "corrupt": [],
        "missing": [],
        "orphans": 0,
        "orphan_bytes": 0,
        "temporaries": 0,
        "repaired": repair,
    }


def verify(cache: Cache, *, repair: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Re-hash every record's objects (stamps are not trusted here, and are renewed); with
    `repair`, drop broken records and orphans. `progress(done, total)` is called per record."""
    report = empty_report(repair)
    checked: dict[str, Optional[list]] = {}  # digest -> its new stamp, None when broken
    recs = cache.records()
    for i, r in enumerate(recs):
        if progress is not None:
            progress(i, len(recs))
        report["records"] += 1
        broken = []
        for name, a in r.artifacts.items():
            d = a["hash"]
            if d not in checked:
                item = {"key": r.key, "stage": r.stage, "artifact": name, "object": d}
                if not cache.objects.has(d):
                    checked[d] = None
                    report["missing"].append(item)
                else:
                    st = cache.objects.verify(d)
                    checked[d] = list(st) if st is not None and st[0] == a["size"] else None
                    if checked[d] is None:
                        report["corrupt"].append(item)
            if checked[d] is None:
                broken.append(d)
        if broken and repair:
            for d in broken:
                cache.objects.delete(d)
            cache.delete(r.key)
        elif not broken and not cache.readonly:
            stamps = {a["hash"]: checked[a["hash"]] for a in r.artifacts.values()}
            if stamps != r.stamps:
                cache.index.update(r.key, _set_stamps(stamps))
    report["objects"] = len(checked)
    refs = set(checked) if not repair else set(referenced(cache))
    t = now()
    for digest, _path, info in cache.objects.stat_all():
        if digest not in refs and t - info.st_mtime >= GC_GRACE_S:
            report["orphans"] += 1
            report["orphan_bytes"] += info.st_size
    report["temporaries"] = len(cache.objects.stale_temporaries())
    if repair:
        gc(cache)
    return report


def clear(cache: Cache) -> tuple[int, int]:
    """Delete every record and object (model weights are not touched); returns (records, bytes).

    Objects go first, so that on a full disk the index has room to shrink afterwards."""
    cache.check_deletable()
    _, size = objects_size(cache)
    count = len(cache)
    cache.objects.remove_all()
    records.clear(cache.root)
    if cache.readonly:  # a full disk: drop the whole index; the next run starts a new one
        cache.index.close()
        shutil.rmtree(cache.index_dir, ignore_errors=True)
        return count, size
    cache.index.clear()
    return count, size


def force_clear(root=None) -> int:
    """Delete the index and every object without opening the index (for a corrupt index).

    Model weights (models/) and CACHEDIR.TAG stay. Returns the bytes freed."""
    root = root_of(root)
    freed = sum(size for _, size in LocalObjects(root / "objects").iterate())
    try:
        for name in ("objects", "records", "index"):
            if (root / name).exists():
                shutil.rmtree(root / name)
        (root / "objects").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise objects.cache_error(e, root) from e
    return freed


def rebuild_index(root=None) -> dict:
    """Replace the index with one rebuilt from the record files whose objects are all present
    (the others' record files are deleted). Returns {"records": kept, "skipped": dropped}."""
    root = root_of(root)
    check_root(root)
    shutil.rmtree(root / "index", ignore_errors=True)
    index = Cache.open_index(root)
    try:
        kept, skipped = index_mod.adopt_records(
            index, LocalObjects(root / "objects"), only_if_empty=False, delete_broken=True
        )
    finally:
        index.close()
    return {"records": kept, "skipped": skipped}


__all__ = [
    "empty_report",
    "GC_GRACE_S",
    "referenced",
    "objects_size",
    "tree_size_and_mtime",
    "gc",
    "verify",
    "clear",
    "force_clear",
    "rebuild_index",
]
