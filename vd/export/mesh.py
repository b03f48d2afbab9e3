"""A triangle mesh of a Gaussian scene: `vd export --format mesh` (.glb, .ply or .obj by suffix).

1. Render colour, expected depth and alpha of the splats (vd.render) at the scene's cameras and along a
   fly-through of them (the video's spiral), so every surface the scene shows is seen from several sides.
2. Fuse the depths into a truncated signed distance field (TSDF: the running weighted mean of the
   truncated distance along each camera ray, Curless & Levoy 1996) on a voxel grid over the seen points,
   and average the colours near the surface the same way.
3. Extract the zero level with marching cubes (scikit-image) where some camera saw the voxel, colour the
   vertices from the colour grid, drop small disconnected pieces, and decimate to `faces` triangles with
   fast-simplification (quadric error metrics).
4. `collider=True`: a small closed proxy instead: everything no camera saw as free space inside the grid is
   solid, at a coarse resolution, so the surface closes (watertight), then decimated.

Axes: the mesh is written +Y up, right-handed, the input camera at the origin looking along -Z (glTF's
convention, and what Blender, Unity and Unreal importers assume for .glb/.obj): vd's (x, y, z) -> (x, -y, -z).

Libraries (extra `mesh`): scikit-image's marching cubes (masked, so unseen voxels make no surface),
trimesh (writes .glb with vertex colours, .ply, .obj; checks watertightness), fast-simplification
(quadric decimation, a small compiled wheel; Open3D does all three but is an install of hundreds of MB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd.errors import InputError, UsageError

MESH_SUFFIXES = (".glb", ".ply", ".obj")
RDF_TO_GLTF = np.diag([1.0, -1.0, -1.0])
INSTALL_HINT = 'pip install "scikit-image>=0.22" "trimesh>=4.0" "fast-simplification>=0.1.7" (the mesh extra)'


@dataclass
class MeshParams:
    resolution: int = 256  # voxels along the grid's longest side
    trunc_voxels: float = 2.0  # truncation distance in voxels
    alpha_min: float = 0.9  # pixels the splats cover at least this much give depth (edges blend depths)
    trajectory_frames: int = 24  # fly-through views fused beside the scene's own cameras
    collider_resolution: int = 40
    collider_faces: int = 2000
    min_piece: float = 0.002  # pieces with fewer than this share of the faces are dropped
    far: float = 3.0  # the grid covers points up to this many times each view's median depth (not the sky)
    depth_mode: str = "median"  # fused depth: "median" (on the surface) or "expected" (biased toward the camera)


@dataclass
class Frame:
    rgb: np.ndarray  # [H,W,3] float in [0, 1]
    depth: np.ndarray  # [H,W] z-depth, 0 where not covered
    K: np.ndarray
    world_from_camera: np.ndarray


@dataclass
class TSDF:
    origin: np.ndarray  # world position of voxel (0, 0, 0)'s centre
    voxel: float
    tsdf: np.ndarray  # [X,Y,Z] in [-1, 1]
    weight: np.ndarray  # [X,Y,Z]
    colour: np.ndarray  # [X,Y,Z,3]
    free: np.ndarray  # [X,Y,Z] bool: some camera saw through it
    colour_weight: np.ndarray  # [X,Y,Z]: observations within the truncation band (those the colour averages)


def render_frames(
    g, cameras, *, alpha_min: float, depth_mode: str = "median", device="cpu", progress=None
) -> list[Frame]:
    """Colour and depth (median or expected, see vd.render.render) of the splats at each
    (K, width, height, world_from_camera)."""
    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    frames = []
    task = progress.add_task("mesh: rendering depth", total=len(cameras)) if progress is not None else None
    with torch.no_grad():
        for K, w, h, P in cameras:
            vm = torch.as_tensor(invert_pose(np.asarray(P)[None]), dtype=torch.float32, device=g.device)
            Kt = torch.as_tensor(np.asarray(K)[None], dtype=torch.float32, device=g.device)
            out = render(g, vm, Kt, w, h, depth_mode=depth_mode)
            a = out.alpha[0].float().cpu().numpy()
            d = out.depth[0].float().cpu().numpy()
            ok = (a >= alpha_min) & np.isfinite(d) & (d > 0)
            rgb = (out.rgb[0].float().clamp(0, 1).cpu().numpy() / np.maximum(a, 1e-6)[..., None]).clip(0, 1)
            frames.append(
                Frame(
                    rgb, np.where(ok, d, 0.0).astype(np.float32), np.asarray(K, np.float64), np.asarray(P, np.float64)
                )
            )
            if task is not None:
                progress.update(task, advance=1)
    return frames


def _points(f: Frame, step: int = 4, far: float = np.inf) -> np.ndarray:
    v, u = np.nonzero(f.depth[::step, ::step])
    z = f.depth[::step, ::step][v, u]
    if len(z) and np.isfinite(far):
        near = z <= far * np.median(z)
        v, u, z = v[near], u[near], z[near]
    x, y = u * step + 0.5, v * step + 0.5  # pixel centres
    X = np.stack([(x - f.K[0, 2]) / f.K[0, 0] * z, (y - f.K[1, 2]) / f.K[1, 1] * z, z], 1)
    return X @ f.world_from_camera[:3, :3].T + f.world_from_camera[:3, 3]


def grid_for(
    frames: list[Frame], resolution: int, far: float = np.inf
) -> tuple[np.ndarray, float, tuple[int, int, int]]:
    """(origin, voxel size, shape) of a grid over the seen points (0.5-99.5 percentiles, 5 % margin), those
    beyond `far` times a view's median depth left out (a sky or a far background would make the voxels coarse)."""
    pts = np.concatenate([_points(f, far=far) for f in frames])
    if len(pts) < 10:
        raise InputError("the scene shows too little surface to mesh (no opaque pixels in its renders)")
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.05 * (hi - lo).max()
    lo, hi = lo - pad, hi + pad
    voxel = float((hi - lo).max() / resolution)
    shape = tuple(int(np.ceil(s / voxel)) + 1 for s in hi - lo)
    return lo, voxel, shape  # type: ignore[return-value]


