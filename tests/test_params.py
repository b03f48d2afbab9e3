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
