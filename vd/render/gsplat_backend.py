"""The CUDA backend: gsplat.rasterization with render_mode "RGB+ED", packed=False."""

from __future__ import annotations


def render_gsplat(g, viewmats, Ks, width: int, height: int, *, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3):
    import torch
    from gsplat import rasterization

    deg = g.sh_degree
    out, alpha, _meta = rasterization(
        means=g.means.contiguous(),
        quats=g.quats.contiguous(),  # gsplat normalises
        scales=torch.exp(g.log_scales),
        opacities=torch.sigmoid(g.opacity_logits),
        colors=g.sh.contiguous(),  # [N,K,3] SH coefficients; gsplat evaluates them and adds 0.5
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=deg,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    return out[..., :3], out[..., 3], alpha[..., 0]
