"""Record files: every index entry is also kept as `records/<2 hex>/<key>.json`.

They make the index rebuildable from disk (`vd cache verify --rebuild`), let maintenance commands
list the cache when its SQLite index cannot be opened, and are the layout of the shared remote
tier (records/ and objects/ side by side), so local and remote caches are read the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from vd.cache import objects

RECORDS = "records"


def record_relpath(key: str) -> str:
    return f"{RECORDS}/{key[:2]}/{key}.json"


LOCAL_FIELDS = ("stamps",)  # facts about this machine's object files, not part of a shared record


def portable(entry: dict) -> dict:
    """`entry` without its local-only fields (for the remote tier)."""
    return {k: v for k, v in entry.items() if k not in LOCAL_FIELDS}


def encode(key: str, entry: dict) -> bytes:
    return (json.dumps({"key": key, **entry}, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def decode(data: bytes) -> tuple[str, dict] | None:
    """(key, entry) of a record file's bytes; None when the file is damaged."""
    try:
        doc = json.loads(data.decode("utf-8"))
        key = doc.pop("key")
        if not isinstance(key, str) or not isinstance(doc.get("artifacts"), dict):
            return None
        for a in doc["artifacts"].values():
            if not isinstance(a.get("hash"), str) or not isinstance(a.get("size"), int):
                return None
        return key, doc
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError):
        return None


def write(root: Path, key: str, entry: dict) -> None:
    """Write the record file of `key` atomically (CacheError on a full or read-only disk)."""
    path = root / record_relpath(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        objects.atomic_write(path, encode(key, entry))
    except OSError as e:
        raise objects.cache_error(e, root) from e


def read(root: Path, key: str) -> dict | None:
    try:
        data = (root / record_relpath(key)).read_bytes()
    except OSError:
        return None
    got = decode(data)
    return got[1] if got and got[0] == key else None


def delete(root: Path, key: str) -> None:
    objects.remove(root / record_relpath(key))


def iter_records(root: Path) -> Iterator[tuple[str, dict]]:
    """Every intact record file under `root` as (key, entry); damaged files are skipped."""
    base = root / RECORDS
    if not base.is_dir():
        return
    for sub in sorted(base.iterdir()):
        if not sub.is_dir():
            continue
        for p in sorted(sub.glob("*.json")):
            try:
                got = decode(p.read_bytes())
            except OSError:
                continue
            if got is not None and got[0] == p.stem:
                yield got


def clear(root: Path) -> None:
    shutil.rmtree(root / RECORDS, ignore_errors=True)


def exists(root: Path) -> bool:
    return (root / RECORDS).is_dir() and any(True for _ in os.scandir(root / RECORDS))
