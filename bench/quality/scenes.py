"""Synthetic evaluation scenes with exact depth: a small ray caster (numpy, deterministic).

A scene is a list of primitives (planes, axis-aligned boxes, spheres, vertical cylinders, a sky
dome), each with a procedural texture that is a function of the 3-D hit point, so every view
of the scene sees the same surface colours (a photo's per-pixel noise would not be consistent
across views). Lambertian shading from one point light plus ambient: view-independent, as the
Gaussians' degree-0 colour is.

Coordinates: OpenCV (x right, y down, z forward). `render(scene, world_from_camera, K, W, H)`
casts one ray through each pixel centre and returns RGB uint8 and z-depth (in that camera).

Scenes (`SCENES`): `room` (the example room of examples/make_room.py with a thin floor lamp,
1.2–5 m), `tabletop` (a table seen from above at 0.5–2.5 m: a mug, a ball, a book, pencils),
`street` (a street between facades, cars, thin poles, sky at 400 m), `fence` (thin pickets in
front of a hedge and a wall, 1.5–6 m).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

INF = np.inf


# ---------------------------------------------------------------------------------------------
# textures: colour [N,3] of hit points P [N,3]


def solid(c):
    c = np.asarray(c, dtype=np.float64)
    return lambda P: np.broadcast_to(c, P.shape).copy()


def checker(c0, c1, size: float, axes=(0, 2)):
    c0, c1 = np.asarray(c0, float), np.asarray(c1, float)

    def tex(P):
        k = (np.floor(P[:, axes[0]] / size) + np.floor(P[:, axes[1]] / size)) % 2 == 0
        return np.where(k[:, None], c0, c1)
    return tex


def stripes(c0, c1, period: float, axis: int):
    c0, c1 = np.asarray(c0, float), np.asarray(c1, float)
    return lambda P: np.where(((np.floor(P[:, axis] / period * 2) % 2) == 0)[:, None], c0, c1)


def waves(c, amp: float, freq: float):
    """A smooth colour pattern (sines of the position): texture at every scale for SSIM/PSNR."""
    c = np.asarray(c, float)

    def tex(P):
        s = np.sin(freq * P[:, 0]) * np.cos(freq * 1.3 * P[:, 1]) + 0.5 * np.sin(freq * 0.7 * P[:, 2] + 1.0)
        return np.clip(c[None] + amp * np.stack([s, 0.6 * s, -0.4 * s], -1), 0, 1)
    return tex


def windows(wall, glass, spacing: float, size: float, axes=(2, 1)):
    wall, glass = np.asarray(wall, float), np.asarray(glass, float)

    def tex(P):
        a = np.mod(P[:, axes[0]], spacing) < size
        b = np.mod(P[:, axes[1]], spacing) < size
        return np.where((a & b)[:, None], glass, wall)
    return tex


# ---------------------------------------------------------------------------------------------
# primitives: intersect(O [N,3], D [N,3]) -> (t [N], normal [N,3]); t = inf where missed


@dataclass
class Plane:
    point: tuple
    normal: tuple
    tex: Callable
    bounds: tuple | None = None  # ((lo xyz), (hi xyz)) the hit must lie in

    def intersect(self, O, D):
        n = np.asarray(self.normal, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(self.point, float) - O) @ n) / (D @ n)
        t = np.where(np.isfinite(t) & (t > 1e-6), t, INF)
        if self.bounds is not None:
            P = O + D * np.where(np.isfinite(t), t, 0)[:, None]
            lo, hi = (np.asarray(b, float) for b in self.bounds)
            t = np.where(((P >= lo - 1e-9) & (P <= hi + 1e-9)).all(-1), t, INF)
        return t, np.broadcast_to(n, O.shape)


@dataclass
class Box:
    lo: tuple
    hi: tuple
    tex: Callable

    def intersect(self, O, D):
        lo, hi = np.asarray(self.lo, float), np.asarray(self.hi, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (lo - O) / D, (hi - O) / D
        tmin, tmax = np.fmin(t0, t1), np.fmax(t0, t1)
        tn, tf = tmin.max(-1), tmax.min(-1)
        axis = tmin.argmax(-1)
        t = np.where((tn <= tf) & (tn > 1e-6), tn, INF)
        n = np.zeros_like(O)
        sign = -np.sign(np.take_along_axis(D, axis[:, None], -1)[:, 0])
        np.put_along_axis(n, axis[:, None], sign[:, None], -1)
        return t, n


@dataclass
class Sphere:
    center: tuple
    radius: float
    tex: Callable
    inside: bool = False  # a dome seen from inside (the sky)

    def intersect(self, O, D):
        c = np.asarray(self.center, float)
        oc = O - c
        a = (D * D).sum(-1)
        b = 2 * (oc * D).sum(-1)
        cc = (oc * oc).sum(-1) - self.radius ** 2
        disc = b * b - 4 * a * cc
        sq = np.sqrt(np.maximum(disc, 0))
        t = (-b + sq) / (2 * a) if self.inside else (-b - sq) / (2 * a)
        t = np.where((disc >= 0) & (t > 1e-6), t, INF)
        P = O + D * np.where(np.isfinite(t), t, 0)[:, None]
        n = (P - c) / self.radius
        return t, (-n if self.inside else n)


@dataclass
class Cylinder:
    """Vertical (along y) cylinder of radius r around (x, z), from y0 to y1 (y0 < y1); side only."""

    x: float
    z: float
    r: float
    y0: float
    y1: float
    tex: Callable

    def intersect(self, O, D):
        ox, oz = O[:, 0] - self.x, O[:, 2] - self.z
        a = D[:, 0] ** 2 + D[:, 2] ** 2
        b = 2 * (ox * D[:, 0] + oz * D[:, 2])
        cc = ox ** 2 + oz ** 2 - self.r ** 2
        disc = b * b - 4 * a * cc
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        y = O[:, 1] + D[:, 1] * np.where(np.isfinite(t), t, 0)
        t = np.where((disc >= 0) & (a > 1e-12) & (t > 1e-6) & (y >= self.y0) & (y <= self.y1), t, INF)
        P = O + D * np.where(np.isfinite(t), t, 0)[:, None]
        n = np.stack([P[:, 0] - self.x, np.zeros(len(P)), P[:, 2] - self.z], -1) / self.r
        return t, n


@dataclass
class Scene:
    name: str
    prims: list
    light: tuple
    input_pose: np.ndarray = field(default_factory=lambda: np.eye(4))  # world_from_camera of the photo
    width: int = 128
    height: int = 96
    fov_x: float = 70.0
    ambient: float = 0.35
    gain: float = 0.75  # diffuse light: gain · cos / (0.4 + falloff · distance²)
    falloff: float = 0.12
    unlit: tuple = ()  # indices of primitives that are not shaded (the sky)

    def K(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        W, H = width or self.width, height or self.height
        f = W / (2 * np.tan(np.radians(self.fov_x) / 2))
        return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=np.float64)


def cast(scene: Scene, O: np.ndarray, D: np.ndarray):
    """(t [N], colour [N,3]) of the nearest hit of each ray (t = inf and black where nothing)."""
    t = np.full(len(O), INF)
    n = np.zeros_like(O)
    idx = np.full(len(O), -1)
    for i, p in enumerate(scene.prims):
        ti, ni = p.intersect(O, D)
        hit = ti < t
        t = np.where(hit, ti, t)
        n[hit] = ni[hit]
        idx[hit] = i
    P = O + D * np.where(np.isfinite(t), t, 0)[:, None]
    col = np.zeros_like(O)
    for i, p in enumerate(scene.prims):
        m = idx == i
        if m.any():
            col[m] = p.tex(P[m])
    L = np.asarray(scene.light, float) - P
    dist = np.linalg.norm(L, axis=-1)
    lam = np.clip((n * L).sum(-1) / np.maximum(dist, 1e-9), 0, 1)
    shade = scene.ambient + scene.gain * lam / (0.4 + scene.falloff * dist ** 2)
    lit = ~np.isin(idx, list(scene.unlit))
    col = np.where(lit[:, None], col * shade[:, None], col)
    return t, col


def render(scene: Scene, world_from_camera: np.ndarray, K: np.ndarray, width: int, height: int):
    """(rgb uint8 [H,W,3], z-depth float32 [H,W]) of the scene seen by this camera (pixel centres)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d_cam = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0], (v + 0.5 - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    R, c = world_from_camera[:3, :3], world_from_camera[:3, 3]
    D = d_cam @ R.T  # z-component 1 in the camera, so t is the z-depth
    O = np.broadcast_to(c, D.shape)
    t, col = cast(scene, O, D)
    rgb = np.clip(np.round(col * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)
    depth = np.where(np.isfinite(t), t, 0).astype(np.float32).reshape(height, width)
    return rgb, depth


# ---------------------------------------------------------------------------------------------
# the scenes


def _room() -> Scene:
    wall = waves([0.78, 0.74, 0.66], 0.06, 3.0)
    prims = [
        Plane((-2, 0, 0), (1, 0, 0), stripes([0.78, 0.74, 0.66], [0.70, 0.66, 0.58], 0.8, 2)),
        Plane((2, 0, 0), (-1, 0, 0), stripes([0.78, 0.74, 0.66], [0.70, 0.66, 0.58], 0.8, 2)),
        Plane((0, -1.2, 0), (0, 1, 0), solid([0.93, 0.93, 0.92])),
        Plane((0, 1.3, 0), (0, -1, 0), checker([0.55, 0.38, 0.24], [0.66, 0.48, 0.31], 0.5)),
        Plane((0, 0, 5), (0, 0, -1), wall),
        Plane((0, 0, 4.99), (0, 0, -1), checker([0.85, 0.62, 0.25], [0.8, 0.5, 0.2], 0.2, (0, 1)),
              bounds=((-0.9, -0.7, 4.9), (0.5, -0.05, 5.1))),
        Box((-1.45, 0.45, 2.4), (-0.45, 1.3, 3.4), checker([0.75, 0.22, 0.18], [0.65, 0.18, 0.15], 0.25, (0, 1))),
        Sphere((0.85, 0.8, 3.0), 0.5, waves([0.20, 0.35, 0.75], 0.12, 9.0)),
        Cylinder(1.4, 2.2, 0.03, -0.6, 1.3, solid([0.15, 0.15, 0.15])),  # a floor lamp pole (thin)
        Sphere((1.4, -0.75, 2.2), 0.16, solid([0.95, 0.9, 0.7])),
    ]
    return Scene("room", prims, light=(0.0, -0.9, 2.2))


def _tabletop() -> Scene:
    # the photo looks 30 degrees down at a table top at y = 0.4 below the camera
    from vd.cameras import look_at

    pose = look_at((0.0, -0.45, -0.2), (0.0, 0.3, 0.9))
    wood = waves([0.62, 0.45, 0.30], 0.08, 14.0)
    prims = [
        Plane((0, 0.3, 0), (0, -1, 0), wood, bounds=((-0.8, 0.29, 0.2), (0.8, 0.31, 1.4))),
        Plane((0, 1.0, 0), (0, -1, 0), checker([0.35, 0.35, 0.38], [0.42, 0.42, 0.45], 0.3)),  # the floor
        Plane((0, 0, 2.2), (0, 0, -1), waves([0.70, 0.78, 0.72], 0.06, 5.0)),  # the wall behind
        Cylinder(-0.25, 0.75, 0.07, 0.12, 0.3, stripes([0.9, 0.9, 0.88], [0.2, 0.4, 0.7], 0.06, 1)),  # a mug
        Sphere((0.22, 0.22, 0.85), 0.08, checker([0.9, 0.3, 0.2], [0.95, 0.9, 0.3], 0.05, (0, 1))),  # a ball
        Box((0.0, 0.26, 0.45), (0.3, 0.3, 0.65), stripes([0.2, 0.5, 0.3], [0.85, 0.82, 0.7], 0.05, 0)),  # a book
        Box((-0.5, 0.29, 0.5), (-0.1, 0.3, 0.51), solid([0.95, 0.8, 0.1])),  # pencils (thin)
        Box((-0.45, 0.29, 0.56), (-0.12, 0.3, 0.57), solid([0.2, 0.3, 0.8])),
        Cylinder(-0.75, 1.35, 0.025, 0.3, 1.0, solid([0.3, 0.2, 0.15])),  # a table leg
        Cylinder(0.75, 1.35, 0.025, 0.3, 1.0, solid([0.3, 0.2, 0.15])),
    ]
    return Scene("tabletop", prims, light=(0.3, -0.6, 0.6), input_pose=pose)


def _street() -> Scene:
    sky = lambda P: np.clip(np.stack([0.55 + 0.0 * P[:, 1], 0.7 + 0.0 * P[:, 1], 0.9 - 0.3 * P[:, 1] / 400], -1), 0, 1)  # noqa: E731
    facade_l = windows([0.75, 0.62, 0.50], [0.25, 0.3, 0.4], 3.0, 1.6, (2, 1))
    facade_r = windows([0.6, 0.62, 0.66], [0.2, 0.25, 0.35], 2.5, 1.2, (2, 1))
    prims = [
        Sphere((0, 0, 0), 400.0, sky, inside=True),
        Plane((0, 1.5, 0), (0, -1, 0), checker([0.32, 0.32, 0.34], [0.36, 0.36, 0.38], 1.0)),  # the road
        Plane((-6, 0, 0), (1, 0, 0), facade_l, bounds=((-6.1, -14, 0), (-5.9, 1.5, 90))),
        Plane((6, 0, 0), (-1, 0, 0), facade_r, bounds=((5.9, -10, 0), (6.1, 1.5, 70))),
        Box((-3.2, 0.1, 7.0), (-1.4, 1.5, 11.5), checker([0.7, 0.1, 0.1], [0.6, 0.08, 0.08], 0.5, (1, 2))),  # cars
        Box((1.6, 0.2, 13.0), (3.4, 1.5, 17.5), checker([0.2, 0.3, 0.7], [0.15, 0.25, 0.6], 0.5, (1, 2))),
        Box((-3.0, 0.2, 24.0), (-1.2, 1.5, 28.5), solid([0.85, 0.85, 0.8])),
        Cylinder(4.5, 6.0, 0.06, -3.0, 1.5, solid([0.2, 0.22, 0.2])),  # poles (thin)
        Cylinder(4.5, 16.0, 0.06, -3.0, 1.5, solid([0.2, 0.22, 0.2])),
        Cylinder(-4.6, 20.0, 0.06, -3.0, 1.5, solid([0.2, 0.22, 0.2])),
    ]
    return Scene("street", prims, light=(20.0, -60.0, 30.0), ambient=0.55, gain=0.2, falloff=0.0,
                 unlit=(0,))


def _fence() -> Scene:
    prims = [
        Plane((0, 1.2, 0), (0, -1, 0), checker([0.35, 0.5, 0.25], [0.3, 0.45, 0.22], 0.4)),  # grass
        Plane((0, 0, 6.0), (0, 0, -1), stripes([0.7, 0.55, 0.45], [0.6, 0.45, 0.38], 0.5, 1)),  # a wall
        Box((-4, -0.2, 4.0), (4, 1.2, 4.6), waves([0.2, 0.45, 0.2], 0.1, 6.0)),  # a hedge
        Box((-3, 0.15, 2.0), (3, 0.22, 2.05), solid([0.92, 0.92, 0.9])),  # fence rails
        Box((-3, 0.85, 2.0), (3, 0.92, 2.05), solid([0.92, 0.92, 0.9])),
    ]
    for i in range(-12, 13):  # pickets 4 cm wide every 20 cm
        x = 0.2 * i
        prims.append(Box((x - 0.02, -0.1, 1.95), (x + 0.02, 1.2, 2.0), solid([0.95, 0.95, 0.93])))
    prims.append(Cylinder(1.6, 3.2, 0.12, -1.5, 1.2, stripes([0.4, 0.28, 0.18], [0.35, 0.24, 0.15], 0.15, 1)))  # a trunk
    return Scene("fence", prims, light=(-2.0, -3.0, 0.5), ambient=0.45)


SCENES = {"room": _room, "tabletop": _tabletop, "street": _street, "fence": _fence}


def make_scene(name: str, width: int = 128, height: int = 96) -> Scene:
    s = SCENES[name]()
    s.width, s.height = width, height
    return s
