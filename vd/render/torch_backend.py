"""A vectorised tile-based EWA rasteriser in pure torch (CPU, differentiable through autograd).

It follows gsplat 1.5's classic pinhole model so the two backends agree:

- projection: camera-space means, J·W·Σ·Wᵀ·Jᵀ with the view-frustum clamp of the Jacobian,
  ``eps2d`` (0.3 px²) added to the 2D covariance, conic = its inverse; per-axis bounding radii
  ``ceil(3.33·σ)``; culled when behind ``near``, beyond ``far`` or outside the image;
- pixel centres at (x + 0.5, y + 0.5);
- alpha = min(0.999, o·exp(−σ)), skipped below 1/255, front-to-back compositing that stops
  when the transmittance would fall to 1e-4;
- colours from SH (+0.5, clamped at 0) with view directions from the camera centre;
- "RGB+ED": expected depth = Σ wᵢ zᵢ / Σ wᵢ;
- optionally a median depth: take the first Gaussian along the ray at which the transmittance falls to
  0.5 or below (accumulated alpha reaches 0.5), and the depth where the pixel's ray passes through it
  (where its density along the ray peaks: on its plane for a flat one); 0 where alpha never reaches 0.5.
  Front-to-back compositing pulls the expected depth toward the camera wherever Gaussians overlap in
  depth, and a Gaussian's centre depth is off a tilted surface away from the centre; the median depth
  sits on the surface that makes the pixel opaque.

The rasteriser assigns Gaussians to tiles (8×8 px by default), sorts the (tile, depth) pairs
once, groups tiles of similar list length into padded blocks [tiles, pixels-per-tile, L], gets σ
for every (pixel, Gaussian) of a block from one batched matmul (a per-pair quadratic form times
the tile's pixel monomials) and the transmittance from one cumprod along L, so a frame is a
handful of large tensor operations. `_Composite` has a hand-written backward (it keeps the
forward state of the first `keep_elems` elements and recomputes the rest).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vd.gaussians import Gaussians
from vd.geometry import quat_to_rotmat_torch
from vd.render.quats import unit_quats
from vd.render.sh import eval_sh
from vd.splat_constants import ALPHA_MAX, ALPHA_MIN, T_MIN

MEDIAN_T = 0.5  # the median depth is that of the Gaussian at which the transmittance falls to this
DEPTH_MODES = ("expected", "median", "both")  # both: the expected and the median depth, from one pass
SIGMA_MAX = 20.0  # exp(-20) = 2e-9: far below ALPHA_MIN for any opacity
FLAT, ROUND = 0.25, 0.75  # smallest/largest scale at or below which a Gaussian counts as flat, at or above round


def ewa_covariance_2d(tx, ty, tz, cam_cov, fx, fy, cx, cy, width: int, height: int, eps2d: float):
    """gsplat's classic pinhole EWA step: camera-space means (tx, ty, tz) and covariances
    cam_cov = (xx, xy, xz, yy, yz, zz) -> pixel coordinates (x, y) of the means and the 2D
    covariance (a, b, c) = J·Σ·Jᵀ + eps2d·I, with the Jacobian's view-frustum clamp
    (x/z and y/z held within 0.15·W/fx, 0.15·H/fy of the image). Elementwise: any shapes
    that broadcast (the renderer: [N]; the hole scan: [C,N] with intrinsics [C,1])."""
    c00, c01, c02, c11, c12, c22 = cam_cov
    z = torch.where(tz.abs() < 1e-12, torch.full_like(tz, 1e-12), tz)
    iz = 1.0 / z
    xz, yz = tx * iz, ty * iz
    xc = torch.minimum(torch.maximum(xz, -(cx / fx + 0.15 * width / fx)), (width - cx) / fx + 0.15 * width / fx)
    yc = torch.minimum(torch.maximum(yz, -(cy / fy + 0.15 * height / fy)), (height - cy) / fy + 0.15 * height / fy)
    # J = [[fx/z, 0, −fx·xc/z], [0, fy/z, −fy·yc/z]]
    u, v = fx * iz, fy * iz
    a = u * u * (c00 - 2 * xc * c02 + xc * xc * c22) + eps2d
    b = u * v * (c01 - xc * c12 - yc * c02 + xc * yc * c22)
    c = v * v * (c11 - 2 * yc * c12 + yc * yc * c22) + eps2d
    return fx * xz + cx, fy * yz + cy, a, b, c


def project(
    means: Tensor,
    covars: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
):
    """Project N Gaussians into one pinhole camera.

    Returns means2d [N,2], conics [N,3] (a, b, c of the inverse 2D covariance), depths [N],
    radii [N,2] (int, 0 for culled Gaussians).
    """
    R = viewmat[:3, :3]
    t = viewmat[:3, 3]
    mc = means @ R.T + t  # [N,3]
    cc = R @ covars @ R.T  # [N,3,3]
    tx, ty, tz = mc.unbind(-1)
    cam_cov = (cc[:, 0, 0], cc[:, 0, 1], cc[:, 0, 2], cc[:, 1, 1], cc[:, 1, 2], cc[:, 2, 2])
    mx, my, a, b, c = ewa_covariance_2d(tx, ty, tz, cam_cov, K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height, eps2d)
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([mx, my], dim=-1)
    with torch.no_grad():
        rx = torch.ceil(3.33 * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(3.33 * torch.sqrt(c.clamp_min(0)))
        valid = (a * c - b * b > 0) & (tz > near) & (tz < far)
        valid &= torch.isfinite(means2d).all(-1) & torch.isfinite(rx) & torch.isfinite(ry)
        m2 = means2d.detach()
        inside = (m2[:, 0] + rx > 0) & (m2[:, 0] - rx < width) & (m2[:, 1] + ry > 0) & (m2[:, 1] - ry < height)
        keep = valid & inside
        radii = torch.stack([rx, ry], -1)
        radii = torch.where(keep[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, conics, tz, radii


def covariances(g: Gaussians) -> Tensor:
    R = quat_to_rotmat_torch(unit_quats(g.quats))
    s = torch.exp(g.log_scales)
    M = R * s[:, None, :]
    return M @ M.transpose(1, 2)


@torch.no_grad()
def _tile_pairs(means2d: Tensor, radii: Tensor, depths: Tensor, tile: int, tw: int, th: int):
    """Sorted (tile id, Gaussian id) pairs for the visible Gaussians, depth-ordered in each tile."""
    dev = means2d.device
    vis = (radii > 0).all(-1).nonzero().squeeze(1)
    if vis.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e
    m = means2d[vis]
    r = radii[vis].to(m.dtype)
    tmin_x = torch.floor((m[:, 0] - r[:, 0]) / tile).clamp(0, tw).long()
    tmax_x = torch.ceil((m[:, 0] + r[:, 0]) / tile).clamp(0, tw).long()
    tmin_y = torch.floor((m[:, 1] - r[:, 1]) / tile).clamp(0, th).long()
    tmax_y = torch.ceil((m[:, 1] + r[:, 1]) / tile).clamp(0, th).long()
    nx = tmax_x - tmin_x
    ny = tmax_y - tmin_y
    cnt = nx * ny
    # depth order first, then a stable sort by tile keeps depth order inside each tile
    order = torch.argsort(depths[vis], stable=True)
    order = order[cnt[order] > 0]
    cnt_o = cnt[order]
    total = int(cnt_o.sum())
    if total == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return e, e
    rep = torch.repeat_interleave(torch.arange(order.numel(), device=dev), cnt_o)
    starts = torch.cumsum(cnt_o, 0) - cnt_o
    k = torch.arange(total, device=dev) - starts[rep]
    go = order[rep]
    nxo = nx[go]
    tx = tmin_x[go] + k % nxo
    ty = tmin_y[go] + torch.div(k, nxo, rounding_mode="floor")
    tile_id = ty * tw + tx
    tile_id, perm = torch.sort(tile_id, stable=True)
    gid = vis[go[perm]]
    return tile_id, gid


def _pixel_basis(tile: int, dtype) -> Tensor:
    """[6, B] monomials (1, u, v, u², v², uv) of the tile-local pixel centres (u, v)."""
    v, u = torch.meshgrid(
        torch.arange(tile, dtype=torch.float64), torch.arange(tile, dtype=torch.float64), indexing="ij"
    )
    u = u.reshape(-1) + 0.5
    v = v.reshape(-1) + 0.5
    return torch.stack([torch.ones_like(u), u, v, u * u, v * v, u * v]).to(dtype)


def _composite_fwd(coef_t: Tensor, op: Tensor, basis_t: Tensor):
    """Front-to-back compositing weights of one padded block, pixel-major layout.

    coef_t [t,6,L] (quadratic form of σ over the tile-local pixel monomials), op [t,L],
    basis_t [B,6]. Returns (w, alpha, one_minus_alpha, t_incl) each [t,B,L], where t_incl is the
    inclusive transmittance with the early-termination cut applied (0 once it falls to T_MIN).
    Only cheap elementwise ops plus one exp and one cumprod touch the [t,B,L] arrays.
    """
    sigma = torch.matmul(basis_t, coef_t)  # [t,B,L]
    # exp of a large negative number underflows through subnormals, ten times slower on x86; from SIGMA_MAX on
    # alpha is below 1/255 and cut to 0 anyway, so capping sigma there changes nothing
    alpha = sigma.clamp_(0.0, SIGMA_MAX).neg_().exp_().mul_(op[:, None, :])
    torch.nn.functional.threshold(alpha, ALPHA_MIN, 0.0, inplace=True)  # skip alpha < 1/255 (gsplat)
    alpha.clamp_max_(ALPHA_MAX)
    om = torch.rsub(alpha, 1.0)
    t_incl = torch.cumprod(om, dim=2)
    # gsplat stops before the transmittance would fall to T_MIN: drop that Gaussian and all later
    torch.nn.functional.threshold(t_incl, T_MIN, 0.0, inplace=True)
    w = t_incl * alpha
    w.div_(om)
    return w, alpha, om, t_incl


def _blend(feats: Tensor, w: Tensor) -> Tensor:
    """[t,F+1,B]: the features feats [t,L,F] and alpha (a feature of ones) blended with the weights w [t,B,L]."""
    fbt = torch.cat([feats, torch.ones_like(feats[:, :, :1])], dim=-1).transpose(1, 2).contiguous()
    # [t,F+1,L] @ [t,L,B]: the small dimension on the left keeps MKL's batched gemm fast
    return torch.bmm(fbt, w.transpose(1, 2))


class _Composite(torch.autograd.Function):
    """Alpha compositing of padded per-tile Gaussian lists with a hand-written backward.

    Inputs: coef_t [t,6,L] (quadratic form of σ over tile-local pixel coordinates), op [t,L]
    (opacities), feats [t,L,F] (colour, depth), basis_t [B,6]. Output [t,F+1,B] (features and
    alpha). The backward recomputes the forward: nothing of size [t,B,L] is kept between passes.
    """

    @staticmethod
    def forward(ctx, coef_t, op, feats, basis_t, keep_state: bool = False):
        w, alpha, om, t_incl = _composite_fwd(coef_t, op, basis_t)
        out = _blend(feats, w)
        ctx.keep_state = bool(keep_state) and any(ctx.needs_input_grad[:3])
        if ctx.keep_state:  # trade memory (12 bytes per element) for skipping the recompute
            ctx.save_for_backward(coef_t, op, feats, basis_t, w, alpha, om, t_incl)
        else:
            ctx.save_for_backward(coef_t, op, feats, basis_t)
        return out

    @staticmethod
    def backward(ctx, g_out):
        if ctx.keep_state:
            coef_t, op, feats, basis_t, w, alpha, om, t_incl = ctx.saved_tensors
        else:
            coef_t, op, feats, basis_t = ctx.saved_tensors
            w, alpha, om, t_incl = _composite_fwd(coef_t, op, basis_t)
        fbt = torch.cat([feats, torch.ones_like(feats[:, :, :1])], dim=-1).transpose(1, 2).contiguous()  # [t,F+1,L]
        g_out = g_out.contiguous()  # [t,F+1,B]
        g_feats = torch.bmm(g_out, w)[:, :-1].transpose(1, 2)  # [t,L,F]
        fg = torch.bmm(g_out.transpose(1, 2), fbt)  # [t,B,L]  f_i · g
        wfg = w * fg
        # S_i = sum_{j>i} w_j (f_j·g) = total - inclusive prefix sum
        suffix = torch.cumsum(wfg, dim=2).neg_().add_(wfg.sum(dim=2, keepdim=True))
        # dL/dalpha_i = T_i (f_i·g) - S_i / (1 - alpha_i), with T_i = t_incl_i / (1 - alpha_i);
        # both terms vanish after the early-termination cut (t_incl = 0 and S = 0 there)
        d = fg.mul_(t_incl).sub_(suffix).div_(om)
        # alpha = op * exp(-sigma) (zero below 1/255, clamped at ALPHA_MAX: no gradient there)
        # (threshold on -alpha, in place, keeps alpha where alpha < ALPHA_MAX, else 0: cheaper than where())
        da = d.mul_(torch.nn.functional.threshold(alpha.neg(), -ALPHA_MAX, 0.0, inplace=True)).neg_()
        g_op = da.sum(dim=1) / op.clamp_min(1e-30)  # [t,L]
        g_coef_t = torch.matmul(basis_t.T, da).neg_()  # [t,6,L]
        return g_coef_t, g_op, g_feats, None, None


def rasterize(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    feats: Tensor,
    radii: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    *,
    tile: int = 8,
    block_elems: int = 1 << 22,
    keep_elems: int = 1 << 25,
    median: bool = False,
):
    """Composite N projected Gaussians front to back; returns (feats [H,W,F], alpha [H,W], median_id).

    block_elems bounds the padded [tiles, L, pixels] block size; when gradients are needed the
    compositing state of the first keep_elems elements (12 bytes each) is kept for the backward
    pass instead of being recomputed. median=True: median_id [H,W] (long) is the index of the first
    Gaussian in each pixel's list at which the transmittance falls to MEDIAN_T (-1 where it never
    does); None otherwise.
    """
    dev, dt = means2d.device, means2d.dtype
    F = feats.shape[1]
    tw = (width + tile - 1) // tile
    th = (height + tile - 1) // tile
    T = tw * th
    B = tile * tile
    tile_id, gid = _tile_pairs(means2d.detach(), radii, depths.detach(), tile, tw, th)
    out = torch.zeros(T, B, F + 1, dtype=dt, device=dev)
    med_img = torch.full((T, B), -1, dtype=torch.long, device=dev)
    if gid.numel() == 0:
        img = out
    else:
        N = means2d.shape[0]
        # one table of per-Gaussian values, gathered once per block; row N pads with opacity 0
        tab = torch.cat([means2d, conics, opacities[:, None], feats], dim=1)
        tab = torch.cat([tab, torch.zeros_like(tab[:1])], dim=0)
        basis_t = _pixel_basis(tile, dt).to(dev).T.contiguous()  # [B,6]
        counts = torch.bincount(tile_id, minlength=T)
        starts = torch.cumsum(counts, 0) - counts
        tiles = (counts > 0).nonzero().squeeze(1)
        tiles = tiles[torch.argsort(counts[tiles], stable=True)]
        tcounts = counts[tiles].tolist()
        results, ids, medians = [], [], []
        i = 0
        kept = 0
        nt = len(tcounts)
        while i < nt:
            # grow the block while the padded size stays in budget (counts ascend)
            j = i + 1
            while j < nt and (j + 1 - i) * tcounts[j] * B <= block_elems:
                j += 1
            blk = tiles[i:j]
            L = tcounts[j - 1]
            ar = torch.arange(L, device=dev)
            pos = starts[blk][:, None] + ar[None, :]
            live = ar[None, :] < counts[blk][:, None]
            g = torch.where(live, gid[pos.clamp_max(gid.numel() - 1)], torch.full_like(pos, N))
            G = tab[g]  # [t,L,6+F]
            x0 = (blk % tw).to(dt)[:, None] * tile
            y0 = torch.div(blk, tw, rounding_mode="floor").to(dt)[:, None] * tile
            dxm = G[..., 0] - x0  # [t,L] Gaussian centre in tile-local coordinates
            dym = G[..., 1] - y0
            a, b, c = G[..., 2], G[..., 3], G[..., 4]
            bx = b * dxm
            by = b * dym
            coef_t = torch.stack(
                [
                    0.5 * (a * dxm * dxm + c * dym * dym) + bx * dym,
                    -(a * dxm + by),
                    -(c * dym + bx),
                    0.5 * a,
                    0.5 * c,
                    b,
                ],
                dim=1,
            )  # [t,6,L]
            n_el = blk.numel() * L * B
            keep = kept + n_el <= keep_elems
            kept += n_el if keep else 0
            if median and not (torch.is_grad_enabled() and G.requires_grad):  # one compositing for both
                w, _, _, t_incl = _composite_fwd(coef_t, G[..., 5], basis_t)
                results.append(_blend(G[..., 6:], w))
                medians.append(_median_id(t_incl, g))
            else:
                results.append(_Composite.apply(coef_t, G[..., 5], G[..., 6:], basis_t, keep))
                if median:
                    medians.append(_median_of_block(coef_t, G[..., 5], g, basis_t))
            ids.append(blk)
            i = j
        img = out.index_copy(0, torch.cat(ids), torch.cat(results, 0).transpose(1, 2))
        if median:
            med_img = med_img.index_copy(0, torch.cat(ids), torch.cat(medians, 0))
    img = img.reshape(th, tw, tile, tile, F + 1).permute(0, 2, 1, 3, 4).reshape(th * tile, tw * tile, F + 1)
    img = img[:height, :width]
    median_id = None
    if median:
        median_id = med_img.reshape(th, tw, tile, tile).permute(0, 2, 1, 3).reshape(th * tile, tw * tile)
        median_id = median_id[:height, :width]
    return img[..., :F], img[..., F], median_id


def _median_of_block(coef_t: Tensor, op: Tensor, ids: Tensor, basis_t: Tensor) -> Tensor:
    """`_median_id` of a block whose compositing is not at hand (the transmittance is recomputed)."""
    with torch.no_grad():
        t_incl = _composite_fwd(coef_t.detach(), op.detach(), basis_t)[3]
    return _median_id(t_incl, ids)


@torch.no_grad()
def _median_id(t_incl: Tensor, ids: Tensor) -> Tensor:
    """[t,B]: the Gaussian id (from `ids` [t,L]) of the first Gaussian in each pixel's list where the
    transmittance t_incl [t,B,L] falls to MEDIAN_T (-1 where it never does)."""
    # after the early-termination cut t_incl is 0: those count as reached, which is right, since the
    # cut needs the transmittance below T_MIN and so falls after the median
    reached = t_incl <= MEDIAN_T
    hit = reached.any(dim=2)
    first = reached.to(torch.uint8).argmax(dim=2)  # argmax gives the first maximum
    chosen = torch.gather(ids, 1, first)
    return torch.where(hit, chosen, torch.full_like(chosen, -1))


def ray_hit_depth(g: Gaussians, ids: Tensor, viewmat: Tensor, K: Tensor) -> Tensor:
    """[H,W] z-depth where each pixel's ray (through its centre) passes closest to the centre of Gaussian
    ids[v,u] in its own metric, i.e. where that Gaussian's density along the ray peaks:
    z = dᵀΣ⁻¹μ / dᵀΣ⁻¹d with μ, Σ in camera space and d = ((u+0.5−cx)/fx, (v+0.5−cy)/fy, 1), held within
    3 of its largest sigmas of its centre's depth. For a flat Gaussian (smallest/largest scale <= FLAT) this
    is where the ray meets its plane, so a tilted surface of splats gives a continuous depth instead of steps
    at each splat's centre; a round one (>= ROUND) gives its centre's depth, linear in between. 0 where ids
    is -1; float64 inside (flat Gaussians make Σ⁻¹ ill-conditioned)."""
    H, W = ids.shape
    out = torch.zeros(H, W, dtype=g.means.dtype, device=g.means.device)
    v, u = (ids >= 0).nonzero(as_tuple=True)
    if v.numel() == 0:
        return out
    sel = ids[v, u]
    d64 = torch.float64
    R, t = viewmat[:3, :3].to(d64), viewmat[:3, 3].to(d64)
    mu = g.means[sel].to(d64) @ R.T + t
    Rg = R @ quat_to_rotmat_torch(unit_quats(g.quats[sel]).to(d64))  # [P,3,3] axes in camera space
    inv_s2 = torch.exp(-2 * g.log_scales[sel].to(d64))  # [P,3]
    Kd = K.to(d64)
    d = torch.stack(
        [(u.to(d64) + 0.5 - Kd[0, 2]) / Kd[0, 0], (v.to(d64) + 0.5 - Kd[1, 2]) / Kd[1, 1], torch.ones_like(mu[:, 0])],
        -1,
    )
    # Σ⁻¹ = Rg diag(1/s²) Rgᵀ: work in the Gaussian's axes
    dl = (Rg.transpose(1, 2) @ d[..., None])[..., 0]
    ml = (Rg.transpose(1, 2) @ mu[..., None])[..., 0]
    z = (dl * inv_s2 * ml).sum(-1) / (dl * inv_s2 * dl).sum(-1).clamp_min(1e-30)
    s = torch.exp(g.log_scales[sel].to(d64))
    reach = 3.0 * s.amax(-1)  # stay within the Gaussian
    z = torch.minimum(torch.maximum(z, mu[:, 2] - reach), mu[:, 2] + reach)
    # the peak is a surface point only on a flat Gaussian; on a round one it slides with the ray's angle, and
    # the centre's depth is the steadier estimate: blend by flatness (smallest/largest scale)
    flat = ((ROUND - s.amin(-1) / s.amax(-1)) / (ROUND - FLAT)).clamp(0, 1)
    z = mu[:, 2] + flat * (z - mu[:, 2])
    return out.index_put((v, u), z.to(out.dtype))


def render_torch(
    g: Gaussians,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    tile: int = 8,
    block_elems: int = 1 << 22,
    depth_mode: str = "expected",
):
    """Render each camera; returns rgb [C,H,W,3], the expected depth [C,H,W], alpha [C,H,W] and the median
    depth [C,H,W] (None unless depth_mode is "median" or "both")."""
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"depth_mode must be one of {DEPTH_MODES}, got {depth_mode!r}")
    covars = covariances(g)
    opac = torch.sigmoid(g.opacity_logits)
    rgbs, deps, alphas, medians = [], [], [], []
    for c in range(viewmats.shape[0]):
        vm = viewmats[c]
        means2d, conics, depths, radii = project(
            g.means, covars, vm, Ks[c], width, height, eps2d=eps2d, near=near, far=far
        )
        if g.sh.shape[1] > 1:
            campos = -vm[:3, :3].T @ vm[:3, 3]
            colors = eval_sh(g.sh, g.means - campos)
        else:
            colors = eval_sh(g.sh, None)
        feats = torch.cat([colors, depths[:, None]], dim=-1)
        img, alpha, median_id = rasterize(
            means2d,
            conics,
            opac,
            feats,
            radii,
            depths,
            width,
            height,
            tile=tile,
            block_elems=block_elems,
            median=depth_mode != "expected",
        )
        rgbs.append(img[..., :3])
        deps.append(img[..., 3] / alpha.clamp_min(1e-10))
        if median_id is not None:
            medians.append(ray_hit_depth(g, median_id, vm, Ks[c]))
        alphas.append(alpha)
    return torch.stack(rgbs), torch.stack(deps), torch.stack(alphas), torch.stack(medians) if medians else None
