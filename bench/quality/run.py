"""The quality evaluation: synthetic scenes with exact depth, vd's stages, scores at a dozen moves.

    python -m bench.quality.run                       # every scene, every method -> bench/quality-results.json
    python -m bench.quality.run --scenes room --methods lift scaffold --png /tmp/q
    python -m bench.quality.run --scenes aloe --methods lift scaffold closest     # a real stereo pair
    python -m bench.quality.run --scenes street --depth-errors                     # model-like input depth
    python -m bench.quality.run --scenes room --methods closest --param reach=9     # a vd coarse parameter
    python -m bench.quality.run --scenes aloe --methods refine --refine hold_anchored=false   # a vd refine one
    python -m bench.quality.run --scenes aloe --methods fine --fine lr_means=0               # a vd fine one

For each scene (`bench.quality.scenes`), the photo and its exact depth are written as a `file`
backend input (rgb.png, rgb.depth.npy, intrinsics.json); each method builds Gaussians from it:

- ``lift``: no optimisation, one Gaussian per pixel at the given depth (`vd.lift.gaussians_from_rgbd`);
- ``scaffold``: the scaffold of `vd coarse` (outpaint with telea, optimisation);
- ``coarse``: `vd coarse` with default flags; ``closest``: with ``--fallback closest``;
- ``fine``: `vd fine --inpaint-backend telea --allow-classical` on the ``closest`` scene, cut down
  for the CPU (FINE below: 4 views, 3 steps, 30 iterations per fit; defaults 8 / 9 / 192);
- ``refine``: `vd export --format colmap` of the ``closest`` scene, then `vd refine` of that dataset
  initialised from its coarse.ply, cut down for the CPU (REFINE below: 100 iterations; default 300).

Real photographs (`bench.quality.real`, e.g. ``aloe``: Debian's opencv-doc package) are scored at
the input view and at the second photo of the pair (colour and seen depth), and by coverage and
alpha alone at every move (no photo there). ``--depth-errors`` hands vd the synthetic scenes'
depth with model-like errors (`bench.quality.depth_errors`), scored against the exact geometry.

Each is scored at the input view and every move (`bench.quality.score`); timings are wall-clock
seconds of the method (the coarse runs share the scaffold through the cache, so ``coarse`` and
``closest`` time their own views only when run after ``scaffold``). Renders go to --png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.quality import moves as mv
from bench.quality.depth_errors import model_like_depth
from bench.quality.real import PAIRS, load_pair, missing_message
from bench.quality.scenes import SCENES, make_scene
from bench.quality.score import (
    GroundTruth,
    ground_truth,
    render_view,
    score_view,
    summarise,
)

METHODS = ("lift", "scaffold", "coarse", "closest", "fine", "refine")
FINE = {"views": 4, "steps": 3, "gs_iters": 30}
REFINE = {"iters": 100}
ROOT = Path(__file__).resolve().parents[2]


def write_input(gt, folder: Path, depth: np.ndarray | None = None) -> Path:
    """The input view as a `file` depth backend input (its depth, or `depth`); returns the image path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gt.rgb).save(folder / "rgb.png")
    np.save(folder / "rgb.depth.npy", gt.depth if depth is None else depth)
    H, W = gt.depth.shape
    (folder / "intrinsics.json").write_text(json.dumps({"K": np.asarray(gt.K).tolist(), "width": W, "height": H}))
    return folder / "rgb.png"


INPAINT = {"backend": "telea"}  # the bench's CPU inpainter (--inpaint)


def coarse_gaussians(image: Path, fallback: str, cache, n_frames: int | None = None, out: Path | None = None,
                     **params):
    """(scaffold Gaussians, coarse Gaussians, summary) of `vd coarse` on the image, offline on CPU."""
    from vd.params import CoarseParams
    from vd.stages.coarse import run_coarse

    p = CoarseParams(fallback=fallback, **({"n_frames": n_frames} if n_frames else {}), **params)
    res = run_coarse(image, p, depth_backend="file", inpaint_backend=INPAINT["backend"], render_backend="torch",
                     device="cpu",
                     cache=cache, out=out)
    return res.scaffold, res.gaussians, res.summary


def fine_gaussians(coarse_dir: Path, cache):
    """The Gaussians of `vd fine --allow-classical` (telea stand-in for the diffusion model) on a coarse folder."""
    from vd.params import FineParams
    from vd.ply import read_ply
    from vd.stages.denoisers import ClassicalDenoiser
    from vd.stages.fine import run_fine

    res = run_fine(coarse_dir, coarse_dir / "fine", FineParams(**FINE, render_backend="torch"),
                   denoiser_factory=lambda: ClassicalDenoiser("cpu"), device="cpu", cache=cache)
    return read_ply(res.ply)[0]


