"""The `fsr` inpainting backend: OpenCV contrib's frequency-selective reconstruction (xphoto), CPU, no weights.

`cv2.xphoto.inpaint(..., INPAINT_FSR_FAST)` models each block around a hole as a sparse sum of
Fourier basis functions fitted to the known pixels (Genser et al.), so it continues texture a
little where telea propagates flat colour. It lives in OpenCV's contrib modules, which the
`opencv-python-headless` wheel that vd depends on lacks: the backend needs
`opencv-contrib-python-headless` installed *in place of* it (the two wheels cannot coexist: both
are `cv2`). Measured against telea in bench/quality.md (issue 26): not better on never-seen pixels,
so it is never chosen by `auto`.
"""

from __future__ import annotations

import numpy as np

from vd.errors import UsageError
from vd.models.inpaint import InpaintBackend, check_inputs, keep_unmasked

CONTRIB_HINT = (
    "the fsr inpaint backend needs OpenCV's contrib modules (cv2.xphoto): "
    "pip uninstall opencv-python-headless && pip install opencv-contrib-python-headless (same version)"
)


def xphoto_module():
    """cv2.xphoto, or a UsageError saying how to get it."""
    import cv2

    xphoto = getattr(cv2, "xphoto", None)
    if xphoto is None or not hasattr(xphoto, "INPAINT_FSR_FAST"):
        raise UsageError(CONTRIB_HINT)
    return xphoto


class FsrInpaint(InpaintBackend):
    name = "fsr"

    def __init__(self, quality: str = "fast"):
        import cv2

        if quality not in ("fast", "best"):
            raise ValueError(f"fsr quality is 'fast' or 'best', got {quality!r}")
        xphoto = xphoto_module()
        self.quality = quality
        self.algorithm = xphoto.INPAINT_FSR_FAST if quality == "fast" else xphoto.INPAINT_FSR_BEST
        self.identity = f"fsr-{quality}:opencv-contrib-{cv2.__version__}"

    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:
        rgb, mask = check_inputs(rgb, mask)
        if not mask.any():
            return rgb.copy()
        if mask.all():
            return np.full_like(rgb, 127)  # nothing to reconstruct from: a neutral grey, as telea
        known = np.ascontiguousarray(np.where(mask[..., None], 0, rgb).astype(np.uint8))
        out = np.zeros_like(known)
        # xphoto's mask marks the *known* pixels (non-zero), the opposite of cv2.inpaint's
        xphoto_module().inpaint(known, (~mask).astype(np.uint8) * 255, out, self.algorithm)
        return keep_unmasked(rgb, out, mask)
