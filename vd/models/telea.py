"""The `telea` inpainting backend: OpenCV's fast-marching method (Telea 2004), CPU, no weights.

It propagates the colours around a hole inwards: fine for thin disocclusion holes, smeary for
wide outpainting borders. It is the offline default; `flux-fill` is the quality backend.
"""

from __future__ import annotations

import numpy as np

from vd.models.inpaint import InpaintBackend, check_inputs, keep_unmasked


class TeleaInpaint(InpaintBackend):
    name = "telea"

    def __init__(self, radius: int = 5):
        import cv2

        self.radius = int(radius)
        self.identity = f"telea:opencv-{cv2.__version__}:r{self.radius}"

    def inpaint(self, rgb, mask, seed: int = 0) -> np.ndarray:
        import cv2

        rgb, mask = check_inputs(rgb, mask)
        if not mask.any():
            return rgb.copy()
        if mask.all():
            # nothing to propagate from: a neutral grey (deterministic)
            return np.full_like(rgb, 127)
        out = cv2.inpaint(np.ascontiguousarray(rgb), mask.astype(np.uint8) * 255, self.radius, cv2.INPAINT_TELEA)
        return keep_unmasked(rgb, out, mask)
