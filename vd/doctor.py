"""What this installation can run: the checks behind `vd doctor`, returned as data.

    report = diagnose(verify=False)
    report.checks            # list[Check]: name, status (ok | missing | optional | warn), detail, fix
    report.picks             # what `auto` would choose for depth, inpaint, render, ssim and offload
    report.gpu_ready         # False when the real GPU path (MoGe-2, FLUX.1-Fill, gsplat on CUDA) cannot run
    report.to_json()

A check whose status is "missing" blocks the GPU path; "optional" and "warn" do not. Nothing here
compiles or downloads anything: gsplat's kernels are looked for, not built.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Optional

from vd import settings
from vd.export.sog import INSTALL_HINT as SPLAT_TRANSFORM_INSTALL
from vd.export.sog import splat_transform
from vd.fetch import registry
from vd.models.footprints import GIB, INPAINT_VARIANTS
from vd.models.moge import MOGE_INSTALL
from vd.models.offload import DEFAULT_WORK_PIXELS, place, plan, variant_name, variants_for
from vd.params import FineParams
from vd.render.gsplat_backend import GSPLAT_BUILD, gsplat_kernels, nvcc_version

GPU_MODELS = ("moge", "flux-fill", "flux-prompt")
CARD_RESERVE = int(0.5 * GIB)  # what a card keeps from vd: the CUDA context and a desktop (an estimate)
TORCH_PIN = "2.13.0"


@dataclass
class Check:
    name: str
    status: str  # ok | missing (blocks the GPU path) | optional (not installed, not needed) | warn
    detail: str
    fix: str = ""

    @property
    def blocks_gpu(self) -> bool:
        return self.status == "missing"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    picks: dict = field(default_factory=dict)
    vram: Optional[dict] = None

    @property
    def gpu_ready(self) -> bool:
        return not any(c.blocks_gpu for c in self.checks)

    def to_json(self) -> dict:
        return {
            "gpu_ready": self.gpu_ready,
            "checks": [asdict(c) for c in self.checks],
            "picks": self.picks,
            "vram": self.vram,
        }


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- torch and CUDA
@dataclass
class TorchInfo:
    version: Optional[str] = None
    cuda_build: Optional[str] = None  # the CUDA version torch was built with
    cuda: bool = False
    device_name: Optional[str] = None
    capability: Optional[str] = None


def torch_info() -> TorchInfo:
    try:
        import torch
    except ImportError:
        return TorchInfo()
    info = TorchInfo(torch.__version__, torch.version.cuda, bool(torch.cuda.is_available()))
    if info.cuda:
        info.device_name = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        info.capability = f"{major}.{minor}"
    return info


def check_torch(t: TorchInfo) -> Check:
    if t.version is None:
        return Check("torch", "missing", "not installed", f'pip install "torch=={TORCH_PIN}"')
    if t.cuda:
        return Check("torch", "ok", f"{t.version}, CUDA {t.cuda_build}, {t.device_name} (compute {t.capability})")
    if t.cuda_build is None:
        return Check(
            "torch",
            "missing",
            f"{t.version} is a CPU-only build",
            f'pip install "torch=={TORCH_PIN}" --index-url https://download.pytorch.org/whl/cu128  '
            "# or the cuXXX build your driver supports",
        )
    return Check(
        "torch",
        "missing",
        f"{t.version} (CUDA {t.cuda_build}) sees no CUDA device",
        "check the NVIDIA driver with nvidia-smi (it must support CUDA " + str(t.cuda_build) + ")",
    )


# --------------------------------------------------------------------------- gsplat
def check_gsplat(t: TorchInfo, nvcc: Optional[str]) -> Check:
    ver = _version("gsplat")
    if ver is None:
        return Check(
            "gsplat",
            "missing",
            "not installed (the torch renderer is used instead, much slower on large scenes)",
            f'pip install "torch=={TORCH_PIN}" "gsplat>=1.5"   # torch pinned, or pip replaces it',
        )
    kernels = gsplat_kernels()
    if kernels is not None:
        return Check("gsplat", "ok", f"{ver}, CUDA kernels compiled ({kernels})")
    build = GSPLAT_BUILD
    not_built = f"{ver} installed but its CUDA kernels are not built"
    if nvcc is None:
        return Check(
            "gsplat",
            "missing",
            f"{not_built}, and there is no nvcc to build them",
            f"install the CUDA toolkit {t.cuda_build or ''} (nvcc matching torch's CUDA), then: {build}".replace(
                "  ", " "
            ),
        )
    if t.cuda_build and nvcc.split(".")[0] != t.cuda_build.split(".")[0]:
        return Check(
            "gsplat",
            "missing",
            f"{not_built}; nvcc {nvcc} does not match torch's CUDA {t.cuda_build}",
            f"put the CUDA {t.cuda_build} toolkit first on PATH (CUDA_HOME), then: {build}",
        )
    return Check(
        "gsplat",
        "warn",
        f"{not_built}: --render-backend auto uses the torch renderer until they are "
        f"(nvcc {nvcc} builds them in minutes, once)",
        f"build them now: {build}",
    )


# --------------------------------------------------------------------------- other packages and tools
def check_packages() -> list[Check]:
    checks = []
    ver = _version("fused-ssim") or _version("fused_ssim")
    checks.append(
        Check("fused-ssim", "ok", ver or "installed")
        if _importable("fused_ssim")
        else Check(
            "fused-ssim",
            "optional",
            "not installed (a plain torch SSIM is used)",
            "pip install --no-build-isolation git+https://github.com/rahul-goel/fused-ssim",
        )
    )
    ver = _version("diffusers")
    checks.append(
        Check("diffusers", "ok", ver)
        if ver
        else Check(
            "diffusers",
            "missing",
            "not installed (FLUX.1-Fill needs it)",
            f'pip install "torch=={TORCH_PIN}" "diffusers>=0.32"',
        )
    )
    checks.append(
        Check("MoGe code", "ok", f"dlr-moge {_version('dlr-moge') or '?'}")
        if _importable("moge.model.v2")
        else Check("MoGe code", "missing", "the moge package (dlr-moge) is not installed", MOGE_INSTALL)
    )
    ver = _version("rerun-sdk")
    checks.append(
        Check("rerun", "ok", ver)
        if ver
        else Check("rerun", "optional", "not installed (no live viewer)", 'pip install "rerun-sdk>=0.41"')
    )
    exe = splat_transform()
    command = settings.splat_transform_command()
    where = f"$VD_SPLAT_TRANSFORM ({command})" if command != "splat-transform" else "on PATH"
    checks.append(
        Check("splat-transform", "ok", exe)
        if exe
        else Check(
            "splat-transform",
            "optional",
            f"not found {where} (vd export --format sog needs it)",
            f"{SPLAT_TRANSFORM_INSTALL}, or set VD_SPLAT_TRANSFORM to its path",
        )
    )
    return checks


def check_weights(verify: bool = False) -> list[Check]:
    """One check per model the GPU path needs: present, and verified (sha256) when `verify`."""

    rows = {r["model"]: r for r in registry.status(GPU_MODELS)}
    hashed: dict[str, list] = {}
    if verify:
        for r in registry.verify(GPU_MODELS):
            hashed.setdefault(r["model"], []).append(r["result"])
    checks = []
    instead = [variant_name(INPAINT_VARIANTS[v]) for v in variants_for("any")[0] if v != "bf16"]
    for name in GPU_MODELS:
        r = rows[name]
        if r["state"] != "present":
            # FLUX.1-Fill-dev in bf16 is one inpainter among several: another one installed does its job
            other = [v for v in instead if name == "flux-fill" or not v.startswith("flux-fill")]
            checks.append(
                Check(
                    f"weights {name}",
                    "optional" if other else "missing",
                    f"{r['state']} in {r['path']}" + (f" ({', '.join(other)} installed instead)" if other else ""),
                    registry.fetch_command(name),
                )
            )
            continue
        results = hashed.get(name)
        if results is not None and any(x not in ("ok", "recorded") for x in results):
            checks.append(
                Check(f"weights {name}", "missing", f"sha256 mismatch in {r['path']}", f"vd fetch --force {name}")
            )
        elif results is not None:
            checks.append(Check(f"weights {name}", "ok", f"present and verified (sha256) in {r['path']}"))
        else:
            checks.append(Check(f"weights {name}", "ok", f"present in {r['path']} (re-hash with vd doctor --verify)"))
    return checks


# --------------------------------------------------------------------------- what auto would pick
def picks(t: TorchInfo, checks: list[Check], device: str) -> tuple[dict, Optional[dict]]:
    """What `auto` would choose for each backend, and the free VRAM (None without CUDA)."""
    ok = {c.name: c.status in ("ok", "warn") for c in checks}
    ok_status = {c.name: c.status for c in checks}

    def have(*names: str) -> bool:
        return all(ok.get(n, False) for n in names)

    cuda = t.cuda and device.startswith("cuda")
    out: dict[str, Optional[str]] = {
        "device": device,
        "depth": "moge"
        if have("MoGe code", "weights moge")
        else "file (a depth map beside the image; MoGe-2 unavailable)",
        "inpaint": "telea",
        # gsplat only with its kernels built ("ok"): auto never compiles them on a first render
        "render": "gsplat" if cuda and ok_status.get("gsplat") == "ok" else "torch",
        "ssim": "fused-ssim" if cuda and ok.get("fused-ssim") else "torch",
    }
    vram = None
    # the inpainters auto chooses from: FLUX.1-Fill-dev in bf16 as the checks found it, the others as installed
    ready = [v for v in variants_for("any")[0] if v != "bf16"]
    if have("weights flux-fill", "weights flux-prompt"):
        ready.insert(0, "bf16")
    flux = bool(cuda and have("diffusers") and ready)
    pl = place(device if cuda else "cpu", flux=flux, depth=out["depth"] == "moge", variants=ready if flux else ["bf16"])
    if flux:
        out["inpaint"] = pl.backend if pl.quant in (None, "bf16") else f"{pl.backend} {pl.quant}"
    out["offload"] = pl.offload
    out["depth_device"] = ("cuda" if pl.depth_on_gpu else "cpu") if out["depth"] == "moge" else None
    out["offload_reason"] = pl.reason
    if cuda:
        vram = {"free_bytes": pl.free_bytes, "total_bytes": pl.total_bytes}
    return out, vram


def diagnose(*, verify: bool = False, device: Optional[str] = None) -> Report:
    t = torch_info()
    nvcc = nvcc_version()
    checks = [check_torch(t)]
    if t.cuda_build or t.cuda:
        checks.append(
            Check("nvcc", "ok", nvcc)
            if nvcc
            else Check(
                "nvcc",
                "optional",
                "not found (only needed to compile gsplat's kernels)",
                f"install the CUDA toolkit {t.cuda_build} and put its bin/ on PATH",
            )
        )
    checks.append(check_gsplat(t, nvcc))
    checks += check_packages()
    checks += check_weights(verify)
    dev = device or settings.device() or ("cuda" if t.cuda else "cpu")
    chosen, vram = picks(t, checks, dev)
    return Report(checks, chosen, vram)


# --------------------------------------------------------------------------- the plan for a card of a given size
def card_plan(
    vram_gib: float,
    *,
    licence: str = "any",
    depth_model: str = "vitl",
    installed: Optional[list[str]] = None,
    work_pixels: int = DEFAULT_WORK_PIXELS,
) -> dict:
    """What `vd coarse --offload auto` would run on a card of `vram_gib` GiB (CARD_RESERVE of it taken),
    choosing among every inpainter the licence allows, installed or not; `fetch` names what is missing.
    "fine": what `vd fine` would run after it (its default views of that frame and their margin)."""
    ready, offer, have = variants_for(licence, installed)
    total = int(vram_gib * GIB)
    available = max(0, total - CARD_RESERVE)
    variants = ready + offer
    coarse = plan(available, total, depth=True, variants=variants, depth_model=depth_model, work_pixels=work_pixels)
    side = round(work_pixels**0.5) + 2 * FineParams.margin
    fine = plan(
        available,
        total,
        variants=variants,
        work_pixels=FineParams.views * side * side,
        view_pixels=side * side,
    )
    return {
        "vram_gib": vram_gib,
        "licence": licence,
        **_planned(coarse, have),
        "depth_model": depth_model,
        "depth_device": "cuda" if coarse.depth_on_gpu else "cpu",
        "fine": {"views": FineParams.views, "view_side": side, **_planned(fine, have)},
    }


def _planned(p, have) -> dict:
    """The inpainter part of a card's plan: what runs, how, its estimated peak, what to fetch."""
    v = INPAINT_VARIANTS[p.variant or "bf16"]
    mode = "model-resident" if p.offload == "model" and not p.evict_for_ae else p.offload
    peak = p.needs[mode] + (p.needs["depth"] if p.depth_on_gpu else 0)
    if v.text_encoder and p.text_encoder_on_gpu:
        peak = max(peak, v.text_encoder)
    return {
        "inpainter": variant_name(v),
        "backend": v.backend,
        "quant": p.quant,
        "offload": mode,
        "views_per_call": p.views_per_call,
        "text_encoder_device": None if p.text_encoder_on_gpu is None else ("cuda" if p.text_encoder_on_gpu else "cpu"),
        "peak_bytes_estimate": int(peak),
        "fits": p.fits,
        "commercial": v.commercial,
        "fetch": [m for m in v.fetch if m not in set(have)],
        "reason": p.reason,
    }


__all__ = [
    "card_plan",
    "CARD_RESERVE",
    "Check",
    "Report",
    "TorchInfo",
    "diagnose",
    "torch_info",
    "check_torch",
    "check_gsplat",
    "check_packages",
    "check_weights",
    "gsplat_kernels",
    "nvcc_version",
    "picks",
]
