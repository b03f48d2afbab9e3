"""What `vd export SOURCE` points at: a Gaussian file, a vd output folder, or a processed image.

- a ``.ply`` (INRIA or PlayCanvas compressed), ``.splat``, ``.spz`` or ``.sog`` file: Gaussians only, no
  cameras; a PLY that is not Gaussian splats (a mesh, a point cloud) is refused unless
  ``as_splats`` (``--as-splats``) asks to read its vertices as splats with default properties;
- a coarse output folder (``cameras.json``): Gaussians from ``fine.ply`` / ``coarse.ply`` /
  ``scaffold.ply`` (``--stage`` picks one; default the latest of these that exists) and the views;
- a fine output folder (``fine.ply`` + ``summary.json`` naming its coarse folder);
- a refine output folder (``gaussians_refined.ply`` + ``refine_meta.json``; views from its dataset);
- an image that vd has processed: the newest cache records of that image (``--stage`` fine,
  coarse or scaffold; default the latest stage found).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from vd.cache import Cache
from vd.errors import InputError, UsageError
from vd.export.colmap import load_dataset
from vd.export.read import GAUSSIAN_SUFFIXES, gaussian_file_kind, read_gaussians
from vd.ply import read_ply
from vd.views import decode_record, read_views

FOLDER_STAGES = {
    "fine": "fine.ply",
    "coarse": "coarse.ply",
    "scaffold": "scaffold.ply",
    "refine": "gaussians_refined.ply",
}
IMAGE_STAGES = ("fine", "coarse", "scaffold")
PIPELINE_ORDER = ("scaffold", "coarse", "fine", "refine")  # the order the stages write their files
STAGES = tuple(FOLDER_STAGES)


@dataclass
class Source:
    path: Path
    kind: str  # ply | compressed-ply | splat | spz | sog | folder | image
    stage: Optional[str]
    description: str
    _gaussians: Callable[[], Any]
    _views: Optional[Callable[[], list]] = None
    provenance: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)

    def gaussians(self):
        return self._gaussians()

    @property
    def has_views(self) -> bool:
        return self._views is not None

    def views(self) -> list:
        if self._views is None:
            raise InputError(
                f"{self.path} has no cameras or views ({self.description}); "
                "pass a vd output folder (with cameras.json) or the processed image instead"
            )
        return self._views()


def folder_gaussian_files(folder: Path) -> list[Path]:
    """The Gaussian files a vd output folder holds (scaffold.ply, coarse.ply, fine.ply,
    gaussians_refined.ply), in the order the stages write them; InputError when it holds none."""
    files = [folder / FOLDER_STAGES[stage] for stage in PIPELINE_ORDER if (folder / FOLDER_STAGES[stage]).is_file()]
    if not files:
        names = ", ".join(FOLDER_STAGES[stage] for stage in PIPELINE_ORDER)
        raise InputError(
            f"{folder} is a directory without a vd scene file ({names}); pass a Gaussian file or a vd output folder"
        )
    return files


def _gaussian_file(path: Path, as_splats: bool = False):
    """(loader, kind, memo) for a Gaussian file; the memo holds the Gaussians and metadata once loaded."""
    memo: dict = {}

    def load():
        if "g" not in memo:
            memo["g"], memo["meta"] = read_gaussians(path, require_splats=not as_splats)
        return memo["g"]

    return load, gaussian_file_kind(path), memo


def _coarse_views(folder: Path):
    return lambda: read_views(folder)


def _dataset_views(dataset: Path):
    def load():
        views, _ = load_dataset(dataset)
        for v in views:
            v.name = Path(v.name).stem
        return views

    return load


def resolve_source(source, stage: Optional[str] = None, *, as_splats: bool = False) -> Source:
    if stage is not None and stage not in STAGES:
        raise UsageError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    p = Path(source)
    if not p.exists():
        raise InputError(f"source not found: {p}")
    if p.is_dir():
        return _folder_source(p, stage)
    suffix = p.suffix.lower()
    if suffix in GAUSSIAN_SUFFIXES:
        if stage is not None:
            raise UsageError(f"--stage applies to an output folder or a processed image, not to a single {suffix} file")
        load, kind, _ = _gaussian_file(p, as_splats)
        return Source(p, kind, None, f"a {kind} file", load, None, {"source": str(p.resolve()), "source_kind": kind})
    return _image_source(p, stage)


def _stage_files(folder: Path, stage: str) -> list[Path]:
    """Where a stage's PLY can be: in the folder, or for fine in the `fine/` folder `vd fine` writes by default."""
    name = FOLDER_STAGES[stage]
    return [folder / name, folder / "fine" / name] if stage == "fine" else [folder / name]


