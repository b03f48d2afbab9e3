"""A tiny tmpfs to fill up: real ENOSPC from the kernel, not a mocked function (needs root)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tiny_tmpfs(path: Path, size: str = "1m", readonly: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'needs root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding `folder` until at most `leave` bytes are free."""
    filler = folder / ".filler"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        todo = max(free - leave, 0)
        chunk = b"\0" * 65536
        while todo > 0:
            todo -= os.write(fd, chunk[: min(len(chunk), todo)])
        if leave == 0:
            while True:
                os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
