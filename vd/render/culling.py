"""Which Gaussians a render can leave out without changing the pixels it is read at.

The rasteriser draws a Gaussian only inside its 3.33-sigma box (beyond it alpha is below 1/255 and is
skipped), so a Gaussian whose box misses the view, or misses every pixel that is read, changes nothing
there. Leaving such Gaussians out keeps the others in their order, and with it the order of Gaussians at
equal depth: the pixels that are read render the same. The CPU rasteriser's time grows with the number
of Gaussians; the training windows of `vd coarse` and the checks that added Gaussians stay out of the
input view's sight read a small part of a view of a large scene.

gsplat draws the same way (alpha below 1/255 is skipped, so nothing lands outside that ellipse, whatever
its own box), so what is left out here it would not draw either.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vd.gaussians import Gaussians
from vd.render.torch_backend import covariances, project


def pixel_boxes(g: Gaussians, viewmat: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """long [N,4] (x0, y0, x1, y1): the pixels each Gaussian can be drawn into in a view (camera_from_world
    `viewmat` [4,4], intrinsics `K` [3,3]), half-open and within the image; empty (x0 = x1) for the ones
    the rasteriser culls (behind the camera, off the image). A pixel is drawn into when its centre is
    inside the Gaussian's box; the boxes hold a pixel more each side, against rounding."""
    with torch.no_grad():
        means2d, _, _, radii = project(g.means, covariances(g), viewmat, K, int(width), int(height))
        drawn = (radii > 0).all(-1)
        r = radii.to(means2d.dtype)
        lo = torch.floor(means2d - r) - 1
        hi = torch.floor(means2d + r) + 2
        x0 = lo[:, 0].clamp(0, width).long()
        x1 = hi[:, 0].clamp(0, width).long()
        y0 = lo[:, 1].clamp(0, height).long()
        y1 = hi[:, 1].clamp(0, height).long()
        x1 = torch.where(drawn & (x1 > x0) & (y1 > y0), x1, x0)
        return torch.stack([x0, y0, x1, y1], -1)


def in_view(g: Gaussians, viewmat: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """bool [N]: the Gaussians that a render of the view can draw into any of its pixels."""
    boxes = pixel_boxes(g, viewmat, K, width, height)
    return boxes[:, 2] > boxes[:, 0]


def covered_pixels(boxes: Tensor, width: int, height: int) -> Tensor:
    """bool [H,W]: the pixels inside any of the `boxes` ([N,4] from `pixel_boxes`)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    edges = torch.zeros(height + 1, width + 1, dtype=torch.long, device=boxes.device)
    flat = edges.view(-1)
    stride = width + 1
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        flat.index_add_(0, ys * stride + xs, torch.full_like(xs, sign))  # writes through to `edges`
    counts = edges.cumsum(0).cumsum(1)[:height, :width]
    return counts > 0


def touching(boxes: Tensor, pixels: Tensor) -> Tensor:
    """bool [N]: the `boxes` ([N,4] from `pixel_boxes`) that hold at least one of `pixels` (bool [H,W])."""
    h, w = pixels.shape
    table = torch.zeros(h + 1, w + 1, dtype=torch.long, device=pixels.device)
    table[1:, 1:] = pixels.long().cumsum(0).cumsum(1)
    x0, y0, x1, y1 = boxes.unbind(-1)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return (x1 > x0) & (inside > 0)


def sharing_pixels(scene: Gaussians, new: Gaussians, viewmat: Tensor, K: Tensor, width: int, height: int):
    """(bool [N] of `scene`, bool [H,W]): the Gaussians of `scene` that a render of the view with `new`
    can draw into a pixel that `new` can be drawn into, and those pixels. Rendered without the others,
    those pixels, and the gradients of `new`, are the same as with them."""
    covered = covered_pixels(pixel_boxes(new, viewmat, K, width, height), width, height)
    return touching(pixel_boxes(scene, viewmat, K, width, height), covered), covered
