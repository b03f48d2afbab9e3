"""`vd inspect`: statistics of Gaussian PLY files."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from vd import console
from vd.commands.tables import inspect_renderable
from vd.errors import VdError, check_input_file


def inspect(
    files: List[Path] = typer.Argument(
        ...,
        show_default=False,
        help="Gaussian files to inspect: PLY (INRIA or compressed), .splat, .spz, .sog or .glb; or a vd output "
        "folder, for each scene file in it (scaffold, coarse, fine, refined).",
    ),
    json_: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    strict: bool = typer.Option(
        False, "--strict", help="Check only: no tables; exit 1 if any file holds NaN or Inf, or is not Gaussian splats."
    ),
) -> None:
    """Print count, bounds, SH degree and per-column statistics of each Gaussian file (.ply, .splat, .spz, .sog, .glb).

    A vd output folder stands for the scene files in it, stage by stage (`vd inspect vd-out/room`).

    A PLY that is not Gaussian splats (a triangle mesh, a bare point cloud) is named for what it
    is, with the splat properties it lacks.

    The table goes to stderr; stdout gets one summary line per file (or, with --json, one JSON
    object per file). --strict checks instead of describing: no tables, the summary lines, and exit 1
    when any file holds NaN or Inf values or is not Gaussian splats (a mesh, a point cloud).
    """
    from vd.export.inspect import ply_stats
    from vd.export.source import folder_gaussian_files

    files = [g for f in files for g in (folder_gaussian_files(f) if f.is_dir() else [f])]
    for f in files:
        check_input_file(f, "Gaussian file")
    bad = []
    for f in files:
        st = ply_stats(f)
        if json_:
            console.out_json(st)
        else:
            if not strict:
                console.err.print(inspect_renderable(st))
                console.err.print()
            console.out(summary_line(st))
        if st["nan"] or st["inf"]:
            bad.append(f"{st['file']} holds {st['nan']} NaN and {st['inf']} Inf values")
        if not st["is_splats"]:
            bad.append(f"{st['file']} is not gaussian splats ({st['content']})")
    if strict and bad:
        raise VdError("--strict: " + "; ".join(bad))


def summary_line(st: dict) -> str:
    """One tab-separated line per file: its count of Gaussians, or what it is when it holds none."""
    if st["is_splats"]:
        return f"{st['file']}\t{st['count']} gaussians\tsh_degree={st['sh_degree']}\tnan={st['nan']}\tinf={st['inf']}"
    return f"{st['file']}\tnot gaussian splats: {st['description']}\tnan={st['nan']}\tinf={st['inf']}"
