#!/usr/bin/env python3
"""The GPU validation run: every GPU-only question of vd answered in one call (bench/gpu.md).

    bash bench/gpu/run.sh                      # on the GPU machine (installs the carried wheels first)
    python bench/gpu/run.py --dry-run --out D  # the same logic on the CPU with tiny sizes (a test runs this)

Sections (bench/gpu/sections.py), each in its own child process with a time box, so that a crash,
an out-of-memory error or a hang loses only that section, in the order of what matters: env
(versions, the diffusers import chain, `vd doctor`), flux (one FLUX.1-Fill-dev step per offload
mode), quant (each GGUF quantisation of its transformer: one step, its peak), klein (FLUX.2 [klein]:
its text encoder alone, then a 4-step inpaint), depth (MoGe-2 ViT-L, ViT-B and ViT-S: one estimate each,
its peak beside the plan's allowance), plan (the memory plan's choice of inpainter, quantisation and offload under budgets of 8, 12,
16 and 24 GiB, run with random full-size weights within the budget), coarse-fine (`vd coarse` with flux-fill, then `vd fine`), render-torch and render-gsplat
(forward and forward+backward), tests (the `gpu`-marked tests), budget (`vd coarse --offload auto
--vram-budget B` for budgets that plan none, model and sequential). gsplat's CUDA kernels compile
in the background from the start; the sections that use gsplat wait for them. Every command's
peak VRAM is measured from a reset before it (across vd's per-stage resets). Results are
rewritten after every section: $OUT/results.json and $OUT/results.md, with run.log,
gsplat-build.log and pytest.log beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# (section, time box in seconds, runs after the gsplat build), the answers that matter first.
# The boxes and run.sh's installs fit TOTAL_S, so a rerun fits in the same 15-minute lease.
PLAN = [
    ("env", 15, False),  # versions, the diffusers import chain, vd doctor
    ("flux", 45, False),  # one FLUX.1-Fill-dev (bf16) step per offload mode
    ("quant", 55, False),  # each GGUF quantisation (q8_0, q5_k, q4_k): one step, its peak
    ("klein", 30, False),  # FLUX.2 [klein]: the text encoder alone, then one 4-step inpaint
    ("depth", 15, False),  # MoGe-2 ViT-L/B/S through vd's MogeDepth: seconds, peak against the plan and the trace
    ("plan", 70, False),  # the memory plan's choice under 8/12/16/24 GiB, run within the budget
    ("coarse-fine", 40, False),  # end to end (torch renderer: gsplat may still be compiling)
    ("render-torch", 10, False),
    ("render-gsplat", 15, True),
    ("tests", 20, True),
    ("budget", 25, False),  # vd coarse --vram-budget values that plan none, model and sequential
]
TOTAL_S = 360  # run.sh's whole run, installs included; the device call's timeout_s is 390
BUILD_RESERVE_S = 90  # the gsplat build may use all but this much of what is left for the sections after it
BUILD_CODE = ("import time; t = time.time(); from gsplat.cuda._backend import _C; "
              "assert _C is not None, 'gsplat found no CUDA toolkit'; print(f'gsplat kernels ready in {time.time() - t:.0f} s')")


class Results:
    """results.json and results.md in `out`, rewritten whenever something is added."""

    def __init__(self, out: Path, dry: bool, budget_s: float):
        self.out = out
        self.data = {"run": {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dry_run": dry,
                             "budget_s": budget_s, "host": platform.node(), "python": platform.python_version()},
                     "gsplat_build": None, "sections": {}}

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.write()

    def section(self, name: str, value: dict) -> None:
        self.data["sections"][name] = value
        self.write()

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "results.md").write_text(markdown(self.data))


class GsplatBuild:
    """gsplat's JIT compile of its CUDA kernels (torch.utils.cpp_extension + nvcc), in the background."""

    def __init__(self, out: Path, dry: bool, env: dict, installed: bool):
        self.proc = None
        self.t0 = time.perf_counter()
        self.info: dict = {"command": f"MAX_JOBS={env.get('MAX_JOBS')} TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST')} "
                                      f"python -c \"{BUILD_CODE}\""}
        if dry:
            self.info["status"] = "skipped: needs nvcc and a CUDA device (dry run)"
            return
        if not installed:
            self.info["status"] = "skipped: gsplat is not installed (VD_GPU_GSPLAT_SITE unset; see bench/gpu/run.sh)"
            return
        self.log = open(out / "gsplat-build.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-c", BUILD_CODE], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> dict:
        if self.proc is not None and "status" not in self.info:
            try:
                rc = self.proc.wait(timeout=max(timeout, 0))
                self.info["status"] = "ok" if rc == 0 else f"failed (exit {rc}; see gsplat-build.log)"
            except subprocess.TimeoutExpired:
                _kill(self.proc)
                self.info["status"] = f"not finished after {time.perf_counter() - self.t0:.0f} s (killed)"
            self.info["seconds"] = round(time.perf_counter() - self.t0, 1)
            self.log.close()
        return self.info

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ok(self) -> bool:
        return self.info.get("status") == "ok"


