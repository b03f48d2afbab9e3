"""Benchmarks of the coarse stage (results: bench/coarse.md).

    flock /tmp/vd-bench.lock python bench/coarse.py [--skip-run] [--device cpu] [--out bench/coarse-results.md]

1. Hole scan: the fast scan (`vd.holes.scan_hole_ratios`: alpha-only splatting, 1/4 resolution,
   LOD subset, batched) against the upstream way (`scan_hole_ratios_full`: every candidate
   rendered with the real renderer at full size, one by one), side by side on the same
   scaffold and the same 100 candidate poses, for the bundled example (examples/room) and the
   procedural test scene. Reports the times, the speed-up, the largest ratio difference and
   whether the selection function picks the same pose for several bands / fallbacks.
2. `vd coarse examples/room/rgb.png` with default flags, in a child process with a fresh
   cache: wall time and peak RSS (ru_maxrss of the child); then the same command again (all
   cache hits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def scaffold_for(image, cache_dir, device, **kw):
    from vd.cache import Cache
    from vd.stages.coarse import CoarseParams, run_coarse

    p = CoarseParams(n_frames=2, **kw.pop("params", {}))
    r = run_coarse(image, p, depth_backend="file", inpaint_backend="telea", device=device, cache=Cache.open(cache_dir), **kw)
    return r


def bench_scan(name, image, cache_dir, device, lines, **kw):
    from vd.holes import scan_hole_ratios, scan_hole_ratios_full
    from vd.stages.coarse import CoarseParams, candidate_camera, dense_poses
    from vd.stages.select import select

    t = time.perf_counter()
    r = scaffold_for(image, cache_dir, device, **kw)
    t_scaffold = time.perf_counter() - t
    p = CoarseParams()
    poses, radius = dense_poses(r.frames[0], p)
    Kc, W, H = candidate_camera(r.frames[0], p.margin)
    g = r.scaffold
    from dataclasses import replace

    from vd.stages.coarse import scan_ratios

    # interleave the measurements (the machine's load changes by the minute)
    fast = scan_hole_ratios(g, poses, Kc, W, H)
    full = scan_hole_ratios_full(g, poses, Kc, W, H, backend="auto")
    fast2 = scan_hole_ratios(g, poses, Kc, W, H)
    t_fast = min(fast.seconds, fast2.seconds)
    agree, refine_s, refined = [], [], []
    for band in [(0.05, 0.25), (0.01, 0.45), (0.1, 0.2), (0.2, 0.4)]:
        for fb in ("none", "closest"):
            q = replace(p, min_ratio=band[0], max_ratio=band[1], fallback=fb)
            a = select(full.ratios, [], min_ratio=band[0], max_ratio=band[1], fallback=fb)
            rr, nref, secs = scan_ratios(g, poses, Kc, W, H, [], q)
            refine_s.append(secs)
            refined.append(nref)
            b = select(rr, [], min_ratio=band[0], max_ratio=band[1], fallback=fb)
            raw = select(fast.ratios, [], min_ratio=band[0], max_ratio=band[1], fallback=fb)
            ai, bi, ci = (a.index if a else None), (b.index if b else None), (raw.index if raw else None)
            agree.append((band, fb, ai, bi, ci))
    # a few selection steps in a row (same scene), as the loop's exclusion evolves
    seq_full, seq_fast = [], []
    q = replace(p, min_ratio=0.05, max_ratio=0.45, fallback="closest")
    for _ in range(8):
        a = select(full.ratios, seq_full, min_ratio=0.05, max_ratio=0.45, fallback="closest")
        rr, _, _ = scan_ratios(g, poses, Kc, W, H, seq_fast, q)
        b = select(rr, seq_fast, min_ratio=0.05, max_ratio=0.45, fallback="closest")
        if a is None or b is None:
            break
        seq_full.append(a.index)
        seq_fast.append(b.index)
    same = sum(1 for _, _, a, b, _ in agree if a == b)
    same_raw = sum(1 for _, _, a, _, c in agree if a == c)
    t_sel = float(np.median(refine_s))
    lines += [
        f"### {name}: {len(g)} Gaussians, {len(poses)} candidates at {W}x{H} (scaffold {t_scaffold:.1f} s)",
        "",
        "| scan | seconds | per candidate |",
        "|---|---|---|",
        f"| full size, one by one, renderer ({full.seconds / len(poses):.3f} s each) | {full.seconds:.2f} | {full.seconds / len(poses) * 1000:.0f} ms |",
        f"| vd fast scan: scale {fast.scale:.2f}, alpha-only splat, LOD, batch 16 | {t_fast:.2f} | {t_fast / len(poses) * 1000:.1f} ms |",
        f"| vd scan as the loop runs it: fast scan + exact re-measure of close calls (median {np.median(refined):.0f} re-measured, max {max(refined)}) | {t_sel:.2f} | {t_sel / len(poses) * 1000:.1f} ms |",
        "",
        f"speed-up: **{full.seconds / t_sel:.1f}x** as the loop runs it ({full.seconds / t_fast:.1f}x for the fast scan alone); "
        f"fast scan max |ratio difference| {np.abs(full.ratios - fast.ratios).max():.4f}, "
        f"mean {np.abs(full.ratios - fast.ratios).mean():.4f}; ratios full min/median/max "
        f"{full.ratios.min():.3f}/{np.median(full.ratios):.3f}/{full.ratios.max():.3f}",
        "",
        f"same selection as the full scan in {same}/{len(agree)} (band, fallback) settings "
        f"(fast scan without re-measuring: {same_raw}/{len(agree)}): "
        + ", ".join(f"[{b[0]},{b[1]}] {fb}: {a}/{c}" for b, fb, a, c, _ in agree),
        f"; 8-step sequence (band [0.05,0.45], closest): full {seq_full}, fast {seq_fast} -> {'same' if seq_full == seq_fast else 'DIFFERENT'}",
        "",
    ]
    return full.seconds / t_fast


def bench_run(image, device, lines, extra=()):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, VD_CACHE_DIR=str(Path(tmp) / "cache"))
        cmd = [sys.executable, "-m", "vd.commands.app", "coarse", str(image), "-o", str(Path(tmp) / "out"), "--json", *extra]
        if device:
            cmd += ["--device", device]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if p.returncode != 0:
            lines.append(f"`vd coarse` failed ({p.returncode}): {p.stderr[-500:]}")
            return
        s = json.loads(p.stdout.strip().splitlines()[-1])
        t = time.perf_counter()
        p2 = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall2 = time.perf_counter() - t
        s2 = json.loads(p2.stdout.strip().splitlines()[-1]) if p2.returncode == 0 else {}
        lines += [
            f"`vd coarse {Path(image).relative_to(REPO)} {' '.join(extra)}` (device {s['device']}, iterations init {s['iters']['init']} / view {s['iters']['view']}"
            + (", CPU defaults" if s["iters"]["cpu_auto"] else "") + ")",
            "",
            f"- wall time {wall:.1f} s, peak RSS {rss / 2**30:.2f} GiB (child process, fresh cache)",
            f"- views added {s['selected']}/{s['max_views']}; Gaussians scaffold {s['totals']['gaussians_scaffold']}, coarse {s['totals']['gaussians_total']}",
            "- per stage: " + ", ".join(f"{m['stage']} {m['seconds']:.1f} s" for m in s.get("memory", [])),
            f"- second identical run (all cache hits: {bool(s2) and s2['scaffold']['cached'] and all(v['cached'] for v in s2['views'])}): {wall2:.1f} s",
            "",
        ]
        if s.get("stopped"):
            lines.append(f"- stopped: {s['stopped'].get('reason')}; hint: {s['stopped'].get('hint')}")
            lines.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--run-args", default="", help="extra flags for the `vd coarse` run, e.g. '--fallback closest'")
    ap.add_argument("--out", default=None, help="append the markdown results to this file")
    a = ap.parse_args()
    import torch

    from test_coarse import make_scene

    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lines = [f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
             f"({os.cpu_count()} CPUs, torch {torch.__version__}, device {dev}"
             + (f", {torch.cuda.get_device_name()}" if dev.startswith("cuda") else "") + ")", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_scan:
            bench_scan("examples/room (256x192)", REPO / "examples" / "room" / "rgb.png", Path(tmp) / "c1", dev, lines)
            img = make_scene(Path(tmp) / "scene")
            bench_scan("procedural test scene (64x48, margin 32)", img, Path(tmp) / "c2", dev, lines, focal=56.0)
    if not a.skip_run:
        bench_run(REPO / "examples" / "room" / "rgb.png", a.device, lines, tuple(a.run_args.split()))
        if not a.run_args:
            bench_run(REPO / "examples" / "room" / "rgb.png", a.device, lines, ("--fallback", "closest"))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
