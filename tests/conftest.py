"""Shared test fixtures: an isolated cache and models folder per test, and ways to run `vd`.

- Every test gets its own `VD_CACHE_DIR` and `VD_MODELS_DIR` (under tmp_path) and runs without
  VD_OFFLINE / VD_AUTO_FETCH / VD_DEVICE / VD_MANIFEST / HF_TOKEN / HF_ENDPOINT / proxy variables,
  so nothing reads or writes the user's real cache and nothing reaches the network by accident.
- `run_vd(*args)` runs the CLI in-process through `vd.commands.app.run` and returns
  `Result(code, stdout, stderr)`.
- `run_vd_subprocess(*args, timeout=120, env=None)` runs `python -m vd.commands.app` in a child
  process (same isolated environment) and returns the same `Result`; `vd_env()` gives that env
  for tests that manage the process themselves (e.g. to SIGKILL it).
- Tests marked `gpu` are skipped when CUDA is unavailable.
- Under pytest-xdist (the README's `-n 2`: one worker a core) every worker and the `vd` processes it
  starts use one OpenMP thread: two workers of two threads each on two cores spin against each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # before anything imports torch
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

_UNSET = (
    "VD_OFFLINE",
    "VD_AUTO_FETCH",
    "VD_DEVICE",
    "VD_MANIFEST",
    "VD_LICENCE",
    "VD_CACHE_REMOTE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "NO_COLOR",
)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:  # readable assertion failures
        return f"Result(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture(autouse=True)
def _isolated_vd_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("vdenv")
    cache = base / "cache"
    models = base / "models"
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VD_CACHE_DIR", str(cache))
    monkeypatch.setenv("VD_MODELS_DIR", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))
    monkeypatch.setenv("COLUMNS", "200")
    try:
        from vd import console

        console.set_quiet(False)
        console.set_debug(False)
        console.install_log_handler()  # library log records on stderr, as the CLI shows them
    except Exception:  # pragma: no cover - keeps unrelated tests running while vd is broken
        pass
    yield {"cache": cache, "models": models}


@pytest.fixture
def one_torch_thread():
    """Tiny scenes: one torch thread is faster than two on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def vd_dirs(_isolated_vd_env):
    """{'cache': Path, 'models': Path} of this test's isolated folders."""
    return _isolated_vd_env


@pytest.fixture
def run_vd(capsys):
    """run_vd(*args) -> Result(code, stdout, stderr), in-process."""

    def _run(*args) -> Result:
        from vd import console
        from vd.commands.app import run

        console.set_quiet(False)
        console.set_debug(False)
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


def vd_env(extra: dict | None = None) -> dict:
    """The environment for a `vd` child process (the test's isolated env plus `extra`)."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", "")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def run_vd_subprocess():
    """run_vd_subprocess(*args, timeout=120, env=None) -> Result, in a child process."""

    def _run(*args, timeout: float = 120, env: dict | None = None, stdin: str | None = None) -> Result:
        p = subprocess.run(
            [sys.executable, "-m", "vd.commands.app", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=vd_env(env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        return Result(p.returncode, p.stdout, p.stderr)

    return _run


def pytest_collection_modifyitems(config, items):
    # the README's commands (tests/test_docs.py) first: they run in order in one folder, so one worker runs them
    # all, the suite's longest chain; started first, the other worker takes every other file meanwhile
    items.sort(key=lambda item: item.path.name != "test_docs.py")  # stable: each file keeps its order
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA (gpu marker)")
        for it in gpu_items:
            it.add_marker(skip)
