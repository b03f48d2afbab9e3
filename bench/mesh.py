#!/usr/bin/env python3
"""`vd export --format mesh` against exact geometry: bench/quality's synthetic scenes.

    flock /tmp/vd-bench.lock python -m bench.mesh [--scenes room tabletop street fence] [--png /tmp/mesh]
                                                  [--canvas-depth completed exact] [--merge]

For each scene: the scaffold scene of `vd coarse --n-frames 2` (bench.quality.run's ``scaffold`` method, the
input view and ring of frames), then `vd export --format mesh` of its output folder (default flags and
`--faces 20000`, plus `--collider`). Scored at the input view and every move of bench/quality (12 moves
within 15 % of the median depth), beside the splats the mesh came from:

- F-score at 1 % of the median depth: the visible surface points of each view (the render's depth, back-
  projected) against the ray-cast ones; precision = share of predicted points within the threshold of a true
  one, recall the converse, F their harmonic mean (all views pooled);
- depth AbsRel on the pixels both the prediction and the ground truth cover; coverage; PSNR of the colour
  on the covered pixels.

`--canvas-depth` picks the depth the scaffold gets on its outpainted canvas: ``completed`` (default) is what
`vd coarse` does with the `file` depth backend the bench hands it (the input's exact depth, extended into the
outpainted ring by `vd.align.complete_depth`: the ring's walls stand at the depth of the input's border);
``exact`` gives it the scene's exact depth over the whole canvas, ray-cast with the canvas camera (`CanvasDepth`:
a perfect depth model on the canvas, as MoGe is on a GPU), so that the mesh step is measured apart from the
ring's guessed depth. Both may be given; their rows are labelled by scene and mode.

The mesh is drawn by a small rasteriser (z-buffer at the pixel centres, depth and vertex colours interpolated
perspective-correctly), as the splats and the ground truth are sampled at the pixel centres.
Writes its section of bench/export.md (between the `section:mesh` markers) and bench/mesh.json; with `--merge`
the scenes of an earlier bench/mesh.json that this run did not measure are kept (a second mode run apart).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.sections import write_section  # noqa: E402

START, END = "<!-- section:mesh -->", "<!-- /section:mesh -->"


def render_mesh(verts, faces, colours, K, world_from_camera, width, height, big: int = 64):
    """(rgb [H,W,3] float, depth [H,W], covered [H,W]) of a mesh (vd's frame) rasterised at the pixel centres:
    z-buffer, the depth and vertex colours interpolated perspective-correctly (1/z is affine on the screen), as a
    glTF viewer draws it. Triangles with a corner behind 1 mm from the camera are left out (the moves stay inside
    the scenes). A point-sampled z-buffer (the nearest sample within each pixel) would draw a surface seen at a
    grazing angle (a road, a facade down a street) nearer than at the pixel's centre, by up to half the depth
    a pixel spans there."""
    R, t = world_from_camera[:3, :3], world_from_camera[:3, 3]
    pc = (np.asarray(verts, np.float64) - t) @ R
    z = pc[:, 2]
    zs = np.where(z > 1e-3, z, 1.0)
    x, y = K[0, 0] * pc[:, 0] / zs + K[0, 2], K[1, 1] * pc[:, 1] / zs + K[1, 2]
    tri = np.asarray(faces)[(z[faces] > 1e-3).all(1)]
    xt, yt = x[tri], y[tri]
    # pixel (i, j) has its centre at (i + 0.5, j + 0.5): the centres inside each triangle's bounding box
    i0 = np.maximum(np.ceil(xt.min(1) - 0.5), 0).astype(np.int64)
    i1 = np.minimum(np.floor(xt.max(1) - 0.5), width - 1).astype(np.int64)
    j0 = np.maximum(np.ceil(yt.min(1) - 0.5), 0).astype(np.int64)
    j1 = np.minimum(np.floor(yt.max(1) - 0.5), height - 1).astype(np.int64)
    area = (xt[:, 1] - xt[:, 0]) * (yt[:, 2] - yt[:, 0]) - (xt[:, 2] - xt[:, 0]) * (yt[:, 1] - yt[:, 0])
    keep = (i1 >= i0) & (j1 >= j0) & (np.abs(area) > 1e-12)
    tri, xt, yt, i0, i1, j0, j1, area = (a[keep] for a in (tri, xt, yt, i0, i1, j0, j1, area))
    bw, bh = i1 - i0 + 1, j1 - j0 + 1
    cand = []  # (pixel, depth, triangle index, barycentric weights) of every pixel centre inside a triangle

    def test(sel, pi, pj):
        px, py = pi + 0.5, pj + 0.5
        X, Y = xt[sel], yt[sel]
        w0 = ((X[:, 1] - px) * (Y[:, 2] - py) - (X[:, 2] - px) * (Y[:, 1] - py)) / area[sel]
        w1 = ((X[:, 2] - px) * (Y[:, 0] - py) - (X[:, 0] - px) * (Y[:, 2] - py)) / area[sel]
        w = np.stack([w0, w1, 1 - w0 - w1], 1)
        inside = (w >= -1e-9).all(1)
        w, sel, pi, pj = w[inside], sel[inside], pi[inside], pj[inside]
        inv = (w / z[tri[sel]]).sum(1)
        cand.append((pj * width + pi, 1.0 / inv, sel, w / z[tri[sel]] / inv[:, None]))

    small = np.nonzero((bw <= big) & (bh <= big))[0]
    for dj in range(int(bh[small].max(initial=0))):
        for di in range(int(bw[small].max(initial=0))):
            sel = small[(bw[small] > di) & (bh[small] > dj)]
            if len(sel):
                test(sel, i0[sel] + di, j0[sel] + dj)
    for k in np.nonzero((bw > big) | (bh > big))[0]:
        jj, ii = np.mgrid[j0[k] : j1[k] + 1, i0[k] : i1[k] + 1]
        test(np.full(ii.size, k), ii.ravel(), jj.ravel())
    depth = np.zeros(width * height)
    rgb = np.zeros((width * height, 3))
    covered = np.zeros(width * height, bool)
    if cand:
        pix, zz, sel, w = (np.concatenate(c) for c in zip(*cand))
        order = np.lexsort((zz, pix))
        first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
        p = pix[first]
        depth[p], covered[p] = zz[first], True
        if colours is not None:
            rgb[p] = (w[first][:, :, None] * np.asarray(colours)[tri[sel[first]]]).sum(1)
    return rgb.reshape(height, width, 3), depth.reshape(height, width), covered.reshape(height, width)


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


REGIONS = ("sky", "far", "edge", "outside", "disoccluded", "rest")
REGION_NOTES = {
    "sky": "on a sky dome (street's, 400 m)",
    "far": "beyond 3x the input view's median depth (not sky)",
    "edge": "within a pixel of a depth edge (a jump of the inverse depth's second difference > 2 %)",
    "outside": "outside the input view's frustum (the outpainted ring, invented)",
    "disoccluded": "in the input frustum, hidden in the input view (invented)",
    "rest": "what the input view sees",
}


def pixel_regions(gt, scene, median: float) -> np.ndarray:
    """A label (index into REGIONS) per pixel of a ground-truth view, by the true surface there; -1: no surface."""
    from bench.quality.scenes import Sphere

    H, W = gt.depth.shape
    has = gt.depth > 0
    label = np.full((H, W), REGIONS.index("rest"))
    X = back_project(gt.depth, np.ones((H, W), bool), gt.K, gt.world_from_camera).reshape(H, W, 3)
    # seen: gt.seen; outside: the point projects outside the input view (identity pose, same K)
    z = np.where(X[..., 2] > 1e-9, X[..., 2], 1e-9)
    pu, pv = gt.K[0, 0] * X[..., 0] / z + gt.K[0, 2], gt.K[1, 1] * X[..., 1] / z + gt.K[1, 2]
    inside = (X[..., 2] > 1e-9) & (pu >= 0) & (pu < W) & (pv >= 0) & (pv < H)
    seen = gt.seen if gt.seen is not None else has
    label[~seen & inside] = REGIONS.index("disoccluded")
    label[~seen & ~inside] = REGIONS.index("outside")
    inv = np.where(has, 1.0 / np.maximum(gt.depth, 1e-9), 0.0)
    jump = np.zeros((H, W), bool)
    for axis in (0, 1):
        d2 = np.abs(np.roll(inv, 1, axis) + np.roll(inv, -1, axis) - 2 * inv)
        j = d2 > 0.02 * inv
        if axis == 0:
            j[[0, -1], :] = False
        else:
            j[:, [0, -1]] = False
        jump |= j
    from scipy.ndimage import binary_dilation

    label[binary_dilation(jump)] = REGIONS.index("edge")
    label[gt.depth > 3 * median] = REGIONS.index("far")
    Xs = X @ scene.input_pose[:3, :3].T + scene.input_pose[:3, 3]
    for p in scene.prims:
        if isinstance(p, Sphere) and p.inside:
            r = np.linalg.norm(Xs - np.asarray(p.center, float), axis=-1)
            label[np.abs(r - p.radius) < 0.005 * p.radius] = REGIONS.index("sky")
    label[~has] = -1
    return label


def region_split(views, gts, labels, tau: float) -> dict:
    """Per region (the true surface at the pixel): shares of the predicted points and their precision, of the
    true points and their recall, and the F-score with that region left out of both sides."""
    from scipy.spatial import cKDTree

    pred, true, lp, lt = [], [], [], []
    for (_, depth, covered), gt, lab in zip(views, gts, labels):
        pred.append(back_project(depth, covered, gt.K, gt.world_from_camera))
        lp.append(lab[covered])
        truth = gt.depth > 0
        true.append(back_project(gt.depth, truth, gt.K, gt.world_from_camera))
        lt.append(lab[truth])
    pred, true, lp, lt = map(np.concatenate, (pred, true, lp, lt))
    ok_p = cKDTree(true).query(pred)[0] <= tau if len(pred) else np.zeros(0, bool)
    ok_t = cKDTree(pred).query(true)[0] <= tau if len(pred) else np.zeros(len(true), bool)
    out = {}
    for i, name in enumerate(REGIONS):
        mp, mt = lp == i, lt == i
        p_rest = float(ok_p[~mp].mean()) if (~mp).any() else 0.0
        r_rest = float(ok_t[~mt].mean()) if (~mt).any() else 0.0
        out[name] = {
            "pred_share": float(mp.mean()) if len(mp) else 0.0,
            "precision": float(ok_p[mp].mean()) if mp.any() else None,
            "true_share": float(mt.mean()),
            "recall": float(ok_t[mt].mean()) if mt.any() else None,
            "fscore_without": 2 * p_rest * r_rest / (p_rest + r_rest) if p_rest + r_rest > 0 else 0.0,
        }
    return out


def splat_views(g, gts, depth_mode: str = "expected"):
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
                depth_mode=depth_mode,
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


CANVAS_DEPTHS = ("completed", "exact")
SCENES = ("room", "tabletop", "street", "fence")


def canvas_depth_backend(scene, image_path: Path):
    """The `file` depth backend of the bench's input (the input view's exact depth), which, given the outpainted
    canvas, returns the scene's exact depth over all of it, ray-cast with the canvas camera: the scaffold takes
    a backend that estimates novel views to be a depth model run on the canvas (`vd.stages.scaffold.canvas_depth`)
    and uses the crop of its estimate for the input, which here is the input's own exact depth again."""
    from bench.quality.scenes import render as cast_view
    from vd.models.depth import DepthResult, check_rgb
    from vd.models.depth_file import FileDepth

    class CanvasDepth(FileDepth):
        estimates_novel_views = True

        def __init__(self):
            super().__init__(image_path=image_path)
            self.identity += ":exact-canvas-depth"

        def estimate(self, rgb, K_hint=None, *, plan=None) -> DepthResult:
            H, W = check_rgb(rgb).shape[:2]
            if (W, H) == (scene.width, scene.height):
                return super().estimate(rgb, K_hint, plan=plan)
            px, py = (W - scene.width) // 2, (H - scene.height) // 2  # vd pads the canvas symmetrically
            if (2 * px + scene.width, 2 * py + scene.height) != (W, H):
                raise ValueError(f"not a canvas of the {scene.width}x{scene.height} input: {W}x{H}")
            K = scene.K().copy()
            K[0, 2] += px
            K[1, 2] += py
            _, depth = cast_view(scene, scene.input_pose, K, W, H)
            return DepthResult(depth=depth.astype(np.float32), K=K.astype(np.float32), valid=depth > 0)

    return CanvasDepth()


