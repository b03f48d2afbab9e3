"""Terminal output: results on stdout, everything for humans on stderr.

- `out(...)` / `out_json(obj)` write results (paths, JSON) to stdout, nothing else does.
- `err` is a rich Console on stderr for tables, warnings and logs; it honours NO_COLOR.
- The library never prints: its modules log through `logging.getLogger(__name__)` (all under the
  "vd" logger), and the CLI installs `ConsoleHandler` (`install_log_handler`), which writes those
  records on `err` as `info` and `warn` below would.
- `progress()` returns a rich Progress on stderr that is disabled when stderr is not a TTY
  or when `--quiet` was given, so scripted runs get clean logs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

_state = {"quiet": False, "debug": False}

err = Console(stderr=True, highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet
    err.quiet = quiet


def set_debug(debug: bool) -> None:
    _state["debug"] = debug


def is_quiet() -> bool:
    return _state["quiet"]


def is_debug() -> bool:
    return _state["debug"]


def out(*lines: Any) -> None:
    """Print a result line (a written path, a value) to stdout."""
    for line in lines:
        sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def out_json(obj: Any) -> None:
    """Print one JSON object on one line to stdout."""
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=False) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def info(message: str, *, markup: bool = False) -> None:
    """A log line on stderr. Plain text by default: messages carry user paths, and a path such
    as `shots/[day1]/a.png` must not be read as rich markup."""
    err.print(message, markup=markup)


def warn(message: str) -> None:
    from rich.text import Text

    err.print(Text.assemble(("warning:", "yellow"), " ", message))


class ConsoleHandler(logging.Handler):
    """Writes log records on the stderr console: info as a plain line, a warning (or worse) after a
    yellow `warning:`, a debug record dimmed with its logger's name. `--quiet` silences `err`,
    and with it this handler."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            elif record.levelno >= logging.INFO:
                info(message)
            else:
                from rich.text import Text

                err.print(Text(f"debug: {record.name}: {message}", style="dim"))
        except Exception:
            self.handleError(record)


def install_log_handler(debug: bool = False) -> None:
    """Show the library's log records (the "vd" logger and its children) on stderr: info and
    warnings, and debug records too with `debug`. Replaces a handler installed before."""
    logger = logging.getLogger("vd")
    for handler in list(logger.handlers):
        if isinstance(handler, ConsoleHandler):
            logger.removeHandler(handler)
    level = logging.DEBUG if debug else logging.INFO
    logger.addHandler(ConsoleHandler(level))
    logger.setLevel(level)


def bars_enabled() -> bool:
    return not _state["quiet"] and err.is_terminal


def progress(transient: bool = True, bytes_mode: bool = False):
    """A rich Progress on stderr; silent when stderr is not a TTY or with --quiet."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if bytes_mode:
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
    else:
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
    # rich sends what is printed to stdout while bars are drawn through its own console, on stderr: right for a
    # terminal, wrong for results piped to another program, which must get them (stdout carries results only)
    return Progress(
        *columns,
        console=err,
        transient=transient,
        disable=not bars_enabled(),
        redirect_stdout=_stdout_is_terminal(),
    )


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class Bar:
    """A line of progress for work of `total` steps, from anywhere in the library: drawn from its first
    `update` (so work served from the cache shows none), removed when the block ends, and nested under the
    bars already on screen (rich 14.1 draws nested live displays together). Silent when bars are off.

        with console.Bar("fine: scene fit", iters) as bar:
            optimise(..., progress=lambda iteration, loss: bar.update(iteration + 1))
    """

    def __init__(self, description: str, total: int):
        self.description, self.total = description, int(total)
        self._bars: Any = None  # a started rich Progress from the first update on
        self._task: Any = None

    def update(self, done: int, total: int | None = None) -> None:
        """`done` of the steps are done (of `total` from now on, when given)."""
        if total is not None:
            self.total = int(total)
        if self._bars is None:
            bars = progress()
            bars.start()
            self._bars, self._task = bars, bars.add_task(self.description, total=self.total)
        self._bars.update(self._task, completed=done, total=self.total)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on stderr for work without a known length (silent when not a TTY)."""
    if bars_enabled():
        with err.status(message):
            yield
    else:
        yield