def refine_gaussians(coarse_dir: Path, **params):
    """The Gaussians of `vd refine` (REFINE, then `params`) on the `vd export --format colmap` dataset of a coarse
    folder, from its coarse.ply (memoised in the cache of $VD_CACHE_DIR: `refine` takes no cache argument)."""
    from vd.export.source import resolve_source
    from vd.export.write import write_export
    from vd.ply import read_ply
    from vd.stages.refine import refine

    # stage="coarse": after ``fine`` the folder also holds fine/fine.ply, which export would pick by default
    src = resolve_source(coarse_dir, "coarse")
    dataset = coarse_dir.parent / "refine-dataset"
    write_export(src, "colmap", dataset, force=True)
    res = refine(dataset, coarse_dir / "coarse.ply", coarse_dir.parent / "refine", device="cpu",
                 **{**REFINE, **params})
    return read_ply(res.ply)[0]


def lift_gaussians(gt):
    from vd.lift import gaussians_from_rgbd

    return gaussians_from_rgbd(gt.rgb, gt.depth, gt.K.astype(np.float32))


def coverage_only_moves(gt: GroundTruth) -> list[GroundTruth]:
    """The evaluation's moves around a real photo's input view, with no colour or depth to score:
    coverage and alpha only."""
    H, W = gt.depth.shape
    none = np.zeros((H, W), bool)
    median = float(np.median(gt.depth[gt.depth > 0]))
    return [GroundTruth(n, np.zeros_like(gt.rgb), np.zeros((H, W), np.float32), gt.K, pose, None, none)
            for n, pose in mv.moves(median)]


def scene_views(name: str, width: int, height: int, depth_errors: bool, real_width: int):
    """(ground truths, the depth vd is given, facts) of a synthetic scene or a real pair; None if absent."""
    if name in PAIRS:
        loaded = load_pair(name, real_width)
        if loaded is None:
            return None
        gts, facts = loaded
        return gts + coverage_only_moves(gts[0]), gts[0].depth, facts
    gts = ground_truth(make_scene(name, width, height))
    return gts, (model_like_depth(gts[0].depth) if depth_errors else gts[0].depth), {}


def run_scene(name: str, methods, work: Path, cache, *, width: int, height: int, n_frames=None, png: Path | None = None,
              params: dict | None = None, depth_errors: bool = False, real_width: int = 160) -> dict | None:
    views = scene_views(name, width, height, depth_errors, real_width)
    if views is None:
        print(missing_message(PAIRS[name]), flush=True)
        return None
    gts, given_depth, facts = views
    label = name + (" (depth errors)" if depth_errors and name not in PAIRS else "")
    folder = work / (name + ("-err" if label != name else ""))
    image = write_input(gts[0], folder, given_depth)
    H, W = gts[0].depth.shape
    out = {"scene": label, "size": [W, H], "median_depth": float(np.median(gts[0].depth[gts[0].depth > 0])),
           "inpaint": INPAINT["backend"], "methods": {}, **({"facts": facts} if facts else {})}
    built = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "lift":
            g = lift_gaussians(GroundTruth("input", gts[0].rgb, given_depth, gts[0].K, np.eye(4)))
        elif m == "scaffold":
            g, _, _ = coarse_gaussians(image, "none", cache, n_frames=2, **(params or {}))
        elif m in ("fine", "refine"):
            closest = folder / "closest"
            coarse_gaussians(image, "closest", cache, n_frames=n_frames, out=closest, **(params or {}))
            g = fine_gaussians(closest, cache) if m == "fine" else refine_gaussians(closest)
        else:
            _, g, summ = coarse_gaussians(image, "closest" if m == "closest" else "none", cache, n_frames=n_frames,
                                          **(params or {}))
            out.setdefault("views_added", {})[m] = summ["selected"]
        seconds = time.perf_counter() - t0
        rows = [score_view(g, gt) for gt in gts]
        out["methods"][m] = {"seconds": seconds, "gaussians": len(g), "summary": summarise(rows), "views": rows}
        built[m] = g
        if png is not None:
            save_pngs(png / folder.name, m, g, gts, worst=min(rows[1:], key=lambda r: r["coverage"])["view"])
    return out


