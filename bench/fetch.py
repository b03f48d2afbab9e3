"""Download throughput of `vd fetch` vs `curl -o` from a loopback HTTP server, side by side.

    flock /tmp/vd-bench.lock python bench/fetch.py [--size-gb 2] [--rounds 2]

A sparse file of SIZE bytes is created under /tmp, served by tests/netservers.py (sendfile,
in its own process), and downloaded alternately by curl and by `vd fetch` (a child process
with a manifest pointing at the server: streaming, sha256 while streaming, fsync, atomic
rename). Wall time includes process start-up for both. Peak RSS of each child comes from
wait4(). Everything is deleted afterwards. Prints a markdown table for bench/fetch.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(cmd, env=None):
    """Run `cmd`; (wall seconds, peak RSS bytes, CPU seconds) of that child alone (wait4)."""
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            errf.seek(0)
            raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {errf.read().decode()[-2000:]}")
    return dt, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


def zeros_sha256(size: int) -> str:
    h = hashlib.sha256()
    block = bytes(16 << 20)
    left = size
    while left:
        n = min(left, len(block))
        h.update(block[:n] if n < len(block) else block)
        left -= n
    return h.hexdigest()


SHA_CPU_PER_GB = 0.0


def sha_cpu_per_gb() -> float:
    import resource

    block = bytes(16 << 20)
    h = hashlib.sha256()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(32):
        h.update(block)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / (32 * len(block) / 1e9)


def main() -> None:
    global SHA_CPU_PER_GB
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp", help="where the downloads are written (/dev/shm takes the disk out)")
    args = ap.parse_args()
    size = int(args.size_gb * (1 << 30))
    curl = shutil.which("curl")
    if not curl:
        raise SystemExit("curl is not installed")

    work = Path(tempfile.mkdtemp(prefix="vd-bench-fetch-", dir=args.dir))
    server = None
    try:
        src = work / "src.bin"
        with open(src, "wb") as f:
            f.truncate(size)                       # sparse: no disk used for the source
        sha = zeros_sha256(size)
        SHA_CPU_PER_GB = sha_cpu_per_gb()
        server = subprocess.Popen([sys.executable, str(REPO / "tests" / "netservers.py"), str(src)],
                                  stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().strip()
        manifest = work / "m.json"
        manifest.write_text(json.dumps({"format": "vd-weights/1", "models": {"bench": {"files": [
            {"name": "big.bin", "size": size, "sha256": sha, "sources": [url]}]}}}))
        env = dict(os.environ, VD_MODELS_DIR=str(work / "models"), VD_CACHE_DIR=str(work / "cache"))
        for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(k, None)
        vd_cmd = [sys.executable, "-m", "vd.commands.app", "--quiet", "fetch", "bench", "--manifest", str(manifest)]
        curl_cmd = [curl, "-s", "-S", "--noproxy", "*", "-o", str(work / "curl.bin"), url]
        # curl does not verify; this row is curl plus the sha256 check vd does while streaming
        curl_sha_cmd = ["sh", "-c", '"$0" -s -S --noproxy "*" -o "$1" "$2" && sha256sum "$1" >/dev/null',
                        curl, str(work / "curl.bin"), url]

        env_nosync = dict(env, VD_FETCH_FSYNC="0")
        tools = (("curl -o", curl_cmd, env), ("vd fetch", vd_cmd, env), ("vd fetch, no fsync", vd_cmd, env_nosync),
                 ("curl -o && sha256sum", curl_sha_cmd, env))
        rows = []
        for r in range(args.rounds):
            for name, cmd, cenv in tools:
                dt, rss, cpu = run_child(cmd, cenv)
                out = work / "curl.bin" if name.startswith("curl") else work / "models" / "bench" / "big.bin"
                assert out.stat().st_size == size, f"{name} wrote {out.stat().st_size} bytes"
                out.unlink()
                rows.append((r, name, dt, rss, cpu))
                print(f"round {r + 1} {name:20s} {dt:6.2f} s  {size / dt / 1e9:5.2f} GB/s  cpu {cpu:5.2f} s  "
                      f"peak RSS {rss / 1e6:6.1f} MB",
                      file=sys.stderr, flush=True)

        def best(name):
            return min(dt for _, n, dt, _, _ in rows if n == name)

        def rss(name):
            return max(m for _, n, _, m, _ in rows if n == name)

        def cpu(name):
            return min(c for _, n, _, _, c in rows if n == name)

        c, v, v0 = best("curl -o"), best("vd fetch"), best("vd fetch, no fsync")
        print()
        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; "
              f"python {platform.python_version()}; file {size / 1e9:.2f} GB ({size} bytes, sparse), "
              f"{args.rounds} rounds, written to {args.dir}")
        print()
        print("| tool | best time (s) | throughput (GB/s) | CPU s (min) | peak RSS (MB) | all runs (s) |")
        print("|---|---:|---:|---:|---:|---|")
        for name, _, _ in tools:
            runs = ", ".join(f"{dt:.2f}" for _, n, dt, _, _ in rows if n == name)
            print(f"| {name} | {best(name):.2f} | {size / best(name) / 1e9:.2f} | {cpu(name):.2f} | "
                  f"{rss(name) / 1e6:.1f} | {runs} |")
        print()
        cs = best("curl -o && sha256sum")
        print(f"vd / curl throughput ratio (best of each): {c / v:.2f} with fsync (vd's default), "
              f"{c / v0:.2f} without (curl does not fsync); goal >= 0.80")
        print(f"vd / (curl + sha256sum) ratio, both verifying: {cs / v:.2f} with fsync, {cs / v0:.2f} without")
        print(f"CPU seconds (min): curl {cpu('curl -o'):.2f}, vd {cpu('vd fetch'):.2f} "
              f"(vd also hashes: sha256 costs about {size / 1e9 * SHA_CPU_PER_GB:.2f} s here)")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
