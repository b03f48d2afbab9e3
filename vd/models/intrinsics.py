"""Camera intrinsics for depth backends: from a focal length, a field of view, or an intrinsics JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from vd.errors import InputError, check_input_file
from vd.image import plan_to
from vd.params import check_intrinsics


def K_from_focal(width: int, height: int, focal: float) -> np.ndarray:
    """Pinhole K with a centred principal point, c = (W/2, H/2): pixel (u, v) is centred at
    (u + 0.5, v + 0.5), the convention of the renderer and of `vd.lift`."""
    return np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]], dtype=np.float32)


def focal_from_fov(width: int, fov_deg: float) -> float:
    check_intrinsics(fov=fov_deg)
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def read_intrinsics_json(path) -> dict:
    """Parse an intrinsics JSON -> {"K": 3x3 | None, "fov_x_deg": float | None, "width", "height"}."""
    p = check_input_file(path, "intrinsics file")
    try:
        obj = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"intrinsics file is not valid JSON ({e}): {p}") from None
    if not isinstance(obj, dict):
        raise InputError(f"intrinsics file must hold a JSON object: {p}")
    out = {"K": None, "fov_x_deg": None, "width": obj.get("width"), "height": obj.get("height")}
    try:
        if "K" in obj:
            K = np.asarray(obj["K"], dtype=np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError("K must be a 3x3 matrix with positive focal lengths")
            out["K"] = K
        elif "fx" in obj:
            fx = float(obj["fx"])
            fy = float(obj.get("fy", fx))
            if fx <= 0 or fy <= 0:
                raise ValueError("fx and fy must be positive")
            cx, cy = obj.get("cx"), obj.get("cy")
            out["K"] = np.array(
                [[fx, 0, np.nan if cx is None else float(cx)], [0, fy, np.nan if cy is None else float(cy)], [0, 0, 1]]
            )
        elif "focal" in obj:
            f = float(obj["focal"])
            if f <= 0:
                raise ValueError("focal must be positive")
            out["K"] = np.array([[f, 0, np.nan], [0, f, np.nan], [0, 0, 1]])
        elif "fov_x_deg" in obj or "fov" in obj:
            out["fov_x_deg"] = float(obj["fov_x_deg"] if "fov_x_deg" in obj else obj["fov"])
        else:
            raise ValueError("expected one of the keys K, fx/fy/cx/cy, focal or fov_x_deg")
        for k in ("width", "height"):
            value = out[k]
            if value is not None:
                out[k] = int(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"intrinsics file {p}: {e}") from None
    return out


def find_intrinsics(image_path) -> Optional[Path]:
    if image_path is None:
        return None
    p = Path(image_path)
    for c in (
        p.parent / f"{p.stem}.intrinsics.json",
        p.parent / f"{p.name}.intrinsics.json",
        p.parent / "intrinsics.json",
    ):
        if c.is_file():
            return c
    return None


def original_image_size(image_path) -> Optional[tuple[int, int]]:
    """(W, H) of the image after EXIF orientation, reading only its header."""
    if image_path is None:
        return None
    try:
        from PIL import Image

        with Image.open(image_path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112, 1)
            except Exception:
                orient = 1
        return (h, w) if orient in (5, 6, 7, 8) else (w, h)
    except Exception:
        return None


def resolve_K(W, H, iplan, *, K_hint=None, focal=None, fov=None, intr=None) -> Optional[np.ndarray]:
    """K in working-image pixels from, in order: K_hint (working pixels), focal (original-image
    pixels), fov (horizontal degrees), a parsed intrinsics JSON (its own width/height, default the
    original image). `iplan` maps the original image to the working image. None when nothing is given."""
    if K_hint is not None:
        return np.asarray(K_hint, dtype=np.float32).reshape(3, 3)
    ow, oh = iplan.original_size
    if focal is not None:
        return iplan.scale_K(K_from_focal(ow, oh, float(focal)))
    if fov is not None:
        return K_from_focal(W, H, focal_from_fov(W, float(fov)))
    if intr is not None:
        if intr["fov_x_deg"] is not None:
            return K_from_focal(W, H, focal_from_fov(W, intr["fov_x_deg"]))
        jw, jh = intr["width"] or ow, intr["height"] or oh
        K = intr["K"].copy()
        if np.isnan(K[0, 2]):  # pixel centres at +0.5, as everywhere in vd: the image centre is W/2
            K[0, 2] = jw / 2.0
        if np.isnan(K[1, 2]):
            K[1, 2] = jh / 2.0
        kplan = iplan if (jw, jh) == (ow, oh) else plan_to(jw, jh, W, H)
        return kplan.scale_K(K)
    return None


@dataclass(frozen=True)
class CentredView:
    """The camera with square pixels, focal fx and principal point (W/2, H/2) that sees the same rays
    as K = (fx, fy, cx, cy) on a W x H image: x' = x - cx + W/2, y' = (y - cy)·fx/fy + H/2 (pixel
    coordinates, centres at +0.5). Depth models that only take a horizontal FoV run on the image
    resampled to it; z along a ray is the same in both, so their depth maps back pixel by pixel."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / (2 * self.fx)))

    @property
    def identity(self) -> bool:
        return (
            abs(self.cx - self.width / 2) < 1e-3
            and abs(self.cy - self.height / 2) < 1e-3
            and abs(self.fy - self.fx) <= 1e-6 * self.fx
        )

    def to_centred(self, image: np.ndarray) -> np.ndarray:
        """The image as the centred camera sees it (bilinear; beyond the borders: the edge pixels)."""
        import cv2

        W, H = self.width, self.height
        xs = (np.arange(W, dtype=np.float32) + 0.5 - W / 2 + self.cx) - 0.5
        ys = ((np.arange(H, dtype=np.float32) + 0.5 - H / 2) * (self.fy / self.fx) + self.cy) - 0.5
        mx, my = np.meshgrid(xs, ys)
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def from_centred(self, values: np.ndarray) -> np.ndarray:
        """Per-pixel values of the centred camera ([H, W, ...]) back on the given camera's pixels
        (nearest; 0 / False where the centred image does not reach)."""
        W, H = self.width, self.height
        xs = np.floor(np.arange(W) + 0.5 - self.cx + W / 2).astype(np.int64)
        ys = np.floor((np.arange(H) + 0.5 - self.cy) * (self.fx / self.fy) + H / 2).astype(np.int64)
        inside = ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
        out = values[np.clip(ys, 0, H - 1)[:, None], np.clip(xs, 0, W - 1)[None, :]]
        out[~inside] = 0
        return out


def centred_view(K, width: int, height: int) -> CentredView:
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    return CentredView(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))


__all__ = [
    "CentredView",
    "centred_view",
    "K_from_focal",
    "focal_from_fov",
    "read_intrinsics_json",
    "find_intrinsics",
    "original_image_size",
    "resolve_K",
]
