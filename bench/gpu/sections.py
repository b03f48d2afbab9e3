"""The sections of the GPU validation run (bench/gpu/run.py runs each in a child process).

Every section is a function `fn(ctx)` that stores what it measured with `ctx.record(key, value)`;
each record is written to disk at once, so a section killed at its time box keeps what it had.
`ctx.dry` selects tiny sizes on the CPU; CUDA-only steps are then skipped with the reason stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GIB = 2**30


@dataclass
class Sizes:
    render_counts: tuple = (50_000, 200_000, 1_000_000)
    render_wh: tuple = (512, 384)
    render_repeats: int = 5
    flux_size: int = 512
    flux_steps: int = 1  # one step per offload mode: what a step costs in each, transfers included
    flux_tiny: bool = False
    coarse: list = field(default_factory=lambda: ["--n-frames", "6", "--fallback", "closest"])
    fine: list = field(default_factory=lambda: ["--views", "2", "--steps", "2"])
    budget_coarse: list = field(default_factory=lambda: [
        "--n-frames", "3", "--fallback", "closest", "--inpaint-steps", "2", "--init-iters", "20", "--view-iters", "20"])
    # with the room example's depth file (no depth model on the GPU) vd.models.offload plans:
    # 16 -> sequential, 25.5 -> model (transformer resident between calls), 40 -> none
    budgets_gib: tuple = (16, 25.5, 40)


REAL = Sizes()
DRY = Sizes(
    render_counts=(500, 2000), render_wh=(64, 48), render_repeats=1, flux_size=64, flux_steps=1, flux_tiny=True,
    coarse=["--n-frames", "3", "--fallback", "closest", "--max-resolution", "64", "--dense-multiplier", "3",
            "--init-iters", "2", "--view-iters", "2", "--inpaint-steps", "1"],
    fine=["--views", "2", "--steps", "2", "--gs-iters", "2"],
    budget_coarse=["--n-frames", "3", "--fallback", "closest", "--max-resolution", "64", "--dense-multiplier", "3",
                   "--init-iters", "2", "--view-iters", "2", "--inpaint-steps", "1", "--no-outpaint"],
    budgets_gib=(16,),
)


class Ctx:
    def __init__(self, name: str, work: Path, out: Path, dry: bool, gsplat_ok: bool):
        self.name, self.work, self.out, self.dry, self.gsplat_ok = name, work, out, dry, gsplat_ok
        self.sizes = DRY if dry else REAL
        self.device = "cpu" if dry else "cuda"
        self.data: dict = {}
        self.path = work / f"{name}.json"

    def record(self, key: str, value) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def skip(self, key: str, reason: str) -> None:
        self.record(key, {"skipped": reason})

    @property
    def renderer(self) -> str:
        return "gsplat" if self.gsplat_ok and not self.dry else "torch"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class VramSampler:
    """Peak device memory in use (total - free: what nvidia-smi shows, CUDA context included), sampled
    every 20 ms in a thread, beside torch's peak allocation over the whole block: the counter is
    reset when the block starts and vd's per-stage resets are folded in (vd.models.memory)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_used = None
        self._stop = threading.Event()

    def __enter__(self):
        import torch

        from vd.models import memory

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            memory.reset_command_peak()
            self.peak_used = 0
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak_used = max(self.peak_used, total - free)
            time.sleep(0.02)

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self._stop.set()
            self._thread.join()
            from vd.models import memory

            self.peak_allocated = memory.command_peak_vram_bytes()
        return False

    def json(self) -> dict:
        if self.peak_used is None:
            return {"peak_device_used_gib": None, "peak_allocated_gib": None}
        return {"peak_device_used_gib": round(self.peak_used / GIB, 2),
                "peak_allocated_gib": round(self.peak_allocated / GIB, 2)}


