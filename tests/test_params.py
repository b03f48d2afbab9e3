"""Parameters are validated in one place (vd.params): a bad value is exit 2 and one sentence
naming the option, before any work, from the CLI and from the library."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vd.errors import UsageError
from vd.params import CoarseParams, FineParams, FluxParams, VideoParams, check_device, check_intrinsics

ROOT = Path(__file__).resolve().parents[1]
IMAGE = str(ROOT / "examples" / "room" / "rgb.png")


@pytest.mark.parametrize("args, option", [
    (["coarse", IMAGE, "--focal", "inf"], "--focal"),
    (["coarse", IMAGE, "--backward-ratio", "inf"], "--backward-ratio"),
    (["coarse", IMAGE, "--forward-ratio", "nan"], "--forward-ratio"),
    (["coarse", IMAGE, "--device", "bogus"], "--device"),
    (["coarse", IMAGE, "--adjacent-exclusion", "-1"], "--adjacent-exclusion"),
    (["coarse", IMAGE, "--fov", "200"], "--fov"),
    (["coarse", IMAGE, "--max-resolution", "4"], "--max-resolution"),
    (["coarse", IMAGE, "--guidance", "inf"], "--guidance"),
    (["depth", IMAGE, "--focal", "inf"], "--focal"),
    (["depth", IMAGE, "--fov", "nan"], "--fov"),
    (["depth", IMAGE, "--device", "gpu0"], "--device"),
    (["fine", IMAGE, "--rect-weight", "nan"], "--rect-weight"),
    (["fine", IMAGE, "--device", "bogus"], "--device"),
    (["export", IMAGE, "--format", "video", "--fps", "0", "-o", "x.mp4"], "--fps"),
    (["export", IMAGE, "--format", "video", "--fps", "inf", "-o", "x.mp4"], "--fps"),
])
def test_bad_values_are_one_sentence_usage_errors(args, option, capsys, tmp_path, monkeypatch):
    from vd.commands.app import run

    monkeypatch.chdir(tmp_path)
    code = run(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and option in lines[0], err
    assert not list(tmp_path.iterdir())  # nothing was written


def test_depth_with_an_infinite_focal_writes_nothing(tmp_path):
    """It used to exit 0 and write Infinity into intrinsics.json."""
    from vd.commands.app import run

    assert run(["depth", IMAGE, "--focal", "inf", "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_every_float_parameter_must_be_finite():
    for cls in (CoarseParams, FineParams, FluxParams, VideoParams):
        floats = [f for f, v in vars(cls()).items() if isinstance(v, float)]
        assert floats, cls
        for name in floats:
            for bad in (math.inf, -math.inf, math.nan):
                with pytest.raises(UsageError, match="--" + name.replace("_", "-")):
                    cls(**{name: bad}).validate()


def test_defaults_are_valid():
    for cls in (CoarseParams, FineParams, FluxParams, VideoParams):
        cls().validate()


@pytest.mark.parametrize("device, ok", [("cpu", True), ("cuda", True), ("cuda:1", True), ("mps", True), (None, True),
                                        ("cuda:x", False), ("bogus", False), ("CPU ", False)])
def test_device_names(device, ok):
    if ok:
        check_device(device)
    else:
        with pytest.raises(UsageError, match="--device"):
            check_device(device)


def test_library_rejects_what_the_cli_rejects():
    from vd.models.choose import get_depth_backend

    with pytest.raises(UsageError, match="--focal"):
        get_depth_backend("file", focal=math.inf)
    with pytest.raises(UsageError, match="not both"):
        check_intrinsics(500.0, 60.0)


# --- parameters declared once: every field has one option, whose default and help are the field's

def _command(name):
    import typer

    from vd.commands.app import app

    return typer.main.get_command(app).commands[name]


def _fields(cls, only=None, but=()):
    from dataclasses import fields

    return [(cls, f.name) for f in fields(cls) if (only is None or f.name in only) and f.name not in but]


def _cli_fields():
    from vd.batch import NOT_IN_BATCH
    from vd.params import RunOptions

    return {
        "coarse": _fields(CoarseParams) + _fields(FluxParams) + _fields(RunOptions, but={"allow_classical"}),
        # fine samples with its own steps and guidance (FineParams); of Flux Fill it takes the GPU memory options
        "fine": _fields(FineParams) + _fields(FluxParams, only={"offload", "vram_budget"})
        + _fields(RunOptions, only={"inpaint_backend", "render_backend", "device", "seed", "fetch", "allow_classical"}),
        "batch": _fields(RunOptions, but=NOT_IN_BATCH),  # the parameter dataclasses' fields go through -O NAME=VALUE
    }


def _shown(default, option: str) -> str:
    if isinstance(default, bool) and "/" in option:
        on, off = (name.lstrip("-") for name in option.split("/"))
        return on if default else off
    if isinstance(default, tuple):
        return " ".join(f"{x:g}" for x in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


@pytest.mark.parametrize("command", ["coarse", "fine", "batch"])
def test_every_field_has_exactly_one_option_showing_its_default_and_help(command):
    from vd.params import help_of, option_of

    cmd = _command(command)
    for cls, name in _cli_fields()[command]:
        option = option_of(cls, name)
        matches = [p for p in cmd.params if option.split("/")[0] in p.opts]
        assert len(matches) == 1, f"vd {command}: {cls.__name__}.{name} has {len(matches)} options {option}"
        opt, default, help_text = matches[0], getattr(cls, name), help_of(cls, name)
        assert help_text and opt.help.startswith(help_text), f"vd {command} {option}: not the field's help: {opt.help}"
        if opt.default is None and default is not None:  # "not given": the help shows the dataclass default
            shown = f"\\[default: {_shown(default, option)}]"
            assert opt.show_default is False and shown in opt.help, (command, option, opt.help)
        else:  # the option takes the field's default and typer shows it
            assert opt.default == default, f"vd {command} {option}: default {opt.default!r}, field {default!r}"


def test_param_option_takes_the_help_declared_with_the_field():
    """A field added with its help needs no help string in the command: param_option finds it."""
    from dataclasses import make_dataclass

    from vd.commands.common import param_option
    from vd.params import param

    Extended = make_dataclass("Extended", [("new_knob", float, param(0.25, "A knob added later."))],
                              bases=(CoarseParams,))
    opt = param_option(Extended, "new_knob")
    assert opt.param_decls == ("--new-knob",) and opt.default is None
    assert opt.help.startswith("A knob added later.") and "[default: 0.25]" in opt.help


def test_coarse_help_keeps_each_sentence_on_one_line(run_vd, monkeypatch):
    """The description used to break mid-sentence ("into the output" / "folder")."""
    monkeypatch.setenv("COLUMNS", "400")
    r = run_vd("coarse", "--help")
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert any("into the output folder and prints the written paths" in ln for ln in lines), r.stdout[:1500]
    assert any(ln.strip() == "Every step is cached: a second identical run is instant and an interrupted run resumes."
               for ln in lines), r.stdout[:1500]