def scaffold_folder(scene, image: Path, cache, folder: Path, canvas: str) -> None:
    """bench.quality.run's ``scaffold`` method (`vd coarse --n-frames 2`, telea, CPU) written to `folder`, with
    the canvas depth of `canvas` (CANVAS_DEPTHS)."""
    from unittest import mock

    from bench.quality.run import coarse_gaussians

    if canvas == "completed":
        coarse_gaussians(image, "none", cache, n_frames=2, out=folder)
        return
    backend = canvas_depth_backend(scene, image)
    with mock.patch("vd.stages.coarse.get_depth_backend", lambda *a, **kw: backend):
        coarse_gaussians(image, "none", cache, n_frames=2, out=folder)


def run_scene(name, work: Path, cache, png: Path | None, quick: bool = False, canvas: str = "completed") -> dict:
    from bench.quality.run import write_input
    from bench.quality.scenes import make_scene
    from bench.quality.score import ground_truth
    from vd.export.source import resolve_source
    from vd.export.write import write_export

    scene = make_scene(name, 128, 96)
    gts = ground_truth(scene)
    median = float(np.median(gts[0].depth[gts[0].depth > 0]))
    tau = 0.01 * median
    scene_label = name if canvas == "completed" else f"{name} ({canvas} canvas depth)"
    base = work / (name if canvas == "completed" else f"{name}-{canvas}")
    image = write_input(gts[0], base)
    folder = base / "out"
    t = time.perf_counter()
    scaffold_folder(scene, image, cache, folder, canvas)
    splat_seconds = time.perf_counter() - t
    src = resolve_source(folder)
    g = src.gaussians()
    labels = [pixel_regions(gt, scene, median) for gt in gts]
    rows = []
    for kind, mode in (("splats", "expected"), ("splats (median depth)", "median")):
        sv = splat_views(g, gts, mode)
        rows.append(
            dict(
                score(kind, sv, gts, tau),
                seconds=round(splat_seconds, 1),
                gaussians=len(g),
                regions=region_split(sv, gts, labels, tau),
            )
        )
    for label, kw, suffix in (
        ("mesh", {}, ".glb"),
        ("mesh --faces 20000", {"faces": 20000}, ".glb"),
        ("mesh --collider", {"collider": True}, ".glb"),
    )[: 1 if quick else 3]:
        out = base / f"{label.replace(' ', '_').replace('--', '')}{suffix}"
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
                regions=region_split(views, gts, labels, tau),
            )
        )
        if png is not None:
            from PIL import Image

            (png / base.name).mkdir(parents=True, exist_ok=True)
            for i in (0, 3):
                rgb = views[i][0] if colours is not None else np.repeat((views[i][2] * 0.8)[..., None], 3, -1)
                pair = np.concatenate([gts[i].rgb / 255.0, rgb], 1)
                Image.fromarray((pair * 255).astype(np.uint8)).save(
                    png / base.name / f"{label.split()[-1].strip('-')}_{gts[i].name}.png"
                )
    for r in rows:
        print(scene_label, r, flush=True)
    return {"scene": scene_label, "canvas_depth": canvas, "median_depth": median, "tau": tau, "rows": rows}


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


