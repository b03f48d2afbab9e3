"""Hole masks of rendered views, and the hole scan of the coarse loop's candidate poses.

A *hole* is a pixel the current Gaussians do not cover (docs/upstream.md#hole-masks): alpha
below a threshold (0.5, upstream's round(alpha) == 0), cleaned by one 5×5 erosion (drops specks)
and three 5×5 dilations (grows holes by ~4 px so inpainting overlaps the seam). As upstream,
there is no depth test: disocclusions behind existing surfaces are not holes.

The coarse loop needs the hole ratio of ~100 candidate poses per added view. Alpha alone does
not depend on the compositing order (final alpha = 1 − Π(1 − α_i)), so the scan skips the
renderer: `splat_log_transmittance` adds log(1 − α_i) over each projected Gaussian's pixel
footprint (the renderers' EWA projection, eps2d, 0.999 cap and 1/255 cut; `splat_alpha`
equals the torch renderer's alpha up to float rounding). Being a sum, it also grows: the
loop only appends Gaussians, so `HoleScan` keeps every candidate's log transmittance and adds
each view's new Gaussians on top, at reduced resolution for every candidate and at full size
for the close calls (see `HoleScan`). `scan_hole_ratios_full` renders every candidate at full
size one by one with the real renderer (the upstream way; the benchmark's reference).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vd.cameras import invert_pose
from vd.geometry import quat_to_rotmat_torch
from vd.render import render
from vd.splat_constants import ALPHA_MAX, ALPHA_MIN  # as the renderers: skipped below, capped at

if TYPE_CHECKING:
    import torch

ALPHA_THRESHOLD = 0.5
KERNEL = 5
ERODE = 1
DILATE = 3


def _window(x, r: int, dim: int, op: str, fill: bool):
    """Bool OR (op="or") or AND ("and") of x over the window [i − r, i + r] along `dim`,
    pixels outside the image counting as `fill`. Doubling shifts: O(log r) slice ops."""
    import torch

    n = x.shape[dim]
    pad_shape = list(x.shape)
    pad_shape[dim] = r
    pad = torch.full(pad_shape, bool(fill), dtype=torch.bool, device=x.device)
    y = torch.cat([pad, x, pad], dim=dim)
    width, span = 2 * r + 1, 1
    while span < width:
        s = min(span, width - span)
        m = y.shape[dim]
        a, b = y.narrow(dim, 0, m - s), y.narrow(dim, s, m - s)
        y = (a | b) if op == "or" else (a & b)
        span += s
    return y.narrow(dim, 0, n)


def hole_masks(
    alpha, *, threshold: float = ALPHA_THRESHOLD, kernel: int = KERNEL, erode: int = ERODE, dilate: int = DILATE
):
    """Bool hole masks [C, H, W] (torch) from alpha [C, H, W] or [H, W] (torch or numpy).

    Matches OpenCV's erode/dilate with a k×k square and the default border handling (the
    border neither erodes nor dilates). n passes of a k×k square equal one pass of a
    (n·(k−1)+1)² square on a rectangle, and a square is separable, so each of erosion and
    dilation is two 1-D window passes."""
    import torch

    a = torch.as_tensor(np.asarray(alpha) if not isinstance(alpha, torch.Tensor) else alpha)
    squeeze = a.ndim == 2
    if squeeze:
        a = a[None]
    m = a.detach() < threshold
    half = kernel // 2
    if erode and half:
        r = erode * half
        m = _window(_window(m, r, 2, "and", True), r, 1, "and", True)
    if dilate and half:
        r = dilate * half
        m = _window(_window(m, r, 2, "or", False), r, 1, "or", False)
    m = m.contiguous()
    return m[0] if squeeze else m


def hole_mask_np(alpha: np.ndarray, **kw) -> np.ndarray:
    """numpy convenience: bool [H, W] hole mask from an alpha map."""
    return hole_masks(np.asarray(alpha, dtype=np.float32), **kw).cpu().numpy()


def hole_mask_cv2(
    alpha: np.ndarray,
    *,
    threshold: float = ALPHA_THRESHOLD,
    kernel: int = KERNEL,
    erode: int = ERODE,
    dilate: int = DILATE,
) -> np.ndarray:
    """The upstream OpenCV formulation (used by the tests to check `hole_masks`)."""
    import cv2

    h: np.ndarray = (np.asarray(alpha) < threshold).astype(np.uint8)
    k = np.ones((kernel, kernel), np.uint8)
    if erode:
        h = cv2.erode(h, k, iterations=erode)
    if dilate:
        h = cv2.dilate(h, k, iterations=dilate)
    return h > 0


def scale_intrinsics(K: np.ndarray, s: float) -> np.ndarray:
    """K for an image scaled by `s` (pixel-centre convention: continuous coordinates scale by s)."""
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[:2] *= s
    return K2


SMALL_RADIUS = 8  # footprints up to this radius are splatted into a padded buffer, unmasked
PAD = 2 * SMALL_RADIUS  # padding of log-transmittance buffers on every side
MAX_RADIUS = 128  # footprints wider than this are truncated (alpha there is < 1/255 unless σ > 38 px)
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


@dataclass
class AlphaSplats:
    """What alpha depends on: centres [N,3], world covariances [N,6] (xx, xy, xz, yy, yz, zz)
    and opacities [N]. Colour and SH are not needed."""

    means: torch.Tensor
    cov6: torch.Tensor
    opacities: torch.Tensor

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @classmethod
    def of(cls, g, keep: float = 1.0, seed: int = 0) -> AlphaSplats:
        """The splats of Gaussians `g`; when keep < 1, a seeded random subset of that fraction
        with every scale grown by 1/sqrt(keep), so a surface keeps its coverage (area per
        Gaussian × density) while `keep` times fewer Gaussians are splatted."""

        import torch

        with torch.no_grad():
            means, log_scales, quats, logits = g.means, g.log_scales, g.quats, g.opacity_logits
            n = len(g)
            if keep < 1.0 and n:
                m = max(int(round(n * keep)), 1)
                gen = torch.Generator().manual_seed(int(seed))
                idx = torch.randperm(n, generator=gen)[:m].sort().values.to(means.device)
                means, quats, logits = means[idx], quats[idx], logits[idx]
                log_scales = log_scales[idx] + 0.5 * math.log(1.0 / keep)
            M = quat_to_rotmat_torch(quats) * torch.exp(log_scales)[:, None, :]
            c = M @ M.transpose(1, 2)
            cov6 = torch.stack([c[:, i, j] for i, j in _PAIRS], -1)
            return cls(
                means.float().contiguous(), cov6.float().contiguous(), torch.sigmoid(logits).float().contiguous()
            )


def alpha_lod(g, keep: float = 1.0, seed: int = 0) -> AlphaSplats:
    """`AlphaSplats.of(g, keep, seed)`: the alpha-only level of detail of `g`."""
    return AlphaSplats.of(g, keep, seed)


def project_footprints(
    s: AlphaSplats, viewmats, Ks, width: int, height: int, *, eps2d: float = 0.3, near: float = 0.01
):
    """gsplat's classic EWA projection of N splats into C cameras at once.

    viewmats [C,4,4] (camera_from_world), Ks [C,3,3] -> x, y (pixel centre coordinates),
    conic (A, B, C: power = ½A·dx² + B·dx·dy + ½C·dy²), radius (ceil 3.33σ of the larger axis)
    and ok (in front of `near`, on screen, invertible), each [C,N]. The camera-space covariance
    is linear in the 6 world entries, so it is one [N,6]×[6,6C] matmul; the rest is the torch
    renderer's `ewa_covariance_2d`."""
    import torch

    from vd.render.torch_backend import ewa_covariance_2d

    C = viewmats.shape[0]
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mc = (s.means @ R.reshape(C * 3, 3).T).reshape(-1, C, 3).permute(1, 2, 0) + t[:, :, None]  # [C,3,N]
    tx, ty, tz = mc[:, 0], mc[:, 1], mc[:, 2]
    L = torch.zeros(C, 6, 6, dtype=s.means.dtype, device=s.means.device)
    for a, (i, j) in enumerate(_PAIRS):
        for b, (k, m) in enumerate(_PAIRS):
            L[:, a, b] = R[:, i, k] * R[:, j, m] + (R[:, i, m] * R[:, j, k] if k != m else 0.0)
    cc = (s.cov6 @ L.permute(2, 1, 0).reshape(6, 6 * C)).reshape(-1, 6, C).permute(2, 1, 0)  # [C,6,N]
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, a, b, c = ewa_covariance_2d(tx, ty, tz, cc.unbind(1), fx, fy, cx, cy, width, height, eps2d)
    det = a * c - b * b
    idet = 1.0 / det.clamp_min(1e-10)
    rad = torch.ceil(3.33 * torch.sqrt(torch.maximum(a, c).clamp_min(0)))
    ok = (det > 0) & (tz > near) & torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(rad)
    ok &= (x + rad > 0) & (x - rad < width) & (y + rad > 0) & (y - rad < height)
    return x, y, (c * idet, -b * idet, a * idet), rad, ok


