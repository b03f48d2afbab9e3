"""A triangle mesh of a Gaussian scene: `vd export --format mesh` (.glb, .ply or .obj by suffix).

1. Render colour, median depth and alpha of the splats (vd.render) at the scene's cameras and along a
   fly-through of them (the video's spiral), so every surface the scene shows is seen from several sides.
2. Fuse the depths into a truncated signed distance field (TSDF: the running weighted mean of the truncated
   signed distance, Curless & Levoy 1996) on a voxel grid over the points the scene's own views see up to 3x
   each view's median depth (the fly-through fuses inside that grid but does not stretch it: `grid_frames`), and
   average the colours near the surface the same way. A voxel's depth is interpolated between pixel
   centres (DepthLookup) and its distance measured to the surface's tangent plane (ray_slant), so surfaces seen
   at a grazing angle (a road, a facade down a street) fuse onto their plane.
3. Extract the zero level with marching cubes (scikit-image) on cubes known at every corner (unseen voxels
   behind a seen surface count as solid), colour the vertices from the colour grid, drop small disconnected
   pieces; add a far layer: what the widest view sees beyond the grid (a far street, a sky) triangulated from
   its depth map; decimate to `faces` triangles with fast-simplification (quadric error metrics).
4. `collider=True`: a small closed proxy instead: everything no camera saw as free space inside the grid (here
   over every camera's points, the fly-through's too) is solid, at a coarse resolution, so the surface closes
   (watertight), then decimated.

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
from typing import NamedTuple

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
    far_layer: bool = True  # what the widest view sees beyond the grid (a far street, a sky), from its depth map
    far_layer_side: int = 256  # pixels along the far layer's longest side at most
    depth_mode: str = "median"  # fused depth: "median" (on the surface) or "expected" (biased toward the camera)


class MeshCamera(NamedTuple):
    """A camera the mesh fuses depth from (a plain (K, width, height, world_from_camera) tuple also works and spans
    the grid)."""

    K: np.ndarray
    width: int
    height: int
    world_from_camera: np.ndarray
    spans_grid: bool = True  # its points set the grid's extent (the scene's own views), or it fuses inside it only


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
    """Colour and depth (median or expected, see vd.render.render) of the splats at each camera
    (K, width, height, world_from_camera[, spans_grid])."""
    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    frames = []
    task = progress.add_task("mesh: rendering depth", total=len(cameras)) if progress is not None else None
    with torch.no_grad():
        for cam in cameras:
            K, w, h, P = cam[:4]
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


def depth_edges(depth: np.ndarray, rel: float = 0.02) -> np.ndarray:
    """Pixels at or beside a depth edge, or without depth: where the inverse depth's second difference along x or y
    exceeds `rel` of it. The inverse depth is affine in the pixel coordinates on a plane, so planes at any slant
    (a road seen at a grazing angle) are not edges."""
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-12), 0.0)
    edge = depth <= 0
    for axis in (0, 1):
        d2 = np.abs(np.roll(inv, 1, axis) + np.roll(inv, -1, axis) - 2 * inv)
        jump = d2 > rel * inv
        if axis == 0:
            jump[[0, -1], :] = False
        else:
            jump[:, [0, -1]] = False
        edge |= jump | np.roll(jump, 1, axis) | np.roll(jump, -1, axis)
    return edge


class DepthLookup:
    """A frame's depth at continuous pixel positions (pixel centres at +0.5): the inverse depth interpolated
    bilinearly between the four nearest pixel centres where none is at a depth edge (depth_edges), else the nearest
    pixel's depth (0 where it has none). Nearest-pixel depth alone steps by up to a pixel's depth change: metres on
    a road seen at a grazing angle, where the TSDF then wavers by more than the surface's 1 % tolerance."""

    def __init__(self, f: Frame):
        self.depth = f.depth.astype(np.float64)
        self.edge = depth_edges(f.depth)
        self.inv = np.where(self.depth > 0, 1.0 / np.maximum(self.depth, 1e-12), 0.0)
        e = self.edge
        self.smooth = ~(e[:-1, :-1] | e[:-1, 1:] | e[1:, :-1] | e[1:, 1:])  # [h-1, w-1]: quads to interpolate

    def __call__(self, px: np.ndarray, py: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Depth at (px, py), whose pixel (u, v) = floor is inside the image."""
        h, w = self.depth.shape
        d = self.depth[v, u]
        x, y = px - 0.5, py - 0.5
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        i = np.nonzero((x0 >= 0) & (x0 < w - 1) & (y0 >= 0) & (y0 < h - 1))[0]
        i = i[self.smooth[y0[i], x0[i]]]
        x0, y0, fx, fy = x0[i], y0[i], x[i] - x0[i], y[i] - y0[i]
        inv = self.inv
        top = inv[y0, x0] * (1 - fx) + inv[y0, x0 + 1] * fx
        bottom = inv[y0 + 1, x0] * (1 - fx) + inv[y0 + 1, x0 + 1] * fx
        d[i] = 1.0 / (top * (1 - fy) + bottom * fy)
        return d


def ray_slant(f: Frame, edge: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Per pixel, |n . r| with n the unit normal of the depth map's surface and r = (x/z, y/z, 1) the pixel's ray:
    the factor that turns a z-depth difference along the ray into a distance from the surface's tangent plane
    (|r|, the distance along the ray, at depth edges and pixels without depth; at least `floor` * |r|). A
    projective distance (along the ray) at a grazing angle is many times the true one, so one truncation band
    would be thin on a road seen end-on and thick on a wall seen face-on, and views from different angles would
    disagree on the zero crossing."""
    h, w = f.depth.shape
    v, u = np.mgrid[0:h, 0:w]
    r = np.stack([(u + 0.5 - f.K[0, 2]) / f.K[0, 0], (v + 0.5 - f.K[1, 2]) / f.K[1, 1], np.ones((h, w))], -1)
    P = r * f.depth[..., None]
    dx = np.roll(P, -1, 1) - np.roll(P, 1, 1)
    dy = np.roll(P, -1, 0) - np.roll(P, 1, 0)
    n = np.cross(dx, dy)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    rn = np.linalg.norm(r, axis=-1)
    slant = np.maximum(np.abs((n * r).sum(-1)), floor * rn)
    slant[edge] = rn[edge]
    slant[[0, -1], :] = rn[[0, -1], :]
    slant[:, [0, -1]] = rn[:, [0, -1]]
    return slant


def fuse(frames: list[Frame], origin, voxel: float, shape, trunc: float) -> TSDF:
    """TSDF fusion of the frames on the grid (running weighted means; weight 1 per observation)."""
    X, Y, Z = shape
    tsdf = np.ones(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    colour = np.zeros(shape + (3,), np.float32)
    colour_w = np.zeros(shape, np.float32)
    free = np.zeros(shape, bool)
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    base = origin + voxel * np.stack([ii, jj, np.zeros_like(ii)], -1).reshape(-1, 3)  # the slab k = 0
    lookups = [DepthLookup(f) for f in frames]
    slants = [ray_slant(f, lk.edge) for f, lk in zip(frames, lookups, strict=True)]
    # camera coordinates of the slab k: (base + k voxel e_z - t) @ R = base_cam + k voxel R[2]
    base_cam = [(base - f.world_from_camera[:3, 3]) @ f.world_from_camera[:3, :3] for f in frames]
    for k in range(Z):  # one slab of voxels at a time keeps memory small
        t_s, w_s, c_s, cw_s, f_s = (
            tsdf[:, :, k].reshape(-1),
            weight[:, :, k].reshape(-1),
            colour[:, :, k].reshape(-1, 3),
            colour_w[:, :, k].reshape(-1),
            free[:, :, k].reshape(-1),
        )
        for f, lookup, slant, bc in zip(frames, lookups, slants, base_cam, strict=True):
            pc = bc + (k * voxel) * f.world_from_camera[2, :3]
            z = pc[:, 2]
            front = np.nonzero(z > 1e-6)[0]
            h, w = f.depth.shape
            px = f.K[0, 0] * pc[front, 0] / z[front] + f.K[0, 2]
            py = f.K[1, 1] * pc[front, 1] / z[front] + f.K[1, 2]
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            idx, px, py = front[inside], px[inside], py[inside]
            u, v = px.astype(np.int64), py.astype(np.int64)  # floor: both are >= 0 here
            d = lookup(px, py, u, v)
            seen = d > 0
            idx, d, u, v = idx[seen], d[seen], u[seen], v[seen]
            sdf = (d - z[idx]) * slant[v, u]
            f_s[idx[sdf > trunc]] = True
            near = sdf >= -trunc
            idx, sdf, u, v = idx[near], np.minimum(sdf[near] / trunc, 1.0), u[near], v[near]
            w_old = w_s[idx]
            t_s[idx] = (t_s[idx] * w_old + sdf) / (w_old + 1)
            close = np.abs(sdf) < 1.0
            ci = idx[close]
            cw = cw_s[ci, None]  # the colour's own count: truncated observations would darken it
            c_s[ci] = (c_s[ci] * cw + f.rgb[v[close], u[close]]) / (cw + 1)
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
    tsdf, known = solid_behind(grid.tsdf, seen)
    verts, faces, _, _ = measure.marching_cubes(tsdf, level=0.0, mask=cube_mask(known), allow_degenerate=False)
    if len(faces) == 0:
        raise InputError("no surface found in the fused depth")
    colours = _vertex_colours(grid, verts)
    verts = grid.origin + verts * grid.voxel
    return _drop_small_pieces(verts, faces, colours, min_piece)


def widest_frame(frames: list[Frame]) -> Frame:
    """The frame that sees the widest field of view (the scene's outpainted view), the first of equals."""
    return max(frames, key=lambda f: (f.depth.shape[1] / f.K[0, 0]) * (f.depth.shape[0] / f.K[1, 1]))


def far_layer(
    f: Frame, origin, voxel: float, shape, max_side: int = 256, ratio: float = 1.3, overlap: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, colours) of what a frame sees beyond the TSDF grid (a far street, a sky), triangulated from
    its depth map: two triangles per square of neighbouring pixels (every `step`-th, at most `max_side` along a side)
    whose corners all lie outside the grid (less `overlap` voxels: the seam overlaps), facing the camera, none across
    a depth edge (depths more than `ratio` apart: a facade's end against the sky; a pixel's depth step on a facade
    seen end-on at 80 m is about 15 %, and the splats' depth there too noisy for depth_edges' test)."""
    step = max(1, int(np.ceil(max(f.depth.shape) / max_side)))
    depth = f.depth[step // 2 :: step, step // 2 :: step]
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    x, y = (u * step + step // 2 + 0.5 - f.K[0, 2]) / f.K[0, 0], (v * step + step // 2 + 0.5 - f.K[1, 2]) / f.K[1, 1]
    P = np.stack([x * depth, y * depth, depth], -1).reshape(-1, 3) @ f.world_from_camera[:3, :3].T
    P += f.world_from_camera[:3, 3]
    # the TSDF's surface stops a voxel or two inside its grid: the layer starts `overlap` voxels inside it
    lo = np.asarray(origin) + (overlap - 0.5) * voxel
    hi = np.asarray(origin) + (np.asarray(shape) - 0.5 - overlap) * voxel
    far = ((P < lo) | (P > hi)).any(1) & (depth.reshape(-1) > 0)
    a = (v[:-1, :-1] * w + u[:-1, :-1]).ravel()
    tris = np.concatenate([np.stack([a, a + w, a + 1], 1), np.stack([a + 1, a + w, a + w + 1], 1)])
    ok = far[tris].all(1)
    d = depth.reshape(-1)[tris]
    ok &= d.max(1) <= ratio * np.maximum(d.min(1), 1e-12)
    tris = tris[ok]
    used = np.unique(tris)
    remap = np.full(len(P), -1)
    remap[used] = np.arange(len(used))
    colours = f.rgb[step // 2 :: step, step // 2 :: step].reshape(-1, 3)
    return P[used], remap[tris], colours[used]


def join(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (vertices, faces, colours) of several."""
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    return (
        np.concatenate([v for v, _, _ in parts]),
        np.concatenate([f + o for (_, f, _), o in zip(parts, offsets, strict=True)]),
        np.concatenate([c for _, _, c in parts]),
    )


def solid_behind(tsdf: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TSDF, known voxels) with the unseen neighbours of seen voxels behind a surface (negative) made solid (-1):
    no camera saw them because they lie behind that surface, past the truncation band. (Where a surface leaves every
    camera's view this bends its last voxel back; leaving out the voxels that also touch free space straightened
    it but cost the bench scenes 2-3 % of their coverage and fence 20 % more AbsRel.)"""
    from scipy.ndimage import binary_dilation

    fill = ~seen & binary_dilation(seen & (tsdf < 0), np.ones((3, 3, 3), bool))
    out = tsdf.copy()
    out[fill] = -1.0
    return out, seen | fill


def cube_mask(seen: np.ndarray) -> np.ndarray:
    """Voxels whose cube (the voxel and its +x, +y, +z neighbours: the 8 corners marching cubes reads from it) is
    known at every corner. scikit-image checks its mask at a cube's first corner only: an unseen corner keeps the
    initial TSDF value (+1, free space), and next to a seen negative one it made a spurious face at the back of the
    truncation band (2 voxels behind the surface)."""
    m = seen.copy()
    m[-1, :, :] = m[:, -1, :] = m[:, :, -1] = False
    for dx, dy, dz in np.ndindex(2, 2, 2):
        if dx or dy or dz:
            X, Y, Z = seen.shape
            m[:-1, :-1, :-1] &= seen[dx : dx + X - 1, dy : dy + Y - 1, dz : dz + Z - 1]
    return m


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
    has = wsum > 1e-6
    out = acc / np.maximum(wsum, 1e-6)[:, None]
    if has.any() and not has.all():
        # no corner with a colour (a face against voxels no camera saw near a surface): the nearest coloured vertex's
        from scipy.spatial import cKDTree

        out[~has] = out[has][cKDTree(verts[has]).query(verts[~has])[1]]
    return out


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


def mesh_cameras(views, traj_poses, K, width: int, height: int) -> list[MeshCamera]:
    """The cameras of the scene's views, which span the TSDF grid, and of the fly-through poses, which fuse inside it
    (and span it when the scene has no views)."""
    cams = [
        MeshCamera(np.asarray(v.K, np.float64), v.width, v.height, np.asarray(v.world_from_camera, np.float64))
        for v in views
    ]
    return cams + [MeshCamera(np.asarray(K, np.float64), width, height, P, not cams) for P in traj_poses]


def grid_frames(frames: list[Frame], cameras) -> list[Frame]:
    """The frames whose cameras span the grid (all of them when none does). A fly-through view turned past the scene's
    edge sees less of it, and farther, so its own 3x median depth reaches farther: on bench/quality's street (the
    scene's views' median depths 8-10 m) the spiral's were 11-20 m with half its pixels covered, its points reached
    58 m, and the voxels were 0.18 m instead of 0.11 m, the far street fused from its depth maps rather than given by
    the far layer (from the widest of the scene's own views, which the splats reproduce best)."""
    spans = [len(c) < 5 or bool(c[4]) for c in cameras]
    chosen = [f for f, s in zip(frames, spans, strict=True) if s]
    return chosen or frames


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
    # the collider keeps every camera's box, as before: at its coarse resolution the stretch costs nothing, and with
    # the views' box the example room's collider did not stay closed when decimated (17.6k faces instead of 2,000)
    origin, voxel, shape = grid_for(frames if collider_only else grid_frames(frames, cameras), res, p.far)
    grid = fuse(frames, origin, voxel, shape, p.trunc_voxels * voxel)
    far_faces = 0
    if collider_only:
        verts, f = collider(grid, faces or p.collider_faces)
        colours = None
    else:
        parts = [surface(grid, p.min_piece)]
        if p.far_layer:
            parts.append(far_layer(widest_frame(frames), origin, voxel, shape, p.far_layer_side))
            far_faces = len(parts[1][1])
        verts0, f0, col0 = join(parts)
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
        "far_faces": far_faces,  # before decimation
        "voxel": voxel,
        "seconds": round(time.perf_counter() - t0, 2),
        "axes": "+Y up, right-handed, the input camera at the origin looking along -Z",
    }


__all__ = [
    "MESH_SUFFIXES",
    "TSDF",
    "MeshCamera",
    "MeshParams",
    "check_mesh_target",
    "collider",
    "decimate",
    "export_mesh",
    "fuse",
    "grid_for",
    "grid_frames",
    "mesh_cameras",
    "render_frames",
    "surface",
    "write_mesh",
]
