"""PLY write/read benchmark: 1M Gaussians (SH degree 3, 62 float32 columns, 248 MB).

    flock /tmp/vd-bench.lock python bench/ply.py [--n 1000000] [--repeats 3] [--dir /tmp]

Reports the best of --repeats for vd.ply.write_ply (includes fsync and the atomic rename) and
vd.ply.read_ply (to Gaussians tensors), and plyfile's own read of the same file for comparison.
The file lives in --dir (default: the system temp dir) and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()

    import numpy as np
    import plyfile
    import torch

    from vd.gaussians import Gaussians
    from vd.ply import read_ply, write_ply

    gen = torch.Generator().manual_seed(0)
    n, k = args.n, (args.degree + 1) ** 2
    g = Gaussians(torch.randn(n, 3, generator=gen), torch.randn(n, 3, generator=gen) - 4, torch.randn(n, 4, generator=gen),
                  torch.randn(n, generator=gen) + 3, torch.randn(n, k, 3, generator=gen))
    path = Path(args.dir) / f"vd-bench-{os.getpid()}.ply"
    res = {"machine": platform.node(), "cores": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "n": n, "sh_degree": args.degree}
    try:
        w, r, p = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            rep = write_ply(path, g, comments={"source_image": "bench"})
            w.append(time.perf_counter() - t)
            t = time.perf_counter()
            g2, _ = read_ply(path)
            r.append(time.perf_counter() - t)
            t = time.perf_counter()
            ply = plyfile.PlyData.read(str(path))
            _ = {name: np.array(ply["vertex"][name]) for name in ply["vertex"].data.dtype.names}
            p.append(time.perf_counter() - t)
        assert torch.equal(g2.sh, g.sh) and torch.equal(g2.means, g.means)
        res.update(
            file_mb=round(path.stat().st_size / 2**20, 1),
            written=rep.written,
            write_best_s=round(min(w), 3),
            read_best_s=round(min(r), 3),
            plyfile_read_best_s=round(min(p), 3),
            write_all_s=[round(x, 3) for x in w],
            read_all_s=[round(x, 3) for x in r],
        )
    finally:
        path.unlink(missing_ok=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
