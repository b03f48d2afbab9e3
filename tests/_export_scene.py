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
    """ViewData for the plane scene: RGB rendered from the true Gaussians, exact depth."""
    import torch

    from vd.export.colmap import ViewData
    from vd.render import render

    g = g if g is not None else plane_gaussians()
    views = []
    for i, P in enumerate(poses()):
        out = render(g, torch.tensor(np.linalg.inv(P), dtype=torch.float32)[None], torch.tensor(K, dtype=torch.float32)[None], W, H)
        rgb = (out.rgb[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        depth = plane_depth(K, P)
        mask = out.alpha[0].numpy() > 0.9
        views.append(ViewData(f"{i:03d}", rgb, depth, K.copy(), P, mask, "input" if i == 0 else "view"))
    return views


def noisy(g, sigma=0.06, seed=1):
    import torch

    from vd.gaussians import Gaussians

    rng = np.random.default_rng(seed)
    m = g.means.clone()
    m[:, 2] += torch.tensor(rng.normal(0, sigma, len(g)), dtype=torch.float32)
    return Gaussians(m, g.log_scales.clone(), g.quats.clone(), g.opacity_logits.clone(), g.sh.clone())


def write_vd_folder(folder, g=None, views=None):
    """A coarse-style output folder (coarse.ply, cameras.json, views/NNN/...) of the plane scene."""
    import json
    from pathlib import Path

    from PIL import Image

    from vd.ply import write_ply

    folder = Path(folder)
    g = g if g is not None else plane_gaussians()
    views = views if views is not None else make_views(g)
    entries = []
    for i, v in enumerate(views):
        d = folder / "views" / f"{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(v.rgb).save(d / "rgb.png")
        np.save(d / "depth.npy", v.depth.astype(np.float32))
        Image.fromarray((v.mask * 255).astype(np.uint8)).save(d / "spawn_mask.png")
        Image.fromarray(np.zeros(v.depth.shape, np.uint8)).save(d / "hole_mask.png")
        entries.append({"name": v.name, "kind": v.kind, "width": int(v.rgb.shape[1]), "height": int(v.rgb.shape[0]),
                        "K": v.K.tolist(), "world_from_camera": v.world_from_camera.tolist(),
                        "rgb": f"views/{i:03d}/rgb.png", "depth": f"views/{i:03d}/depth.npy",
                        "mask": f"views/{i:03d}/spawn_mask.png", "hole_mask": f"views/{i:03d}/hole_mask.png",
                        "dense_index": None})
    (folder / "cameras.json").write_text(json.dumps({"convention": "OpenCV camera (x right, y down, z forward); world = input camera", "views": entries}))
    write_ply(folder / "coarse.ply", g)
    write_ply(folder / "scaffold.ply", g)
    return folder
