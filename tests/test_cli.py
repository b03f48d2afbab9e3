"""The `vd` command line: help for every command, exit codes, stdout/stderr discipline."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap

import pytest
import typer

COMMANDS = [
    [],
    ["fetch"],
    ["depth"],
    ["coarse"],
    ["fine"],
    ["export"],
    ["refine"],
    ["inspect"],
    ["view"],
    ["cache"],
    ["cache", "ls"],
    ["cache", "du"],
    ["cache", "prune"],
    ["cache", "verify"],
    ["cache", "clear"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "vd")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(run_vd, cmd, flag):
    r = run_vd(*cmd, flag)
    assert r.code == 0, r
    assert "Usage: vd" in r.stdout and " ".join(["vd", *cmd]) in r.stdout
    assert r.stderr == ""
    # a flag takes no value: Typer 0.29 writes "<bool>" beside each unless vd's help says otherwise
    assert "<bool>" not in r.stdout


def test_help_lists_every_subcommand(run_vd):
    r = run_vd("--help")
    for name in ("fetch", "depth", "coarse", "fine", "export", "refine", "inspect", "view", "cache"):
        assert f" {name} " in r.stdout
    r = run_vd("cache", "--help")
    for name in ("ls", "du", "prune", "verify", "clear"):
        assert f" {name} " in r.stdout


def test_no_arguments_shows_help_as_usage_error(run_vd):
    r = run_vd()
    assert r.code == 2 and "Usage: vd" in r.stdout + r.stderr


def test_version(run_vd):
    from vd import __version__

    r = run_vd("--version")
    assert (r.code, r.stdout) == (0, f"vd {__version__}\n")


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["depth", "--no-such-option", "x.png"],
        ["cache", "ls", "--stage"],  # option without its value
        ["cache", "prune", "--older-than", "tomorrow"],
        ["cache", "prune"],  # no scope
        ["cache", "clear"],  # no --yes
        ["fine", "x.png", "--views", "many"],  # not an integer
    ],
)
def test_usage_errors_exit_2_without_traceback(run_vd, args):
    r = run_vd(*args)
    assert r.code == 2, r
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_input_paths_exit_1_with_one_sentence(run_vd, tmp_path, kind):
    target = tmp_path / "nothing.ply" if kind == "missing" else tmp_path
    r = run_vd("inspect", str(target))
    assert r.code == 1, r
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


# A throwaway app with commands that exercise run()'s error handling.
def _demo_app():
    from vd import console
    from vd.commands import common
    from vd.errors import InputError, MissingWeightsError

    demo = typer.Typer()

    @demo.callback()
    def _cb(debug: bool = typer.Option(False, "--debug")):
        console.set_debug(debug)

    @demo.command()
    def todo():
        common.not_implemented("todo", "issue 99")

    @demo.command()
    def bad():
        raise InputError("image not found: x.png")

    @demo.command()
    def weights():
        raise MissingWeightsError("model weights for moge are missing; run: vd fetch moge")

    @demo.command()
    def bug():
        raise ZeroDivisionError("division by zero")

    @demo.command()
    def full():
        import errno

        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.ply")

    @demo.command()
    def denied():
        raise PermissionError(13, "Permission denied", "/root/secret")

    @demo.command()
    def oom():
        class OutOfMemoryError(RuntimeError):
            pass

        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @demo.command("coarse")
    def coarse_oom():  # a command with a memory plan: the hint names what it can give up
        class OutOfMemoryError(RuntimeError):
            pass

        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @demo.command()
    def interrupted():
        raise KeyboardInterrupt

    return demo


@pytest.mark.parametrize(
    "cmd, code, text",
    [
        ("todo", 1, "error: `vd todo` is not implemented yet (issue 99); no output was written"),
        ("bad", 1, "error: image not found: x.png"),
        ("weights", 3, "error: model weights for moge are missing; run: vd fetch moge"),
        ("bug", 1, "error: unexpected ZeroDivisionError: division by zero; rerun with --debug for the traceback"),
        ("full", 1, "error: no space left on the device holding /data/out.ply"),
        ("denied", 1, "error: permission denied: /root/secret"),
        ("oom", 1, "error: out of GPU memory; try a smaller --max-resolution"),
        ("coarse", 1, "error: out of GPU memory; plan for less with --vram-budget GIB"),
        ("interrupted", 130, "Interrupted"),
    ],
)
def test_errors_are_one_sentence_with_documented_codes(run_vd, monkeypatch, cmd, code, text):
    import vd.commands.app as appmod

    monkeypatch.setattr(appmod, "app", _demo_app())
    r = run_vd(cmd)
    assert r.code == code, r
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith(text) and r.stderr.count("\n") == 1


def test_debug_shows_the_traceback(run_vd, monkeypatch):
    import vd.commands.app as appmod

    monkeypatch.setattr(appmod, "app", _demo_app())
    r = run_vd("--debug", "bad")
    assert r.code == 1 and "Traceback" in r.stderr and r.stderr.rstrip().endswith("error: image not found: x.png")


def test_real_not_implemented_commands_exit_1(run_vd):
    """Whatever is still a stub says so with exit 1 and writes nothing to stdout."""
    from vd.commands import common

    for args in (["view", "x.ply"], ["refine", "d", "--init", "i.ply", "--out", "o"], ["export", "x.ply"]):
        r = run_vd(*args)
        if "not implemented yet" in r.stderr:
            assert r.code == 1 and r.stdout == ""
    with pytest.raises(Exception, match="not implemented yet"):
        common.not_implemented("x", "issue 0")


def test_quiet_silences_stderr(run_vd):
    r = run_vd("-q", "cache", "ls")
    assert (r.code, r.stdout, r.stderr) == (0, "", "")
    r = run_vd("cache", "ls")
    assert r.stderr != ""


def test_json_output_is_one_parseable_line(run_vd):
    for args in (["cache", "ls", "--json"], ["cache", "du", "--json"], ["cache", "verify", "--json"]):
        r = run_vd(*args)
        assert r.code == 0, r
        assert len(r.stdout.splitlines()) == 1
        json.loads(r.stdout)


_PROGRESS_SCRIPT = textwrap.dedent(
    """
    import time, typer
    from vd import console
    import vd.commands.app as appmod

    demo = typer.Typer()

    @demo.callback()
    def _cb():
        pass

    @demo.command()
    def work():
        console.info("starting")
        console.warn("this is a warning")
        with console.progress(transient=False) as p:
            t = p.add_task("working", total=5)
            for _ in range(5):
                time.sleep(0.05)
                p.advance(t)
        with console.status("finishing"):
            time.sleep(0.1)
        console.out("/tmp/result.ply")
        console.out_json({"ok": True})

    appmod.app = demo
    raise SystemExit(appmod.run(["work"]))
    """
)


def _run_with_tty_stderr(script: str, env: dict) -> tuple[int, str, str]:
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = p.stdout.read().decode()
    p.wait(timeout=30)
    os.close(master)
    return p.returncode, out, b"".join(chunks).decode(errors="replace")


def test_stdout_stays_clean_while_stderr_shows_progress():
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    code, out, err = _run_with_tty_stderr(_PROGRESS_SCRIPT, env)
    assert code == 0, err
    assert out == '/tmp/result.ply\n{"ok": true}\n'
    assert "working" in err and "this is a warning" in err and "\x1b[" in err  # a live bar on the terminal


def test_a_spinner_may_run_inside_bars():
    # a model that loads (a spinner) during a stage's steps (bars): rich before 14.1 drew one live display at
    # a time and ended the run with "Only one live display may be active at once" (hence rich>=14.1)
    script = textwrap.dedent(
        """
        import time
        from vd import console
        with console.progress(transient=False) as p:
            t = p.add_task("steps", total=2)
            with console.status("loading the model"):
                time.sleep(0.3)
            p.advance(t, 2)
        with console.status("after the bars"):
            time.sleep(0.1)
        print("done")
        """
    )
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    code, out, err = _run_with_tty_stderr(script, env)
    assert code == 0, err
    assert out == "done\n" and "loading the model" in err and "steps" in err and "after the bars" in err


def test_coarse_and_fine_on_a_terminal_show_their_steps_and_fits_as_bars(tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "room", "rgb.png")
    args = ["coarse", example, "-o", str(tmp_path / "out"), "--max-resolution", "64", "--n-frames", "3",
            "--dense-multiplier", "4", "--init-iters", "3", "--view-iters", "3", "--move-views", "0", "--fallback", "closest",
            "--device", "cpu", "--viewer", "none"]
    script = f"from vd.commands.app import run; raise SystemExit(run({args!r}))"
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm", "VD_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err = _run_with_tty_stderr(script, env)
    assert code == 0, err
    for line in ("coarse: scaffold fit", "coarse: views", "coarse: view 1 fit", "3/3"):
        assert line in err, line
    assert out.splitlines()[0].endswith("coarse.ply")  # results on stdout, bars on stderr only
    code, _, err = _run_with_tty_stderr(script, env)  # all from the cache: no bars
    assert code == 0 and "fit" not in err and "coarse: views" not in err, err
    args = ["fine", str(tmp_path / "out"), "--allow-classical", "--views", "2", "--steps", "1", "--gs-iters", "3",
            "--device", "cpu", "--viewer", "none"]
    script = f"from vd.commands.app import run; raise SystemExit(run({args!r}))"
    code, out, err = _run_with_tty_stderr(script, env)
    assert code == 0, err
    for line in ("fine: MCS steps", "fine: step 1/1, scene fit", "fine: final scene fit", "6/6"):
        assert line in err, line


def test_several_images_on_a_terminal_show_a_bar_of_the_images(tmp_path):
    import shutil

    room = os.path.join(os.path.dirname(__file__), "..", "examples", "room")
    for stem in ("a", "b"):
        shutil.copy(os.path.join(room, "rgb.png"), tmp_path / f"{stem}.png")
        shutil.copy(os.path.join(room, "rgb.depth.npy"), tmp_path / f"{stem}.depth.npy")
    shutil.copy(os.path.join(room, "intrinsics.json"), tmp_path / "intrinsics.json")
    args = ["depth", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out"),
            "--max-resolution", "64", "--viewer", "none"]
    script = f"from vd.commands.app import run; raise SystemExit(run({args!r}))"
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm", "VD_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err = _run_with_tty_stderr(script, env)
    assert code == 0, err
    assert "depth: images" in err and "1/2" in err
    assert len([line for line in out.splitlines() if line.endswith("depth.png")]) == 2, out


def test_no_color_removes_colour_codes():
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm", "NO_COLOR": "1"}
    script = "from vd import console; console.warn('careful')"
    code, out, err = _run_with_tty_stderr(script, env)
    assert code == 0 and out == ""
    assert "careful" in err and "\x1b[33m" not in err and "\x1b[3" not in err.replace("\x1b[?", "")


def test_help_and_cache_ls_import_no_heavy_modules():
    script = textwrap.dedent(
        """
        import sys
        from vd.commands.app import run
        for args in (["--help"], ["cache", "ls"], ["cache", "du"], ["depth", "--help"], ["coarse", "--help"],
                     ["fine", "--help"], ["export", "--help"], ["refine", "--help"], ["inspect", "--help"],
                     ["view", "--help"], ["fetch", "--help"], ["cache", "prune", "--help"]):
            run(args)
        heavy = sorted(m for m in ("torch", "diffusers", "gsplat", "rerun", "cv2", "transformers", "scipy", "numpy", "PIL")
                       if m in sys.modules)
        print("HEAVY:" + ",".join(heavy), file=sys.stderr)
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stderr.splitlines() if x.startswith("HEAVY:")][-1]
    assert line == "HEAVY:", f"heavy modules imported at CLI start-up: {line[6:]}"


