"""Image input: open any common photo safely and normalise it to the RGB the stages expect.

`load_image(path, max_resolution=512)`:
- applies the EXIF orientation (phones store portrait shots rotated);
- converts RGBA/LA (composited on white), P (palette), I;16 / I / F (16-bit and float grayscale,
  rescaled to 8 bits), L, 1, CMYK and YCbCr to 8-bit RGB;
- resizes (Lanczos) so the long side is at most `max_resolution` and both sides are multiples
  of 16 (Flux packs 2x2 latent patches of an 8x-downsampled image). It never upscales an image
  past the cap (upstream's 0.5-megapixel floor did: docs/upstream.md#input-resizing); a small
  image is only cropped/rounded down to the nearest multiple of 16 (a centre crop of at most 15 px);
- rejects a missing path, a directory, an empty, truncated, corrupt or non-image file with one
  `InputError` sentence.

`resize_plan(w, h, max_resolution)` exposes the same geometry so a depth map or intrinsics can be
transformed consistently with the image (see `ResizePlan.scale_K`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.errors import InputError, UsageError, check_input_file

MULTIPLE = 16


@dataclass(frozen=True)
class ResizePlan:
    """How an original (W, H) image maps to the working image: crop box then resize.

    crop = (left, top, right, bottom) in original pixels; size = (width, height) after resize.
    """

    original_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        left, top, right, bottom = self.crop
        return self.size[0] / (right - left), self.size[1] / (bottom - top)

    @property
    def identity(self) -> bool:
        return self.crop == (0, 0, *self.original_size) and self.size == self.original_size

    def scale_K(self, K) -> np.ndarray:
        """Intrinsics of the original image -> intrinsics of the working image (pixel u centred at u + 0.5)."""
        K = np.asarray(K, dtype=np.float64).copy()
        sx, sy = self.scale
        left, top, _, _ = self.crop
        # continuous image coordinates (pixel u spans [u, u+1), centre u + 0.5): x' = sx * (x - left)
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = sx * (K[0, 2] - left)
        K[1, 1] *= sy
        K[1, 2] = sy * (K[1, 2] - top)
        return K.astype(np.float32)

    def apply_depth(self, depth: np.ndarray) -> np.ndarray:
        """Resize a depth map (original image geometry) with the same crop and size.

        Uses nearest-neighbour when downsampling by more than ~1.5x would blend foreground and
        background across edges; invalid (<=0 or non-finite) pixels stay invalid.
        """
        import cv2

        d = np.asarray(depth, dtype=np.float32)
        left, top, right, bottom = self.crop
        d = d[top:bottom, left:right]
        w, h = self.size
        if d.shape[1] == w and d.shape[0] == h:
            return np.ascontiguousarray(d)
        valid = np.isfinite(d) & (d > 0)
        d0 = np.where(valid, d, 0).astype(np.float32)
        # nearest keeps depth discontinuities sharp (no flying pixels between surfaces)
        out = cv2.resize(d0, (w, h), interpolation=cv2.INTER_NEAREST)
        return out.astype(np.float32)


def resize_plan(width: int, height: int, max_resolution: int = 512) -> ResizePlan:
    """Long side <= max_resolution, both sides multiples of 16, never upscaled."""
    if max_resolution < MULTIPLE:
        raise UsageError(f"--max-resolution must be at least {MULTIPLE} pixels, got {max_resolution}")
    if width < MULTIPLE or height < MULTIPLE:
        raise InputError(f"image is too small ({width}x{height}); both sides must be at least {MULTIPLE} pixels")
    cap = (max_resolution // MULTIPLE) * MULTIPLE
    s = min(1.0, cap / max(width, height))
    # target sides: scaled, rounded down to multiples of 16 (never above the cap, never upscaled)
    tw = max(MULTIPLE, int(width * s + 1e-6) // MULTIPLE * MULTIPLE)
    th = max(MULTIPLE, int(height * s + 1e-6) // MULTIPLE * MULTIPLE)
    # crop the original (centre) to the target's aspect, so pixels stay square: the largest box of
    # aspect tw/th inside the image (an extreme aspect, e.g. 4000x300 at 64, whose short side
    # would round to 0 and is raised to 16, loses the ends of its long side instead of stretching)
    crop_w = min(width, int(round(height * tw / th)))
    crop_h = min(height, int(round(width * th / tw)))
    if s == 1.0:  # no scaling: a pure crop of at most 15 px per side
        crop_w, crop_h = tw, th
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return ResizePlan((width, height), (left, top, left + crop_w, top + crop_h), (tw, th))


def plan_to(src_w: int, src_h: int, dst_w: int, dst_h: int) -> ResizePlan:
    """Centre-crop (src_w, src_h) to the aspect of (dst_w, dst_h), then resize to it.

    For a source of the same size as the original image this reproduces `resize_plan` up to a
    pixel of crop; pass `LoadedImage.plan` where the exact plan is known.
    """
    s = max(dst_w / src_w, dst_h / src_h)
    crop_w = min(src_w, max(1, round(dst_w / s)))
    crop_h = min(src_h, max(1, round(dst_h / s)))
    left = (src_w - crop_w) // 2
    top = (src_h - crop_h) // 2
    return ResizePlan((src_w, src_h), (left, top, left + crop_w, top + crop_h), (dst_w, dst_h))


@dataclass
class LoadedImage:
    rgb: np.ndarray  # uint8 [H, W, 3]
    path: Path
    content_hash: str  # hash of the normalised RGB (what the stages see) plus its shape
    original_size: tuple[int, int]  # (width, height) after EXIF orientation, before resize
    plan: ResizePlan | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _to_rgb(im):
    """Any PIL mode -> 8-bit RGB."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 65535.0
        elif mode == "I":
            hi = 65535.0 if a.max(initial=0) > 255 else 255.0
            a = a / hi
        else:  # float: assume [0, 1] when it fits, else min-max
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            if lo < 0 or hi > 1:
                a = (a - lo) / max(hi - lo, 1e-12)
        a8 = np.clip(np.round(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([a8] * 3, axis=-1), "RGB")
    return im.convert("RGB")


@contextmanager
def _image_errors(path: Path):
    """PIL's errors opening `path` as one InputError sentence each."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UnidentifiedImageError:
        raise InputError(f"not an image file (or an unsupported format): {path}") from None
    except Image.DecompressionBombError:
        raise InputError(f"image is too large to open safely (decompression bomb guard): {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"image file is corrupt or truncated ({_short(e)}): {path}") from None


def check_image(path) -> Path:
    """`path` as a Path when it is a readable, non-empty file that PIL identifies as an image and whose
    structure verifies; else InputError. Cheap (no full decode): what a command checks before it asks for
    model weights, so that a wrong file is named as such."""
    from PIL import Image

    p = check_input_file(path, "image")
    if p.stat().st_size == 0:
        raise InputError(f"image file is empty: {p}")
    with _image_errors(p), Image.open(p) as probe:
        probe.verify()  # catches many truncations and corrupt chunks cheaply
    return p


def _open_rgb(path: Path):
    """Open, verify and decode `path` to an RGB PIL image with EXIF orientation applied."""
    from PIL import Image, ImageOps

    check_image(path)
    with _image_errors(path):
        im: Image.Image = Image.open(path)
        im.load()  # full decode: raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not make a readable image unusable
        pass
    try:
        return _to_rgb(im)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot convert image to RGB ({_short(e)}): {path}") from None


def _short(e: Exception) -> str:
    s = str(e).strip().rstrip(".")
    return (s[:120] + "...") if len(s) > 120 else (s or type(e).__name__)


def load_image(path, max_resolution: int = 512) -> LoadedImage:
    """Load `path` as uint8 RGB [H, W, 3] ready for the stages (see the module docstring)."""
    import xxhash
    from PIL import Image

    p = check_input_file(path, "image")
    im = _open_rgb(p)
    W, H = im.size
    try:
        plan = resize_plan(W, H, max_resolution)
    except InputError as e:
        raise InputError(f"{e}: {p}") from None
    if not plan.identity:
        im = im.crop(plan.crop)
        if im.size != plan.size:
            im = im.resize(plan.size, Image.Resampling.LANCZOS)
    rgb = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    h = xxhash.xxh3_128()
    h.update(f"rgb:{rgb.shape[0]}x{rgb.shape[1]}:".encode())
    h.update(rgb.tobytes())
    return LoadedImage(rgb=rgb, path=p, content_hash=h.hexdigest(), original_size=(W, H), plan=plan)


__all__ = ["LoadedImage", "ResizePlan", "check_image", "load_image", "resize_plan", "plan_to"]
