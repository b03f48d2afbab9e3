"""Procedural scenes for the export/refine tests (not a test module)."""

from __future__ import annotations

import numpy as np

W, H = 64, 48
K = np.array([[60.0, 0, 32.0], [0, 60.0, 24.0], [0, 0, 1]])
PLANE = (0.25, 0.1, 2.0)  # z = a*x + b*y + c


def plane_gaussians(spacing=0.06, extent=1.4, seed=0):
    import torch

    from vd.gaussians import Gaussians

    a, b, c = PLANE
    xs = np.arange(-extent, extent + 1e-9, spacing)
    X, Y = np.meshgrid(xs, xs)
    Z = a * X + b * Y + c
    P = np.stack([X, Y, Z], -1).reshape(-1, 3)
    rgb = np.stack([0.5 + 0.4 * np.sin(4 * P[:, 0]), 0.5 + 0.4 * np.cos(5 * P[:, 1]), 0.5 + 0.3 * np.sin(3 * (P[:, 0] + P[:, 1]))], 1)
    g = Gaussians.from_rgb(torch.tensor(P, dtype=torch.float32), torch.tensor(rgb, dtype=torch.float32),
                           scales=spacing * 0.7, opacity=0.95)
    return g


def plane_depth(K, world_from_camera, w=W, h=H):
    """Exact z-depth of the plane seen from a camera."""
    a, b, c = PLANE
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres (gsplat/COLMAP)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, t = world_from_camera[:3, :3], world_from_camera[:3, 3]
    d_w = d_cam @ R.T
    n = np.array([a, b, -1.0])
    # (t + s d_w) . n + c = 0
    s = -(t @ n + c) / (d_w @ n)
    return s.astype(np.float32)  # z-depth = s, since d_cam has z = 1


def poses():
    out = []
    for tx, ty in [(0, 0), (0.15, 0.0), (-0.15, 0.05), (0.0, -0.1)]:
        P = np.eye(4)
        P[:3, 3] = (tx, ty, 0.0)
        out.append(P)
    return out


def make_views(g=None):
    """Views of the plane scene: RGB rendered from the true Gaussians, exact depth; each supervises and
    spawned its opaque pixels."""
    import torch

    from vd.render import render
    from vd.views import View

    g = g if g is not None else plane_gaussians()
    views = []
    for i, P in enumerate(poses()):
        out = render(g, torch.tensor(np.linalg.inv(P), dtype=torch.float32)[None], torch.tensor(K, dtype=torch.float32)[None], W, H)
        rgb = (out.rgb[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        depth = plane_depth(K, P)
        mask = out.alpha[0].numpy() > 0.9
        views.append(View(f"{i:03d}", "input" if i == 0 else "view", rgb, depth, K.copy(), P, supervise=mask, spawn=mask.copy(),
                          hole=np.zeros_like(mask)))
    return views


def noisy(g, sigma=0.06, seed=1):
    import torch

    from vd.gaussians import Gaussians

    rng = np.random.default_rng(seed)
    m = g.means.clone()
    m[:, 2] += torch.tensor(rng.normal(0, sigma, len(g)), dtype=torch.float32)
    return Gaussians(m, g.log_scales.clone(), g.quats.clone(), g.opacity_logits.clone(), g.sh.clone())


def write_vd_folder(folder, g=None, views=None):
    """A coarse output folder (coarse.ply, scaffold.ply, cameras.json, views/NNN/...) of the plane scene."""
    from pathlib import Path

    from vd.ply import write_ply
    from vd.views import write_views

    folder = Path(folder)
    g = g if g is not None else plane_gaussians()
    write_views(folder, views if views is not None else make_views(g))
    write_ply(folder / "coarse.ply", g)
    write_ply(folder / "scaffold.ply", g)
    return folder


def write_v1_folder(folder, views):
    """`views` in the coarse folder layout vd wrote before views format 2: no supervision masks,
    the spawn mask under "mask"."""
    import json
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    entries = []
    for i, v in enumerate(views):
        d = folder / "views" / f"{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(v.rgb).save(d / "rgb.png")
        np.save(d / "depth.npy", v.depth.astype(np.float32))
        Image.fromarray((v.spawn * 255).astype(np.uint8)).save(d / "spawn_mask.png")
        Image.fromarray((v.hole * 255).astype(np.uint8)).save(d / "hole_mask.png")
        entries.append({"name": v.name, "kind": v.kind, "width": v.width, "height": v.height,
                        "K": np.asarray(v.K, float).tolist(), "world_from_camera": v.world_from_camera.tolist(),
                        "rgb": f"views/{i:03d}/rgb.png", "depth": f"views/{i:03d}/depth.npy",
                        "mask": f"views/{i:03d}/spawn_mask.png", "hole_mask": f"views/{i:03d}/hole_mask.png",
                        "dense_index": v.dense_index})
    (folder / "cameras.json").write_text(json.dumps({"convention": "OpenCV camera (x right, y down, z forward); world = input camera",
                                                     "views": entries}))
    return folder
