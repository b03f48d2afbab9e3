"""The numbers 3D Gaussian splatting fixes (as in the INRIA code and gsplat), written once for the
renderers, the Gaussians, the hole maps, the exporters and the viewer.

Plain numbers (no torch, no numpy), so the numpy-only exporters and the viewer import them cheaply.
"""

C0 = 0.28209479177387814
"""SH band-0 constant, 1 / (2·sqrt(pi)): RGB = 0.5 + C0 * f_dc."""

ALPHA_MIN = 1.0 / 255.0
"""A Gaussian's alpha at a pixel below this is skipped by the rasteriser (and such splats are never seen)."""

ALPHA_MAX = 0.999
"""Each Gaussian's alpha at a pixel is capped here."""

T_MIN = 1e-4
"""Compositing stops before the transmittance would fall below this."""
