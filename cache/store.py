"""The cache store: content-addressed objects plus a diskcache (SQLite) index of stage records."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from vd.cache import index as index_mod
from vd.cache import lease, locks, objects, records
from vd.cache import remote as remote_mod
from vd.cache.codecs import _jsonable
from vd.cache.remote import Remote, RemoteError
from vd.errors import CacheError, disk_full_message
from vd.paths import cache_dir
from vd.paths import models_dir as default_models_dir

log = logging.getLogger(__name__)

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by vd.\n"
    "# For information about cache directory tags, see: https://bford.info/cachedir/\n"
)
INDEX_SCHEMA = 1
GC_GRACE_S = 600.0  # orphan objects younger than this may belong to a write in progress

# Process-wide counters of what memoise() did: hits (local), remote_hits, computed, waited (for
# another process computing the same key). Read with stats(); the batch runner reports them.
STATS: Counter = Counter()


def stats() -> dict[str, int]:
    return {k: STATS[k] for k in ("hits", "remote_hits", "computed", "waited")}


def _now() -> float:
    return time.time()


def _resolve_image(image: Any) -> str | None:
    if image is None:
        return None
    try:
        return str(Path(image).expanduser().resolve())
    except OSError:
        return str(image)


@dataclass
class Record:
    """One stage result in the cache: its artifacts (name -> object) and metadata."""

    cache: "Cache" = field(repr=False)
    key: str
    stage: str
    image: str | None
    artifacts: dict[str, dict]  # name -> {"hash": str, "size": int}
    meta: dict
    created: float
    last_used: float
    image_resolved: str | None = None

    @property
    def size(self) -> int:
        """Bytes of the distinct objects this record refers to."""
        seen = {}
        for a in self.artifacts.values():
            seen[a["hash"]] = a["size"]
        return sum(seen.values())

    @property
    def names(self) -> list[str]:
        return sorted(self.artifacts)

    def __contains__(self, name: str) -> bool:
        return name in self.artifacts

    def _artifact(self, name: str) -> dict:
        try:
            return self.artifacts[name]
        except KeyError:
            raise KeyError(f"cache record {self.key[:12]} ({self.stage}) has no artifact {name!r}; it has {self.names}") from None

    def path(self, name: str) -> Path:
        """The object file holding artifact `name` (read-only; verified when the record was loaded)."""
        a = self._artifact(name)
        p = objects.object_path(self.cache.objects_dir, a["hash"])
        if not p.exists():
            self.cache._drop(self.key, reason=f"object of {name!r} is missing")
            raise CacheError(f"a cached file of stage {self.stage} vanished ({name}); run the command again to recompute it")
        return p

    def read(self, name: str) -> bytes:
        """The verified bytes of artifact `name`."""
        a = self._artifact(name)
        p = objects.object_path(self.cache.objects_dir, a["hash"])
        data = objects.read_verified(p, a["hash"])
        if data is None:
            self.cache._drop(self.key, reason=f"object of {name!r} is corrupt or missing", bad=[p])
            raise CacheError(
                f"a cached file of stage {self.stage} is corrupt ({name}); it was dropped, run the command again to recompute it"
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

    def __init__(self, root: Path, index, remote: Remote | None = None):
        self.root = root
        self.objects_dir = root / "objects"
        self.index_dir = root / "index"
        self._index = index
        self.remote = remote
        self._bad_remote: set[str] = set()  # digests found corrupt in the remote: re-upload them
        self._readonly_error: CacheError | None = None  # why the index is read-only

    @property
    def readonly(self) -> bool:
        """True when the index was opened read-only (a full or read-only disk)."""
        return getattr(self._index, "readonly", False)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, root: str | os.PathLike | None = None, *, remote: "Remote | str | None" = "env", maintenance: bool = False) -> "Cache":
        """Open (creating when needed) the cache; CacheError with one sentence when unusable.

        `remote`: a Remote, a URL, None for local only, or "env" for $VD_CACHE_REMOTE.
        `maintenance`: on a full or read-only disk open the index read-only instead of failing
        (listing works; deleting frees objects first, then reopens the index for writing).
        """

        root = Path(root).expanduser() if root is not None else cache_dir()
        if remote == "env":
            remote = remote_mod.from_env()
        elif isinstance(remote, str):
            remote = remote_mod.from_url(remote)
        try:
            return cls(root, cls._open_root(root), remote)
        except CacheError as e:
            if not (maintenance and index_mod.is_full_or_readonly(e) and cls.exists(root)):
                raise
            cache = cls(root, index_mod.ReadOnlyIndex(root / "index"), remote)
            cache._readonly_error = e
            return cache

    @classmethod
    def _open_root(cls, root: Path):
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
            raise CacheError(f"cache directory path is a file, not a folder: {root} (set VD_CACHE_DIR to a writable folder)") from e
        except NotADirectoryError as e:
            raise CacheError(f"cache directory cannot be created, part of its path is a file: {root} (set VD_CACHE_DIR to a writable folder)") from e
        except OSError as e:
            raise objects._wrap(e, root) from e
        return cls._open_index(root)

    @classmethod
    def exists(cls, root: str | os.PathLike | None = None) -> bool:
        root = Path(root).expanduser() if root is not None else cache_dir()
        return (root / "index").is_dir()

    @staticmethod
    def _open_index(root: Path):
        return index_mod.open_writable(root)

    def check_deletable(self) -> None:
        """Raise why the cache cannot be changed, unless the reason is only a full disk (which
        deleting objects first mends)."""
        e = self._readonly_error
        if e is not None and not str(e).startswith("no space left"):
            raise e

    def make_writable(self) -> None:
        """Reopen a read-only index for writing (after deleting objects freed some space)."""
        if self.readonly:
            self._index.close()
            self._index = index_mod.open_writable(self.root)

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ index helpers
    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "full" in msg or "disk I/O" in msg and index_mod._disk_full(self.root):
                raise CacheError(disk_full_message(self.root)) from e
            if "readonly" in msg:
                raise CacheError(f"cache directory is not writable: {self.root} (set VD_CACHE_DIR to a writable folder)") from e
            raise CacheError(f"the cache index at {self.index_dir} failed ({msg})") from e
        except sqlite3.DatabaseError as e:
            raise CacheError(index_mod.corrupt_message(self.index_dir, e)) from e
        except OSError as e:
            raise objects._wrap(e, self.root) from e

    def _record(self, key: str, entry: Mapping) -> Record:
        return Record(
            cache=self,
            key=key,
            stage=entry.get("stage", "?"),
            image=entry.get("image"),
            artifacts={n: dict(a) for n, a in entry.get("artifacts", {}).items()},
            meta=dict(entry.get("meta") or {}),
            created=float(entry.get("created", 0.0)),
            last_used=float(entry.get("last_used", entry.get("created", 0.0))),
            image_resolved=entry.get("image_resolved"),
        )

    def _get_entry(self, key: str) -> dict | None:
        return self._guard(self._index.get, key, default=None)

    def _drop(self, key: str, reason: str, bad: list[Path] | None = None) -> None:
        entry = self._get_entry(key)
        stage = entry.get("stage", "?") if entry else "?"
        log.warning(f"cache entry {key[:12]} ({stage}): {reason}; dropped it")
        for p in bad or []:
            objects.remove(p)
        records.delete(self.root, key)
        self._guard(self._index.delete, key)

    # ------------------------------------------------------------------ public API
    def __contains__(self, key: str) -> bool:
        return self._get_entry(key) is not None

    def __len__(self) -> int:
        return self._guard(len, self._index)

    def keys(self) -> list[str]:
        return list(self._guard(lambda: list(self._index.iterkeys())))

    def records(self) -> list[Record]:
        """Every record, newest first (by creation time)."""
        out = []
        for k in self.keys():
            e = self._get_entry(k)
            if e is not None:
                out.append(self._record(k, e))
        out.sort(key=lambda r: r.created, reverse=True)
        return out

    def find(self, image: Any = None, stage: str | None = None) -> list[Record]:
        """Records of `image` (a path) and/or `stage`, newest first (not verified; use get())."""
        want = _resolve_image(image)
        out = []
        for r in self.records():
            if stage is not None and r.stage != stage:
                continue
            if want is not None and r.image_resolved != want and r.image != str(image):
                continue
            out.append(r)
        return out

    def get(self, key: str, *, verify: bool = True, touch: bool = True) -> Record | None:
        """The record of `key` when present and intact (locally, else from the remote tier); a
        corrupt local entry is dropped (with a warning)."""
        record = self._get_local(key, verify=verify, touch=touch)
        if record is None and self.remote is not None:
            record = self._from_remote(key)
        return record

    def _get_local(self, key: str, *, verify: bool = True, touch: bool = True) -> Record | None:
        entry = self._get_entry(key)
        if entry is None:
            return None
        record = self._record(key, entry)
        if verify:
            bad = []
            for name, a in record.artifacts.items():
                p = objects.object_path(self.objects_dir, a["hash"])
                if not objects.verify(p, a["hash"]):
                    bad.append((name, p))
            if bad:
                names = ", ".join(n for n, _ in bad)
                self._drop(key, reason=f"corrupt or missing object(s) {names}, recomputing", bad=[p for _, p in bad])
                return None
        if touch:
            record.last_used = _now()
            self._touch(key, record.last_used)
        return record

    # ------------------------------------------------------------------ remote tier
    def _remote_failed(self, error: RemoteError) -> None:
        if self.remote is not None:
            remote_mod.FAILED.add(self.remote.url)
        log.warning(f"{error}; working with the local cache only")
        self.remote = None

    def _from_remote(self, key: str) -> Record | None:
        """Download the record of `key` and its verified objects into the local cache."""
        try:
            entry = self.remote.get_entry(key)
            if entry is None:
                return None
            for name, a in entry.get("artifacts", {}).items():
                local = objects.object_path(self.objects_dir, a["hash"])
                if objects.verify(local, a["hash"]):
                    continue
                data = self.remote.fetch_object(a["hash"])
                if data is None:
                    self._bad_remote.add(a["hash"])
                    log.warning(f"remote cache object of {entry.get('stage', '?')} ({name}) is missing or corrupt; recomputing")
                    return None
                objects.write_object(self.objects_dir, data, a["hash"])
        except RemoteError as e:
            self._remote_failed(e)
            return None
        entry = dict(entry, last_used=_now())
        records.write(self.root, key, entry)
        self._guard(self._index.set, key, entry)
        STATS["remote_hits"] += 1
        return self._record(key, entry)

    def upload(self, record: Record, *, force: set[str] = frozenset()) -> int:
        """Upload `record`'s objects (those the remote lacks), then its record; returns bytes sent.

        RemoteError when the remote fails."""
        sent = 0
        for a in record.artifacts.values():
            d = a["hash"]
            if d not in force and self.remote.has_object(d, a["size"]):
                continue
            self.remote.put_object(d, objects.object_path(self.objects_dir, d))
            sent += a["size"]
        entry = self._get_entry(record.key) or {}
        self.remote.put_entry(record.key, entry)
        return sent

    def _push(self, record: Record) -> None:
        if self.remote is None:
            return
        try:
            self.upload(record, force=self._bad_remote)
        except RemoteError as e:
            self._remote_failed(e)

    def _touch(self, key: str, when: float) -> None:
        def do():
            with self._index.transact():
                e = self._index.get(key, default=None)
                if e is not None:
                    e["last_used"] = when
                    self._index.set(key, e)

        self._guard(do)

    def put(
        self,
        key: str,
        artifacts: Mapping[str, bytes],
        *,
        stage: str,
        image: Any = None,
        meta: Mapping | None = None,
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
            digest, _ = objects.write_object(self.objects_dir, data)
            manifest[name] = {"hash": digest, "size": len(memoryview(data).cast("B"))}
            payloads[digest] = data
        now = _now()

        meta = _jsonable(dict(meta or {}))  # numpy scalars, paths, NaN -> plain JSON
        resolved = _resolve_image(image)
        entry = {
            "schema": INDEX_SCHEMA,
            "stage": stage,
            "image": str(image) if image is not None else None,
            "image_resolved": resolved,
            "artifacts": manifest,
            "size": sum({a["hash"]: a["size"] for a in manifest.values()}.values()),
            "created": now,
            "last_used": now,
            "meta": meta,
        }
        records.write(self.root, key, entry)
        self._guard(self._index.set, key, entry)
        # a concurrent prune may have collected an object between our write and the index entry
        for digest, data in payloads.items():
            if not objects.object_path(self.objects_dir, digest).exists():
                objects.write_object(self.objects_dir, data, digest)
        record = self._record(key, entry)
        self._push(record)
        return record

    def memoise(
        self,
        key: str,
        compute: Callable[[], Any],
        *,
        stage: str,
        image: Any = None,
        meta: Mapping | None = None,
    ) -> tuple[Record, bool]:
        """Load the record of `key`, or run `compute()` and store what it returns.

        `compute()` returns a mapping name -> bytes, or a tuple (mapping, meta dict) to record
        metadata known only after computing. Returns (record, hit).
        """
        record = self._lookup(key)
        if record is not None:
            return record, True
        with locks.key_lock(self.root, key, on_wait=lambda: _say_waiting(stage, key)) as waited:
            STATS["waited"] += int(waited)
            record = self._lookup(key)  # another process may have computed it meanwhile
            if record is not None:
                return record, True
            record = self._await_remote_lease(key, stage)  # or another machine is computing it
            if record is not None:
                return record, True
            with self._remote_lease(key):
                STATS["computed"] += 1
                return self._compute_and_put(key, compute, stage=stage, image=image, meta=meta), False

    def _await_remote_lease(self, key: str, stage: str, poll_s: float = 1.0) -> Record | None:
        """While another machine holds a live lease on `key`, poll the remote for its record."""

        told = False
        while self.remote is not None:
            try:
                other = lease.live_other(self.remote, key)
            except RemoteError as e:
                self._remote_failed(e)
                return None
            if other is None:  # no lease, or its holder just finished: one last look
                return self._from_remote(key) if told and self.remote is not None else None
            record = self._from_remote(key)
            if record is not None:
                return record
            if not told:
                STATS["waited"] += 1
                _say_waiting(stage, key, where=f" on {other.get('host', 'another machine')}")
                told = True
            time.sleep(poll_s)
        return None

    @contextlib.contextmanager
    def _remote_lease(self, key: str):
        """Hold the remote lease of `key` while computing it (nothing without a remote)."""
        held = None
        if self.remote is not None:
            held = lease.Lease(self.remote, key)
            try:
                held.start()
            except RemoteError as e:
                self._remote_failed(e)
                held = None
        try:
            yield
        finally:
            if held is not None:
                held.stop()

    def _lookup(self, key: str) -> Record | None:
        """get(), counting a local hit (remote hits are counted where they are fetched)."""
        record = self._get_local(key)
        if record is not None:
            STATS["hits"] += 1
        elif self.remote is not None:
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

    memoize = memoise

    def delete(self, key: str) -> bool:
        """Remove the record of `key` (its objects are collected by gc())."""
        records.delete(self.root, key)
        return bool(self._guard(self._index.delete, key))

    # ------------------------------------------------------------------ maintenance
    def referenced(self) -> dict[str, int]:
        """digest -> size of every object some record refers to."""
        out = {}
        for r in self.records():
            for a in r.artifacts.values():
                out[a["hash"]] = a["size"]
        return out

    def gc(self, *, candidates: set[str] | None = None, grace_s: float = GC_GRACE_S, dry_run: bool = False) -> tuple[int, int]:
        """Delete unreferenced objects; returns (count, bytes).

        Objects in `candidates` (from records just deleted) go at once; other orphans only when
        older than `grace_s` (they may belong to a write in progress in another process).
        """
        count = size = 0

        def do():
            nonlocal count, size
            refs = self.referenced()
            now = _now()
            for digest, p, st in objects.iter_objects(self.objects_dir):
                if digest in refs:
                    continue
                if (candidates is None or digest not in candidates) and now - st.st_mtime < grace_s:
                    continue
                count += 1
                size += st.st_size
                if not dry_run:
                    objects.remove(p)
            if not dry_run:
                for p in objects.stale_temporaries(self.objects_dir):
                    objects.remove(p)

        if dry_run:
            do()
        else:
            self._guard(lambda: self._with_lock(do))
        return count, size

    def _with_lock(self, fn):
        with self._index.transact():
            return fn()

    def objects_size(self) -> tuple[int, int]:
        n = total = 0
        for _, _, st in objects.iter_objects(self.objects_dir):
            n += 1
            total += st.st_size
        return n, total

    def verify(self, *, repair: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
        """Check every record's objects; with repair, drop broken records and orphans.

        `progress(done, total)` is called after each record.
        """
        report = {"records": 0, "objects": 0, "corrupt": [], "missing": [], "orphans": 0, "orphan_bytes": 0, "temporaries": 0, "repaired": repair}
        checked: dict[str, bool] = {}
        records = self.records()
        for i, r in enumerate(records):
            if progress is not None:
                progress(i, len(records))
            report["records"] += 1
            broken = []
            for name, a in r.artifacts.items():
                d = a["hash"]
                p = objects.object_path(self.objects_dir, d)
                if d not in checked:
                    if not p.exists():
                        checked[d] = False
                        report["missing"].append({"key": r.key, "stage": r.stage, "artifact": name, "object": d})
                    else:
                        checked[d] = objects.verify(p, d)
                        if not checked[d]:
                            report["corrupt"].append({"key": r.key, "stage": r.stage, "artifact": name, "object": d})
                if not checked[d]:
                    broken.append(p)
            if broken and repair:
                for p in broken:
                    objects.remove(p)
                self.delete(r.key)
        report["objects"] = len(checked)
        refs = set(checked) if not repair else set(self.referenced())
        now = _now()
        for digest, p, st in objects.iter_objects(self.objects_dir):
            if digest not in refs and now - st.st_mtime >= GC_GRACE_S:
                report["orphans"] += 1
                report["orphan_bytes"] += st.st_size
        temps = objects.stale_temporaries(self.objects_dir)
        report["temporaries"] = len(temps)
        if repair:
            self.gc()
        return report

    @staticmethod
    def force_clear(root: str | os.PathLike | None = None) -> int:
        """Delete the index and every object without opening the index (for a corrupt index).

        Model weights (models/) and CACHEDIR.TAG stay. Returns the bytes freed.
        """

        root = Path(root).expanduser() if root is not None else cache_dir()
        freed = 0
        for _, _, st in objects.iter_objects(root / "objects"):
            freed += st.st_size
        try:
            for name in ("objects", "records", "index"):
                if (root / name).exists():
                    shutil.rmtree(root / name)
            (root / "objects").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise objects._wrap(e, root) from e
        return freed

    def clear(self) -> tuple[int, int]:
        """Delete every record and object (model weights are not touched).

        Objects go first, so that on a full disk the index has room to shrink afterwards."""
        self.check_deletable()
        n, size = self.objects_size()
        count = len(self)
        self._remove_objects()
        records.clear(self.root)
        if self.readonly:  # a full disk: drop the whole index; the next run starts a new one
            self._index.close()
            shutil.rmtree(self.index_dir, ignore_errors=True)
            return count, size
        self._guard(lambda: self._with_lock(self._index.clear))
        return count, size

    def _remove_objects(self) -> None:
        if self.objects_dir.exists():
            for sub in self.objects_dir.iterdir():
                if sub.is_dir():
                    shutil.rmtree(sub, ignore_errors=True)
                else:
                    objects.remove(sub)

    @classmethod
    def rebuild_index(cls, root: str | os.PathLike | None = None) -> dict:
        """Replace the index with one rebuilt from the record files whose objects are all present.

        Returns {"records": kept, "skipped": records with missing objects}."""

        root = Path(root).expanduser() if root is not None else cache_dir()
        found = list(records.iter_records(root))
        shutil.rmtree(root / "index", ignore_errors=True)
        cache = cls(root, cls._open_root(root), None)
        kept = skipped = 0
        try:
            for key, entry in found:
                present = all(
                    _size_is(objects.object_path(cache.objects_dir, a["hash"]), a["size"]) for a in entry["artifacts"].values()
                )
                if not present:
                    records.delete(root, key)
                    skipped += 1
                    continue
                cache._guard(cache._index.set, key, entry)
                kept += 1
        finally:
            cache.close()
        return {"records": kept, "skipped": skipped}


def _say_waiting(stage: str, key: str, where: str = "") -> None:
    log.info(f"waiting for another vd process{where} computing {stage} ({key[:12]})")


# ---------------------------------------------------------------------- pruning
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


def _size_is(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _tree_size_and_mtime(path: Path) -> tuple[int, float]:
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
    now = _now() if now is None else now
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
                size, newest = _tree_size_and_mtime(p)
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
            p = objects.object_path(cache.objects_dir, digest)
            try:
                size += p.stat().st_size
                count += 1
            except OSError:
                continue
            objects.remove(p)
        candidates = set()
        for r in plan.records:
            cache.delete(r.key)
            candidates.update(a["hash"] for a in r.artifacts.values())
        more, more_bytes = cache.gc(candidates=candidates)
        count, size = count + more, size + more_bytes
    for p, _ in plan.models:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            objects.remove(p)
    return count, size
