"""The render entry point and the torch tile rasteriser: exactness against a brute-force
reference, gradients, batching, culling; gsplat parity on CUDA (gpu marker)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from vd.errors import UsageError
from vd.gaussians import Gaussians
from vd.geometry import quat_to_rotmat_torch, rotmat_to_quat_torch
from vd.render import render, resolve_backend
from vd.render.torch_backend import _Composite, _pixel_basis

W, H = 40, 32
K = torch.tensor([[36.0, 0, 20.0], [0, 36.0, 16.0], [0, 0, 1]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scene(n=40, seed=0, deg=0, dtype=torch.float32) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    z = 2.0 + 2.0 * r(n)
    x = (r(n) * W - K[0, 2]) / K[0, 0] * z
    y = (r(n) * H - K[1, 2]) / K[1, 1] * z
    g = Gaussians(
        torch.stack([x, y, z], 1),
        torch.log(0.02 + 0.12 * r(n, 3)),
        torch.randn(n, 4, generator=gen),
        torch.randn(n, generator=gen) + 1.0,
        torch.randn(n, (deg + 1) ** 2, 3, generator=gen) * 0.5,
    )
    if dtype != torch.float32:
        for k, t in g.tensors().items():
            setattr(g, k, t.to(dtype))
    return g


def reference_render(g: Gaussians, viewmat, Kc, width, height, eps2d=0.3, near=0.01, median=False):
    """Brute force, float64: every Gaussian against every pixel, sorted by depth (gsplat rules).
    median=True adds the median depth (the ray's densest point in the first Gaussian after which the
    transmittance is <= 0.5, within 3 of its largest sigmas of its centre, blended toward the centre's depth
    for round Gaussians; else 0) and each pixel's closest
    approach of the transmittance to 0.5 (where float32 may pick another Gaussian)."""
    from vd.render.sh import eval_sh

    d = torch.float64
    means, q, ls = g.means.to(d), g.quats.to(d), g.log_scales.to(d)
    vm, Kc = torch.as_tensor(viewmat, dtype=d), torch.as_tensor(Kc, dtype=d)
    R = quat_to_rotmat_torch(q)
    S = torch.exp(ls)
    cov = (R * S[:, None]) @ (R * S[:, None]).transpose(1, 2)
    mc = means @ vm[:3, :3].T + vm[:3, 3]
    cc = vm[:3, :3] @ cov @ vm[:3, :3].T
    fx, fy, cx, cy = Kc[0, 0], Kc[1, 1], Kc[0, 2], Kc[1, 2]
    tx, ty, tz = mc.unbind(-1)
    lxp = (width - cx) / fx + 0.3 * 0.5 * width / fx
    lxn = cx / fx + 0.3 * 0.5 * width / fx
    lyp = (height - cy) / fy + 0.3 * 0.5 * height / fy
    lyn = cy / fy + 0.3 * 0.5 * height / fy
    txc = tz * torch.clamp(tx / tz, -lxn, lxp)
    tyc = tz * torch.clamp(ty / tz, -lyn, lyp)
    O = torch.zeros_like(tz)
    J = torch.stack([fx / tz, O, -fx * txc / tz**2, O, fy / tz, -fy * tyc / tz**2], -1).reshape(-1, 2, 3)
    c2 = J @ cc @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=d)
    inv = torch.linalg.inv(c2)
    m2 = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)
    campos = -vm[:3, :3].T @ vm[:3, 3]
    col = eval_sh(g.sh.to(d), means - campos)
    opac = torch.sigmoid(g.opacity_logits.to(d))
    order = torch.argsort(tz)
    v, u = torch.meshgrid(torch.arange(height, dtype=d), torch.arange(width, dtype=d), indexing="ij")
    pix = torch.stack([u + 0.5, v + 0.5], -1).reshape(-1, 2)
    T = torch.ones(pix.shape[0], dtype=d)
    rgb = torch.zeros(pix.shape[0], 3, dtype=d)
    dep = torch.zeros(pix.shape[0], dtype=d)
    done = torch.zeros(pix.shape[0], dtype=torch.bool)
    med = torch.zeros(pix.shape[0], dtype=d)
    margin = torch.full((pix.shape[0],), float("inf"), dtype=d)
    for i in order.tolist():
        if not (tz[i] > near):
            continue
        dxy = pix - m2[i]
        sig = 0.5 * (inv[i, 0, 0] * dxy[:, 0] ** 2 + inv[i, 1, 1] * dxy[:, 1] ** 2) + inv[i, 0, 1] * dxy[:, 0] * dxy[:, 1]
        a = torch.clamp(opac[i] * torch.exp(-sig), max=0.999)
        a = torch.where((a >= 1 / 255) & (sig >= 0) & ~done, a, torch.zeros_like(a))
        nextT = T * (1 - a)
        stop = (nextT <= 1e-4) & (a > 0)
        a = torch.where(stop, torch.zeros_like(a), a)
        done |= stop
        w = a * T
        rgb += w[:, None] * col[i]
        dep += w * tz[i]
        crossed = (T > 0.5) & (T * (1 - a) <= 0.5)
        # where the pixel's ray d = ((u - cx)/fx, (v - cy)/fy, 1) is densest in Gaussian i: dᵀAμ / dᵀAd, A = Σ⁻¹
        A = torch.linalg.inv(cc[i])
        ray = torch.stack([(pix[:, 0] - cx) / fx, (pix[:, 1] - cy) / fy, torch.ones_like(pix[:, 0])], 1)
        hit = (ray @ A @ mc[i]) / ((ray @ A) * ray).sum(1)
        reach = 3 * S[i].max()
        flat = ((0.75 - S[i].min() / S[i].max()) / 0.5).clamp(0, 1)  # round Gaussians: the centre's depth
        hit = tz[i] + flat * (hit.clamp(tz[i] - reach, tz[i] + reach) - tz[i])
        med = torch.where(crossed, hit, med)
        margin = torch.where(a > 0, torch.minimum(margin, (T * (1 - a) - 0.5).abs()), margin)
        T = T * (1 - a)
    alpha = 1 - T
    if median:
        return (
            rgb.reshape(height, width, 3),
            (dep / alpha.clamp_min(1e-10)).reshape(height, width),
            alpha.reshape(height, width),
            med.reshape(height, width),
            margin.reshape(height, width),
        )
    return rgb.reshape(height, width, 3), (dep / alpha.clamp_min(1e-10)).reshape(height, width), alpha.reshape(height, width)


def look_at_viewmat(eye, target=(0, 0, 3.0)):
    eye = torch.tensor(eye, dtype=torch.float32)
    f = torch.nn.functional.normalize(torch.tensor(target) - eye, dim=0)
    r = torch.nn.functional.normalize(torch.cross(f, torch.tensor([0.0, 1.0, 0.0]), dim=0), dim=0)
    d = torch.cross(f, r, dim=0)
    Rwc = torch.stack([r, d, f], 1)  # camera axes in world (x right, y down, z forward)
    vm = torch.eye(4)
    vm[:3, :3] = Rwc.T
    vm[:3, 3] = -Rwc.T @ eye
    return vm


@pytest.mark.parametrize("deg", [0, 1, 3])
@pytest.mark.parametrize("tile", [4, 8, 16])
def test_matches_brute_force_reference(deg, tile):
    g = scene(deg=deg, seed=deg)
    vm = look_at_viewmat((0.3, -0.2, 0.0))
    out = render(g, vm, K, W, H, backend="torch", tile=tile)
    rgb, dep, alpha = reference_render(g, vm, K, W, H)
    assert out.rgb.shape == (1, H, W, 3) and out.depth.shape == (1, H, W) and out.alpha.shape == (1, H, W)
    assert (out.rgb[0].double() - rgb).abs().max() < 2e-4
    assert (out.alpha[0].double() - alpha).abs().max() < 2e-4
    m = alpha > 0.05
    assert ((out.depth[0].double() - dep).abs()[m]).max() < 1e-3
    assert out.backend == "torch"


def test_early_termination_and_depth_order():
    # two opaque fronto-parallel Gaussians: the near red one hides the far blue one
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])
    g = Gaussians.from_rgb(means, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), torch.tensor([0.5, 1.0]), opacity=0.9999)
    g = Gaussians.cat([g.select([1]), g.select([0])])  # input order must not matter
    out = render(g, torch.eye(4), K, W, H)
    c = out.rgb[0, H // 2, W // 2]
    assert c[0] > 0.99 and c[2] < 0.01
    assert abs(float(out.depth[0, H // 2, W // 2]) - 2.0) < 1e-3


@pytest.mark.parametrize("tile", [4, 8])
def test_median_depth_matches_brute_force_reference(tile):
    g = scene(n=80, seed=5)
    vm = look_at_viewmat((0.2, 0.1, 0.0))
    base = render(g, vm, K, W, H, backend="torch", tile=tile)
    out = render(g, vm, K, W, H, backend="torch", tile=tile, depth_mode="median")
    _, _, alpha, med, margin = reference_render(g, vm, K, W, H, median=True)
    # only the depth changes
    assert torch.equal(out.rgb, base.rgb) and torch.equal(out.alpha, base.alpha)
    sure = margin > 1e-3  # float32 and float64 agree on which Gaussian crosses 0.5
    assert sure.float().mean() > 0.9
    assert (alpha[sure] > 0.5).any() and (alpha[sure] < 0.5).any()  # both cases are checked
    assert ((out.depth[0].double() - med).abs()[sure]).max() < 1e-4
    assert (out.depth[0][alpha < 0.5] == 0).all()
    # the expected depth of overlapping Gaussians is elsewhere
    differs = sure & (alpha > 0.5) & ((base.depth[0].double() - med).abs() > 1e-2)
    assert differs.sum() > 20
    # depth_mode="both": the expected depth and the median, from one pass
    both = render(g, vm, K, W, H, backend="torch", tile=tile, depth_mode="both")
    assert torch.equal(both.depth, base.depth) and torch.equal(both.median, out.depth) and out.median is None


def _two_planes(near_opacity: float) -> Gaussians:
    """A half-transparent plane of large flat Gaussians at z=2 in front of an opaque one at z=3."""
    xs = torch.linspace(-1.5, 1.5, 7)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    layers = []
    for z, o in ((2.0, near_opacity), (3.0, 0.9999)):
        means = torch.cat([grid * z / 2, torch.full((len(grid), 1), z)], 1)
        scales = torch.tensor([0.3 * z / 2, 0.3 * z / 2, 1e-4]).expand(len(grid), 3)
        layers.append(Gaussians.from_rgb(means, torch.full((len(grid), 3), 0.5), scales, opacity=o))
    return Gaussians.cat(layers)


def test_median_depth_sits_on_the_layer_that_makes_the_pixel_opaque():
    c = (slice(H // 2 - 4, H // 2 + 4), slice(W // 2 - 4, W // 2 + 4))
    for near_opacity, surface in ((0.8, 2.0), (0.2, 3.0)):
        g = _two_planes(near_opacity)
        exp = render(g, torch.eye(4), K, W, H, backend="torch")
        med = render(g, torch.eye(4), K, W, H, backend="torch", depth_mode="median")
        assert (exp.alpha[0][c] > 0.9).all()
        # expected depth: a blend of both planes, off the one that makes the pixel opaque; median: on it
        e, m = exp.depth[0][c], med.depth[0][c]
        assert ((e > 2.0) & (e < 3.0) & ((e - surface).abs() > 0.02)).all(), e
        assert ((m - surface).abs() < 1e-5).all(), (near_opacity, m)


def test_median_depth_of_a_tilted_layer_is_on_its_plane():
    # one opaque layer of flat Gaussians lying in the plane z = 2.5 + 0.6 x: the centres' depths step from
    # splat to splat and the expected depth blends neighbours; the median depth follows the plane
    a, c0 = 0.6, 2.5
    xs = torch.linspace(-1.2, 1.2, 13)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    x, y = xx.reshape(-1), yy.reshape(-1)
    means = torch.stack([x, y, c0 + a * x], 1)
    n = torch.nn.functional.normalize(torch.tensor([-a, 0.0, 1.0]), dim=0)  # the plane's normal
    t1 = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, a]), dim=0)
    R = torch.stack([t1, torch.tensor([0.0, 1.0, 0.0]), n], 1)  # columns: the Gaussian's axes (det +1)
    g = Gaussians.from_rgb(
        means,
        torch.full((len(x), 3), 0.5),
        torch.tensor([0.15, 0.15, 1e-4]).expand(len(x), 3),
        quats=rotmat_to_quat_torch(R).expand(len(x), 4),
        opacity=0.99,
    )
    exp = render(g, torch.eye(4), K, W, H, backend="torch")
    med = render(g, torch.eye(4), K, W, H, backend="torch", depth_mode="median")
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rx = (u - K[0, 2]) / K[0, 0]
    plane = c0 / (1 - a * rx)  # z on the ray (rx z, ry z, z) with z = c0 + a rx z
    m = exp.alpha[0] > 0.9
    assert m.float().mean() > 0.5
    err_med = (med.depth[0] - plane).abs()[m]
    err_exp = (exp.depth[0] - plane).abs()[m]
    assert err_med.max() < 1e-4, err_med.max()
    assert err_exp.max() > 1e-3, err_exp.max()


def test_median_depth_mode_errors():
    g = scene()
    with pytest.raises(UsageError, match="median"):
        render(g, torch.eye(4), K, W, H, backend="gsplat", depth_mode="median")
    with pytest.raises(ValueError, match="depth_mode"):
        render(g, torch.eye(4), K, W, H, depth_mode="mean")


def test_batched_cameras_equal_single_renders_and_background():
    g = scene(seed=3)
    vms = torch.stack([torch.eye(4), look_at_viewmat((0.5, 0.0, 0.2))])
    out = render(g, vms, K, W, H, background=torch.tensor([0.2, 0.4, 0.6]))
    for c in range(2):
        one = render(g, vms[c], K, W, H)
        expect = one.rgb[0] + torch.tensor([0.2, 0.4, 0.6]) * (1 - one.alpha[0, ..., None])
        assert torch.allclose(out.rgb[c], expect, atol=1e-6)
        assert torch.allclose(out.alpha[c], one.alpha[0])


def test_culling_behind_camera_and_empty():
    g = Gaussians.from_rgb(torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005]]), torch.ones(2, 3), 0.5)
    out = render(g, torch.eye(4), K, W, H)
    assert float(out.alpha.max()) == 0.0
    out = render(Gaussians.empty(), np.eye(4, dtype=np.float32), K.numpy(), W, H)
    assert out.rgb.shape == (1, H, W, 3) and float(out.rgb.abs().max()) == 0.0


def test_backend_selection():
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(UsageError):
        resolve_backend("gsplat", "cpu")
    with pytest.raises(UsageError):
        resolve_backend("vulkan", "cpu")


def test_composite_backward_gradcheck():
    """The hand-written backward of the compositing kernel against numerical derivatives."""
    torch.manual_seed(0)
    tile, t, L = 4, 3, 5
    basis_t = _pixel_basis(tile, torch.float64).T.contiguous()
    # well-conditioned Gaussians near the tile, away from the 1/255 and 0.999 thresholds
    mx = torch.rand(t, L, dtype=torch.float64) * 4
    my = torch.rand(t, L, dtype=torch.float64) * 4
    a = 0.05 + 0.1 * torch.rand(t, L, dtype=torch.float64)
    c = 0.05 + 0.1 * torch.rand(t, L, dtype=torch.float64)
    b = 0.02 * torch.rand(t, L, dtype=torch.float64)
    coef = torch.stack([0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my, -(a * mx + b * my), -(c * my + b * mx),
                        0.5 * a, 0.5 * c, b], 1).requires_grad_()
    op = (0.3 + 0.4 * torch.rand(t, L, dtype=torch.float64)).requires_grad_()
    feats = torch.rand(t, L, 4, dtype=torch.float64, requires_grad=True)
    for keep in (False, True):  # recompute in backward, or keep the forward state
        assert torch.autograd.gradcheck(
            lambda co, o, f: _Composite.apply(co, o, f, basis_t, keep), (coef, op, feats), eps=1e-6, atol=1e-5, fast_mode=True
        )


def test_render_gradients_match_finite_differences():
    """End to end (projection, SH, tiles, compositing), float64, smooth region of the loss."""
    torch.manual_seed(1)
    n = 4
    g = Gaussians(
        torch.tensor([[-0.2, -0.1, 2.0], [0.15, 0.1, 2.5], [0.0, 0.05, 3.0], [0.1, -0.15, 2.2]]),
        torch.log(torch.full((n, 3), 0.08)) + 0.2 * torch.randn(n, 3),
        torch.randn(n, 4),
        torch.zeros(n),
        torch.randn(n, 4, 3) * 0.3,
    )
    for k, t in g.tensors().items():
        setattr(g, k, t.double().requires_grad_())
    vm = look_at_viewmat((0.1, -0.05, 0.0)).double()
    wts = torch.rand(H, W, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def loss():
        o = render(g, vm, K.double(), W, H, backend="torch", tile=8)
        return (o.rgb[0] * wts[..., :3]).sum() + (o.alpha[0] * wts[..., 3]).sum() + (o.depth[0] * o.alpha[0] * wts[..., 4]).sum()

    L0 = loss()
    L0.backward()
    eps = 1e-5
    checked = 0
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        t = getattr(g, name)
        flat = t.detach().view(-1)
        grad = t.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 6)):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                lp = float(loss())
                flat[i] = old - eps
                lm = float(loss())
                flat[i] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - float(grad[i])) <= 1e-3 * max(1.0, abs(fd)), (name, i, fd, float(grad[i]))
            checked += 1
    assert checked >= 25


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_and_torch_backends_agree():
    pytest.importorskip("gsplat")
    from vd.lift import gaussians_from_rgbd

    h, w = 96, 128
    Kc = torch.tensor([[110.0, 0, 64.0], [0, 110.0, 48.0], [0, 0, 1]])
    v, u = np.mgrid[0:h, 0:w]
    rgb = np.stack([u / w, v / h, 0.5 + 0.5 * np.sin(u / 5.0)], -1).astype(np.float32)
    depth = (2.0 + 0.3 * np.sin(u / 17.0) + 0.01 * v).astype(np.float32)
    g = gaussians_from_rgbd(rgb, depth, Kc)
    vm = look_at_viewmat((0.2, -0.1, -0.3), target=(0, 0, 2.0))
    cpu = render(g, vm, Kc, w, h, backend="torch")
    gpu = render(g.to("cuda"), vm.cuda(), Kc.cuda(), w, h, backend="gsplat")
    assert gpu.backend == "gsplat"
    assert (cpu.rgb - gpu.rgb.cpu()).abs().mean() <= 0.01
    assert (cpu.alpha - gpu.alpha.cpu()).abs().mean() <= 0.01


def test_projection_matches_gsplat_pure_torch_reference():
    """vd's projection against gsplat 1.5's own pure-torch `_fully_fused_projection` (CPU)."""
    pytest.importorskip("gsplat")
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    from vd.render.torch_backend import covariances, project

    g = scene(n=200, seed=5)
    g.means[:5, 2] = -1.0  # behind the camera: culled by both
    vm = look_at_viewmat((0.4, -0.3, -0.5))
    covars, _ = _quat_scale_to_covar_preci(g.quats, torch.exp(g.log_scales), compute_preci=False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(g.means, covars, vm[None], K[None], W, H)
    m2, con, dep, rad = project(g.means, covariances(g), vm, K, W, H)
    assert torch.equal(rad, radii[0].to(rad.dtype))
    vis = (rad > 0).all(-1)
    assert vis.sum() > 100
    assert torch.allclose(m2[vis], means2d[0][vis], atol=1e-3)
    assert torch.allclose(con[vis], conics[0][vis], rtol=1e-3, atol=1e-5)
    assert torch.allclose(dep, depths[0])


def _stub_gsplat(root, *, prebuilt=False):
    """A gsplat that imports (pure Python, as its wheel is) with or without its kernels module."""
    pkg = root / "gsplat"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1.5.3'\n")
    if prebuilt:
        (pkg / "csrc.py").write_text("")
    dist = root / "gsplat-1.5.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gsplat\nVersion: 1.5.3\n")


def use_stub_gsplat(tmp_path, monkeypatch, request) -> None:
    """Put the stub first on sys.path for one test; its modules leave sys.modules afterwards."""
    import importlib

    def purge():
        for name in [n for n in sys.modules if n == "gsplat" or n.startswith("gsplat.")]:
            del sys.modules[name]
        importlib.invalidate_caches()

    _stub_gsplat(tmp_path / "site")
    purge()
    request.addfinalizer(purge)  # runs after monkeypatch restored sys.path
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch-ext"))


@pytest.fixture
def gsplat_without_kernels(tmp_path, monkeypatch, request):
    use_stub_gsplat(tmp_path, monkeypatch, request)
    return tmp_path


def test_auto_backend_skips_gsplat_without_built_kernels(gsplat_without_kernels, capsys, monkeypatch):
    """gsplat's wheel imports without its CUDA kernels; auto must not pick it then (the first render
    would compile for minutes, or fail on a missing kernel) and says how to build them."""
    import vd.render as R

    monkeypatch.setattr(R, "_said", set())
    assert resolve_backend("auto", "cuda") == "torch"
    assert "kernels are not built" in capsys.readouterr().err
    built = gsplat_without_kernels / "torch-ext" / "gsplat_cuda"
    built.mkdir(parents=True, exist_ok=True)
    (built / "gsplat_cuda.so").write_bytes(b"")
    assert resolve_backend("auto", "cuda") == "gsplat"


def test_explicit_gsplat_without_kernels_or_nvcc_is_a_usage_error(gsplat_without_kernels, monkeypatch):
    import vd.render as R

    monkeypatch.setattr(R, "nvcc_version", lambda: None)
    with pytest.raises(UsageError, match=r"not built and there is no nvcc .*from gsplat.cuda._backend import _C"):
        resolve_backend("gsplat", "cuda")


def test_zero_quaternion_renders_as_identity_in_both_backends():
    """gsplat divides by |q| (NaN for a zero quaternion); the torch renderer clamps (identity). Both now
    get unit quaternions with a collapsed one replaced by the identity."""
    from vd.render.gsplat_backend import gsplat_arguments

    g = scene(6)
    g.quats[0] = 0.0
    g.quats[1] = 1e-20  # below any useful precision: the same as zero
    ident = g.clone()
    ident.quats[0] = torch.tensor([1.0, 0, 0, 0])
    ident.quats[1] = torch.tensor([1.0, 0, 0, 0])
    q = gsplat_arguments(g, torch.eye(4)[None], K[None], W, H)["quats"]
    assert torch.isfinite(q / q.norm(dim=-1, keepdim=True)).all()  # what gsplat's kernel computes
    assert torch.equal(q[:2], torch.tensor([[1.0, 0, 0, 0]] * 2))
    assert torch.allclose(q[2:], g.quats[2:] / g.quats[2:].norm(dim=-1, keepdim=True))
    a, b = render(g, torch.eye(4), K, W, H, backend="torch"), render(ident, torch.eye(4), K, W, H, backend="torch")
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
