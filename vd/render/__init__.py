"""Rendering of Gaussians: one entry point, a CUDA (gsplat) and a CPU (torch) backend.

    from vd.render import render
    out = render(g, viewmats, Ks, width, height)          # backend="auto"
    out.rgb [C,H,W,3], out.depth [C,H,W] (expected z), out.alpha [C,H,W]
    render(g, viewmats, Ks, width, height, depth_mode="median")  # depth: median z (torch backend)

Cameras are OpenCV pinhole (x right, y down, z forward); ``viewmats`` are camera_from_world.
Both backends follow gsplat 1.5's classic rasteriser (eps2d 0.3, pixel centres at +0.5,
render_mode "RGB+ED") and are differentiable with respect to the Gaussians' tensors.
torch is imported lazily so `import vd.render` stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vd.errors import UsageError
from vd.install import pip_install
from vd.params import RENDER_BACKENDS as BACKENDS
from vd.render.gsplat_backend import GSPLAT_BUILD, gsplat_installed, gsplat_kernels, nvcc_version, render_gsplat

log = logging.getLogger(__name__)


@dataclass
class RenderResult:
    rgb: Any  # [C,H,W,3]
    depth: Any  # [C,H,W] expected z-depth (median with depth_mode="median"; 0 where nothing was hit)
    alpha: Any  # [C,H,W]
    backend: str = "torch"
    median: Any = None  # [C,H,W] the median depth as well, with depth_mode="both"


def gsplat_available() -> bool:
    """gsplat is installed and its CUDA kernels are built (rendering with it will not compile first)."""
    return gsplat_installed() and gsplat_kernels() is not None


_said: set = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def resolve_backend(backend: str, device) -> str:
    """'auto' -> 'gsplat' on CUDA when gsplat and its built kernels are there, else 'torch' (and says
    why when gsplat is installed without kernels). 'gsplat' without kernels compiles them first (says
    so), or raises UsageError when there is no nvcc to do it."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    on_cuda = str(device).split(":", 1)[0] == "cuda"  # a str or torch.device; no torch import on CPU
    if backend == "auto":
        if not on_cuda:
            return "torch"
        if gsplat_available():
            return "gsplat"
        if gsplat_installed():
            _say_once(
                "render backend: torch (gsplat is installed but its CUDA kernels are not built; "
                f"build them once, minutes: {GSPLAT_BUILD})"
            )
        return "torch"
    if backend == "gsplat":
        if not on_cuda:
            raise UsageError(
                "the gsplat render backend needs the Gaussians on a CUDA device; use --render-backend torch on CPU"
            )
        if not gsplat_installed():
            raise UsageError(f"the gsplat render backend is not installed; run: {pip_install('gpu')} (gsplat>=1.5)")
        if gsplat_kernels() is None:
            if nvcc_version() is None:
                raise UsageError(
                    "gsplat's CUDA kernels are not built and there is no nvcc to build them; use "
                    f"--render-backend torch, or install the CUDA toolkit and run: {GSPLAT_BUILD}"
                )
            _say_once(
                f"gsplat's CUDA kernels are not built: compiling them now (minutes, once; ahead of time: "
                f"{GSPLAT_BUILD})"
            )
    return backend


def _prep_cams(viewmats, Ks, device, dtype=None):
    import torch

    def t(x):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        x = torch.as_tensor(x, dtype=dtype or torch.float32, device=device)
        return x

    viewmats, Ks = t(viewmats), t(Ks)
    if viewmats.ndim == 2:
        viewmats = viewmats[None]
    if Ks.ndim == 2:
        Ks = Ks[None]
    if Ks.shape[0] == 1 and viewmats.shape[0] > 1:
        Ks = Ks.expand(viewmats.shape[0], 3, 3)
    if viewmats.shape[1:] != (4, 4) or Ks.shape[1:] != (3, 3) or Ks.shape[0] != viewmats.shape[0]:
        raise ValueError(f"viewmats must be [C,4,4] and Ks [C,3,3]; got {tuple(viewmats.shape)} and {tuple(Ks.shape)}")
    return viewmats, Ks


def render(
    g,
    viewmats,
    Ks,
    width: int,
    height: int,
    *,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 1e10,
    background=None,
    eps2d: float = 0.3,
    tile: int | None = None,
    depth_mode: str = "expected",
) -> RenderResult:
    """Render Gaussians `g` from C cameras.

    viewmats: [C,4,4] (or [4,4]) camera_from_world, OpenCV; Ks: [C,3,3] (or [3,3]) pixel intrinsics.
    background: None (black), or RGB [3] / [C,3] composited as rgb + bg·(1−alpha).
    depth_mode: "expected" (Σ wᵢzᵢ / Σ wᵢ, the default), "median" (the depth where the pixel's ray passes
    through the first Gaussian at which the accumulated alpha reaches 0.5: the peak of its density along
    the ray; 0 where alpha never reaches 0.5), which sits on the surface where the expected depth is
    pulled toward the camera by overlapping Gaussians (vd.render.torch_backend.ray_hit_depth). gsplat's 3D-Gaussian
    rasterisation (1.5) has no median depth: with depth_mode="median", backend "auto" renders with the
    torch backend (on the Gaussians' device, CUDA included) and backend "gsplat" is a UsageError. Or
    "both": depth is the expected depth and `median` the median depth, from one pass (torch, as "median").
    Returns RenderResult(rgb [C,H,W,3], depth [C,H,W], alpha [C,H,W], backend, median).
    """
    import torch

    from vd.render.torch_backend import DEPTH_MODES

    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"depth_mode must be one of {', '.join(DEPTH_MODES)}, got {depth_mode!r}")
    if depth_mode != "expected" and backend == "gsplat":
        raise UsageError("the gsplat render backend has no median depth; use the torch backend for it")
    name = resolve_backend(backend, g.device)
    if depth_mode != "expected":
        name = "torch"
    viewmats, Ks = _prep_cams(viewmats, Ks, g.device, g.means.dtype)
    C = viewmats.shape[0]
    if len(g) == 0:
        z = torch.zeros(C, height, width, device=g.device, dtype=g.means.dtype)
        rgb = torch.zeros(C, height, width, 3, device=g.device, dtype=g.means.dtype)
        alpha, depth = z, z.clone()
        median = z.clone() if depth_mode != "expected" else None
    elif name == "gsplat":
        rgb, depth, alpha = render_gsplat(g, viewmats, Ks, width, height, near=near, far=far, eps2d=eps2d)
        median = None
    else:
        from vd.render.torch_backend import render_torch

        rgb, depth, alpha, median = render_torch(
            g, viewmats, Ks, width, height, near=near, far=far, eps2d=eps2d, tile=tile or 8, depth_mode=depth_mode
        )
    if background is not None:
        bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device).reshape(-1, 3)
        rgb = rgb + bg[:, None, None, :] * (1.0 - alpha[..., None])
    if depth_mode == "median":
        assert median is not None
        return RenderResult(rgb, median, alpha, name)
    return RenderResult(rgb, depth, alpha, name, median)


__all__ = ["BACKENDS", "RenderResult", "gsplat_available", "gsplat_kernels", "render", "resolve_backend"]
