r"""Multi-view consistency sampling (MCS) for a flow-matching model: the rectification math.

VistaDream's fine stage (docs/upstream.md#mcs-fine-stage) refines a coarse Gaussian scene by running the last
few steps of a diffusion sampler on several views at once and, at every step, pulling the
sampler towards what a Gaussian scene fitted to all views' current predictions renders. The
original does this on Stable Diffusion 1.5 (epsilon prediction, DDPM/LCM schedule). vd runs
Flux Fill, a rectified-flow (flow-matching) model, so the update has to be re-derived. This
module holds that derivation and the update itself, on plain tensors; `vd.stages.fine` wires it
to the model, the renderer and the optimiser.

Derivation
----------
Flux convention (rectified flow). A clean latent ``x0`` and a Gaussian noise ``eps`` are joined by
a straight line, with ``t = 1`` pure noise and ``t = 0`` the clean sample::

    x_t = (1 - t) * x0 + t * eps                                            (1)

The network predicts the velocity along that line, ``v = dx_t/dt = eps - x0``. Given ``x_t`` and
``v`` at time ``t``, (1) can be solved for both end points::

    x0_hat  = x_t - t * v                                                   (2)
    eps_hat = x_t + (1 - t) * v                                             (3)

and the Euler step of the sampler, from ``t`` to ``t_next < t``, is::

    x_next = x_t + (t_next - t) * v                                         (4)
           = (1 - t_next) * x0_hat + t_next * eps_hat                       (4')

(expand (4') with (2) and (3) to check). So one Euler step re-noises the predicted clean sample
with the predicted noise at the next, lower noise level. Every velocity ``u`` at ``(x_t, t)`` is
a pair (clean estimate, noise estimate), and (2)-(4) are affine in ``u``: blending velocities
with weights ``(1 - w, w)`` blends the clean estimates and the noise estimates with the same weights.

Rectification. The Gaussian scene fitted to all views' ``x0_hat`` (plus the anchor frames) is
re-rendered; encoding that render gives a latent ``z0~`` that is consistent across views. The
velocity that would make the model's clean estimate equal to ``z0~`` follows from (2)::

    v~ = (x_t - z0~) / t                    so that   x_t - t * v~ = z0~     (5)

(the analogue of upstream's implied noise ``eps~ = (x_t - sqrt(abar) z0~) / sqrt(1 - abar)``).
Its noise estimate is ``eps~ = (x_t - (1 - t) z0~) / t``: the noise that, with ``z0~``, explains
the current ``x_t``. The rectified velocity blends the model's and the implied one, the implied
one rescaled per sample (per view) to the predicted velocity's norm, as upstream rescales
``eps~`` to the std of ``eps``::

    r  = ||v|| / ||v~||                                                      (6)
    v* = (1 - w) * v + w * r * v~                                            (7)
    x_next = x_t + (t_next - t) * v*                                         (8)

Why the rescale (a trust region). With ``delta = z0~ - x0_hat``, (2) and (5) give
``v~ = v - delta / t``: the implied velocity differs from the prediction by the render's
disagreement divided by ``t``. Late in the schedule (small ``t``) that term explodes and an
unscaled ``v~`` would yank ``x_t`` far off the noise level the model expects at ``t_next``;
matching norms keeps the step length the model would take and only turns its direction.

Shrink, never stretch (vd's default, ``rescale="shrink"``: ``r = min(1, ||v|| / ||v~||)``). The
two-sided rule (``rescale="match"``, (6) as written) also *lengthens* ``v~`` when it is shorter than
``v``, and that overshoots. By (8), the implied part of the step moves ``x_t`` towards ``z0~``::

    x_next - z0~ = (1 - r (t - t_next) / t) (x_t - z0~)        (w = 1)          (6')

For ``r = 1`` the factor is ``t_next / t``: the state keeps exactly the noise level ``t_next``. For
``r > t / (t - t_next)`` the factor turns negative: the step jumps *past* the render. That is not
a corner case: the model's velocity is long whenever its clean estimate disagrees with the state's
clean content ``z0`` (if ``x_t = (1 - t) z0 + t eps``, then ``v = eps - z0 + (z0 - x0_hat) / t``),
e.g. where Flux Fill paints content into a hole that the rectified scene (a copy of the coarse
scene, no new Gaussians) still renders empty; ``||v|| / ||v~|| = 5.3`` was measured on the example
room scene (classical Telea stand-in for the model, ``t = 0.08``, ``t_next = 0.04``), a factor of
-1.6. With
``r <= 1`` the factor stays in ``[t_next / t, 1]``: the trust region only ever shortens the pull.

Why w = 1 with a perfect render lands on the render. Without rescaling (``r = 1``), (8) with
``v* = v~`` is, by (4'), ``x_next = (1 - t_next) z0~ + t_next eps~``: the state stays on the straight
line through ``z0~`` and the implied noise, whatever the model predicted. On the last step
``t_next = 0``, so ``x_next = x_t - t (x_t - z0~) / t = z0~`` exactly, and this holds for *any*
``x_t`` at the last step, so earlier steps do not matter. With rescaling, the last step gives::

    x_final = (1 - w) x0_hat + w z0~ + w (1 - r) (x_t - z0~)                  (9)

i.e. a convex blend of the model's and the rendered clean latent *plus leftover noise*
``w (1 - r) t v~``, which vanishes only when ``r = 1`` (``||v~|| = ||v||``) or ``w = 0``. That is the
exact condition. vd therefore applies the rescale on every step except the one that ends at
``t_next = 0`` (``rescale_final=False``, the default): the output is exactly the blend
``(1 - w) x0_hat + w z0~`` (so ``w = 1`` with a perfect render lands on the render, to rounding),
while earlier steps keep the trust region. Pass ``rescale_final=True`` to reproduce the naive rule
and (9).

Why w = 0 is the plain sampler. With ``w = 0`` the blend returns the model's velocity itself (the
code short-circuits, so no ``0 * inf`` can leak in from a degenerate ``v~``) and (8) is (4): the
trajectory is bit-identical to the plain Euler sampler on the same schedule and start.

Start. As upstream, MCS refines only the last ``steps`` of a ``total_steps`` schedule: the coarse
renders are encoded (``z``) and noised to the first of those times with (1),
``x = (1 - t_start) z + t_start eps``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = [
    "add_noise",
    "predict_x0",
    "predict_noise",
    "implied_velocity",
    "rescale_factor",
    "RESCALE_MODES",
    "blend_velocity",
    "euler_step",
    "rectified_step",
    "start_index",
    "sample",
]

_EPS = 1e-12


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over every dim but the first, shaped to broadcast against `x` ([B, 1, 1, ...])."""
    n = x.reshape(x.shape[0], -1).norm(dim=1)
    return n.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


