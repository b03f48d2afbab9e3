"""`vd fetch`: download model weights (resumable, verified, mirror- and proxy-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd.commands.common import not_implemented


def fetch(
    models: Optional[List[str]] = typer.Argument(None, help="Models to fetch (default: all). See --list.", show_default=False),
    list_: bool = typer.Option(False, "--list", help="List known models, their files, sizes and what is on disk."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash files on disk against the registry."),
    json_: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    offline: bool = typer.Option(False, "--offline", help="No network: only report what is missing (also VD_OFFLINE=1)."),
    proxy: Optional[str] = typer.Option(None, "--proxy", help="Proxy URL (http://, socks5://, socks5h://); default from *_PROXY variables."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="A JSON manifest of extra models/sources (also VD_MANIFEST)."),
) -> None:
    """Download model weights into $VD_MODELS_DIR, resuming and verifying every file."""
    not_implemented("fetch", "issue 4")
