#!/usr/bin/env python3
"""What a cache hit costs: `Cache.get` (the hit check) and get + `Record.read` of every artifact,
for one record of --mb megabytes in 4 objects, in a fresh handle each time (as a new run sees it).

    heavy python bench/cache_hits.py [--mb 256] [--runs 9]

The objects stay in the page cache, so this is the hashing cost, not disk reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    from vd.cache import Cache

    root = Path(tempfile.mkdtemp(prefix="vd-hits-"))
    part = args.mb * (1 << 20) // 4
    with Cache.open(root, remote=None) as c:
        c.put("a" * 32, {f"o{i}": os.urandom(part) for i in range(4)}, stage="bench")
    with Cache.open(root, remote=None) as c:
        c.get("a" * 32)  # a first hit records what it hashed (the old code hashes every time)
    check, full = [], []
    for _ in range(args.runs):
        with Cache.open(root, remote=None) as c:
            t0 = time.perf_counter()
            rec = c.get("a" * 32)
            t1 = time.perf_counter()
            for name in rec.names:
                rec.read(name)
            t2 = time.perf_counter()
        check.append(t1 - t0)
        full.append(t2 - t0)
    print(f"{args.mb} MB record: hit check median {statistics.median(check) * 1000:.1f} ms, "
          f"hit check + read all {statistics.median(full) * 1000:.1f} ms ({args.runs} runs)")


if __name__ == "__main__":
    main()
