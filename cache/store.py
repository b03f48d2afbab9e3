"""The cache: memoisation of stage results on top of an object store and an index.

    objects (LocalObjects, vd.cache.objectstore)   content-addressed bytes, hashed once
    index   (Index, vd.cache.index)                key -> entry (manifest, stage, image, times)
    records (vd.cache.records)                     the same entries as files, to rebuild the index
    tier    (RemoteTier, vd.cache.tier)            the optional shared remote

Maintenance (verify, gc, clear, rebuild) lives in `vd.cache.maintenance`, prune planning in
`vd.cache.prune`, push/pull in `vd.cache.sync`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from vd.cache import index as index_mod
from vd.cache import locks, objects, records
from vd.cache import remote as remote_mod
from vd.cache.codecs import jsonable
from vd.cache.index import Index
from vd.cache.objectstore import LocalObjects
from vd.cache.remote import Remote
from vd.cache.tier import RemoteTier
from vd.errors import CacheError
from vd.paths import cache_dir

log = logging.getLogger(__name__)

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by vd.\n"
    "# For information about cache directory tags, see: https://bford.info/cachedir/\n"
)
INDEX_SCHEMA = 1

# Process-wide counters of what memoise() did: hits (local), remote_hits, computed, waited (for
# another process computing the same key). Read with stats(); the batch runner reports them.
STATS: Counter = Counter()


def stats() -> dict[str, int]:
    return {k: STATS[k] for k in ("hits", "remote_hits", "computed", "waited")}


def now() -> float:
    return time.time()


def resolve_image(image: Any) -> str | None:
    """The absolute spelling of an image path, as records store it in `image_resolved`."""
    if image is None:
        return None
    try:
        return str(Path(image).expanduser().resolve())
    except OSError:
        return str(image)


def root_of(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_dir()


HINT = "(set VD_CACHE_DIR to a writable folder)"


def _is_a_file(root: Path) -> CacheError:
    return CacheError(f"cache directory path is a file, not a folder: {root} {HINT}")


def _under_a_file(root: Path) -> CacheError:
    return CacheError(f"cache directory cannot be created, part of its path is a file: {root} {HINT}")


def check_root(root: Path) -> None:
    """CacheError (one sentence) when `root` cannot be a cache folder: it, or a folder above it, is a file."""
    if root.exists() and not root.is_dir():
        raise _is_a_file(root)
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise _under_a_file(root)
            break


@dataclass
class Record:
    """One stage result in the cache: its artifacts (name -> object) and metadata."""

    cache: Cache = field(repr=False)
    key: str
    stage: str
    image: str | None
    artifacts: dict[str, dict]  # name -> {"hash": str, "size": int}
    meta: dict
    created: float
    last_used: float
    image_resolved: str | None = None
    stamps: dict = field(default_factory=dict, repr=False)  # digest -> [size, mtime_ns] when last hashed

    @classmethod
    def from_entry(cls, cache: Cache, key: str, entry: Mapping) -> Record:
        return cls(
            cache=cache,
            key=key,
            stage=entry.get("stage", "?"),
            image=entry.get("image"),
            artifacts={n: dict(a) for n, a in entry.get("artifacts", {}).items()},
            meta=dict(entry.get("meta") or {}),
            created=float(entry.get("created", 0.0)),
            last_used=float(entry.get("last_used", entry.get("created", 0.0))),
            image_resolved=entry.get("image_resolved"),
            stamps={d: list(s) for d, s in (entry.get("stamps") or {}).items()},
        )

    @property
    def size(self) -> int:
        """Bytes of the distinct objects this record refers to."""
        return sum({a["hash"]: a["size"] for a in self.artifacts.values()}.values())

    @property
    def names(self) -> list[str]:
        return sorted(self.artifacts)

    def __contains__(self, name: str) -> bool:
        return name in self.artifacts

    def matches(self, stage: str | None = None, image: Any = None) -> bool:
        """Whether the record is of `stage` and made from `image` (any spelling of its path)."""
        if stage is not None and self.stage != stage:
            return False
        return image is None or self.image_resolved == resolve_image(image) or self.image == str(image)

    def _artifact(self, name: str) -> dict:
        try:
            return self.artifacts[name]
        except KeyError:
            raise KeyError(
                f"cache record {self.key[:12]} ({self.stage}) has no artifact {name!r}; it has {self.names}"
            ) from None

    def path(self, name: str) -> Path:
        """The object file holding artifact `name` (read-only; verified when the record was loaded)."""
        p = self.cache.objects.path(self._artifact(name)["hash"])
        if not p.exists():
            self.cache._drop(self.key, reason=f"object of {name!r} is missing")
            raise CacheError(
                f"a cached file of stage {self.stage} vanished ({name}); run the command again to recompute it"
            )
        return p

    def read(self, name: str) -> bytes:
        """The verified bytes of artifact `name` (hashed unless the file is as it was when last hashed)."""
        digest = self._artifact(name)["hash"]
        data = self.cache.objects.get(digest, stamp=self.stamps.get(digest))
        if data is None:
            self.cache._drop(self.key, reason=f"object of {name!r} is corrupt or missing", bad=[digest])
            raise CacheError(
                f"a cached file of stage {self.stage} is corrupt ({name}); it was dropped, "
                "run the command again to recompute it"
            )
        return data

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "stage": self.stage,
            "image": self.image,
            "size": self.size,
            "created": self.created,
            "last_used": self.last_used,
            "artifacts": {n: dict(a) for n, a in sorted(self.artifacts.items())},
            "meta": self.meta,
        }


class Cache:
    """The artifact cache rooted at `root` (default `vd.paths.cache_dir()`)."""

    def __init__(self, root: Path, index: Index, remote: Remote | None = None):
        self.root = root
        self.objects_dir = root / "objects"
        self.index_dir = root / "index"
        self.objects = LocalObjects(self.objects_dir)
        self.index = index
        self.tier = RemoteTier(remote, self.objects) if remote is not None else None
        self._readonly_error: CacheError | None = None  # why the index is read-only

    @property
    def remote(self) -> Remote | None:
        """The remote tier's Remote while it works; None without one or after it failed."""
        return self.tier.remote if self.tier is not None else None

    @property
    def readonly(self) -> bool:
        """True when the index was opened read-only (a full or read-only disk)."""
        return self.index.readonly

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, root: str | os.PathLike | None = None, *, remote: Remote | str | None = "env", maintenance: bool = False
    ) -> Cache:
        """Open (creating when needed) the cache; CacheError with one sentence when unusable.

        `remote`: a Remote, a URL, None for local only, or "env" for $VD_CACHE_REMOTE.
        `maintenance`: on a full or read-only disk open the index read-only instead of failing
        (listing works; deleting frees objects first, then reopens the index for writing).
        An empty index beside record files (a deleted or emptied index) is rebuilt from them.
        """
        root = root_of(root)
        if remote == "env":
            remote = remote_mod.from_env()
        elif isinstance(remote, str):
            remote = remote_mod.from_url(remote)
        try:
            cache = cls(root, cls.open_index(root), remote)
        except CacheError as e:
            if not (maintenance and index_mod.is_full_or_readonly(e) and cls.exists(root)):
                raise
            cache = cls(root, Index.open_readonly(root), remote)
            cache._readonly_error = e
            return cache
        cache._recover_empty_index()
        return cache

    @classmethod
    def open_existing(cls, root: str | os.PathLike | None = None, *, maintenance: bool = True) -> Cache | None:
        """The local cache when one exists at `root`, else None (nothing is created); CacheError
        when `root` is a file. For the commands that only read or delete."""
        root = root_of(root)
        check_root(root)
        return cls.open(root, remote=None, maintenance=maintenance) if cls.exists(root) else None

    @classmethod
    def open_index(cls, root: Path) -> Index:
        """Create the cache's folders at `root` when needed and open its index for writing."""
        check_root(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "objects").mkdir(exist_ok=True)
            tag = root / "CACHEDIR.TAG"
            if not tag.exists():
                tmp = root / f".CACHEDIR.TAG.{os.getpid()}"
                tmp.write_text(CACHEDIR_TAG)
                os.replace(tmp, tag)
            if not os.access(root, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(root))
        except FileExistsError as e:
            raise _is_a_file(root) from e
        except NotADirectoryError as e:
            raise _under_a_file(root) from e
        except OSError as e:
            raise objects.cache_error(e, root) from e
        return Index.open(root)

    @classmethod
    def exists(cls, root: str | os.PathLike | None = None) -> bool:
        """Whether a cache lives at `root`: its index, or record files to rebuild it from."""
        root = root_of(root)
        return (root / "index").is_dir() or records.exists(root)

    def _recover_empty_index(self) -> None:
        if len(self.index) or not records.exists(self.root):
            return
        adopted, skipped = index_mod.adopt_records(self.index, self.objects, only_if_empty=True, delete_broken=False)
        if adopted or skipped:
            log.warning(
                f"the cache index in {self.root} was empty or missing beside {adopted + skipped} record "
                f"files; rebuilt it from the {adopted} whose objects are intact "
                "(`vd cache verify --rebuild` does the same)"
            )

    def check_deletable(self) -> None:
        """Raise why the cache cannot be changed, unless the reason is only a full disk (which
        deleting objects first mends)."""
        e = self._readonly_error
        if e is not None and not str(e).startswith("no space left"):
            raise e

    def make_writable(self) -> None:
        """Reopen a read-only index for writing (after deleting objects freed some space)."""
        if self.readonly:
            self.index.close()
            self.index = Index.open(self.root)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ records
    def __contains__(self, key: str) -> bool:
        return self.index.get(key) is not None

    def __len__(self) -> int:
        return len(self.index)

    def keys(self) -> list[str]:
        return self.index.keys()

    def entry(self, key: str) -> dict | None:
        """The raw index entry of `key` (as record files and the remote store it)."""
        return self.index.get(key)

    def records(self) -> list[Record]:
        """Every record, newest first (by creation time)."""
        out = [Record.from_entry(self, k, e) for k, e in index_mod.iter_entries(self.index)]
        out.sort(key=lambda r: r.created, reverse=True)
        return out

    def find(self, image: Any = None, stage: str | None = None) -> list[Record]:
        """Records of `image` (a path) and/or `stage`, newest first (not verified; use get())."""
        return [r for r in self.records() if r.matches(stage=stage, image=image)]

    def touch(self, key: str, when: float) -> None:
        """Set the last use of `key`."""
        self.index.update(key, lambda e: e.__setitem__("last_used", when))

    def delete(self, key: str) -> bool:
        """Remove the record of `key` (its objects are collected by `maintenance.gc`)."""
        records.delete(self.root, key)
        return self.index.delete(key)

    def _drop(self, key: str, reason: str, bad: list[str] | None = None) -> None:
        entry = self.index.get(key)
        stage = entry.get("stage", "?") if entry else "?"
        log.warning(f"cache entry {key[:12]} ({stage}): {reason}; dropped it")
        for digest in bad or []:
            self.objects.delete(digest)
        self.delete(key)

    # ------------------------------------------------------------------ reading
    def get(self, key: str, *, verify: bool = True, touch: bool = True) -> Record | None:
        """The record of `key` when present and intact (locally, else from the remote tier); a
        corrupt local entry is dropped (with a warning)."""
        record = self._get_local(key, verify=verify, touch=touch)
        if record is None and self.tier is not None:
            record = self._from_remote(key)
        return record

    def _get_local(self, key: str, *, verify: bool = True, touch: bool = True) -> Record | None:
        entry = self.index.get(key)
        if entry is None:
            return None
        record = Record.from_entry(self, key, entry)
        stamps = record.stamps
        if verify:
            stamps, bad = {}, []
            for name, a in record.artifacts.items():
                d = a["hash"]
                if d in stamps:
                    continue
                st = self.objects.check(d, a["size"], record.stamps.get(d))
                if st is None:
                    bad.append((name, d))
                else:
                    stamps[d] = list(st)
            if bad:
                names = ", ".join(n for n, _ in bad)
                self._drop(key, reason=f"corrupt or missing object(s) {names}, recomputing", bad=[d for _, d in bad])
                return None
        changed = stamps != record.stamps
        record.stamps = stamps
        if touch or changed:
            when = now() if touch else record.last_used
            record.last_used = when

            def update(e: dict) -> None:
                e["last_used"] = when
                e["stamps"] = stamps

            self.index.update(key, update)
        return record

    def _from_remote(self, key: str, *, warn: bool = True) -> Record | None:
        """The record of `key` from the remote tier, its verified objects stored locally."""
        entry = self.tier.fetch(key, warn=warn) if self.tier is not None else None
        return self.adopt(key, entry) if entry is not None else None

    def adopt(self, key: str, entry: dict) -> Record:
        """Index `entry` (from the remote) whose objects are already in the local store."""
        stamps = {}
        for a in entry.get("artifacts", {}).values():
            st = self.objects.stamp(a["hash"])
            if st is not None:
                stamps[a["hash"]] = list(st)
        entry = dict(records.portable(entry), last_used=now(), stamps=stamps)
        records.write(self.root, key, entry)
        self.index.set(key, entry)
        STATS["remote_hits"] += 1
        return Record.from_entry(self, key, entry)

    # ------------------------------------------------------------------ writing
    def put(
        self, key: str, artifacts: Mapping[str, bytes], *, stage: str, image: Any = None, meta: Mapping | None = None
    ) -> Record:
        """Store `artifacts` (name -> bytes) atomically as the record of `key`."""
        if not isinstance(artifacts, Mapping):
            raise TypeError(f"cache artifacts must be a mapping of name -> bytes, got {type(artifacts).__name__}")
        manifest: dict[str, dict] = {}
        payloads = {}
        for name, data in artifacts.items():
            if not isinstance(name, str) or not name:
                raise TypeError("cache artifact names must be non-empty strings")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"cache artifact {name!r} must be bytes, got {type(data).__name__}")
            digest = self.objects.put(data)
            manifest[name] = {"hash": digest, "size": len(memoryview(data).cast("B"))}
            payloads[digest] = data
        stamps = {d: list(st) for d in payloads if (st := self.objects.stamp(d)) is not None}
        when = now()
        entry = {
            "schema": INDEX_SCHEMA,
            "stage": stage,
            "image": str(image) if image is not None else None,
            "image_resolved": resolve_image(image),
            "artifacts": manifest,
            "size": sum({a["hash"]: a["size"] for a in manifest.values()}.values()),
            "created": when,
            "last_used": when,
            "meta": jsonable(dict(meta or {})),  # numpy scalars, paths, NaN -> plain JSON
            "stamps": stamps,
        }
        records.write(self.root, key, entry)
        self.index.set(key, entry)
        # a concurrent prune may have collected an object between our write and the index entry
        for digest, data in payloads.items():
            if not self.objects.has(digest):
                self.objects.put(data, digest)  # (its new stamp differs: the next hit hashes it once)
        if self.tier is not None:
            self.tier.push(key, entry)
        return Record.from_entry(self, key, entry)

    def memoise(
        self, key: str, compute: Callable[[], Any], *, stage: str, image: Any = None, meta: Mapping | None = None
    ) -> tuple[Record, bool]:
        """Load the record of `key`, or run `compute()` and store what it returns.

        `compute()` returns a mapping name -> bytes, or a tuple (mapping, meta dict) to record
        metadata known only after computing. Returns (record, hit).
        """
        record = self.lookup(key)
        if record is not None:
            return record, True
        with locks.key_lock(self.root, key, on_wait=lambda: _say_waiting(stage, key)) as waited:
            STATS["waited"] += int(waited)
            record = self.lookup(key)  # another process may have computed it meanwhile
            if record is not None:
                return record, True
            if self.tier is not None:  # or another machine is computing it
                entry = self.tier.await_other(key, on_wait=lambda host: _waiting_on(stage, key, host))
                if entry is not None:
                    return self.adopt(key, entry), True
            with self.tier.holding(key) if self.tier is not None else contextlib.nullcontext():
                STATS["computed"] += 1
                return self._compute_and_put(key, compute, stage=stage, image=image, meta=meta), False

    memoize = memoise

    def lookup(self, key: str) -> Record | None:
        """get(), counting a local hit (remote hits are counted where they are adopted)."""
        record = self._get_local(key)
        if record is not None:
            STATS["hits"] += 1
        elif self.tier is not None:
            record = self._from_remote(key)
        return record

    def _compute_and_put(self, key, compute, *, stage, image, meta) -> Record:
        result = compute()
        extra_meta = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
            result, extra_meta = result
        merged = dict(meta or {})
        if extra_meta:
            merged.update(extra_meta)
        return self.put(key, result, stage=stage, image=image, meta=merged)


def _say_waiting(stage: str, key: str, where: str = "") -> None:
    log.info(f"waiting for another vd process{where} computing {stage} ({key[:12]})")


def _waiting_on(stage: str, key: str, host: str) -> None:
    STATS["waited"] += 1
    _say_waiting(stage, key, where=f" on {host}")


__all__ = ["Cache", "Record", "stats", "STATS", "check_root", "resolve_image", "now"]
