"""Benchmark of the fine stage (issue 7): `vd fine` (MCS with Flux Fill) on a procedural coarse scene.

    flock /tmp/vd-bench.lock python bench/fine.py            # print results (markdown + JSON)
    flock /tmp/vd-bench.lock python bench/fine.py --cpu-only # only the tiny-model CPU row

1. On CUDA: the fine stage at 512x384 (fine frame 544x416 with the 16 px margins) with the defaults
   (8 views, last 9 of 25 steps, 192 GS iterations per rectification, rect weight 0.5), with a
   full-size random-initialised FLUX.1-Fill-dev transformer built from the bundled config in bf16
   (random weights time the same as real ones) and a random Flux AE, for --offload none and model.
   Reports wall time (cold cache, model construction excluded and listed apart) and peak VRAM
   (torch.cuda.max_memory_allocated over the run, weights included), against VistaDream's
   5-8 min per scene and ~22 GB. Goal: < 2 min on an H100 and < 24 GB peak.
2. On CPU: the same stage with the tiny random Flux Fill of the tests (real channel layout) on a
   small scene, to show the loop's cost without the model.

The coarse scene is procedural (a back wall, a box in front, lifted with vd.lift), written in the
real coarse output layout with vd.stages.coarse_folder, so the stage reads it like a real one.
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

REPO = Path(__file__).resolve().parents[1]


def make_scene(folder: Path, width: int, height: int, *, n_frames: int = 10, dense_multiplier: int = 10) -> Path:
    import numpy as np
    import torch

    from vd.cameras import look_at
    from vd.lift import gaussians_from_rgbd
    from vd.render import render
    from vd.stages.coarse_folder import write_coarse_folder
    from vd.views import View

    f = 0.9 * width
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    depth = np.full((height, width), 4.0, np.float32) + 0.3 * np.sin(xx / width * 6.0)
    box = (abs(xx - width / 2) < width * 0.18) & (abs(yy - height / 2) < height * 0.18)
    depth[box] = 2.5
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
    rgb[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
    rgb[..., 2] = np.where(((xx // 16 + yy // 16) % 2) == 0, 200, 60)
    rgb[box] = [230, 180, 40]
    g = gaussians_from_rgbd(rgb, depth, K, np.eye(4, dtype=np.float32), None)
    full = np.ones((height, width), bool)
    frames = [View("input", "input", rgb, depth, K, np.eye(4), full, full, np.zeros((height, width), bool), 0)]
    for i, x in enumerate((-0.5, 0.5)):
        pose = look_at((x, -0.1, 0.2), (0.0, 0.0, 3.0))
        vm = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32)[None]
        r = render(g, vm, torch.as_tensor(K)[None], width, height, backend="torch" if not torch.cuda.is_available() else "auto")
        hole = r.alpha[0].cpu().numpy() < 0.5
        frames.append(View(f"view_{i}", "view", (r.rgb[0].clamp(0, 1).cpu().numpy() * 255).astype(np.uint8),
                            r.depth[0].cpu().numpy().astype(np.float32), K, pose, hole, ~hole, hole, None))
    write_coarse_folder(folder, frames, g, g, {"stage": "coarse", "params": {"n_frames": n_frames, "dense_multiplier": dense_multiplier}})
    return folder


class _Backend:
    """The slice of FluxFillInpaint that FluxDenoiser uses, around an already built FluxFill."""

    def __init__(self, ff, identity: str):
        self.flux = ff
        self.identity = identity
        self.device = str(ff.device)

    def release(self):
        self.flux.park()


def full_size_flux(offload: str):
    import torch

    from random_flux import random_flux_parts
    from vd.models import flux_fill as F

    tr, ae, txt, vec = random_flux_parts()
    return F.FluxFill(tr, ae, txt, vec, device="cuda", dtype=torch.bfloat16, offload=offload)


def tiny_flux():
    sys.path.insert(0, str(REPO / "tests"))
    from flux_tiny import make_tiny_flux

    from vd.models.flux_fill import FluxFillInpaint

    tmp = Path(tempfile.mkdtemp(prefix="vd-bench-tinyflux-"))
    t = make_tiny_flux(tmp)
    return FluxFillInpaint(device="cpu", offload="none", paths={k: t[k] for k in ("transformer", "ae", "txt", "vec")},
                           config=t["config"])


def run_case(label: str, scene: Path, params, backend, device: str) -> dict:
    import torch

    from vd.cache import Cache
    from vd.stages.denoisers import FluxDenoiser
    from vd.stages.fine import run_fine

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VD_CACHE_DIR"] = str(Path(tmp) / "cache")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = run_fine(scene, Path(tmp) / "out", params, denoiser_factory=lambda: FluxDenoiser(backend=backend),
                       device=device, cache=Cache.open())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        s = res.summary
        steps = s["steps"]
        row = {
            "case": label,
            "seconds": round(dt, 2),
            "select_s": s["timings"]["select_s"],
            "per_step_s": round(sum(r["wall_s"] for r in steps) / max(len(steps), 1), 2),
            "model_s": round(sum(r["model_s"] for r in steps), 2),
            "rectify_s": round(sum(r["rectify_s"] for r in steps) + (s["final"].get("seconds") or 0), 2),
            "render_encode_s": round(sum(r["render_encode_s"] for r in steps), 2),
            "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
            "frame": [s["frame"]["width"], s["frame"]["height"]],
            "views": len(s["views"]),
            "steps": len(steps),
            "gaussians": s["gaussians"]["coarse"],
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-only", action="store_true")
    args = ap.parse_args()
    import torch

    from vd.params import FineParams

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if torch.cuda.is_available() and not args.cpu_only:
            scene = make_scene(Path(tmp) / "coarse512", 512, 384)
            for offload in ("none", "model"):
                t0 = time.perf_counter()
                ff = full_size_flux(offload)
                build = time.perf_counter() - t0
                row = run_case(f"vd fine 512x384, full-size random Flux Fill bf16, offload={offload}, defaults",
                               scene, FineParams(), _Backend(ff, f"bench-random:{offload}"), "cuda")
                row["model_build_s"] = round(build, 1)
                rows.append(row)
                ff.park()
                ff.close()
                del ff
                torch.cuda.empty_cache()
        else:
            rows.append({"case": "vd fine 512x384, full-size random Flux Fill bf16, defaults (8 views, 9/25 steps, 192 GS iters)",
                         "result": "not measured: no GPU lent"})
        scene = make_scene(Path(tmp) / "coarse64", 64, 48, n_frames=3, dense_multiplier=3)
        params = FineParams(views=2, steps=2, total_steps=25, gs_iters=4)
        rows.append(run_case("vd fine 64x48 (frame 96x80), tiny random Flux Fill, CPU, 2 views, 2/25 steps, 4 GS iters",
                             scene, params, tiny_flux(), "cpu"))
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print()
    print("| case | time | peak VRAM | per step | model | rectify | render+encode |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "result" in r:
            print(f"| {r['case']} | {r['result']} | | | | | |")
        else:
            vram = f"{r['peak_vram_gib']} GiB" if r["peak_vram_gib"] is not None else "n/a (CPU)"
            print(f"| {r['case']} | {r['seconds']} s | {vram} | {r['per_step_s']} s | {r['model_s']} s | "
                  f"{r['rectify_s']} s | {r['render_encode_s']} s |")


if __name__ == "__main__":
    main()
