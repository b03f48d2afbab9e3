"""Seal the pinholes that a moved camera sees in an optimised scene.

To sharpen what the input view sees, the optimiser shrinks and tilts Gaussians along the axes that
view foreshortens (the street's road, seen at 19°, shows its along-road axis at a third of its
length), at no cost the input view can see. A camera that moves closer or looks down more steeply
sees their rows part: sub-pixel gaps across whole surfaces, 1.55 % of the street's pixels below alpha
0.9 after a move forward (issue 26). Every way tried of keeping the optimiser from shrinking them cost
the input view 0.2–1.4 dB (bench/quality.md).

`seal_pinholes` leaves the optimised Gaussians as they are. It renders the scene at probe cameras
(`probe_poses`: moves of a given size along each axis and diagonal; `turn_poses`: turns), finds the pinholes there
(`pinholes`: gaps between opaque pixels, narrower than what `vd.holes.hole_masks` calls a hole, away
from depth jumps) and lifts one flat Gaussian behind each, pushed back along the probe's ray by BEHIND
pixel footprints, in the colour the render shows there (its colour over its alpha). Behind an opaque
surface it shows only through the gaps, in the surface's own colour. A crack at a depth jump (the render's
depth there mixes the two sides) or one that shows almost nothing is sealed with the farther surface beside
it (`farther_side`): what the nearer one uncovers. Where a surface is opaque but not quite, what lies far
behind it shows through and pulls its expected depth back (`leaks`): it is backed the same way, at its first
surface's (median) depth. Whether it is hidden from the
input view is checked on the input view's render itself (`keep_from`): the rasteriser orders Gaussians
by their centres, so depth alone does not say it (`vd.unseen`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from vd import cameras
from vd.align import spawn_edges
from vd.gaussians import Gaussians
from vd.holes import hole_masks
from vd.lift import gaussians_from_rgbd
from vd.render import render
from vd.unseen import unseen_by

PINHOLE_ALPHA = 0.9  # a covered pixel below this alpha shows the background through the surface
MIN_ALPHA = 0.05  # below this the render's depth and colour say too little to continue the surface
GAP = 2  # px to an opaque pixel on either side of a gap: gaps up to 3 px wide (vd.holes' masks hold wider ones)
BEHIND = 15.0  # pixel footprints along the probe's ray: far enough behind a surface seen at a grazing angle
# that its own Gaussians, up to 10 footprints long there (vd.lift.max_stretch), sort in front at the input view
SEAL_FOOTPRINT = 1.0  # in pixel spacings of the probe (vd.lift's `footprint`): wide enough to close a gap
SEAL_OPACITY = 0.99
# a surface's pixel whose expected depth lies this much beyond its first surface (the median depth) shows what
# is behind it: the street's facades, 98 % opaque at a move forward, showed 2 % of the sky 350 m behind them
# (the sky a move up needs there), which put their expected depth a third too far
LEAK = 0.1


def turn_poses(yaw_degrees: float, pitch_degrees: float) -> list[np.ndarray]:
    """World-from-camera poses at the origin turned right, left (by `yaw_degrees`), up and down (by
    `pitch_degrees`), in OpenCV axes: x right, y down, z forward."""
    poses = []
    for a in np.radians([yaw_degrees, -yaw_degrees]):  # about y: forward swings to +x (right) first
        pose = np.eye(4)
        pose[:3, :3] = [[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]]
        poses.append(pose)
    for a in np.radians([pitch_degrees, -pitch_degrees]):  # about x: forward swings to −y (up) first
        pose = np.eye(4)
        pose[:3, :3] = [[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]]
        poses.append(pose)
    return poses


def probe_poses(distance: float, origin: np.ndarray | None = None) -> list[np.ndarray]:
    """World-from-camera poses moved by `distance` from `origin` (the identity when None), keeping its
    orientation: along each camera axis both ways, and along the eight diagonals."""
    base = np.eye(4) if origin is None else np.asarray(origin, dtype=np.float64)
    steps = [np.eye(3)[i] * s for i in range(3) for s in (1.0, -1.0)]
    steps += [np.asarray(c, dtype=np.float64) / np.sqrt(3.0) for c in itertools.product((1.0, -1.0), repeat=3)]
    poses = []
    for step in steps:
        pose = base.copy()
        pose[:3, 3] = base[:3, 3] + base[:3, :3] @ (distance * step)
        poses.append(pose)
    return poses


@torch.no_grad()
def pinholes(alpha: torch.Tensor, *, below: float = PINHOLE_ALPHA, floor: float = MIN_ALPHA) -> torch.Tensor:
    """[H,W] bool: the gaps in a surface. Pixels whose alpha is in [`floor`, below), that no hole mask
    holds, and that have opaque pixels (alpha ≥ `below`) within GAP px on both sides, above and below or
    left and right: the fringe along the edge of what the scene covers, or along the image's edge, is
    not a gap in it."""
    h, w = alpha.shape
    # opaque pixels, the image padded with GAP px of nothing opaque around it
    solid = torch.nn.functional.pad((alpha >= below).float(), (GAP, GAP, GAP, GAP)) > 0.5

    def within(dy: int, dx: int) -> torch.Tensor:  # an opaque pixel 1..GAP px away in direction (dy, dx)
        ks = range(1, GAP + 1)
        return torch.stack([solid[GAP + k * dy : GAP + k * dy + h, GAP + k * dx : GAP + k * dx + w] for k in ks]).any(0)

    between = (within(1, 0) & within(-1, 0)) | (within(0, 1) & within(0, -1))
    return (alpha >= floor) & (alpha < below) & between & ~hole_masks(alpha)


@torch.no_grad()
def leaks(
    alpha: torch.Tensor, depth: torch.Tensor, median: torch.Tensor, *, below: float = PINHOLE_ALPHA
) -> torch.Tensor:
    """[H,W] bool: pixels of an opaque surface (alpha ≥ `below`, its median depth smooth over the pixel's 3×3
    neighbours) whose expected `depth` lies more than LEAK beyond the `median` depth (its first surface):
    what lies behind shows through it. A pixel at the edge of a surface mixes two sides by design: not a leak."""
    solid = (alpha >= below) & torch.isfinite(median) & (median > 0)
    m = torch.where(solid, median, torch.zeros_like(median))[None, None]
    hi = torch.nn.functional.max_pool2d(m, 3, stride=1, padding=1)[0, 0]
    lo = -torch.nn.functional.max_pool2d(
        -torch.where(m > 0, m, torch.full_like(m, float("inf"))), 3, stride=1, padding=1
    )[0, 0]
    smooth = solid & (hi <= (1.0 + LEAK) * lo)
    return smooth & (depth > (1.0 + LEAK) * median)


@torch.no_grad()
def farther_side(
    alpha: torch.Tensor, depth: torch.Tensor, rgb: torch.Tensor, *, below: float = PINHOLE_ALPHA
) -> tuple[torch.Tensor, torch.Tensor]:
    """([H,W] depth, [H,W,3] colour) of the farthest opaque pixel (alpha ≥ `below`) within GAP px of each
    pixel (depth 0 where none is): what a crack at a depth jump shows, the surface behind the nearer one."""
    h, w = depth.shape
    opaque = (alpha >= below) & torch.isfinite(depth) & (depth > 0)
    d = torch.where(opaque, depth, torch.full_like(depth, -1.0))[None, None]
    far, at = torch.nn.functional.max_pool2d(d, 2 * GAP + 1, stride=1, padding=GAP, return_indices=True)
    far, at = far[0, 0], at[0, 0].reshape(-1)
    colour = rgb.reshape(-1, 3)[at].reshape(h, w, 3)
    return far.clamp_min(0.0), colour


@torch.no_grad()
def seal_pinholes(
    g: Gaussians,
    poses: list[np.ndarray],
    K: np.ndarray,
    width: int,
    height: int,
    *,
    backend: str = "auto",
    below: float = PINHOLE_ALPHA,
    keep_from: tuple[np.ndarray, np.ndarray, int, int] | None = None,
) -> Gaussians:
    """The Gaussians that seal the pinholes of `g` seen from each of `poses` (world-from-camera 4×4,
    OpenCV axes) through the camera (`K`, `width`, `height`). Each pose renders the scene together with
    the Gaussians the earlier poses added, so a gap is sealed once. `keep_from` (pose, K, width, height):
    a camera that must not see any of them (the input's): a new Gaussian is kept only where that camera
    sees an opaque surface in front of it. Returns only the new Gaussians (empty when no probe sees a
    pinhole), on `g`'s device."""
    dev = g.means.device
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=dev)[None]
    unseen = unseen_by(keep_from, g, backend) if keep_from is not None else None
    added: list[Gaussians] = []
    for pose in poses:
        scene = Gaussians.cat([g, *added]) if added else g
        vm = torch.as_tensor(cameras.invert_pose(np.asarray(pose)), dtype=torch.float32, device=dev)[None]
        # the median depth (`leaks`) comes from the torch rasteriser alone (on the scene's device)
        res = render(scene, vm, Kt, width, height, backend="torch", depth_mode="both")
        alpha = res.alpha[0].float()
        mask = pinholes(alpha, below=below, floor=0.0)
        depth = res.depth[0].float()
        median = res.median[0].float()
        leak = leaks(alpha, depth, median, below=below)
        if not bool(mask.any()) and not bool(leak.any()):
            continue
        rgb = (res.rgb[0].float() / alpha.clamp_min(MIN_ALPHA)[..., None]).clamp(0.0, 1.0)
        covered = (alpha >= MIN_ALPHA) & torch.isfinite(depth) & (depth > 0)
        # the render's own depth and colour continue the surface, but not at a depth jump (a crack onto the
        # farther surface, where the depth is a mix of the two: a Gaussian there would float between them,
        # in sight of the input view), nor where almost nothing shows
        edges = spawn_edges(torch.where(covered, depth, 0.0).cpu().numpy(), covered.cpu().numpy())
        own = covered & ~torch.as_tensor(edges, device=dev)
        # there the surface beside the gap that lies farther continues behind it
        far_depth, far_rgb = farther_side(alpha, depth, rgb, below=below)
        far = mask & ~own & (far_depth > 0)
        mask = (mask & own) | far | leak
        if not bool(mask.any()):
            continue
        # a leak is backed by its first surface's colour at that surface's depth: between it and what showed through
        depth = torch.where(leak, median, torch.where(covered, depth, torch.zeros_like(depth)))
        depth = torch.where(far, far_depth, depth)
        rgb = torch.where(far[..., None], far_rgb, rgb)
        # every covered pixel keeps its depth (the lift's tangents and normals need the neighbours), pushed back
        pushed = depth * (1.0 + BEHIND / float(K[0][0]))
        new = gaussians_from_rgbd(
            rgb.cpu(),
            pushed.cpu(),
            np.asarray(K, dtype=np.float32),
            np.asarray(pose, dtype=np.float32),
            mask.cpu(),
            footprint=SEAL_FOOTPRINT,
            opacity=SEAL_OPACITY,
        )
        new = new.to(dev)
        if unseen is not None and len(new):
            keep, verified = unseen(new, added)
            new = new.select(keep if verified else torch.zeros_like(keep))  # still changing: keep none
        if len(new):
            added.append(new)
    return Gaussians.cat(added) if added else g.select(torch.zeros(0, dtype=torch.long, device=dev))
