"""Per-key locks: the same stage key in flight is computed by one process; the others wait.

A lock is an OS file lock (filelock, flock on POSIX) on `locks/<key>.lock` under the local cache
root. The kernel releases it when its holder exits or is killed, so a lock left by a crashed run
is never stale: the lock file may stay, but the next process acquires it at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from vd.fsio import file_lock

LOCKS = "locks"


@contextlib.contextmanager
def key_lock(root: Path, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold the lock of `key` (`vd.fsio.file_lock`); yields whether this process had to wait for
    another holder.

    When the lock file cannot be created (a full or read-only disk) this yields without a lock:
    the computation still runs, only the dedup across processes is lost.
    """
    with contextlib.ExitStack() as stack:
        try:
            waited = stack.enter_context(file_lock(root / LOCKS / f"{key}.lock", on_wait))
        except OSError:
            waited = False
        yield waited
