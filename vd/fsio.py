"""Atomic file output: a complete file (or folder) at its final path, or nothing there; and the
one inter-process file lock (`file_lock`).

Inside `output_transaction()` the renames onto final names are deferred until the whole block
succeeds: a stage that writes a dozen files either leaves all of them or none (a full disk in
the middle leaves neither a `scaffold.ply` nor a half `views/`). A full disk becomes one
OutputError sentence, the same as the cache's.
"""

from __future__ import annotations

import contextvars
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vd.errors import OUTPUT_HINT, OutputError, disk_full_message, is_disk_full

# (temporary, final) pairs waiting for the enclosing transaction to commit, and folders it made
_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar("vd_fsio_pending", default=None)
_made_dirs: contextvars.ContextVar[list | None] = contextvars.ContextVar("vd_fsio_dirs", default=None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _translate(e: OSError, path: Path) -> BaseException:
    if is_disk_full(e):
        return OutputError(disk_full_message(path.parent, OUTPUT_HINT))
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # name the output, not the temporary beside it
        return OutputError(f"cannot write {path}: {e.strerror or 'permission denied'}; choose another output with -o")
    return e


def _mkdirs(folder: Path) -> None:
    """mkdir -p, remembering (inside a transaction) the folders it created."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    made = _made_dirs.get()
    if made is not None:
        made.extend(reversed(missing))


@contextmanager
def output_transaction() -> Iterator[None]:
    """Defer every atomic_path rename inside the block to its successful end; on failure remove
    the temporaries and the folders the block created. Nested blocks join the outer one."""
    if _pending.get() is not None:
        yield
        return
    pending: list = []
    made: list = []
    tokens = (_pending.set(pending), _made_dirs.set(made))
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    finally:
        _pending.reset(tokens[0])
        _made_dirs.reset(tokens[1])
    for tmp, final in pending:
        os.replace(tmp, final)


@contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str | None = None, *, mode: int | None = None, deferred: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`
    (at the end of the enclosing output_transaction, if any), on failure it is removed.

    `mode`: the file's permissions (default: what the umask allows). `deferred=False` renames at
    once even inside an output_transaction: for files that are no stage output (model-store
    sidecars, cache records), which must not wait for, or vanish with, the stage's outputs."""
    path = Path(path)
    tmp = None
    try:
        _mkdirs(path.parent)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        pending = _pending.get() if deferred else None
        if pending is not None:
            pending.append((tmp, path))
        else:
            os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        translated = _translate(e, path)
        if translated is e:
            raise
        raise translated from e
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None, deferred: bool = True) -> Path:
    """Write `data` to `path` through `atomic_path` (same `mode` and `deferred`)."""
    with atomic_path(path, mode=mode, deferred=deferred) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (which must be
    absent or empty, or is removed first when it is a folder we are allowed to replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        translated = _translate(e, path)
        if translated is e:
            raise
        raise translated from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive OS file lock on `path` (created, with its folder, when missing) for the
    block; yields whether another holder had it first, in which case `on_wait()` was called before
    waiting. The kernel releases the lock when its holder exits or is killed, so a crashed run never
    leaves a stale lock (only the lock file stays)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=False)
    try:
        lock.acquire(timeout=0)
        waited = False
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()
