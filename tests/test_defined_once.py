"""Each shared constant and helper is defined once: the splatting constants, the inter-process file lock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
C0 = 0.28209479177387814


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
    assert found == ["vd/splat_constants.py"]


def _number(node: ast.AST) -> float | None:
    """The value of a module-level number written as a literal or arithmetic on literals, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        a, b = _number(node.left), _number(node.right)
        return a / b if a is not None and b else None
    return None


def test_the_splatting_constants_are_assigned_once():
    # (T_MIN = 1e-4 is not scanned for: other constants share that value with another meaning)
    splatting = {"ALPHA_MIN": 1.0 / 255.0, "ALPHA_MAX": 0.999}
    found = []
    for rel, tree in _sources():
        for node in tree.body:
            if isinstance(node, ast.Assign):
                value = _number(node.value)
                found += [(rel, name) for name, v in splatting.items() if value is not None and abs(value - v) < 1e-12]
    assert sorted(found) == [("vd/splat_constants.py", name) for name in sorted(splatting)]


def test_only_fsio_takes_file_locks():
    found = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("flock", "lockf", "FileLock"):
                found.append(rel)
    assert sorted(set(found)) == ["vd/fsio.py"]
