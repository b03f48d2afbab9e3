"""Where vd keeps its cache and model weights (environment overrides first)."""

from __future__ import annotations

import os
from pathlib import Path

from vd.errors import UsageError
from vd.params import check_device


def cache_dir() -> Path:
    """`$VD_CACHE_DIR`, else `$XDG_CACHE_HOME/vd`, else `~/.cache/vd`."""
    if os.environ.get("VD_CACHE_DIR"):
        return Path(os.environ["VD_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vd"
    return Path.home() / ".cache" / "vd"


def models_dir() -> Path:
    """`$VD_MODELS_DIR`, else `models/` in the cache root, beside (not inside) the artifact store."""
    if os.environ.get("VD_MODELS_DIR"):
        return Path(os.environ["VD_MODELS_DIR"]).expanduser()
    return cache_dir() / "models"


def offline() -> bool:
    """True when `VD_OFFLINE` is set to a true value: no network access at all."""
    return os.environ.get("VD_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def default_device() -> str:
    """`$VD_DEVICE`, else cuda when available, else cpu. Imports torch: call only in stages."""
    env = os.environ.get("VD_DEVICE")
    if env:
        return env
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
