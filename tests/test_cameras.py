"""Trajectories, look-at, scene radius and trajectory files."""

import json

import numpy as np
import pytest

from vd import cameras
from vd.colmap import images_txt
from vd.errors import InputError, UsageError
from vd.trajectory_file import load_trajectory


def test_look_at_identity():
    assert np.allclose(cameras.look_at((0, 0, 0), (0, 0, 1)), np.eye(4))


def test_look_at_points_camera_z_at_target():
    pose = cameras.look_at((1.0, -0.5, 0.2), (0, 0, 2))
    d = np.array([0, 0, 2]) - np.array([1.0, -0.5, 0.2])
    assert np.allclose(pose[:3, 2], d / np.linalg.norm(d))
    R = pose[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
    # image "down" (camera +y) keeps pointing down in the world (+y)
    assert pose[1, 1] > 0.8


@pytest.mark.parametrize("kind", ["spiral", "wobble"])
def test_loops_start_and_end_at_identity(kind):
    poses = cameras.trajectory(kind, 20, 2.0)
    assert poses.shape == (20, 4, 4)
    assert np.allclose(poses[0], np.eye(4)) and np.allclose(poses[-1], np.eye(4))
    for p in poses:
        R = p[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)


def test_forward_ratio_moves_into_the_scene():
    """forward_ratio must scale motion along +z, into the scene (the port swapped the roles:
    docs/upstream.md#spiral-trajectory)."""
    R = 1.0
    a = cameras.spiral(41, R, forward_ratio=0.5, backward_ratio=0.0)
    b = cameras.spiral(41, R, forward_ratio=0.0, backward_ratio=0.5)
    za, zb = a[:, 2, 3], b[:, 2, 3]
    assert za.max() == pytest.approx(0.3 * R * 0.5, rel=1e-6) and za.min() >= -1e-12
    assert zb.min() == pytest.approx(-0.3 * R * 0.5, rel=1e-6) and zb.max() <= 1e-12
    # the default ratios: forward up to 0.09 R, back up to 0.12 R
    d = cameras.spiral(101, R)
    assert d[:, 2, 3].max() == pytest.approx(0.09, rel=1e-3)
    assert d[:, 2, 3].min() == pytest.approx(-0.12, rel=1e-3)
    # the camera rises (y <= 0, OpenCV y is down) and looks at (0, 0, 0.5R)
    assert d[:, 1, 3].max() <= 1e-12 and d[:, 1, 3].min() < 0
    for p in d[1:-1]:
        to_target = np.array([0, 0, 0.5]) - p[:3, 3]
        assert np.allclose(p[:3, 2], to_target / np.linalg.norm(to_target))


def test_wobble_forward_ratio_also_forward():
    w = cameras.wobble(41, 1.0, forward_ratio=0.5, backward_ratio=0.0)
    assert w[:, 2, 3].max() > 0.1 and w[:, 2, 3].min() >= -1e-12


def test_portrait_damping():
    land = cameras.spiral(41, 1.0, width=4, height=3)
    port = cameras.spiral(41, 1.0, width=3, height=4)
    assert np.abs(port[:, 0, 3]).max() == pytest.approx(0.6 * np.abs(land[:, 0, 3]).max())


def test_rot_pans_in_place():
    p = cameras.trajectory("rot", 8, 1.0)
    assert np.allclose(p[:, :3, 3], 0)
    assert np.allclose(p[0], np.eye(4))
    assert np.allclose(p[2][:3, 2], [1, 0, 0], atol=1e-9)  # 90° pan to the right


def test_unknown_trajectory():
    with pytest.raises(UsageError):
        cameras.trajectory("helix", 5, 1.0)


def test_radius_ignores_invalid_pixels():
    H, W = 30, 40
    K = np.array([[40.0, 0, 20], [0, 40.0, 15], [0, 0, 1]])
    depth = np.full((H, W), 2.0)
    depth[:, :20] = 4.0
    r_all = cameras.scene_radius(depth, K, None, (5, 95))
    bad = depth.copy()
    bad[:5] = 0.0  # depth-0 pixels
    bad[5:8] = np.nan
    valid = np.ones((H, W), bool)
    valid[-5:] = False
    bad[-5:] = 1000.0  # invalid pixels must not count
    r_bad = cameras.scene_radius(bad, K, valid, (5, 95))
    assert r_bad == pytest.approx(r_all, rel=0.35)
    assert r_bad < 10
    with pytest.raises(InputError):
        cameras.scene_radius(np.zeros((4, 4)), K)
    with pytest.raises(UsageError):
        cameras.scene_radius(depth, K, None, (50, 5))


def test_radius_plane():
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    depth = np.full((48, 64), 3.0)
    r = cameras.scene_radius(depth, K, None, (0, 100))
    # x range 3*64/50, y range 3*48/50, z range 0
    assert r == pytest.approx((3 * 64 / 50 + 3 * 48 / 50) / 3, rel=0.05)


def test_json_trajectory_roundtrip(tmp_path):
    poses = cameras.spiral(5, 1.0)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(poses.tolist()))
    assert np.allclose(load_trajectory(f), poses)
    g = tmp_path / "cams.json"
    g.write_text(json.dumps({"views": [{"world_from_camera": p.tolist()} for p in poses]}))
    assert np.allclose(load_trajectory(g), poses)
    h = tmp_path / "p.json"
    h.write_text(json.dumps({"poses": poses.tolist()}))
    assert np.allclose(load_trajectory(h), poses)


@pytest.mark.parametrize("content,msg", [
    ("[[1,2,3]]", "4x4"),
    ("[", "not valid JSON"),
    ("[]", "no poses"),
    (json.dumps([[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]]), "rotation"),
    (json.dumps([[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]]), "last row"),
    ("1 2 3\n", "COLMAP"),
    ("# only comments\n", "no poses"),
])
def test_bad_trajectory_files(tmp_path, content, msg):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(InputError, match=msg):
        load_trajectory(f)


def test_missing_trajectory_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_trajectory(tmp_path / "nope.json")


def test_colmap_images_txt_relative_to_first(tmp_path):
    poses = cameras.spiral(7, 1.5)[1:-1]
    # place them in an arbitrary COLMAP world: world' = A @ world
    A = cameras.look_at((0.3, -1.0, 2.0), (1.0, 0.0, 5.0))
    worldp = A[None] @ poses
    f = tmp_path / "images.txt"
    f.write_text(images_txt(list(worldp), [f"{i:03d}.png" for i in range(len(poses))]))
    txt = f.read_text().splitlines()
    # shuffle the image entries: loading sorts by IMAGE_ID
    body = [l for l in txt if not l.startswith("#")]
    pairs = [body[i:i + 2] for i in range(0, len(body), 2)]
    f.write_text("\n".join(sum(pairs[::-1], [])) + "\n")
    got = load_trajectory(f)
    expect = cameras.invert_pose(poses[0])[None] @ poses
    assert np.allclose(got, expect, atol=1e-8)
    assert np.allclose(got[0], np.eye(4), atol=1e-9)


def test_candidate_intrinsics_keep_principal_point_centred():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    K2, W, H = cameras.candidate_intrinsics(K, 64, 48, 32)
    assert (W, H) == (96, 80)
    assert K2[0, 2] == 48 and K2[1, 2] == 40 and K2[0, 0] == 100
