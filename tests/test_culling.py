"""Leaving out the Gaussians a render cannot draw into the pixels that are read (vd.render.culling):
those pixels, and the gradients of what is drawn there, stay the same."""

from __future__ import annotations

import pytest
import torch
from test_render import H, K, W, look_at_viewmat, scene

from vd.gaussians import Gaussians
from vd.render import render
from vd.render.culling import covered_pixels, in_view, pixel_boxes, sharing_pixels, touching

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wide_scene(n=400, seed=0) -> Gaussians:
    """Gaussians spread far beyond the view on both sides, some behind the camera."""
    g = scene(n, seed)
    g.means[:, 0] = (torch.rand(n, generator=torch.Generator().manual_seed(seed)) - 0.5) * 16.0
    g.means[: n // 10, 2] = -1.0
    return g


def test_a_view_renders_the_same_without_the_gaussians_out_of_it():
    g = _wide_scene()
    vm = look_at_viewmat((0.3, 0.0, 0.0), target=(0.5, 0.0, 3.0))
    shown = in_view(g, vm, K, W, H)
    assert 0 < int(shown.sum()) < len(g) // 2  # most are left out
    whole, part = render(g, vm, K, W, H), render(g.select(shown), vm, K, W, H)
    assert float(whole.alpha.amax()) > 0.5
    assert torch.equal(whole.rgb, part.rgb) and torch.equal(whole.alpha, part.alpha)
    # each one left out draws nothing into the view, alone
    for i in (~shown).nonzero().squeeze(1)[::7].tolist():
        assert float(render(g.select([i]), vm, K, W, H).alpha.amax()) == 0.0


def test_boxes_hold_every_pixel_a_gaussian_is_drawn_into():
    g = scene(60, seed=3)
    vm = torch.eye(4)
    boxes = pixel_boxes(g, vm, K, W, H)
    for i in range(len(g)):
        alpha = render(g.select([i]), vm, K, W, H).alpha[0]
        drawn = alpha > 0
        x0, y0, x1, y1 = boxes[i].tolist()
        inside = torch.zeros_like(drawn)
        inside[y0:y1, x0:x1] = True
        assert not bool((drawn & ~inside).any()), i
        assert bool(drawn.any()) == (x1 > x0), i  # empty exactly when it is not drawn
    assert torch.equal(covered_pixels(boxes, W, H), _covered_brute_force(boxes))


def _covered_brute_force(boxes):
    out = torch.zeros(H, W, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.tolist():
        out[y0:y1, x0:x1] = True
    return out


def test_touching_finds_the_boxes_over_the_pixels():
    gen = torch.Generator().manual_seed(1)
    pixels = torch.rand(H, W, generator=gen) > 0.97
    x0 = torch.randint(0, W, (300,), generator=gen)
    y0 = torch.randint(0, H, (300,), generator=gen)
    boxes = torch.stack(
        [
            x0,
            y0,
            (x0 + torch.randint(0, 6, (300,), generator=gen)).clamp_max(W),
            (y0 + torch.randint(0, 6, (300,), generator=gen)).clamp_max(H),
        ],
        -1,
    )
    expected = torch.tensor([bool(pixels[b:d, a:c].any()) for a, b, c, d in boxes.tolist()])
    assert 0 < int(expected.sum()) < len(boxes)
    assert torch.equal(touching(boxes, pixels), expected)


def test_new_gaussians_render_and_train_the_same_with_only_the_scene_they_share_pixels_with():
    g = _wide_scene(seed=2)
    new = scene(6, seed=5)
    new.log_scales -= 1.0  # small: they reach a few pixels
    vm = look_at_viewmat((0.3, 0.0, 0.0), target=(0.5, 0.0, 3.0))
    near, reach = sharing_pixels(g, new, vm, K, W, H)
    assert 0 < int(near.sum()) < int(in_view(g, vm, K, W, H).sum())  # fewer than the view shows
    assert 0 < int(reach.sum()) < W * H // 2

    def drawn(scene_part):
        colour = new.sh.detach().clone().requires_grad_(True)
        probe = Gaussians(new.means, new.log_scales, new.quats, new.opacity_logits, colour)
        out = render(Gaussians.cat([scene_part, probe]), vm, K, W, H)
        (out.rgb * torch.linspace(0, 1, 3)).sum().backward()
        return out, colour.grad

    (whole, g_whole), (part, g_part) = drawn(g), drawn(g.select(near))
    assert float(g_whole.abs().amax()) > 0  # the new ones are drawn
    assert torch.allclose(g_whole, g_part, atol=1e-6, rtol=1e-5)
    assert torch.equal(whole.rgb[0][reach], part.rgb[0][reach])
    assert not torch.equal(whole.rgb[0][~reach], part.rgb[0][~reach])  # elsewhere the scene was left out