# --------------------------------------------------------------------------- env
def env(ctx: Ctx) -> None:
    import importlib.metadata
    import platform

    t = time.perf_counter()
    from diffusers import FluxTransformer2DModel  # noqa: F401 - imports transformers and peft when present

    ctx.record("diffusers_import", {
        "seconds": round(time.perf_counter() - t, 2),
        "imported": {m: m in sys.modules for m in ("transformers", "peft", "accelerate")},
        "versions": {d: _dist_version(importlib.metadata, d)
                     for d in ("diffusers", "transformers", "peft", "accelerate")},
    })
    import torch

    from vd.doctor import diagnose, nvcc_version

    ctx.record("python", platform.python_version())
    ctx.record("torch", {"version": torch.__version__, "cuda_build": torch.version.cuda,
                         "cuda": torch.cuda.is_available(),
                         "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    ctx.record("nvcc", nvcc_version())
    t = time.perf_counter()
    from vd.models.flux_fill import FluxFillInpaint  # noqa: F401 - vd's own chain on top
    ctx.record("vd_flux_import_s", round(time.perf_counter() - t, 2))
    ctx.record("doctor", diagnose().to_json())


def _dist_version(md, dist: str):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- FLUX.1-Fill
def flux_parts(ctx: Ctx, on_cpu: bool = True):
    """A random FLUX.1-Fill-dev: full size in bf16 (filled on the GPU, then moved to the CPU unless
    `on_cpu` is False), tiny in fp32 for the dry run."""
    sys.path.insert(0, str(REPO / "bench"))
    from random_flux import random_flux_parts

    if ctx.sizes.flux_tiny:
        import torch

        sys.path.insert(0, str(REPO / "tests"))
        from flux_tiny import TINY_TRANSFORMER, TINY_VAE

        return random_flux_parts(TINY_TRANSFORMER, TINY_VAE, device="cpu", dtype=torch.float32)
    parts = random_flux_parts(device=ctx.device)
    if on_cpu:
        _parts_to_cpu(parts)
    return parts


def _parts_to_cpu(parts) -> None:
    import torch

    parts[0].to("cpu")
    parts[1].to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


FLUX_MODES = (("none", True), ("model-resident", False), ("model", True), ("sequential", True))  # (mode, evict_for_ae)


def flux(ctx: Ctx) -> None:
    """One inpaint step at flux_size² in each offload mode (model twice: resident, and evicted for the
    AE): setup (placing / pinning the weights), the sampling call, peak VRAM."""
    import torch

    from vd.models import flux_fill as F
    from vd.models.offload import place

    t0 = time.perf_counter()
    parts = flux_parts(ctx, on_cpu=False)
    ctx.record("build_s", round(time.perf_counter() - t0, 1))
    ctx.record("params_b", round(sum(p.numel() for p in parts[0].parameters()) / 1e9, 3))
    ctx.record("auto_choice", place(ctx.device, flux=True, depth=False,
                                    work_pixels=ctx.sizes.flux_size ** 2).to_json())
    n = ctx.sizes.flux_size
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, n, n, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, n, n)
    mask[..., n // 4: 3 * n // 4, n // 4: 3 * n // 4] = 1
    for name, evict in FLUX_MODES:
        mode = name.split("-")[0]
        key = f"offload={name}"
        if mode != "none":
            _parts_to_cpu(parts)  # "none" leaves the weights on the GPU; the other modes start from the CPU
        ff = None
        try:
            steps = ctx.sizes.flux_steps
            with VramSampler(ctx.device) as vs:
                t1 = time.perf_counter()
                ff = F.FluxFill(*parts, device=ctx.device, offload=mode, evict_for_ae=evict)
                _sync(ctx.device)
                t2 = time.perf_counter()
                ff.sample(img, mask, seed=0, steps=steps)
                _sync(ctx.device)
                dt = time.perf_counter() - t2
            row = {"steps": steps, "setup_s": round(t2 - t1, 2), "seconds": round(dt, 2),
                   "per_step_s": round(dt / steps, 3), **vs.json(), "effective_offload": ff.offload,
                   "evict_for_ae": ff.evict_for_ae}
            if ctx.dry:
                row["note"] = "CPU dry run: vd runs every mode without offload on the CPU"
            ctx.record(key, row)
        except torch.cuda.OutOfMemoryError:
            ctx.record(key, {"error": "CUDA out of memory"})
        finally:
            if ff is not None:
                ff.close()


# --------------------------------------------------------------------------- renderers
def _render_rows(ctx: Ctx, backend: str) -> None:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from scenes import rgbd_scene

    from vd.render import render

    W, H = ctx.sizes.render_wh
    for n in ctx.sizes.render_counts:
        g, vm, K = rgbd_scene(n, W, H)
        g, vm, K = g.to(ctx.device), vm.to(ctx.device), K.to(ctx.device)
        for mode in ("fwd", "fwd+bwd"):
            key = f"{n}/{mode}"

            def once():
                if mode == "fwd":
                    with torch.no_grad():
                        render(g, vm, K, W, H, backend=backend)
                else:
                    gg = g.clone().requires_grad_(True)
                    render(gg, vm, K, W, H, backend=backend).rgb.sum().backward()
                _sync(ctx.device)

            try:
                with VramSampler(ctx.device) as vs:
                    t = time.perf_counter()
                    once()  # warm-up
                    warm = time.perf_counter() - t
                    times = []
                    for _ in range(ctx.sizes.render_repeats if warm < 1.0 else 2 if warm < 5.0 else 1):
                        t = time.perf_counter()
                        once()
                        times.append(time.perf_counter() - t)
                ctx.record(key, {"gaussians": len(g), "runs": len(times), "best_s": round(min(times), 4),
                                 "median_s": round(sorted(times)[len(times) // 2], 4), **vs.json()})
            except torch.cuda.OutOfMemoryError:
                ctx.record(key, {"error": "CUDA out of memory"})


def render_torch(ctx: Ctx) -> None:
    ctx.record("size", list(ctx.sizes.render_wh))
    _render_rows(ctx, "torch")


def render_gsplat(ctx: Ctx) -> None:
    if ctx.dry:
        ctx.skip("all", "gsplat rasterises on CUDA only")
        return
    if not ctx.gsplat_ok:
        ctx.skip("all", "gsplat did not build (see gsplat-build.log)")
        return
    from vd.doctor import gsplat_kernels

    ctx.record("vd doctor finds the kernels", gsplat_kernels())
    ctx.record("size", list(ctx.sizes.render_wh))
    _render_rows(ctx, "gsplat")


# --------------------------------------------------------------------------- gpu-marked tests
def tests(ctx: Ctx) -> None:
    cmd = [sys.executable, "-P", "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-o", "addopts=-ra",
           "--continue-on-collection-errors"]
    cmd += ["--collect-only", "tests/test_render.py"] if ctx.dry else ["tests"]
    if not ctx.gsplat_ok and not ctx.dry:
        cmd += ["-k", "not gsplat"]  # an unbuilt gsplat would start compiling inside a test
    ctx.record("command", " ".join(cmd[1:]))
    log = ctx.out / "pytest.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    ctx.record("exit_code", rc)
    ctx.record("summary", lines[-1] if lines else "")
    ctx.record("failures", [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20])


# --------------------------------------------------------------------------- vd coarse / vd fine
def _random_flux_backend(parts):
    """FluxFillInpaint around a random FLUX.1-Fill-dev: the CLI path without weight files."""
    from vd.models.flux_fill import FluxFill, FluxFillInpaint

    class RandomFluxInpaint(FluxFillInpaint):
        @property
        def identity(self) -> str:
            return f"random-flux-fill:steps={self.steps}:guidance={self.guidance}"

        def _build(self, paths) -> FluxFill:
            return FluxFill(*parts, device=self.device, offload=self.offload)

        def release(self) -> None:
            super().release()
            _parts_to_cpu(parts)

    return RandomFluxInpaint


@contextmanager
def random_flux_cli(parts):
    """`vd coarse/fine --inpaint-backend flux-fill` use the random model (no weights needed)."""
    import vd.models.choose as choose_mod
    import vd.stages.denoisers as denoisers

    cls = _random_flux_backend(parts)
    real_get, real_choose = choose_mod.get_inpaint_backend, denoisers.choose_denoiser
    names = {"device", "offload", "steps", "guidance", "vram_budget"}

    def get_backend(name="auto", **kw):
        if name != "flux-fill":
            return real_get(name, **kw)
        return cls(paths={k: "random" for k in ("transformer", "ae", "txt", "vec")},
                   **{k: v for k, v in kw.items() if k in names})

    def choose(name, *, device, offload, allow_classical, guidance=30.0, auto_fetch=None, vram_budget=None,
               quant="auto", licence=None):
        dev = device or "cuda"
        backend = cls(device=dev, offload=offload, guidance=guidance, vram_budget=vram_budget,
                      paths={k: "random" for k in ("transformer", "ae", "txt", "vec")})
        return dev, (lambda: denoisers.FluxDenoiser(backend=backend)), "flux-fill"

    import vd.commands.common as common

    real_first = common.require_weights_first

    def weights_first(images, depth_backend, inpaint_backend, fetch, quant=None, **kw):
        # the random model needs no weight files: check the depth model's only
        return real_first(images, depth_backend, "telea" if inpaint_backend == "flux-fill" else inpaint_backend,
                          fetch, quant, **kw)

    swaps = [(real_get, get_backend), (real_choose, choose), (real_first, weights_first)]
    undo = _swap_everywhere(swaps)
    try:
        yield
    finally:
        for module, attr, value in undo:
            setattr(module, attr, value)


def _swap_everywhere(swaps) -> list:
    """Replace each function in every loaded vd module that holds it (wherever a refactor imports
    it from); returns what to restore."""
    import importlib

    for name in ("vd.stages.coarse", "vd.stages.fine", "vd.commands.coarse", "vd.commands.fine", "vd.batch"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    undo = []
    for module in [m for n, m in list(sys.modules.items()) if n.startswith("vd.") and m is not None]:
        for attr, value in list(vars(module).items()):
            for old, new in swaps:
                if value is old:
                    setattr(module, attr, new)
                    undo.append((module, attr, old))
    return undo


def run_vd(ctx: Ctx, args: list[str], cache: Path) -> dict:
    """`vd ARGS` in this process with a fresh cache; exit code, seconds and VRAM peaks."""
    from vd.commands.app import run

    os.environ["VD_CACHE_DIR"] = str(cache)
    with VramSampler(ctx.device) as vs:
        t = time.perf_counter()
        code = run(args)
        dt = time.perf_counter() - t
    return {"args": " ".join(args), "exit_code": code, "seconds": round(dt, 1), **vs.json()}


def _stage_peak(summary_path: Path) -> float | None:
    """The largest per-stage peak allocation the stage recorded (memory.track resets torch's counter)."""
    s = json.loads(summary_path.read_text())
    peaks = [m.get("peak_vram_bytes") for m in s.get("memory", [])] + [(s.get("vram") or {}).get("peak_bytes")]
    peaks = [p for p in peaks if p]
    return round(max(peaks) / GIB, 2) if peaks else None


def coarse_and_fine(ctx: Ctx) -> None:
    parts = flux_parts(ctx)
    out = ctx.work / "room"
    common = ["--device", ctx.device, "--render-backend", ctx.renderer, "--inpaint-backend", "flux-fill"]
    ctx.record("renderer", ctx.renderer)
    with random_flux_cli(parts):
        row = run_vd(ctx, ["coarse", str(REPO / "examples/room/rgb.png"), "-o", str(out), *common, *ctx.sizes.coarse],
                     ctx.work / "cache-coarse")
        if row["exit_code"] == 0:
            s = json.loads((out / "summary.json").read_text())
            row.update(views=s["selected"], gaussians=s["totals"]["gaussians_total"],
                       memory_plan=(s.get("memory_plan") or {}).get("reason"),
                       stage_peak_allocated_gib=_stage_peak(out / "summary.json"))
        ctx.record("coarse", row)
        if row["exit_code"] != 0:
            ctx.skip("fine", "vd coarse failed")
            return
        fine_out = ctx.work / "room-fine"
        row = run_vd(ctx, ["fine", str(out), "-o", str(fine_out), *common, *ctx.sizes.fine], ctx.work / "cache-fine")
        if row["exit_code"] == 0:
            s = json.loads((fine_out / "summary.json").read_text())
            row.update(memory_plan=(s.get("memory_plan") or {}).get("reason"), per_step_s=[r.get("wall_s") for r in s.get("steps", [])],
                       stage_peak_allocated_gib=_stage_peak(fine_out / "summary.json"))
        ctx.record("fine", row)


def planned_budgets(ctx: Ctx) -> dict:
    """{budget GiB: the plan vd makes for the room example (flux, no depth model)} for the real
    budgets: from this device's free memory, or an idle 80 GiB H100 in the dry run."""
    from vd.models.offload import GIB as G
    from vd.models.offload import place, plan

    out = {}
    for b in REAL.budgets_gib:
        p = (place(ctx.device, budget=int(b * G), flux=True, depth=False) if ctx.device.startswith("cuda")
             else plan(79 * G, 80 * G, budget=int(b * G), flux=True, depth=False))
        out[b] = {"offload": p.offload, "evict_for_ae": p.evict_for_ae, "reason": p.reason}
    return out


def budget(ctx: Ctx) -> None:
    """`vd coarse --offload auto --vram-budget B`: the plan it made and the peak it reached, per budget."""
    for b, p in planned_budgets(ctx).items():
        ctx.record(f"planned {b} GiB", p)
    parts = flux_parts(ctx)
    with random_flux_cli(parts):
        for b in ctx.sizes.budgets_gib:
            out = ctx.work / f"budget-{b}"
            row = run_vd(ctx, ["coarse", str(REPO / "examples/room/rgb.png"), "-o", str(out), "--device", ctx.device,
                               "--render-backend", "torch", "--inpaint-backend", "flux-fill", "--offload", "auto",
                               "--vram-budget", str(b), *ctx.sizes.budget_coarse], ctx.work / f"cache-budget-{b}")
            if row["exit_code"] == 0:
                s = json.loads((out / "summary.json").read_text())
                row["memory_plan"] = (s.get("memory_plan") or {}).get("reason")
                row["offload"] = (s.get("memory_plan") or {}).get("offload")
                row["stage_peak_allocated_gib"] = _stage_peak(out / "summary.json")
            used = row.get("peak_device_used_gib")
            row["under_budget"] = None if used is None else used <= b
            ctx.record(f"{b} GiB", row)


# --------------------------------------------------------------------------- the memory plan under budgets
PLAN_BUDGETS_GIB = (8, 12, 16, 24)


def _planned(ctx: Ctx, budget_gib: float, licence: str):
    """The plan vd makes under `budget_gib` with every inpainter the licence allows (installed or not):
    from this device's free memory, or an idle 80 GiB H100 in the dry run."""
    from vd.models.offload import GIB as G
    from vd.models.offload import place, plan, variants_for

    ready, offer, _ = variants_for(licence, installed=[])
    kw = dict(budget=int(budget_gib * G), flux=True, depth=True, variants=ready + offer,
              work_pixels=ctx.sizes.flux_size ** 2)
    return place(ctx.device, **kw) if ctx.device.startswith("cuda") else plan(79 * G, 80 * G, **kw)


def memory_plan(ctx: Ctx) -> None:
    """For budgets of 8, 12, 16 and 24 GiB, with any licence and with --licence commercial: the inpainter,
    quantisation and offload mode the plan picks, then one inpaint step of that choice with random
    full-size weights while torch may allocate no more than the budget: seconds, peak, under the budget."""
    import torch

    runners: dict = {}
    n = ctx.sizes.flux_size
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, n, n, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, n, n)
    mask[..., n // 4: 3 * n // 4, n // 4: 3 * n // 4] = 1
    cuda = ctx.device.startswith("cuda")
    total = torch.cuda.mem_get_info()[1] if cuda else None
    for licence in ("any", "commercial"):
        for b in PLAN_BUDGETS_GIB:
            key = f"{licence} {b} GiB"
            p = _planned(ctx, b, licence)
            mode = "model-resident" if p.offload == "model" and not p.evict_for_ae else p.offload
            row = {"variant": p.variant, "offload": mode, "depth_on_gpu": p.depth_on_gpu,
                   "text_encoder_on_gpu": p.text_encoder_on_gpu, "planned_peak_gib": round(p.needs[mode] / GIB, 2),
                   "fits": p.fits}
            try:
                if p.variant not in runners:
                    t0 = time.perf_counter()
                    runners[p.variant] = variant_runner(ctx, p.variant)
                    row["build_s"] = round(time.perf_counter() - t0, 1)
                if cuda:
                    torch.cuda.set_per_process_memory_fraction(min(1.0, b * GIB / total))
                row.update(runners[p.variant](img, mask, p.offload, p.evict_for_ae))
                used = row.get("peak_allocated_gib")
                row["under_budget"] = None if used is None else used <= b
            except torch.cuda.OutOfMemoryError:
                row["error"] = "CUDA out of memory within the budget"
            except Exception as e:  # noqa: BLE001 - one budget's failure must not lose the others
                row["error"] = f"{type(e).__name__}: {str(e).strip()[:200]}"
            finally:
                if cuda:
                    torch.cuda.set_per_process_memory_fraction(1.0)
                    torch.cuda.empty_cache()
            ctx.record(key, row)


def variant_runner(ctx: Ctx, variant: str):
    """A function (img, mask, offload, evict_for_ae) -> {seconds, peaks} running one inpaint step of a
    random full-size inpainter `variant` (tiny on the CPU in the dry run). The weights are built once,
    on the device, and parked on the CPU, so each step starts from the CPU as a loaded backend does."""
    if variant == "klein":
        return _klein_runner(ctx)
    from vd.models import flux_fill as F

    parts = flux_parts(ctx) if variant == "bf16" else _gguf_parts(ctx, variant)

    def step(img, mask, offload, evict):
        ff = None
        try:
            with VramSampler(ctx.device) as vs:
                t0 = time.perf_counter()
                ff = F.FluxFill(*parts, device=ctx.device, offload=offload, evict_for_ae=evict)
                ff.sample(img, mask, seed=0, steps=1)
                _sync(ctx.device)
            return {"seconds": round(time.perf_counter() - t0, 2), **vs.json()}
        finally:
            if ff is not None:
                ff.close()
            _parts_to_cpu(parts)

    return step


def _gguf_parts(ctx: Ctx, quant: str):
    """A random FLUX.1-Fill-dev with a `quant` GGUF transformer (bench/gpu/quant.py) and a full-size
    AE in bf16 (its activations are part of the peak); tiny on the CPU in the dry run."""
    import torch
    from diffusers import AutoencoderKL

    sys.path.insert(0, str(HERE))
    from quant import _config_dir, random_gguf_transformer

    from vd.models import flux_fill as F

    dtype = torch.float32 if ctx.dry else torch.bfloat16
    cfg_dir = _config_dir(ctx, ctx.work)
    tr, _layout = random_gguf_transformer(cfg_dir, quant, ctx.device, dtype)
    if ctx.dry:
        sys.path.insert(0, str(REPO / "tests"))
        from flux_tiny import TINY_VAE as vcfg
    else:
        vcfg = json.loads((F.config_dir() / "vae" / "config.json").read_text())
    ae = AutoencoderKL.from_config({k: v for k, v in vcfg.items() if k[0] != "_"}).to(dtype=dtype).eval()
    tcfg = json.loads((cfg_dir / "config.json").read_text())
    txt = torch.randn(1, 8 if ctx.dry else 512, tcfg["joint_attention_dim"])
    vec = torch.randn(1, tcfg["pooled_projection_dim"])
    parts = (tr, ae, txt, vec)
    _parts_to_cpu(parts)
    return parts


def _klein_runner(ctx: Ctx):
    """A random FLUX.2 [klein] 4B (bench/gpu/klein.py's builders) with a random prompt embedding."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    sys.path.insert(0, str(HERE))
    from klein import _configs, _on_device, _public

    from vd.models.flux2_klein_loading import load_scheduler
    from vd.models.flux2_klein_model import Flux2Klein

    tcfg, vcfg, _qcfg, _n = _configs(ctx)
    dt = torch.float32 if ctx.dry else torch.bfloat16
    tr = _on_device(lambda: Flux2Transformer2DModel.from_config(_public(tcfg)), ctx.device, dt).to("cpu")
    vae = AutoencoderKLFlux2.from_config(_public(vcfg)).to(dtype=dt).eval()
    emb = torch.randn(1, 512, tcfg["joint_attention_dim"], generator=torch.Generator().manual_seed(1))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    def step(img, mask, offload, evict):
        kl = None
        try:
            with VramSampler(ctx.device) as vs:
                t0 = time.perf_counter()
                kl = Flux2Klein(tr, vae, load_scheduler(), emb, device=ctx.device, dtype=dt, offload=offload)
                kl.inpaint((img + 1) / 2, mask, seed=0, steps=1)
                _sync(ctx.device)
            return {"seconds": round(time.perf_counter() - t0, 2), **vs.json()}
        finally:
            if kl is not None:
                kl.close()
            tr.to("cpu")
            vae.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    return step


def _helper_section(module: str):
    def run(ctx: Ctx) -> None:
        sys.path.insert(0, str(HERE))
        __import__(module).section(ctx)

    return run


SECTIONS = {
    "env": env,
    "plan": memory_plan,
    "quant": _helper_section("quant"),  # bench/gpu/quant.py: each GGUF quantisation, one step and its peak
    "klein": _helper_section("klein"),  # bench/gpu/klein.py: the Qwen3 encode, then one 4-step inpaint
    "depth": _helper_section("depth"),  # bench/gpu/depth.py: each MoGe-2 size through vd's MogeDepth
    "flux": flux,
    "budget": budget,
    "render-torch": render_torch,
    "render-gsplat": render_gsplat,
    "tests": tests,
    "coarse-fine": coarse_and_fine,
}
