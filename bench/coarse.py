"""Benchmarks of the coarse stage (results: bench/coarse.md).

    flock /tmp/vd-bench.lock python bench/coarse.py [--skip-run] [--device cpu] [--out bench/coarse-results.md]

1. Hole scan as the coarse loop runs it: `vd coarse --fallback closest` builds the views, then
   the loop is replayed view by view on the same scene states and the same 100 candidates:
   the upstream way (`scan_hole_ratios_full`: every candidate rendered with the real renderer
   at full size, one by one) against vd's (`HoleScan.add` of the view's new Gaussians, then
   `scan_ratios`: reduced-resolution ratios, close calls exactly at full size). Reports the
   times per view and over the loop, the picks of both, and the view-1 picks for several
   bands / fallbacks; for the bundled example (examples/room) and the procedural test scene.
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


def coarse_for(image, cache_dir, device, n_frames=2, **kw):
    from vd.cache import Cache
    from vd.stages.coarse import CoarseParams, run_coarse

    p = CoarseParams(n_frames=n_frames, **kw.pop("params", {}))
    return run_coarse(image, p, depth_backend="file", inpaint_backend="telea", device=device, cache=Cache.open(cache_dir), **kw)


def loop_parts(r):
    """The scaffold and each added view's Gaussians, in the order the loop appended them."""
    import torch

    parts, start = [r.scaffold], len(r.scaffold)
    for v in r.summary["views"]:
        n = int(v["added_gaussians"])
        parts.append(r.gaussians.select(torch.arange(start, start + n)))
        start += n
    return parts


def bench_scan(name, image, cache_dir, device, lines, n_frames=10, **kw):
    """The hole scan as the coarse loop runs it, view after view, against the full scan."""
    from dataclasses import replace

    from vd.gaussians import Gaussians
    from vd.holes import HoleScan, scan_hole_ratios_full
    from vd.params import CoarseParams
    from vd.stages.coarse_view import candidate_camera, dense_poses, scan_ratios
    from vd.stages.select import select

    t = time.perf_counter()
    params = dict(fallback="closest")
    r = coarse_for(image, cache_dir, device, n_frames=n_frames, params=params, **kw)
    t_run = time.perf_counter() - t
    p = CoarseParams(n_frames=n_frames, **params)
    poses, _ = dense_poses(r.views[0], p)
    Kc, W, H = candidate_camera(r.views[0], p.margin)
    parts = loop_parts(r)
    run_picks = [int(v["dense_index"]) for v in r.summary["views"]]

    # 1. the loop, replayed: view k scans the scaffold + views 1..k-1
    rows, full_total, vd_total, picks_full, picks_vd, max_err = [], 0.0, 0.0, [], [], 0.0
    scan = HoleScan(poses, Kc, W, H, device=r.scaffold.means.device)
    for k in range(1, min(len(parts), n_frames - 2) + 1):
        g = Gaussians.cat(parts[:k])
        full = scan_hole_ratios_full(g, poses, Kc, W, H, backend="auto")
        t = time.perf_counter()
        scan.add(parts[k - 1])
        ratios, n_exact, _ = scan_ratios(scan, picks_vd, p)
        secs = time.perf_counter() - t
        max_err = max(max_err, float(np.abs(scan.fast_ratios() - full.ratios).max()))
        a = select(full.ratios, picks_full, min_ratio=p.min_ratio, max_ratio=p.max_ratio, fallback=p.fallback)
        b = select(ratios, picks_vd, min_ratio=p.min_ratio, max_ratio=p.max_ratio, fallback=p.fallback)
        if a is None or b is None:
            break
        picks_full.append(a.index)
        picks_vd.append(b.index)
        full_total += full.seconds
        vd_total += secs
        rows.append(f"| {k} | {len(g)} | {full.seconds:.2f} | {secs:.2f} | {full.seconds / secs:.1f}x | {n_exact} | {a.index} | {b.index} |")

    # 2. other bands and fallbacks on the scaffold alone (view 1)
    agree = []
    for band in [(0.05, 0.25), (0.01, 0.45), (0.1, 0.2), (0.2, 0.4)]:
        full = scan_hole_ratios_full(parts[0], poses, Kc, W, H, backend="auto").ratios
        for fb in ("none", "closest"):
            q = replace(p, min_ratio=band[0], max_ratio=band[1], fallback=fb)
            s = HoleScan(poses, Kc, W, H).add(parts[0])
            rr, _, _ = scan_ratios(s, [], q)
            kw_ = dict(min_ratio=band[0], max_ratio=band[1], fallback=fb)
            a, b, c = select(full, [], **kw_), select(rr, [], **kw_), select(s.fast_ratios(), [], **kw_)
            agree.append((band, fb, a and a.index, b and b.index, c and c.index))
    same = sum(1 for _, _, a, b, _ in agree if a == b)
    same_raw = sum(1 for _, _, a, _, c in agree if a == c)
    first_full = float(rows[0].split("|")[3]) if rows else float("nan")
    first_vd = float(rows[0].split("|")[4]) if rows else float("nan")
    lines += [
        f"### {name}: {len(poses)} candidates at {W}x{H}, scan scale {scan.scale:.2f}"
        f" (`vd coarse --fallback closest` run for the views: {t_run:.0f} s)",
        "",
        "| view | Gaussians | full scan s | vd scan s | speed-up | exactly measured | pick (full) | pick (vd) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"whole loop: full {full_total:.1f} s, vd {vd_total:.2f} s: **{full_total / max(vd_total, 1e-9):.1f}x** "
        f"(view 1 alone {first_full / max(first_vd, 1e-9):.1f}x, views 2+ "
        f"{(full_total - first_full) / max(vd_total - first_vd, 1e-9):.1f}x); picks identical to the full scan's: "
        f"{'yes' if picks_full == picks_vd else 'NO'} ({picks_vd}; the run itself picked {run_picks}); "
        f"fast-scan max |ratio error| over the loop {max_err:.4f}",
        "",
        f"view-1 selection in other settings, same as the full scan in {same}/{len(agree)} "
        f"(fast ratios alone, without exact close calls: {same_raw}/{len(agree)}): "
        + ", ".join(f"[{b[0]},{b[1]}] {fb}: {a}/{c}" for b, fb, a, c, _ in agree),
        "",
    ]
    return full_total / max(vd_total, 1e-9)


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
            bench_scan("procedural test scene (64x48, margin 32)", img, Path(tmp) / "c2", dev, lines, n_frames=6, focal=56.0)
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
