"""The coarse output folder: written once by `vd coarse`, read by `vd fine`, `vd export` and `vd view`.

    coarse.ply  scaffold.ply  summary.json
    cameras.json  views/<NNN>/...      (the views: `vd.views`)

`views/000` is the input, `views/001` the outpainted ring (absent with --no-outpaint), then one
folder per added view. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np

from vd.cache import content_hash, file_hash
from vd.errors import InputError
from vd.fsio import atomic_write_bytes, output_transaction
from vd.ply import read_ply, write_ply
from vd.views import ANCHOR_KINDS, MASKS, View, find_input, read_views, remove_stale_views, write_views

if TYPE_CHECKING:
    from vd.gaussians import Gaussians

COARSE_PLY = "coarse.ply"
SCAFFOLD_PLY = "scaffold.ply"
SUMMARY = "summary.json"
CAMERAS = "cameras.json"


def write_coarse_folder(
    out: Path, views: list[View], scaffold, coarse, summary: dict, *, comments: Optional[dict] = None
) -> list[Path]:
    """Write the folder; returns the paths of coarse.ply, scaffold.ply, cameras.json and summary.json.

    summary.json gains a ``ply`` entry with what each PLY writer kept and dropped. All the files, or
    none under their final names (a full disk leaves no partial folder)."""
    with output_transaction():
        return _write_coarse_folder(Path(out), views, scaffold, coarse, summary, comments)


def _write_coarse_folder(out: Path, views, scaffold, coarse, summary: dict, comments: Optional[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    cameras = write_views(out, views)
    reports = {
        name: write_ply(out / f"{name}.ply", g, comments=comments)
        for name, g in (("scaffold", scaffold), ("coarse", coarse))
    }
    summary = dict(summary)
    summary["ply"] = {
        name: {k: int(getattr(r, k)) for k in ("written", "dropped_nonfinite", "dropped_transparent")}
        for name, r in reports.items()
    }
    atomic_write_bytes(out / SUMMARY, summary_bytes(summary))
    return [out / COARSE_PLY, out / SCAFFOLD_PLY, cameras, out / SUMMARY]


def summary_bytes(summary: dict) -> bytes:
    return (json.dumps(summary, indent=1, default=_json_default) + "\n").encode()


def folder_files(out: Path) -> dict[str, bytes]:
    """Every file `write_coarse_folder` wrote into `out`, by its path relative to `out`."""
    out = Path(out)
    names = [COARSE_PLY, SCAFFOLD_PLY, CAMERAS, SUMMARY]
    for entry in json.loads((out / CAMERAS).read_bytes())["views"]:
        names += [entry["rgb"], entry["depth"], *(entry[f"{m}_mask"] for m in MASKS)]
    return {name: (out / name).read_bytes() for name in names}


def write_folder_files(out: Path, files: Mapping[str, bytes], summary: dict) -> list[Path]:
    """Write a coarse folder from `folder_files` of an identical run, its summary.json replaced by
    `summary`: all the files, or none under their final names."""
    out = Path(out)
    with output_transaction():
        for name, data in files.items():
            if name != SUMMARY:
                atomic_write_bytes(out / name, data)
        remove_stale_views(out / "views", len(json.loads(files[CAMERAS])["views"]))
        atomic_write_bytes(out / SUMMARY, summary_bytes(summary))
    return [out / COARSE_PLY, out / SCAFFOLD_PLY, out / CAMERAS, out / SUMMARY]


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


@dataclass
class CoarseScene:
    """A coarse output folder, read back."""

    folder: Path
    gaussians: Gaussians  # on the CPU: coarse.ply
    scaffold: Optional[Gaussians]  # of the anchor views (scaffold.ply)
    views: list[View]
    summary: dict
    inputs: dict = field(default_factory=dict)  # content hashes that key the stages reading it

    @property
    def anchors(self) -> list[View]:
        """The input and ring views: the photo and its outpainted border."""
        return [v for v in self.views if v.kind in ANCHOR_KINDS]

    @property
    def input_view(self) -> View:
        return find_input(self.views)


def is_coarse_folder(path: Path) -> bool:
    return path.is_dir() and (path / "cameras.json").is_file() and (path / COARSE_PLY).is_file()


def read_coarse_folder(folder: Path) -> CoarseScene:
    """Read a coarse output folder; InputError naming what is missing or damaged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"coarse folder not found: {folder}")
    for name in ("cameras.json", COARSE_PLY):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder} is not a coarse output folder ({name} is missing); run `vd coarse IMAGE -o {folder}` first"
            )
    views = read_views(folder)
    if not views:
        raise InputError(f"{folder / 'cameras.json'} lists no views")
    g, _ = read_ply(folder / COARSE_PLY)
    if len(g) == 0:
        raise InputError(f"{folder / COARSE_PLY} holds no Gaussians")
    scaffold = read_ply(folder / SCAFFOLD_PLY)[0] if (folder / SCAFFOLD_PLY).is_file() else None
    summary = {}
    if (folder / SUMMARY).is_file():
        try:
            summary = json.loads((folder / SUMMARY).read_text())
        except ValueError:
            summary = {}
    inputs = {COARSE_PLY: file_hash(folder / COARSE_PLY), "cameras.json": file_hash(folder / "cameras.json")}
    if scaffold is not None:
        inputs[SCAFFOLD_PLY] = file_hash(folder / SCAFFOLD_PLY)
    for v in views:  # the anchors' pixels and masks supervise what reads the folder: key them too
        if v.kind in ANCHOR_KINDS:
            inputs[f"anchor:{v.name}"] = content_hash(
                b"".join(np.ascontiguousarray(a).tobytes() for a in (v.rgb, v.supervise, v.spawn))
            )
    return CoarseScene(folder, g, scaffold, views, summary if isinstance(summary, dict) else {}, inputs)


__all__ = [
    "CoarseScene",
    "write_coarse_folder",
    "folder_files",
    "write_folder_files",
    "summary_bytes",
    "read_coarse_folder",
    "is_coarse_folder",
    "COARSE_PLY",
    "SCAFFOLD_PLY",
    "ANCHOR_KINDS",
]
