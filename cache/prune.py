"""Prune planning: which records (and model weights) a scoped `vd cache prune` deletes, then
the deletion itself (objects first, so that a full disk gets room for the index's deletes).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vd.cache.maintenance import gc, tree_size_and_mtime
from vd.cache.store import Cache, Record
from vd.paths import models_dir as default_models_dir


@dataclass
class PrunePlan:
    records: list[Record]
    freed_objects: int
    freed_bytes: int
    models: list[tuple[Path, int]]  # (path, bytes) of model folders/files to delete
    freed: frozenset = frozenset()  # digests no kept record refers to

    @property
    def model_bytes(self) -> int:
        return sum(s for _, s in self.models)


def plan_prune(
    cache: Cache | None,
    *,
    older_than_s: float | None = None,
    max_size: int | None = None,
    stage: str | None = None,
    image: Any = None,
    include_models: bool = False,
    models_dir: Path | None = None,
    now: float | None = None,
) -> PrunePlan:
    """Which records (and model weights) a prune would delete.

    `stage` and `image` restrict the candidates; among them, `older_than_s` selects those not
    used for that long, and `max_size` then evicts the least recently used until the cache holds
    at most `max_size` bytes. With only `stage`/`image`, every candidate goes. Model weights are
    considered only with `include_models` (all of them, or those older than `older_than_s`).
    """
    now = time.time() if now is None else now
    records = cache.records() if cache is not None else []
    if cache is not None and (stage is not None or image is not None):
        candidates = cache.find(image=image, stage=stage)
    else:
        candidates = list(records)
    cand_keys = {r.key for r in candidates}
    scoped = stage is not None or image is not None
    victims: dict[str, Record] = {}
    if older_than_s is not None:
        for r in candidates:
            if now - r.last_used >= older_than_s:
                victims[r.key] = r
    elif max_size is None and scoped:
        victims = {r.key: r for r in candidates}

    refcount: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for r in records:
        for a in r.artifacts.values():
            refcount[a["hash"]] = refcount.get(a["hash"], 0) + 1
            sizes[a["hash"]] = a["size"]

    freed: set[str] = set()

    def remove(r: Record) -> None:
        for a in r.artifacts.values():
            d = a["hash"]
            refcount[d] -= 1
            if refcount[d] == 0:
                freed.add(d)

    for r in victims.values():
        remove(r)
    if max_size is not None:
        total = sum(sizes[d] for d, c in refcount.items() if c > 0)
        for r in sorted((r for r in records if r.key in cand_keys and r.key not in victims), key=lambda r: r.last_used):
            if total <= max_size:
                break
            before = set(freed)
            remove(r)
            total -= sum(sizes[d] for d in freed - before)
            victims[r.key] = r

    models: list[tuple[Path, int]] = []
    if include_models:
        mdir = models_dir or default_models_dir()
        if mdir.is_dir():
            for p in sorted(mdir.iterdir()):
                size, newest = tree_size_and_mtime(p)
                if older_than_s is None or now - newest >= older_than_s:
                    models.append((p, size))
    ordered = sorted(victims.values(), key=lambda r: r.last_used)
    return PrunePlan(ordered, len(freed), sum(sizes[d] for d in freed), models, frozenset(freed))


def apply_prune(cache: Cache | None, plan: PrunePlan) -> tuple[int, int]:
    """Delete the planned records, collect their objects, delete planned model weights."""
    count = size = 0
    if cache is not None:
        cache.check_deletable()
        # objects first: on a full disk that frees the room the index needs to record the deletes
        for digest in plan.freed:
            got = cache.objects.size(digest)
            if got is None:
                continue
            size += got
            count += 1
            cache.objects.delete(digest)
        candidates: set[str] = set()
        for r in plan.records:
            cache.delete(r.key)
            candidates.update(a["hash"] for a in r.artifacts.values())
        more, more_bytes = gc(cache, candidates=candidates)
        count, size = count + more, size + more_bytes
    for p, _ in plan.models:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass
    return count, size
