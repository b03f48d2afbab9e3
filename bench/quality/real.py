"""Real photographs for the quality evaluation: a rectified stereo pair with measured disparity.

**aloe**: the Middlebury 2006 "Aloe" pair (view 1 left, view 5 right, full size 1282×1110) and the
ground-truth disparity of the left view, as Debian's `opencv-doc` package ships them for OpenCV's
stereo samples. Get them with (root):

    apt-get update && apt-get install -y opencv-doc    # -> /usr/share/doc/opencv-doc/examples/data/aloe*

(or point $VD_BENCH_ALOE at a folder holding aloeL.jpg, aloeR.jpg and aloeGT.png). Without them
the bench skips the scene with one line.

Geometry (the facts used; see bench/quality.md for the sources):

- aloeGT.png holds the left view's disparity in pixels at the full size (0 = unknown): the left
  pixel (x, y) is the right pixel (x − d, y) (checked here: mean |L − R| over the known pixels is
  8.7 grey levels at scale 1, 33–35 at scales 0.5 or 2);
- the full-size images are cropped so that their disparities are offset by `dmin`: the true
  disparity is d + dmin, depth z = f·B / (d + dmin), and the right camera's principal point is
  `dmin` pixels to the right of the left's (cx_R = cx_L + dmin);
- f = 3740 px at full size, B = 160 mm, dmin = 270 px (ALOE below).

The bench works at a reduced width (default 160 px): the photos are area-averaged, the disparity
of each output pixel is the median of the known full-size disparities in its footprint (a real
surface's, never a mix of two sides of an edge), unknown where fewer than a quarter are known.
f, dmin and the disparities scale with the width, so the depths do not. Unknown disparities of the
left view (mostly the strips the right camera does not see, beside foreground objects) are filled
with the **farthest** known disparity around them, grown ring by ring (the background continues
under the occlusion, as a depth model would draw it); the input depth is dense.

Views with ground truth: the input (left photo, its filled depth) and the **right photo**, the
camera moved by +B along x. Which right-view pixels the input sees is found by forward-warping the
left's known disparities (nearest surface wins, splatted to the two pixels around x − d): the
rest of the right photo (the left border, the strips behind the leaves) was never seen. Depth is
known only on the seen pixels of the right view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality.score import GroundTruth

DEBIAN_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


@dataclass(frozen=True)
class Pair:
    name: str
    left: str
    right: str
    disparity: str
    focal: float  # px at full size
    baseline: float  # metres
    dmin: float  # px at full size: true disparity = stored + dmin
    env: str


ALOE = Pair("aloe", "aloeL.jpg", "aloeR.jpg", "aloeGT.png", focal=3740.0, baseline=0.160, dmin=270.0,
            env="VD_BENCH_ALOE")
PAIRS = {"aloe": ALOE}
HOW_TO_GET = "apt-get install opencv-doc (Debian; root), or set {env} to a folder with {files}"


def pair_folder(pair: Pair) -> Path | None:
    """The folder holding the pair's files, or None when they are not on this machine."""
    for folder in (os.environ.get(pair.env), DEBIAN_DATA):
        if folder and all((Path(folder) / f).is_file() for f in (pair.left, pair.right, pair.disparity)):
            return Path(folder)
    return None


def missing_message(pair: Pair) -> str:
    files = f"{pair.left}, {pair.right}, {pair.disparity}"
    return f"{pair.name}: skipped, data absent (" + HOW_TO_GET.format(env=pair.env, files=files) + ")"


def block_median_disparity(disp: np.ndarray, out_hw: tuple[int, int], min_known: float = 0.25) -> np.ndarray:
    """Disparity at a lower resolution: per output pixel, the median of the known (> 0) input values in
    its footprint; 0 where fewer than `min_known` of them are known."""
    H, W = disp.shape
    h, w = out_hw
    ys = np.linspace(0, H, h + 1).round().astype(int)
    xs = np.linspace(0, W, w + 1).round().astype(int)
    out = np.zeros((h, w), np.float32)
    for i in range(h):
        rows = disp[ys[i]:ys[i + 1]]
        for j in range(w):
            block = rows[:, xs[j]:xs[j + 1]]
            known = block[block > 0]
            if known.size >= min_known * block.size:
                out[i, j] = float(np.median(known))
    return out


