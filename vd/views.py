"""One view of a scene, the record every stage shares, and its two encodings.

A `View` is a posed RGB-D image with three explicit masks:

- ``supervise``: the pixels that supervise optimisation (the input: all of them; the outpainted
  ring and added views: their generated pixels);
- ``spawn``: the pixels that became Gaussians (valid depth; an added view: its uncovered pixels
  that hide nothing an earlier view sees);
- ``hole``: the generated pixels (outpainted ring, inpainted holes; empty for the input).

The scaffold and coarse stages make views, the cache stores them (`encode_views` /
`decode_views`), the coarse output folder holds them (`write_views` / `read_views`), and `vd fine`,
`vd export` (COLMAP masks are the supervision masks), `vd refine` and the viewer read them back.

Output folder layout (format ``vd-views`` version 2)::

    cameras.json
    views/<NNN>/rgb.png  depth.npy  supervise_mask.png  spawn_mask.png  hole_mask.png

``cameras.json``::

    {"format": "vd-views", "version": 2,
     "convention": "OpenCV camera (x right, y down, z forward); world = input camera",
     "views": [{"name", "kind": "input"|"ring"|"view", "width", "height", "K": 3x3,
                "world_from_camera": 4x4, "rgb", "depth", "supervise_mask", "spawn_mask",
                "hole_mask", "dense_index": int|null}, ...]}

Folders written before version 2 have no supervision mask (and call the spawn mask ``mask``);
`read_views` restores it by the rule those runs trained with: every pixel of the input frame,
the generated pixels of the ring and of every added view.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vd.cache import codecs
from vd.cameras import CONVENTION, invert_pose
from vd.errors import InputError
from vd.fsio import atomic_write_bytes

VIEWS_FORMAT = "vd-views"
VIEWS_VERSION = 2
KINDS = ("input", "ring", "view")
ANCHOR_KINDS = ("input", "ring")  # the photo and its outpainted ring: what the other views are made from
MASKS = ("supervise", "spawn", "hole")
_VIEW_FILES = {"rgb.png", "depth.npy"} | {f"{m}_mask.png" for m in MASKS}


@dataclass
class View:
    """A posed RGB-D image of the scene (numpy; OpenCV camera, world = the input camera)."""

    name: str
    kind: str  # input | ring | view (a COLMAP dataset's views are "view" unless it says otherwise)
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] z-depth, 0 where unknown
    K: np.ndarray  # [3, 3] intrinsics, pixel (u, v) centred at (u + 0.5, v + 0.5)
    world_from_camera: np.ndarray  # float64 [4, 4]
    supervise: np.ndarray  # bool [H, W]
    spawn: Optional[np.ndarray] = None  # bool [H, W]; None where not recorded (COLMAP datasets)
    hole: Optional[np.ndarray] = None  # bool [H, W]; None where not recorded (COLMAP datasets)
    dense_index: Optional[int] = None  # the coarse trajectory pose an added view came from
    normal: Optional[np.ndarray] = None  # float32 [H, W, 3] normal prior (COLMAP datasets)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    def camera_from_world(self) -> np.ndarray:
        return invert_pose(self.world_from_camera)

    def train_view(self, device="cpu", *, depth: bool = False):
        """The tensors `vd.train.optimise` fits to: this view's image over its supervised pixels
        and, with `depth`, its depth where it spawned Gaussians (the depth they were placed at)."""
        import torch

        from vd.train import TrainView

        return TrainView(
            rgb=torch.from_numpy(self.rgb.astype(np.float32) / 255.0).to(device),
            mask=torch.from_numpy(np.ascontiguousarray(self.supervise, dtype=bool)).to(device),
            K=torch.as_tensor(np.asarray(self.K, dtype=np.float32), device=device),
            camera_from_world=torch.as_tensor(self.camera_from_world(), dtype=torch.float32, device=device),
            depth=torch.from_numpy(np.ascontiguousarray(self.depth, dtype=np.float32)).to(device) if depth else None,
            depth_mask=(
                torch.from_numpy(np.ascontiguousarray(self.spawn, dtype=bool)).to(device)
                if depth and self.spawn is not None
                else None
            ),
        )


def pixel_footprint(views) -> float:
    """The size of a pixel at the views' median depth (median depth / median focal length) over their supervised
    pixels: the unit the position learning rates of `vd fine` and `vd refine` count in. In the scene's own units
    Adam's first steps, about a learning rate each, moved every Gaussian of a 160 px photo's scene (focal 467 px)
    by a quarter of a pixel and cost its input view 8 dB in one step; the same rate is a twentieth of a pixel at
    128 px and 70 degrees."""
    supervised = [v.depth[v.supervise & (v.depth > 0)] for v in views]
    depths = np.concatenate(supervised) if supervised else np.ones(1)
    depth = float(np.median(depths)) if depths.size else 1.0
    focal = float(np.median([0.5 * (v.K[0][0] + v.K[1][1]) for v in views])) if views else 1.0
    return depth / max(focal, 1e-9)


def find_input(views: list[View]) -> View:
    """The input view (the first view when none is marked as the input)."""
    return next((v for v in views if v.kind == "input"), views[0])


# ---------------------------------------------------------------------------------------------
# the cache encoding: arrays for safetensors + a JSON list


def encode_views(views: list[View], prefix: str = "") -> tuple[dict[str, np.ndarray], list[dict]]:
    """(arrays, meta) of `views` for a cache record; `decode_views` inverts it exactly."""
    tensors, meta = {}, []
    for i, v in enumerate(views):
        p = f"{prefix}{i}."
        tensors[p + "rgb"] = np.ascontiguousarray(v.rgb, dtype=np.uint8)
        tensors[p + "depth"] = np.ascontiguousarray(v.depth, dtype=np.float32)
        tensors[p + "K"] = np.ascontiguousarray(v.K, dtype=np.float32)
        tensors[p + "pose"] = np.ascontiguousarray(v.world_from_camera, dtype=np.float64)
        for m in MASKS:
            tensors[p + m] = np.ascontiguousarray(getattr(v, m), dtype=np.uint8)
        meta.append({"name": v.name, "kind": v.kind, "dense_index": v.dense_index})
    return tensors, meta


def decode_views(tensors: dict[str, np.ndarray], meta: list[dict], prefix: str = "") -> list[View]:
    out = []
    for i, m in enumerate(meta):
        p = f"{prefix}{i}."
        out.append(
            View(
                name=m["name"],
                kind=m["kind"],
                rgb=np.asarray(tensors[p + "rgb"], dtype=np.uint8),
                depth=np.asarray(tensors[p + "depth"], dtype=np.float32),
                K=np.asarray(tensors[p + "K"], dtype=np.float32),
                world_from_camera=np.asarray(tensors[p + "pose"], dtype=np.float64),
                supervise=tensors[p + "supervise"].astype(bool),
                spawn=tensors[p + "spawn"].astype(bool),
                hole=tensors[p + "hole"].astype(bool),
                dense_index=m.get("dense_index"),
            )
        )
    return out


def encode_record(views: list[View], gaussians, meta: dict) -> dict[str, bytes]:
    """A cache record of views, their Gaussians (or None) and JSON meta: the scaffold's and each
    coarse view's; `decode_record` reads it back."""
    tensors, vmeta = encode_views(views, "f")
    if gaussians is not None:
        tensors.update({"g." + k: v.detach().cpu().contiguous().numpy() for k, v in gaussians.tensors().items()})
    return {
        "data.safetensors": codecs.encode_tensors(tensors),
        "meta.json": codecs.encode_json({**meta, "frames": vmeta}),
    }


