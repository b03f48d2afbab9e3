"""Cache keys: xxh3-128 (hex) of canonical JSON, and content hashes of bytes and files."""

from __future__ import annotations

import json
import math
import os
from pathlib import PurePath
from typing import Any, Mapping

import xxhash

KEY_SCHEMA = 1  # bump only if the canonical form below changes (invalidates every key)

_CHUNK = 1 << 20


def _normalise(obj: Any, where: str = "key") -> Any:
    """Turn `obj` into plain JSON types, deterministically; refuse anything ambiguous."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: non-finite float {obj!r} cannot be part of a cache key")
        return float(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: mapping keys must be str, got {type(k).__name__}")
            out[k] = _normalise(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_normalise(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted((_normalise(v, where) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"xxh3_128": content_hash(obj)}
    # numpy / torch scalars and small arrays, without importing either
    if hasattr(obj, "tolist") and callable(obj.tolist):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        return _normalise(obj.tolist(), where)
    if hasattr(obj, "item") and callable(obj.item):
        return _normalise(obj.item(), where)
    raise TypeError(f"{where}: {type(obj).__name__} cannot be part of a cache key (use plain JSON types)")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, finite floats only."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def hash_json(obj: Any) -> str:
    return xxhash.xxh3_128_hexdigest(canonical_json(obj).encode("utf-8"))


def content_hash(data: Any) -> str:
    """xxh3-128 (32 hex digits) of bytes-like data.

    A numpy array or torch tensor is hashed over its dtype, shape and C-order bytes.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return xxhash.xxh3_128_hexdigest(data)
    if hasattr(data, "detach"):  # torch tensor
        data = data.detach().cpu().contiguous().numpy()
    if hasattr(data, "tobytes") and hasattr(data, "dtype"):
        import numpy as np

        arr = np.ascontiguousarray(data)
        h = xxhash.xxh3_128()
        h.update(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
        h.update(arr.tobytes())
        return h.hexdigest()
    raise TypeError(f"content_hash expects bytes or an array, got {type(data).__name__}")


def file_hash(path: str | os.PathLike) -> str:
    """xxh3-128 of a file's bytes, streamed (equals content_hash(file bytes))."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def stage_key(
    *,
    stage: str,
    version: int | str,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    seed: int | None = None,
    **extra: Any,
) -> str:
    """The key of one stage result: xxh3-128 of the canonical JSON of everything that changes it.

    `inputs` holds content hashes or the keys of upstream stages; `models` the identity of every
    model the stage runs (name and weight hash). Extra keyword arguments are keyed too.
    """
    doc = {
        "schema": KEY_SCHEMA,
        "kind": "stage",
        "stage": stage,
        "version": version,
        "params": dict(params or {}),
        "inputs": dict(inputs or {}),
        "models": dict(models or {}),
        "backend": backend,
        "dtype": dtype,
        "seed": seed,
    }
    if extra:
        doc["extra"] = extra
    return hash_json(doc)


def step_key(parent_key: str, step: str, index: int | str | None = None, **extra: Any) -> str:
    """The key of one step of a multi-step stage (e.g. view 3 of the coarse loop)."""
    doc = {"schema": KEY_SCHEMA, "kind": "step", "parent": parent_key, "step": step, "index": index}
    if extra:
        doc["extra"] = extra
    return hash_json(doc)
