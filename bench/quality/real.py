"""Real photographs for the quality evaluation: rectified stereo pairs with measured disparity.

**aloe**: the Middlebury 2006 "Aloe" pair (view 1 left, view 5 right, full size 1282×1110) and the
ground-truth disparity of the left view, as Debian's `opencv-doc` package ships them for OpenCV's
stereo samples. Get them with (root):

    apt-get update && apt-get install -y opencv-doc    # -> /usr/share/doc/opencv-doc/examples/data/aloe*

(or point $VD_BENCH_ALOE at a folder holding aloeL.jpg, aloeR.jpg and aloeGT.png).

**motorcycle**: the Middlebury 2014 "Motorcycle" pair as scikit-image ships it
(`skimage.data.stereo_motorcycle()`: 741×500, downsampled 4× from the benchmark, with the left view's
ground-truth disparity and its calibration in the docstring), cropped to 622×490 so that the principal
point is the image centre. A motorcycle 2.1–3 m away in a cluttered workshop up to 5 m: thin spokes,
cables and handlebars before a far background, the cracks and fine texture issue 26 is about.

Without their data the bench skips a pair with one line.

Geometry (the facts used; see bench/quality.md for the sources):

- Aloe's GT holds the left view's disparity in pixels at the full size (0 = unknown): the left
  pixel (x, y) is the right pixel (x − d, y) (checked here: mean |L − R| over the known pixels is
  8.7 grey levels at scale 1, 33–35 at scales 0.5 or 2);
- the full-size images are cropped so that their disparities are offset by `dmin`: the true
  disparity is d + dmin, depth z = f·B / (d + dmin), and the right camera's principal point is
  `dmin` pixels to the right of the left's (cx_R = cx_L + dmin);
- Aloe: f = 3740 px at full size, B = 160 mm, dmin = 270 px (ALOE below); Motorcycle: the same convention
  (checked here: mean |L(x) − R(x − d)| is 7.8 grey levels, 45 with the opposite sign), f = 994.978 px,
  B = 193.001 mm, dmin = 31.086 px (MOTORCYCLE below).

The bench works at a reduced width (default 160 px, a multiple of 16), the rows centre-cropped so that the
height is one too (vd crops its input to multiples of 16: the input view scored is the one vd sees), the
photos area-averaged, the disparity
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
from vd.image import MULTIPLE

DEBIAN_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


@dataclass(frozen=True)
class Pair:
    name: str
    focal: float  # px at full size
    baseline: float  # metres
    dmin: float  # px at full size: true disparity = stored + dmin; the right principal point is dmin px right
    how_to_get: str  # one line, shown when the data is absent


ALOE = Pair("aloe", focal=3740.0, baseline=0.160, dmin=270.0,
            how_to_get="apt-get install opencv-doc (Debian; root), or set VD_BENCH_ALOE to a folder with "
                       "aloeL.jpg, aloeR.jpg, aloeGT.png")
# skimage.data.stereo_motorcycle's docstring: the Middlebury 2014 pair downsampled 4x, f = 994.978 px,
# principal point (311.193, 254.877), the right one 31.086 px further right, baseline 193.001 mm.
MOTORCYCLE = Pair("motorcycle", focal=994.978, baseline=0.193001, dmin=31.086,
                  how_to_get="pip install scikit-image (vd's mesh extra)")
MOTORCYCLE_PRINCIPAL = (311.193, 254.877)
PAIRS = {"aloe": ALOE, "motorcycle": MOTORCYCLE}
ALOE_FILES = ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")


def aloe_folder() -> Path | None:
    """The folder holding Aloe's files, or None when they are not on this machine."""
    for folder in (os.environ.get("VD_BENCH_ALOE"), DEBIAN_DATA):
        if folder and all((Path(folder) / f).is_file() for f in ALOE_FILES):
            return Path(folder)
    return None


def read_full_size(pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(left, right uint8 [H,W,3], left disparity float32 [H,W] with 0 = unknown) at full size, the principal
    point at the image centre; None when the data is absent."""
    from PIL import Image

    if pair is ALOE:
        folder = aloe_folder()
        if folder is None:
            return None
        left, right, gt = (Image.open(folder / f) for f in ALOE_FILES)
        disp = np.asarray(gt, dtype=np.float32)
        return (np.asarray(left.convert("RGB")), np.asarray(right.convert("RGB")),
                disp[..., 0] if disp.ndim == 3 else disp)
    try:
        from skimage.data import stereo_motorcycle
    except ImportError:
        return None
    left, right, disp = stereo_motorcycle()
    disp = np.where(np.isfinite(disp), disp, 0).astype(np.float32)
    # crop so that the principal point is the centre (vd's cameras are centred; within 0.2 px)
    cx, cy = MOTORCYCLE_PRINCIPAL
    x1, y0 = round(2 * cx), left.shape[0] - round(2 * (left.shape[0] - cy))
    crop = (slice(y0, None), slice(0, x1))
    return left[crop], right[crop], disp[crop]


def missing_message(pair: Pair) -> str:
    return f"{pair.name}: skipped, data absent ({pair.how_to_get})"


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


def centre_crop_rows(left: np.ndarray, right: np.ndarray, disp: np.ndarray, width: int):
    """The full-size arrays cropped (centred rows) so that, scaled to `width`, the height is a multiple of
    16: vd centre-crops its input to multiples of 16 (vd.image.MULTIPLE), and the input view scored must be
    the one vd sees, not one whose top and bottom rows vd outpainted."""
    if width % MULTIPLE:
        raise ValueError(f"the real photos' width must be a multiple of {MULTIPLE}, got {width}")
    H0, W0 = disp.shape
    s = width / W0
    rows = round(round(H0 * s) // MULTIPLE * MULTIPLE / s)
    y0 = (H0 - rows) // 2
    return left[y0:y0 + rows], right[y0:y0 + rows], disp[y0:y0 + rows]


def load_pair(name: str, width: int = 160) -> tuple[list[GroundTruth], dict] | None:
    """([input, right photo] as ground truths, facts) of a real pair at `width`, or None when absent."""
    from PIL import Image

    pair = PAIRS[name]
    full = read_full_size(pair)
    if full is None:
        return None
    left_full, right_full, disp_full = centre_crop_rows(*full, width)
    L, R = Image.fromarray(left_full), Image.fromarray(right_full)
    W0, H0 = L.size
    s = width / W0
    h = round(H0 * s) // MULTIPLE * MULTIPLE
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
