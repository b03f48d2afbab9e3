"""The `file` depth backend: a depth map the user supplies, with its intrinsics.

Depth formats (z-depth along the optical axis; 0, negative or non-finite = invalid):
- `.npy` float [H, W] (or [H, W, 1]) in metres (any consistent unit works);
- `.npz` with an array named `depth` (or a single array);
- `.png` 16-bit in millimetres (the Kinect / TUM / ScanNet convention), 0 = invalid;
- `.tif`/`.tiff` 32-bit float in metres.
OpenEXR is not read: neither Pillow nor the headless OpenCV wheel ships an EXR reader; convert
with any tool to `.npy`.

Intrinsics JSON (our own `intrinsics.json` output is accepted as input), any of:
  {"K": [[fx,0,cx],[0,fy,cy],[0,0,1]]}, {"fx":..,"fy":..,"cx":..,"cy":..}, {"focal": f},
  {"fov_x_deg": deg} / {"fov": deg}; optional "width"/"height" give the resolution K refers to
  (default: the original image). K is scaled and shifted with the same crop/resize as the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from vd.errors import InputError, UsageError, check_input_file
from vd.image import plan_to
from vd.models.depth import DepthBackend, DepthResult, check_rgb, sidecar_depth
from vd.models.intrinsics import find_intrinsics, original_image_size, read_intrinsics_json, resolve_K


def read_depth_file(path) -> np.ndarray:
    """Read a depth map as float32 [H, W]; invalid pixels become 0."""
    p = check_input_file(path, "depth map")
    ext = p.suffix.lower()
    if p.stat().st_size == 0:
        raise InputError(f"depth map is empty: {p}")
    try:
        if ext == ".npy":
            d = np.load(p, allow_pickle=False)
        elif ext == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if "depth" in keys:
                    d = z["depth"]
                elif len(keys) == 1:
                    d = z[keys[0]]
                else:
                    raise InputError(f"depth .npz has no array named 'depth' (found: {', '.join(keys)}): {p}")
        elif ext in (".png", ".tif", ".tiff"):
            import cv2

            d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if d is None:
                raise InputError(f"depth map is corrupt or not an image: {p}")
            if ext == ".png":
                if d.dtype != np.uint16:
                    raise InputError(
                        f"depth PNG must be 16-bit single-channel millimetres (got {d.dtype}, {d.ndim} dims); "
                        f"save metres as .npy instead: {p}"
                    )
                d = d.astype(np.float32) / 1000.0
        elif ext == ".exr":
            raise InputError(f"OpenEXR depth is not supported (no EXR reader is installed); convert it to .npy: {p}")
        else:
            raise InputError(f"unknown depth map format {ext!r} (use .npy, .npz, 16-bit .png or float .tif): {p}")
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"depth map is corrupt or unreadable ({str(e).strip()[:100]}): {p}") from None
    d = np.asarray(d)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2 or min(d.shape) < 2:
        raise InputError(f"depth map must be a 2-D array, got shape {tuple(d.shape)}: {p}")
    if not np.issubdtype(d.dtype, np.number) or np.issubdtype(d.dtype, np.complexfloating):
        raise InputError(f"depth map must hold real numbers, got {d.dtype}: {p}")
    d = d.astype(np.float32)
    d = np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)
    if not (d > 0).any():
        raise InputError(f"depth map has no valid (positive, finite) values: {p}")
    return d


class FileDepth(DepthBackend):
    name = "file"
    estimates_novel_views = False

    def __init__(self, *, image_path=None, depth_path=None, focal=None, fov=None, intrinsics=None):
        import xxhash

        self.image_path = Path(image_path) if image_path is not None else None
        if depth_path is None:
            depth_path = sidecar_depth(image_path)
            if depth_path is None:
                where = f" next to {self.image_path}" if self.image_path else ""
                raise InputError(
                    f"no depth map found{where}: the file backend needs <image stem>.depth.npy "
                    f"(or .npz, 16-bit .png, .tif) beside the image"
                )
        self.depth_path = check_input_file(depth_path, "depth map")
        self.focal, self.fov = focal, fov
        if intrinsics is None and focal is None and fov is None:
            intrinsics = find_intrinsics(image_path)
        self.intrinsics_path = check_input_file(intrinsics, "intrinsics file") if intrinsics is not None else None
        self._intr = read_intrinsics_json(self.intrinsics_path) if self.intrinsics_path else None
        h = xxhash.xxh3_128()
        h.update(self.depth_path.read_bytes())
        if self.intrinsics_path is not None:
            h.update(b"\0intrinsics\0" + self.intrinsics_path.read_bytes())
        self.identity = f"file:{h.hexdigest()}:focal={focal}:fov={fov}"
        self._depth: Optional[np.ndarray] = None

    def describe_intrinsics(self) -> str:
        if self.focal is not None:
            return f"--focal {self.focal}"
        if self.fov is not None:
            return f"--fov {self.fov}"
        if self.intrinsics_path is not None:
            return str(self.intrinsics_path)
        return "none"

    def estimate(self, rgb, K_hint=None, *, plan=None) -> DepthResult:
        """The user depth map cropped/resized like the image, with K in working-image pixels.

        `plan` is the image's ResizePlan (LoadedImage.plan): pass it for an exact match of the
        image's crop; without it the map is centre-cropped to the image's aspect and resized.
        """
        rgb = check_rgb(rgb)
        H, W = rgb.shape[:2]
        if self._depth is None:
            self._depth = read_depth_file(self.depth_path)
        raw = self._depth
        dh, dw = raw.shape
        orig = plan.original_size if plan is not None else (original_image_size(self.image_path) or (dw, dh))
        ow, oh = orig
        if abs(dw / dh - ow / oh) > 0.02 * (ow / oh):
            raise InputError(
                f"depth map {self.depth_path.name} is {dw}x{dh} but the image is {ow}x{oh}: their aspect ratios differ"
            )
        if plan is not None and (dw, dh) == tuple(plan.original_size) and tuple(plan.size) == (W, H):
            dplan = plan
        else:
            dplan = plan_to(dw, dh, W, H)
        depth = dplan.apply_depth(raw)
        valid = depth > 0
        # the image plan (original image -> working image), for K given in original pixels
        iplan = plan if (plan is not None and tuple(plan.size) == (W, H)) else plan_to(ow, oh, W, H)
        K = self._K(W, H, K_hint, iplan)
        return DepthResult(depth=depth.astype(np.float32), K=K, valid=valid, normals=None)

    def _K(self, W, H, K_hint, iplan) -> np.ndarray:
        K = resolve_K(W, H, iplan, K_hint=K_hint, focal=self.focal, fov=self.fov, intr=self._intr)
        if K is None:
            raise UsageError(
                f"the file depth backend needs intrinsics: pass --focal or --fov, or put intrinsics.json "
                f"next to {self.image_path.name if self.image_path else 'the image'} (or use --intrinsics FILE)"
            )
        return K

    def release(self) -> None:
        self._depth = None


__all__ = ["FileDepth", "read_depth_file"]
