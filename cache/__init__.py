"""The content-addressed artifact cache that every stage memoises through.

API contract (stages rely on exactly this; extend, do not change):

    from vd.cache import Cache, stage_key, step_key, content_hash, file_hash
    from vd.cache import codecs          # encode/decode helpers for artifact bytes

    cache = Cache.open()                 # root from vd.paths.cache_dir(); creates CACHEDIR.TAG
    key = stage_key(stage="depth", version=1, params={...}, inputs={"image": img_hash},
                    models={"moge": weight_hash}, backend="file", dtype="float32", seed=0)
    record, hit = cache.memoise(key, compute, stage="depth", image=str(image_path), meta=None)
        # compute() -> Mapping[str, bytes] (or (mapping, meta_dict)); called only on a miss; its
        # artifacts are stored atomically, then indexed. A hit checks every object first: hashed
        # once, then trusted while its file is read-only with the size and mtime it had when
        # hashed; a corrupt object is dropped with a warning and the entry recomputed, never
        # returned.
    record.read("depth.safetensors") -> bytes     # verified bytes
    record.path("depth.safetensors") -> Path      # the object file (read-only, verified on load)
    record.meta -> dict;  record.key, record.stage, record.image, record.size, record.names

    step_key(parent_key, "view", 3, **extra) -> str   # per-step keys of multi-step stages
    cache.find(image=None, stage=None) -> list[Record]  # newest first
    cache.get(key) -> Record | None;  cache.put(key, artifacts, stage=..., image=..., meta=...)

Layers (each module holds one job):
    objects.py      object files: atomic writes, paths      objectstore.py  ObjectStore, LocalObjects
    remote.py       Remote (fsspec), RemoteObjects          tier.py         RemoteTier: fetch, upload, leases
    index.py        Index (diskcache), adopt_records        records.py      record files (rebuild source)
    store.py        Cache (memoise, get, put, find), Record
    maintenance.py  verify, gc, clear, rebuild_index        prune.py        plan_prune, apply_prune
    sync.py         push, pull                              keys.py, codecs.py, locks.py, lease.py

Keys: xxh3-128 (hex) of the canonical JSON (sorted keys, no whitespace) of everything that
changes a stage's output. Objects: xxh3-128 of their bytes, under objects/<2>/<30>.
Index: diskcache (SQLite, JSON values, no pickle) at index/, safe for several processes.
"""

from __future__ import annotations

from vd.cache import codecs, maintenance
from vd.cache.keys import canonical_json, content_hash, file_hash, stage_key, step_key
from vd.cache.store import Cache, Record

__all__ = [
    "Cache",
    "Record",
    "stage_key",
    "step_key",
    "content_hash",
    "file_hash",
    "canonical_json",
    "codecs",
    "maintenance",
]
