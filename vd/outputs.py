"""Output folders: one distinct folder per input, checked (and created) before any computation.

Every command that writes a folder per image goes through here, so a read-only or occupied `-o`
fails at once instead of after the whole computation, and `sa/x.png sb/x.png` never share `x/`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Sequence

from vd.errors import OUTPUT_HINT, OutputError, disk_full_message, is_disk_full

DEFAULT_BASE = Path("vd-out")


def _resolved(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except OSError:
        return p.absolute()


def distinct_names(images: Sequence[Path]) -> list[Path]:
    """A relative folder per image: its stem; where stems clash, its path below the clashing
    images' common folder (sa/x, sb/x); where even that clashes (x.png, x.jpg), the suffix too."""
    resolved = [_resolved(Path(i)) for i in images]
    by_stem: dict[str, list[int]] = {}
    for i, r in enumerate(resolved):
        by_stem.setdefault(r.stem, []).append(i)
    names: list[Path] = [Path(r.stem) for r in resolved]
    for stem, idx in by_stem.items():
        distinct = {resolved[i] for i in idx}
        if len(distinct) < 2:
            continue
        common = Path(os.path.commonpath([str(resolved[i].parent) for i in idx]))
        for i in idx:
            names[i] = resolved[i].parent.relative_to(common) / stem
        rel_groups: dict[Path, set[Path]] = {}
        for i in idx:
            rel_groups.setdefault(names[i], set()).add(resolved[i])
        for i in idx:
            if len(rel_groups[names[i]]) > 1:
                names[i] = names[i].with_name(f"{stem}-{resolved[i].suffix.lstrip('.') or 'noext'}")
    return names


def output_dirs(out: Path | None, images: Sequence[Path]) -> list[Path]:
    """The output folder of each image: `out` itself for one image, else `out/<name>` (default
    base vd-out/), with distinct names for distinct images. The same image twice shares one."""
    images = [Path(i) for i in images]
    if out is not None and len({_resolved(i) for i in images}) == 1:
        return [Path(out)] * len(images)
    base = Path(out) if out is not None else DEFAULT_BASE
    return [base / n for n in distinct_names(images)]


def prepare(folder: Path) -> Path:
    """Prove `folder` can be created and written; OutputError with one sentence if not.

    Folders it had to create are removed again, so a run that fails later leaves no empty
    output folder behind; the stage creates them when it writes."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder is a file: {folder}; choose another folder with -o")
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".vd-write-check."):
            pass
        for d in missing:
            d.rmdir()
    except (FileExistsError, NotADirectoryError) as e:
        raise OutputError(f"part of the output folder's path is a file: {folder}; choose another folder with -o") from e
    except OSError as e:
        if is_disk_full(e):
            raise OutputError(disk_full_message(folder, OUTPUT_HINT)) from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"the output folder is not writable: {folder}; {OUTPUT_HINT}") from e
        raise OutputError(f"the output folder cannot be created: {folder} ({e.strerror or e})") from e
    return folder


def prepare_output_dirs(out: Path | None, images: Sequence[Path]) -> list[Path]:
    """output_dirs(), each created and checked before anything is computed."""
    dests = output_dirs(out, images)
    for d in dict.fromkeys(dests):
        prepare(d)
    return dests


def check_distinct(pairs: Sequence[tuple[Path, Path]]) -> None:
    """OutputError when two different inputs would write the same output folder."""
    seen: dict[Path, Path] = {}
    for src, dest in pairs:
        key = _resolved(Path(dest))
        other = seen.setdefault(key, _resolved(Path(src)))
        if other != _resolved(Path(src)):
            raise OutputError(f"{other} and {src} would both write to {dest}; give each its own -o")