def decode_record(record, device="cpu"):
    """(views, Gaussians or None, meta) of a record written by `encode_record`."""
    from vd.gaussians import Gaussians  # torch

    meta = codecs.decode_json(record.read("meta.json"))
    tensors = codecs.decode_tensors(record.read("data.safetensors"))
    views = decode_views(tensors, meta.get("frames", []), "f")
    g = None
    if "g.means" in tensors:
        g = Gaussians.from_tensors({k[2:]: v for k, v in tensors.items() if k.startswith("g.")}, device=device)
    return views, g, meta


# ---------------------------------------------------------------------------------------------
# the output folder


def _mask_png(mask: np.ndarray) -> bytes:
    return codecs.encode_png(np.asarray(mask, dtype=np.uint8) * 255)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def write_views(folder, views: list[View]) -> Path:
    """Write `views` into `folder` (views/<NNN>/ and cameras.json, each file atomically); views/
    folders of an earlier run with more views are removed. Returns the cameras.json path."""
    folder = Path(folder)
    entries = []
    for i, v in enumerate(views):
        rel = f"views/{i:03d}"
        d = folder / rel
        atomic_write_bytes(d / "rgb.png", codecs.encode_png(v.rgb))
        atomic_write_bytes(d / "depth.npy", _npy(v.depth))
        for m in MASKS:
            atomic_write_bytes(d / f"{m}_mask.png", _mask_png(getattr(v, m)))
        entries.append(
            {
                "name": v.name,
                "kind": v.kind,
                "width": v.width,
                "height": v.height,
                "K": np.asarray(v.K, dtype=np.float64).tolist(),
                "world_from_camera": np.asarray(v.world_from_camera, dtype=np.float64).tolist(),
                "rgb": f"{rel}/rgb.png",
                "depth": f"{rel}/depth.npy",
                **{f"{m}_mask": f"{rel}/{m}_mask.png" for m in MASKS},
                "dense_index": v.dense_index,
            }
        )
    remove_stale_views(folder / "views", len(views))
    doc = {"format": VIEWS_FORMAT, "version": VIEWS_VERSION, "convention": CONVENTION, "views": entries}
    return atomic_write_bytes(folder / "cameras.json", (json.dumps(doc, indent=1) + "\n").encode())


