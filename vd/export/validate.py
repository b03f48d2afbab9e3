"""Strict validator for the refine dataset written by `vd export --format colmap`.

`validate_dataset(dir)` returns every problem found (an empty list means valid), each naming
the file at fault: missing files, unreadable or malformed files, shape and size mismatches,
poses that disagree between `images.txt` and `meta.json`, stray images, empty masks, priors
that are not finite inside the mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from vd.colmap import pose_from_colmap, read_cameras_bin, read_cameras_txt, read_images_bin, read_images_txt
from vd.errors import InputError

SPARSE = Path("sparse") / "0"  # where the dataset keeps its COLMAP model


def _load_png(p: Path, problems: list[str], what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.load()
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        problems.append(f"{p}: {what} is not a readable image ({type(e).__name__})")
        return None


def _load_npy(p: Path, problems: list[str], what: str):
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        problems.append(f"{p}: {what} is not a readable .npy array ({str(e).splitlines()[0][:80]})")
        return None


def _load_prior(p: Path, problems: list[str], kind: str, view: str):
    """A view's depth or normal prior, or None with the problem noted (missing or unreadable)."""
    if not p.is_file():
        problems.append(f"{p}: missing ({kind} prior of {view})")
        return None
    return _load_npy(p, problems, f"the {kind} prior")


def validate_dataset(path) -> list[str]:
    """Every problem of the refine dataset at `path`, each naming its file (empty: valid)."""
    root = Path(path)
    if not root.exists():
        return [f"{root}: the dataset folder does not exist"]
    if not root.is_dir():
        return [f"{root}: not a folder"]
    problems: list[str] = []
    meta = _check_meta(root / "meta.json", problems)
    cams, imgs = _check_sparse_text(root / SPARSE, problems)
    _check_sparse_binary(root / SPARSE, cams, imgs, problems)
    if imgs is None:
        return problems
    if len({e[0] for e in imgs}) != len(imgs):
        problems.append(f"{root / SPARSE / 'images.txt'}: duplicate IMAGE_ID values")
    meta_views = {v["name"]: v for v in (meta or {}).get("views", []) if isinstance(v, dict) and "name" in v}
    for entry in imgs:
        _check_view(root, entry, cams, None if meta is None else meta_views, problems)
    _check_strays(root, {e[4] for e in imgs}, None if meta is None else meta_views, problems)
    return problems


def _check_meta(mp: Path, problems: list[str]) -> Optional[dict]:
    if not mp.is_file():
        problems.append(f"{mp}: missing (conventions, provenance and view mapping)")
        return None
    try:
        meta = json.loads(mp.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        problems.append(f"{mp}: not valid JSON ({e})")
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("views"), list):
        problems.append(f"{mp}: has no 'views' list")
        return None
    return meta


def _check_sparse_text(sp: Path, problems: list[str]):
    """(cameras, images) of the text model (None where unreadable), with their problems noted."""
    for name in ("cameras.txt", "images.txt", "points3D.txt"):
        if not (sp / name).is_file():
            problems.append(f"{sp / name}: missing")
    cams = imgs = None
    if (sp / "cameras.txt").is_file():
        try:
            cams = read_cameras_txt((sp / "cameras.txt").read_text(), str(sp / "cameras.txt"))
            _check_cameras(sp / "cameras.txt", cams, problems)
        except InputError as e:
            problems.append(str(e))
    if (sp / "images.txt").is_file():
        try:
            imgs = read_images_txt((sp / "images.txt").read_text(), str(sp / "images.txt"))
            if not imgs:
                problems.append(f"{sp / 'images.txt'}: lists no image")
        except InputError as e:
            problems.append(str(e))
    if (sp / "points3D.txt").is_file():
        _check_points(sp / "points3D.txt", problems)
    return cams, imgs


def _check_cameras(where: Path, cams: dict, problems: list[str]) -> None:
    if not cams:
        problems.append(f"{where}: lists no camera")
    for cid, (model, w, h, prm) in cams.items():
        need = {"PINHOLE": 4, "SIMPLE_PINHOLE": 3}.get(model)
        if need is None:
            problems.append(f"{where}: camera {cid} has model {model}; only PINHOLE (or SIMPLE_PINHOLE) is supported")
        elif len(prm) != need:
            problems.append(f"{where}: camera {cid} ({model}) has {len(prm)} parameters, expected {need}")
        elif not all(np.isfinite(prm)) or min(prm[: need - 2]) <= 0 or w <= 0 or h <= 0:
            problems.append(f"{where}: camera {cid} has a non-positive size or focal length, or a non-finite parameter")


