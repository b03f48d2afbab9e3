"""`vd inspect`: statistics of Gaussian PLY files."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from vd import console
from vd.commands.tables import inspect_renderable
from vd.errors import VdError, check_input_file


def inspect(
    files: List[Path] = typer.Argument(..., help="PLY, SPZ or .splat files to inspect.", show_default=False),
    json_: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any value is NaN or Inf."),
) -> None:
    """Print count, bounds, SH degree and per-column statistics of each PLY, SPZ or .splat file.

    A PLY that is not Gaussian splats (a triangle mesh, a bare point cloud) is named for what it
    is, with the splat properties it lacks.

    The table goes to stderr; stdout gets one summary line per file (or, with --json, one JSON
    object per file). With --strict the command exits 1 when any file holds NaN or Inf values.
    """
    from vd.export.inspect import ply_stats

    for f in files:
        check_input_file(f, "Gaussian file")
    bad = []
    for f in files:
        st = ply_stats(f)
        if json_:
            console.out_json(st)
        else:
            console.err.print(inspect_renderable(st))
            console.err.print()
            console.out(summary_line(st))
        if st["nan"] or st["inf"]:
            bad.append(f"{st['file']} ({st['nan']} NaN, {st['inf']} Inf)")
    if strict and bad:
        raise VdError("non-finite values found (--strict): " + "; ".join(bad))


def summary_line(st: dict) -> str:
    """One tab-separated line per file: its count of Gaussians, or what it is when it holds none."""
    if st["is_splats"]:
        return f"{st['file']}\t{st['count']} gaussians\tsh_degree={st['sh_degree']}\tnan={st['nan']}\tinf={st['inf']}"
    return f"{st['file']}\tnot gaussian splats: {st['description']}\tnan={st['nan']}\tinf={st['inf']}"
