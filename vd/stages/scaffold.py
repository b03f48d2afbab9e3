"""The scaffold: outpainted canvas, depth, input and ring frames, initial Gaussians (reference §2.3, §4.3).

1. Canvas: the normalised input padded **symmetrically** by `pad_x = 8·round(W·expansion/2/8)`
   per side left/right (likewise top/bottom), so the canvas is W + 2·pad_x wide (a multiple of
   16 when W is, as FLUX needs) and ≈ W·(1 + expansion). Symmetric padding keeps one
   principal point for input and canvas: K_canvas = K_input shifted by (pad_x, pad_y)
   (upstream bug 5 shifts them by 4–7 px). The ring (canvas minus the input rectangle) is
   outpainted by the inpaint backend; the input pixels are kept exactly.
2. Depth on the canvas: a model that estimates novel views (MoGe) runs once on the canvas and
   the input frame is its crop. The `file` backend knows the input only: its depth is used for
   the input and extended into the ring by `vd.align.complete_depth`.
3. Frames: input (identity pose, supervises every pixel, spawns ¬edge ∧ valid) and ring (the
   canvas camera, same pose; supervises and spawns the ring ∧ ¬edge ∧ valid). Edges are
   `vd.align.spawn_edges` (depth discontinuities, not smooth slopes).
4. Gaussians from both frames, optimised together for `init_iters` iterations.

`--no-outpaint` skips 1 and keeps the input frame only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vd.stages.scene_io import Frame

VERSION = 1


def canvas_padding(width: int, height: int, expansion: float) -> tuple[int, int]:
    """Per-side padding (pad_x, pad_y) in pixels for a total expansion fraction (multiples of 8)."""
    if expansion <= 0:
        return 0, 0
    px = 8 * int(round(width * expansion / 2 / 8))
    py = 8 * int(round(height * expansion / 2 / 8))
    return max(px, 8), max(py, 8)


@dataclass
class ScaffoldResult:
    frames: list  # [Frame] input (+ ring)
    gaussians: object  # Gaussians (all frames, optimised)
    counts: list  # Gaussians per frame, in frame order
    loss: float
    depth_valid_fraction: float


def build_scaffold(rgb: np.ndarray, *, depth_backend, inpaint_backend=None, expansion: float = 0.3, outpaint: bool = True,
                   init_iters: int = 100, seed: int = 0, render_backend: str = "auto", device: str = "cpu",
                   image_plan=None, edge_times: float = 0.05, viewer=None) -> ScaffoldResult:
    """Compute the scaffold from an RGB uint8 [H, W, 3] image (see the module docstring)."""
    import torch

    from vd.align import complete_depth, spawn_edges
    from vd.gaussians import Gaussians
    from vd.lift import gaussians_from_rgbd
    from vd.train import optimise

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    H, W = rgb.shape[:2]
    px, py = canvas_padding(W, H, expansion) if outpaint else (0, 0)
    use_ring = outpaint and (px > 0 or py > 0)
    Hc, Wc = H + 2 * py, W + 2 * px
    inner = np.zeros((Hc, Wc), dtype=bool)
    inner[py:py + H, px:px + W] = True
    ring = ~inner

    if use_ring:
        canvas = np.zeros((Hc, Wc, 3), dtype=np.uint8)
        canvas[inner] = rgb.reshape(-1, 3)
        if inpaint_backend is None:
            raise ValueError("outpainting needs an inpaint backend")
        canvas = np.asarray(inpaint_backend.inpaint(canvas, ring, seed=int(seed)), dtype=np.uint8)
        canvas[py:py + H, px:px + W] = rgb  # the input is kept exactly
    else:
        canvas = rgb

    novel = getattr(depth_backend, "estimates_novel_views", True)
    if novel:
        dr = depth_backend.estimate(canvas)
        depth_c = np.nan_to_num(np.asarray(dr.depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        valid_c = np.asarray(dr.valid, dtype=bool) & (depth_c > 0)
        K_c = np.asarray(dr.K, dtype=np.float64)
        K_in = K_c.copy()
        K_in[0, 2] -= px
        K_in[1, 2] -= py
    else:
        kw = {"plan": image_plan} if image_plan is not None else {}
        dr = depth_backend.estimate(rgb, **kw)
        d_in = np.nan_to_num(np.asarray(dr.depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        v_in = np.asarray(dr.valid, dtype=bool) & (d_in > 0)
        K_in = np.asarray(dr.K, dtype=np.float64)
        depth_c = np.zeros((Hc, Wc), dtype=np.float32)
        depth_c[py:py + H, px:px + W] = np.where(v_in, d_in, 0.0)
        valid_c = np.zeros((Hc, Wc), dtype=bool)
        valid_c[py:py + H, px:px + W] = v_in
        if use_ring:
            depth_c = complete_depth(depth_c, ring)
            valid_c |= ring & (depth_c > 0)
            # invalid input pixels stay invalid (and keep their completed depth for rendering only)
        K_c = K_in.copy()
        K_c[0, 2] += px
        K_c[1, 2] += py
    edges_c = spawn_edges(depth_c, valid_c, times=edge_times)

    eye = np.eye(4)
    sl = (slice(py, py + H), slice(px, px + W))
    d_in, v_in, e_in = depth_c[sl].copy(), valid_c[sl].copy(), edges_c[sl].copy()
    frames = [Frame(
        name="input", kind="input", rgb=rgb, depth=d_in, K=K_in.astype(np.float32), world_from_camera=eye,
        supervise=np.ones((H, W), dtype=bool), spawn=v_in & ~e_in, hole=np.zeros((H, W), dtype=bool),
    )]
    if use_ring:
        frames.append(Frame(
            name="ring", kind="ring", rgb=canvas, depth=depth_c, K=K_c.astype(np.float32), world_from_camera=eye.copy(),
            supervise=ring.copy(), spawn=ring & valid_c & ~edges_c, hole=ring.copy(),
        ))

    parts, counts = [], []
    for f in frames:
        g = gaussians_from_rgbd(f.rgb, f.depth, f.K.astype(np.float32), f.world_from_camera.astype(np.float32), f.spawn)
        parts.append(g)
        counts.append(len(g))
    g = Gaussians.cat(parts).to(device)
    torch.manual_seed(int(seed))
    rep = optimise(g, [f.train_view(device) for f in frames], int(init_iters), seed=int(seed), backend=render_backend)
    return ScaffoldResult(frames=frames, gaussians=g, counts=counts, loss=float(rep.final_loss),
                          depth_valid_fraction=float(valid_c[sl].mean()))