def _check_points(where: Path, problems: list[str]) -> None:
    for ln, line in enumerate(where.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = s.split()
        try:
            ok = len(p) >= 8 and (len(p) - 8) % 2 == 0 and all(np.isfinite([float(x) for x in p[1:8]]))
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{where}, line {ln}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]'")
            return


def _check_sparse_binary(sp: Path, cams, imgs, problems: list[str]) -> None:
    """The binary model is optional; when present it must agree with the text model."""
    if (sp / "cameras.bin").is_file() and cams is not None:
        try:
            bc = read_cameras_bin((sp / "cameras.bin").read_bytes(), str(sp / "cameras.bin"))
            if set(bc) != set(cams) or any(
                bc[k][:3] != cams[k][:3] or not np.allclose(bc[k][3], cams[k][3], rtol=1e-9) for k in bc
            ):
                problems.append(f"{sp / 'cameras.bin'}: disagrees with cameras.txt")
        except InputError as e:
            problems.append(str(e))
    if (sp / "images.bin").is_file() and imgs is not None:
        try:
            bi = {e[0]: e for e in read_images_bin((sp / "images.bin").read_bytes(), str(sp / "images.bin"))}
            ti = {e[0]: e for e in imgs}
            if set(bi) != set(ti) or any(
                bi[k][4] != ti[k][4]
                or bi[k][3] != ti[k][3]
                or not np.allclose(bi[k][1], ti[k][1], atol=1e-9)
                or not np.allclose(bi[k][2], ti[k][2], atol=1e-9)
                for k in bi
            ):
                problems.append(f"{sp / 'images.bin'}: disagrees with images.txt")
        except InputError as e:
            problems.append(str(e))
    for name in ("cameras", "images", "points3D"):
        if (sp / f"{name}.bin").is_file() and not (sp / f"{name}.txt").is_file():
            problems.append(f"{sp / (name + '.bin')}: present without {name}.txt")


def _check_view(root: Path, entry, cams, meta_views: Optional[dict], problems: list[str]) -> None:
    """One image of images.txt: its pose, camera, image, mask, priors and meta.json entry."""
    image_id, q, t, cam_id, name = entry
    sp, stem = root / SPARSE, Path(name).stem
    where = f"image {image_id} ({name})"
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or abs(np.linalg.norm(q) - 1) > 1e-3:
        problems.append(f"{sp / 'images.txt'}: {where} has a non-finite pose or a quaternion that is not unit length")
        return
    size = None  # (H, W) of its camera
    if cams is not None:
        if cam_id not in cams:
            problems.append(
                f"{sp / 'images.txt'}: {where} refers to camera {cam_id}, which cameras.txt does not define"
            )
        else:
            size = (cams[cam_id][2], cams[cam_id][1])
    _check_image(root / "images" / name, size, cam_id, problems)
    mask = _check_mask(root / "masks" / f"{stem}.png", size, cam_id, name, problems)
    _check_depth(root / "priors" / "depth" / f"{stem}.npy", size, cam_id, mask, name, problems)
    _check_normal(root / "priors" / "normal" / f"{stem}.npy", size, cam_id, name, problems)
    if meta_views is not None:
        _check_meta_view(root / "meta.json", meta_views.get(name), entry, cams, problems)


def _size_note(cam_id, size) -> str:
    return f"camera {cam_id} ({size[1]}x{size[0]})"


def _check_image(ip: Path, size, cam_id, problems: list[str]) -> None:
    if not ip.is_file():
        problems.append(f"{ip}: missing (listed in images.txt)")
        return
    im = _load_png(ip, problems, "the image")
    if im is not None and size is not None and im.shape[:2] != size:
        problems.append(f"{ip}: size {im.shape[1]}x{im.shape[0]} differs from {_size_note(cam_id, size)}")


def _check_mask(mk: Path, size, cam_id, name: str, problems: list[str]):
    """The mask as bool [H, W], or None when missing or malformed (noted)."""
    if not mk.is_file():
        problems.append(f"{mk}: missing (mask of {name})")
        return None
    m = _load_png(mk, problems, "the mask")
    if m is None:
        return None
    if m.ndim != 2:
        problems.append(f"{mk}: mask must be single-channel (got shape {m.shape})")
        return None
    if size is not None and m.shape != size:
        problems.append(f"{mk}: size {m.shape[1]}x{m.shape[0]} differs from {_size_note(cam_id, size)}")
        return None
    mask = m > 127
    if not mask.any():
        problems.append(f"{mk}: the mask has no valid pixel")
    return mask


