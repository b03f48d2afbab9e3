"""Per-key locks: the same stage key in flight is computed by one process; the others wait.

A lock is an OS file lock (filelock, flock on POSIX) on `locks/<key>.lock` under the local cache
root. The kernel releases it when its holder exits or is killed, so a lock left by a crashed run
is never stale: the lock file may stay, but the next process acquires it at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

LOCKS = "locks"


@contextlib.contextmanager
def key_lock(root: Path, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold the lock of `key`; yields whether this process had to wait for another holder.

    When the lock file cannot be created (a full or read-only disk) this yields without a lock:
    the computation still runs, only the dedup across processes is lost.
    """
    from filelock import FileLock, Timeout

    path = root / LOCKS / f"{key}.lock"
    try:
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
    except OSError:
        yield False
        return
    try:
        yield waited
    finally:
        lock.release()
