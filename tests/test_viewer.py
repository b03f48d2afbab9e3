"""The Rerun viewer integration: mode selection, sinks (file tee, gRPC serve/connect), waits,
what is logged, analytics kept off, and `vd view` end to end. Offline; servers on 127.0.0.1 only,
every viewer closed (and its server stopped) at the end of its test."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rerun")

from vd.errors import UsageError, VdError  # noqa: E402
from vd.viewer import NullViewer, open_viewer, resolve_auto  # noqa: E402
from vd.viewer import env as venv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _headless(monkeypatch, tmp_path):
    """No display, rerun's analytics files (if any) land in a temp HOME we can inspect."""
    for name in venv.DISPLAY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("VD_VIEWER", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture
def viewers():
    """Collects viewers opened by a test and closes them (stopping their servers) afterwards."""
    opened = []
    yield opened
    for v in opened:
        v._close(wait=False) if hasattr(v, "_close") else v.close()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def rerun_cli(*args, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = venv.rerun_executable()
    assert exe, "the rerun CLI ships with rerun-sdk"
    env = venv.child_env()
    env["HOME"] = str(home)
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def rrd_entities(path: Path, home: Path) -> set[str]:
    """Entity paths of a recording (`rerun rrd stats`, its 'chunks per entity' section)."""
    p = rerun_cli("rrd", "stats", path, home=home)
    assert p.returncode == 0, p.stderr
    return set(re.findall(r"^(/\S+): \d+\s*$", p.stdout, flags=re.M))


def assert_verified(path: Path, home: Path) -> None:
    p = rerun_cli("rrd", "verify", path, home=home)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verified without error" in p.stdout + p.stderr


def make_gaussians(n=64, sh_degree=1, seed=0):
    import torch

    from vd.gaussians import Gaussians

    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return Gaussians(means=torch.randn(n, 3, generator=gen) + torch.tensor([0.0, 0.0, 3.0]),
                     log_scales=torch.full((n, 3), -3.0), quats=torch.randn(n, 4, generator=gen),
                     opacity_logits=torch.zeros(n), sh=0.1 * torch.randn(n, k, 3, generator=gen))


def log_demo_scene(v) -> None:
    rgb = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[0, 0] = np.nan
    v.log_frame("input", K=K, world_from_camera=np.eye(4), rgb=rgb, depth=depth,
                masks={"spawn": np.ones((48, 64), bool), "hole": None}, tab="scaffold")
    v.log_gaussians("scaffold", make_gaussians(sh_degree=0))
    pose = np.eye(4)
    pose[0, 3] = 0.1
    v.log_frame("view_001", K=K, world_from_camera=pose, rgb=(rgb * 255).astype(np.uint8), depth=depth,
                masks={"hole": np.zeros((48, 64), bool)}, tab="coarse")
    v.log_gaussians("coarse", make_gaussians(sh_degree=1))
    v.set_tab("fine")
    for i in range(3):
        v.log_video_frame(i, rgb, depth, K=K, world_from_camera=pose)
    v.set_tab("final")


EXPECTED = {
    "/world/scaffold/cameras/input", "/world/scaffold/cameras/input/rgb", "/world/scaffold/cameras/input/depth",
    "/world/scaffold/cameras/input/masks/spawn", "/world/scaffold/gaussians",
    "/world/coarse/cameras/view_001", "/world/coarse/cameras/view_001/rgb",
    "/world/coarse/cameras/view_001/masks/hole", "/world/coarse/gaussians",
    "/world/final/camera", "/world/final/camera/rgb", "/world/final/camera/depth",
}


# ---------------------------------------------------------------------------------------------
# mode selection


def test_auto_resolution_matrix():
    assert resolve_auto(interactive=True, display=True) == "spawn"
    assert resolve_auto(interactive=True, display=False) == "serve"
    assert resolve_auto(interactive=False, display=True) == "none"
    assert resolve_auto(interactive=False, display=False) == "none"


def test_display_detection(monkeypatch):
    if sys.platform in ("darwin", "win32"):
        pytest.skip("always a display there")
    assert not venv.has_display({})
    assert not venv.has_display({"DISPLAY": ""})
    for name in venv.DISPLAY_VARS:
        assert venv.has_display({name: ":0"})


def test_headless_auto_is_null_and_never_spawns(monkeypatch, capsys):
    from vd.viewer import rerun_viewer

    def boom(*a, **k):  # pragma: no cover - the point is that it is never called
        raise AssertionError("spawned a viewer headless")

    monkeypatch.setattr(rerun_viewer, "spawn_viewer", boom)
    assert not sys.stdout.isatty()
    v = open_viewer("auto")
    assert isinstance(v, NullViewer) and not v.enabled
    log_demo_scene(v)  # all no-ops
    v.close()
    # a display but no terminal (a script run from a desktop): still nothing
    monkeypatch.setenv("DISPLAY", ":0")
    assert isinstance(open_viewer("auto"), NullViewer)
    assert capsys.readouterr().out == ""


def test_headless_auto_in_a_child_process_imports_no_rerun(tmp_path):
    code = ("import sys; from vd.viewer import open_viewer; v = open_viewer('auto'); v.close(); "
            "import vd.commands.app; print(type(v).__name__, 'rerun' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in venv.DISPLAY_VARS}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["NullViewer", "False"]
    assert "viewer" not in p.stderr and "rerun" not in p.stderr.lower()


def test_spawn_without_display_is_a_usage_error():
    with pytest.raises(UsageError, match="needs a display"):
        open_viewer("spawn")


def test_bad_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--viewer must be one of"):
        open_viewer("window")
    with pytest.raises(UsageError, match="needs --rrd"):
        open_viewer("save")
    with pytest.raises(UsageError, match=r"\.rrd"):
        open_viewer("save", rrd=tmp_path / "x.txt")
    with pytest.raises(UsageError, match="directory"):
        open_viewer("save", rrd=tmp_path)
    with pytest.raises(UsageError, match="wait-seconds"):
        open_viewer("none", wait_seconds=-1)


def test_auto_headless_interactive_serves_and_prints_connect_lines(monkeypatch, capsys, viewers):
    monkeypatch.setattr(venv, "is_interactive", lambda stream=None: True)
    port = venv.free_port()
    v = open_viewer("auto", port=port)
    viewers.append(v)
    assert v.mode == "serve" and v.url == f"rerun+http://127.0.0.1:{port}/proxy"
    assert venv.is_listening(port)
    err = capsys.readouterr().err
    assert f"rerun --connect rerun+http://127.0.0.1:{port}/proxy" in err
    assert f"ssh -L {port}:127.0.0.1:{port} " in err
    v.close()
    assert _stops_listening(port)


def _stops_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not venv.is_listening(port, timeout=0.2):
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------------------------
# sinks


def test_save_writes_a_verified_rrd_with_the_expected_entities(tmp_path, _headless, viewers):
    out = tmp_path / "rec" / "scene.rrd"
    v = open_viewer("save", rrd=out, strict=True)
    viewers.append(v)
    log_demo_scene(v)
    assert not out.exists() and (tmp_path / "rec" / "scene.rrd.part").exists()  # no half-written .rrd
    v.close()
    assert out.is_file() and not (tmp_path / "rec" / "scene.rrd.part").exists()
    assert_verified(out, _headless)
    ents = rrd_entities(out, _headless)
    assert EXPECTED <= ents, EXPECTED - ents
    assert "/world/scaffold/cameras/input/masks/hole" not in ents  # None masks are skipped
    # neither the SDK nor the rerun CLI (analytics off) wrote anything under HOME
    assert files_under(_headless) == []


def test_serve_on_a_busy_port_moves_to_a_free_one_and_tees_to_the_file(tmp_path, _headless, viewers, capsys):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        v = open_viewer("serve", port=port, rrd=tmp_path / "tee.rrd", strict=True)
        viewers.append(v)
        new_port = int(v.url.rsplit(":", 1)[1].split("/")[0])
        assert new_port != port and venv.is_listening(new_port)
        assert f"port {port} is taken" in capsys.readouterr().err
        # a second sink (connect mode) streams into that server while the file tee keeps writing
        c = open_viewer("connect", port=new_port, strict=True)
        viewers.append(c)
        assert c.mode == "connect"
        log_demo_scene(c)
        c.close()
        log_demo_scene(v)
        v.close()
        assert _stops_listening(new_port)  # no server left behind
    finally:
        busy.close()
    assert_verified(tmp_path / "tee.rrd", _headless)
    assert EXPECTED <= rrd_entities(tmp_path / "tee.rrd", _headless)
    assert files_under(_headless) == []


def test_connect_without_a_viewer_fails_clearly():
    port = venv.free_port()
    with pytest.raises(VdError, match=f"no Rerun viewer is listening on 127.0.0.1:{port}"):
        open_viewer("connect", port=port)


def test_none_with_rrd_still_saves(tmp_path, viewers):
    v = open_viewer("none", rrd=tmp_path / "n.rrd")
    viewers.append(v)
    assert v.mode == "save"
    v.close()
    assert (tmp_path / "n.rrd").is_file()


def test_discard_leaves_no_file(tmp_path, viewers):
    v = open_viewer("save", rrd=tmp_path / "d.rrd")
    viewers.append(v)
    v.discard()
    assert files_under(tmp_path / "home") == [] and not list(tmp_path.glob("d.rrd*"))


def test_an_images_run_that_fails_leaves_no_recording_and_one_that_ends_keeps_it(tmp_path):
    from vd.commands.viewer_options import viewer_for_image

    def opened(name):
        return viewer_for_image("save", 9876, None, False, None, image=tmp_path / f"{name}.png", n_images=1,
                                default_rrd=tmp_path / f"{name}.rrd")

    with pytest.raises(ZeroDivisionError), opened("failed"):
        1 / 0
    assert not list(tmp_path.glob("failed.rrd*"))
    with opened("ended"):
        pass
    assert (tmp_path / "ended.rrd").is_file()


# ---------------------------------------------------------------------------------------------
# waiting


class _FakeTTY:
    def __init__(self, line=None, exc=None):
        self.line, self.exc = line, exc

    def isatty(self):
        return True

    def readline(self):
        if self.exc:
            raise self.exc
        return self.line


def test_wait_flags_return():
    slept = []
    assert venv.wait_after_run(wait_seconds=0.05, sleep=slept.append) == "slept" and slept == [0.05]
    assert venv.wait_after_run(wait=False) == "none"
    assert venv.wait_after_run(wait=True) == "not-a-tty"  # pytest's stdin is not a terminal
    assert venv.wait_after_run(wait=True, stdin=_FakeTTY("\n")) == "enter"
    assert venv.wait_after_run(wait=True, stdin=_FakeTTY("")) == "eof"
    assert venv.wait_after_run(wait=True, stdin=_FakeTTY(exc=EOFError())) == "eof"
    assert venv.wait_after_run(wait=True, stdin=_FakeTTY(exc=KeyboardInterrupt())) == "interrupted"


def test_serve_wait_seconds_keeps_the_server_then_returns(viewers):
    port = venv.free_port()
    v = open_viewer("serve", port=port, wait_seconds=0.5)
    viewers.append(v)
    t = time.monotonic()
    v.close()
    took = time.monotonic() - t
    assert 0.45 <= took < 10
    assert _stops_listening(port)


def test_serve_wait_returns_at_once_without_a_terminal(viewers):
    port = venv.free_port()
    v = open_viewer("serve", port=port, wait=True)
    viewers.append(v)
    t = time.monotonic()
    v.close()
    assert time.monotonic() - t < 10
    assert _stops_listening(port)


def test_wait_seconds_in_a_child_process(tmp_path):
    """End to end: a real process serving with --wait-seconds exits on its own, server gone."""
    port = venv.free_port()
    # the library logs; a program shows vd's messages by installing the console handler, as the CLI does
    code = ("from vd import console; console.install_log_handler(); from vd.viewer import open_viewer; "
            "v = open_viewer('serve', port=%d, wait_seconds=0.3); v.close()" % port)
    env = {k: v for k, v in os.environ.items() if k not in venv.DISPLAY_VARS}
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t >= 0.3
    assert "--wait-seconds" in p.stderr
    assert not venv.is_listening(port)


# ---------------------------------------------------------------------------------------------
# what is logged


def test_gaussian_arrays_activate_the_stored_parameters():
    import torch

    from vd.viewer.rerun_viewer import gaussian_arrays

    g = make_gaussians(n=5, sh_degree=2)
    g.quats[:] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # unnormalised identity, wxyz
    g.means[1, 0] = float("nan")
    a = gaussian_arrays(g)
    assert a["dropped"] == 1 and len(a["centers"]) == 4
    np.testing.assert_allclose(a["scales"], np.exp(-3.0), rtol=1e-6)  # exp(log_scale), not the log
    np.testing.assert_allclose(a["quaternions"], [[0, 0, 0, 1]] * 4, atol=1e-7)  # xyzw, unit
    assert a["rgba"][:, 3].tolist() == [128] * 4  # sigmoid(0) = 0.5
    assert a["sh_degree"] == 2 and a["sh_rest"].shape == (4, 8, 3)


def test_splats_archetype_and_points_fallback():
    import rerun as rr

    from vd.viewer.rerun_viewer import gaussians_archetype

    g = make_gaussians(n=6, sh_degree=1)
    assert isinstance(gaussians_archetype(g), rr.GaussianSplats3D)
    pts = gaussians_archetype(g, force_points=True)
    assert isinstance(pts, rr.Points3D)
    radii = np.asarray(pts.radii.as_arrow_array().to_numpy(zero_copy_only=False), dtype=np.float32)
    np.testing.assert_allclose(radii, np.exp(-3.0), rtol=1e-5)


def test_fallback_when_the_archetype_is_missing(monkeypatch, tmp_path, _headless, viewers):
    import rerun as rr

    monkeypatch.delattr(rr, "GaussianSplats3D")
    v = open_viewer("save", rrd=tmp_path / "pts.rrd", strict=True)
    viewers.append(v)
    v.log_gaussians("coarse", make_gaussians())
    v.close()
    assert_verified(tmp_path / "pts.rrd", _headless)
    assert "/world/coarse/gaussians" in rrd_entities(tmp_path / "pts.rrd", _headless)


def test_logging_errors_warn_once_and_never_fail_the_run(tmp_path, capsys, viewers):
    v = open_viewer("save", rrd=tmp_path / "w.rrd")
    viewers.append(v)
    for _ in range(3):
        v.log_frame("bad", K=K, world_from_camera=np.eye(4), rgb=np.zeros((5,)), tab="scaffold")
    v.set_tab("nope")
    err = capsys.readouterr().err
    assert err.count("log_frame failed") == 1 and "set_tab failed" in err
    v.close()
    strict = open_viewer("save", rrd=tmp_path / "s.rrd", strict=True)
    viewers.append(strict)
    with pytest.raises(ValueError, match="unknown tab"):
        strict.set_tab("nope")


def test_blueprint_follows_the_tabs(tmp_path, viewers, monkeypatch):
    from vd.viewer import rerun_viewer

    sent = []
    real = rerun_viewer.build_blueprint
    monkeypatch.setattr(rerun_viewer, "build_blueprint",
                        lambda cams, gs, active, has_video=False: sent.append(active) or real(cams, gs, active, has_video))
    v = open_viewer("save", rrd=tmp_path / "b.rrd", strict=True)
    viewers.append(v)
    log_demo_scene(v)
    v.set_tab("final")  # unchanged: not re-sent
    v.close()
    assert sent[0] == "scaffold" and "coarse" in sent and "fine" in sent and sent[-1] == "final"
    assert sent.count("final") == 1


def test_frames_accept_torch_tensors_and_names_with_slashes(tmp_path, _headless, viewers):
    import torch

    v = open_viewer("save", rrd=tmp_path / "t.rrd", strict=True)
    viewers.append(v)
    v.log_frame("fine/view_000", K=torch.tensor(K), world_from_camera=torch.eye(4), rgb=torch.rand(48, 64, 3),
                depth=torch.ones(48, 64), masks={"m": torch.ones(48, 64, dtype=torch.bool)}, tab="fine")
    v.log_gaussians("world/extra/thing", make_gaussians(n=3))
    v.close()
    ents = rrd_entities(tmp_path / "t.rrd", _headless)
    assert {"/world/fine/cameras/view_000/rgb", "/world/fine/cameras/view_000/masks/m", "/world/extra/thing"} <= ents


# ---------------------------------------------------------------------------------------------
# `vd view` and the shared options


@pytest.fixture
def ply(tmp_path):
    from vd.ply import write_ply

    p = tmp_path / "scene.ply"
    write_ply(p, make_gaussians(n=200, sh_degree=1))
    return p


def test_vd_view_ply_save_end_to_end(run_vd, ply, tmp_path, _headless):
    out = tmp_path / "o" / "out.rrd"
    r = run_vd("view", ply, "--viewer", "save", "--rrd", out)
    assert r.code == 0, r
    assert r.stdout.strip() == str(out)
    assert "200 Gaussians" in r.stderr
    assert_verified(out, _headless)
    assert "/world/final/gaussians" in rrd_entities(out, _headless)
    assert files_under(_headless) == []


def test_vd_view_headless_default_writes_stem_rrd(run_vd, ply, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_vd("view", ply)
    assert r.code == 0, r
    assert r.stdout.strip() == "scene.rrd" and (tmp_path / "scene.rrd").is_file()


def _coarse_folder(root: Path) -> Path:
    from vd.ply import write_ply

    folder = root / "vd-out" / "photo"
    views = []
    rng = np.random.default_rng(1)
    for i, kind in enumerate(("input", "ring", "view")):
        d = folder / "views" / f"{i:03d}"
        d.mkdir(parents=True)
        from PIL import Image

        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(d / "rgb.png")
        Image.fromarray(np.full((24, 32), 255, np.uint8)).save(d / "spawn_mask.png")
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(d / "hole_mask.png")
        np.save(d / "depth.npy", np.full((24, 32), 2.0, np.float32))
        pose = np.eye(4)
        pose[0, 3] = 0.05 * i
        views.append({"name": f"{kind}_{i}", "kind": kind, "width": 32, "height": 24,
                      "K": [[30, 0, 16], [0, 30, 12], [0, 0, 1]], "world_from_camera": pose.tolist(),
                      "rgb": f"views/{i:03d}/rgb.png", "depth": f"views/{i:03d}/depth.npy",
                      "mask": f"views/{i:03d}/spawn_mask.png", "hole_mask": f"views/{i:03d}/hole_mask.png"})
    (folder / "cameras.json").write_text(json.dumps({"convention": "OpenCV", "views": views}))
    write_ply(folder / "coarse.ply", make_gaussians(n=50))
    write_ply(folder / "scaffold.ply", make_gaussians(n=30))
    return folder


def test_vd_view_output_folder_and_image(run_vd, tmp_path, monkeypatch, _headless):
    folder = _coarse_folder(tmp_path)
    r = run_vd("view", folder, "--rrd", tmp_path / "dir.rrd", "--viewer", "save")
    assert r.code == 0, r
    ents = rrd_entities(tmp_path / "dir.rrd", _headless)
    assert {"/world/scaffold/cameras/input_0/rgb", "/world/scaffold/cameras/ring_1/depth",
            "/world/coarse/cameras/view_2/masks/spawn", "/world/coarse/gaussians", "/world/scaffold/gaussians"} <= ents
    # an image resolves to its vd-out/<stem>/ folder
    monkeypatch.chdir(tmp_path)
    from PIL import Image

    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    r = run_vd("view", "photo.png", "--viewer", "save", "--rrd", "img.rrd")
    assert r.code == 0, r
    assert "/world/coarse/cameras/view_2/rgb" in rrd_entities(tmp_path / "img.rrd", _headless)
    # an image without outputs: shown alone, with a warning
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "lonely.png")
    r = run_vd("view", "lonely.png")
    assert r.code == 0, r
    assert "showing the image only" in r.stderr and (tmp_path / "lonely.rrd").is_file()


def test_vd_view_errors(run_vd, tmp_path, ply):
    r = run_vd("view", tmp_path / "missing.ply")
    assert r.code == 1 and "does not exist" in r.stderr and "Traceback" not in r.output
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    r = run_vd("view", bad, "--viewer", "save", "--rrd", tmp_path / "bad.rrd")
    assert r.code == 1 and "Traceback" not in r.output
    assert not list(tmp_path.glob("bad.rrd*"))  # nothing half-written
    r = run_vd("view", ply, "--viewer", "window")
    assert r.code == 2
    r = run_vd("view", ply, "--viewer", "spawn")
    assert r.code == 2 and "needs a display" in r.stderr
    r = run_vd("view", ply, "--viewer", "none")
    assert r.code == 2


def test_viewer_env_var_and_options(monkeypatch, tmp_path, run_vd, ply):
    monkeypatch.setenv("VD_VIEWER", "save")
    r = run_vd("view", ply, "--rrd", tmp_path / "env.rrd")
    assert r.code == 0, r
    assert (tmp_path / "env.rrd").is_file()
    r = run_vd("view", "--help")
    for opt in ("--viewer", "--viewer-port", "--rrd", "--wait", "--wait-seconds"):
        assert opt in r.stdout


def test_options_helper(tmp_path, viewers):
    from vd.commands import viewer_options as vo

    assert isinstance(vo.open_from_options("auto"), NullViewer)
    v = vo.open_from_options("save", default_rrd=tmp_path / "default.rrd")
    viewers.append(v)
    v.close()
    assert (tmp_path / "default.rrd").is_file()


def test_rerun_child_env_turns_analytics_off(monkeypatch):
    monkeypatch.delenv("VD_RERUN_ANALYTICS", raising=False)
    monkeypatch.setenv("FORCE_RERUN_ANALYTICS", "1")
    env = venv.child_env()
    assert env["CI"] == "1" and "FORCE_RERUN_ANALYTICS" not in env
    monkeypatch.setenv("VD_RERUN_ANALYTICS", "1")
    assert "CI" not in venv.child_env({})


# ---------------------------------------------------------------------------------------------
# spawning (with a stand-in for the rerun binary: no display here)

FAKE_RERUN = r'''#!{python}
import json, os, socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
with open(os.environ["FAKE_RERUN_LOG"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "CI": os.environ.get("CI"), "APP": os.environ.get("RERUN_APP_ONLY")}}, f)
if os.environ.get("FAKE_RERUN_FAIL"):
    sys.stderr.write("Error: winit: neither WAYLAND_DISPLAY nor DISPLAY is set\n")
    sys.exit(1)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.listen()
time.sleep(30)
'''


@pytest.fixture
def fake_rerun(tmp_path, monkeypatch):
    exe = tmp_path / "fake-rerun"
    exe.write_text(FAKE_RERUN.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "fake-rerun.json"
    monkeypatch.setenv("VD_RERUN_EXECUTABLE", str(exe))
    monkeypatch.setenv("FAKE_RERUN_LOG", str(log))
    return log


def test_spawn_starts_the_viewer_with_analytics_off(fake_rerun):
    import signal

    from vd.viewer.rerun_viewer import spawn_viewer

    port = venv.free_port()
    pid = spawn_viewer(port, timeout=20)
    try:
        assert pid and venv.is_listening(port)
        info = json.loads(fake_rerun.read_text())
        assert info["argv"][:2] == ["--port", str(port)] and info["CI"] == "1" and info["APP"] == "true"
        assert spawn_viewer(port) is None  # a viewer already listening is reused, not spawned again
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


def test_spawn_failure_is_reported_and_auto_falls_back_to_serve(fake_rerun, monkeypatch, capsys, viewers):
    from vd.viewer.rerun_viewer import spawn_viewer

    monkeypatch.setenv("FAKE_RERUN_FAIL", "1")
    port = venv.free_port()
    with pytest.raises(VdError, match="did not start.*DISPLAY"):
        spawn_viewer(port, timeout=20)
    monkeypatch.setenv("DISPLAY", ":99")  # a stale display: the viewer cannot open a window
    monkeypatch.setattr(venv, "is_interactive", lambda stream=None: True)
    v = open_viewer("auto", port=port)
    viewers.append(v)
    assert v.mode == "serve"
    assert "serving over gRPC instead" in capsys.readouterr().err
    v.close()
    assert _stops_listening(port)


def test_an_unclosed_viewer_still_finishes_its_file_at_exit(tmp_path, _headless):
    out = tmp_path / "exit.rrd"
    code = ("import numpy as np; from vd.viewer import open_viewer; v = open_viewer('save', rrd=%r); "
            "v.log_video_frame(0, np.zeros((8, 8, 3), np.uint8))" % str(out))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert_verified(out, _headless)


def test_depth_folder_and_depth_hook(run_vd, tmp_path, _headless, viewers):
    from PIL import Image

    from vd.viewer.show import log_depth_output, log_ply

    folder = tmp_path / "vd-out" / "pic"
    folder.mkdir(parents=True)
    np.save(folder / "depth.npy", np.full((24, 32), 1.5, np.float32))
    (folder / "intrinsics.json").write_text(json.dumps({"K": [[30, 0, 16], [0, 30, 12], [0, 0, 1]], "width": 32, "height": 24}))
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(folder / "mask.png")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(folder / "depth.png")
    r = run_vd("view", folder, "--viewer", "save", "--rrd", tmp_path / "depth.rrd")
    assert r.code == 0, r
    ents = rrd_entities(tmp_path / "depth.rrd", _headless)
    assert {"/world/scaffold/cameras/input/depth", "/world/scaffold/cameras/input/masks/valid"} <= ents
    # the helpers the stage commands call: an image of another size is resized to the depth map
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "pic.png")
    v = open_viewer("save", rrd=tmp_path / "hook.rrd", strict=True)
    viewers.append(v)
    assert log_depth_output(v, folder, image=tmp_path / "pic.png", name="pic") == 1
    assert log_depth_output(v, tmp_path / "empty") == 0
    from vd.ply import write_ply

    write_ply(tmp_path / "r.ply", make_gaussians(n=10))
    assert log_ply(v, tmp_path / "r.ply") == 10
    v.close()
    ents = rrd_entities(tmp_path / "hook.rrd", _headless)
    assert {"/world/scaffold/cameras/pic/rgb", "/world/final/gaussians"} <= ents


def test_log_outputs_helper_for_stages_without_a_viewer(tmp_path, _headless, capsys):
    from PIL import Image

    from vd.commands import viewer_options as vo

    assert vo.rrd_for(tmp_path / "r.rrd", "a/photo.png", 1) == tmp_path / "r.rrd"
    assert vo.rrd_for(tmp_path / "r.rrd", "a/photo.png", 2) == tmp_path / "r_photo.rrd"
    assert vo.rrd_for(None, "a/photo.png", 2) is None
    folder = tmp_path / "out"
    folder.mkdir()
    np.save(folder / "depth.npy", np.full((24, 32), 1.5, np.float32))
    (folder / "intrinsics.json").write_text(json.dumps({"K": [[30, 0, 16], [0, 30, 12], [0, 0, 1]]}))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    vo.log_outputs("depth", folder)  # headless, not a terminal: nothing at all
    assert sorted(p.name for p in folder.iterdir()) == ["depth.npy", "intrinsics.json"]
    vo.log_outputs("depth", folder, viewer="save", image=tmp_path / "photo.png")
    assert "/world/scaffold/cameras/photo/rgb" in rrd_entities(folder / "depth.rrd", _headless)
    vo.log_outputs("refine", folder, viewer="save", rrd=tmp_path / "ref.rrd")  # no PLY: a warning only
    assert not list(tmp_path.glob("ref.rrd*"))
    vo.log_outputs("depth", folder, viewer="spawn")  # no display: a warning only
    err = capsys.readouterr().err
    assert "could not show" in err and "needs a display" in err


def test_vd_view_fly_through(run_vd, tmp_path, _headless):
    folder = _coarse_folder(tmp_path)
    r = run_vd("view", folder, "--viewer", "save", "--rrd", tmp_path / "fly.rrd", "--fly-through", "3",
               "--render-backend", "torch")
    assert r.code == 0, r
    assert "3 fly-through frames" in r.stderr
    ents = rrd_entities(tmp_path / "fly.rrd", _headless)
    assert {"/world/final/camera", "/world/final/camera/rgb", "/world/final/camera/depth"} <= ents
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    r = run_vd("view", img, "--viewer", "save", "--rrd", tmp_path / "nofly.rrd", "--fly-through", "2")
    assert r.code == 2 and "needs Gaussians" in r.stderr and not list(tmp_path.glob("nofly.rrd*"))


def test_stage_commands_take_the_viewer_options(run_vd):
    for cmd in ("depth", "coarse", "fine", "refine", "view"):
        r = run_vd(cmd, "--help")
        assert r.code == 0, r
        for opt in ("--viewer", "--viewer-port", "--rrd", "--wait", "--wait-seconds"):
            assert opt in r.stdout, (cmd, opt)


def test_vd_depth_records_the_depth_map(run_vd, tmp_path, _headless):
    room = REPO / "examples" / "room" / "rgb.png"
    if not room.is_file():
        pytest.skip("the example scene is not in this tree")
    r = run_vd("depth", room, "-o", tmp_path / "out", "--viewer", "save", "--rrd", tmp_path / "depth.rrd")
    assert r.code == 0, r
    assert str(tmp_path / "depth.rrd") not in r.stdout  # stdout keeps the stage's own results
    assert_verified(tmp_path / "depth.rrd", _headless)
    ents = rrd_entities(tmp_path / "depth.rrd", _headless)
    assert {"/world/scaffold/cameras/rgb/rgb", "/world/scaffold/cameras/rgb/depth",
            "/world/scaffold/cameras/rgb/masks/valid"} <= ents
    r = run_vd("depth", room, "-o", tmp_path / "out2")  # headless default: no recording, no warning
    assert r.code == 0 and "viewer" not in r.stderr and not list((tmp_path / "out2").glob("*.rrd"))


@pytest.mark.slow
def test_vd_coarse_records_scaffold_views_and_fly_through(run_vd, tmp_path, _headless):
    """A real (tiny) coarse run with --viewer save: cameras, Gaussians and the final fly-through."""
    room = REPO / "examples" / "room" / "rgb.png"
    if not room.is_file():
        pytest.skip("the example scene is not in this tree")
    r = run_vd("coarse", room, "-o", tmp_path / "out", "--max-resolution", "64", "--n-frames", "3",
               "--dense-multiplier", "4", "--init-iters", "2", "--view-iters", "2", "--fallback", "closest",
               "--device", "cpu", "--viewer", "save", "--rrd", tmp_path / "coarse.rrd")
    assert r.code == 0, r
    assert_verified(tmp_path / "coarse.rrd", _headless)
    ents = rrd_entities(tmp_path / "coarse.rrd", _headless)
    assert {"/world/scaffold/gaussians", "/world/coarse/gaussians", "/world/final/camera/rgb"} <= ents, ents
