"""Content-addressed object files: objects/<first 2 hex>/<remaining 30 hex>.

Writes are atomic: the bytes go to an anonymous (O_TMPFILE) or hidden temporary file in the
object's own directory, are fsynced, then linked/renamed into place, so a reader never sees a
partial object and a process killed mid-write leaves no object behind.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from pathlib import Path

import xxhash

from vd.cache.keys import file_hash
from vd.errors import CacheError, disk_full_message

CHUNK = 1 << 20
TMP_PREFIX = ".tmp."
_O_TMPFILE = getattr(os, "O_TMPFILE", None)
_tmpfile_ok = {"value": _O_TMPFILE is not None and os.path.isdir("/proc/self/fd")}


def object_path(objects_dir: Path, digest: str) -> Path:
    return objects_dir / digest[:2] / digest[2:]


def digest_of_path(path: Path) -> str:
    return path.parent.name + path.name


def is_object_name(path: Path) -> bool:
    name = path.name
    hexdigits = name + path.parent.name
    return len(name) == 30 and len(path.parent.name) == 2 and all(c in "0123456789abcdef" for c in hexdigits)


def _write_all(fd: int, data: memoryview) -> None:
    """Write in chunks (a test hook: monkeypatch `os.write` or this function)."""
    offset = 0
    n = len(data)
    while offset < n:
        written = os.write(fd, data[offset : offset + CHUNK])
        offset += written


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cache_error(e: OSError, path: Path) -> CacheError:
    """The one-sentence CacheError of a failed file-system call under the cache at `path`."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(disk_full_message(path))
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(f"cache directory is not writable: {path} (set VD_CACHE_DIR to a writable folder)")
    return CacheError(f"cannot write to the cache at {path}: {e.strerror or e}")


def write_object(
    objects_dir: Path, data: bytes | bytearray | memoryview, digest: str | None = None
) -> tuple[str, Path]:
    """Store `data` atomically under its xxh3-128 digest; return (digest, path)."""
    view = memoryview(data).cast("B")
    if digest is None:
        digest = xxhash.xxh3_128_hexdigest(view)
    final = object_path(objects_dir, digest)
    if final.exists() and final.stat().st_size == len(view):
        try:
            os.utime(final)  # keep it young for the garbage collector's grace period
        except OSError:
            pass
        return digest, final
    directory = final.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if _tmpfile_ok["value"]:
            try:
                _write_anonymous(directory, final, view)
                return digest, final
            except OSError as e:
                unsupported = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EXDEV, errno.EPERM)
                if e.errno not in unsupported:
                    raise
                _tmpfile_ok["value"] = False  # file system without O_TMPFILE/linkat: use named temps
        _write_named(directory, final, view)
    except OSError as e:
        raise cache_error(e, objects_dir.parent) from e
    return digest, final


def _write_anonymous(directory: Path, final: Path, view: memoryview) -> None:
    assert _O_TMPFILE is not None  # callers check _tmpfile_ok first
    fd = os.open(directory, _O_TMPFILE | os.O_WRONLY, 0o444)
    tmp_name = None
    try:
        _write_all(fd, view)
        os.fsync(fd)
        tmp_name = directory / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            # linkat(..., AT_SYMLINK_FOLLOW): gives the anonymous inode a name (a plain link() would not)
            os.link(f"/proc/self/fd/{fd}", tmp_name.name, dst_dir_fd=dir_fd, follow_symlinks=True)
        finally:
            os.close(dir_fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp_name, final)
    except BaseException:
        _unlink_quiet(tmp_name)
        raise
    _fsync_dir(directory)


def _write_named(directory: Path, final: Path, view: memoryview) -> None:
    tmp_name = directory / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        try:
            _write_all(fd, view)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, final)
    except BaseException:
        _unlink_quiet(tmp_name)
        raise
    _fsync_dir(directory)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a small non-object file (a record) atomically: named temporary, fsync, rename."""
    _write_named(path.parent, path, memoryview(data).cast("B"))


def _unlink_quiet(path) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def verify(path: Path, digest: str) -> bool:
    try:
        return file_hash(path) == digest
    except FileNotFoundError:
        return False


def remove(path: Path) -> None:
    _unlink_quiet(path)


def iter_objects(objects_dir: Path):
    """Yield (digest, path, stat) for every object file (temporary files excluded)."""
    if not objects_dir.is_dir():
        return
    for sub in sorted(objects_dir.iterdir()):
        if not sub.is_dir() or len(sub.name) != 2:
            continue
        for p in sorted(sub.iterdir()):
            if p.name.startswith(TMP_PREFIX) or not is_object_name(p):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            yield digest_of_path(p), p, st


def stale_temporaries(objects_dir: Path, older_than_s: float = 3600.0):
    """Temporary files left by killed writers (only named temps can be left behind)."""
    if not objects_dir.is_dir():
        return []
    now = time.time()
    out = []
    for sub in objects_dir.iterdir():
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            if not p.name.startswith(TMP_PREFIX):
                continue
            try:
                pid = int(p.name[len(TMP_PREFIX) :].split(".")[0])
            except ValueError:
                pid = -1
            alive = pid > 0 and _pid_alive(pid)
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if not alive or age > older_than_s:
                out.append(p)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