def fill_farthest(disp: np.ndarray) -> np.ndarray:
    """Unknown (0) disparities take the smallest known disparity (the farthest surface) among their
    8 neighbours, ring by ring until none is left."""
    d = disp.astype(np.float32).copy()
    if not (d > 0).any():
        raise ValueError("no known disparity to fill from")
    while (d <= 0).any():
        big = np.where(d > 0, d, np.inf)
        p = np.pad(big, 1, constant_values=np.inf)
        H, W = d.shape
        nb = np.min([p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        grow = (d <= 0) & np.isfinite(nb)
        d[grow] = nb[grow]
    return d


def warp_to_right(disp: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seen bool [H,W], depth [H,W], 0 where unseen) of the right view: each known left pixel (x, y)
    lands at x − d (nearest surface, largest disparity, wins), splatted to the pixels floor and ceil."""
    H, W = disp.shape
    best = np.full((H, W), -np.inf, np.float32)
    z = np.zeros((H, W), np.float32)
    v, u = np.nonzero(disp > 0)
    d = disp[v, u]
    xr = u - d  # pixel index coordinates (centres at integers)
    vv = np.concatenate([v, v])
    cc = np.concatenate([np.floor(xr), np.ceil(xr)]).astype(int)
    dd = np.concatenate([d, d])
    zz = np.concatenate([depth[v, u], depth[v, u]])
    ok = (cc >= 0) & (cc < W)
    order = np.argsort(dd[ok], kind="stable")  # numpy keeps the last of repeated indices: the largest disparity
    vv, cc, dd, zz = vv[ok][order], cc[ok][order], dd[ok][order], zz[ok][order]
    best[vv, cc] = dd
    z[vv, cc] = zz
    seen = np.isfinite(best)
    return seen, np.where(seen, z, 0).astype(np.float32)


def load_pair(name: str, width: int = 160) -> tuple[list[GroundTruth], dict] | None:
    """([input, right photo] as ground truths, facts) of a real pair at `width`, or None when absent."""
    from PIL import Image

    pair = PAIRS[name]
    folder = pair_folder(pair)
    if folder is None:
        return None
    L = Image.open(folder / pair.left).convert("RGB")
    R = Image.open(folder / pair.right).convert("RGB")
    disp_full = np.asarray(Image.open(folder / pair.disparity), dtype=np.float32)
    if disp_full.ndim == 3:
        disp_full = disp_full[..., 0]
    W0, H0 = L.size
    s = width / W0
    h = round(H0 * s)
    left = np.asarray(L.resize((width, h), Image.BOX))
    right = np.asarray(R.resize((width, h), Image.BOX))
    disp = block_median_disparity(disp_full, (h, width)) * s
    f, dmin = pair.focal * s, pair.dmin * s
    filled = fill_farthest(disp)
    depth = (f * pair.baseline / (filled + dmin)).astype(np.float32)
    K = np.array([[f, 0, width / 2], [0, f, h / 2], [0, 0, 1]], np.float64)
    K_right = K.copy()
    K_right[0, 2] += dmin
    pose = np.eye(4)
    pose[0, 3] = pair.baseline
    seen, z_right = warp_to_right(disp, depth)
    views = [GroundTruth("input", left, depth, K, np.eye(4), np.ones_like(seen)),
             GroundTruth("right-photo", right, z_right, K_right, pose, seen, valid=np.ones_like(seen))]
    facts = {"pair": name, "full_size": [W0, H0], "scale": s, "focal_px": f, "dmin_px": dmin,
             "baseline_m": pair.baseline, "known_disparity": float((disp > 0).mean()),
             "right_seen": float(seen.mean()), "depth_range": [float(depth.min()), float(depth.max())]}
    return views, facts
