"""The fine stage with a tiny random Flux Fill (real channel layout) on CPU, through the production
building blocks of vd.models.flux_fill: the MCS loop end to end, and the rectification math on the
model's own velocity (weight 0 = the plain sampler, weight 1 with a perfect render = the render)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from flux_tiny import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("tinyflux"))


def _backend(tiny):
    from vd.models.flux_fill import FluxFillInpaint

    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    return FluxFillInpaint(device="cpu", offload="none", paths=paths, config=tiny["config"])


@pytest.fixture(scope="module")
def ff(tiny):
    return _backend(tiny).flux


def _inputs(ff, B=2, H=32, W=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, 3, H, W, generator=g) * 2 - 1
    masks = torch.zeros(B, 1, H, W)
    masks[:, :, 8:24, 16:40] = 1
    cond = ff.condition(images, masks)
    x = ff.noise(B, H, W, seed)
    return cond, x


def test_weight_zero_is_bit_identical_to_the_flux_euler_sampler(ff):
    from vd import mcs
    from vd.models.flux_fill import schedule

    H, W = 32, 48
    cond, x = _inputs(ff, H=H, W=W)
    ts = schedule(25, (H // 16) * (W // 16))[25 - 9:]
    velocity = lambda x_, t: ff.velocity(x_, t, cond, 30.0, height=H, width=W)  # noqa: E731
    plain = ff.denoise(x, cond, ts, 30.0, height=H, width=W)
    out = mcs.sample(x, ts, velocity, lambda x0, k: torch.randn_like(x0) * 100, 0.0)
    assert torch.equal(out, plain)


def test_weight_one_with_perfect_render_lands_on_it_with_the_flux_model(ff):
    from vd import mcs
    from vd.models.flux_fill import schedule

    H, W = 32, 48
    cond, x = _inputs(ff, H=H, W=W, seed=1)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    ts = schedule(25, (H // 16) * (W // 16))[25 - 4:]
    velocity = lambda x_, t: ff.velocity(x_, t, cond, 30.0, height=H, width=W)  # noqa: E731
    out = mcs.sample(x, ts, velocity, lambda x0, k: target, 1.0)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
    assert (ff.denoise(x, cond, ts, 30.0, height=H, width=W) - target).abs().max() > 0.1


@pytest.mark.slow
def test_flux_loop_end_to_end(tiny, tmp_path):
    from test_fine import make_coarse

    from vd.cache import Cache
    from vd.ply import read_ply
    from vd.stages.denoisers import FluxDenoiser
    from vd.stages.fine import FineParams, run_fine

    coarse = make_coarse(tmp_path / "coarse")
    params = FineParams(views=2, steps=2, total_steps=3, gs_iters=1, rect_weight=0.5)
    factory = lambda: FluxDenoiser(backend=_backend(tiny))  # noqa: E731
    res = run_fine(coarse, tmp_path / "fine", params, denoiser_factory=factory, device="cpu", cache=Cache.open())
    g, _ = read_ply(res.ply)
    assert len(g) > 100
    s = json.loads(res.summary_path.read_text())
    assert len(s["steps"]) == params.steps
    assert s["denoiser"]["name"] == "flux-fill" and "flux-fill:" in s["denoiser"]["identity"]
    assert s["licences"] == {  # the weights a scene used, with their licences (issue 28)
        "flux-fill": {"license": "FLUX.1 [dev] Non-Commercial License", "commercial": False},
        "flux-prompt": {"license": "same as FLUX.1 [dev] (derived embeddings)", "commercial": False},
    }
    w, h = s["frame"]["width"], s["frame"]["height"]
    assert w % 16 == 0 and h % 16 == 0
    for row in s["steps"]:
        assert row["gs_loss_final"] is not None and len(row["norm_v"]) == 2
        assert row["rescale"] is not None and len(row["rescale"]) == 2
    # the last step ends at t = 0 and is never rescaled (vd.mcs eq. 9)
    assert s["steps"][-1]["t_next"] == 0.0 and s["steps"][-1]["rescale"] == [1.0, 1.0]
    assert [p.name for p in res.strips] == ["step_00.png", "step_01.png", "final.png"]
    # resume: everything cached, the model is never run again
    calls = []

    class Spy(FluxDenoiser):
        def velocity(self, x, t, state):  # pragma: no cover - must not be called
            calls.append(t)
            return super().velocity(x, t, state)

    res2 = run_fine(coarse, tmp_path / "fine2", params, denoiser_factory=lambda: Spy(backend=_backend(tiny)),
                    device="cpu", cache=Cache.open())
    assert res2.cached_steps == 2 and not calls
    assert res2.ply.read_bytes() == res.ply.read_bytes()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flux_loop_on_cuda_reports_vram(tiny, tmp_path):
    from test_fine import make_coarse

    from vd.cache import Cache
    from vd.models.flux_fill import FluxFillInpaint
    from vd.stages.denoisers import FluxDenoiser
    from vd.stages.fine import FineParams, run_fine

    coarse = make_coarse(tmp_path / "coarse")
    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    backend = FluxFillInpaint(device="cuda", offload="model", paths=paths, config=tiny["config"])
    params = FineParams(views=2, steps=2, total_steps=3, gs_iters=2)
    res = run_fine(coarse, tmp_path / "fine", params, denoiser_factory=lambda: FluxDenoiser(backend=backend),
                   device="cuda", cache=Cache.open())
    s = json.loads(res.summary_path.read_text())
    assert len(s["steps"]) == 2 and s["vram"]["peak_bytes"] > 0
    assert s["denoiser"]["dtype"] == "bfloat16"
