"""The flow-matching rectification math of vd.mcs on synthetic tensors."""

from __future__ import annotations

import pytest
import torch

from vd import mcs


def _schedule(n: int) -> list[float]:
    # a time-shifted schedule like Flux's (mu = 1), ending at exactly 0
    ts = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    mu = torch.tensor(1.0, dtype=torch.float64)
    shifted = torch.where(ts > 0, mu.exp() / (mu.exp() + (1.0 / ts.clamp_min(1e-12) - 1.0)), torch.zeros_like(ts))
    return shifted.tolist()


def _model(seed: int, dtype=torch.float64):
    """A deterministic, non-trivial velocity field: v = A x + b t (per-channel mixing)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(4, 4, generator=g, dtype=dtype) * 0.3
    b = torch.randn(1, 4, 1, 1, generator=g, dtype=dtype)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", A.to(x.dtype), x) + b.to(x.dtype) * t

    return velocity


def _plain_euler(x, ts, velocity):
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


def test_noise_and_predictions_invert_each_other():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 2, 4, 8, 8, generator=g, dtype=torch.float64)
    t = 0.37
    x_t = mcs.add_noise(x0, eps, t)
    v = eps - x0
    torch.testing.assert_close(mcs.predict_x0(x_t, v, t), x0)
    torch.testing.assert_close(mcs.predict_noise(x_t, v, t), eps)
    # the implied velocity of the true clean sample is the true velocity
    torch.testing.assert_close(mcs.implied_velocity(x_t, x0, t), v)
    # eq. (4'): the Euler step re-noises the clean estimate with the noise estimate
    t_next = 0.2
    torch.testing.assert_close(mcs.euler_step(x_t, v, t, t_next), mcs.add_noise(x0, eps, t_next))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_weight_zero_equals_plain_sampler(dtype):
    velocity = _model(1)
    ts = _schedule(25)[25 - 9 :]
    x = torch.randn(3, 4, 6, 5, generator=torch.Generator().manual_seed(2)).to(dtype)

    def render(x0_hat, k):  # a wildly wrong render must change nothing at weight 0
        return torch.full_like(x0_hat, 1e6)

    ref = x.clone()
    for t, t_next in zip(ts[:-1], ts[1:]):
        ref, _ = mcs.rectified_step(ref, velocity(ref, t), None, t, t_next, 0.0)
    out = mcs.sample(x, ts, velocity, render, 0.0)
    assert out.dtype == dtype
    assert torch.equal(out, ref)
    if dtype == torch.float64:
        assert torch.equal(out, _plain_euler(x, ts, velocity))


def test_weight_zero_with_a_render_is_bit_identical_to_no_render():
    velocity = _model(3, torch.float32)
    ts = _schedule(10)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    a = mcs.sample(x, ts, velocity, lambda x0, k: torch.zeros_like(x0), 0.0)
    b = mcs.sample(x, ts, velocity, None, 0.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [1, 2, 9])
@pytest.mark.parametrize("rescale", ["shrink", "match", "none"])
def test_weight_one_with_perfect_render_lands_on_render(steps, rescale):
    velocity = _model(5)  # the model predicts something else entirely
    target = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 2.0
    ts = _schedule(25)[25 - steps :]
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = mcs.add_noise(torch.zeros_like(target), noise, ts[0])  # start far from the target
    out = mcs.sample(x, ts, velocity, lambda x0_hat, k: target, 1.0, rescale=rescale)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-12)
    # and the plain sampler does not land there (the test can fail)
    assert (mcs.sample(x, ts, velocity, None, 0.0) - target).abs().max() > 0.1


def test_weight_one_with_oracle_model_follows_the_straight_line_every_step():
    # model and render agree on the target: the implied velocity equals the predicted one, r == 1,
    # and every intermediate state is exactly on the line from the target to the start noise.
    target = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ts = _schedule(25)[16:]
    x = mcs.add_noise(target, noise, ts[0])
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = (x - target) / t
        x, stats = mcs.rectified_step(x, v, target, t, t_next, 1.0)
        torch.testing.assert_close(x, mcs.add_noise(target, noise, t_next), rtol=0, atol=1e-12)
        if t_next > 0:
            assert stats["rescale"] == pytest.approx([1.0, 1.0], abs=1e-12)
    torch.testing.assert_close(x, target, rtol=0, atol=1e-12)


def test_final_step_output_is_convex_blend_and_naive_rescale_leaves_noise():
    g = torch.Generator().manual_seed(10)
    x_t, v, z0 = torch.randn(3, 2, 4, 3, 3, generator=g, dtype=torch.float64)
    z0 = z0 * 5.0  # far from the prediction, so ||v~|| != ||v||
    t, w = 0.08, 0.5
    x0_hat = mcs.predict_x0(x_t, v, t)
    out, stats = mcs.rectified_step(x_t, v, z0, t, 0.0, w)
    torch.testing.assert_close(out, (1 - w) * x0_hat + w * z0)
    assert stats["rescale"] == [1.0, 1.0]
    # eq. (9): with the rescale on the last step, leftover noise w (1 - r) (x_t - z0)
    naive, _ = mcs.rectified_step(x_t, v, z0, t, 0.0, w, rescale="match", rescale_final=True)
    r = mcs.rescale_factor(v, mcs.implied_velocity(x_t, z0, t), "match")
    torch.testing.assert_close(naive, (1 - w) * x0_hat + w * z0 + w * (1 - r) * (x_t - z0))
    assert (naive - out).abs().max() > 1e-3
    # ... and with w = 1 the naive rule misses the render, the exact rule does not
    naive1, _ = mcs.rectified_step(x_t, v, z0, t, 0.0, 1.0, rescale="match", rescale_final=True)
    exact1, _ = mcs.rectified_step(x_t, v, z0, t, 0.0, 1.0)
    assert (naive1 - z0).abs().max() > 1e-3
    torch.testing.assert_close(exact1, z0)


@pytest.mark.parametrize("mode", ["match", "shrink"])
def test_intermediate_step_rescale_per_sample(mode):
    g = torch.Generator().manual_seed(11)
    x_t, v, z0 = torch.randn(3, 2, 16, 8, generator=g, dtype=torch.float64)
    v[1] *= 10.0  # sample 1: ||v|| > ||v~||; sample 0: ||v|| < ||v~|| (z0 far off)
    z0[0] *= 20.0
    t, t_next = 0.5, 0.4
    vi = mcs.implied_velocity(x_t, z0, t)
    assert v[0].norm() < vi[0].norm() and v[1].norm() > vi[1].norm()
    out, stats = mcs.rectified_step(x_t, v, z0, t, t_next, 1.0, rescale=mode)
    v_star = (out - x_t) / (t_next - t)
    for i in range(2):
        want = v[i].norm() if mode == "match" else min(v[i].norm(), vi[i].norm())
        assert v_star[i].norm().item() == pytest.approx(want.item(), rel=1e-9)
    # the direction is always the implied velocity's
    cos = torch.nn.functional.cosine_similarity(v_star.flatten(1), vi.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(2, dtype=torch.float64))
    assert len(stats["rescale"]) == 2
    if mode == "shrink":
        assert stats["rescale"][0] < 1.0 and stats["rescale"][1] == 1.0
    # without the rescale the step uses the implied velocity as is
    out2, _ = mcs.rectified_step(x_t, v, z0, t, t_next, 1.0, rescale="none")
    torch.testing.assert_close(out2, x_t + (t_next - t) * vi)
    assert torch.equal(mcs.rectified_step(x_t, v, z0, t, t_next, 1.0, rescale=False)[0], out2)


def test_match_rescale_can_overshoot_the_render_and_shrink_cannot():
    # eq. (6'): x_next - z0 = (1 - r (t - t_next) / t) (x_t - z0) at w = 1
    g = torch.Generator().manual_seed(13)
    z0, noise = torch.randn(2, 1, 4, 8, 8, generator=g, dtype=torch.float64)
    t, t_next = 0.08, 0.04
    x_t = mcs.add_noise(z0, noise, t)
    v = 5.3 * mcs.implied_velocity(x_t, z0, t)  # the model's velocity is 5.3 times longer
    d0 = x_t - z0
    match, st = mcs.rectified_step(x_t, v, z0, t, t_next, 1.0, rescale="match")
    assert st["rescale"][0] == pytest.approx(5.3)
    torch.testing.assert_close(match - z0, (1 - 5.3 * 0.5) * d0)
    assert ((match - z0) * d0).sum() < 0  # jumped past the render
    shrink, st = mcs.rectified_step(x_t, v, z0, t, t_next, 1.0)
    assert st["rescale"] == [1.0]
    torch.testing.assert_close(shrink, mcs.add_noise(z0, noise, t_next))  # exactly the noise level t_next


def test_blend_is_linear_in_weight_and_validates():
    g = torch.Generator().manual_seed(12)
    v, vi = torch.randn(2, 2, 8, generator=g, dtype=torch.float64)
    for mode in ("match", "shrink"):
        r = mcs.rescale_factor(v, vi, mode)
        torch.testing.assert_close(mcs.blend_velocity(v, vi, 0.3, rescale=mode), 0.7 * v + 0.3 * r * vi)
    assert mcs.blend_velocity(v, vi, 0.0) is v
    # a zero implied velocity does not produce NaN
    assert torch.isfinite(mcs.blend_velocity(v, torch.zeros_like(vi), 0.5)).all()
    with pytest.raises(ValueError):
        mcs.blend_velocity(v, vi, 1.5)
    with pytest.raises(ValueError):
        mcs.blend_velocity(v, vi, 0.5, rescale="sometimes")
    with pytest.raises(ValueError):
        mcs.implied_velocity(v, vi, 0.0)


def test_start_index():
    assert mcs.start_index(25, 9) == 16
    assert mcs.start_index(25, 25) == 0
    for bad in [(25, 0), (25, 26), (0, 0)]:
        with pytest.raises(ValueError):
            mcs.start_index(*bad)
