"""What every model backend shares: a name, an identity for cache keys, a device, and release."""

from __future__ import annotations

from typing import Optional

from vd.paths import default_device


class ModelBackend:
    """Base of the depth and inpaint backends. `identity` names the model and its weights (it goes
    into cache keys); `release()` frees the model. Usable as a context manager that releases."""

    name: str = "?"
    registry_models: tuple[str, ...] = ()  # the registry models whose weights it loads (their licences go in summaries)
    _identity: Optional[str] = None
    _device: Optional[str] = "cpu"  # None: resolved on first use ($VD_DEVICE, else cuda when available)

    @property
    def identity(self) -> str:
        """Set by the backend, or computed on first use by `_compute_identity` (e.g. from a weights hash)."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    @identity.setter
    def identity(self, value: str) -> None:
        self._identity = value

    def _compute_identity(self) -> str:
        return "?"

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return str(self._device)

    def release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
