#!/usr/bin/env python3
"""`vd export --format mesh` against exact geometry: bench/quality's synthetic scenes.

    flock /tmp/vd-bench.lock python -m bench.mesh [--scenes room tabletop street fence] [--png /tmp/mesh]

For each scene: the scaffold scene of `vd coarse --n-frames 2` (bench.quality.run's ``scaffold`` method, the
input view and ring of frames), then `vd export --format mesh` of its output folder (default flags and
`--faces 20000`, plus `--collider`). Scored at the input view and every move of bench/quality (12 moves
within 15 % of the median depth), beside the splats the mesh came from:

- F-score at 1 % of the median depth: the visible surface points of each view (the render's depth, back-
  projected) against the ray-cast ones; precision = share of predicted points within the threshold of a true
  one, recall the converse, F their harmonic mean (all views pooled);
- depth AbsRel on the pixels both the prediction and the ground truth cover; coverage; PSNR of the colour
  on the covered pixels.

The mesh is drawn by a point-sampling z-buffer (dense samples on its triangles, nearest depth per pixel, the
colour of the nearest vertex): enough at these sizes (128x96), not a general renderer.
Writes its section of bench/export.md (between the `section:mesh` markers) and bench/mesh.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
START, END = "<!-- section:mesh -->", "<!-- /section:mesh -->"


def render_mesh(verts, faces, colours, K, world_from_camera, width, height, samples_per_pixel=24):
    """(rgb [H,W,3] float, depth [H,W], covered [H,W]) of a mesh (vd's frame) by point sampling + z-buffer."""
    import trimesh

    m = trimesh.Trimesh(verts, faces, process=False)
    n = int(
        samples_per_pixel * width * height * max(1.0, m.area / _visible_area(m, K, world_from_camera, width, height))
    )
    n = min(n, 6_000_000)
    pts, fid = trimesh.sample.sample_surface(m, n, seed=0)
    R, t = world_from_camera[:3, :3], world_from_camera[:3, 3]
    pc = (pts - t) @ R
    z = pc[:, 2]
    ok = z > 1e-6
    u = np.floor(K[0, 0] * pc[ok, 0] / z[ok] + K[0, 2]).astype(np.int64)
    v = np.floor(K[1, 1] * pc[ok, 1] / z[ok] + K[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pix = (v * width + u)[inside]
    zz = z[ok][inside]
    depth = np.full(width * height, np.inf)
    np.minimum.at(depth, pix, zz)
    front = zz <= depth[pix] + 1e-9
    rgb = np.zeros((width * height, 3))
    if colours is not None:
        # the colour of the nearest vertex of the sampled face
        tri = faces[fid[ok][inside][front]]
        p = pts[ok][inside][front]
        d = np.stack([np.linalg.norm(verts[tri[:, j]] - p, axis=1) for j in range(3)], 1)
        rgb[pix[front]] = colours[tri[np.arange(len(tri)), d.argmin(1)]]
    covered = np.isfinite(depth)
    return (
        rgb.reshape(height, width, 3),
        np.where(covered, depth, 0).reshape(height, width),
        covered.reshape(height, width),
    )


def _visible_area(m, K, P, w, h) -> float:
    """Rough area of the mesh inside the view frustum (for the sample count)."""
    c = m.triangles_center
    pc = (c - P[:3, 3]) @ P[:3, :3]
    z = np.maximum(pc[:, 2], 1e-6)
    u, v = K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]
    inside = (pc[:, 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return max(float(m.area_faces[inside].sum()), 1e-9)


def back_project(depth, covered, K, P):
    v, u = np.nonzero(covered)
    z = depth[v, u]
    X = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
    return X @ P[:3, :3].T + P[:3, 3]


def fscore(pred: np.ndarray, true: np.ndarray, tau: float) -> tuple[float, float, float]:
    from scipy.spatial import cKDTree

    if len(pred) == 0 or len(true) == 0:
        return 0.0, 0.0, 0.0
    p = float((cKDTree(true).query(pred)[0] <= tau).mean())
    r = float((cKDTree(pred).query(true)[0] <= tau).mean())
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def score(kind: str, views, gts, tau: float) -> dict:
    """F-score (pooled points), mean AbsRel, coverage and PSNR over the moves (views[0] is the input view)."""
    pred_pts, true_pts, absrel, cov, psnr = [], [], [], [], []
    for (rgb, depth, covered), gt in zip(views, gts):
        truth = gt.depth > 0
        pred_pts.append(back_project(depth, covered, gt.K, gt.world_from_camera))
        true_pts.append(back_project(gt.depth, truth, gt.K, gt.world_from_camera))
        both = covered & truth
        if gt.name == "input":
            continue
        cov.append(float(covered.mean()))
        if both.any():
            absrel.append(float((np.abs(depth[both] - gt.depth[both]) / gt.depth[both]).mean()))
            mse = float(((rgb[both] - gt.rgb[both] / 255.0) ** 2).mean())
            psnr.append(10 * math.log10(1 / max(mse, 1e-12)))
    p, r, f = fscore(np.concatenate(pred_pts), np.concatenate(true_pts), tau)
    return {
        "kind": kind,
        "precision": p,
        "recall": r,
        "fscore": f,
        "absrel": float(np.mean(absrel)),
        "coverage": float(np.mean(cov)),
        "psnr": float(np.mean(psnr)),
    }


def splat_views(g, gts):
    import torch

    from vd.cameras import invert_pose
    from vd.render import render

    out = []
    with torch.no_grad():
        for gt in gts:
            H, W = gt.depth.shape
            res = render(
                g,
                torch.as_tensor(invert_pose(gt.world_from_camera), dtype=torch.float32),
                torch.as_tensor(gt.K, dtype=torch.float32),
                W,
                H,
                backend="torch",
            )
            a = res.alpha[0].numpy()
            out.append((res.rgb[0].clamp(0, 1).numpy(), res.depth[0].numpy(), a > 0.5))
    return out


def load_mesh(path: Path):
    """(vertices in vd's frame, faces, colours in [0,1] or None) of a written mesh (+Y up back to vd's axes)."""
    import trimesh

    m = trimesh.load(path, force="mesh", process=False)
    verts = np.asarray(m.vertices, np.float64) @ np.diag([1.0, -1.0, -1.0])
    vc = getattr(m.visual, "vertex_colors", None)
    colours = None if vc is None or len(vc) != len(verts) else np.asarray(vc, np.float64)[:, :3] / 255.0
    return verts, np.asarray(m.faces, np.int64), colours


def run_scene(name, work: Path, cache, png: Path | None) -> dict:
    from bench.quality.run import coarse_gaussians, write_input
    from bench.quality.scenes import make_scene
    from bench.quality.score import ground_truth
    from vd.export.source import resolve_source
    from vd.export.write import write_export

    scene = make_scene(name, 128, 96)
    gts = ground_truth(scene)
    median = float(np.median(gts[0].depth[gts[0].depth > 0]))
    tau = 0.01 * median
    image = write_input(gts[0], work / name)
    folder = work / name / "out"
    t = time.perf_counter()
    coarse_gaussians(image, "none", cache, n_frames=2, out=folder)
    splat_seconds = time.perf_counter() - t
    src = resolve_source(folder)
    g = src.gaussians()
    rows = [dict(score("splats", splat_views(g, gts), gts, tau), seconds=round(splat_seconds, 1), gaussians=len(g))]
    for label, kw, suffix in (
        ("mesh", {}, ".glb"),
        ("mesh --faces 20000", {"faces": 20000}, ".glb"),
        ("mesh --collider", {"collider": True}, ".glb"),
    ):
        out = work / name / f"{label.replace(' ', '_').replace('--', '')}{suffix}"
        t = time.perf_counter()
        rep = write_export(src, "mesh", out, force=True, **kw)
        dt = time.perf_counter() - t
        verts, faces, colours = load_mesh(out)
        views = [render_mesh(verts, faces, colours, gt.K, gt.world_from_camera, 128, 96) for gt in gts]
        rows.append(
            dict(
                score(label, views, gts, tau),
                seconds=round(dt, 1),
                faces=len(faces),
                bytes=rep["bytes"],
                watertight=rep["watertight"],
            )
        )
        if png is not None:
            from PIL import Image

            (png / name).mkdir(parents=True, exist_ok=True)
            for i in (0, 3):
                rgb = views[i][0] if colours is not None else np.repeat((views[i][2] * 0.8)[..., None], 3, -1)
                pair = np.concatenate([gts[i].rgb / 255.0, rgb], 1)
                Image.fromarray((pair * 255).astype(np.uint8)).save(
                    png / name / f"{label.split()[-1].strip('-')}_{gts[i].name}.png"
                )
    for r in rows:
        print(name, r, flush=True)
    return {"scene": name, "median_depth": median, "tau": tau, "rows": rows}


def table(results) -> list[str]:
    lines = [
        "| scene | what | F-score (P / R) | AbsRel | coverage | PSNR (dB) | faces | size | time (s) | watertight |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for res in results:
        for r in res["rows"]:
            size = f"{r['bytes'] / 1e6:.2f} MB" if r.get("bytes") else "-"
            lines.append(
                f"| {res['scene']} | {r['kind']} | {r['fscore']:.3f} ({r['precision']:.3f} / {r['recall']:.3f}) | "
                f"{r['absrel']:.4f} | {r['coverage']:.3f} | {r['psnr']:.2f} | "
                f"{r.get('faces', r.get('gaussians', '-'))} | "
                f"{size} | {r['seconds']} | {r.get('watertight', '-')} |"
            )
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", nargs="+", default=["room", "tabletop", "street", "fence"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/vd-mesh-bench"))
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument(
        "--machine", default=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "export.md")
    a = ap.parse_args()
    os.environ.setdefault("VD_CACHE_DIR", str(a.work / "cache"))
    from vd.cache import Cache

    cache = Cache.open(os.environ["VD_CACHE_DIR"], remote=None)
    results = [run_scene(s, a.work, cache, a.png) for s in a.scenes]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        "## Meshes: `vd export --format mesh` against exact geometry (`python -m bench.mesh`)",
        "",
        f"Machine: {a.machine}. Date: {now}. bench/quality's synthetic scenes at 128x96, the scaffold scene of",
        "`vd coarse --n-frames 2` (telea, CPU), then `vd export --format mesh` of its folder (TSDF of the splats'",
        "median depth over the scene's cameras and a 24-frame spiral, 256 voxels along the longest side, points",
        "beyond 3x a view's median depth left out; the splats' rows score their expected depth). Scores pooled over",
        "the 12 moves (F-score also",
        "over the input view): F-score at 1 % of the median depth of the visible surface points, depth AbsRel and",
        "PSNR on the pixels both cover. Mesh times include rendering the depth maps; the splats' time is",
            "the scaffold's (near 0 when cached). One run on a shared 2-core machine.",
        "",
        *table(results),
        "",
    ]
    text = a.out.read_text() if a.out.exists() else ""
    section = "\n".join([START, *body, END])
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.DOTALL)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    a.out.write_text(text)
    a.out.with_name("mesh.json").write_text(
        json.dumps({"machine": a.machine, "date": now, "results": results}, indent=2)
    )
    print("\n".join(body))


if __name__ == "__main__":
    main()