def _folder_source(folder: Path, stage: Optional[str]) -> Source:
    cams = folder / "cameras.json"
    prov: dict = {"source": str(folder.resolve()), "source_kind": "folder"}
    if stage is not None:
        found = [f for f in _stage_files(folder, stage) if f.is_file()]
        if not found:
            raise InputError(f"{folder} has no {FOLDER_STAGES[stage]} (the {stage} stage output)")
        candidates: list[tuple[Optional[str], Path]] = [(stage, found[0])]
    else:
        candidates = [(s, f) for s in FOLDER_STAGES for f in _stage_files(folder, s) if f.is_file()]
        if not candidates:
            plys = sorted(folder.glob("*.ply"))
            if len(plys) == 1:
                candidates = [(None, plys[0])]
    if not candidates:
        raise InputError(f"{folder} holds no Gaussians (none of {', '.join(FOLDER_STAGES.values())})")
    st, ply = candidates[0]
    load, kind, _ = _gaussian_file(ply)
    views = None
    if cams.is_file():
        views = _coarse_views(folder)
    elif (folder / "summary.json").is_file():
        try:
            coarse = json.loads((folder / "summary.json").read_text()).get("coarse")
        except (ValueError, AttributeError):
            coarse = None
        if coarse and (Path(coarse) / "cameras.json").is_file():
            views = _coarse_views(Path(coarse))
            prov["views_from"] = str(Path(coarse).resolve())
    elif (folder / "refine_meta.json").is_file():
        try:
            ds = json.loads((folder / "refine_meta.json").read_text())["inputs"]["dataset"]
        except (ValueError, KeyError, TypeError):
            ds = None
        if ds and Path(ds).is_dir():
            views = _dataset_views(Path(ds))
            prov["views_from"] = str(Path(ds))
    prov.update(stage=st, gaussians=str(ply.resolve()))
    return Source(folder, "folder", st, f"{ply.name} in a vd output folder", load, views, prov)


def _image_source(image: Path, stage: Optional[str]) -> Source:
    try:
        cache = Cache.open()
    except Exception as e:  # noqa: BLE001 - any cache problem means "not processed"
        raise InputError(f"cannot look up {image} in the vd cache ({e})") from None
    recs = cache.find(image=image)
    if not recs:
        raise InputError(
            f"{image} is neither a Gaussian file ({', '.join(GAUSSIAN_SUFFIXES)})"
            f" nor a vd output folder, and vd has no cached results for it; run `vd coarse {image}` first"
        )
    order = [stage] if stage else list(IMAGE_STAGES)
    if stage == "refine":
        raise UsageError("--stage refine applies to a refine output folder, not to an image")
    for st in order:
        found = _from_records(image, recs, st)
        if found is not None:
            return found
    have = sorted({r.stage for r in recs})
    raise InputError(
        f"vd has no {stage or 'scaffold, coarse or fine'} result cached for {image} (cached stages: {', '.join(have)})"
    )


def _from_records(image: Path, recs, st: str) -> Optional[Source]:
    prov: dict = {"source": str(image.resolve()), "source_kind": "image", "stage": st}
    if st == "fine":
        finals = [r for r in recs if r.stage == "fine" and "fine.ply" in r]
        if not finals:
            return None
        rec = finals[0]
        prov["cache_key"] = rec.key

        def load():
            return read_ply(rec.path("fine.ply"))[0]

        return Source(image, "image", "fine", "the cached fine stage", load, None, prov)
    scaffolds = [r for r in recs if r.stage == "scaffold" and "data.safetensors" in r]
    if not scaffolds:
        return None
    srec = scaffolds[0]
    chain = [srec]
    if st == "coarse":
        # the coarse views are chained cache steps; follow the newest run after this scaffold
        views = sorted(
            (r for r in recs if r.stage == "coarse-view" and r.created >= srec.created - 1e-6), key=lambda r: r.created
        )
        view_meta = {}
        for r in views:
            try:
                from vd.cache import codecs

                view_meta[r.key] = codecs.decode_json(r.read("meta.json"))
            except Exception:  # noqa: BLE001
                continue
        firsts = [r for r in views if view_meta.get(r.key, {}).get("view") == 1]
        if firsts:
            cur = firsts[-1]
            while cur is not None and not view_meta[cur.key].get("stopped"):
                chain.append(cur)
                k = view_meta[cur.key]["view"]
                nxt = [r for r in views if r.created >= cur.created and view_meta.get(r.key, {}).get("view") == k + 1]
                cur = nxt[0] if nxt else None
        # then the Gaussians that sealed the finished scene's pinholes, the step right after its last view
        seals = sorted(
            (r for r in recs if r.stage == "coarse-seal" and r.created >= chain[-1].created - 1e-6),
            key=lambda r: r.created,
        )
        chain += seals[:1]
    added = sum(r.stage == "coarse-view" for r in chain)
    prov["cache_keys"] = [r.key for r in chain]
    state: dict = {}

    def materialise():
        if "frames" not in state:
            from vd.gaussians import Gaussians

            frames, parts = [], []
            for r in chain:
                f, g, _ = decode_record(r)
                frames += f
                if g is not None and len(g):
                    parts.append(g)
            state["frames"] = frames
            state["g"] = Gaussians.cat(parts)
        return state

    return Source(
        image,
        "image",
        st,
        f"the cached {st} stage ({added} added view(s))",
        lambda: materialise()["g"],
        lambda: materialise()["frames"],
        prov,
    )


__all__ = ["Source", "resolve_source", "STAGES", "FOLDER_STAGES"]