def region_table(results) -> list[str]:
    """Where the misses are: per scene, kind and region, precision and recall there (shares of the points) and
    the F-score with the region left out."""
    lines = [
        "| scene | what | " + " | ".join(REGIONS) + " |",
        "|---|---|" + "---:|" * len(REGIONS),
    ]
    for res in results:
        for r in res["rows"]:
            if "regions" not in r or "collider" in r["kind"]:
                continue
            cells = []
            for name in REGIONS:
                x = r["regions"][name]
                if x["true_share"] == 0 and x["pred_share"] == 0:
                    cells.append("-")
                    continue
                p = "-" if x["precision"] is None else f"{x['precision']:.2f}"
                rc = "-" if x["recall"] is None else f"{x['recall']:.2f}"
                cells.append(f"{p} / {rc} ({x['true_share']:.2f}) {x['fscore_without']:.3f}")
            lines.append(f"| {res['scene']} | {r['kind']} | " + " | ".join(cells) + " |")
    return lines


def section(machine: str, date: str, results) -> list[str]:
    """The lines of bench/export.md's mesh section."""
    return [
        "## Meshes: `vd export --format mesh` against exact geometry (`python -m bench.mesh`)",
        "",
        f"Machine: {machine}. Date: {date}. bench/quality's synthetic scenes at 128x96, the scaffold scene of",
        "`vd coarse --n-frames 2` (telea, CPU; the `file` depth backend with the input's exact depth, which",
        "`vd.align.complete_depth` extends into the outpainted ring, or, in the rows marked *exact canvas depth*, the",
        "scene's exact depth over the whole canvas, as a perfect depth model run on the canvas would give it:",
        "`--canvas-depth exact`), then `vd export --format mesh` of its folder (TSDF of the splats'",
        "median depth over the scene's cameras and a 24-frame spiral, 256 voxels along the longest side of a grid",
        "over what the scene's own views see up to 3x their median depth, the spiral fused inside it; what lies",
        "beyond it triangulated from the widest view's depth map). Rows: the splats scored with their expected",
        "depth (vd's default render) and their median depth",
        "(the one the mesh fuses), then the mesh, drawn by a rasteriser at the pixel centres. Scores pooled over the",
        "12 moves (F-score also over the input view): F-score at 1 % of the median depth of the visible surface",
        "points, depth AbsRel and PSNR on the pixels both cover. Mesh times include rendering the depth maps; the",
        "splats' time is the scaffold's (near 0 when cached). One run on a shared 2-core machine.",
        "",
        *table(results),
        "",
        "Where the misses are (bench.mesh's `region_split`): per region of the true surface at each pixel, precision",
        "/ recall of the points there (the region's share of the true points) and the F-score with the region left",
        "out of both sides. Regions: " + "; ".join(f"{k}: {v}" for k, v in REGION_NOTES.items()) + ".",
        "",
        *region_table(results),
        "",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", nargs="+", default=list(SCENES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/vd-mesh-bench"))
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument(
        "--machine", default=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "export.md")
    ap.add_argument("--quick", action="store_true", help="the default mesh only (no --faces, no --collider)")
    ap.add_argument("--rewrite", action="store_true", help="rewrite the section from mesh.json (no runs)")
    ap.add_argument(
        "--canvas-depth",
        nargs="+",
        choices=CANVAS_DEPTHS,
        default=["completed"],
        help="the scaffold's depth on the outpainted canvas: the input's, completed into the ring by "
        "vd.align.complete_depth (vd with the file backend), and/or the scene's exact depth over the whole canvas",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of bench/mesh.json's scenes and modes this run does not measure",
    )
    a = ap.parse_args()
    if a.rewrite:
        saved = json.loads(a.out.with_name("mesh.json").read_text())
        write_section(a.out, section(saved["machine"], saved["date"], saved["results"]), START, END)
        return
    os.environ.setdefault("VD_CACHE_DIR", str(a.work / "cache"))
    from vd.cache import Cache

    cache = Cache.open(os.environ["VD_CACHE_DIR"], remote=None)
    results = [run_scene(s, a.work, cache, a.png, a.quick, c) for c in a.canvas_depth for s in a.scenes]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for r in results:
        r["date"] = now
    saved = a.out.with_name("mesh.json")
    if a.merge and saved.exists():
        old = json.loads(saved.read_text())
        done = {r["scene"] for r in results}
        kept = [dict(r, date=r.get("date", old["date"])) for r in old["results"] if r["scene"] not in done]
        results = sorted(
            kept + results,
            key=lambda r: (
                r.get("canvas_depth", "completed") != "completed",
                SCENES.index(r["scene"].split()[0]) if r["scene"].split()[0] in SCENES else len(SCENES),
            ),
        )
        dates = sorted({r["date"] for r in results})
        now = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    body = section(a.machine, now, results)
    write_section(a.out, body, START, END)
    a.out.with_name("mesh.json").write_text(
        json.dumps({"machine": a.machine, "date": now, "results": results}, indent=2)
    )
    print("\n".join(body))


if __name__ == "__main__":
    main()
