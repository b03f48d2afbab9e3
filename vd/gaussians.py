"""The Gaussians container: pre-activation parameters of a 3D Gaussian-splatting scene.

Stored forms follow the INRIA 3DGS convention (and the PLY layout in `vd.ply`):

- ``means``           [N,3] world positions
- ``log_scales``      [N,3] log sigma, activated with ``exp``
- ``quats``           [N,4] unnormalised quaternion (w, x, y, z), activated with ``normalize``
- ``opacity_logits``  [N]   logit alpha, activated with ``sigmoid``
- ``sh``              [N,K,3] SH coefficients, K = (deg+1)^2; ``RGB = 0.5 + C0 * sh[:,0]``

All tensors are float32 on one device. torch is imported at module import: this module is
library code and never imported by `vd.commands` at CLI start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from vd.splat_constants import C0

LOGIT_EPS = 1e-4
"""Probabilities are clamped to [eps, 1 - eps] before logit, so 0/1 never give infinite logits."""

_FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh")


def safe_logit(p: Tensor | float, eps: float = LOGIT_EPS) -> Tensor:
    """logit(clamp(p, eps, 1-eps)): finite for black, white and fully opaque inputs."""
    p = torch.as_tensor(p, dtype=torch.float32).clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * C0 + 0.5


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_degree_from_bases(k: int) -> int:
    d = int(round(math.sqrt(k))) - 1
    if d < 0 or (d + 1) ** 2 != k or d > 3:
        raise ValueError(f"{k} SH coefficients per channel is not (deg+1)^2 for a degree 0..3")
    return d


def _as_tensor(x, device=None) -> Tensor:
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:
            x = x.copy()
        x = torch.from_numpy(x)
    t = torch.as_tensor(x)
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    if device is not None:
        t = t.to(device)
    return t


@dataclass
class Gaussians:
    means: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        dev = torch.as_tensor(self.means).device if isinstance(self.means, Tensor) else None
        for name in _FIELDS:
            setattr(self, name, _as_tensor(getattr(self, name), dev))
        n = self.means.shape[0]
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise ValueError(f"means must be [N,3], got {tuple(self.means.shape)}")
        expect = {"log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,)}
        for name, shape in expect.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.sh.ndim == 2 and self.sh.shape[1] == 3:  # [N,3] DC only
            self.sh = self.sh[:, None, :]
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"sh must be [N,K,3], got {list(self.sh.shape)}")
        sh_degree_from_bases(self.sh.shape[1])

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_bases(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def tensors(self) -> dict[str, Tensor]:
        """{field name: tensor}, e.g. for `vd.cache.codecs.encode_tensors` (safetensors)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_tensors(cls, d: dict, device=None) -> Gaussians:
        """Inverse of `tensors()` (numpy arrays or tensors, e.g. from `codecs.decode_tensors`)."""
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise ValueError(f"missing Gaussian fields: {', '.join(missing)}")
        g = cls(**{k: _as_tensor(d[k]) for k in _FIELDS})
        return g.to(device) if device is not None else g

    def _map(self, fn) -> Gaussians:
        return Gaussians(**{name: fn(getattr(self, name)) for name in _FIELDS})

    def to(self, device) -> Gaussians:
        return self._map(lambda t: t.to(device))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def clone(self) -> Gaussians:
        return self._map(lambda t: t.detach().clone())

    def requires_grad_(self, flag: bool = True) -> Gaussians:
        for name in _FIELDS:
            getattr(self, name).requires_grad_(flag)
        return self

    def select(self, mask_or_idx) -> Gaussians:
        """Gaussians at a boolean mask [N] or an index array/list (numpy or torch)."""
        idx = mask_or_idx
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        idx = torch.as_tensor(idx, device=self.device)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ValueError(f"mask must be [{len(self)}], got {list(idx.shape)}")
        else:
            idx = idx.long().reshape(-1)
        return self._map(lambda t: t[idx])

    def __getitem__(self, key) -> Gaussians:
        if isinstance(key, slice):
            return self._map(lambda t: t[key])
        return self.select(key)

    def with_sh_degree(self, degree: int) -> Gaussians:
        """Truncate or zero-pad the SH coefficients to `degree`."""
        k = num_sh_bases(degree)
        cur = self.sh.shape[1]
        if k <= cur:
            sh = self.sh[:, :k]
        else:
            pad = torch.zeros(len(self), k - cur, 3, dtype=self.sh.dtype, device=self.device)
            sh = torch.cat([self.sh, pad], dim=1)
        return Gaussians(self.means, self.log_scales, self.quats, self.opacity_logits, sh)

    @classmethod
    def cat(cls, items: Sequence[Gaussians] | Iterable[Gaussians]) -> Gaussians:
        """Concatenate; SH degrees are raised to the highest one (extra coefficients zero)."""
        items = [g for g in items]
        if not items:
            return cls.empty()
        deg = max(g.sh_degree for g in items)
        dev = items[0].device
        items = [g.with_sh_degree(deg).to(dev) for g in items]
        return cls(**{name: torch.cat([getattr(g, name) for g in items], dim=0) for name in _FIELDS})

    @classmethod
    def empty(cls, sh_degree: int = 0, device="cpu") -> Gaussians:
        k = num_sh_bases(sh_degree)
        z = lambda *s: torch.zeros(*s, dtype=torch.float32, device=device)  # noqa: E731
        return cls(z(0, 3), z(0, 3), z(0, 4), z(0), z(0, k, 3))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_rgb(
        cls,
        means,
        rgb,
        scales=None,
        *,
        log_scales=None,
        quats=None,
        opacity=0.8,
        sh_degree: int = 0,
        device=None,
    ) -> Gaussians:
        """Build Gaussians from activated values: rgb in [0,1], scales sigma (or log_scales),
        quats (default identity), opacity (scalar or [N], in (0,1), clamped before logit)."""
        means = _as_tensor(means, device)
        dev = means.device
        n = means.shape[0]
        rgb = _as_tensor(rgb, dev).reshape(n, 3)
        if log_scales is not None:
            ls = _as_tensor(log_scales, dev)
        elif scales is not None:
            s = _as_tensor(scales, dev)
            if s.ndim == 0 or s.numel() == n:
                s = s.reshape(-1, 1).expand(n, 3) if s.ndim <= 1 else s
            ls = torch.log(s.clamp_min(1e-12)).expand(n, 3).contiguous()
        else:
            ls = torch.full((n, 3), math.log(0.01), device=dev)
        if quats is None:
            q = torch.zeros(n, 4, device=dev)
            q[:, 0] = 1.0
        else:
            q = _as_tensor(quats, dev)
        op = _as_tensor(opacity, dev)
        op = op.expand(n) if op.ndim == 0 else op.reshape(n)
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, device=dev)
        sh[:, 0] = rgb_to_sh0(rgb)
        return cls(means, ls, q, safe_logit(op).to(dev), sh)

    # ------------------------------------------------------------------ activations
    def colors(self) -> Tensor:
        """[N,3] RGB in [0,1] from the DC coefficient."""
        return sh0_to_rgb(self.sh[:, 0]).clamp(0.0, 1.0)

    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def normalized_quats(self) -> Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)

    def __repr__(self) -> str:
        return f"Gaussians(n={len(self)}, sh_degree={self.sh_degree}, device={self.device})"


__all__ = [
    "C0",
    "Gaussians",
    "LOGIT_EPS",
    "num_sh_bases",
    "rgb_to_sh0",
    "safe_logit",
    "sh0_to_rgb",
    "sh_degree_from_bases",
]
