"""The `vd` Typer application: global options, subcommand registration, error handling.

Every subcommand module imports only typer and the standard library at import time; the
heavy work (torch, diffusers, ...) is imported inside the command functions, so
`vd --help` and `vd cache ls` start fast.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import traceback
from typing import Optional

import typer

from vd import __version__, console
from vd.commands import batch as batch_cmd
from vd.commands import cache as cache_cmd
from vd.commands import coarse as coarse_cmd
from vd.commands import depth as depth_cmd
from vd.commands import doctor as doctor_cmd
from vd.commands import export as export_cmd
from vd.commands import fetch as fetch_cmd
from vd.commands import fine as fine_cmd
from vd.commands import inspect as inspect_cmd
from vd.commands import refine as refine_cmd
from vd.commands import view as view_cmd
from vd.errors import EXIT_FAILURE, EXIT_USAGE, VdError, disk_full_message
from vd.outputs import record_inputs

HELP = """\
Turn one photo into a 3D Gaussian-splatting scene.

Stages share a content-addressed cache, so every command resumes from memoised outputs.
Typical run: [bold]vd coarse photo.jpg[/] then [bold]vd export photo.jpg --format ply -o scene.ply[/].

Exit codes: 0 success, 1 failure, 2 usage error, 3 model weights missing (run [bold]vd fetch[/]).
"""

app = typer.Typer(
    name="vd",
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,  # static scripts live in completions/ (python completions/generate.py)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vd {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only results on stdout and errors on stderr; no tables or bars."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback when something fails."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    cache_remote: Optional[str] = typer.Option(
        None,
        "--cache-remote",
        metavar="URL",
        help="A shared remote cache tier (file://, s3://, gs://; default $VD_CACHE_REMOTE).",
    ),
) -> None:

    if cache_remote is not None:
        os.environ["VD_CACHE_REMOTE"] = cache_remote  # read by Cache.open in every stage

    console.set_quiet(quiet)
    console.set_debug(debug)
    console.install_log_handler(debug=debug)  # the library logs; the CLI shows its records on stderr


app.command("fetch", no_args_is_help=False)(fetch_cmd.fetch)
app.command("depth", no_args_is_help=True)(depth_cmd.depth)
app.command("coarse", no_args_is_help=True)(coarse_cmd.coarse)
app.command("fine", no_args_is_help=True)(fine_cmd.fine)
app.command("export", no_args_is_help=True)(export_cmd.export)
app.command("refine", no_args_is_help=True)(refine_cmd.refine)
app.command("inspect", no_args_is_help=True)(inspect_cmd.inspect)
app.command("view", no_args_is_help=True)(view_cmd.view)
app.command("doctor", no_args_is_help=False)(doctor_cmd.doctor)
app.command("batch", no_args_is_help=True)(batch_cmd.batch)
app.add_typer(cache_cmd.app, name="cache")


def reflow(doc: str) -> str:
    """A docstring's paragraphs each on one line, so --help wraps them at the terminal's width (rich markup
    keeps every newline). Indented lines (examples) and the lines after one ending in ":" stay as they are."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    for line in lines:
        prev = out[-1] if out else ""
        joins = prev.strip() and line.strip() and not line[0].isspace() and not prev[0].isspace()
        if joins and not prev.rstrip().endswith(":"):
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


for _info in app.registered_commands + cache_cmd.app.registered_commands:
    if _info.callback is not None and _info.callback.__doc__:
        _info.callback.__doc__ = reflow(_info.callback.__doc__)


INTERRUPTED = "Interrupted; completed steps are cached and the next run resumes from them."
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM (kill, a scheduler's time limit): unwinds like Ctrl-C, so outputs are rolled back and locks released."""


def _on_sigterm(signum, frame):
    raise Terminated()


def run(argv: list[str] | None = None, prog_name: str = "vd") -> int:
    """Run the CLI on `argv` and return the exit code; never raises for user errors."""

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _run(argv, prog_name)
    except Terminated:
        console.err.print(INTERRUPTED)
        return EXIT_TERMINATED
    finally:
        record_inputs()
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def plain_flags(command) -> None:
    """Give the flags of `command` and its subcommands (the help option too) no type in their help: Typer 0.29
    shows one beside every option, "<bool>" beside a flag, which reads as if the flag took a value."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # click before Typer 0.29 never shows a flag's metavar
    help_option_of = command.get_help_option

    def help_option(ctx):
        option = help_option_of(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        plain_flags(sub)


def _run(argv: list[str] | None, prog_name: str) -> int:
    command = typer.main.get_command(app)
    plain_flags(command)
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
        if result == 130:  # typer turns KeyboardInterrupt into Exit(130) and returns its code
            console.err.print(INTERRUPTED)
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        console.err.print("Aborted.")
        return EXIT_FAILURE
    except typer.TyperException as e:  # usage errors: bad option, missing argument, bad value
        show = getattr(e, "show", None)  # click's exceptions show themselves; typer's base class does not
        if show is not None:
            show(file=sys.stderr)
        else:
            sys.stderr.write(f"error: {e}\n")
        return getattr(e, "exit_code", EXIT_USAGE) or EXIT_USAGE
    except VdError as e:
        return _report(str(e), e.exit_code)
    except KeyboardInterrupt:
        console.err.print(INTERRUPTED)
        return 130
    except OSError as e:
        from vd.errors import OUTPUT_HINT, is_disk_full

        if is_disk_full(e):
            return _report(disk_full_message(e.filename or "the output", OUTPUT_HINT), EXIT_FAILURE)
        if isinstance(e, PermissionError):
            return _report(f"permission denied: {e.filename or e}", EXIT_FAILURE)
        return _report(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), EXIT_FAILURE)
    except MemoryError:
        return _report("out of memory; try a smaller --max-resolution or fewer views", EXIT_FAILURE)
    except Exception as e:  # a bug: say so in one line; --debug shows the traceback
        if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            return _report(f"out of GPU memory; {_gpu_memory_hint(argv)}", EXIT_FAILURE)
        where = "" if console.is_debug() else "; rerun with --debug for the traceback"
        return _report(f"unexpected {type(e).__name__}: {e}{where}", EXIT_FAILURE)


# what each command can give up for memory (its own options); the memory plan's footprints are estimates until
# bench/gpu/run.sh measures them, so a card can still run out
_GPU_MEMORY_HINTS = {
    "coarse": "plan for less with --vram-budget GIB (below the free memory vd doctor reports), or choose --offload "
    "sequential, --quant q4_k or --depth-model vits; a rerun with the same weights resumes from the cached steps",
    "fine": "plan for less with --vram-budget GIB (below the free memory vd doctor reports), or choose --offload "
    "sequential or --quant q4_k; a rerun with the same weights resumes from the cached steps",
    "depth": "try --depth-model vits (or vitb), a smaller --max-resolution or --depth-device cpu",
}


def _gpu_memory_hint(argv: list[str] | None) -> str:
    """What to try after running out of GPU memory, for the command `argv` ran."""
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), "")
    return _GPU_MEMORY_HINTS.get(command, "try a smaller --max-resolution, fewer views or --device cpu")


def _report(message: str, code: int) -> int:
    if console.is_debug():
        traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
