"""Install hints work where they are printed: vd is not on PyPI (`pip install vd` installs an unrelated
package), so every hint installs this checkout; `vd doctor` finds splat-transform where `--format sog` does."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

from vd import doctor as D
from vd.install import checkout, pip_install

ROOT = Path(__file__).resolve().parent.parent
PYPI_VD = re.compile(r"""pip install[^\n]*?["']?\bvd\[""")


def test_no_hint_installs_the_pypi_package_named_vd():
    files = [ROOT / "README.md"] + [p for d in ("vd", "commands", "cache") for p in sorted((ROOT / d).rglob("*.py"))]
    found = [f"{p.relative_to(ROOT)}:{i}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if PYPI_VD.search(line)]
    assert not found, found


def test_the_hint_installs_this_checkout_and_pip_accepts_it():
    assert checkout() == ROOT
    cmd = pip_install("moge")
    assert cmd == f'pip install -e "{ROOT}[moge]"'
    # pip resolves the requirement to this project (a dry run, offline: nothing is installed)
    target = cmd.split('"')[1]
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--no-build-isolation",
                        "--report", "-", "-q", "-e", target], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names = [i["metadata"]["name"] for i in json.loads(r.stdout)["install"]]
    assert names == ["vd"]


def test_doctor_moge_fix_installs_the_checkout(monkeypatch):
    real = D._importable
    monkeypatch.setattr(D, "_importable", lambda m: False if m.startswith("moge") else real(m))
    moge = next(c for c in D.check_packages() if c.name == "MoGe code")
    assert moge.status == "missing"
    assert moge.fix.startswith(pip_install("moge") + " && pip install --no-deps dlr-moge"), moge.fix


def _fake_splat_transform(tmp_path: Path) -> Path:
    exe = tmp_path / "my-splat-transform"
    exe.write_text("#!/bin/sh\necho 1.0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_doctor_finds_splat_transform_through_VD_SPLAT_TRANSFORM(tmp_path, monkeypatch):
    exe = _fake_splat_transform(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("VD_SPLAT_TRANSFORM", str(exe))
    check = next(c for c in D.check_packages() if c.name == "splat-transform")
    assert check.status == "ok" and check.detail == str(exe)


def test_doctor_says_sog_export_needs_splat_transform(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("VD_SPLAT_TRANSFORM", "no-such-splat-transform")
    check = next(c for c in D.check_packages() if c.name == "splat-transform")
    assert check.status == "optional"
    assert "--format sog" in check.detail and "cross-check" not in check.detail
    assert "VD_SPLAT_TRANSFORM" in check.fix and "no-such-splat-transform" in check.detail