def _check_depth(dp: Path, size, cam_id, mask, name: str, problems: list[str]) -> None:
    d = _load_prior(dp, problems, "depth", name)
    if d is None:
        return
    if d.ndim != 2 or d.dtype.kind != "f":
        problems.append(f"{dp}: depth prior must be a float [H,W] array (got {d.dtype} {d.shape})")
    elif size is not None and d.shape != size:
        problems.append(f"{dp}: shape {d.shape} differs from camera {cam_id} (H,W)={size}")
    elif mask is not None and mask.shape == d.shape:
        bad = mask & ~(np.isfinite(d) & (d > 0))
        if bad.any():
            problems.append(f"{dp}: {int(bad.sum())} masked pixel(s) have a non-finite or non-positive depth")


def _check_normal(npth: Path, size, cam_id, name: str, problems: list[str]) -> None:
    n = _load_prior(npth, problems, "normal", name)
    if n is None:
        return
    if n.ndim != 3 or n.shape[2] != 3 or n.dtype.kind != "f":
        problems.append(f"{npth}: normal prior must be a float [H,W,3] array (got {n.dtype} {n.shape})")
    elif size is not None and n.shape[:2] != size:
        problems.append(f"{npth}: shape {n.shape[:2]} differs from camera {cam_id} (H,W)={size}")
    elif not np.isfinite(n).all():
        problems.append(f"{npth}: contains non-finite values")
    else:
        norms = np.linalg.norm(n, axis=-1)
        if not np.all((np.abs(norms - 1) < 1e-3) | (norms < 1e-6)):
            problems.append(f"{npth}: normals must be unit length (or 0 where undefined)")


def _check_meta_view(mp: Path, mv: Optional[dict], entry, cams, problems: list[str]) -> None:
    """meta.json's entry of an image agrees with images.txt and cameras.txt."""
    _, q, t, cam_id, name = entry
    if mv is None:
        problems.append(f"{mp}: has no view entry for {name} (listed in images.txt)")
        return
    try:
        P = np.asarray(mv["world_from_camera"], float)
        if P.shape != (4, 4) or not np.allclose(P, pose_from_colmap(q, t), atol=1e-4):
            problems.append(f"{mp}: world_from_camera of {name} disagrees with its pose in images.txt")
        K = np.asarray(mv["K"], float)
        if cams is not None and cam_id in cams and cams[cam_id][0] == "PINHOLE":
            fx, fy, cx, cy = cams[cam_id][3]
            if K.shape != (3, 3) or not np.allclose(
                [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], [fx, fy, cx, cy], rtol=1e-6, atol=1e-6
            ):
                problems.append(f"{mp}: K of {name} disagrees with camera {cam_id} in cameras.txt")
    except (KeyError, TypeError, ValueError):
        problems.append(f"{mp}: the view entry of {name} lacks a valid K or world_from_camera")


def _check_strays(root: Path, listed: set, meta_views: Optional[dict], problems: list[str]) -> None:
    """Images and meta.json views that images.txt does not list."""
    if (root / "images").is_dir():
        for f in sorted((root / "images").iterdir()):
            if f.is_file() and f.name not in listed:
                problems.append(f"{f}: not listed in images.txt")
    else:
        problems.append(f"{root / 'images'}: missing folder")
    for name in meta_views or {}:
        if name not in listed:
            problems.append(f"{root / 'meta.json'}: view {name} is not listed in images.txt")


class DatasetInvalid(InputError):
    """A refine dataset failed validation; `problems` lists every problem found."""

    def __init__(self, path, problems: list[str]):
        more = (
            f" (and {len(problems) - 1} more problem{'s' if len(problems) != 2 else ''})" if len(problems) > 1 else ""
        )
        super().__init__(f"{path} is not a valid refine dataset: {problems[0]}{more}")
        self.path, self.problems = path, problems


def check_dataset(path) -> None:
    """Raise DatasetInvalid (every problem attached) unless `path` is a valid refine dataset."""
    problems = validate_dataset(path)
    if problems:
        raise DatasetInvalid(path, problems)


__all__ = ["validate_dataset", "check_dataset", "DatasetInvalid", "SPARSE"]
