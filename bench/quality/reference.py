"""A brute-force reference renderer: every pixel against every Gaussian, in numpy, float64.

Independent of vd's renderers (no tiles, no batching, no autograd): it exists so a test can check
that the renderer the evaluation uses (`vd.render`, torch backend) composites what 3D Gaussian
splatting defines. The model: camera-space mean t = R·x + T, covariance Σ' = J·R·Σ·Rᵀ·Jᵀ + 0.3·I
with J the perspective Jacobian at t, pixel centres at (u + 0.5, v + 0.5), alpha = min(0.999,
o·exp(−½ dᵀΣ'⁻¹d)) skipped below 1/255, front to back by camera z, stopping before the
transmittance would fall to 1e-4; colour = SH DC·C0 + 0.5; expected depth = Σ wᵢzᵢ / Σ wᵢ.
Use it on a handful of Gaussians inside the view (no frustum clamp of J).
"""

from __future__ import annotations

import numpy as np

C0 = 0.28209479177387814


def _rotation(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def render_reference(means, log_scales, quats, opacity_logits, sh0, camera_from_world, K, width, height, eps2d=0.3):
    """(rgb [H,W,3], depth [H,W], alpha [H,W]) of N Gaussians (numpy arrays; sh0 [N,3])."""
    R, T = camera_from_world[:3, :3], camera_from_world[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    items = []
    for i in range(len(means)):
        t = R @ means[i] + T
        if t[2] <= 0.01:
            continue
        Rg = _rotation(np.asarray(quats[i], float))
        S = np.diag(np.exp(2 * np.asarray(log_scales[i], float)))
        cov = R @ Rg @ S @ Rg.T @ R.T
        J = np.array([[fx / t[2], 0, -fx * t[0] / t[2] ** 2], [0, fy / t[2], -fy * t[1] / t[2] ** 2]])
        cov2 = J @ cov @ J.T + eps2d * np.eye(2)
        mu = np.array([fx * t[0] / t[2] + cx, fy * t[1] / t[2] + cy])
        o = 1 / (1 + np.exp(-opacity_logits[i]))
        col = np.maximum(sh0[i] * C0 + 0.5, 0)
        items.append((t[2], mu, np.linalg.inv(cov2), o, col))
    items.sort(key=lambda it: it[0])
    rgb = np.zeros((height, width, 3))
    dep = np.zeros((height, width))
    alpha = np.zeros((height, width))
    for v in range(height):
        for u in range(width):
            p = np.array([u + 0.5, v + 0.5])
            Tr, c, d, a = 1.0, np.zeros(3), 0.0, 0.0
            for z, mu, conic, o, col in items:
                dlt = p - mu
                al = min(0.999, o * np.exp(-0.5 * dlt @ conic @ dlt))
                if al < 1 / 255:
                    continue
                if Tr * (1 - al) <= 1e-4:
                    break
                w = al * Tr
                c, d, a = c + w * col, d + w * z, a + w
                Tr *= 1 - al
            rgb[v, u], alpha[v, u] = c, a
            dep[v, u] = d / a if a > 0 else 0.0
    return rgb, dep, alpha
