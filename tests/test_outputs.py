"""Output folders: another input's results are replaced only with --overwrite, a full disk is found
before computing, a read-only target is named as the output, and SIGTERM says how to resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import vd_env
from diskfull import fill, tiny_tmpfs
from PIL import Image


def _photo(folder: Path, value: int, size=(48, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "photo.png"
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(p)
    np.save(folder / "photo.depth.npy", np.full((size[1], size[0]), value / 10, np.float32))
    return p


def _depth(run_vd, image: Path, *extra):
    return run_vd("depth", image, "--backend", "file", "--focal", "40", *extra)


def test_another_inputs_folder_is_replaced_only_with_overwrite(tmp_path, run_vd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = _photo(tmp_path / "a", 40), _photo(tmp_path / "b", 200)
    r = _depth(run_vd, a)
    assert r.code == 0, r
    out = Path("vd-out/photo")
    before = (out / "depth.npy").read_bytes()
    r = _depth(run_vd, b)
    assert r.code == 1, r
    assert r.stderr.count("\n") == 1 and "--overwrite" in r.stderr and str(a.resolve()) in r.stderr, r.stderr
    assert (out / "depth.npy").read_bytes() == before
    r = _depth(run_vd, b, "--overwrite")
    assert r.code == 0, r
    assert np.load(out / "depth.npy").max() == pytest.approx(20.0)
    # now b's folder: b again replaces it as before, and a needs --overwrite
    assert _depth(run_vd, b).code == 0
    assert _depth(run_vd, a).code == 1


def test_the_same_input_replaces_its_folder_as_before(tmp_path, run_vd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = _photo(tmp_path / "a", 40)
    assert _depth(run_vd, a).code == 0
    _photo(tmp_path / "a", 90)  # the photo edited in place: still the same input
    r = _depth(run_vd, a)
    assert r.code == 0, r
    assert np.load(tmp_path / "vd-out/photo/depth.npy").max() == pytest.approx(9.0)
    copy = tmp_path / "copy" / "photo.png"  # a byte-identical copy elsewhere is the same input too
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    (copy.parent / "photo.depth.npy").write_bytes((tmp_path / "a/photo.depth.npy").read_bytes())
    assert _depth(run_vd, copy).code == 0


def test_a_failed_run_claims_no_folder(tmp_path, run_vd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = _photo(tmp_path / "a", 40), _photo(tmp_path / "b", 200)
    (tmp_path / "a/photo.depth.npy").unlink()
    assert _depth(run_vd, a).code == 1
    assert not Path("vd-out/photo").exists()
    assert _depth(run_vd, b).code == 0


def test_a_full_output_disk_is_found_before_computing(tmp_path, run_vd):
    image = _photo(tmp_path / "in", 40, size=(256, 192))
    with tiny_tmpfs(tmp_path / "full", "1m") as mnt:
        fill(mnt, leave=0)
        t = time.monotonic()
        r = run_vd("coarse", image, "--depth-backend", "file", "--focal", "200", "-o", mnt / "room")
        took = time.monotonic() - t
        assert r.code == 1, r
        assert "no space left on the device holding" in r.stderr and "need about" in r.stderr, r.stderr
        assert not (mnt / "room").exists()
    # the cache was never touched: nothing was computed
    assert took < 30 and "scaffold" not in r.stderr


def test_a_small_output_disk_with_room_still_works(tmp_path, run_vd):
    image = _photo(tmp_path / "in", 40)
    with tiny_tmpfs(tmp_path / "small", "1m") as mnt:
        r = _depth(run_vd, image, "-o", mnt / "d")
        assert r.code == 0, r
        assert (mnt / "d" / "depth.npy").is_file()


def test_a_read_only_export_target_names_the_output(tmp_path, run_vd):
    from _export_scene import plane_gaussians

    from vd.ply import write_ply

    src = tmp_path / "scene.ply"
    write_ply(src, plane_gaussians(spacing=0.2))
    with tiny_tmpfs(tmp_path / "ro", "1m", readonly=True) as mnt:
        for fmt, name in (("ply", "s.ply"), ("splat", "s.splat")):
            r = run_vd("export", src, "--format", fmt, "-o", mnt / name)
            assert r.code == 1, r
            assert f"cannot write {mnt / name}:" in r.stderr and ".tmp" not in r.stderr, r.stderr
            assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigterm_says_how_to_resume_and_exits_143(tmp_path):
    # `vd batch -` waits for paths on stdin: a command that is running and doing nothing
    p = subprocess.Popen([sys.executable, "-m", "vd.commands.app", "batch", "-", "-o", str(tmp_path / "b")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=vd_env(), text=True)
    try:
        end = time.monotonic() + 60
        while not _catches_sigterm(p.pid) and time.monotonic() < end and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 143, err
    assert "completed steps are cached and the next run resumes from them" in err
    assert "Traceback" not in err
