"""Viewer costs: import/open time, logging Gaussians and frames into an .rrd, file sizes.

    flock /tmp/vd-bench.lock python bench/viewer.py [--n 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="Gaussians per log call")
    ap.add_argument("--frames", type=int, default=20, help="512x384 frames (rgb + depth + 2 masks)")
    args = ap.parse_args()

    # start-up: importing vd.viewer and opening a NullViewer must not import rerun
    code = ("import time, sys; t = time.perf_counter(); from vd.viewer import open_viewer; v = open_viewer('none'); "
            "print(time.perf_counter() - t, 'rerun' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    print(f"NullViewer open: {float(out[0]) * 1000:.1f} ms, rerun imported: {out[1]}")

    import numpy as np
    import torch

    from vd.gaussians import Gaussians
    from vd.viewer import open_viewer

    n = args.n
    g = Gaussians(means=torch.randn(n, 3), log_scales=torch.full((n, 3), -4.0), quats=torch.randn(n, 4),
                  opacity_logits=torch.zeros(n), sh=0.1 * torch.randn(n, 16, 3))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)
    depth = rng.random((384, 512), dtype=np.float32) + 1.0
    K = np.array([[400.0, 0, 256], [0, 400.0, 192], [0, 0, 1]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.rrd"
        t = time.perf_counter()
        v = open_viewer("save", rrd=path, strict=True)
        t_open = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(args.frames):
            pose = np.eye(4)
            pose[0, 3] = 0.01 * i
            v.log_frame(f"view_{i:03d}", K=K, world_from_camera=pose, rgb=rgb, depth=depth,
                        masks={"hole": depth > 1.5, "spawn": depth > 1.2}, tab="coarse")
        t_frames = time.perf_counter() - t
        t = time.perf_counter()
        v.log_gaussians("coarse", g)
        t_g = time.perf_counter() - t
        t = time.perf_counter()
        v.close()
        t_close = time.perf_counter() - t
        size = os.path.getsize(path)
    print(f"open (import rerun + sinks): {t_open:.2f} s")
    print(f"log_frame 512x384 rgb+depth+2 masks: {t_frames / args.frames * 1000:.1f} ms/frame")
    print(f"log_gaussians {n} (SH degree 3): {t_g:.2f} s")
    print(f"close (flush + footer): {t_close:.2f} s")
    print(f".rrd size: {size / 1e6:.1f} MB ({args.frames} frames + {n} Gaussians)")


if __name__ == "__main__":
    main()
