"""`vd cache`: list, measure, prune, verify and clear the artifact cache."""

from __future__ import annotations

import typer

from vd.commands import common

app = typer.Typer(help="Manage the content-addressed artifact cache.", no_args_is_help=True)


@app.command("ls")
def ls() -> None:
    """List cached stage results."""
    common.not_implemented("cache ls", "issue 2")
