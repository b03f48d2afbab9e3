"""Count the operations that make the host wait for the device, per training iteration.

`HostReads` is a torch dispatch mode (`torch.utils._python_dispatch.TorchDispatchMode`): every
aten operation the code under it runs passes through it. On a GPU these wait for the device:

- reading a scalar back (`.item()`, `float(t)`, `int(t)`, `bool(t)`, `if t:`): ``aten::_local_scalar_dense``;
- operations whose output size depends on the data: ``nonzero``, ``masked_select``, and indexing
  with a boolean mask (``index`` / ``index_put`` with a bool index; on CUDA these call nonzero).

(A device-to-host copy such as ``.cpu()`` or ``.tolist()`` cannot be told apart on a CPU run.)

Reads made by the renderer (frames under ``vd/render/``, the CPU-only torch rasteriser; the GPU
path uses gsplat) are counted apart in `renderer`. `iteration()` starts a new iteration's count;
`aside()` sends what follows to `setup` (work outside the training loop) until the next one.
"""

from __future__ import annotations

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_ALWAYS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default}
_BOOL_INDEX = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


def _is_host_read(func, args) -> bool:
    if func in _ALWAYS:
        return True
    if func in _BOOL_INDEX and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))
    return False


def _in_renderer() -> bool:
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename.replace("\\", "/")
        if "/vd/render/" in name:
            return True
        f = f.f_back
    return False


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.setup: list[str] = []  # before the first iteration()
        self.per_iteration: list[list[str]] = []
        self.renderer = 0
        self._current = self.setup

    def iteration(self) -> None:
        self.per_iteration.append([])
        self._current = self.per_iteration[-1]

    def aside(self) -> None:
        self._current = self.setup

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _is_host_read(func, args):
            if _in_renderer():
                self.renderer += 1
            else:
                self._current.append(str(func))
        return func(*args, **(kwargs or {}))
