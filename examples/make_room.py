"""Generate the offline example: a small procedural indoor RGB-D scene with exact geometry.

    python examples/make_room.py            # writes examples/room/{rgb.png, rgb.depth.npy, intrinsics.json}

A ray-cast room (floor, ceiling, three walls), a box and a sphere, seen by a pinhole camera at
the origin (OpenCV convention: x right, y down, z forward). `rgb.depth.npy` holds float32 z-depth
in metres and sits beside the image as a sidecar, so `vd depth examples/room/rgb.png` picks it up
with the `file` backend; `intrinsics.json` holds K. Deterministic: the same bytes every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOM = dict(x0=-2.0, x1=2.0, ceil=-1.2, floor=1.3, back=5.0)
BOX = (np.array([-1.45, 0.45, 2.4]), np.array([-0.45, 1.3, 3.4]))
SPHERE = (np.array([0.85, 0.8, 3.0]), 0.5)
LIGHT = np.array([0.0, -0.9, 2.2])


def render_room(width: int = 256, height: int = 192, fov_x_deg: float = 70.0):
    """Return (rgb uint8 [H,W,3], depth float32 [H,W], K [3,3], normals float32 [H,W,3])."""
    f = width / (2 * np.tan(np.radians(fov_x_deg) / 2))
    cx, cy = width / 2, height / 2  # pixel (u, v) covers [u, u+1): its centre is u + 0.5
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float64)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d = np.stack([(u + 0.5 - cx) / f, (v + 0.5 - cy) / f, np.ones_like(u)], -1)  # ray with z = 1, so t = z-depth

    t = np.full(u.shape, np.inf)
    n = np.zeros(u.shape + (3,))
    mat = np.zeros(u.shape, dtype=np.int32)

    def take(tc, normal, m):
        nonlocal t
        hit = (tc > 1e-6) & (tc < t)
        t = np.where(hit, tc, t)
        n[hit] = normal[hit] if normal.ndim == 3 else normal
        mat[hit] = m

    with np.errstate(divide="ignore", invalid="ignore"):
        # room planes (seen from inside): x walls, ceiling, floor, back wall
        take(ROOM["x0"] / d[..., 0], np.array([1.0, 0, 0]), 1)
        take(ROOM["x1"] / d[..., 0], np.array([-1.0, 0, 0]), 1)
        take(ROOM["ceil"] / d[..., 1], np.array([0, 1.0, 0]), 2)
        take(ROOM["floor"] / d[..., 1], np.array([0, -1.0, 0]), 3)
        take(ROOM["back"] / d[..., 2], np.array([0, 0, -1.0]), 4)
        # box: slab test
        lo, hi = BOX
        t0 = (lo - 0) / d
        t1 = (hi - 0) / d
        tmin = np.minimum(t0, t1)
        tmax = np.maximum(t0, t1)
        tn = tmin.max(-1)
        tf = tmax.min(-1)
        axis = tmin.argmax(-1)
        boxn = np.zeros(u.shape + (3,))
        sign = -np.sign(np.take_along_axis(d, axis[..., None], -1)[..., 0])
        np.put_along_axis(boxn, axis[..., None], sign[..., None], -1)
        take(np.where((tn <= tf) & (tn > 0), tn, np.inf), boxn, 5)
        # sphere
        c, r = SPHERE
        a = (d * d).sum(-1)
        b = -2 * (d @ c)
        cc = c @ c - r * r
        disc = b * b - 4 * a * cc
        ts = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
        p = d * ts[..., None]
        sn = (p - c) / r
        take(ts, sn, 6)

    P = d * t[..., None]
    rng = np.random.default_rng(0)
    base = np.zeros(u.shape + (3,))
    walls = mat == 1
    base[walls] = [0.78, 0.74, 0.66]
    stripes = walls & ((np.floor(P[..., 2] * 2.5) % 2) == 0)
    base[stripes] = [0.72, 0.68, 0.60]
    base[mat == 2] = [0.93, 0.93, 0.92]
    floor = mat == 3
    checker = (np.floor(P[..., 0] * 2) + np.floor(P[..., 2] * 2)) % 2 == 0
    base[floor & checker] = [0.55, 0.38, 0.24]
    base[floor & ~checker] = [0.66, 0.48, 0.31]
    back = mat == 4
    base[back] = [0.62, 0.72, 0.80]
    painting = back & (np.abs(P[..., 0] + 0.2) < 0.7) & (P[..., 1] > -0.7) & (P[..., 1] < -0.05)
    base[painting] = [0.85, 0.62, 0.25]
    frame_ = back & ~painting & (np.abs(P[..., 0] + 0.2) < 0.76) & (P[..., 1] > -0.76) & (P[..., 1] < 0.01)
    base[frame_] = [0.25, 0.18, 0.12]
    base[mat == 5] = [0.75, 0.22, 0.18]
    base[mat == 6] = [0.20, 0.35, 0.75]

    L = LIGHT - P
    dist = np.linalg.norm(L, axis=-1, keepdims=True)
    lam = np.clip((n * L / dist).sum(-1), 0, 1)
    shade = 0.35 + 0.75 * lam / (0.4 + 0.12 * dist[..., 0] ** 2)
    rgb = base * shade[..., None] + rng.normal(0, 0.012, base.shape)
    rgb8 = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return rgb8, t.astype(np.float32), K.astype(np.float32), n.astype(np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "room")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--fov", type=float, default=70.0, help="horizontal field of view in degrees")
    a = ap.parse_args(argv)
    from PIL import Image

    rgb, depth, K, _ = render_room(a.width, a.height, a.fov)
    a.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(a.out / "rgb.png", optimize=True)
    np.save(a.out / "rgb.depth.npy", depth)
    intr = {
        "K": K.round(4).tolist(),
        "width": a.width,
        "height": a.height,
        "fov_x_deg": a.fov,
        "convention": "OpenCV pinhole, pixel (u, v) centred at (u + 0.5, v + 0.5) as in gsplat; depth is z-depth in metres",
    }
    (a.out / "intrinsics.json").write_text(json.dumps(intr, indent=2) + "\n")
    for name in ("rgb.png", "rgb.depth.npy", "intrinsics.json"):
        print(a.out / name)


if __name__ == "__main__":
    main()