def test_check_input_file_sentences(tmp_path, monkeypatch):
    from vd.errors import InputError, check_input_file

    f = tmp_path / "photo.png"
    f.write_bytes(b"x")
    assert check_input_file(f) == f
    with pytest.raises(InputError, match="not found"):
        check_input_file(tmp_path / "nope.png", "image")
    with pytest.raises(InputError, match="is a directory"):
        check_input_file(tmp_path, "image")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root reads everything; simulate mode 000
    with pytest.raises(InputError, match="not readable") as e:
        check_input_file(f, "image")
    assert "\n" not in str(e.value)


def test_coarse_names_a_wrong_image_before_asking_for_model_weights(run_vd, tmp_path):
    """No depth file beside these, and no MoGe weights in the test cache: the image is still what is wrong."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (32, 24), (90, 120, 200)).save(good)
    cases = {
        "text.png": (b"not an image", "not an image file"),
        "cut.png": (good.read_bytes()[:60], "corrupt or truncated"),
        "empty.png": (b"", "image file is empty"),
    }
    for name, (data, sentence) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = run_vd("coarse", tmp_path / name, "-o", tmp_path / "out")
        assert r.code == 1, (name, r)
        assert sentence in r.stderr and "vd fetch" not in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr)
        assert not (tmp_path / "out").exists()
    r = run_vd("coarse", good, "-o", tmp_path / "out")  # a good image: now the weights are what is missing
    assert r.code == 3 and "vd fetch moge" in r.stderr, r


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_input_exit_1(run_vd, tmp_path):
    f = tmp_path / "scene.ply"
    f.write_bytes(b"ply\n")
    f.chmod(0)
    r = run_vd("inspect", str(f))
    assert r.code == 1 and "Traceback" not in r.stderr and r.stderr.startswith("error: ")


def test_log_lines_print_user_paths_verbatim(capsys):
    """Paths such as shots/[day1]/a.png are not rich markup: info and warn print them as given."""
    from vd import console

    console.info("reading shots/[day1]/a.png")
    console.warn("skipping [red]b.png")
    err = capsys.readouterr().err
    assert "shots/[day1]/a.png" in err and "skipping [red]b.png" in err


HELP_COMMANDS = ["depth", "coarse", "fine", "export", "refine", "inspect", "view", "doctor", "batch", "fetch"]


def _description(run_vd, cmd: str) -> list[str]:
    """The paragraphs of a command's --help description, each as the list of its rendered lines."""
    r = run_vd(cmd, "--help")
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage: vd" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    paragraphs, cur = [], []
    for line in lines[start:end]:
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            paragraphs.append(cur)
            cur = []
    return paragraphs + ([cur] if cur else [])


