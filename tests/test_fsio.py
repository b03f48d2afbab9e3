"""vd.fsio: the one atomic-write helper and the one inter-process file lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from vd.fsio import atomic_path, atomic_write_bytes, file_lock, output_transaction


def test_atomic_write_leaves_the_whole_file_or_nothing(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_mode_sets_the_permissions(tmp_path):
    target = atomic_write_bytes(tmp_path / "record", b"x", mode=0o444)
    assert stat.S_IMODE(target.stat().st_mode) == 0o444


def test_only_deferred_writes_wait_for_the_transaction(tmp_path):
    output, sidecar = tmp_path / "scene.ply", tmp_path / "weights.sha256"
    with pytest.raises(RuntimeError):
        with output_transaction():
            atomic_write_bytes(output, b"scene")
            atomic_write_bytes(sidecar, b"digest", deferred=False)
            assert sidecar.read_bytes() == b"digest" and not output.exists()
            raise RuntimeError("the stage failed")
    assert sidecar.read_bytes() == b"digest"
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.sha256"]


HOLDER = """
import sys, time, pathlib
from vd.fsio import file_lock
with file_lock(sys.argv[1]):
    pathlib.Path(sys.argv[2]).write_text("held")
    time.sleep(1.0)
"""


def test_file_lock_makes_a_second_holder_wait(tmp_path):
    lock, held = tmp_path / "locks" / "a.lock", tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(held)])
    try:
        deadline = time.monotonic() + 30
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        calls = []
        with file_lock(lock, on_wait=lambda: calls.append(holder.poll())) as waited:
            assert time.monotonic() - t0 > 0.5  # the holder keeps it for 1 s after saying so
        assert waited and calls == [None]
    finally:
        holder.wait(timeout=30)
    with file_lock(lock) as waited:
        assert not waited
    assert lock.exists() and os.access(lock, os.R_OK)
