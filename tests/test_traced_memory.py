"""bench/gpu/traced.py: the allocation peaks it reads on meta tensors are the ones real tensors have."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("torch.distributed._tools.mem_tracker")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "gpu"))
import traced  # noqa: E402


def test_a_chain_of_layers_peaks_at_two_neighbouring_outputs():
    net = traced.built(
        lambda: torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 512), torch.nn.Linear(512, 8)),
        torch.float32,
    )
    x = torch.zeros(100, 64, device="meta")

    def forward():
        with torch.inference_mode():
            return net(x)

    # the 256- and 512-wide outputs are alive together while the second layer runs; the weights are not counted
    assert traced.tracked_peak(forward, net) == 100 * (256 + 512) * 4
    assert traced.weight_bytes(net) == 4 * (64 * 256 + 256 + 256 * 512 + 512 + 512 * 8 + 8)


def test_tracing_on_meta_counts_what_real_tensors_allocate():
    """A tiny FLUX.1-Fill through vd's FluxFill, traced on meta and run for real on the CPU: the same bytes,
    but for the masked image and the mask that the Fill conditioning prepares on the host (fp32, 4 channels),
    which on a GPU stay in host memory and on the CPU share the device."""
    from flux_tiny import TINY_TRANSFORMER, TINY_VAE

    work = ((1, 64, 64), (2, 64, 96))
    configs = (dict(TINY_TRANSFORMER), dict(TINY_VAE))
    on_meta = traced.flux_fill(work, configs=configs, device="meta")
    on_cpu = traced.flux_fill(work, configs=configs, device="cpu")
    assert [(r.call, r.work) for r in on_meta] == [(r.call, r.work) for r in on_cpu]
    for m, c in zip(on_meta, on_cpu, strict=True):
        assert m.weights_bytes == c.weights_bytes > 0
        host = 4 * 4 * m.pixels if m.call == "encode" else 0
        assert abs(c.peak_bytes - host - m.peak_bytes) <= 8, (m, c)  # a scalar or two of rounding at most


def test_a_batch_of_views_goes_through_the_autoencoder_one_view_at_a_time():
    """Two views: the transformer's tensors double, the AE's stay those of one view (plus the second view's
    output), which is what the memory plan sets aside (Footprints.activations)."""
    from flux_tiny import TINY_TRANSFORMER, TINY_VAE

    rows = traced.flux_fill(((1, 64, 96), (2, 64, 96)), configs=(dict(TINY_TRANSFORMER), dict(TINY_VAE)))
    peak = {(r.call, r.views): r.peak_bytes for r in rows}
    assert peak[("velocity", 2)] > 1.6 * peak[("velocity", 1)]
    for call in ("encode", "decode"):
        assert peak[(call, 2)] < 1.3 * peak[(call, 1)], call
