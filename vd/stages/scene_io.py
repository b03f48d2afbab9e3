"""Frames of the coarse scene, their cache encoding, and the coarse output folder.

Output folder (the "Coarse outputs" contract, read by export/refine, fine and the viewer)::

    coarse.ply  scaffold.ply  cameras.json  summary.json
    views/<NNN>/rgb.png  depth.npy  hole_mask.png  spawn_mask.png

`views/000` is the input frame, `views/001` the outpainted ring (absent with --no-outpaint),
then one folder per added view. cameras.json::

    {"convention": "OpenCV camera (x right, y down, z forward); world = input camera",
     "views": [{"name", "kind": "input"|"ring"|"view", "width", "height", "K": 3x3,
                "world_from_camera": 4x4, "rgb": "views/000/rgb.png", "depth": "views/000/depth.npy",
                "mask": "views/000/spawn_mask.png", "hole_mask": "views/000/hole_mask.png",
                "dense_index": int|null}, ...]}

`mask` is the spawn mask (pixels that became Gaussians); `hole_mask` the generated pixels
(outpainted ring, inpainted holes; empty for the input), which are also the supervised pixels
of ring and view frames. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from vd.cameras import CONVENTION
from vd.errors import InputError
from vd.fsio import atomic_write_bytes, output_transaction


@dataclass
class Frame:
    """One RGB-D frame of the scene (numpy)."""

    name: str
    kind: str  # input | ring | view
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] z-depth
    K: np.ndarray  # float32 [3, 3]
    world_from_camera: np.ndarray  # float64 [4, 4]
    supervise: np.ndarray  # bool [H, W]: pixels the frame supervises in training
    spawn: np.ndarray  # bool [H, W]: pixels that became Gaussians
    hole: np.ndarray  # bool [H, W]: generated pixels (ring / inpainted holes)
    dense_index: Optional[int] = None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    def camera_from_world(self) -> np.ndarray:
        from vd.cameras import invert_pose

        return invert_pose(self.world_from_camera)

    def train_view(self, device="cpu"):
        import torch

        from vd.train import TrainView

        return TrainView(
            rgb=torch.from_numpy(self.rgb.astype(np.float32) / 255.0).to(device),
            mask=torch.from_numpy(self.supervise.copy()).to(device),
            K=torch.as_tensor(self.K, dtype=torch.float32, device=device),
            camera_from_world=torch.as_tensor(self.camera_from_world(), dtype=torch.float32, device=device),
        )


def encode_frames(frames: list[Frame], prefix: str = "") -> tuple[dict[str, np.ndarray], list[dict]]:
    tensors, meta = {}, []
    for i, f in enumerate(frames):
        p = f"{prefix}{i}."
        tensors[p + "rgb"] = np.ascontiguousarray(f.rgb, dtype=np.uint8)
        tensors[p + "depth"] = np.ascontiguousarray(f.depth, dtype=np.float32)
        tensors[p + "K"] = np.ascontiguousarray(f.K, dtype=np.float32)
        tensors[p + "pose"] = np.ascontiguousarray(f.world_from_camera, dtype=np.float64)
        for m in ("supervise", "spawn", "hole"):
            tensors[p + m] = np.ascontiguousarray(getattr(f, m), dtype=np.uint8)
        meta.append({"name": f.name, "kind": f.kind, "dense_index": f.dense_index})
    return tensors, meta


def decode_frames(tensors: dict[str, np.ndarray], meta: list[dict], prefix: str = "") -> list[Frame]:
    out = []
    for i, m in enumerate(meta):
        p = f"{prefix}{i}."
        out.append(Frame(
            name=m["name"], kind=m["kind"], rgb=np.asarray(tensors[p + "rgb"], dtype=np.uint8),
            depth=np.asarray(tensors[p + "depth"], dtype=np.float32), K=np.asarray(tensors[p + "K"], dtype=np.float32),
            world_from_camera=np.asarray(tensors[p + "pose"], dtype=np.float64),
            supervise=tensors[p + "supervise"].astype(bool), spawn=tensors[p + "spawn"].astype(bool),
            hole=tensors[p + "hole"].astype(bool), dense_index=m.get("dense_index"),
        ))
    return out


def gaussians_to_arrays(g, prefix: str = "g.") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().contiguous().numpy() for k, v in g.tensors().items()}


def gaussians_from_arrays(tensors: dict, prefix: str = "g.", device="cpu"):
    from vd.gaussians import Gaussians

    return Gaussians(**{k: tensors[prefix + k] for k in ("means", "log_scales", "quats", "opacity_logits", "sh")}).to(device)


# ---------------------------------------------------------------------------------------------
# output folder


def _png(a: np.ndarray) -> bytes:
    from vd.cache import codecs

    return codecs.encode_png(a)


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def write_ply_atomic(path: Path, g, comments: dict | None = None):
    from vd.ply import write_ply  # write_ply is itself atomic

    return write_ply(path, g, comments=comments)


def write_outputs(out: Path, frames: list[Frame], scaffold_g, coarse_g, summary: dict, *, comments: dict | None = None) -> list[Path]:
    """Write the output folder; returns the written paths (PLYs, cameras.json, summary.json)."""
    with output_transaction():  # all the files, or none under their final names
        return _write_outputs(out, frames, scaffold_g, coarse_g, summary, comments=comments)


def _write_outputs(out: Path, frames: list[Frame], scaffold_g, coarse_g, summary: dict, *, comments: dict | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    views = []
    for i, f in enumerate(frames):
        d = out / "views" / f"{i:03d}"
        rel = f"views/{i:03d}"
        atomic_write_bytes(d / "rgb.png", _png(f.rgb))
        atomic_write_bytes(d / "depth.npy", _npy(f.depth))
        atomic_write_bytes(d / "hole_mask.png", _png(f.hole.astype(np.uint8) * 255))
        atomic_write_bytes(d / "spawn_mask.png", _png(f.spawn.astype(np.uint8) * 255))
        views.append({
            "name": f.name, "kind": f.kind, "width": f.width, "height": f.height,
            "K": np.asarray(f.K, dtype=np.float64).tolist(),
            "world_from_camera": np.asarray(f.world_from_camera, dtype=np.float64).tolist(),
            "rgb": f"{rel}/rgb.png", "depth": f"{rel}/depth.npy", "mask": f"{rel}/spawn_mask.png",
            "hole_mask": f"{rel}/hole_mask.png", "dense_index": f.dense_index,
        })
    scaffold_path, coarse_path = out / "scaffold.ply", out / "coarse.ply"
    rep_s = write_ply_atomic(scaffold_path, scaffold_g, comments)
    rep_c = write_ply_atomic(coarse_path, coarse_g, comments)
    summary = dict(summary)
    summary["ply"] = {"scaffold": _report(rep_s), "coarse": _report(rep_c)}
    _remove_stale_views(out / "views", len(frames))
    cams = {"convention": CONVENTION, "views": views}
    atomic_write_bytes(out / "cameras.json", (json.dumps(cams, indent=1) + "\n").encode())
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=1, default=_default) + "\n").encode())
    return [coarse_path, scaffold_path, out / "cameras.json", out / "summary.json"]


_VIEW_FILES = {"rgb.png", "depth.npy", "hole_mask.png", "spawn_mask.png"}


def _remove_stale_views(views_dir: Path, n: int) -> None:
    """Remove views/<NNN> folders of an earlier run with more views (only vd's own files)."""
    if not views_dir.is_dir():
        return
    for d in views_dir.iterdir():
        if d.is_dir() and d.name.isdigit() and int(d.name) >= n:
            files = {f.name for f in d.iterdir()}
            if files <= _VIEW_FILES:
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


def _report(rep) -> dict:
    if rep is None:
        return {}
    return {k: int(getattr(rep, k)) for k in ("written", "dropped_nonfinite", "dropped_transparent") if hasattr(rep, k)}


def _default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------------------------------------
# loader


@dataclass
class View:
    name: str
    kind: str
    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W]
    K: np.ndarray  # float64 [3, 3]
    world_from_camera: np.ndarray  # float64 [4, 4]
    mask: np.ndarray  # bool [H, W] spawn mask
    hole_mask: Optional[np.ndarray] = None  # bool [H, W] generated pixels
    dense_index: Optional[int] = None
    extra: dict = field(default_factory=dict)


