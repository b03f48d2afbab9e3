"""Keep Gaussians added to a scene out of sight of a camera whose render must not change.

What `vd coarse` adds after the scaffold (an added view's Gaussians, the Gaussians that seal pinholes) is
meant for what the input camera cannot see: behind or beside the surfaces it fitted. Placing them behind by
depth is not enough. The rasteriser orders Gaussians by their centres, so one behind a surface seen at a
grazing angle can still be drawn before that surface's farther Gaussians, and a Gaussian stretched along a
slope another view sees at a grazing angle reaches pixels its centre does not (the street's added views cost
its input view 0.2 dB that way, bench/quality.md). So the test is the camera's render itself (`unseen_by`):
each new Gaussian's share of the camera's pixels (`blend_weights`), then the render's colours.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vd import cameras
from vd.gaussians import Gaussians
from vd.geometry import quat_to_rotmat_torch
from vd.render import render
from vd.render.culling import sharing_pixels
from vd.splat_constants import C0

CHANGE = 2.0 / 255.0  # the most added Gaussians may change the protected camera's colours (behind a
# surface of alpha 0.99 one still shows by 1 %)
MAX_CHECKS = 4  # renders of the protected camera per test
# the most of a pixel a kept Gaussian may be blended into, summed over the camera's pixels: behind a surface of
# alpha 0.997 a Gaussian one pixel wide still takes 0.003; one in sight takes about its footprint (~1.5 px)
WEIGHT_LIMIT = 0.02
EXTENT = 2.0  # σ: how far out a Gaussian must be hidden (its alpha there is e^-2 of its peak)

Camera = tuple[np.ndarray, np.ndarray, int, int]  # (world-from-camera 4×4, K 3×3, width, height)


def extent_points(g: Gaussians) -> torch.Tensor:
    """[5·N, 3]: each Gaussian's centre, then its centre ± EXTENT σ along each of its two longer axes
    (block by block: all the centres first)."""
    R = quat_to_rotmat_torch(g.normalized_quats())
    s = g.scales()
    order = torch.argsort(s, dim=1, descending=True)
    points = [g.means]
    for k in range(2):
        axis = torch.gather(R, 2, order[:, k].view(-1, 1, 1).expand(-1, 3, 1))[..., 0]
        step = EXTENT * torch.gather(s, 1, order[:, k : k + 1]) * axis
        points += [g.means + step, g.means - step]
    return torch.cat(points)


def blend_weights(
    scene: Gaussians, new: Gaussians, cfw: torch.Tensor, K: torch.Tensor, width: int, height: int, backend: str
) -> torch.Tensor:
    """[N]: how much of the camera's pixels each of `new` is blended into when drawn with `scene`
    (Σ over pixels of its weight αᵢ·Tᵢ), read off as the gradient of the summed render with respect
    to its colour: one render and its backward pass, however many Gaussians there are."""
    dc = torch.zeros(len(new), 1, 3, device=new.means.device, requires_grad=True)  # colour 0.5: not clamped
    probe = Gaussians(new.means.detach(), new.log_scales.detach(), new.quats.detach(), new.opacity_logits.detach(), dc)
    with torch.enable_grad():
        res = render(Gaussians.cat([scene.detach(), probe]), cfw[None], K[None], width, height, backend=backend)
        drawn = res.rgb[..., 0].sum()
        if not drawn.requires_grad:  # nothing is drawn into the camera
            return torch.zeros(len(new), device=new.means.device)
        drawn.backward()
    assert dc.grad is not None
    return dc.grad[:, 0, 0] / C0


@torch.no_grad()
def unseen_by(
    camera: Camera, g: Gaussians, backend: str
) -> Callable[[Gaussians, list[Gaussians]], tuple[torch.Tensor, bool]]:
    """A test of (new Gaussians, the ones added earlier) → (keep: bool [N] of the new ones, verified).

    It drops the new Gaussians blended into more than WEIGHT_LIMIT of a pixel of `camera`'s render of `g`
    with the earlier and the new ones (`blend_weights`). Then it renders the rest, drops those whose
    centre or extent (`extent_points`) lands on or near a pixel whose colour still changed by more than
    CHANGE, and renders again, looking farther around the changed pixels each round, until nothing
    changes (verified) or MAX_CHECKS renders have been spent (not verified: what is kept may still
    change it)."""
    pose, K, width, height = camera
    dev = g.means.device
    cfw = torch.as_tensor(cameras.invert_pose(np.asarray(pose)), dtype=torch.float32, device=dev)
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=dev)

    def draw(scene: Gaussians) -> torch.Tensor:
        res = render(scene, cfw[None], Kt[None], width, height, backend=backend)
        return res.rgb[0].float()

    base = draw(g)

    def pixels(points: torch.Tensor) -> torch.Tensor:
        p = points @ cfw[:3, :3].T + cfw[:3, 3]
        uv = (p @ Kt.T)[:, :2] / p[:, 2:3].clamp_min(1e-9)
        u, v = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (p[:, 2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        return torch.where(inside, v.clamp(0, height - 1) * width + u.clamp(0, width - 1), torch.full_like(u, -1))

    def test(new: Gaussians, earlier: list[Gaussians]) -> tuple[torch.Tensor, bool]:
        if len(new) == 0:
            return torch.ones(0, dtype=torch.bool, device=dev), True
        scene = Gaussians.cat([g, *earlier]) if earlier else g
        # only the pixels the new Gaussians can be drawn into can change: render what reaches them
        near, reach = sharing_pixels(scene, new, cfw, Kt, width, height)
        scene = scene.select(near)
        keep = blend_weights(scene, new, cfw, Kt, width, height, backend) <= WEIGHT_LIMIT
        at = pixels(extent_points(new)).reshape(-1, len(new))  # [5, N]
        for check in range(MAX_CHECKS):
            if not bool(keep.any()):
                return keep, True
            changed = reach & ((draw(Gaussians.cat([scene, new.select(keep)])) - base).abs().amax(dim=-1) > CHANGE)
            if not bool(changed.any()):
                return keep, True
            # each round looks farther around a changed pixel for the Gaussians that changed it
            size = 3 + 4 * check
            near = torch.nn.functional.max_pool2d(changed.float()[None, None], size, stride=1, padding=size // 2)
            flat = torch.cat([near.reshape(-1) > 0, changed.new_zeros(1)])  # index -1: outside the camera
            keep &= ~flat[at].any(dim=0)
        return keep, False

    return test