def fuse(frames: list[Frame], origin, voxel: float, shape, trunc: float) -> TSDF:
    """TSDF fusion of the frames on the grid (running weighted means; weight 1 per observation)."""
    X, Y, Z = shape
    tsdf = np.ones(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    colour = np.zeros(shape + (3,), np.float32)
    colour_w = np.zeros(shape, np.float32)
    free = np.zeros(shape, bool)
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    for k in range(Z):  # one slab of voxels at a time keeps memory small
        centres = origin + voxel * np.stack([ii, jj, np.full_like(ii, k)], -1).reshape(-1, 3)
        t_s, w_s, c_s, cw_s, f_s = (
            tsdf[:, :, k].reshape(-1),
            weight[:, :, k].reshape(-1),
            colour[:, :, k].reshape(-1, 3),
            colour_w[:, :, k].reshape(-1),
            free[:, :, k].reshape(-1),
        )
        for f in frames:
            R, t = f.world_from_camera[:3, :3], f.world_from_camera[:3, 3]
            pc = (centres - t) @ R  # camera coordinates
            z = pc[:, 2]
            front = z > 1e-6
            h, w = f.depth.shape
            u = np.floor(f.K[0, 0] * pc[:, 0] / np.where(front, z, 1) + f.K[0, 2]).astype(np.int64)
            v = np.floor(f.K[1, 1] * pc[:, 1] / np.where(front, z, 1) + f.K[1, 2]).astype(np.int64)
            inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            idx = np.nonzero(inside)[0]
            d = f.depth[v[idx], u[idx]]
            seen = d > 0
            idx, d = idx[seen], d[seen]
            sdf = d - z[idx]
            f_s[idx[sdf > trunc]] = True
            near = sdf >= -trunc
            idx, sdf = idx[near], np.minimum(sdf[near] / trunc, 1.0)
            w_old = w_s[idx]
            t_s[idx] = (t_s[idx] * w_old + sdf) / (w_old + 1)
            close = np.abs(sdf) < 1.0
            ci = idx[close]
            cw = cw_s[ci, None]  # the colour's own count: truncated observations would darken it
            c_s[ci] = (c_s[ci] * cw + f.rgb[v[ci], u[ci]]) / (cw + 1)
            cw_s[ci] += 1
            w_s[idx] = w_old + 1
        tsdf[:, :, k], weight[:, :, k] = t_s.reshape(X, Y), w_s.reshape(X, Y)
        colour[:, :, k], free[:, :, k] = c_s.reshape(X, Y, 3), f_s.reshape(X, Y)
        colour_w[:, :, k] = cw_s.reshape(X, Y)
    return TSDF(np.asarray(origin, np.float64), voxel, tsdf, weight, colour, free, colour_w)


def surface(grid: TSDF, min_piece: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [V,3] world, faces [F,3], colours [V,3] in [0,1]) of the TSDF's zero level where cameras saw it."""
    from skimage import measure

    seen = grid.weight > 0
    if not seen.any() or grid.tsdf[seen].min() > 0 or grid.tsdf[seen].max() < 0:
        raise InputError("no surface found in the fused depth (the scene may be empty or too thin)")
    verts, faces, _, _ = measure.marching_cubes(grid.tsdf, level=0.0, mask=seen, allow_degenerate=False)
    if len(faces) == 0:
        raise InputError("no surface found in the fused depth")
    colours = _vertex_colours(grid, verts)
    verts = grid.origin + verts * grid.voxel
    return _drop_small_pieces(verts, faces, colours, min_piece)


def _vertex_colours(grid: TSDF, verts: np.ndarray) -> np.ndarray:
    """Trilinear colour at vertices (voxel coordinates) over the corners that have a colour."""
    hi = np.array(grid.tsdf.shape) - 1
    base = np.clip(np.floor(verts).astype(np.int64), 0, hi)
    frac = verts - base
    acc = np.zeros((len(verts), 3))
    wsum = np.zeros(len(verts))
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        i = np.minimum(base + c, hi)
        w = np.prod(np.where(c, frac, 1 - frac), axis=1) * (grid.colour_weight[i[:, 0], i[:, 1], i[:, 2]] > 0)
        acc += w[:, None] * grid.colour[i[:, 0], i[:, 1], i[:, 2]]
        wsum += w
    idx = np.clip(np.round(verts).astype(np.int64), 0, hi)
    nearest = grid.colour[idx[:, 0], idx[:, 1], idx[:, 2]]
    return np.where(wsum[:, None] > 1e-6, acc / np.maximum(wsum, 1e-6)[:, None], nearest)


def _drop_small_pieces(verts, faces, colours, min_piece: float):
    import trimesh

    m = trimesh.Trimesh(verts, faces, process=False)
    labels = trimesh.graph.connected_component_labels(m.face_adjacency, node_count=len(faces))
    counts = np.bincount(labels)
    keep_f = counts[labels] >= max(1, min_piece * len(faces))
    faces = faces[keep_f]
    used = np.unique(faces)
    remap = np.full(len(verts), -1)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces], colours[used]


