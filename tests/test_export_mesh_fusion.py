"""The mesh's TSDF fusion on exact depth maps (vd.export.mesh: fuse, surface, far_layer), the far layer end to end,
and bench/mesh.py's rasteriser (the mesh scores of bench/export.md rest on it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _export_scene import PLANE, write_vd_folder

pytest.importorskip("skimage", reason="the mesh extra (scikit-image, trimesh, fast-simplification) is not installed")
trimesh = pytest.importorskip("trimesh")

ROOT = Path(__file__).resolve().parents[1]
W, H = 96, 72
K = np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]])


def rays(K, w, h):
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def plane_depth(n, c, P, max_depth=np.inf):
    """Exact z-depth of the plane n . X = c (world) from camera pose P at every pixel centre (0: missed)."""
    n = np.asarray(n, float)
    d_w = rays(K, W, H) @ P[:3, :3].T
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (c - P[:3, 3] @ n) / (d_w @ n)
    return np.where(np.isfinite(s) & (s > 0) & (s < max_depth), s, 0.0).astype(np.float32)


def pose(tx=0.0, ty=0.0, tz=0.0):
    P = np.eye(4)
    P[:3, 3] = (tx, ty, tz)
    return P


POSES = [pose(), pose(0.1), pose(-0.1, 0.05), pose(0.0, -0.08, 0.1), pose(0.05, 0.05, -0.1)]


def frames_of(depths):
    from vd.export.mesh import Frame

    return [Frame(np.full((H, W, 3), 0.5), d, K, P) for d, P in zip(depths, POSES)]


def mesh_of(frames, resolution=128):
    from vd.export.mesh import MeshParams, fuse, grid_for, surface

    p = MeshParams()
    origin, voxel, shape = grid_for(frames, resolution, p.far)
    verts, faces, _ = surface(fuse(frames, origin, voxel, shape, p.trunc_voxels * voxel), p.min_piece)
    return verts, faces, voxel


def test_a_floor_seen_at_a_grazing_angle_is_fused_onto_its_plane():
    # a road 1.5 below the cameras out to 12 m: a pixel row spans up to ~1 m of it; nearest-pixel depth and
    # distances along the ray put the fused road a tenth to a quarter of a voxel off it, and with distances to the
    # tangent plane alone, the unseen voxels behind the band met the seen ones in faces a voxel below it
    frames = frames_of([plane_depth((0, 1, 0), 1.5, P, max_depth=12.0) for P in POSES])
    verts, _, voxel = mesh_of(frames)
    inner = (verts[:, 2] > 3) & (verts[:, 2] < 9) & (np.abs(verts[:, 0]) < 0.45 * verts[:, 2])  # not its borders
    off = np.abs(verts[inner, 1] - 1.5) / voxel
    assert inner.sum() > 2000
    assert np.median(off) < 0.02 and np.percentile(off, 95) < 0.1 and off.max() < 0.5, (
        np.median(off),
        np.percentile(off, 95),
        off.max(),
    )


def test_a_wall_is_fused_onto_its_plane_between_pixel_centres():
    # nearest-pixel depth steps by a pixel's depth change across the slanted wall (5 % of a voxel here)
    frames = frames_of([plane_depth((0.1, 0, 1), 2.0, P) for P in POSES])
    verts, faces, voxel = mesh_of(frames)
    n = np.array([0.1, 0, 1]) / np.linalg.norm([0.1, 0, 1])
    inner = (np.abs(verts[:, 0]) < 1.0) & (np.abs(verts[:, 1]) < 0.7)
    off = np.abs(verts[inner] @ n - 2.0 / np.linalg.norm([0.1, 0, 1])) / voxel
    assert inner.sum() > 5000 and off.max() < 0.01, off.max()


def test_far_layer_triangulates_the_widest_view_beyond_the_grid():
    from vd.export.mesh import far_layer, grid_for, widest_frame

    # a near wall (x < 0.3, at 2 m) beside a far one (30 m, beyond 3x the median depth)
    depths = []
    for P in POSES:
        near = plane_depth((0, 0, 1), 2.0, P)
        Xw = rays(K, W, H) * near[..., None] + P[:3, 3]
        depths.append(np.where(Xw[..., 0] < 0.3, near, plane_depth((0, 0, 1), 30.0, P)).astype(np.float32))
    frames = frames_of(depths)
    origin, voxel, shape = grid_for(frames, 128, 3.0)
    assert origin[2] + voxel * shape[2] < 10  # the grid leaves the far wall out
    assert widest_frame(frames) is frames[0]
    v, f, c = far_layer(frames[0], origin, voxel, shape)
    assert len(f) > 500 and np.allclose(v[:, 2], 30.0, rtol=1e-5) and c.shape == v.shape
    # nothing stretched from the near wall to the far one, and every triangle faces the camera
    assert (v[:, 0] > 0.3 * 30 / 2 - 1e-6).all()
    normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((normal * -v[f].mean(1)).sum(1) > 0).all()
    # two triangles per square of four far pixels of the input view
    far = depths[0] > 10
    assert len(f) == 2 * (far[:-1, :-1] & far[1:, :-1] & far[:-1, 1:] & far[1:, 1:]).sum()


def far_wall_gaussians():
    """The plane scene's Gaussians (centre strip only) in front of a wall 25 m away."""
    import torch

    from _export_scene import plane_gaussians
    from vd.gaussians import Gaussians

    near = plane_gaussians(extent=0.8)
    xs = np.arange(-16, 16, 0.6)
    X, Y = np.meshgrid(xs, xs)
    P = np.stack([X, Y, np.full_like(X, 25.0)], -1).reshape(-1, 3)
    rgb = np.stack([0.3 + 0.2 * np.sin(X), 0.6 + 0.0 * X, 0.4 + 0.2 * np.cos(Y)], -1).reshape(-1, 3)
    far = Gaussians.from_rgb(
        torch.tensor(P, dtype=torch.float32), torch.tensor(rgb, dtype=torch.float32), scales=0.45, opacity=0.95
    )
    return Gaussians(
        *(
            torch.cat([getattr(near, k), getattr(far, k)])
            for k in ("means", "log_scales", "quats", "opacity_logits", "sh")
        )
    )


