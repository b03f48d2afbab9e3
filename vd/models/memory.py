"""Peak memory per stage: GPU (torch.cuda.max_memory_allocated) and process RSS (getrusage).

    from vd.models import memory
    with memory.track("depth") as row:   # resets the CUDA peak counter, records peaks on exit
        ...                              # row.stage = "...": the row's name, when the work turns out otherwise
    memory.records() -> list[StageMemory]; memory.reset()
    memory.reset_command_peak(); ...; memory.command_peak_vram_bytes()   # across stages (benches)

RSS is the process high-water mark (ru_maxrss), so it never decreases from one stage to the
next; VRAM is the peak within the stage (the counter is reset when the stage starts). Each reset
first folds torch's peak into a running maximum, so the peak of a whole command (several stages)
is still known: `command_peak_vram_bytes()` since the last `reset_command_peak()`.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

_records: list[StageMemory] = []
_carried_peak = [0]  # the largest CUDA peak seen before a stage reset torch's counter


@dataclass
class StageMemory:
    stage: str
    seconds: float
    peak_rss_bytes: int
    peak_vram_bytes: Optional[int]  # None without CUDA (or when torch was never imported)
    device: str = "cpu"

    def to_json(self) -> dict:
        return asdict(self)


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (children not included)."""

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)  # Linux reports KiB, macOS bytes


def _cuda():
    torch = sys.modules.get("torch")  # never import torch just to measure
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    except Exception:
        return None


def peak_vram_bytes() -> Optional[int]:
    cuda = _cuda()
    return int(cuda.max_memory_allocated()) if cuda is not None else None


def _reset_peak(cuda) -> None:
    _carried_peak[0] = max(_carried_peak[0], int(cuda.max_memory_allocated()))
    cuda.reset_peak_memory_stats()


def reset_command_peak() -> None:
    """Start measuring a command's peak VRAM (a bench calls this before each command)."""
    _carried_peak[0] = 0
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def command_peak_vram_bytes() -> Optional[int]:
    """Peak allocated VRAM since `reset_command_peak()`, across the stages' own resets; None without CUDA."""
    cuda = _cuda()
    if cuda is None:
        return _carried_peak[0] or None
    return max(_carried_peak[0], int(cuda.max_memory_allocated()))


@dataclass
class Tracked:
    """The name a `track` block's row will carry; the block may change it."""

    stage: str


@contextmanager
def track(stage: str, device: str = "cpu") -> Iterator[Tracked]:
    cuda = _cuda()
    if cuda is not None:
        _reset_peak(cuda)
    t0 = time.perf_counter()
    row = Tracked(stage)
    try:
        yield row
    finally:
        cuda = _cuda()
        _records.append(
            StageMemory(
                stage=row.stage,
                seconds=time.perf_counter() - t0,
                peak_rss_bytes=peak_rss_bytes(),
                peak_vram_bytes=int(cuda.max_memory_allocated()) if cuda is not None else None,
                device=str(device),
            )
        )


def records() -> list[StageMemory]:
    return list(_records)


def reset() -> None:
    _records.clear()


def release_torch_memory() -> None:
    """gc, then return cached CUDA blocks to the driver (after a model is dropped)."""

    gc.collect()
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()


__all__ = [
    "StageMemory",
    "Tracked",
    "track",
    "reset_command_peak",
    "command_peak_vram_bytes",
    "records",
    "reset",
    "peak_rss_bytes",
    "peak_vram_bytes",
    "release_torch_memory",
]