def save_pngs(folder: Path, method: str, g, gts, worst: str | None = None) -> None:
    """The renders of a method at the input view, a few moves and the `worst` covered one, beside the ground
    truth (and the alpha)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for gt in gts[:1] + [x for x in gts if x.name in ("back", "right", "back-right-yaw", "right-photo", "forward", worst)]:
        alpha = np.repeat(render_view(g, gt, alpha=True)[..., None], 3, -1)
        pair = np.concatenate([gt.rgb, render_view(g, gt), alpha], axis=1)
        Image.fromarray(pair).save(folder / f"{method}-{gt.name}.png")


def table(results: list[dict]) -> str:
    """A markdown table: one row per scene and method."""
    head = ("| scene | method | s | Gaussians | input cov | input PSNR | novel cov (mean / worst) | novel PSNR | "
            "novel SSIM | novel AbsRel (all / seen) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in results:
        for m, v in r["methods"].items():
            s = v["summary"]
            lines.append(f"| {r['scene']} | {m} | {v['seconds']:.1f} | {v['gaussians']} | {s['input_coverage']:.4f} | "
                         f"{s['input_psnr']:.2f} | {s['novel_coverage']:.3f} / {s['novel_coverage_worst']:.3f} | "
                         f"{s['novel_psnr']:.2f} | {s['novel_ssim']:.3f} | {s['novel_absrel']:.4f} / "
                         f"{s.get('novel_absrel_seen', float('nan')):.4f} |")
    return "\n".join(lines)


def table_detail(results: list[dict]) -> str:
    """A markdown table of the issue-26 figures: seen / never-seen colour and pinholes."""
    head = ("| scene | method | input PSNR | input α<.98 | novel cov (mean / worst) | PSNR seen / never-seen | "
            "SSIM seen / never-seen | never-seen share | novel α<.9 |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in results:
        for m, v in r["methods"].items():
            s = v["summary"]
            unseen = np.nanmean([x.get("unseen_share", np.nan) for x in v["views"][1:]])
            lines.append(f"| {r['scene']} | {m} | {s['input_psnr']:.2f} | {s['input_alpha_lt_098']:.4f} | "
                         f"{s['novel_coverage']:.4f} / {s['novel_coverage_worst']:.4f} | "
                         f"{s['novel_psnr_seen']:.2f} / {s['novel_psnr_unseen']:.2f} | "
                         f"{s['novel_ssim_seen']:.3f} / {s['novel_ssim_unseen']:.3f} | {unseen:.3f} | "
                         f"{s['novel_alpha_lt_090']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES) + list(PAIRS))
    ap.add_argument("--depth-errors", action="store_true", help="give vd the synthetic depth with model-like errors")
    ap.add_argument("--real-width", type=int, default=160, help="width of the real photos (px)")
    ap.add_argument("--inpaint", default="telea", help="vd's inpaint backend for every method (default telea)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--size", type=int, nargs=2, default=(128, 96), metavar=("W", "H"))
    ap.add_argument("--n-frames", type=int, default=None, help="vd coarse --n-frames (default: vd's)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a `vd coarse` parameter (vd.params.CoarseParams) for every method, e.g. reach=9 (repeatable)")
    ap.add_argument("--refine", action="append", default=[], metavar="NAME=VALUE",
                    help="a `vd refine` parameter (vd.params.RefineParams) over REFINE's, e.g. iters=300 (repeatable)")
    ap.add_argument("--fine", action="append", default=[], metavar="NAME=VALUE",
                    help="a `vd fine` parameter (vd.params.FineParams) over FINE's, e.g. lr_means=0 (repeatable)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vd-quality"), help="inputs and the cache (VD_CACHE_DIR)")
    ap.add_argument("--png", type=Path, default=None, help="write renders beside the ground truth here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "quality-results.json")
    a = ap.parse_args(argv)
    from vd.cache import Cache

    os.environ.setdefault("VD_CACHE_DIR", str(a.work / "cache"))
    cache = Cache.open(os.environ["VD_CACHE_DIR"], remote=None)
    INPAINT["backend"] = a.inpaint
    params = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.param)}
    REFINE.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in a.refine)})
    FINE.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in a.fine)})
    results = []
    for s in a.scenes:
        t0 = time.perf_counter()
        r = run_scene(s, a.methods, a.work, cache, width=a.size[0], height=a.size[1], n_frames=a.n_frames, png=a.png,
                      params=params, depth_errors=a.depth_errors, real_width=a.real_width)
        if r is None:
            continue
        results.append(r)
        results[-1]["seconds"] = time.perf_counter() - t0
        print(table(results[-1:]).split("\n", 2)[-1], flush=True)
        print(table_detail(results[-1:]).split("\n", 2)[-1], flush=True)
    a.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "params": params,
                                 "refine": REFINE, "fine": FINE, "results": results}, indent=1) + "\n")
    print(table(results))
    print(table_detail(results))


if __name__ == "__main__":
    main()