def test_mesh_export_keeps_what_lies_beyond_the_grid(tmp_path, run_vd):
    from vd.export.mesh import MeshParams, export_mesh, mesh_cameras
    from vd.export.source import resolve_source
    from vd.export.video import trajectory_poses
    from vd.export.write import video_camera

    folder = write_vd_folder(tmp_path / "far", far_wall_gaussians())
    r = run_vd("export", folder, "--format", "mesh", "-o", tmp_path / "m.glb", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["far_faces"] > 500
    v = np.asarray(trimesh.load(tmp_path / "m.glb", force="mesh", process=False).vertices) @ np.diag([1.0, -1, -1])
    wall = v[v[:, 2] > 10]
    assert len(wall) > 300 and np.median(np.abs(wall[:, 2] - 25.0)) < 0.25  # 1 % of its depth
    a, b, c = PLANE
    near = v[v[:, 2] < 4]
    assert np.median(np.abs(near[:, 2] - (a * near[:, 0] + b * near[:, 1] + c))) < 0.02
    # without the far layer, the mesh ends at the grid
    src = resolve_source(folder)
    g = src.gaussians()
    Kc, Wc, Hc, radius = video_camera(src, g)
    p = MeshParams(far_layer=False, resolution=96, trajectory_frames=6)  # small: only where the mesh ends matters
    cams = mesh_cameras(
        src.views(), trajectory_poses("spiral", p.trajectory_frames, radius=radius, width=Wc, height=Hc), Kc, Wc, Hc
    )
    rep = export_mesh(tmp_path / "near.ply", g, cams, params=p)
    v = np.asarray(trimesh.load(tmp_path / "near.ply", process=False).vertices)
    assert rep["far_faces"] == 0 and (-v[:, 2] < 10).all()


def test_a_fly_through_view_that_sees_only_the_far_wall_does_not_stretch_the_grid(tmp_path):
    # a fly-through camera 3 m to the side sees the wall 25 m away and nothing of the near plane: within 3x its own
    # median depth, the wall stretched the grid to 25 m, its voxels 10x coarser on the near plane
    from _export_scene import K as K_VIEW
    from _export_scene import H as H_VIEW
    from _export_scene import W as W_VIEW
    from vd.export.mesh import MeshParams, export_mesh, mesh_cameras
    from vd.export.source import resolve_source

    src = resolve_source(write_vd_folder(tmp_path / "far", far_wall_gaussians()))
    g = src.gaussians()
    p = MeshParams(resolution=96)
    views_only = export_mesh(tmp_path / "views.ply", g, mesh_cameras(src.views(), [], K_VIEW, W_VIEW, H_VIEW), params=p)
    cams = mesh_cameras(src.views(), [pose(3.0)], K_VIEW, W_VIEW, H_VIEW)
    rep = export_mesh(tmp_path / "m.ply", g, cams, params=p)
    assert rep["voxel"] == pytest.approx(views_only["voxel"]) and rep["voxel"] < 0.05
    assert [c.spans_grid for c in cams] == [True] * len(src.views()) + [False]
    v = np.asarray(trimesh.load(tmp_path / "m.ply", process=False).vertices) @ np.diag([1.0, -1, -1])
    a, b, c = PLANE
    near = v[v[:, 2] < 4]
    assert np.median(np.abs(near[:, 2] - (a * near[:, 0] + b * near[:, 1] + c))) < 0.02
    # a scene without views: the fly-through spans the grid
    assert all(c.spans_grid for c in mesh_cameras([], [pose(), pose(3.0)], K_VIEW, W_VIEW, H_VIEW))


def test_bench_rasteriser_draws_a_grazing_plane_at_its_depth_at_pixel_centres():
    sys.path.insert(0, str(ROOT))
    from bench.mesh import render_mesh

    # a road 1.5 below the camera out to 40 m, in 0.2 m squares (two triangles each), coloured by x
    xs, zs = np.linspace(-6, 6, 61), np.linspace(1, 40, 196)
    X, Z = np.meshgrid(xs, zs)
    verts = np.stack([X.ravel(), np.full(X.size, 1.5), Z.ravel()], 1)
    n = len(xs)
    a = (np.arange(len(zs) - 1)[:, None] * n + np.arange(n - 1)[None]).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + n], 1), np.stack([a + 1, a + n + 1, a + n], 1)])
    colours = np.stack([(verts[:, 0] + 6) / 12, np.full(len(verts), 0.5), np.zeros(len(verts))], 1)
    rgb, depth, covered = render_mesh(verts, faces, colours, K, np.eye(4), W, H)
    truth = plane_depth((0, 1, 0), 1.5, np.eye(4))
    inside = (truth > 1.0) & (truth < 40) & (np.abs(rays(K, W, H)[..., 0] * truth) < 6)
    inside[:, [0, -1]] = False
    assert covered[inside].all() and not covered[truth == 0].any()
    # the depth at the pixel centre, not the nearest point of the surface within the pixel (at 20 m a pixel row
    # spans 3 m of this road)
    assert np.abs(depth[inside] - truth[inside]).max() < 1e-6 * truth[inside].max()
    x = rays(K, W, H)[..., 0] * truth
    assert np.abs(rgb[..., 0][inside] - (x[inside] + 6) / 12).max() < 1e-6


