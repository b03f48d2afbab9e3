"""The cache index (key -> entry): diskcache (SQLite) opened for writing, or read-only when the
disk is full, behind `Index`, which turns SQLite failures into one-sentence CacheErrors.

Opening diskcache writes (settings rows, the WAL file), so on a full or read-only file system it
fails. Maintenance commands must still list and free space there: `ReadOnlyIndex` reads the same
SQLite file through an immutable connection and decodes rows with diskcache's own JSONDisk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterator, Optional

from vd.cache import objects, records
from vd.cache.objectstore import LocalObjects
from vd.errors import CacheError, disk_full_message

DB_NAME = "cache.db"


def corrupt_message(index_dir: Path, detail) -> str:
    return (
        f"the cache index at {index_dir} is damaged ({detail}); "
        "run `vd cache verify --rebuild` to rebuild it from the cached records"
    )


def open_writable(root: Path):
    import diskcache

    try:
        return diskcache.Cache(
            str(root / "index"),
            disk=diskcache.JSONDisk,
            eviction_policy="none",
            size_limit=2**62,
            timeout=120,
            statistics=False,
        )
    except sqlite3.DatabaseError as e:
        msg = str(e)
        if "readonly" in msg or "unable to open" in msg:
            raise CacheError(f"cache directory is not writable: {root} (set VD_CACHE_DIR to a writable folder)") from e
        if "full" in msg or "disk I/O" in msg and disk_full(root):
            raise CacheError(disk_full_message(root)) from e
        raise CacheError(corrupt_message(root / "index", e)) from e
    except OSError as e:
        raise objects.cache_error(e, root) from e


def disk_full(path: Path) -> bool:
    """Whether the file system holding `path` has no free blocks left for this user."""

    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def is_full_or_readonly(error: Exception) -> bool:
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return True
    text = str(error)
    return text.startswith("no space left") or "not writable" in text


def _reader(db: Path) -> sqlite3.Connection:
    """A read-only connection: `mode=ro` (sees a WAL's pending writes; needs the shared-memory
    file, which a full disk may refuse), else `immutable=1` (reads the database file alone)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
        return con
    except sqlite3.DatabaseError:
        return sqlite3.connect(f"file:{db}?immutable=1", uri=True)


class ReadOnlyIndex:
    """The subset of diskcache.Cache that maintenance needs, for a full disk.

    Reads go through an immutable SQLite connection: no locks, no WAL, no shared memory, nothing
    written (a writer running at the same time may not be seen). Deletes, which maintenance makes
    only after deleting objects freed some room, go through a plain connection with single-row
    statements: opening diskcache itself rewrites its settings and needs far more room. The
    database's own triggers keep diskcache's count and size right.
    """

    readonly = True

    def __init__(self, index_dir: Path):
        import diskcache

        db = index_dir / DB_NAME
        if not db.is_file():
            raise CacheError(f"the cache index at {index_dir} is missing; run `vd cache verify --rebuild`")
        self._disk = diskcache.JSONDisk(str(index_dir))
        self._db = db
        self._con = _reader(db)
        self._index_dir = index_dir
        self._writing = False

    def _rows(self, where: str = "", args: tuple = ()):
        try:
            return self._con.execute(f"SELECT key, raw, mode, filename, value FROM Cache {where}", args).fetchall()
        except sqlite3.DatabaseError as e:
            raise CacheError(corrupt_message(self._index_dir, e)) from e

    def delete(self, key) -> bool:
        if not self._writing:  # from now on read what we write
            self._con.close()
            self._con = sqlite3.connect(str(self._db), timeout=120, isolation_level=None)
            self._writing = True
        db_key, raw = self._disk.put(key)
        try:
            rows = self._rows("WHERE key = ? AND raw = ?", (db_key, raw))
            self._con.execute("DELETE FROM Cache WHERE key = ? AND raw = ?", (db_key, raw))
            # fold the WAL back into the database now: a later immutable reader sees the delete
            # and the WAL's room is given back
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            raise CacheError(disk_full_message(self._index_dir.parent)) from e
        for row in rows:
            if row[3]:
                try:
                    os.unlink(self._index_dir / row[3])
                except OSError:
                    pass
        return bool(rows)

    def transact(self):
        return contextlib.nullcontext()

    def _decode(self, row):
        _, _, mode, filename, value = row
        return self._disk.fetch(mode, filename, value, False)

    def iterkeys(self):
        for row in self._rows():
            yield self._disk.get(row[0], row[1])

    def get(self, key, default=None):
        db_key, raw = self._disk.put(key)
        rows = self._rows("WHERE key = ? AND raw = ?", (db_key, raw))
        return self._decode(rows[0]) if rows else default

    def __len__(self) -> int:
        return len(self._rows())

    def _refuse(self, *args, **kwargs):
        raise CacheError(disk_full_message(self._index_dir.parent))

    set = clear = _refuse

    def close(self) -> None:
        self._con.close()


