"""Peak memory per stage: GPU (torch.cuda.max_memory_allocated) and process RSS (getrusage).

    from vd.models import memory
    with memory.track("depth"):          # resets the CUDA peak counter, records peaks on exit
        ...
    memory.print_table()                 # rich table on stderr (after every GPU command)
    memory.records() -> list[StageMemory]; memory.reset()

RSS is the process high-water mark (ru_maxrss), so it never decreases from one stage to the
next; VRAM is the peak within the stage (the counter is reset when the stage starts).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

from vd.units import format_size

_records: list["StageMemory"] = []


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
    import resource

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


@contextmanager
def track(stage: str, device: str = "cpu") -> Iterator[None]:
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        cuda = _cuda()
        _records.append(
            StageMemory(
                stage=stage,
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
    import gc

    gc.collect()
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()


def _size_or_dash(n: Optional[int]) -> str:
    return "-" if n is None else format_size(n, binary=True)


def print_table(title: str = "memory") -> None:
    """Peak VRAM and RSS per recorded stage, as a rich table on stderr (nothing when empty)."""
    from rich.table import Table

    from vd import console

    if not _records or console.is_quiet():
        return
    t = Table(title=title, title_justify="left", show_edge=False)
    t.add_column("stage")
    t.add_column("device")
    t.add_column("time", justify="right")
    t.add_column("peak VRAM", justify="right")
    t.add_column("peak RSS", justify="right")
    for r in _records:
        t.add_row(r.stage, r.device, f"{r.seconds:.1f} s", _size_or_dash(r.peak_vram_bytes), _size_or_dash(r.peak_rss_bytes))
    console.err.print(t)


__all__ = ["StageMemory", "track", "records", "reset", "print_table", "peak_rss_bytes", "peak_vram_bytes", "release_torch_memory"]
