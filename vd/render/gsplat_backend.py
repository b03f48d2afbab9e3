"""The CUDA backend: gsplat.rasterization with render_mode "RGB+ED", packed=False.

gsplat's 3D-Gaussian rasterisation gives expected ("ED") or accumulated ("D") depth, no median: a median depth
(`vd.render.render(..., depth_mode="median")`) comes from the torch backend, on CUDA too.

gsplat's wheel is pure Python: its CUDA kernels are either a prebuilt `gsplat.csrc` module or
compiled by torch's JIT (nvcc, minutes) on the first render. `gsplat_kernels()` finds them without
building anything; `--render-backend auto` uses gsplat only when they exist (`vd doctor` says how to
build them: `GSPLAT_BUILD`), so a first render never blocks on a silent compile or fails on a
missing kernel.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from typing import Optional

from vd import settings

GSPLAT_BUILD = "MAX_JOBS=8 python -c 'from gsplat.cuda._backend import _C'"
JIT_NAME = "gsplat_cuda"  # the extension name gsplat's JIT build uses


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gsplat_installed() -> bool:
    return _importable("gsplat")


def gsplat_kernels() -> Optional[str]:
    """Where gsplat's compiled kernels are (prebuilt module or torch's JIT build folder), or None."""
    if not gsplat_installed():
        return None
    if _importable("gsplat.csrc"):
        return "prebuilt"
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private; absent in some torch versions

        folder = _get_build_directory(JIT_NAME, verbose=False)
    except Exception:  # noqa: BLE001 - any failure means "not found"
        return None
    so = os.path.join(folder, f"{JIT_NAME}.so")
    return so if os.path.isfile(so) else None


def nvcc_version() -> Optional[str]:
    """The release of the nvcc on PATH or under CUDA_HOME, e.g. "13.0"; None without one."""
    exe = shutil.which("nvcc")
    home = settings.cuda_home()
    if exe is None and home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        exe = os.path.join(home, "bin", "nvcc")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def gsplat_arguments(
    g, viewmats, Ks, width: int, height: int, *, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
) -> dict:
    """The keyword arguments of `gsplat.rasterization` for Gaussians `g` (no gsplat import)."""
    import torch

    from vd.render.quats import unit_quats

    return dict(
        means=g.means.contiguous(),
        quats=unit_quats(g.quats).contiguous(),  # gsplat divides by the norm: a zero quaternion would give NaN
        scales=torch.exp(g.log_scales),
        opacities=torch.sigmoid(g.opacity_logits),
        colors=g.sh.contiguous(),  # [N,K,3] SH coefficients; gsplat evaluates them and adds 0.5
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=g.sh_degree,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )


def render_gsplat(
    g, viewmats, Ks, width: int, height: int, *, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3
):
    from gsplat import rasterization

    out, alpha, _meta = rasterization(
        **gsplat_arguments(g, viewmats, Ks, width, height, near=near, far=far, eps2d=eps2d)
    )
    return out[..., :3], out[..., 3], alpha[..., 0]


__all__ = ["render_gsplat", "gsplat_arguments", "gsplat_installed", "gsplat_kernels", "nvcc_version", "GSPLAT_BUILD"]