class Index:
    """The index of one cache root; every method raises CacheError (one sentence) on failure."""

    def __init__(self, root: Path, db):
        self.root = Path(root)
        self.dir = self.root / "index"
        self._db = db

    @classmethod
    def open(cls, root: Path) -> Index:
        return cls(root, open_writable(root))

    @classmethod
    def open_readonly(cls, root: Path) -> Index:
        return cls(root, ReadOnlyIndex(Path(root) / "index"))

    @property
    def readonly(self) -> bool:
        return getattr(self._db, "readonly", False)

    def guard(self, fn: Callable, *args, **kwargs):
        """`fn(*args, **kwargs)` with SQLite and OS failures turned into CacheErrors."""
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "full" in msg or "disk I/O" in msg and disk_full(self.root):
                raise CacheError(disk_full_message(self.root)) from e
            if "readonly" in msg:
                raise CacheError(
                    f"cache directory is not writable: {self.root} (set VD_CACHE_DIR to a writable folder)"
                ) from e
            raise CacheError(f"the cache index at {self.dir} failed ({msg})") from e
        except sqlite3.DatabaseError as e:
            raise CacheError(corrupt_message(self.dir, e)) from e
        except OSError as e:
            raise objects.cache_error(e, self.root) from e

    def get(self, key: str) -> Optional[dict]:
        return self.guard(self._db.get, key, default=None)

    def set(self, key: str, entry: dict) -> None:
        self.guard(self._db.set, key, entry)

    def delete(self, key: str) -> bool:
        return bool(self.guard(self._db.delete, key))

    def update(self, key: str, change: Callable[[dict], None]) -> None:
        """Apply `change` to the entry of `key` (when present) in one transaction."""

        def do():
            with self._db.transact():
                e = self._db.get(key, default=None)
                if e is not None:
                    change(e)
                    self._db.set(key, e)

        self.guard(do)

    def keys(self) -> list[str]:
        return self.guard(lambda: list(self._db.iterkeys()))

    def __len__(self) -> int:
        return self.guard(len, self._db)

    def locked(self, fn: Callable):
        """`fn()` inside one index transaction (other processes' writes wait)."""

        def do():
            with self._db.transact():
                return fn()

        return self.guard(do)

    def clear(self) -> None:
        self.locked(self._db.clear)

    def close(self) -> None:
        self._db.close()


def adopt_records(index: Index, store: LocalObjects, *, only_if_empty: bool, delete_broken: bool) -> tuple[int, int]:
    """Index the record files under the cache root whose objects are all present (right size).

    Returns (adopted, skipped). `only_if_empty`: do nothing unless the index is empty (checked
    inside the transaction, so two processes recovering at once adopt the records once).
    `delete_broken`: delete the record files of records whose objects are gone."""

    def do() -> tuple[int, int]:
        if only_if_empty and len(index._db):
            return 0, 0
        kept = skipped = 0
        for key, entry in records.iter_records(index.root):
            if not all(store.has(a["hash"], a["size"]) for a in entry["artifacts"].values()):
                if delete_broken:
                    records.delete(index.root, key)
                skipped += 1
                continue
            index._db.set(key, entry)
            kept += 1
        return kept, skipped

    return index.locked(do)


def iter_entries(index: Index) -> Iterator[tuple[str, dict]]:
    for key in index.keys():
        entry = index.get(key)
        if entry is not None:
            yield key, entry
