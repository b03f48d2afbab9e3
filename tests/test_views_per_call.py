"""`vd fine` sends its views through the transformer as many at a time as the memory plan allows
(`views_per_call`): the same velocities as all at once, in as many transformer calls as the plan says."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _views(n=3, H=32, W=48, seed=0):
    rng = np.random.default_rng(seed)
    rgb = torch.from_numpy(rng.random((n, H, W, 3)).astype(np.float32))
    holes = np.zeros((n, H, W), bool)
    holes[:, 8:24, 16:40] = True
    return rgb, holes


def _calls(module) -> list:
    seen: list = []
    module.register_forward_hook(lambda m, args, out: seen.append(1))
    return seen


def test_flux_fill_views_one_at_a_time_give_the_batched_velocities(tmp_path):
    from flux_tiny import make_tiny_flux

    from vd.models.flux_fill import FluxFillInpaint
    from vd.stages.denoisers import FluxDenoiser

    tiny = make_tiny_flux(tmp_path / "flux")
    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    den = FluxDenoiser(backend=FluxFillInpaint(device="cpu", offload="none", paths=paths, config=tiny["config"]))
    rgb, holes = _views()
    den.prepare(rgb, holes)
    x = den.encode(rgb)
    calls = _calls(den.ff.transformer)
    together = den.velocity(x, 0.6, {})
    assert len(calls) == 1  # no plan on the CPU: all at once
    den.backend.placement = {"views_per_call": 2}
    apart = den.velocity(x, 0.6, {})
    assert len(calls) == 1 + 2  # views 0-1, then 2
    assert apart.shape == together.shape
    torch.testing.assert_close(apart, together, rtol=1e-4, atol=1e-5)


def test_flux2_klein_views_one_at_a_time_give_the_batched_velocities(tmp_path, monkeypatch):
    from klein_tiny import make_tiny_klein, make_tiny_text

    from vd.models.flux2_klein import Flux2KleinInpaint
    from vd.stages.klein_denoiser import Flux2KleinDenoiser

    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "cache"))
    tiny = make_tiny_klein(tmp_path / "klein")
    paths = {"transformer": tiny["transformer"], "vae": tiny["vae"], "text": make_tiny_text(tmp_path / "text")}
    backend = Flux2KleinInpaint(device="cpu", offload="none", paths=paths, config=tiny["config"])
    den = Flux2KleinDenoiser(backend=backend)
    rgb, holes = _views()
    den.prepare(rgb, holes)
    x = den.encode(rgb)
    calls = _calls(den.kl.transformer)
    together = den.velocity(x, 0.6, {})
    den.backend.placement = {"views_per_call": 1}
    apart = den.velocity(x, 0.6, {})
    assert len(calls) == 1 + 3
    torch.testing.assert_close(apart, together, rtol=1e-4, atol=1e-5)