def remove_stale_views(views_dir: Path, n: int) -> None:
    """Remove views/<NNN> folders with NNN >= n that hold only vd's own files."""
    if not views_dir.is_dir():
        return
    for d in views_dir.iterdir():
        if d.is_dir() and d.name.isdigit() and int(d.name) >= n:
            files = list(d.iterdir())
            if {f.name for f in files} <= _VIEW_FILES | {"mask.png"}:
                for f in files:
                    f.unlink()
                d.rmdir()


def read_views(folder) -> list[View]:
    """The views of a folder written by `write_views` (or by vd before version 2); InputError
    naming the problem when the folder is not one or is damaged."""
    folder = Path(folder)
    cj = folder / "cameras.json"
    if not cj.is_file():
        raise InputError(f"not a coarse output folder (no cameras.json): {folder}")
    try:
        doc = json.loads(cj.read_text())
        entries = doc["views"]
        version = int(doc.get("version", 1))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"cameras.json is malformed: {cj}") from None
    if version > VIEWS_VERSION:
        raise InputError(
            f"{cj} is version {version} of the views format; this vd reads up to {VIEWS_VERSION}: upgrade vd"
        )
    if not isinstance(entries, list):
        raise InputError(f"cameras.json is malformed: {cj}")
    views = []
    for i, e in enumerate(entries):
        try:
            views.append(_read_view(folder, e, i, version))
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise InputError(f"view {i} of {cj} cannot be read ({err})") from None
    for i, v in enumerate(views):
        shape = v.rgb.shape[:2]
        masks = [getattr(v, m) for m in MASKS]
        if (
            np.shape(v.K) != (3, 3)
            or np.shape(v.world_from_camera) != (4, 4)
            or v.depth.shape != shape
            or any(m.shape != shape for m in masks)
        ):
            raise InputError(f"view {i} of {cj} has inconsistent shapes")
    return views


def _read_view(folder: Path, e: dict, i: int, version: int) -> View:
    def mask(rel: str) -> np.ndarray:
        m = codecs.decode_png((folder / rel).read_bytes())
        return (m[..., 0] if m.ndim == 3 else m) > 127

    rgb = codecs.decode_png((folder / e["rgb"]).read_bytes())
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, -1)
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    kind = e.get("kind", "view")
    if version >= 2:
        supervise, spawn, hole = (mask(e[f"{m}_mask"]) for m in MASKS)
    else:
        spawn = mask(e["mask"])
        hole = (
            mask(e["hole_mask"]) if e.get("hole_mask") and (folder / e["hole_mask"]).is_file() else np.zeros_like(spawn)
        )
        supervise = np.ones_like(spawn) if kind == "input" else hole.copy()
    return View(
        name=e.get("name", f"view_{i}"),
        kind=kind,
        rgb=rgb,
        depth=np.load(folder / e["depth"], allow_pickle=False).astype(np.float32),
        K=np.asarray(e["K"], dtype=np.float64),
        world_from_camera=np.asarray(e["world_from_camera"], dtype=np.float64),
        supervise=supervise,
        spawn=spawn,
        hole=hole,
        dense_index=e.get("dense_index"),
    )


__all__ = [
    "ANCHOR_KINDS",
    "View",
    "KINDS",
    "MASKS",
    "VIEWS_FORMAT",
    "VIEWS_VERSION",
    "find_input",
    "pixel_footprint",
    "remove_stale_views",
    "encode_views",
    "decode_views",
    "encode_record",
    "decode_record",
    "write_views",
    "read_views",
]
