"""completions/: generated from the app, never stale, and they work in bash (zsh/fish when installed)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("vd_completions_generate", REPO / "completions" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_completion_scripts_are_not_stale():
    gen = _generator()
    for shell, text in gen.render_all().items():
        path = gen.FILES[shell]
        assert path.exists(), f"{path} missing; run: python completions/generate.py"
        assert path.read_text() == text, f"{path.name} is stale; run: python completions/generate.py"


def test_table_covers_every_command():
    gen = _generator()
    paths = {row[0] for row in gen.command_table()}
    for name in ("fetch", "depth", "coarse", "fine", "export", "refine", "inspect", "view", "cache"):
        assert f"vd {name}" in paths
    for name in ("ls", "du", "prune", "verify", "clear"):
        assert f"vd cache {name}" in paths


def _bash_complete(words: list[str]) -> list[str]:
    script = REPO / "completions" / "vd.bash"
    words_q = " ".join("'" + w + "'" for w in words)
    cmd = f'source "{script}"; COMP_WORDS=({words_q}); COMP_CWORD={len(words) - 1}; _vd; printf "%s\\n" "${{COMPREPLY[@]}}"'
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return [x for x in p.stdout.splitlines() if x]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_behaviour():
    assert _bash_complete(["vd", "ca"]) == ["cache"]
    assert set(_bash_complete(["vd", "cache", ""])) == {"ls", "du", "prune", "push", "pull", "verify", "clear"}
    assert "--older-than" in _bash_complete(["vd", "cache", "prune", "--o"])
    assert "--dry-run" in _bash_complete(["vd", "-q", "cache", "prune", "--older-than", "30d", "--d"])
    assert "--json" in _bash_complete(["vd", "depth", "--js"])
    assert _bash_complete(["vd", "cache", "prune", "--stage", ""]) == []  # a value, not an option


@pytest.mark.parametrize("shell, name", [("zsh", "_vd"), ("fish", "vd.fish")])
def test_other_shells_parse(shell, name):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} not installed")
    p = subprocess.run([exe, "-n", str(REPO / "completions" / name)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_completion_behaviour():
    script = REPO / "completions" / "vd.fish"

    def complete(line: str) -> list[str]:
        p = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return [x.split("\t")[0] for x in p.stdout.splitlines()]

    assert complete("vd cache pr") == ["prune"]
    assert "--older-than" in complete("vd cache prune --ol")
    assert "--dry-run" in complete("vd -q cache prune --older-than 30d --dr")
    assert set(complete("vd cache ")) >= {"ls", "du", "prune", "verify", "clear"}
