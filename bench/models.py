"""Benchmarks of the models area (issue 5).

    flock /tmp/vd-bench.lock python bench/models.py            # print results as markdown
    flock /tmp/vd-bench.lock python bench/models.py --write    # also rewrite bench/models.md

1. `vd depth` on the example (file backend): peak RSS and wall time of a fresh process, cold
   cache and warm cache (the child's ru_maxrss from os.wait4).
2. On CUDA only: one 512x512 FLUX.1-Fill-dev inpaint (25 steps, guidance 30) with a full-size
   random-initialised transformer (built from the bundled config on the meta device, then filled
   with N(0, 0.02) in bf16) and a random Flux AE, in each offload mode (sequential, model, none):
   time and peak VRAM (torch.cuda.max_memory_allocated). Goal: <= 16 GB peak in some mode.
   No weights are needed; without CUDA the rows say "not measured: no GPU".
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "room" / "rgb.png"


def bench_depth() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, VD_CACHE_DIR=str(Path(tmp) / "cache"), VD_MODELS_DIR=str(Path(tmp) / "models"))
        for label in ("cold cache", "warm cache"):
            # one fresh interpreter per run, each measured alone (RUSAGE_CHILDREN keeps the max,
            # so measure through a wrapper process that reports its own child's peak)
            code = (
                "import os,resource,subprocess,sys,time;"
                "t=time.perf_counter();"
                f"r=subprocess.run([sys.executable,'-m','vd.commands.app','depth',{str(EXAMPLE)!r},'-o',{str(Path(tmp) / 'out')!r},'--json'],capture_output=True,text=True);"
                "dt=time.perf_counter()-t;"
                "print(r.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024);"
                "sys.stderr.write(r.stderr)"
            )
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            rc, dt, rss = p.stdout.split()
            if int(rc) != 0:
                raise SystemExit(f"vd depth failed:\n{p.stderr}")
            rows.append({"case": f"vd depth examples/room/rgb.png (256x192, file backend, {label})",
                         "seconds": float(dt), "peak_rss_mib": int(rss) / 2**20})
    return rows


def bench_flux(steps: int = 25, size: int = 512) -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return [{"case": f"FLUX.1-Fill-dev {size}x{size}, {steps} steps, offload={m}", "result": "not measured: no GPU lent"}
                for m in ("sequential", "model", "none")]
    from random_flux import random_flux_parts
    from vd.models import flux_fill as F

    t0 = time.perf_counter()
    tr, ae, txt, vec = random_flux_parts()
    n_params = sum(p.numel() for p in tr.parameters())
    print(f"built random transformer ({n_params / 1e9:.2f} B params) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rng = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, size, size, generator=rng) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    rows = []
    for mode in ("sequential", "model", "none"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        ff = None
        try:
            ff = F.FluxFill(tr, ae, txt, vec, device="cuda", dtype=torch.bfloat16, offload=mode)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            ff.sample(img, mask, seed=0, steps=steps, guidance=30.0)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t1
            peak = torch.cuda.max_memory_allocated()
            rows.append({"case": f"FLUX.1-Fill-dev {size}x{size}, {steps} steps, offload={mode}", "seconds": dt,
                         "peak_vram_gib": peak / 2**30})
        except torch.cuda.OutOfMemoryError:
            rows.append({"case": f"FLUX.1-Fill-dev {size}x{size}, {steps} steps, offload={mode}", "result": "CUDA out of memory"})
        finally:
            if ff is not None:
                ff.close()  # removes the sequential hooks; the modules stay ours
            tr.to("cpu")
            ae.to("cpu")
            torch.cuda.empty_cache()
    return rows


def markdown(depth_rows, flux_rows, note: str = "") -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = [
        "# bench: models (issue 5)",
        "",
        f"Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, GPU: {dev}; "
        f"torch {torch.__version__}; {datetime.date.today().isoformat()}.",
        "Run: `flock /tmp/vd-bench.lock python bench/models.py --write`.",
        *([note] if note else []),
        "",
        "## vd depth on the example (fresh process each)",
        "",
        "| case | wall time | peak RSS |",
        "|---|---:|---:|",
    ]
    for r in depth_rows:
        lines.append(f"| {r['case']} | {r['seconds']:.2f} s | {r['peak_rss_mib']:.0f} MiB |")
    lines += ["", "## FLUX.1-Fill-dev inpaint, full-size random transformer (bf16), 512x512, 25 steps", "",
              "| case | time | peak VRAM |", "|---|---:|---:|"]
    for r in flux_rows:
        if "result" in r:
            lines.append(f"| {r['case']} | {r['result']} | {r['result']} |")
        else:
            lines.append(f"| {r['case']} | {r['seconds']:.1f} s | {r['peak_vram_gib']:.2f} GiB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="models benchmarks")
    ap.add_argument("--write", action="store_true", help="rewrite bench/models.md with the results")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--skip-flux", action="store_true")
    ap.add_argument("--note", default="", help="a line about the machine's conditions, written under the header")
    a = ap.parse_args(argv)
    depth_rows = bench_depth()
    flux_rows = [] if a.skip_flux else bench_flux(a.steps)
    md = markdown(depth_rows, flux_rows, a.note)
    print(md)
    if a.write:
        (REPO / "bench" / "models.md").write_text(md)


if __name__ == "__main__":
    main()
