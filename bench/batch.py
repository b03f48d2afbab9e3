"""Benchmark `vd batch`: Ray's per-task overhead against serial, throughput with 1 and 2 Ray
workers, and a remote-cache hit against recomputing.

    python bench/batch.py [--images 4] [--out bench/batch-results.json]

Scenes are the tests' tiny procedural RGB-D scene (64x48, file depth, telea, torch renderer,
4 frames), tinted per image so that every image has its own cache keys. Every measurement uses a
fresh cache folder, so "cold" means cold. Prints a Markdown table and writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

OPTIONS = {"depth_backend": "file", "inpaint_backend": "telea", "render_backend": "torch", "device": "cpu",
           "focal": 56.0, "n_frames": 4, "dense_multiplier": 3, "margin": 8, "init_iters": 2, "view_iters": 3}


def _scenes(base: Path, n: int) -> list[Path]:
    from test_batch import scenes

    return scenes(base, n)


def _batch(images, out: Path, cache: Path, executor: str, num_cpus: int | None = None, remote: str | None = None) -> tuple[float, list]:
    from vd.batch import BatchSpec, plan_jobs, run_batch

    os.environ["VD_CACHE_DIR"] = str(cache)
    if remote:
        os.environ["VD_CACHE_REMOTE"] = remote
    else:
        os.environ.pop("VD_CACHE_REMOTE", None)
    jobs = plan_jobs(images, out, OPTIONS)
    if executor == "ray":  # the cluster's start is measured apart (it is paid once per batch)
        import ray

        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("VD_", "OMP_"))}})
    t = time.perf_counter()
    try:
        rows = run_batch(jobs, BatchSpec(stages=("coarse",), gpus_per_task=0), out, executor=executor)
    finally:
        if executor == "ray":
            ray.shutdown()
    wall = time.perf_counter() - t
    assert all(r["status"] == "ok" for r in rows), rows
    return wall, rows


def _ray_noop_overhead(n: int = 200) -> dict:
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024)
    start = time.perf_counter() - t

    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    ray.get([noop.remote(i) for i in range(4)])  # warm the workers
    t = time.perf_counter()
    for i in range(n):
        ray.get(noop.remote(i))
    sequential = (time.perf_counter() - t) / n
    t = time.perf_counter()
    ray.get([noop.remote(i) for i in range(n)])
    pipelined = (time.perf_counter() - t) / n
    ray.shutdown()
    return {"ray_init_s": start, "noop_roundtrip_s": sequential, "noop_pipelined_s": pipelined}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3, help="optimisation iterations per view (3: the tests' scene; more: heavier tasks)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "batch-results.json")
    args = ap.parse_args()
    OPTIONS.update(view_iters=args.iters, init_iters=max(2, args.iters * 2 // 3))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "load_average": os.getloadavg(), "images": args.images, "options": OPTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = _scenes(tmp / "in", args.images)
        res.update(_ray_noop_overhead())
        # cold caches: serial, Ray with 1 worker, Ray with 2 workers
        res["serial_cold_s"], _ = _batch(images, tmp / "o1", tmp / "c1", "serial")
        res["ray1_cold_s"], _ = _batch(images, tmp / "o2", tmp / "c2", "ray", num_cpus=1)
        res["ray2_cold_s"], _ = _batch(images, tmp / "o3", tmp / "c3", "ray", num_cpus=2)
        # warm cache (all hits): what is left is the per-task overhead of each executor
        res["serial_warm_s"], _ = _batch(images, tmp / "o1", tmp / "c1", "serial")
        res["ray2_warm_s"], _ = _batch(images, tmp / "o3", tmp / "c3", "ray", num_cpus=2)
        # remote tier: publish from one cache, then a fresh local cache that only has the remote
        remote = f"file://{tmp / 'shared'}"
        res["remote_publish_s"], _ = _batch(images, tmp / "o4", tmp / "c4", "serial", remote=remote)
        res["remote_hit_s"], rows = _batch(images, tmp / "o5", tmp / "c5", "serial", remote=remote)
        assert all(r["cache"]["computed"] == 0 for r in rows), rows
        res["recompute_s"], _ = _batch(images, tmp / "o6", tmp / "c6", "serial")
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    n = args.images
    print(f"{res['date']}, {res['machine']}, load {', '.join(f'{x:.1f}' for x in res['load_average'])}, {n} images, "
          f"view_iters={OPTIONS['view_iters']}\n")
    print("| measurement | total | per image |\n|---|---|---|")
    for key, label in [("serial_cold_s", "serial, cold cache"), ("ray1_cold_s", "ray, 1 worker, cold"),
                       ("ray2_cold_s", "ray, 2 workers, cold"), ("serial_warm_s", "serial, all cache hits"),
                       ("ray2_warm_s", "ray, 2 workers, all cache hits"), ("remote_hit_s", "serial, cold local cache, warm file:// remote"),
                       ("recompute_s", "serial, recompute (cold local, no remote)")]:
        print(f"| {label} | {res[key]:.2f} s | {res[key] / n:.2f} s |")
    print(f"\nray.init (local cluster, 2 CPUs): {res['ray_init_s']:.2f} s; no-op task round trip {res['noop_roundtrip_s'] * 1e3:.2f} ms, "
          f"pipelined {res['noop_pipelined_s'] * 1e3:.2f} ms per task")


if __name__ == "__main__":
    main()