def collider(grid: TSDF, faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed proxy: solid = inside the grid and never seen as free space (surfaces, and what lies behind them)."""
    from skimage import measure

    solid = ~grid.free & ((grid.weight == 0) | (grid.tsdf < 0))
    solid = np.pad(solid, 1).astype(np.float32)  # an empty border closes every surface
    verts, f, _, _ = measure.marching_cubes(solid, level=0.5, allow_degenerate=False)
    import trimesh

    # decimated in voxel coordinates (as marching cubes gives them); a result that is not closed is retried with
    # another target, and the undecimated surface (closed by construction) is the last resort
    for target in (faces, int(faces * 1.15), int(faces * 1.3)):
        v, fd = decimate(verts, f, target)
        if trimesh.Trimesh(v, fd, process=True).is_watertight:
            break
    else:
        v, fd = verts, f
    if trimesh.Trimesh(v, fd, process=True).volume < 0:  # outward normals (positive volume) for physics engines
        fd = fd[:, ::-1]
    return grid.origin + (v - 1) * grid.voxel, np.ascontiguousarray(fd)


def decimate(verts: np.ndarray, faces: np.ndarray, target: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about `target` faces (unchanged when it already has fewer)."""
    if target is None or len(faces) <= target:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.ascontiguousarray(verts, np.float32),
        np.ascontiguousarray(faces, np.int32),
        target_reduction=1.0 - target / len(faces),
    )
    return np.asarray(v, np.float64), np.asarray(f, np.int64)