def test_bench_exact_canvas_depth_is_the_scenes_and_the_inputs_own_on_its_crop(tmp_path):
    """bench.mesh --canvas-depth exact: the scaffold's canvas depth is the ray-cast scene's over the whole canvas
    (a depth model that estimates novel views), and the input's exact depth where it crops the input."""
    sys.path.insert(0, str(ROOT))
    from bench.mesh import canvas_depth_backend
    from bench.quality.run import write_input
    from bench.quality.scenes import make_scene
    from bench.quality.score import ground_truth
    from vd.stages.scaffold import canvas_padding

    scene = make_scene("room", 64, 48)
    gt = ground_truth(scene, ["left"])[0]
    backend = canvas_depth_backend(scene, write_input(gt, tmp_path))
    assert backend.estimates_novel_views and backend.identity.endswith("exact-canvas-depth")
    px, py = canvas_padding(64, 48, 0.3)
    res = backend.estimate(np.zeros((48 + 2 * py, 64 + 2 * px, 3), np.uint8))
    assert np.array_equal(res.depth[py : py + 48, px : px + 64], gt.depth) and res.valid.all()
    K_c = scene.K() + np.array([[0, 0, px], [0, 0, py], [0, 0, 0]])
    np.testing.assert_allclose(res.K, K_c, rtol=1e-6)
    # the ring holds the room's walls where they continue, not the input border's depth completed outwards
    from vd.align import complete_depth

    ring = np.ones(res.depth.shape, bool)
    ring[py : py + 48, px : px + 64] = False
    known = np.where(ring, 0, res.depth).astype(np.float32)
    guess = complete_depth(known, ring)
    assert (np.abs(guess - res.depth)[ring] > 0.05 * res.depth[ring]).mean() > 0.2
