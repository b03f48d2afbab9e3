"""`vd doctor`: what this installation can run, and one line of fix for each missing piece."""

from __future__ import annotations

from typing import Optional

import typer

from vd import console
from vd.commands import common

MARK = {"ok": "ok", "missing": "MISSING", "optional": "optional", "warn": "warn"}


def doctor(
    json_: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    verify: bool = typer.Option(
        False, "--verify", help="Also re-hash the model weights (sha256; slow for FLUX.1-Fill-dev)."
    ),
    device: Optional[str] = common.DEVICE,
) -> None:
    """Check torch and CUDA, gsplat and its compiled kernels, fused-ssim, diffusers, MoGe's code, rerun,
    splat-transform, the model weights and the free VRAM, and say what vd would pick for each backend.

    Exit codes: 0 the GPU path (MoGe-2, FLUX.1-Fill, gsplat on CUDA) can run; 1 it cannot (the MISSING lines say why).
    """
    from vd.doctor import diagnose

    report = diagnose(verify=verify, device=device)
    if json_:
        console.out_json(report.to_json())
    else:
        console.out(*_lines(report))
    if not report.gpu_ready:
        raise typer.Exit(1)


def _lines(report) -> list[str]:
    width = max(len(c.name) for c in report.checks)
    lines = []
    for c in report.checks:
        lines.append(f"{MARK[c.status]:<8}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<8}  {'':<{width}}  fix: {c.fix}")
    p = report.picks
    lines.append("")
    lines.append(
        f"vd would use (device {p['device']}): depth {p['depth']}"
        + (f" on {p['depth_device']}" if p.get("depth_device") else "")
        + f", inpaint {p['inpaint']}, render {p['render']}, ssim {p['ssim']}, offload {p['offload']}"
    )
    if report.vram:
        v = report.vram
        lines.append(f"free VRAM: {v['free_bytes'] / 2**30:.1f} of {v['total_bytes'] / 2**30:.1f} GiB")
    lines.append(f"memory: {p['offload_reason']}")
    missing = [c.name for c in report.checks if c.blocks_gpu]
    lines.append("GPU path: ready" if not missing else f"GPU path: not ready (missing: {', '.join(missing)})")
    return lines
