"""Moving FLUX.1-Fill's weights to the GPU and off it without copying them back.

The weights never change, so a module's tensors keep one CPU copy (pinned when CUDA is there, so
uploads are asynchronous DMA): `HostWeights.upload(device)` makes device copies, `.drop()` points
the module back at its CPU copies and frees the device ones; nothing ever travels device -> CPU.

    w = HostWeights(module, pin=True); w.upload("cuda"); ...; w.drop()
    seq = SequentialOffload(transformer_units(transformer), "cuda")   # per-block upload/drop hooks
    with no_nan_fill(): ...   # torch's deterministic mode would fill every new allocation with NaN

Under `torch.use_deterministic_algorithms(True)` (the coarse stage) torch fills each new
allocation with NaN before use; an upload overwrites all of it at once, so that fill only costs
time (a full pass over 24 GB for the transformer): uploads turn it off for their own duration.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence


@contextmanager
def no_nan_fill() -> Iterator[None]:
    """Turn torch's deterministic NaN fill of new allocations off for this block (restored after)."""
    import torch

    det = torch.utils.deterministic  # its attribute is set on the module at run time; torch's stubs lack it
    prev = det.fill_uninitialized_memory  # type: ignore[attr-defined]
    det.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        det.fill_uninitialized_memory = prev  # type: ignore[attr-defined]


def can_pin() -> bool:
    import torch

    return torch.cuda.is_available()


class HostWeights:
    """A module's parameters and buffers, owned on the CPU; device copies exist only while uploaded."""

    def __init__(self, module, *, pin: bool = False):
        self.module = module
        self.slots = []  # (owning submodule, "_parameters" | "_buffers", key, CPU tensor)
        for sub in module.modules():
            for kind in ("_parameters", "_buffers"):
                for key, t in getattr(sub, kind).items():
                    if t is None:
                        continue
                    with no_nan_fill():
                        host = t.data if t.device.type == "cpu" else t.data.to("cpu")
                        if pin:
                            host = _pinned(host)
                    self.slots.append((sub, kind, key, host))
        self.device = None
        self._point(lambda host: host)

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for *_, h in self.slots)

    def upload(self, device) -> None:
        """Device copies of every tensor (no-op when they are there already)."""
        if self.device is not None:
            return
        pinned = any(h.is_pinned() for *_, h in self.slots[:1])
        with no_nan_fill():
            self._point(lambda host: host.to(device, non_blocking=pinned))
        self.device = device

    def drop(self) -> None:
        """Point the module back at its CPU copies; the device copies are freed, nothing is copied."""
        if self.device is None:
            return
        self._point(lambda host: host)
        self.device = None

    def _point(self, make) -> None:
        import torch

        for sub, kind, key, host in self.slots:
            t = make(host)
            if kind == "_parameters":
                # a new frozen Parameter (`.data =` refuses some device pairs, meta), except for Parameter
                # subclasses that carry their own state, e.g. diffusers' GGUFParameter (quant_type): its
                # host copy and device copies stay that class, and re-wrapping could strip it
                if not isinstance(t, torch.nn.Parameter):
                    t = torch.nn.Parameter(t, requires_grad=False)
                sub._parameters[key] = t
            else:
                sub._buffers[key] = t


def _pinned(t):
    if t.is_pinned():  # already pinned (a model built again from the same modules)
        return t
    try:
        return t.pin_memory()
    except RuntimeError:  # page-locked memory exhausted or unsupported: plain memory still works
        return t


class SequentialOffload:
    """Per-block placement: each unit uploads for its own forward and drops its device copy after."""

    def __init__(self, units: Sequence, device, *, pin: bool = False):
        self.weights = [HostWeights(u, pin=pin) for u in units]
        self.handles = []
        for u, w in zip(units, self.weights, strict=False):
            # the hooks return None: they must not replace the arguments or the output
            self.handles.append(u.register_forward_pre_hook(lambda mod, args, w=w: w.upload(device)))
            self.handles.append(u.register_forward_hook(lambda mod, args, out, w=w: w.drop()))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for w in self.weights:
            w.drop()


def transformer_units(transformer) -> list:
    """The transformer split into offload units: its blocks and its small top-level modules."""
    units = []
    for name, child in transformer.named_children():
        if name in ("transformer_blocks", "single_transformer_blocks"):
            units.extend(list(child))
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units


__all__ = ["HostWeights", "SequentialOffload", "transformer_units", "no_nan_fill", "can_pin"]
