"""The content-addressed artifact cache that every stage memoises through.

API contract (stages rely on exactly this; extend, do not change):

    from vd.cache import Cache, stage_key, step_key, content_hash, file_hash
    from vd.cache import codecs          # encode/decode helpers for artifact bytes

    cache = Cache.open()                 # root from vd.paths.cache_dir(); creates CACHEDIR.TAG
    key = stage_key(stage="depth", version=1, params={...}, inputs={"image": img_hash},
                    models={"moge": weight_hash}, backend="file", dtype="float32", seed=0)
    record, hit = cache.memoise(key, compute, stage="depth", image=str(image_path))
        # compute() -> Mapping[str, bytes]; called only on a miss; its artifacts are stored
        # atomically, then indexed. A hit verifies every object's hash first; a corrupt
        # object is dropped with a warning and the entry recomputed, never returned.
    record.read("depth.safetensors") -> bytes     # verified bytes
    record.path("depth.safetensors") -> Path      # the object file (read-only, verified)
    record.meta -> dict;  record.key, record.stage, record.image, record.size

    step_key(parent_key, "view", 3, **extra) -> str   # per-step keys of multi-step stages

Keys: xxh3-128 (hex) of the canonical JSON (sorted keys, no whitespace) of everything that
changes a stage's output. Objects: xxh3-128 of their bytes, under objects/<2>/<30>.
Index: diskcache (SQLite) at index/, safe for several processes at once.
"""

from __future__ import annotations

# Implementation lands in cache/store.py, cache/keys.py, cache/objects.py, cache/codecs.py
# (issue 2). Re-exported here.
