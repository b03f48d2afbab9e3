"""Each shared constant and helper is defined once: the SH constant C0, the inter-process file lock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
C0 = 0.28209479177387814
# the cache's own lock, switched to vd.fsio.file_lock when the cache's restructuring is merged
LOCK_NOT_YET_SWITCHED = {"cache/locks.py"}


def _sources():
    for folder in ("vd", "commands", "cache"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def test_the_sh_constant_is_written_once():
    found = [
        rel
        for rel, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, float) and abs(node.value - C0) < 1e-9
    ]
    assert found == ["vd/sh_constants.py"]


def test_only_fsio_takes_file_locks():
    found = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("flock", "lockf", "FileLock"):
                found.append(rel)
    assert sorted(set(found) - LOCK_NOT_YET_SWITCHED) == ["vd/fsio.py"]
