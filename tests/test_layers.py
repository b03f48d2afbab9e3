"""vd's import layers (.importlinter): every module has a place, the contract holds, and it can fail."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "lint-imports"


def _layers() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    names = []
    for row in cfg["importlinter:contract:layers"]["layers"].split("\n"):
        names += [n.strip() for n in row.replace("|", ":").split(":") if n.strip()]
    return names


def test_every_module_of_vd_is_in_a_layer():
    placed = set(_layers())
    modules = {f"vd.{p.stem}" for p in (ROOT / "vd").glob("*.py") if p.stem != "__init__"}
    packages = {f"vd.{p.name}" for p in (ROOT / "vd").iterdir() if (p / "__init__.py").is_file()}
    packages |= {"vd.commands", "vd.cache"}  # commands/ and cache/ install as vd.commands and vd.cache
    missing = sorted((modules | packages) - placed)
    assert not missing, f"add these modules to a layer in .importlinter: {missing}"


def _lint(root: Path) -> subprocess.CompletedProcess:
    if shutil.which("lint-imports") is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[dev]')")
    return subprocess.run(["bash", str(SCRIPT), str(root)], capture_output=True, text=True, timeout=120)


def test_the_layers_contract_holds():
    p = _lint(ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "1 kept, 0 broken" in p.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    for name in ("vd", "commands", "cache"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    ply = tmp_path / "vd" / "ply.py"
    ply.write_text(ply.read_text() + "\n\ndef _upward():\n    from vd.stages import coarse  # noqa: F401\n")
    p = _lint(tmp_path)
    assert p.returncode != 0
    assert "vd.ply -> vd.stages.coarse" in p.stdout
