"""Human-readable sizes and ages, and parsers for `--max-size 20GB` / `--older-than 30d`.

Core: used by the cache commands, the fetcher, the memory report and `vd inspect`."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size(text: str) -> int:
    """'20GB' -> 20_000_000_000, '512MiB', '1.5G', '100' (bytes). ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 500MB, 20GB, 1.5GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(text: str) -> float:
    """'30d' -> seconds; units s, m/min, h, d, w, y. ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*", str(text))
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"not a duration: {text!r} (use e.g. 45m, 12h, 30d, 2w)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def format_size(n: float, *, binary: bool = False) -> str:
    """Bytes for people, the one formatter vd uses everywhere.

    Decimal by default, like `du -h --si` and `hf cache`: 999 B, 1.2 kB, 34.5 MB, 2.1 GB (disk
    and download sizes). `binary=True` gives powers of 1024, as torch and nvidia-smi report
    memory: 512 B, 1.5 KiB, 300.0 MiB, 22.2 GiB."""
    step, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "kB", "MB", "GB", "TB"))
    n = float(n)
    for unit in units:
        if abs(n) < step or unit == units[-1]:
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= step
    return ""  # pragma: no cover - the loop returns at the last unit


def format_age(seconds: float) -> str:
    """'just now', '42 seconds ago', '5 minutes ago', '3 hours ago', '12 days ago', '2 years ago'."""
    s = max(0.0, float(seconds))
    if s < 1:
        return "just now"
    for unit, size in (
        ("year", 365 * 86400),
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        if s >= size:
            n = int(s // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"  # pragma: no cover
