#!/usr/bin/env python3
"""Wall and CPU time of a fully cached rerun of the README example.

    heavy python bench/rerun.py [--runs 7] [--cache DIR] [--keep]

Runs `vd coarse examples/room/rgb.png --fallback closest` once to fill a fresh cache (skipped
when --cache names a filled one), then N more times in fresh processes, and prints the median
and spread of the reruns' wall and CPU (user + sys) time. The figure goes to bench/coarse.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(cmd: list[str], env: dict) -> tuple[float, float]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-500:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=None, help="a cache folder (filled on the first run)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vd-rerun-"))
    cache = args.cache or work / "cache"
    env = {**os.environ, "VD_CACHE_DIR": str(cache)}
    exe = Path(sys.executable).with_name("vd")
    cmd = [str(exe), "coarse", str(REPO / "examples/room/rgb.png"), "--fallback", "closest", "-o", str(work / "out")]
    if not (cache / "index").is_dir():
        wall, _ = run_once(cmd, env)
        print(f"first run (fills the cache): {wall:.1f} s", flush=True)
    walls, cpus = [], []
    for _ in range(args.runs):
        w, c = run_once(cmd, env)
        walls.append(w)
        cpus.append(c)
    print(f"cached rerun over {args.runs} runs: wall median {statistics.median(walls):.2f} s "
          f"(min {min(walls):.2f}, max {max(walls):.2f}); CPU median {statistics.median(cpus):.2f} s")


if __name__ == "__main__":
    main()
