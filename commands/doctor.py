"""`vd doctor`: what this installation can run, and one line of fix for each missing piece."""

from __future__ import annotations

from typing import List, Optional

import typer

from vd import console
from vd.commands import common
from vd.errors import UsageError
from vd.params import DEPTH_MODELS, RunOptions, check_choice

MARK = {"ok": "ok", "missing": "MISSING", "optional": "optional", "warn": "warn"}


def doctor(
    json_: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    verify: bool = typer.Option(
        False, "--verify", help="Also re-hash the model weights (sha256; slow for FLUX.1-Fill-dev)."
    ),
    device: Optional[str] = common.DEVICE,
    vram: Optional[List[float]] = typer.Option(
        None,
        "--vram",
        metavar="GiB",
        help="Print the memory plan for a card of this size instead, for vd coarse and then vd fine "
        "(repeatable: --vram 8 --vram 24); the footprints are estimates until bench/gpu measures them.",
    ),
    licence: Optional[str] = common.field_option(RunOptions, "licence"),
    depth_model: str = common.field_option(RunOptions, "depth_model"),
) -> None:
    """Check torch and CUDA, gsplat and its compiled kernels, fused-ssim, diffusers, MoGe's code, rerun,
    splat-transform, the model weights and the free VRAM, and say what vd would pick for each backend.

    Exit codes: 0 the GPU path (MoGe-2, FLUX.1-Fill, gsplat on CUDA) can run; 1 it cannot (the MISSING lines say why).
    """
    if vram:
        _print_card_plans(vram, licence, depth_model, json_)
        return
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


def _card_row(card: str, stage: str, r: dict, where: str) -> str:
    """One stage of a card's plan; `where`: the depth model's device (coarse) or the views that go through the
    transformer at a time (fine)."""
    peak = f"~{r['peak_bytes_estimate'] / 2**30:.1f} GiB" + ("" if r["fits"] else "!")
    return (
        f"{card:>7}  {stage:<6} {r['inpainter']:<16} {r['offload']:<15} {where:<11} "
        f"{r['text_encoder_device'] or '-':<9} {peak:>9}  {' '.join(r['fetch']) or '-'}"
    )


def _print_card_plans(sizes: List[float], licence: Optional[str], depth_model: str, json_: bool) -> None:
    from vd import settings
    from vd.doctor import CARD_RESERVE, card_plan
    from vd.params import LICENCES

    policy = licence or settings.licence() or "any"
    check_choice(policy, LICENCES, "--licence" if licence else "VD_LICENCE")
    check_choice(depth_model, DEPTH_MODELS, "--depth-model")
    bad = [v for v in sizes if not (0 < v < 10_000)]
    if bad:
        raise UsageError(f"--vram takes a card size in GiB, e.g. 8 or 24, got {bad[0]:g}")
    rows = [card_plan(v, licence=policy, depth_model=depth_model) for v in sizes]
    if json_:
        console.out_json({"cards": rows, "reserve_bytes": CARD_RESERVE, "estimates": True})
        return
    head = f"{'card':>7}  {'stage':<6} {'inpainter':<16} {'offload':<15} {'depth/views':<11} {'text enc.':<9}"
    head += f" {'peak':>9}  fetch"
    lines = [head]
    for r in rows:
        f = r["fine"]
        lines.append(_card_row(f"{r['vram_gib']:>4g} GB", "coarse", r, f"{r['depth_model']} {r['depth_device']}"))
        lines.append(_card_row("", "fine", f, f"{f['views_per_call'] or f['views']}/{f['views']} views"))
    lines.append(
        f"licence {policy}; {CARD_RESERVE / 2**30:.1f} GiB of each card left to the CUDA context; peaks are "
        "estimates (vd/models/footprints.py) until bench/gpu/run.sh measures them"
        + ("; ! = does not fit" if not all(r["fits"] and r["fine"]["fits"] for r in rows) else "")
    )
    console.out(*lines)
