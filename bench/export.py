"""Benchmark `vd export` formats and `vd refine` speed (CPU). Writes bench/export.md.

    flock /tmp/vd-bench.lock python bench/export.py [--n 1000000] [--quick]

- ply / compressed-ply / splat: export time and file size for N random Gaussians (SH degree 3 and 0).
- colmap: the dataset of a small procedural scene (4 views, 64x48) with points3D from N Gaussians
  (capped at 200k points).
- video: a short MP4 of a smaller scene (rendering dominates; CPU torch renderer).
- refine: iterations per second on CPU for the small procedural plane scene.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def random_gaussians(n, deg, seed=0):
    import torch

    from vd.gaussians import Gaussians

    rng = np.random.default_rng(seed)
    k = (deg + 1) ** 2
    f = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return Gaussians(f(rng.uniform(-5, 5, (n, 3))), f(rng.uniform(-6, -2, (n, 3))), f(rng.normal(size=(n, 4))),
                     f(rng.uniform(-3, 5, n)), f(np.concatenate([rng.uniform(-1.5, 1.5, (n, 1, 3)), rng.normal(0, 0.2, (n, k - 1, 3))], 1)))


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--refine-iters", type=int, default=20)
    ap.add_argument("--video-gaussians", type=int, default=20000)
    ap.add_argument("--video-frames", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench" / "export.md"))
    args = ap.parse_args()

    import torch

    from vd.export import export_gaussians

    rows = []
    td = Path(tempfile.mkdtemp(prefix="vd-bench-export-"))
    for deg in (3, 0):
        g = random_gaussians(args.n, deg)
        sizes = {}
        for fmt, name in (("ply", "s.ply"), ("compressed-ply", "s.compressed.ply"), ("splat", "s.splat")):
            if fmt == "splat" and deg != 0:
                continue
            rep, dt = timed(lambda g=g, name=name, fmt=fmt: export_gaussians(g, td / name, fmt))
            sizes[fmt] = rep["bytes"]
            rows.append({"format": fmt, "gaussians": args.n, "sh_degree": deg if fmt != "splat" else 0,
                         "seconds": round(dt, 2), "bytes": rep["bytes"], "bytes_per_gaussian": round(rep["bytes"] / args.n, 1)})
            (td / name).unlink()
            print(rows[-1], flush=True)
        rows.append({"format": f"ratio float/compressed (SH {deg})", "value": round(sizes["ply"] / sizes["compressed-ply"], 2)})
        print(rows[-1], flush=True)
        del g

    # colmap dataset: small views, points from N Gaussians
    from _export_scene import make_views, noisy, plane_gaussians

    from vd.export.colmap import points_from_gaussians, write_colmap_dataset

    g = random_gaussians(args.n, 0)
    views = make_views(plane_gaussians())
    rep, dt = timed(lambda g=g: write_colmap_dataset(td / "ds", views, points=points_from_gaussians(g)))
    size = sum(f.stat().st_size for f in (td / "ds").rglob("*") if f.is_file())
    rows.append({"format": "colmap", "gaussians": args.n, "views": 4, "points3D": rep.points, "seconds": round(dt, 2), "bytes": size,
                 "note": "4 views of 64x48; points3D capped at 200k (seeded subsample)"})
    print(rows[-1], flush=True)
    del g

    # video: a smaller scene
    from vd.export.video import export_video

    gv = random_gaussians(args.video_gaussians, 0)
    gv.means[:, 2] = gv.means[:, 2].abs() + 3
    gv.log_scales[:] = gv.log_scales.clamp(max=-4.0)
    K = np.array([[400.0, 0, 256], [0, 400.0, 192], [0, 0, 1]])
    rep, dt = timed(lambda: export_video(gv, td / "v.mp4", K=K, width=512, height=384, frames=args.video_frames, radius=1.0, device="cpu"))
    rows.append({"format": "video (mp4)", "gaussians": args.video_gaussians, "frames": args.video_frames, "size": "512x384",
                 "seconds": round(dt, 2), "bytes": rep.bytes, "fps_rendered": round(args.video_frames / dt, 2)})
    print(rows[-1], flush=True)

    # refine iterations per second (CPU, small scene)
    from vd.export.colmap import load_dataset
    from vd.stages.refine import resolve_params, run_refine

    gp = plane_gaussians()
    write_colmap_dataset(td / "ds2", make_views(gp))
    dv, _ = load_dataset(td / "ds2")
    speeds = []
    for _ in range(3):  # the machine is shared: report the median of three runs
        _, info = run_refine(dv, noisy(gp), resolve_params({}, iters=args.refine_iters), device="cpu")
        speeds.append(info["iters_per_second"])
    rows.append({"format": "refine (CPU)", "gaussians": len(gp), "views": 4, "size": "64x48", "iters": args.refine_iters,
                 "iters_per_second": round(float(np.median(speeds)), 2), "runs": [round(x, 2) for x in speeds],
                 "depth_abs_rel": [round(info["metrics"]["before"]["depth_abs_rel"], 4), round(info["metrics"]["after"]["depth_abs_rel"], 4)],
                 "normal_deg": [round(info["metrics"]["before"]["normal_deg"], 2), round(info["metrics"]["after"]["normal_deg"], 2)]})
    print(rows[-1], flush=True)
    import shutil

    shutil.rmtree(td, ignore_errors=True)
    machine = f"CPU dev machine, {os.cpu_count()} cores, shared with 7 concurrent jobs; torch {torch.__version__}, {platform.python_version()}"
    write_md(Path(args.out), rows, machine)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps({"machine": machine, "date": str(datetime.date.today()), "rows": rows}, indent=2))


def write_md(path: Path, rows, machine):
    lines = ["# vd export / refine benchmark", "", f"Machine: {machine}. Date: {datetime.date.today()}.",
             "Command: `flock /tmp/vd-bench.lock python bench/export.py` (numbers from one run; the machine is shared, so",
             "timings are noisy upper bounds).", "", "| what | Gaussians | SH | time (s) | size | bytes/Gaussian | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "value" in r:
            lines.append(f"| {r['format']} | | | | | | **{r['value']}x** (target >= 3.5x) |")
            continue
        if r["format"].startswith("refine"):
            lines.append(f"| {r['format']} | {r['gaussians']} | 0 | | | | **{r['iters_per_second']} it/s** (median of {r['runs']}), {r['views']} views of {r['size']}, {r['iters']} iters; "
                         f"depth AbsRel {r['depth_abs_rel'][0]} -> {r['depth_abs_rel'][1]}, normal error {r['normal_deg'][0]} -> {r['normal_deg'][1]} deg |")
            continue
        mb = f"{r['bytes'] / 1e6:.1f} MB"
        notes = r.get("note", "")
        if r["format"].startswith("video"):
            notes = f"{r['frames']} frames {r['size']} (smaller scene), {r['fps_rendered']} frames/s rendered+encoded"
        bpg = r.get("bytes_per_gaussian", "")
        lines.append(f"| {r['format']} | {r['gaussians']} | {r.get('sh_degree', '')} | {r['seconds']} | {mb} | {bpg} | {notes} |")
    lines += ["", "GPU refine speed: not measured (no GPU lent to this task).", ""]
    old = path.read_text() if path.exists() else ""
    keep = old[old.index("<!-- section:share -->"):] if "<!-- section:share -->" in old else ""  # bench/share.py's section
    path.write_text("\n".join(lines) + ("\n" + keep if keep else ""))


if __name__ == "__main__":
    main()
