"""The documentation holds: every `docs/upstream.md#anchor` cited in the code is a heading of that page,
nothing cites the numbered sections or bugs of documents outside the repository, and every command of
the README runs as written (or is skipped with its reason)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"docs/upstream\.md#([a-z0-9-]+)")
OUTSIDE = re.compile(r"reference §|§\s?\d|upstream (bug|spec)\s?\d|\(bug \d+\)", re.IGNORECASE)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def anchors() -> set[str]:
    text = (ROOT / "docs" / "upstream.md").read_text(encoding="utf-8")
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def sources() -> list[Path]:
    return [p for d in ("vd", "commands", "cache", "tests", "bench") for p in sorted((ROOT / d).rglob("*.py"))]


def test_slug_follows_github():
    assert slug("MCS fine stage") == "mcs-fine-stage"
    assert slug("Where vd departs from VistaDream") == "where-vd-departs-from-vistadream"


def test_every_cited_anchor_exists():
    known = anchors()
    here = Path(__file__).resolve()
    cited = {(p.relative_to(ROOT).as_posix(), a) for p in sources() if p != here
             for a in CITE.findall(p.read_text(encoding="utf-8"))}
    assert cited, "no citation found: the pattern is wrong"
    missing = sorted(f"{p}: #{a}" for p, a in cited if a not in known)
    assert not missing, missing


def test_no_citation_of_documents_outside_the_repository():
    # the lead rewrites these four stage modules; their citations move with that rewrite
    here = Path(__file__).resolve()
    found = [f"{p.relative_to(ROOT).as_posix()}:{i}: {line.strip()}"
             for p in sources() if p != here
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, found


# ----------------------------------------------------------------------------- the README's commands, run
# Every command of the README's bash and console blocks runs, in order, in one folder holding a copy of
# examples/, offline, with a cache of its own: the README cannot drift from what the commands do. A command
# that needs something this machine cannot give is skipped with the reason below (the first rule that matches).
SKIP_RULES = [
    (r"^(pip|npm|apt-get|echo \"torch)|PIP_CONSTRAINT=|git\+https", "installs packages (network)"),
    (r"python -m pytest", "the test suite itself"),
    (r"completions/generate\.py|~/\.|cp completions/", "writes outside the example folder (repository or home)"),
    (r"^#!|--address", "a SLURM/Ray cluster script"),
    (r"MAX_JOBS=|gsplat|--vram-budget|--offload sequential", "needs CUDA (a GPU)"),
    (r"VD_CACHE_REMOTE|vd cache (push|pull)", "needs a remote cache (S3)"),
    (r"HF_TOKEN|HF_ENDPOINT|ALL_PROXY|--proxy|--fetch\b|--backend moge|--manifest|vd fetch (moge|flux|--force)",
     "needs the network or model weights"),
    (r"vd fetch --verify", "needs model weights on disk"),
    (r"photo\.jpg|scan\.png|vd-out/photo|photos/|/data\b|/shared\b|list\.txt", "needs your own photos"),
    (r"--viewer (serve|connect|spawn)|--wait\b", "a live viewer that waits for a person"),
    (r"--format sog", "needs splat-transform", "splat-transform"),
]
EXPECTED_CODES = {r"^vd doctor": {0, 1}, r"^vd fetch --offline": {3}}  # doctor: 1 without a GPU; offline: 3 if missing


def readme_commands() -> list[tuple[int, str]]:
    """(line, command) for every command of the README's ```bash / ```console blocks, in order;
    `\\` continuations joined, comment lines and console output dropped, `a && b` split. A script
    block (its first line `#!...`) is one command: the whole script."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    out, kind, pending, start = [], None, "", 0
    for i, raw in enumerate(lines, 1):
        fence = re.match(r"^\s*```(\w*)\s*$", raw)
        if fence:
            kind = None if kind is not None else (fence.group(1) or "text")
            if kind == "bash" and i < len(lines) and lines[i].startswith("#!"):
                kind = "script"
                out.append((i + 1, lines[i]))
            continue
        if kind not in ("bash", "console"):
            continue
        line = raw.strip()
        if kind == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            start = i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s+#\s.*$", "", line).strip()  # trailing comment
        out += [(start, part.strip()) for part in line.split(" && ")]
    return out


def skip_reason(command: str) -> str | None:
    for rule in SKIP_RULES:
        pattern, reason = rule[0], rule[1]
        if len(rule) == 3 and shutil.which(rule[2]) is not None:
            continue
        if re.search(pattern, command):
            return reason
    return None


def test_the_readme_parser_finds_the_commands_and_runs_most_of_them():
    cmds = readme_commands()
    run = [c for _, c in cmds if skip_reason(c) is None]
    assert "vd coarse examples/room/rgb.png --fallback closest -o vd-out/room" in run
    assert any(c.startswith("vd cache ls") for c in run) and any(c.startswith("vd export") for c in run)
    assert len(run) >= 30, run
    assert all(not c.startswith(("$", "```")) for _, c in cmds)


@pytest.fixture(scope="module")
def readme_workspace(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VD_", "HF_")) and "proxy" not in k.lower()}
    env.update({"VD_CACHE_DIR": str(work / ".cache"), "VD_MODELS_DIR": str(work / ".models"), "VD_OFFLINE": "1",
                "HOME": str(work / ".home"), "XDG_CACHE_HOME": str(work / ".xdg"), "COLUMNS": "120",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    return work, env


@pytest.mark.slow
@pytest.mark.timeout(900)  # the quick start's coarse run and `vd refine` take minutes on a busy CPU
@pytest.mark.parametrize("line,command", readme_commands(),
                         ids=[f"L{n}:" + re.sub(r"[^\w./=-]+", "_", c)[:48] for n, c in readme_commands()])
def test_readme_command_runs_as_written(readme_workspace, line, command):
    reason = skip_reason(command)
    if reason:
        pytest.skip(f"README command: {reason}")
    work, env = readme_workspace
    r = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=840,
                       stdin=subprocess.DEVNULL)
    codes = next((c for p, c in EXPECTED_CODES.items() if re.search(p, command)), {0})
    assert r.returncode in codes, f"README line {line}: `{command}` exited {r.returncode}\n{r.stderr[-3000:]}"