def _with_path(env: dict, folder) -> dict:
    if not folder:
        return env
    return dict(env, PYTHONPATH=os.pathsep.join(x for x in (folder, env.get("PYTHONPATH")) if x))


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_group(names: list[str], box: float, work: Path, out: Path, dry: bool, gsplat_ok: bool, env: dict) -> dict:
    """Run sections in one child process within `box` seconds; {name: result dict}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(names), "--work", str(work),
           "--out", str(out)] + (["--dry-run"] if dry else []) + (["--gsplat-ok"] if gsplat_ok else [])
    t0 = time.perf_counter()
    with open(out / "run.log", "a") as log:
        log.write(f"\n===== {', '.join(names)} (time box {box:.0f} s)\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=box)
            ended = f"exit {rc}"
        except subprocess.TimeoutExpired:
            _kill(proc)
            ended = f"timeout after {box:.0f} s"
    results = {}
    for name in names:
        status_file = work / f"{name}.status"
        data_file = work / f"{name}.json"
        status = status_file.read_text().strip() if status_file.exists() else f"incomplete ({ended})"
        data = json.loads(data_file.read_text()) if data_file.exists() else {}
        results[name] = {"status": status, "data": data}
    results[names[-1]]["group_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def orchestrate(args) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").write_text("")
    work = Path(tempfile.mkdtemp(prefix="vd-gpu-work-"))
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    res = Results(out, args.dry_run, args.budget_s)
    env = dict(os.environ, PYTHONUNBUFFERED="1", MAX_JOBS=os.environ.get("MAX_JOBS", "16"),
               TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "vd-torch-ext")))
    gsite = os.environ.get("VD_GPU_GSPLAT_SITE")  # gsplat's own folder: on PYTHONPATH only where it is wanted
    build = GsplatBuild(out, args.dry_run, _with_path(env, gsite), installed=bool(gsite) or args.dry_run)
    res.set("gsplat_build", build.info)
    plan = [p for p in PLAN if not args.only or p[0] in args.only.split(",")]
    # the dry run's sections share one child (one torch import); the real run isolates each
    groups = [plan] if args.dry_run else [[p] for p in plan]
    for group in groups:
        names = [p[0] for p in group]
        if any(p[2] for p in group):
            later = sum(p[1] for g in groups[groups.index(group):] for p in g)
            res.set("gsplat_build", build.wait(deadline - time.perf_counter() - min(later, BUILD_RESERVE_S)))
        left = deadline - time.perf_counter()
        box = min(sum(p[1] for p in group), left)
        if box < 15:
            for n in names:
                res.section(n, {"status": f"skipped: {max(left, 0):.0f} s of the {args.budget_s:.0f} s budget left"})
            continue
        alongside = build.running
        use_gsplat = build.ok and any(p[2] for p in group)
        # env only looks at gsplat (vd doctor); the others must not import it before its kernels are built
        child_env = _with_path(env, gsite) if use_gsplat or names == ["env"] else env
        for name, value in run_group(names, box, work, out, args.dry_run, use_gsplat, child_env).items():
            if alongside:
                value["note"] = "ran while gsplat compiled on the CPUs"
            res.section(name, value)
    res.set("gsplat_build", build.wait(0))  # stops a build that no section waited for
    shutil.rmtree(work, ignore_errors=True)
    res.data["run"]["seconds"] = round(time.perf_counter() - t_start, 1)
    res.write()
    sys.stdout.write(markdown(res.data))
    failed = [n for n, v in res.data["sections"].items() if not str(v.get("status", "")).startswith(("ok", "skipped"))]
    return 1 if failed else 0


def child(args) -> int:
    sys.path.insert(0, str(HERE))
    from sections import SECTIONS, Ctx

    work, out = Path(args.work), Path(args.out)
    for name in args.child.split(","):
        ctx = Ctx(name, work, out, args.dry_run, args.gsplat_ok)
        t0 = time.perf_counter()
        try:
            SECTIONS[name](ctx)
            skipped = ctx.data.get("all", {}).get("skipped") if list(ctx.data) == ["all"] else None
            status = f"skipped: {skipped}" if skipped else f"ok ({time.perf_counter() - t0:.1f} s)"
        except Exception as e:  # noqa: BLE001 - one section's failure must not stop the others
            import traceback

            traceback.print_exc()
            status = f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        (work / f"{name}.status").write_text(status + "\n")
        print(f"{name}: {status}", flush=True)
    return 0


# --------------------------------------------------------------------------- markdown
def _cell(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items() if not isinstance(x, (dict, list)))
    if isinstance(v, list):
        return "; ".join(_cell(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _ratio_table(sections: dict) -> list[str]:
    t = sections.get("render-torch", {}).get("data", {})
    g = sections.get("render-gsplat", {}).get("data", {})
    rows = [k for k in t if "/" in k and isinstance(t[k], dict) and "best_s" in t[k]]
    if not rows:
        return []
    lines = ["", "| Gaussians / pass | torch renderer (s) | gsplat (s) | torch ÷ gsplat |", "|---|---|---|---|"]
    for k in rows:
        tg = g.get(k, {}) if isinstance(g.get(k), dict) else {}
        ratio = f"{t[k]['best_s'] / tg['best_s']:.1f}×" if tg.get("best_s") else "-"
        lines.append(f"| {k} | {t[k]['best_s']} | {tg.get('best_s', '-')} | {ratio} |")
    return lines


def markdown(data: dict) -> str:
    run = data["run"]
    head = "DRY RUN (CPU, tiny sizes: no measurement)" if run["dry_run"] else "GPU run"
    lines = [f"# vd GPU validation: {head}", "", f"started {run['started']} on {run['host']}, python {run['python']}, "
             f"budget {run['budget_s']:.0f} s" + (f", took {run['seconds']} s" if "seconds" in run else ""), ""]
    b = data.get("gsplat_build") or {}
    lines += [f"gsplat build: {b.get('status', 'running')}" + (f" ({b['seconds']} s)" if "seconds" in b else ""), ""]
    for name, sec in data["sections"].items():
        lines += [f"## {name}: {sec.get('status')}", ""] + ([f"({sec['note']})", ""] if sec.get("note") else [])
        d = sec.get("data") or {}
        if d:
            lines += ["| what | result |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in d.items()]
        if name == "render-gsplat":
            lines += _ratio_table(data["sections"])
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; CUDA-only steps are skipped with the reason")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "out"), help="results folder (default $OUT)")
    ap.add_argument("--budget-s", type=float, default=TOTAL_S - 20.0, help="wall-clock budget of all sections together")
    ap.add_argument("--only", default="", help="comma-separated section names")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    ap.add_argument("--gsplat-ok", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    return child(args) if args.child else orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
