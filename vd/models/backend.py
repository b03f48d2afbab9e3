"""What every model backend shares: a name, an identity for cache keys, a device, and release."""

from __future__ import annotations


class ModelBackend:
    """Base of the depth and inpaint backends. `identity` names the model and its weights (it goes
    into cache keys); `release()` frees the model. Usable as a context manager that releases."""

    name: str = "?"
    identity: str = "?"
    device: str = "cpu"

    def release(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
