"""Output folders: one distinct folder per input, checked (and created) before any computation.

Every command that writes a folder per image goes through here, so a read-only or occupied `-o`
fails at once instead of after the whole computation, and `sa/x.png sb/x.png` never share `x/`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
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


def prepare_output_dirs(
    out: Path | None,
    images: Sequence[Path],
    *,
    overwrite: bool = False,
    bytes_per_pixel: int = 0,
    max_resolution: int | None = None,
) -> list[Path]:
    """output_dirs(), each created and checked before anything is computed: writable, not holding
    another input's results (unless `overwrite`), with room for about `bytes_per_pixel` bytes per
    pixel of each image (as downscaled to `max_resolution`). Each folder records its input once the
    command has written it (record_inputs)."""
    dests = output_dirs(out, images)
    for d in dict.fromkeys(dests):
        prepare(d)
    for image, d in zip(images, dests, strict=False):
        check_same_input(d, image, overwrite)
    if bytes_per_pixel:
        check_free_space(dests, [bytes_per_pixel * pixels(i, max_resolution) for i in images])
    _PENDING.update({_resolved(Path(d)): Path(i) for i, d in zip(images, dests, strict=False)})
    return dests


# --------------------------------------------------------------------------- which input wrote a folder
INPUT_RECORD = ".vd-input.json"
_PENDING: dict[Path, Path] = {}  # output folder -> the input it is being written from (this process)


def input_identity(image: Path) -> dict:
    """The input's resolved path and the xxh3-128 of its bytes (a moved or copied photo is the same input)."""
    import xxhash

    h = xxhash.xxh3_128()
    try:
        with open(image, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
    except OSError:
        digest = None
    return {"image": str(_resolved(Path(image))), "xxh3": digest}


def recorded_input(folder: Path) -> dict | None:
    try:
        data = json.loads((Path(folder) / INPUT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_same_input(folder: Path, image: Path, overwrite: bool = False) -> None:
    """OutputError when `folder` holds results of another input (other path and other bytes), unless `overwrite`."""
    rec = recorded_input(folder)
    if rec is None or overwrite:
        return
    mine = input_identity(image)
    if rec.get("image") == mine["image"] or (mine["xxh3"] is not None and rec.get("xxh3") == mine["xxh3"]):
        return
    raise OutputError(
        f"{folder} holds the results of {rec.get('image')}, not {image}; pass --overwrite to replace "
        "them or choose another folder with -o"
    )


def record_inputs() -> None:
    """Write the input record into every output folder this process prepared and then wrote."""
    from vd.fsio import atomic_write_bytes

    while _PENDING:
        folder, image = _PENDING.popitem()
        if folder.is_dir() and any(p.name != INPUT_RECORD for p in folder.iterdir()):
            try:
                atomic_write_bytes(folder / INPUT_RECORD, (json.dumps(input_identity(image)) + "\n").encode())
            except OSError:
                pass  # a folder that cannot take the record is only unguarded, never a failure


# --------------------------------------------------------------------------- room for the outputs
def pixels(image: Path, max_resolution: int | None) -> int:
    """The pixel count of `image` after the downscale to `max_resolution` (header only; 0 if unreadable)."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - the stage reports a bad image with its own sentence
        return 0
    if max_resolution and max(w, h) > max_resolution:
        s = max_resolution / max(w, h)
        w, h = round(w * s), round(h * s)
    return w * h


def check_free_space(folders: Sequence[Path], needs: Sequence[int]) -> None:
    """OutputError (the full-disk sentence) when a folder's file system has less room than its outputs need."""
    by_folder: dict[Path, int] = {}
    for folder, need in zip(folders, needs, strict=False):
        by_folder[Path(folder)] = by_folder.get(Path(folder), 0) + need
    for folder, need in by_folder.items():
        p = folder
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            free = shutil.disk_usage(p).free
        except OSError:
            continue
        if free < need:
            room = f"{folder} (the outputs need about {need / 1e6:.1f} MB, {free / 1e6:.1f} MB are free)"
            raise OutputError(disk_full_message(room, OUTPUT_HINT))


def check_distinct(pairs: Sequence[tuple[Path, Path]]) -> None:
    """OutputError when two different inputs would write the same output folder."""
    seen: dict[Path, Path] = {}
    for src, dest in pairs:
        key = _resolved(Path(dest))
        other = seen.setdefault(key, _resolved(Path(src)))
        if other != _resolved(Path(src)):
            raise OutputError(f"{other} and {src} would both write to {dest}; give each its own -o")
