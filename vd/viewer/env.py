"""Where and how a viewer can run: display and TTY detection, ports, the rerun binary, waiting.

Standard library only: importing this never imports rerun.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from vd import settings

log = logging.getLogger(__name__)

DISPLAY_VARS = settings.DISPLAY_VARS


def has_display(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when a native window can be opened: macOS/Windows, or DISPLAY / WAYLAND_* set."""
    if sys.platform in ("darwin", "win32"):
        return True
    if env is None:
        return settings.display_available()
    return any(env.get(name) for name in DISPLAY_VARS)


def is_interactive(stream=None) -> bool:
    """True when a person is watching: stdout is a terminal (scripts and CI pipe it)."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# ports


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now (SO_REUSEADDR, like the rerun server)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def pick_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else the next free one of the 20 after it, else any free port."""
    for p in range(int(preferred), int(preferred) + 21):
        if 0 < p < 65536 and port_is_free(p, host):
            return p
    return free_port(host)


def is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(port: int, *, timeout: float, host: str = "127.0.0.1", alive=None) -> bool:
    """Poll until host:port accepts connections; False on timeout or when `alive()` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port, host, timeout=0.25):
            return True
        if alive is not None and not alive():
            return False
        time.sleep(0.1)
    return False


def grpc_url(port: int, host: str = "127.0.0.1") -> str:
    return f"rerun+http://{host}:{int(port)}/proxy"


# ---------------------------------------------------------------------------------------------
# the rerun binary and its environment


def rerun_executable() -> Optional[str]:
    """The `rerun` viewer/CLI binary shipped with rerun-sdk (its wheel's rerun_cli), else PATH."""

    override = settings.rerun_executable()
    if override:
        return override
    spec = importlib.util.find_spec("rerun_cli")
    if spec is not None and spec.origin:
        for name in ("rerun", "rerun.exe"):
            exe = Path(spec.origin).parent / name
            if exe.is_file() and os.access(exe, os.X_OK):
                return str(exe)
    return shutil.which("rerun")


def analytics_enabled() -> bool:
    """Rerun analytics stay off unless the user opts in with VD_RERUN_ANALYTICS=1."""
    return settings.rerun_analytics()


def child_env(base: Optional[Mapping[str, str]] = None) -> dict:
    """The environment for rerun processes vd starts (viewer, `rerun rrd ...`).

    rerun 0.41 has no RERUN_ANALYTICS switch: its binary writes ~/.config/rerun/analytics.json and
    ~/.local/share/rerun/analytics/ on first start and reports usage unless `CI` is set (the
    `FORCE_RERUN_ANALYTICS` variable overrides that). vd sets CI=1 for the processes it starts,
    never for itself; VD_RERUN_ANALYTICS=1 restores rerun's default.
    """
    env = dict(os.environ if base is None else base)
    env["RERUN_APP_ONLY"] = "true"
    if not analytics_enabled():
        env["CI"] = "1"
        env.pop("FORCE_RERUN_ANALYTICS", None)
    return env


# ---------------------------------------------------------------------------------------------
# waiting after a run


def wait_after_run(
    *, wait: bool = False, wait_seconds: Optional[float] = None, what: str = "the viewer", stdin=None, sleep=time.sleep
) -> str:
    """Keep the process (and its server) alive: sleep `wait_seconds`, or block on Enter with `wait`.

    `--wait` returns at once when stdin is not a terminal, and tolerates EOF and Ctrl-C.
    Returns what happened: "slept", "enter", "eof", "interrupted", "not-a-tty" or "none".
    """

    if wait_seconds is not None and wait_seconds > 0:
        log.info(f"viewer: keeping {what} open for {wait_seconds:g} s (--wait-seconds)")
        try:
            sleep(float(wait_seconds))
        except KeyboardInterrupt:
            return "interrupted"
        return "slept"
    if not wait:
        return "none"
    stdin = sys.stdin if stdin is None else stdin
    if not is_interactive(stdin):
        log.info("viewer: --wait ignored: stdin is not a terminal (use --wait-seconds N in scripts)")
        return "not-a-tty"
    sys.stderr.write(f"viewer: press Enter to close {what} and exit\n")
    sys.stderr.flush()
    try:
        line = stdin.readline()
    except EOFError:
        return "eof"
    except KeyboardInterrupt:
        return "interrupted"
    return "enter" if line else "eof"
