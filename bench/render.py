"""Renderer benchmark: vd's torch tile rasteriser vs a CPU renderer assembled from gsplat's own
pure-torch functions, and gsplat CUDA when a GPU exists.

    flock /tmp/vd-bench.lock python bench/render.py                 # 50k and 200k, 512x384
    flock /tmp/vd-bench.lock python bench/render.py --sizes 50000 --modes fwd
    python bench/render.py --gsplat-cuda                             # 1M Gaussians on CUDA (skips without)

Each (renderer, size, mode) runs in a child process so that its peak RSS can be reported
(peak RSS of the child minus its RSS just before the timed calls). Times are the best of
--repeats calls after one warm-up call. The scene is a procedural RGB-D frame lifted with
`vd.lift.gaussians_from_rgbd` (bench/scenes.py), rendered from a slightly moved camera.

The gsplat-derived CPU alternative ("gsplat-torch"):
- projection with `gsplat.cuda._torch_impl._quat_scale_to_covar_preci` + `_fully_fused_projection`
  and colours with `_spherical_harmonics` (pure torch);
- gsplat's own pure-torch rasteriser `_rasterize_to_pixels` needs the CUDA kernel
  `rasterize_to_indices_in_range`, and `accumulate` needs nerfacc's CUDA ops, so the
  (Gaussian, pixel) pairs are enumerated in torch from the projected radii and `accumulate`'s
  math is kept, with nerfacc's `render_weight_from_alpha` replaced by a sort + segmented
  exclusive product in torch. `_isect_tiles` is a per-Gaussian Python loop and is timed on a
  subset only (reported separately, extrapolated).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gsplat_torch_render(g, viewmat, K, width, height):
    """A CPU renderer built from gsplat 1.5.3's pure-torch reference functions (see module doc)."""
    import torch
    from gsplat.cuda._torch_impl import (
        _fully_fused_projection,
        _quat_scale_to_covar_preci,
        _spherical_harmonics,
    )

    covars, _ = _quat_scale_to_covar_preci(g.quats, torch.exp(g.log_scales), compute_preci=False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        g.means, covars, viewmat[None], K[None], width, height, eps2d=0.3, near_plane=0.01
    )
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
    colors = torch.clamp_min(_spherical_harmonics(g.sh_degree, g.means - campos, g.sh) + 0.5, 0.0)
    opac = torch.sigmoid(g.opacity_logits)
    with torch.no_grad():
        vis = (radii > 0).all(-1).nonzero().squeeze(1)
        m = means2d[vis].detach()
        r = radii[vis].to(m.dtype)
        x0 = torch.clamp(torch.floor(m[:, 0] - r[:, 0]), 0, width).long()
        x1 = torch.clamp(torch.ceil(m[:, 0] + r[:, 0]), 0, width).long()
        y0 = torch.clamp(torch.floor(m[:, 1] - r[:, 1]), 0, height).long()
        y1 = torch.clamp(torch.ceil(m[:, 1] + r[:, 1]), 0, height).long()
        nx, ny = x1 - x0, y1 - y0
        cnt = nx * ny
        rep = torch.repeat_interleave(torch.arange(vis.numel()), cnt)
        k = torch.arange(int(cnt.sum())) - (torch.cumsum(cnt, 0) - cnt)[rep]
        px = x0[rep] + k % nx[rep]
        py = y0[rep] + torch.div(k, nx[rep], rounding_mode="floor")
        gid = vis[rep]
        pix = py * width + px
        rank = torch.empty_like(vis)
        rank[torch.argsort(depths[vis])] = torch.arange(vis.numel())
        order = torch.argsort(pix * vis.numel() + rank[rep])
        gid, pix, px, py = gid[order], pix[order], px[order], py[order]
    # gsplat `accumulate` (pure torch part)
    deltas = torch.stack([px, py], -1).to(means2d.dtype) + 0.5 - means2d[gid]
    c = conics[gid]
    sig = 0.5 * (c[:, 0] * deltas[:, 0] ** 2 + c[:, 2] * deltas[:, 1] ** 2) + c[:, 1] * deltas[:, 0] * deltas[:, 1]
    alphas = torch.clamp_max(opac[gid] * torch.exp(-sig), 0.999)
    alphas = alphas * (alphas >= 1 / 255)
    # nerfacc render_weight_from_alpha: T_i = prod_{j<i, same ray} (1 - a_j), in torch
    log1m = torch.log1p(-alphas).double()
    cs = torch.cumsum(log1m, 0)
    with torch.no_grad():
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        start = torch.cummax(torch.where(first, torch.arange(pix.numel()), torch.zeros_like(pix)), 0).values
    excl = cs - log1m
    trans = torch.exp(excl - excl[start]).float()
    w = alphas * trans
    feats = torch.cat([colors[gid], depths[gid, None], torch.ones_like(w)[:, None]], -1) * w[:, None]
    out = torch.zeros(height * width, 5, dtype=feats.dtype).index_add(0, pix, feats)
    out = out.reshape(height, width, 5)
    alpha = out[..., 4]
    return out[..., :3], out[..., 3] / alpha.clamp_min(1e-10), alpha