def add_noise(z0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. (1): the point at time `t` on the straight line from `z0` (t=0) to `noise` (t=1)."""
    return (1.0 - t) * z0 + t * noise


def predict_x0(x_t: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. (2): the clean estimate implied by velocity `v` at `(x_t, t)`."""
    return x_t - t * v


def predict_noise(x_t: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. (3): the noise estimate implied by velocity `v` at `(x_t, t)`."""
    return x_t + (1.0 - t) * v


def implied_velocity(x_t: torch.Tensor, z0: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. (5): the velocity whose clean estimate at `(x_t, t)` is exactly `z0`; needs t > 0."""
    if not t > 0.0:
        raise ValueError(f"the implied velocity needs t > 0, got t={t}")
    return (x_t - z0) / t


RESCALE_MODES = ("shrink", "match", "none")


def _mode(rescale) -> str:
    if rescale is True:
        return "shrink"
    if rescale is False or rescale is None:
        return "none"
    if rescale not in RESCALE_MODES:
        raise ValueError(f"rescale must be one of {RESCALE_MODES}, got {rescale!r}")
    return rescale


def rescale_factor(v: torch.Tensor, v_implied: torch.Tensor, mode: str = "match") -> torch.Tensor:
    """Eq. (6): per-sample ||v|| / ||v~||, shaped to broadcast; 1 where ||v~|| is zero.

    mode "match" is (6) as written, "shrink" caps it at 1 (never lengthens v~), "none" is 1.
    """
    mode = _mode(mode)
    nv = _per_sample_norm(v)
    ni = _per_sample_norm(v_implied)
    if mode == "none":
        return torch.ones_like(nv)
    r = torch.where(ni > _EPS, nv / ni.clamp_min(_EPS), torch.ones_like(nv))
    return r.clamp_max(1.0) if mode == "shrink" else r


def blend_velocity(v: torch.Tensor, v_implied: torch.Tensor, weight: float, *, rescale="shrink") -> torch.Tensor:
    """Eq. (7): (1 - w) v + w r v~ with r from `rescale_factor(mode=rescale)`. `weight` 0 returns `v` itself."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the rectification weight must be in [0, 1], got {weight}")
    mode = _mode(rescale)
    if weight == 0.0:
        return v
    vi = v_implied * rescale_factor(v, v_implied, mode) if mode != "none" else v_implied
    if weight == 1.0:
        return vi
    return (1.0 - weight) * v + weight * vi


def euler_step(x_t: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """Eq. (4)/(8): one Euler step of the flow ODE from `t` to `t_next`."""
    return x_t + (t_next - t) * v


def rectified_step(
    x_t: torch.Tensor,
    v: torch.Tensor,
    z0_render: torch.Tensor | None,
    t: float,
    t_next: float,
    weight: float,
    *,
    rescale="shrink",
    rescale_final: bool = False,
) -> tuple[torch.Tensor, dict]:
    """One MCS step: blend the model velocity `v` with the render's implied velocity, then step.

    `z0_render` is the encoded latent of the rectified scene's render at every view ([B, ...] like
    `x_t`); None or `weight == 0` gives the plain Euler step. `rescale` is "shrink" (default, r <= 1),
    "match" (eq. 6 as written) or "none" (True/False mean "shrink"/"none"); it is skipped on the
    step that ends at `t_next == 0` unless `rescale_final` (see the module docstring, eq. 9).
    Computes in float32 at least; returns (x_next in x_t's dtype, stats) where stats holds the
    per-sample rescale factor and the norms of v and v~ (lists of floats) for the summary.
    """
    out_dtype = x_t.dtype
    work = torch.promote_types(x_t.dtype, torch.float32)
    xf = x_t.to(work)
    vf = v.to(work)
    stats: dict = {"t": float(t), "t_next": float(t_next), "weight": float(weight)}
    if z0_render is None or weight == 0.0:
        stats.update(rescale=None, norm_v=_per_sample_norm(vf).flatten().tolist(), norm_v_implied=None)
        return euler_step(xf, vf, t, t_next).to(out_dtype), stats
    vi = implied_velocity(xf, z0_render.to(work), t)
    mode = _mode(rescale)
    do_rescale = mode != "none" and (rescale_final or t_next > 0.0)
    r = rescale_factor(vf, vi, mode) if do_rescale else torch.ones_like(_per_sample_norm(vf))
    v_star = blend_velocity(vf, vi * r, weight, rescale="none")
    stats.update(
        rescale=r.flatten().tolist(),
        norm_v=_per_sample_norm(vf).flatten().tolist(),
        norm_v_implied=_per_sample_norm(vi).flatten().tolist(),
    )
    return euler_step(xf, v_star, t, t_next).to(out_dtype), stats


def start_index(total_steps: int, steps: int) -> int:
    """Index into a `total_steps + 1`-point schedule where the last `steps` steps begin."""
    if total_steps < 1:
        raise ValueError(f"total steps must be at least 1, got {total_steps}")
    if not 1 <= steps <= total_steps:
        raise ValueError(f"refinement steps must be between 1 and the total steps ({total_steps}), got {steps}")
    return total_steps - steps


def sample(
    x: torch.Tensor,
    timesteps: Sequence[float],
    velocity: Callable[[torch.Tensor, float], torch.Tensor],
    render: Callable[[torch.Tensor, int], torch.Tensor] | None,
    weight: float,
    *,
    rescale="shrink",
    rescale_final: bool = False,
) -> torch.Tensor:
    """Run MCS from `x` at `timesteps[0]` down the schedule (the stage's loop without caching).

    `velocity(x_t, t)` is the model; `render(x0_hat, k)` returns the latent of the rectified scene's
    render given the current clean estimates (None, or `weight` 0, runs the plain Euler sampler).
    """
    ts = [float(t) for t in timesteps]
    for k in range(len(ts) - 1):
        t, t_next = ts[k], ts[k + 1]
        v = velocity(x, t)
        z0 = None
        if render is not None and weight > 0.0:
            work = torch.promote_types(x.dtype, torch.float32)
            z0 = render(predict_x0(x.to(work), v.to(work), t), k)
        x, _ = rectified_step(x, v, z0, t, t_next, weight, rescale=rescale, rescale_final=rescale_final)
    return x
