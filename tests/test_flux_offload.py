"""FLUX.1-Fill offload on a CPU: every tensor move of the real offload paths, counted.

The compute device is torch's `meta` device (a real second device: a CPU -> meta move is a real
`aten._to_copy`, and the diffusers models run on it, producing shapes without values). A dispatch
mode records each cross-device copy with its source storage and byte count, so the tests see what
the hooks and placements really move: which weights, how often, in which direction, and whether
torch's deterministic NaN fill was on while they moved.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from vd.models import flux_fill as F  # noqa: E402
from vd.models.offload import GIB, plan  # noqa: E402


class Transfers(TorchDispatchMode):
    """Cross-device copies: (source device, destination device, source storage pointer, bytes, NaN fill on)."""

    def __init__(self):
        super().__init__()
        self.moves = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.to):  # `to` itself in inference mode
            src, dst = args[0], out
        elif func is torch.ops.aten.copy_.default:
            src, dst = args[1], args[0]
        else:
            return out
        if src.device.type != dst.device.type:
            ptr = src.untyped_storage().data_ptr() if src.device.type == "cpu" else None
            self.moves.append((src.device.type, dst.device.type, ptr, dst.numel() * dst.element_size(),
                               torch.utils.deterministic.fill_uninitialized_memory))
        return out

    def up(self, ptrs=None):
        return [m for m in self.moves if m[1] == "meta" and (ptrs is None or m[2] in ptrs)]

    def down(self):
        return [m for m in self.moves if m[0] != "cpu"]


def _ptrs(module) -> set:
    return {t.untyped_storage().data_ptr() for t in list(module.parameters()) + list(module.buffers())}


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _parts():
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from flux_tiny import TINY_TRANSFORMER, TINY_VAE

    torch.manual_seed(0)
    tr = FluxTransformer2DModel.from_config({k: v for k, v in TINY_TRANSFORMER.items() if not k.startswith("_")})
    ae = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    return tr, ae, torch.randn(1, 8, TINY_TRANSFORMER["joint_attention_dim"]), torch.randn(1, 16)


def _flux(offload, **kw):
    return F.FluxFill(*_parts(), device="meta", offload=offload, **kw)


def _inputs(ff, n=32):
    x = torch.zeros(1, (n // 16) ** 2, 64, device="meta")
    cond = torch.zeros(1, (n // 16) ** 2, 320, device="meta")
    return x, cond


def test_sequential_offload_uploads_each_block_once_per_call_and_copies_nothing_back():
    ff = _flux("sequential")
    tr_ptrs, tr_bytes = _ptrs(ff.transformer), _nbytes(ff.transformer)
    x, cond = _inputs(ff)
    with Transfers() as tx:
        for _ in range(2):
            ff.velocity(x, 0.5, cond, height=32, width=32)
    ups = tx.up(tr_ptrs)
    assert sum(m[3] for m in ups) == 2 * tr_bytes  # every weight once per forward
    assert len({m[2] for m in ups}) == len(tr_ptrs)
    assert tx.down() == []  # the CPU copies never change: nothing travels back
    # between calls the transformer points at its CPU copies (the device copies are gone)
    assert {p.device.type for p in ff.transformer.parameters()} == {"cpu"}
    ff.close()


@pytest.mark.parametrize("evict,expected_transformer_uploads,expected_ae_uploads", [(True, 3, 2), (False, 1, 1)])
def test_model_offload_moves_per_mcs_step(evict, expected_transformer_uploads, expected_ae_uploads):
    """The fine stage's order (velocity, decode) x 2, velocity: with the transformer resident
    (the plan found room) it is uploaded once; evicted for the AE, once per velocity call."""
    ff = _flux("model", evict_for_ae=evict)
    tr_ptrs, ae_ptrs = _ptrs(ff.transformer), _ptrs(ff.ae)
    tr_bytes, ae_bytes = _nbytes(ff.transformer), _nbytes(ff.ae)
    x, cond = _inputs(ff)
    z = torch.zeros(1, 16, 4, 4, device="meta")
    with Transfers() as tx:
        for _ in range(2):
            ff.velocity(x, 0.5, cond, height=32, width=32)
            ff.decode(z)
        ff.velocity(x, 0.5, cond, height=32, width=32)
    assert sum(m[3] for m in tx.up(tr_ptrs)) == expected_transformer_uploads * tr_bytes
    assert sum(m[3] for m in tx.up(ae_ptrs)) == expected_ae_uploads * ae_bytes
    assert tx.down() == []
    ff.park()
    assert {p.device.type for m in (ff.transformer, ff.ae) for p in m.parameters()} == {"cpu"}
    ff.close()


def test_prompt_embeddings_and_ids_upload_once_per_model():
    ff = _flux("none")
    consts = {ff.txt.untyped_storage().data_ptr(), ff.vec.untyped_storage().data_ptr()}
    x, cond = _inputs(ff)
    with Transfers() as tx:
        for _ in range(3):
            ff.velocity(x, 0.5, cond, height=32, width=32)
    assert len(tx.up(consts)) == 2  # txt and vec, once each, not once per call
    weights = _ptrs(ff.transformer)
    assert tx.up(weights) == []  # offload none: the weights were placed once, at load


def test_uploads_skip_the_deterministic_nan_fill():
    """torch's deterministic mode (the coarse stage runs in it) fills new allocations with NaN; a weight
    upload overwrites the whole allocation, so vd turns the fill off while it places or uploads
    weights (and restores it): when the model is placed (offload none) and per call (model)."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert torch.utils.deterministic.fill_uninitialized_memory
        tr, ae, txt, vec = _parts()
        weights = _ptrs(tr)
        with Transfers() as tx:
            F.FluxFill(tr, ae, txt, vec, device="meta", offload="none")
        placed = tx.up(weights)
        assert placed and not any(m[4] for m in placed)
        ff = _flux("model")
        x, cond = _inputs(ff)
        weights = _ptrs(ff.transformer)
        with Transfers() as tx:
            ff.velocity(x, 0.5, cond, height=32, width=32)
        weight_moves = tx.up(weights)
        assert weight_moves and not any(m[4] for m in weight_moves)
        assert torch.utils.deterministic.fill_uninitialized_memory  # restored
    finally:
        torch.use_deterministic_algorithms(prev)


def test_memory_plan_keeps_the_transformer_resident_when_it_fits():
    G = GIB
    fits = plan(79 * G, 80 * G, budget=int(25.5 * G), flux=True, depth=False)
    assert fits.offload == "model" and fits.evict_for_ae is False and "stays on the GPU" in fits.reason
    tight = plan(79 * G, 80 * G, budget=int(25.1 * G), flux=True, depth=False)
    assert tight.offload == "model" and tight.evict_for_ae is True
    assert plan(79 * G, 80 * G, budget=16 * G, flux=True).offload == "sequential"
    assert plan(79 * G, 80 * G, budget=40 * G, flux=True).offload == "none"
    # the backend builds its model with the plan's choice
    b = F.FluxFillInpaint(device="cpu", offload="model")
    assert b.evict_for_ae is True  # no plan yet: the lowest peak
    b.placement = fits.to_json()
    assert b.evict_for_ae is False


def test_loading_refuses_without_accelerate(monkeypatch, tmp_path):
    """Without accelerate diffusers would build the 12 B transformer in fp32 on the CPU first."""
    import sys

    from vd.errors import VdError

    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(VdError, match=r"needs accelerate .*\[gpu\]"):
        F.load_transformer(tmp_path / "flux1-fill-dev.safetensors")