def child(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from scenes import rgbd_scene

    from vd.render import render

    if args.renderer == "gsplat-cuda" and not torch.cuda.is_available():
        return {"renderer": args.renderer, "n": args.n, "mode": args.mode, "skipped": "no CUDA"}
    g, vm, K = rgbd_scene(args.n, args.width, args.height)
    if args.renderer == "vd-torch":
        fn = lambda gg: render(gg, vm, K, args.width, args.height, backend="torch", tile=args.tile)  # noqa: E731
        unpack = lambda o: o.rgb  # noqa: E731
    elif args.renderer == "gsplat-torch":
        fn = lambda gg: gsplat_torch_render(gg, vm, K, args.width, args.height)  # noqa: E731
        unpack = lambda o: o[0]  # noqa: E731
    elif args.renderer == "gsplat-cuda":
        g = g.to("cuda")
        vmc, Kc = vm.cuda(), K.cuda()
        fn = lambda gg: render(gg, vmc, Kc, args.width, args.height, backend="gsplat")  # noqa: E731
        unpack = lambda o: o.rgb  # noqa: E731
    else:
        raise SystemExit(f"unknown renderer {args.renderer}")

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def once():
        if args.mode == "fwd":
            with torch.no_grad():
                out = fn(g)
        else:
            gg = g.clone().requires_grad_(True)
            out = fn(gg)
            unpack(out).sum().backward()
        sync()
        return out

    once()  # warm-up
    base = _rss_mb()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t)
    res = {
        "renderer": args.renderer,
        "n": len(g),
        "mode": args.mode,
        "best_s": min(times),
        "median_s": sorted(times)[len(times) // 2],
        "peak_rss_increase_mb": round(_peak_mb() - base, 1),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available() and args.renderer == "gsplat-cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.renderer != "gsplat-cuda":
        res["mean_alpha"] = float(torch.as_tensor(out.alpha if hasattr(out, "alpha") else out[2]).float().mean())
    return res


def isect_tiles_probe(n: int = 1000) -> dict:
    """Time gsplat's pure-torch `_isect_tiles` (a per-Gaussian Python loop) on n Gaussians."""
    import torch
    from gsplat.cuda._torch_impl import _fully_fused_projection, _isect_tiles, _quat_scale_to_covar_preci
    from scenes import rgbd_scene

    g, vm, K = rgbd_scene(n)
    covars, _ = _quat_scale_to_covar_preci(g.quats, torch.exp(g.log_scales), compute_preci=False, triu=False)
    radii, means2d, depths, _, _ = _fully_fused_projection(g.means, covars, vm[None], K[None], 512, 384)
    t = time.perf_counter()
    _isect_tiles(means2d, radii, depths, 16, 32, 24)
    dt = time.perf_counter() - t
    return {"isect_tiles_n": len(g), "isect_tiles_s": dt, "extrapolated_50k_s": dt * 50000 / len(g)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,200000")
    ap.add_argument("--renderers", default="vd-torch,gsplat-torch")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--tile", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch default)")
    ap.add_argument("--skip", default="gsplat-torch:200000:fwdbwd", help="renderer:size:mode triples to skip")
    ap.add_argument("--gsplat-cuda", action="store_true", help="only gsplat on CUDA with 1M Gaussians")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--renderer", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.gsplat_cuda:
        args.renderers, args.sizes = "gsplat-cuda", "1000000"
    import torch

    print(json.dumps({"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
                      "cores": os.cpu_count(), "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "size": f"{args.width}x{args.height}", "tile": args.tile}), flush=True)
    skip = set(args.skip.split(",")) if args.skip else set()
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        for mode in args.modes.split(","):
            for r in args.renderers.split(","):
                if f"{r}:{n}:{mode}" in skip:
                    print(json.dumps({"renderer": r, "n": n, "mode": mode, "skipped": "--skip"}), flush=True)
                    continue
                cmd = [sys.executable, __file__, "--child", "--renderer", r, "--n", str(n), "--mode", mode,
                       "--width", str(args.width), "--height", str(args.height), "--tile", str(args.tile),
                       "--repeats", str(args.repeats), "--threads", str(args.threads)]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    res = {"renderer": r, "n": n, "mode": mode, "error": p.stderr.strip().splitlines()[-1:]}
                else:
                    res = json.loads(p.stdout.strip().splitlines()[-1])
                results.append(res)
                print(json.dumps(res), flush=True)
    if "gsplat-torch" in args.renderers:
        try:
            print(json.dumps(isect_tiles_probe()), flush=True)
        except Exception as e:  # pragma: no cover
            print(json.dumps({"isect_tiles": f"failed: {e}"}))
    by = {(x.get("renderer"), x.get("n"), x.get("mode")): x for x in results if "best_s" in x}
    for (r, n, mode), x in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if r == "gsplat-torch" and ("vd-torch", n, mode) in by:
            ratio = x["best_s"] / by[("vd-torch", n, mode)]["best_s"]
            print(json.dumps({"ratio": f"gsplat-torch / vd-torch at {n} {mode}", "value": round(ratio, 2)}))


if __name__ == "__main__":
    main()
