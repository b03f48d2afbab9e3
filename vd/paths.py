"""Where vd keeps its cache and model weights (environment overrides first)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vd import settings
from vd.errors import UsageError
from vd.params import check_device


def cache_dir() -> Path:
    """`$VD_CACHE_DIR`, else `$XDG_CACHE_HOME/vd`, else `~/.cache/vd`."""
    return settings.vd_cache_dir() or settings.xdg_cache_home() / "vd"


def models_dir() -> Path:
    """`$VD_MODELS_DIR`, else `models/` in the cache root, beside (not inside) the artifact store."""
    return settings.vd_models_dir() or cache_dir() / "models"


def offline() -> bool:
    """True when `VD_OFFLINE` is set to a true value: no network access at all."""
    return settings.offline()


def nvidia_device_possible() -> bool:
    """False on a Linux machine with no NVIDIA device node, where torch.cuda.is_available() is False
    too: a CPU machine then resolves its device without importing torch (1.3 s of a cached run)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


def default_device() -> str:
    """`$VD_DEVICE`, else cuda when available, else cpu. Imports torch where CUDA may exist: call
    only in stages."""
    env = settings.device()
    if env:
        return env
    if not nvidia_device_possible():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None, option: str = "--device") -> str:
    """The device to run on: `device`, else `default_device()`; a UsageError (one sentence naming
    the option, or VD_DEVICE) when it is malformed or names CUDA on a machine without it."""
    name = device or default_device()
    check_device(name, option if device else "VD_DEVICE")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"{option} {name} was asked for but CUDA is not available; use {option} cpu")
    return name