def _colours_for(verts_new: np.ndarray, verts: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Colours of decimated vertices: those of the nearest original vertex."""
    from scipy.spatial import cKDTree

    return colours[cKDTree(verts).query(verts_new)[1]]


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray, colours: np.ndarray | None) -> int:
    """Write vertices (vd's frame) turned +Y up, with vertex colours, in the format of the suffix; returns bytes."""
    import trimesh

    from vd.fsio import atomic_path

    v = verts @ RDF_TO_GLTF.T
    vc = (
        None
        if colours is None
        else np.concatenate([np.clip(np.round(colours * 255), 0, 255), np.full((len(colours), 1), 255)], 1).astype(
            np.uint8
        )
    )
    m = trimesh.Trimesh(v, faces, vertex_colors=vc, process=False)
    suffix = path.suffix.lower()
    with atomic_path(path, suffix=suffix) as tmp:
        m.export(tmp, file_type=suffix[1:])
    return path.stat().st_size


def check_mesh_target(path: Path) -> None:
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise UsageError(f"a mesh file name ends in .glb, .ply or .obj, got {path.name}")
    try:
        import fast_simplification  # noqa: F401
        import skimage  # noqa: F401
        import trimesh  # noqa: F401
    except ImportError as e:
        raise UsageError(f"--format mesh needs {e.name}, which is not installed; run: {INSTALL_HINT}") from None


def mesh_cameras(views, traj_poses, K, width: int, height: int) -> list:
    """(K, W, H, world_from_camera) of the scene's views and the fly-through poses."""
    cams = [
        (np.asarray(v.K, np.float64), v.width, v.height, np.asarray(v.world_from_camera, np.float64)) for v in views
    ]
    return cams + [(np.asarray(K, np.float64), width, height, P) for P in traj_poses]


def export_mesh(
    path,
    g,
    cameras,
    *,
    faces: int | None = None,
    collider_only: bool = False,
    params: MeshParams | None = None,
    progress=None,
) -> dict:
    """Fuse, extract and write; returns a JSON-ready report."""
    p = params or MeshParams()
    path = Path(path)
    t0 = time.perf_counter()
    frames = render_frames(g, cameras, alpha_min=p.alpha_min, depth_mode=p.depth_mode, progress=progress)
    res = p.collider_resolution if collider_only else p.resolution
    origin, voxel, shape = grid_for(frames, res, p.far)
    grid = fuse(frames, origin, voxel, shape, p.trunc_voxels * voxel)
    if collider_only:
        verts, f = collider(grid, faces or p.collider_faces)
        colours = None
    else:
        verts0, f0, col0 = surface(grid, p.min_piece)
        verts, f = decimate(verts0, f0, faces)
        colours = col0 if verts is verts0 else _colours_for(verts, verts0, col0)
    size = write_mesh(path, verts, f, colours)
    import trimesh

    watertight = bool(trimesh.Trimesh(verts, f, process=True).is_watertight)
    return {
        "format": "mesh",
        "path": str(path),
        "vertices": len(verts),
        "faces": len(f),
        "bytes": size,
        "collider": collider_only,
        "watertight": watertight,
        "views_fused": len(frames),
        "grid": list(map(int, shape)),
        "voxel": voxel,
        "seconds": round(time.perf_counter() - t0, 2),
        "axes": "+Y up, right-handed, the input camera at the origin looking along -Z",
    }


__all__ = [
    "MESH_SUFFIXES",
    "TSDF",
    "MeshParams",
    "check_mesh_target",
    "collider",
    "decimate",
    "export_mesh",
    "fuse",
    "grid_for",
    "mesh_cameras",
    "render_frames",
    "surface",
    "write_mesh",
]
