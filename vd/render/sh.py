"""Real spherical harmonics up to degree 3 (the 3DGS / gsplat convention)."""

from __future__ import annotations

import torch
from torch import Tensor

from vd.splat_constants import C0


def sh_bases(k: int, dirs: Tensor) -> Tensor:
    """[..., k] SH basis values at unit directions [..., 3] (Sloan's fast form, as in gsplat)."""
    out = [torch.full_like(dirs[..., 0], C0)]
    if k > 1:
        x, y, z = dirs.unbind(-1)
        a = -0.48860251190292
        b1, b2, b3 = a * y, -a * z, a * x
        out += [b1, b2, b3]
        if k > 4:
            z2 = z * z
            tb = -1.092548430592079 * z
            ta = 0.5462742152960395
            c1 = x * x - y * y
            s1 = 2 * x * y
            out += [ta * s1, tb * y, 0.9461746957575601 * z2 - 0.3153915652525201, tb * x, ta * c1]
            if k > 9:
                tc = -2.285228997322329 * z2 + 0.4570457994644658
                tb = 1.445305721320277 * z
                ta = -0.5900435899266435
                c2 = x * c1 - y * s1
                s2 = x * s1 + y * c1
                out += [
                    ta * s2,
                    tb * s1,
                    tc * y,
                    z * (1.865881662950577 * z2 - 1.119528997770346),
                    tc * x,
                    tb * c1,
                    ta * c2,
                ]
    return torch.stack(out[:k], dim=-1)


def eval_sh(sh: Tensor, dirs: Tensor | None) -> Tensor:
    """Colours [N,3] = clamp_min(sum_k basis_k(dir) * sh[:,k] + 0.5, 0) (gsplat's activation)."""
    k = sh.shape[1]
    if k == 1 or dirs is None:
        return (sh[:, 0] * C0 + 0.5).clamp_min(0.0)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    bases = sh_bases(k, dirs)  # [N,k]
    return (torch.einsum("nk,nkc->nc", bases, sh) + 0.5).clamp_min(0.0)
