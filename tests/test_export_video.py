"""`vd export --format video`: MP4 (imageio-ffmpeg) and GIF fly-throughs rendered with vd.render."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _export_scene import plane_gaussians, write_vd_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_vd_folder(tmp_path_factory.mktemp("video") / "out")


def test_mp4_with_side_by_side_depth(folder, tmp_path, run_vd):
    from vd.export.video import read_video

    out = tmp_path / "fly.mp4"
    r = run_vd("export", folder, "--format", "video", "-o", out, "--frames", "6", "--side-by-side-depth", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["frames"] == 6 and (rep["width"], rep["height"]) == (128, 48)
    frames = read_video(out)
    assert frames.shape == (6, 48, 128, 3)
    # left: the scene in colour; right: the depth map (plane everywhere in view)
    assert frames[0, :, :64].mean() > 40 and frames[0, :, 64:].mean() > 20
    assert oct(out.stat().st_mode & 0o777) != "0o600"


def test_gif_follows_the_trajectory(folder, tmp_path, run_vd):
    from vd.export.video import read_video

    out = tmp_path / "fly.gif"
    r = run_vd("export", folder, "--format", "video", "-o", out, "--frames", "5", "--traj", "rot")
    assert r.code == 0, r
    assert r.stdout.strip() == str(out)
    frames = read_video(out)
    # Pillow merges identical consecutive GIF frames (the black ones facing away) into one longer frame
    assert 2 <= len(frames) <= 5 and frames.shape[1:] == (48, 64, 3)
    from PIL import Image

    with Image.open(out) as im:
        total = 0
        for i in range(im.n_frames):
            im.seek(i)
            total += im.info["duration"]
    assert total == pytest.approx(5 * 1000 / 20, abs=5)
    # "rot" pans in place: the first frame sees the plane, a frame facing backwards sees nothing
    assert frames[0].mean() > 40 and frames[1].mean() < frames[0].mean()


def test_trajectory_file_and_ply_source(tmp_path, run_vd):
    from vd.ply import write_ply

    write_ply(tmp_path / "s.ply", plane_gaussians())
    poses = [np.eye(4).tolist(), np.eye(4).tolist()]
    poses[1][0][3] = 0.1
    (tmp_path / "traj.json").write_text(json.dumps(poses))
    r = run_vd("export", tmp_path / "s.ply", "--format", "video", "-o", tmp_path / "t.gif", "--traj", tmp_path / "traj.json", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["frames"] == 2 and (rep["width"], rep["height"]) == (512, 384)


def test_video_usage_errors(folder, tmp_path, run_vd):
    assert run_vd("export", folder, "--format", "video", "-o", tmp_path / "v.avi").code == 2
    assert run_vd("export", folder, "--format", "video", "-o", tmp_path / "v.mp4", "--traj", "zigzag").code == 2
    assert run_vd("export", folder, "--format", "video", "-o", tmp_path / "v.mp4", "--frames", "0").code == 2
    assert run_vd("export", folder, "--format", "ply", "-o", tmp_path / "v.ply", "--frames", "10").code == 2
    assert not list(tmp_path.iterdir())


def test_size_option_renders_the_same_view_at_another_size(folder, tmp_path, run_vd):
    from vd.export.video import fit_camera, read_video

    out = tmp_path / "big.mp4"
    r = run_vd("export", folder, "--format", "video", "-o", out, "--frames", "2", "--size", "192x144", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert (rep["width"], rep["height"]) == (192, 144)
    big = read_video(out)
    assert big.shape == (2, 144, 192, 3)
    small = read_video(run_vd("export", folder, "--format", "video", "-o", tmp_path / "s.mp4", "--frames", "2").stdout.strip())
    assert small.shape == (2, 48, 64, 3)
    # the same view three times larger: downsampled, it matches the scene-sized frame
    down = big[0].reshape(48, 3, 64, 3, 3).mean((1, 3))
    assert np.abs(down - small[0].astype(float)).mean() < 12
    K, W, H = fit_camera(np.array([[60.0, 0, 32], [0, 60, 24], [0, 0, 1]]), 64, 48, (128, 48))  # wider: cropped, square pixels
    assert (W, H) == (128, 48) and K[0, 0] == K[1, 1] == 120 and K[0, 2] == 64 and K[1, 2] == 24


def test_size_usage_errors(folder, tmp_path, run_vd):
    for bad in ("1920", "axb", "8x8", "8192x4320", "4096x4096"):
        r = run_vd("export", folder, "--format", "video", "-o", tmp_path / "v.mp4", "--size", bad)
        assert r.code == 2 and "--size" in r.stderr, (bad, r)
    r = run_vd("export", folder, "--format", "ply", "-o", tmp_path / "v.ply", "--size", "64x48")
    assert r.code == 2 and "--size" in r.stderr
    assert not list(tmp_path.iterdir())
