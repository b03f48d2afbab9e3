"""GPU bench section for the depth models: MoGe-2 ViT-L, ViT-B and ViT-S (normal head), `section(ctx)`.

Real run (CUDA): each size with random FULL-SIZE weights (fp32, as the published model.pt; the layout of
bench/gpu/traced.py's `moge_config`) put into vd's own `MogeDepth` backend, which estimates a 672 x 672
image at resolution level 9 (3600 tokens, fp16 autocast) twice: the first call warms up, the second is
timed. Peak VRAM of both, beside what the memory plan sets aside for the size (`DEPTH_BYTES`) and the
tensors traced at full size on the CPU (bench/gpu-traced.json), so one run says how far each is off.
Dry run (`ctx.dry`): ViT-S with a 60-120 token range on the CPU, in seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GIB = 2**30


def _traced_bytes(size: str) -> dict:
    """The fp16 and fp32 traces of this size from bench/gpu-traced.json (weights included), if recorded."""
    path = REPO / "bench" / "gpu-traced.json"
    if not path.exists():
        return {}
    rows = [r for r in json.loads(path.read_text()) if r["model"] == f"moge-2 {size}"]
    return {r["call"].split(", ")[-1]: round((r["weights_bytes"] + r["peak_bytes"]) / GIB, 2) for r in rows}


def one_size(ctx, size: str, side: int) -> None:
    import numpy as np
    import torch
    from moge.model.v2 import MoGeModel
    from sections import VramSampler, _sync
    from traced import moge_config

    from vd.models.footprints import DEPTH_BYTES
    from vd.models.memory import release_torch_memory
    from vd.models.moge import MogeDepth

    cfg = moge_config(size)
    if ctx.dry:
        cfg["num_tokens_range"] = [60, 120]
    backend = None
    try:
        with VramSampler(ctx.device) as vs:
            t0 = time.perf_counter()
            with torch.device(ctx.device):
                model = MoGeModel(**cfg).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            backend = MogeDepth(device=ctx.device, model=size)
            backend._model = model  # random weights in place of the file: vd's own estimate path from here
            _sync(ctx.device)
            t1 = time.perf_counter()
            rgb = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
            backend.estimate(rgb)
            _sync(ctx.device)
            t2 = time.perf_counter()
            out = backend.estimate(rgb)
            _sync(ctx.device)
            t3 = time.perf_counter()
        ctx.record(
            size,
            {
                "image": side,
                "build_s": round(t1 - t0, 2),
                "first_s": round(t2 - t1, 3),
                "second_s": round(t3 - t2, 3),
                "depth_shape": list(out.depth.shape),
                "weights_gib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / GIB, 3),
                "plan_gib": round(DEPTH_BYTES[size] / GIB, 2),
                "traced_gib": _traced_bytes(size),
                **vs.json(),
            },
        )
    except torch.cuda.OutOfMemoryError:
        ctx.record(size, {"error": "CUDA out of memory"})
    finally:
        if backend is not None:
            backend.release()
        release_torch_memory()


def section(ctx) -> None:
    sys.path[:0] = [str(HERE), str(REPO / "tests")]
    if ctx.dry:
        ctx.record("note", "CPU dry run: ViT-S at 120 tokens; figures say nothing about a GPU")
        one_size(ctx, "vits", 64)
        return
    for size in ("vitl", "vitb", "vits"):
        one_size(ctx, size, 672)


__all__ = ["section"]
