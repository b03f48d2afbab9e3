"""Every setting vd reads from the environment, in one place.

Each function reads its variable when called (never at import), so a test that sets a variable
with monkeypatch, or a user who exports one between two calls, is seen at once. Standard library
only: every layer may import this module.

Not here, on purpose: proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), which httpx
parses itself; the cloud credentials of the remote cache's backend (AWS_*, GOOGLE_*), read by
fsspec; options that Typer binds to a variable with `envvar=` (VD_VIEWER, RAY_ADDRESS); and whole
environments handed on to child processes.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

DISPLAY_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET")


def _get(name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    value = os.environ.get(name)
    return value if value else None


def _flag(name: str) -> bool:
    """True when the variable holds a true word (1, true, yes, on)."""
    return (os.environ.get(name) or "").strip().lower() in _TRUE


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _path(name: str) -> Path | None:
    value = _get(name)
    return Path(value).expanduser() if value else None


# --------------------------------------------------------------------------- where things live


def xdg_cache_home() -> Path:
    """`$XDG_CACHE_HOME`, else `~/.cache`."""
    return _path("XDG_CACHE_HOME") or Path.home() / ".cache"


def vd_cache_dir() -> Path | None:
    """`$VD_CACHE_DIR`: the artifact cache root (vd.paths.cache_dir applies the default)."""
    return _path("VD_CACHE_DIR")


def vd_models_dir() -> Path | None:
    """`$VD_MODELS_DIR`: where model weights live (vd.paths.models_dir applies the default)."""
    return _path("VD_MODELS_DIR")


def cache_remote() -> str:
    """`$VD_CACHE_REMOTE`: URL of the shared remote cache tier, "" when none."""
    return os.environ.get("VD_CACHE_REMOTE", "")


# --------------------------------------------------------------------------- running


def offline() -> bool:
    """`VD_OFFLINE` set to a true value: no network access at all."""
    return _flag("VD_OFFLINE")


def device() -> str | None:
    """`$VD_DEVICE`: the default torch device, None when unset."""
    return _get("VD_DEVICE")


def licence() -> str | None:
    """`$VD_LICENCE`: `commercial` refuses weights whose licence forbids commercial use; None when unset."""
    value = _get("VD_LICENCE")
    return value.strip().lower() if value else None


def cuda_home() -> str | None:
    """`$CUDA_HOME`, else `$CUDA_PATH`: where a CUDA toolkit is installed."""
    return _get("CUDA_HOME") or _get("CUDA_PATH")


def no_color() -> bool:
    """`NO_COLOR` set to anything non-empty (no-color.org): no colours on the terminal."""
    return _get("NO_COLOR") is not None


def display_available() -> bool:
    """One of DISPLAY, WAYLAND_DISPLAY, WAYLAND_SOCKET is set (a native window can open on Linux)."""
    return any(_get(name) for name in DISPLAY_VARS)


# --------------------------------------------------------------------------- external tools


def splat_transform_command() -> str:
    """`$VD_SPLAT_TRANSFORM`, else `splat-transform`: the PlayCanvas converter to run."""
    return os.environ.get("VD_SPLAT_TRANSFORM", "splat-transform")


def rerun_executable() -> str | None:
    """`$VD_RERUN_EXECUTABLE`: the rerun binary to use instead of the one rerun-sdk ships."""
    return _get("VD_RERUN_EXECUTABLE")


def rerun_analytics() -> bool:
    """`VD_RERUN_ANALYTICS=1` lets the rerun processes vd starts report usage (off by default)."""
    return _flag("VD_RERUN_ANALYTICS")


# --------------------------------------------------------------------------- model downloads


def auto_fetch() -> bool:
    """`VD_AUTO_FETCH` set to a true value: download missing weights without `--fetch`."""
    return _flag("VD_AUTO_FETCH")


def manifest() -> str | None:
    """`$VD_MANIFEST`: a user weights manifest merged over the built-in one."""
    return _get("VD_MANIFEST")


def fetch_timeout(default: float = 30.0) -> float:
    """`$VD_FETCH_TIMEOUT` in seconds (the default when unset or not a number)."""
    return _float("VD_FETCH_TIMEOUT", default)


def fetch_retries(default: int = 5) -> int:
    """`$VD_FETCH_RETRIES` (the default when unset or not a number)."""
    return int(_float("VD_FETCH_RETRIES", default))


def fetch_backoff(default: float = 1.0) -> float:
    """`$VD_FETCH_BACKOFF`: seconds before the first retry (the default when unset or not a number)."""
    return _float("VD_FETCH_BACKOFF", default)


def fetch_fsync() -> bool:
    """fsync downloads before their rename, unless `VD_FETCH_FSYNC` is a false word (0, false, no, off)."""
    return os.environ.get("VD_FETCH_FSYNC", "1").strip().lower() not in _FALSE


def ca_bundle() -> str | None:
    """The first of SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE that names an existing file."""
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        value = _get(name)
        if value and Path(value).is_file():
            return value
    return None


def hf_endpoint() -> str | None:
    """`$HF_ENDPOINT`: a Hugging Face mirror, None for the default."""
    return _get("HF_ENDPOINT")


def modelscope_endpoint() -> str | None:
    """`$VD_MODELSCOPE_ENDPOINT`, else `$MODELSCOPE_ENDPOINT`, None for the default."""
    return _get("VD_MODELSCOPE_ENDPOINT") or _get("MODELSCOPE_ENDPOINT")


def hf_token() -> str | None:
    """`$HF_TOKEN`, else the older `$HUGGING_FACE_HUB_TOKEN` (stripped), None when neither is set."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def hf_home() -> Path:
    """`$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`."""
    return _path("HF_HOME") or xdg_cache_home() / "huggingface"


def hf_token_path() -> Path:
    """`$HF_TOKEN_PATH`, else `$HF_HOME/token`: the file `hf auth login` writes."""
    return _path("HF_TOKEN_PATH") or hf_home() / "token"


def hf_hub_cache() -> Path | None:
    """`$HF_HUB_CACHE`: the Hugging Face hub cache, when set."""
    return _path("HF_HUB_CACHE")


def modelscope_cache() -> Path | None:
    """`$MODELSCOPE_CACHE`: the ModelScope cache, when set."""
    return _path("MODELSCOPE_CACHE")
