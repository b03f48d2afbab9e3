"""Errors a user can act on, each carrying the exit code the CLI returns for it.

Exit codes (documented in the README):
    0  success
    1  the run failed (bad input file, corrupt data, full disk, not implemented yet, ...)
    2  usage error (bad option or combination of options)
    3  model weights missing, or offline with a cold cache

Library code raises these with one clear sentence; the CLI prints that sentence to stderr
without a traceback (unless `--debug`) and exits with `exit_code`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING_WEIGHTS = 3


class VdError(Exception):
    """A failure the user can understand and act on; `str()` is the one-sentence message."""

    exit_code = EXIT_FAILURE


class InputError(VdError):
    """A bad input file: missing, a directory, unreadable, corrupt, or of an unsupported kind."""


class UsageError(VdError):
    """Options that cannot work together or a value out of range."""

    exit_code = EXIT_USAGE


class MissingWeightsError(VdError):
    """Model weights are not on disk (or the network is off with a cold cache)."""

    exit_code = EXIT_MISSING_WEIGHTS


class CacheError(VdError):
    """The cache directory cannot be used (not writable, full disk, corrupt index)."""


class NotImplementedYet(VdError):
    """A command whose capability is not built yet; never produces fake output."""


def check_input_file(path, what: str = "input file"):
    """Return `path` as a Path if it is a readable regular file, else raise InputError."""
    import os
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a directory, expected a file: {p}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} is not readable (check its permissions): {p}")
    return p


def disk_full_message(path, hint: str = "point VD_CACHE_DIR elsewhere") -> str:
    return f"no space left on the device holding {path}; free some space or {hint}"


OUTPUT_HINT = "choose another output folder with -o"


class OutputError(VdError):
    """The output folder cannot be written (full disk, read-only, a file in the way, a clash)."""


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, or numpy's short write ("N requested and M written"), which carries no errno."""
    import errno

    if not isinstance(e, OSError):
        return False
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return e.errno is None and " requested and " in text and text.rstrip().endswith("written")
