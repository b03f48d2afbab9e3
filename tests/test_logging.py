"""The library logs through `logging`; only the CLI's handler puts its records on stderr."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import pytest

from vd import console
from vd.viewer.env import wait_after_run

ROOT = Path(__file__).resolve().parents[1]
IGNORED = "viewer: --wait ignored: stdin is not a terminal (use --wait-seconds N in scripts)"


def _prints(tree: ast.AST) -> list[int]:
    """Lines that print: print(...), console.info/warn(...), console.err.<anything>."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name == "print" or name in ("console.info", "console.warn") or name.startswith("console.err."):
                lines.append(node.lineno)
    return lines


def test_library_modules_do_not_print():
    found = []
    for folder in ("vd", "cache"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "vd/console.py":
                continue
            found += [f"{rel}:{line}" for line in _prints(ast.parse(path.read_text(), rel))]
    assert not found, f"log these through logging.getLogger(__name__): {found}"


def test_the_scan_finds_prints():
    source = 'print("a")\nconsole.info("b")\nconsole.warn("c")\nconsole.err.print("d")\nlog.info("e")\n'
    assert _prints(ast.parse(source)) == [1, 2, 3, 4]


@pytest.fixture
def no_handler():
    """The "vd" logger as a library user finds it: no handler of vd's, level unset."""
    logger = logging.getLogger("vd")
    saved = (list(logger.handlers), logger.level)
    for h in saved[0]:
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    yield logger
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in saved[0]:
        logger.addHandler(h)
    logger.setLevel(saved[1])


def test_without_the_cli_handler_a_message_is_a_log_record_not_output(no_handler, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="vd"):
        assert wait_after_run(wait=True, stdin=io.StringIO("")) == "not-a-tty"
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [("vd.viewer.env", logging.INFO, IGNORED)]
    assert capsys.readouterr().err == ""


def test_the_cli_handler_prints_info_and_warnings_as_before(no_handler, capsys):
    console.install_log_handler()
    console.install_log_handler()  # installing again replaces, never doubles
    wait_after_run(wait=True, stdin=io.StringIO(""))
    logging.getLogger("vd.some.module").warning("careful [red]here")
    logging.getLogger("vd.some.module").debug("hidden detail")
    assert capsys.readouterr().err == f"{IGNORED}\nwarning: careful [red]here\n"


def test_debug_records_show_with_debug_and_quiet_silences_all(no_handler, capsys):
    console.install_log_handler(debug=True)
    logging.getLogger("vd.some.module").debug("a detail")
    assert capsys.readouterr().err == "debug: vd.some.module: a detail\n"
    console.set_quiet(True)
    try:
        logging.getLogger("vd.some.module").warning("careful")
        wait_after_run(wait=True, stdin=io.StringIO(""))
        assert capsys.readouterr().err == ""
    finally:
        console.set_quiet(False)


def test_the_cli_installs_its_handler_with_the_debug_level(no_handler, run_vd, tmp_path):
    run_vd("--debug", "inspect", str(tmp_path / "missing.ply"))
    assert [type(h) for h in no_handler.handlers] == [console.ConsoleHandler]
    assert no_handler.level == logging.DEBUG
    run_vd("inspect", str(tmp_path / "missing.ply"))
    assert [type(h) for h in no_handler.handlers] == [console.ConsoleHandler]
    assert no_handler.level == logging.INFO
