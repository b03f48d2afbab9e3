"""Marked sections of the bench's markdown files: a bench script rewrites its own section and leaves the rest."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, body: list[str], start: str, end: str) -> None:
    """Replace the text between the `start` and `end` markers of `path` with `body` (append the section when
    the markers are not there yet)."""
    old = path.read_text() if path.exists() else ""
    section = "\n".join([start, *body, end])
    if start in old:
        new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: section, old, flags=re.S)
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)
