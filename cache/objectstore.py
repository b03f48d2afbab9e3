"""Object stores: content-addressed bytes (named by their xxh3-128) behind one interface.

`ObjectStore` is what the cache needs of any place that holds objects; `LocalObjects` is the
cache's own objects/ folder, `vd.cache.remote.RemoteObjects` the shared remote tier's. Both
verify what `get` returns, so a corrupt object is never handed out.

Hash once, then trust: the local store hashes an object when it writes it and when `vd cache
verify` checks it, and records its stamp, (size, mtime_ns). A later read whose file is still
read-only with the same stamp is trusted without hashing again (the objects are written 0444
and never modified in place); any difference (a rewritten, truncated or chmod-ed file) makes
it hash the bytes again. `verify` always re-hashes.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Protocol, runtime_checkable

import xxhash

from vd.cache import objects

Stamp = tuple[int, int]  # (size, mtime_ns) of an object file when it was last hashed


@runtime_checkable
class ObjectStore(Protocol):
    """Content-addressed objects: the digest of an object is the xxh3-128 of its bytes."""

    label: str

    def has(self, digest: str, size: Optional[int] = None) -> bool:
        """Whether the object exists (with `size` bytes, when given)."""

    def size(self, digest: str) -> Optional[int]:
        """The object's size in bytes; None when it is missing."""

    def get(self, digest: str) -> Optional[bytes]:
        """The object's verified bytes; None when it is missing or corrupt."""

    def open(self, digest: str) -> BinaryIO:
        """A binary stream of the object's stored bytes, unverified (FileNotFoundError when missing)."""

    def put(self, data: bytes, digest: Optional[str] = None) -> str:
        """Store `data` (under `digest` when the caller already hashed it); returns the digest."""

    def delete(self, digest: str) -> None:
        """Remove the object (nothing when it is missing)."""

    def iterate(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every object."""


def transfer(src: ObjectStore, dst: ObjectStore, digest: str) -> bool:
    """Copy object `digest` from `src` to `dst`, verified on the way (`src.get` hashes it);
    False, copying nothing, when `src`'s copy is missing or corrupt."""
    data = src.get(digest)
    if data is None:
        return False
    dst.put(data, digest)
    return True


def hash_bytes(data) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def stamp_of(st: os.stat_result) -> Stamp:
    return (int(st.st_size), int(st.st_mtime_ns))


def _read_only(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


class LocalObjects:
    """The cache's objects/<2 hex>/<30 hex> folder.

    `hashed` counts the objects this instance hashed to check them (not those it wrote)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.label = str(self.root)
        self.hashed = 0

    # ------------------------------------------------------------------ the interface
    def path(self, digest: str) -> Path:
        return objects.object_path(self.root, digest)

    def has(self, digest: str, size: Optional[int] = None) -> bool:
        got = self.size(digest)
        return got is not None and (size is None or got == size)

    def size(self, digest: str) -> Optional[int]:
        try:
            return self.path(digest).stat().st_size
        except OSError:
            return None

    def get(self, digest: str, stamp: Optional[Stamp] = None) -> Optional[bytes]:
        """The object's bytes; hashed unless `stamp` (from an earlier hash) still matches the file."""
        try:
            with open(self.path(digest), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stamp is not None and _read_only(st) and stamp_of(st) == tuple(stamp) and len(data) == stamp[0]:
            return data
        self.hashed += 1
        return data if hash_bytes(data) == digest else None

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def put(self, data, digest: Optional[str] = None) -> str:
        """Store `data` atomically; an object already there is kept only when it hashes right
        (its stamp is then trusted, so it must be intact)."""
        view = memoryview(data).cast("B")
        digest = digest or hash_bytes(view)
        if self.size(digest) == len(view) and self.verify(digest) is None:
            objects.remove(self.path(digest))
        return objects.write_object(self.root, view, digest)[0]

    def delete(self, digest: str) -> None:
        objects.remove(self.path(digest))

    def iterate(self) -> Iterator[tuple[str, int]]:
        for digest, _, st in objects.iter_objects(self.root):
            yield digest, st.st_size

    # ------------------------------------------------------------------ local extras
    def stat_all(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        """(digest, path, stat) of every object (temporary files excluded)."""
        return objects.iter_objects(self.root)

    def stamp(self, digest: str) -> Optional[Stamp]:
        try:
            return stamp_of(self.path(digest).stat())
        except OSError:
            return None

    def check(self, digest: str, size: int, stamp: Optional[Stamp] = None) -> Optional[Stamp]:
        """The object's current stamp when it is intact, else None.

        Trusted without hashing when the file is read-only and its stamp equals `stamp`;
        otherwise hashed (and made read-only again when intact)."""
        p = self.path(digest)
        try:
            st = p.stat()
        except OSError:
            return None
        if st.st_size != size:
            return None
        now = stamp_of(st)
        if stamp is not None and _read_only(st) and now == tuple(stamp):
            return now
        return self.verify(digest)

    def verify(self, digest: str) -> Optional[Stamp]:
        """Hash the object's bytes: its stamp when they match the digest, else None."""
        p = self.path(digest)
        try:
            with open(p, "rb") as f:
                before = os.fstat(f.fileno())
                h = xxhash.xxh3_128()
                while chunk := f.read(objects.CHUNK):
                    h.update(chunk)
        except (FileNotFoundError, NotADirectoryError):
            return None
        self.hashed += 1
        if h.hexdigest() != digest:
            return None
        if not _read_only(before):
            try:
                os.chmod(p, 0o444)
                before = p.stat()
            except OSError:
                pass
        return stamp_of(before)

    def stale_temporaries(self) -> list[Path]:
        return objects.stale_temporaries(self.root)

    def remove_all(self) -> None:
        """Delete every object and temporary file (the folder itself stays)."""
        if self.root.exists():
            for sub in self.root.iterdir():
                if sub.is_dir():
                    shutil.rmtree(sub, ignore_errors=True)
                else:
                    objects.remove(sub)


__all__ = ["ObjectStore", "LocalObjects", "Stamp", "hash_bytes", "stamp_of", "transfer"]