def _footprint_basis(r: int, device):
    """Offsets of a (2r+1)² footprint and their monomials [6,S] (1, ox, oy, ox², oy², ox·oy)."""
    import torch

    o = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    oy, ox = torch.meshgrid(o, o, indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    return ox.long(), oy.long(), torch.stack([torch.ones_like(ox), ox, oy, ox * ox, oy * oy, ox * oy])


def _radius_buckets(rad):
    """Footprint radius used per splat: exact up to SMALL_RADIUS, then the next power of two."""
    import torch

    r = rad.clamp(0, MAX_RADIUS)
    big = r > SMALL_RADIUS
    up = torch.exp2(torch.ceil(torch.log2(r.clamp_min(1.0))))
    return torch.where(big, up, r).long()


def splat_log_transmittance(
    s: AlphaSplats,
    viewmats,
    Ks,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    out=None,
    elements: int = 1 << 20,
):
    """Add Σ log(1 − α_i) of every splat into `out` [C, H + 2·PAD, W + 2·PAD] (new when None).

    Compositing gives a final alpha of 1 − Π(1 − α_i) whatever the order, so alpha alone needs
    no sorting and no tiles: each splat adds log(1 − α_i) over its footprint, α_i =
    min(0.999, o·exp(−power)), skipped below 1/255, as in the renderers. The power over a
    footprint is one matmul of per-splat coefficients with the footprint's monomials (the
    torch renderer's trick); footprints up to SMALL_RADIUS land in the padding unmasked, wider
    ones are masked to the image. `elements` bounds the working set per step."""
    import torch

    dev = s.means.device
    C = viewmats.shape[0]
    Hp, Wp = height + 2 * PAD, width + 2 * PAD
    if out is None:
        out = torch.zeros(C, Hp, Wp, dtype=torch.float32, device=dev)
    N = len(s)
    if N == 0 or C == 0:
        return out
    flat = out.view(-1)
    x, y, (A, B, Cc), rad, ok = project_footprints(s, viewmats, Ks, width, height, eps2d=eps2d, near=near)
    rb = torch.where(ok, _radius_buckets(rad), torch.zeros_like(rad, dtype=torch.long)).reshape(-1)
    x, y, A, B, Cc = (v.reshape(-1) for v in (x, y, A, B, Cc))
    log_op = torch.log(s.opacities)
    counts = torch.bincount(rb, minlength=MAX_RADIUS + 1).tolist()
    for r, count in enumerate(counts):
        if r == 0 or count == 0:
            continue
        idx = (rb == r).nonzero().squeeze(1)
        ox, oy, basis = _footprint_basis(r, dev)
        step = max(elements // basis.shape[1], 1)
        for k in range(0, idx.numel(), step):
            ii = idx[k : k + step]
            cam = torch.div(ii, N, rounding_mode="floor")
            gi = ii - cam * N
            xi, yi = x[ii], y[ii]
            bx, by = torch.floor(xi), torch.floor(yi)
            fx, fy = xi - bx - 0.5, yi - by - 0.5  # dx = ox − fx, dy = oy − fy
            a, b, c = A[ii], B[ii], Cc[ii]
            # log α = log o − power, power = ½a·dx² + ½c·dy² + b·dx·dy expanded over the monomials
            coef = torch.stack(
                [
                    log_op[gi] - (0.5 * a * fx * fx + 0.5 * c * fy * fy + b * fx * fy),
                    a * fx + b * fy,
                    c * fy + b * fx,
                    -0.5 * a,
                    -0.5 * c,
                    -b,
                ],
                1,
            )
            alpha = (coef @ basis).exp_().clamp_max_(ALPHA_MAX)
            torch.nn.functional.threshold(alpha, ALPHA_MIN, 0.0, inplace=True)
            contrib = alpha.neg_().log1p_()
            bxl, byl = bx.long(), by.long()
            index = (cam * (Hp * Wp) + (byl + PAD) * Wp + (bxl + PAD))[:, None] + (oy * Wp + ox)[None, :]
            if r > SMALL_RADIUS:  # wider than the padding: pixels off the image go to a padding pixel
                px, py = bxl[:, None] + ox[None, :], byl[:, None] + oy[None, :]
                off = (px < 0) | (px >= width) | (py < 0) | (py >= height)
                index = torch.where(off, torch.zeros_like(index), index)
                contrib = torch.where(off, torch.zeros_like(contrib), contrib)
            flat.index_add_(0, index.reshape(-1), contrib.reshape(-1))
    return out


def crop_padding(buf, width: int, height: int):
    """The image part [.., H, W] of a padded log-transmittance buffer."""
    return buf[..., PAD : PAD + height, PAD : PAD + width]


def _camera_batch(n_splats: int, budget: int = 1 << 21) -> int:
    return max(1, budget // max(n_splats, 1))


def splat_alpha(g, viewmats, Ks, width: int, height: int, *, eps2d: float = 0.3, near: float = 0.01):
    """Alpha [C, H, W] of Gaussians `g` (or `AlphaSplats`) in C cameras, without colour, sorting or
    tiles (`splat_log_transmittance`); equal to the renderers' alpha up to float rounding."""
    import torch

    s = g if isinstance(g, AlphaSplats) else AlphaSplats.of(g)
    dev = s.means.device
    viewmats = torch.as_tensor(viewmats, dtype=torch.float32, device=dev).reshape(-1, 4, 4)
    Ks = torch.as_tensor(Ks, dtype=torch.float32, device=dev).reshape(-1, 3, 3)
    if Ks.shape[0] == 1:
        Ks = Ks.expand(viewmats.shape[0], 3, 3)
    with torch.no_grad():
        out = torch.zeros(viewmats.shape[0], height + 2 * PAD, width + 2 * PAD, device=dev)
        step = _camera_batch(len(s))
        for i in range(0, viewmats.shape[0], step):
            splat_log_transmittance(
                s,
                viewmats[i : i + step],
                Ks[i : i + step],
                width,
                height,
                eps2d=eps2d,
                near=near,
                out=out[i : i + step],
            )
        return 1.0 - torch.exp(crop_padding(out, width, height))


def default_scan_scale(width: int, height: int) -> float:
    """Full size for small candidates (long side <= 128 px, cheap and exact); otherwise 1/4 of
    the size, but at least 64 px on the long side."""
    long = max(width, height)
    if long <= 128:
        return 1.0
    return min(1.0, max(0.25, 64.0 / long))


class HoleScan:
    """Hole ratios of fixed candidate cameras over a scene that only grows.

        scan = HoleScan(poses, K, width, height)    # world_from_camera [N,4,4], candidate K and size
        scan.add(scaffold)                           # then each added view's Gaussians, in order
        scan.fast_ratios()                           # every candidate, error <= scan.tolerance
        scan.exact_ratios([3, 17])                   # full size, equal to rendering them

    The coarse loop appends each view's Gaussians and never changes earlier ones, and alpha
    is order-independent (1 − exp Σ log(1 − α_i)), so every candidate keeps its log
    transmittance and `add` splats only the new Gaussians on top:

    - a reduced-resolution map for every candidate: `scale` of the size (default: 1/4, at
      least 64 px on the long side; full size up to 128 px), eps2d scaled by scale² (the same
      blur in full-size pixels), from a seeded LOD subset of 4·scale² of each chunk
      (`AlphaSplats.of`); alpha is upsampled bilinearly and thresholded and cleaned at full size;
    - a full-size map for every candidate ever measured exactly; it is built from all chunks
      in order when first asked for, then kept up to date, so a candidate pays its full-size
      splat once per run, and a resumed run (chunks re-added in order) computes the same bits.
    """

    def __init__(
        self,
        poses,
        K,
        width: int,
        height: int,
        *,
        scale: float | None = None,
        keep: float | None = None,
        tolerance: float = 0.03,
        seed: int = 0,
        device=None,
    ):
        import torch

        self.width, self.height = int(width), int(height)
        self.scale = float(default_scan_scale(width, height) if scale is None else scale)
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        self.n = poses.shape[0]
        self.device = torch.device(device or "cpu")
        self.exact_only = self.scale >= 1.0
        self.sw = self.width if self.exact_only else max(int(round(self.width * self.scale)), 8)
        self.sh = self.height if self.exact_only else max(int(round(self.height * self.scale)), 8)
        self.keep = 1.0 if self.exact_only else float(min(1.0, 4.0 * self.scale**2) if keep is None else keep)
        self.tolerance = 0.0 if self.exact_only else float(tolerance)
        self.seed = int(seed)
        self._viewmats = torch.as_tensor(invert_pose(poses), dtype=torch.float32, device=self.device).reshape(-1, 4, 4)
        K = np.asarray(K, dtype=np.float64)
        Ks = scale_intrinsics(K, self.sw / self.width)
        Ks[1] *= (self.sh / self.height) / (self.sw / self.width)
        self._K = torch.as_tensor(K, dtype=torch.float32, device=self.device)
        self._K_scan = torch.as_tensor(Ks, dtype=torch.float32, device=self.device)
        self._eps_scan = 0.3 * (self.sw / self.width) ** 2
        self._chunks: list = []  # full-size splats of every chunk, in order
        self._scan_logt = (
            torch.zeros(self.n, self.sh + 2 * PAD, self.sw + 2 * PAD, device=self.device)
            if not self.exact_only
            else None
        )
        self._exact_logt: dict[int, torch.Tensor] = {}
        self._fast: np.ndarray | None = None
        self._exact: dict[int, float] = {}
        self.seconds = 0.0

    def __len__(self) -> int:
        return self.n

    @property
    def chunks(self) -> int:
        return len(self._chunks)

    @property
    def exact_indices(self) -> list[int]:
        """Candidates with a full-size map (measured exactly at least once)."""
        return sorted(self._exact_logt)

    def add(self, g) -> HoleScan:
        """Splat a chunk of new Gaussians (the scaffold, then each added view's) onto every map."""

        import torch

        t0 = time.perf_counter()
        g = g.to(self.device)
        full = AlphaSplats.of(g)
        self._chunks.append(full)
        with torch.no_grad():
            if not self.exact_only:
                lod = AlphaSplats.of(g, self.keep, seed=self.seed * 1_000_003 + len(self._chunks))
                self._splat_into(self._scan_logt, range(self.n), lod, scan=True)
            if self._exact_logt:
                self._splat_exact(self.exact_indices, [full])
        self._fast = None
        self._exact = {}
        self.seconds += time.perf_counter() - t0
        return self

    def _splat_into(self, buf, cams, s: AlphaSplats, *, scan: bool):
        """buf[j] += the log transmittance of `s` in candidate cams[j] (one buffer per chunk, then
        one add: the same float operations whether maps are built at once or chunk by chunk)."""
        import torch

        cams = list(cams)
        K = self._K_scan if scan else self._K
        w, h = (self.sw, self.sh) if scan else (self.width, self.height)
        eps = self._eps_scan if scan else 0.3
        step = _camera_batch(len(s))
        for i in range(0, len(cams), step):
            sel = torch.as_tensor(cams[i : i + step], dtype=torch.long, device=self.device)
            part = splat_log_transmittance(s, self._viewmats[sel], K[None].expand(len(sel), 3, 3), w, h, eps2d=eps)
            if isinstance(buf, dict):
                for j, c in enumerate(cams[i : i + step]):
                    buf[c] += part[j]
            else:
                buf[sel] += part

    def _splat_exact(self, idx, chunks):
        logt = {j: self._exact_logt[j] for j in idx}
        for s in chunks:
            self._splat_into(logt, idx, s, scan=False)

    def fast_ratios(self) -> np.ndarray:
        """Hole ratio of every candidate from the reduced-resolution maps (exact at scale 1)."""

        import torch
        import torch.nn.functional as F

        scan = self._scan_logt
        if self.exact_only or scan is None:
            return self.exact_ratios(range(self.n))
        if self._fast is None:
            t0 = time.perf_counter()
            ratios = np.zeros(self.n)
            step = max(1, (1 << 22) // (self.width * self.height))
            with torch.no_grad():
                for i in range(0, self.n, step):
                    alpha = 1.0 - torch.exp(crop_padding(scan[i : i + step], self.sw, self.sh))
                    if (self.sw, self.sh) != (self.width, self.height):
                        alpha = F.interpolate(
                            alpha[:, None], size=(self.height, self.width), mode="bilinear", align_corners=False
                        )[:, 0]
                    ratios[i : i + step] = hole_masks(alpha).float().mean(dim=(1, 2)).double().cpu().numpy()
            self._fast = ratios
            self.seconds += time.perf_counter() - t0
        return self._fast.copy()

    def exact_ratios(self, idx) -> np.ndarray:
        """Hole ratios of candidates `idx` at full size, from their full-size maps (built on first
        use from every chunk so far, then kept up to date by `add`)."""

        import torch

        t0 = time.perf_counter()
        idx = [int(i) for i in idx]
        new = [j for j in idx if j not in self._exact_logt]
        with torch.no_grad():
            if new:
                for j in new:
                    self._exact_logt[j] = torch.zeros(self.height + 2 * PAD, self.width + 2 * PAD, device=self.device)
                self._splat_exact(new, self._chunks)
            todo = [j for j in idx if j not in self._exact]
            for i in range(0, len(todo), 16):
                part = todo[i : i + 16]
                logt = torch.stack([self._exact_logt[j] for j in part])
                alpha = 1.0 - torch.exp(crop_padding(logt, self.width, self.height))
                for j, r in zip(part, hole_masks(alpha).float().mean(dim=(1, 2)).double().cpu().tolist(), strict=True):
                    self._exact[j] = r
        self.seconds += time.perf_counter() - t0
        return np.array([self._exact[j] for j in idx], dtype=np.float64)

    def exact_alpha(self, j: int):
        """Full-size alpha [H, W] of candidate j (builds its map if needed)."""
        import torch

        self.exact_ratios([j])
        return 1.0 - torch.exp(crop_padding(self._exact_logt[int(j)], self.width, self.height))


@dataclass
class ScanResult:
    ratios: np.ndarray  # [N] hole ratio per candidate
    scale: float
    seconds: float


def scan_hole_ratios(
    g,
    poses: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    scale: float | None = None,
    keep: float | None = None,
    exact: bool = False,
) -> ScanResult:
    """One-shot hole ratios of every candidate pose (world_from_camera [N, 4, 4]) at size
    width × height: `HoleScan(...).add(g).fast_ratios()` (or its exact ratios)."""

    t0 = time.perf_counter()
    scan = HoleScan(poses, K, width, height, scale=scale, keep=keep, device=g.means.device).add(g)
    ratios = scan.exact_ratios(range(len(scan))) if exact else scan.fast_ratios()
    return ScanResult(ratios, scan.scale, time.perf_counter() - t0)


def scan_hole_ratios_full(
    g,
    poses: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    backend: str = "auto",
    threshold: float = ALPHA_THRESHOLD,
) -> ScanResult:
    """Reference scan: every candidate rendered at full size, one by one, with colour (upstream)."""

    import torch

    t0 = time.perf_counter()
    poses = np.asarray(poses, dtype=np.float64)
    ratios = np.zeros(poses.shape[0])
    dev = g.means.device
    Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        for i, p in enumerate(poses):
            vm = torch.as_tensor(invert_pose(p), dtype=torch.float32, device=dev)[None]
            res = render(g, vm, Kt, width, height, backend=backend)
            ratios[i] = float(hole_masks(res.alpha.float()).float().mean())
    return ScanResult(ratios, 1.0, time.perf_counter() - t0)
