"""`vd fetch`: download model weights (resumable, verified, mirror- and proxy-aware)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import List, Optional

import typer

from vd import console
from vd.errors import MissingWeightsError, UsageError, VdError
from vd.fetch import licences, registry
from vd.paths import offline as env_offline
from vd.units import format_size


def fetch(
    models: Optional[List[str]] = typer.Argument(
        None, help="Models to fetch (default: all). See --list.", show_default=False
    ),
    list_: bool = typer.Option(False, "--list", help="List known models, their files, sizes and what is on disk."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash files on disk against the registry (no download)."),
    json_: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    offline: bool = typer.Option(
        False, "--offline", help="No network: only report what is missing (also VD_OFFLINE=1); exit 3 if anything is."
    ),
    proxy: Optional[str] = typer.Option(
        None,
        "--proxy",
        help="Proxy URL (http://, https://, socks5://, socks5h://); default from HTTP(S)_PROXY / ALL_PROXY / NO_PROXY.",
    ),
    manifest: Optional[Path] = typer.Option(
        None,
        "--manifest",
        help="A JSON manifest of models and sources, same format as the built-in registry (also VD_MANIFEST).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Download again even if present (the old file is replaced only once the new one verifies).",
    ),
    licence: Optional[str] = typer.Option(
        None,
        "--licence",
        help="any or commercial: commercial refuses to download weights whose licence forbids commercial use "
        "(default: $VD_LICENCE, else any).",
    ),
) -> None:
    """Download model weights into $VD_MODELS_DIR, resuming and verifying every file.

    Sources are tried in order (FLUX.1-Fill-dev: ModelScope, then Hugging Face with HF_TOKEN);
    files already in a Hugging Face cache are verified and reused. Installed paths go to stdout.
    `--list` shows each model's licence and whether it allows commercial use.
    Exit codes: 0 ok, 1 failure, 2 unknown model or refused by --licence commercial, 3 missing (offline).
    """

    if sum(bool(x) for x in (list_, verify)) > 1:
        raise UsageError("--list and --verify cannot be combined")
    if force and (list_ or verify):
        raise UsageError("--force downloads; it cannot be combined with --list or --verify")
    if force and (offline or env_offline()):
        raise UsageError("--force needs the network; drop --offline / VD_OFFLINE")
    names = models or None
    policy = licences.policy(licence)

    if list_:
        rows = registry.status(names, manifest)
        if json_:
            console.out_json({"models_dir": str(registry.models_dir()), "models": rows})
        else:
            console.out(_table(rows, registry.models_dir()))
        return

    if verify:
        with registry.ConsoleReporter() as rep:
            rows = registry.verify(names, manifest, reporter=rep)
        if json_:
            console.out_json({"files": rows})
        else:
            for row in rows:
                console.out(f"{row['result']}\t{row['path']}")
        bad = [r for r in rows if r["result"] in ("mismatch", "wrong-size")]
        missing = [r for r in rows if r["result"] == "missing"]
        if bad:
            raise VdError(
                f"{len(bad)} file(s) failed verification ({', '.join(r['model'] + '/' + r['file'] for r in bad)}); "
                f"delete them and run: {registry.fetch_command(dict.fromkeys(r['model'] for r in bad))}"
            )
        if missing:
            raise MissingWeightsError(
                f"{len(missing)} file(s) missing ({', '.join(r['model'] + '/' + r['file'] for r in missing)}); "
                f"run: {registry.fetch_command(dict.fromkeys(r['model'] for r in missing))}"
            )
        return

    is_offline = offline or env_offline()
    # --licence commercial: refuse what was named; with no names, fetch only what it allows
    if names:
        licences.check(names, policy, manifest)
    elif policy == licences.COMMERCIAL:
        names = [m for m in registry.known_models(manifest) if licences.allows(m, policy, manifest)]
    with registry.ConsoleReporter() as rep:
        report = registry.fetch(
            names, offline=is_offline, proxy=proxy, manifest_path=manifest, reporter=rep, force=force
        )
    if json_:
        console.out_json(
            {
                "models_dir": str(registry.models_dir()),
                "offline": is_offline,
                "files": [r.as_dict() for r in report.results + report.missing],
            }
        )
    else:
        for r in report.results:
            console.out(str(r.path))
    counts: dict = {}
    for r in report.results:
        counts[r.action] = counts.get(r.action, 0) + 1
    if counts:
        words = {
            "downloaded": "downloaded",
            "linked": "linked from a hub cache",
            "copied": "copied from a hub cache",
            "present": "already present",
        }
        console.info(", ".join(f"{n} {words.get(a, a)}" for a, n in counts.items()) + f" in {registry.models_dir()}")
    if report.missing:
        which = list(dict.fromkeys(r.model for r in report.missing))
        files = ", ".join(r.model + "/" + r.file for r in report.missing)
        raise MissingWeightsError(
            f"offline and {len(report.missing)} file(s) missing ({files}); "
            f"run without --offline / VD_OFFLINE: {registry.fetch_command(which)}"
        )


def licence_line(row: dict) -> str:
    """A model's licence as `vd fetch --list` shows it: the text and "commercial: yes/no/unknown"."""
    commercial = row.get("commercial")
    word = "unknown" if commercial is None else ("yes" if commercial else "no")
    return f"{row.get('license') or 'not stated'} (commercial: {word})"


def _table(rows: list, models_dir) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(title=None, show_lines=False, pad_edge=False, box=None)
    for col in ("model", "file", "size", "state", "sha256", "path"):
        t.add_column(col, no_wrap=col in ("model", "file", "state"), overflow="fold")
    notes = set()
    for m in rows:
        for i, f in enumerate(m["files"]):
            if f["size"] is not None:
                size = format_size(f["size"])
            elif f["state"] == "present":
                size = format_size(f["on_disk"])
            elif f["expected_bytes"]:
                size = f"~{format_size(f['expected_bytes'])}"
            else:
                size = "?"
            state = f["state"]
            if state == "partial":
                state = f"partial ({format_size(f['on_disk'])})"
            if f["sha256_from"] == "published":
                sha = f["sha256"][:12] + "…"
            elif f["sha256_from"] == "recorded":
                sha = f["sha256"][:12] + "… (recorded)"
                notes.add("(recorded): no published sha256; recorded on the first verified download")
            else:
                sha = "not published"
                notes.add("not published: the sha256 is recorded on the first verified download")
            t.add_row(m["model"] if i == 0 else "", f["file"], size, state, sha, f["path"])
        # a line under the model: its licence (Text: "[dev]" is not markup)
        t.add_row("", "licence:", "", "", "", Text(licence_line(m)))
    buf = io.StringIO()
    Console(file=buf, width=160, no_color=True, highlight=False).print(t)
    lines = [line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines()]
    lines.append(f"models directory: {models_dir}")
    lines += sorted(notes)
    return "\n".join(lines)
