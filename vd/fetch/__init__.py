"""Model weights: the registry of known files and their verified, resumable download.

Stages use `require(model, auto_fetch=None) -> dict[str, Path]`, `weights_id(model)` and
`known_models()` (see `vd.fetch.registry`); `vd fetch` is the command line on top.
"""

from vd.fetch.registry import fetch_flag, known_models, require, require_all, weights_id

__all__ = ["require", "require_all", "weights_id", "known_models", "fetch_flag"]