@pytest.mark.parametrize("cmd", HELP_COMMANDS)
def test_help_descriptions_wrap_at_the_terminal_not_mid_sentence(run_vd, monkeypatch, cmd):
    monkeypatch.setenv("COLUMNS", "200")
    for para in _description(run_vd, cmd):
        for a, b in zip(para, para[1:]):
            # a line followed by an unindented one breaks only where the terminal is full (or after a colon)
            if not b.startswith("   ") and not a.rstrip().endswith(":"):
                assert len(a) > 150, f"`vd {cmd} --help` breaks a sentence at {a.strip()[-30:]!r} / {b.strip()[:30]!r}"


def test_batch_help_shows_the_batch_file_tables(run_vd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = run_vd("batch", "--help")
    assert "[defaults]" in r.stdout and "[[images]]" in r.stdout


def test_a_focal_beyond_float32_is_a_usage_error(run_vd, tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "p.png")
    np.save(tmp_path / "p.depth.npy", np.ones((32, 48), np.float32))
    for focal in ("1e308", "3.5e38", "1e-300"):
        r = run_vd("depth", tmp_path / "p.png", "--backend", "file", "--focal", focal, "-o", tmp_path / "o")
        assert r.code == 2 and "--focal" in r.stderr and "Traceback" not in r.stderr, (focal, r)
    assert not (tmp_path / "o").exists()
    r = run_vd("depth", tmp_path / "p.png", "--backend", "file", "--focal", "3e38", "-o", tmp_path / "o")
    assert r.code == 0, r
    text = (tmp_path / "o" / "intrinsics.json").read_text()
    assert "Infinity" not in text and json.loads(text)["fx"] > 1e37


@pytest.mark.parametrize("args", [["-O", "n_frames=-1"], ["--focal", "nan"], ["-O", "fine_views=0"], ["-O", "n_frames=\"x\""],
                                  ["--fov", "200"]], ids=["n_frames", "focal-nan", "fine_views", "type", "fov"])
def test_batch_refuses_a_bad_value_before_any_task_starts(run_vd, tmp_path, args):
    import numpy as np
    from PIL import Image

    for name in ("a", "b"):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / f"{name}.png")
    out = tmp_path / "runs"
    r = run_vd("batch", tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--executor", "serial", *args)
    assert r.code == 2, r
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args", [["coarse", "{photo}", "-o", "{tmp}/c"], ["coarse", "{photo}", "--depth-backend", "moge"],
                                  ["coarse", "{example}", "--inpaint-backend", "flux-fill", "-o", "{tmp}/f"],
                                  ["fine", "{example}", "--inpaint-backend", "flux-fill"]],
                         ids=["coarse-auto-depth", "coarse-moge", "coarse-flux", "fine-flux"])
def test_missing_weights_are_reported_before_torch_is_imported(tmp_path, args):
    from pathlib import Path

    import numpy as np
    from conftest import vd_env
    from PIL import Image

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "photo.png")  # no depth map beside it
    example = Path(__file__).resolve().parents[1] / "examples" / "room" / "rgb.png"
    argv = [a.format(photo=tmp_path / "photo.png", tmp=tmp_path, example=example) for a in args]
    code = ("import sys; from vd.commands.app import run; c = run(sys.argv[1:]); "
            "print(c, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=vd_env(), timeout=120,
                       cwd=tmp_path)
    assert r.stdout.split() == ["3", "False"], (r.stdout, r.stderr)
    assert "run: vd fetch " in r.stderr and r.stderr.count("\n") == 1, r.stderr
