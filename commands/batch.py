"""`vd batch`: run stages over many images, one task per image, on Ray or serially."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from vd import batch as lib
from vd import console
from vd.commands import common
from vd.errors import UsageError, VdError
from vd.params import RunOptions

_RUN = "Run"
_STAGE = "Stage options"

HELP = """Run depth, coarse or coarse,fine (and exports) over many images, one task per image.

INPUTS are image files, folders (their images), globs, text files listing paths (one a line),
or - for paths on stdin. Each image gets OUT/<name>/; OUT/results.jsonl gets one JSON line per
image (status, stage timings, cache hits, peak RSS/VRAM, outputs, the error sentence). Every
stage is cached, so a re-run is all cache hits and a killed batch resumes. Exit 0 when every
image succeeded, 1 when some failed (they are listed).
"""


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _progress():
    """done / failed / running in the description, a bar, N/M, elapsed and ETA, on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console.err,
        transient=False,
        disable=not console.bars_enabled(),
    )


def _stage(field: str):
    """A stage option for every image, declared with its RunOptions field (`vd.params`)."""
    return common.field_option(RunOptions, field, rich_help_panel=_STAGE)


def batch(
    inputs: Optional[List[str]] = typer.Argument(
        None,
        help="Images, folders, globs, list files, or - for stdin (optional with --batch-file).",
        show_default=False,
        metavar="INPUT",
    ),
    out: Path = typer.Option(
        Path("vd-batch"),
        "--out",
        "-o",
        help="Output folder: one sub-folder per image and results.jsonl.",
        rich_help_panel=_RUN,
    ),
    stages: str = typer.Option("coarse", "--stages", help="depth, coarse or coarse,fine.", rich_help_panel=_RUN),
    export: Optional[str] = typer.Option(
        None,
        "--export",
        help="Comma-separated exports per scene: ply, compressed-ply, splat, spz, sog, html, colmap, video.",
        rich_help_panel=_RUN,
    ),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="ray or serial (default: ray when installed, else serial).", rich_help_panel=_RUN
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        envvar="RAY_ADDRESS",
        help="Join this Ray cluster (default $RAY_ADDRESS; none: start a local one).",
        rich_help_panel=_RUN,
    ),
    gpus_per_task: Optional[float] = typer.Option(
        None,
        "--gpus-per-task",
        min=0.0,
        help="GPUs each task reserves (default 1 with CUDA, else 0).",
        rich_help_panel=_RUN,
    ),
    retries: int = typer.Option(
        1,
        "--retries",
        min=0,
        help="Retries of a task whose worker died or crashed (not of user errors).",
        rich_help_panel=_RUN,
    ),
    batch_file: Optional[Path] = typer.Option(
        None,
        "--batch-file",
        help="JSON or TOML: \\[defaults] options and \\[\\[images]] entries with per-image overrides.",
        rich_help_panel=_RUN,
    ),
    option: List[str] = typer.Option(
        [],
        "--option",
        "-O",
        metavar="NAME=VALUE",
        help="A stage option for every image, e.g. -O n_frames=8, -O fine_gs_iters=64 (repeatable).",
        rich_help_panel=_STAGE,
    ),
    depth_backend: str = _stage("depth_backend"),
    depth_model: str = _stage("depth_model"),
    inpaint_backend: str = _stage("inpaint_backend"),
    licence: Optional[str] = _stage("licence"),
    render_backend: str = _stage("render_backend"),
    device: Optional[str] = _stage("device"),
    focal: Optional[float] = _stage("focal"),
    fov: Optional[float] = _stage("fov"),
    max_resolution: int = _stage("max_resolution"),
    seed: int = _stage("seed"),
    allow_classical: bool = _stage("allow_classical"),
    json_: bool = typer.Option(
        False, "--json", help="Print every result row as JSON on stdout instead of output folders."
    ),
) -> None:

    options = {
        "depth_backend": depth_backend,
        "depth_model": depth_model,
        "inpaint_backend": inpaint_backend,
        "licence": licence,
        "render_backend": render_backend,
        "device": device,
        "focal": focal,
        "fov": fov,
        "max_resolution": max_resolution,
        "seed": seed,
        "allow_classical": allow_classical,
    }
    per_image: dict = {}
    if batch_file is not None:
        defaults, per_image = lib.load_batch_file(batch_file)
        options.update(defaults)
    for item in option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--option takes NAME=VALUE, got {item!r}")
        options[name.strip().replace("-", "_")] = _parse_value(value)
    spec = lib.BatchSpec(stages=lib.parse_stages(stages), exports=(), retries=retries, gpus_per_task=gpus_per_task)
    spec.exports = lib.parse_exports(export, spec.stages)
    inputs = list(inputs or [])
    if not inputs and not per_image:
        raise UsageError(
            "no inputs: give images, folders, globs, a list file, - for stdin, or a --batch-file with [[images]]"
        )
    images = lib.collect_inputs(inputs + [str(p) for p in per_image], stdin=sys.stdin)
    jobs = lib.plan_jobs(images, out, options, per_image)
    with _progress() as bar:
        rows = lib.run_batch(jobs, spec, out, executor=executor, address=address, progress=bar)
    for row in rows:
        if json_:
            console.out_json(row)
        elif row["status"] == "ok":
            console.out(row["out"])
    bad = lib.failed(rows)
    for row in bad:
        console.err.print(f"failed: {row['image']}: {row['error']}", markup=False, highlight=False)
    console.info(f"{len(rows) - len(bad)} of {len(rows)} images done; results in {Path(out) / lib.RESULTS}")
    if bad:
        raise VdError(f"{len(bad)} of {len(rows)} images failed (listed above)")


batch.__doc__ = HELP
