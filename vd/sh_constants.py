"""Spherical-harmonics constants shared by the renderer, the Gaussians, the exporters and the viewer.

Plain numbers (no torch, no numpy), so the numpy-only exporters and the viewer import them cheaply.
"""

C0 = 0.28209479177387814
"""SH band-0 constant, 1 / (2·sqrt(pi)): RGB = 0.5 + C0 * f_dc."""
