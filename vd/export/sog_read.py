"""Reading PlayCanvas SOG (`.sog`), the bundle `vd export --format sog` writes through splat-transform.

A `.sog` is a zip of `meta.json` and lossless WebP images, one pixel per splat in row-major order
(facts from splat-transform 2.7's reader, format version 2):

- ``means``: ``means_l`` and ``means_u`` hold the low and high bytes of 16-bit x, y, z, each a lerp
  between ``mins`` and ``maxs`` of ``sign(v) * ln(|v| + 1)``;
- ``quats``: R, G, B are the three smaller components of the unit quaternion (w, x, y, z order),
  ``(byte / 255 * 2 - 1) / sqrt 2``; A is 252 + the index of the largest (made positive);
- ``scales``: R, G, B index a 256-entry codebook of log scales;
- ``sh0``: R, G, B index a codebook of DC coefficients; A is ``sigmoid(opacity) * 255``;
- ``shN`` (optional): ``labels`` hold a 16-bit palette index (R + 256 G); ``centroids`` hold, 64 palette
  entries a row, each entry ``coefficients`` pixels wide, the R, G, B codebook indices of every SH
  coefficient beyond the DC one.

The splats stay in the PLY's frame: for a SOG vd wrote, vd's own world.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from vd.errors import InputError
from vd.export.transform import SplatArrays

SH_COEFFICIENTS = {1: 3, 2: 8, 3: 15}  # bands beyond the DC term -> coefficients per channel


def _rgba(z: zipfile.ZipFile, name: str, count: int, where: str) -> np.ndarray:
    """[count, 4] uint8 pixels of one WebP image in the bundle, in row-major order."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(z.read(name))) as im:
            px = np.asarray(im.convert("RGBA"), np.uint8).reshape(-1, 4)
    except KeyError:
        raise InputError(f"{where} lacks {name}, which its meta.json names") from None
    except OSError as e:
        raise InputError(f"{where}: {name} is not a readable WebP image ({e})") from None
    if len(px) < count:
        raise InputError(f"{where}: {name} holds {len(px)} pixels for {count} splats")
    return px[:count]


def _quats(px: np.ndarray) -> np.ndarray:
    """[N,4] wxyz from SOG's smallest-three bytes."""
    n = len(px)
    largest = px[:, 3].astype(np.int64) - 252
    bad = (largest < 0) | (largest > 3)
    largest = np.where(bad, 0, largest)
    small = (px[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)
    q = np.zeros((n, 4), np.float64)
    slots = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]  # [N,3]
    np.put_along_axis(q, slots, small, axis=1)
    q[np.arange(n), largest] = np.sqrt(np.clip(1.0 - (q**2).sum(1), 0.0, None))
    q[bad] = (1.0, 0.0, 0.0, 0.0)
    return q.astype(np.float32)


def read_sog(path) -> tuple[SplatArrays, dict]:
    """(splats in the file's frame, meta.json) of a bundled `.sog` file; InputError naming what is wrong."""
    p = Path(path)
    where = str(p)
    try:
        z = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{where} is not a SOG file (not a zip archive: {e})") from None
    with z:
        try:
            meta = json.loads(z.read("meta.json"))
        except KeyError:
            raise InputError(f"{where} is not a SOG file (no meta.json inside)") from None
        except ValueError as e:
            raise InputError(f"{where}: its meta.json is not JSON ({e})") from None
        version = meta.get("version")
        if version != 2:
            raise InputError(
                f"{where} is SOG format version {version or 1}; vd reads version 2 (splat-transform 1.x and later); "
                f"convert it with `splat-transform {where} out.ply`"
            )
        try:
            n = int(meta["count"])
            lo = _rgba(z, meta["means"]["files"][0], n, where).astype(np.uint32)
            hi = _rgba(z, meta["means"]["files"][1], n, where).astype(np.uint32)
            mins, maxs = np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"], np.float64)
            t = (lo[:, :3] | (hi[:, :3] << 8)).astype(np.float64) / 65535.0
            span = np.where(maxs - mins == 0, 1.0, maxs - mins)
            v = mins + span * t
            means = (np.sign(v) * np.expm1(np.abs(v))).astype(np.float32)
            quats = _quats(_rgba(z, meta["quats"]["files"][0], n, where))
            scode = np.asarray(meta["scales"]["codebook"], np.float32)
            log_scales = scode[_rgba(z, meta["scales"]["files"][0], n, where)[:, :3]]
            c0 = _rgba(z, meta["sh0"]["files"][0], n, where)
            ccode = np.asarray(meta["sh0"]["codebook"], np.float32)
            alpha = np.clip(c0[:, 3].astype(np.float64) / 255.0, 1e-6, 1 - 1e-6)
            logits = np.log(alpha / (1.0 - alpha)).astype(np.float32)
            bands = int(meta["shN"]["bands"]) if meta.get("shN") else 0
            k = SH_COEFFICIENTS.get(bands, 0)
            sh = np.zeros((n, k + 1, 3), np.float32)
            sh[:, 0] = ccode[c0[:, :3]]
            if k:
                sh[:, 1:] = _sh_rest(z, meta["shN"], n, k, where)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise InputError(f"{where}: its meta.json lacks or mangles a field vd needs ({e!r})") from None
    return SplatArrays(means, log_scales, quats, logits, sh), meta


def _sh_rest(z: zipfile.ZipFile, shn: dict, n: int, k: int, where: str) -> np.ndarray:
    """[N,k,3] SH coefficients beyond the DC term from the palette (centroids) and the labels."""
    from PIL import Image

    code = np.asarray(shn["codebook"], np.float32)
    labels = _rgba(z, shn["files"][1], n, where).astype(np.int64)
    label = labels[:, 0] | (labels[:, 1] << 8)
    try:
        with Image.open(io.BytesIO(z.read(shn["files"][0]))) as im:
            cent = np.asarray(im.convert("RGBA"), np.uint8)
    except (KeyError, OSError) as e:
        raise InputError(f"{where}: its SH palette image is missing or unreadable ({e})") from None
    if cent.shape[1] != 64 * k:
        raise InputError(f"{where}: its SH palette is {cent.shape[1]} pixels wide, expected {64 * k}")
    palette = cent.reshape(-1, k, 4)[:, :, :3]  # [entries, k, rgb]: 64 entries a row, k pixels each
    out = np.zeros((n, k, 3), np.float32)
    ok = label < min(int(shn.get("count", len(palette))), len(palette))
    out[ok] = code[palette[label[ok]]]
    return out


__all__ = ["read_sog"]