def load_views(folder) -> list[View]:
    """The frames of a coarse output folder (see the module docstring). InputError when broken."""
    from vd.cache import codecs

    folder = Path(folder)
    cj = folder / "cameras.json"
    if not cj.is_file():
        raise InputError(f"not a coarse output folder (no cameras.json): {folder}")
    try:
        cams = json.loads(cj.read_text())
        entries = cams["views"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"cameras.json is malformed: {cj}") from None
    views = []
    for i, v in enumerate(entries):
        try:
            rgb = codecs.decode_png((folder / v["rgb"]).read_bytes())
            depth = np.load(folder / v["depth"], allow_pickle=False).astype(np.float32)
            mask = codecs.decode_png((folder / v["mask"]).read_bytes()) > 127
            hole = None
            if v.get("hole_mask") and (folder / v["hole_mask"]).is_file():
                hole = codecs.decode_png((folder / v["hole_mask"]).read_bytes()) > 127
            K = np.asarray(v["K"], dtype=np.float64)
            pose = np.asarray(v["world_from_camera"], dtype=np.float64)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise InputError(f"view {i} of {cj} cannot be read ({e})") from None
        if rgb.ndim == 2:
            rgb = np.stack([rgb] * 3, -1)
        if K.shape != (3, 3) or pose.shape != (4, 4) or depth.shape != rgb.shape[:2] or mask.shape != rgb.shape[:2]:
            raise InputError(f"view {i} of {cj} has inconsistent shapes")
        views.append(View(name=v.get("name", f"view_{i}"), kind=v.get("kind", "view"), rgb=rgb, depth=depth, K=K,
                          world_from_camera=pose, mask=mask, hole_mask=hole, dense_index=v.get("dense_index")))
    return views
