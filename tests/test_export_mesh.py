"""`vd export --format mesh`: TSDF fusion of rendered depth, marching cubes, decimation, a watertight collider."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _export_scene import PLANE, plane_gaussians, write_vd_folder

pytest.importorskip("skimage", reason="the mesh extra (scikit-image, trimesh, fast-simplification) is not installed")
trimesh = pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_vd_folder(tmp_path_factory.mktemp("mesh") / "out")


def plane_distance(verts_vd: np.ndarray) -> np.ndarray:
    a, b, c = PLANE
    n = np.array([a, b, -1.0])
    return np.abs(verts_vd @ n + c) / np.linalg.norm(n)


def test_mesh_lies_on_the_plane_with_its_colours(folder, tmp_path, run_vd):
    out = tmp_path / "plane.ply"
    r = run_vd("export", folder, "--format", "mesh", "-o", out, "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["faces"] > 1000 and rep["views_fused"] == 4 + 24
    m = trimesh.load(out, process=False)
    v = np.asarray(m.vertices) @ np.diag([1.0, -1.0, -1.0])  # written +Y up, looking along -Z: back to vd's axes
    assert (np.asarray(m.vertices)[:, 2] < 0).all()  # the scene lies in front of the input camera: -Z
    d = plane_distance(v)
    # within two voxels (1.2 cm here) of the plane; these splats are round, and their depth (expected or median)
    # sits about 1.2 cm in front of it (the nearer half of each round Gaussian makes the pixel opaque first), and
    # the mesh follows the splats (flat ones: test_mesh_of_flat_splats_is_fused_from_their_median_depth)
    assert np.median(d) < 0.02 and np.percentile(d, 95) < 0.04, (np.median(d), np.percentile(d, 95))
    # vertex colours follow the plane's texture (the red channel 0.5 + 0.4 sin 4x)
    rgb = np.asarray(m.visual.vertex_colors)[:, :3] / 255.0
    expect = np.clip(0.5 + 0.4 * np.sin(4 * v[:, 0]), 0, 1)
    inner = np.abs(v[:, 0]) < 1.0
    assert np.corrcoef(rgb[inner, 0], expect[inner])[0, 1] > 0.9


def flat_plane_gaussians():
    """The plane scene's Gaussians made flat discs lying in the plane (as vd's scaffold makes them)."""
    import torch

    from vd.geometry import rotmat_to_quat_torch

    g = plane_gaussians()
    a, b, _ = PLANE
    n = np.array([-a, -b, 1.0]) / np.linalg.norm([-a, -b, 1.0])
    t1 = np.cross([0.0, 1.0, 0.0], n)
    t1 /= np.linalg.norm(t1)
    R = torch.tensor(np.stack([t1, np.cross(n, t1), n], 1), dtype=torch.float32)
    g.quats = rotmat_to_quat_torch(R).expand(len(g), 4).clone()
    g.log_scales = torch.log(torch.tensor([0.042, 0.042, 1e-3])).expand(len(g), 3).clone()
    return g


def test_mesh_of_flat_splats_is_fused_from_their_median_depth(tmp_path):
    from vd.export.mesh import MeshParams, export_mesh, mesh_cameras
    from vd.export.source import resolve_source
    from vd.export.video import trajectory_poses
    from vd.export.write import video_camera

    src = resolve_source(write_vd_folder(tmp_path / "flat", flat_plane_gaussians()))
    g = src.gaussians()
    K, W, H, radius = video_camera(src, g)
    signed = {}
    for mode in ("median", "expected"):
        p = MeshParams(depth_mode=mode)
        traj = trajectory_poses("spiral", p.trajectory_frames, radius=radius, width=W, height=H)
        export_mesh(tmp_path / f"{mode}.ply", g, mesh_cameras(src.views(), traj, K, W, H), params=p)
        v = np.asarray(trimesh.load(tmp_path / f"{mode}.ply", process=False).vertices) @ np.diag([1.0, -1.0, -1.0])
        a, b, c = PLANE
        signed[mode] = (v @ np.array([a, b, -1.0]) + c) / np.linalg.norm([a, b, -1.0])
    assert MeshParams().depth_mode == "median"
    # the median depth is on the discs' plane; the expected depth of the overlapping discs is pulled toward the
    # camera by about 1 cm (0.5 % of the depth), and the fused mesh with it
    assert np.median(np.abs(signed["median"])) < 0.003, np.median(np.abs(signed["median"]))
    assert abs(signed["median"].mean()) < 0.003
    assert signed["expected"].mean() > 0.006, signed["expected"].mean()


def test_mesh_of_a_scene_without_views_is_fused_from_the_fly_through(tmp_path, run_vd):
    # a bare PLY: no views of its own; the video camera and its spiral span the grid
    from vd.ply import write_ply

    write_ply(tmp_path / "scene.ply", plane_gaussians())
    r = run_vd("export", tmp_path / "scene.ply", "--format", "mesh", "-o", tmp_path / "m.ply", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["faces"] > 1000 and rep["views_fused"] == 1 + 24
    v = np.asarray(trimesh.load(tmp_path / "m.ply", process=False).vertices) @ np.diag([1.0, -1.0, -1.0])
    assert np.median(plane_distance(v)) < 0.02


def test_faces_decimates_and_collider_is_watertight(folder, tmp_path, run_vd):
    r = run_vd("export", folder, "--format", "mesh", "-o", tmp_path / "small.obj", "--faces", "500", "--json")
    assert r.code == 0, r
    m = trimesh.load(tmp_path / "small.obj", process=False)
    assert 300 <= len(m.faces) <= 520
    assert np.median(plane_distance(np.asarray(m.vertices) @ np.diag([1.0, -1.0, -1.0]))) < 0.02
    r = run_vd("export", folder, "--format", "mesh", "--collider", "-o", tmp_path / "collider.glb", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["collider"] and rep["watertight"] and rep["faces"] <= 2000
    c = trimesh.load(tmp_path / "collider.glb", force="mesh")
    assert c.is_watertight and c.volume > 0
    # the collider's surface facing the camera follows the plane (within its coarse voxels)
    from scipy.spatial import cKDTree

    surface_pts = trimesh.sample.sample_surface(c, 50000, seed=0)[0]
    near = cKDTree(surface_pts).query(np.asarray(trimesh.load(tmp_path / "small.obj").vertices))[0]
    assert np.median(near) < 0.15


def test_mesh_glb_passes_the_khronos_validator(folder, tmp_path, run_vd):
    from test_export_glb import VALIDATOR, gltf_errors, validate

    if VALIDATOR is None:
        pytest.skip("the Khronos glTF Validator (npm install -g gltf-validator) and node are needed")
    assert run_vd("export", folder, "--format", "mesh", "--faces", "2000", "-o", tmp_path / "m.glb").code == 0
    report = validate(tmp_path / "m.glb")
    assert report["issues"]["numErrors"] == 0 and gltf_errors(report) == [], report["issues"]["messages"][:5]
    assert report["info"]["totalTriangleCount"] > 1000


def test_mesh_usage_errors(folder, tmp_path, run_vd):
    r = run_vd("export", folder, "--format", "mesh", "-o", tmp_path / "m.stl")
    assert r.code == 2 and ".glb, .ply or .obj" in r.stderr
    r = run_vd("export", folder, "--format", "ply", "--faces", "100", "-o", tmp_path / "m.ply")
    assert r.code == 2 and "--format mesh only" in r.stderr
    r = run_vd("export", folder, "--format", "mesh", "--faces", "2", "-o", tmp_path / "m.ply")
    assert r.code == 2 and "--faces" in r.stderr
    r = run_vd("export", folder, "--format", "mesh", "--up", "+z", "-o", tmp_path / "m.ply")
    assert r.code == 2
    assert not list(tmp_path.iterdir())
