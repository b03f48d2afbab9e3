"""GPU memory placement (`vd.models.offload`): the pure decision on simulated memory figures,
its application to the backends, and the CLI options' validation."""

from __future__ import annotations

import json
import math

import pytest

from vd.errors import UsageError
from vd.models.offload import FOOTPRINTS, configure, place, plan
from vd.params import GIB, FluxParams

H200 = 139 * GIB


def test_a_big_card_keeps_everything_on_the_gpu():
    p = plan(H200, H200, flux=True, depth=True)
    assert (p.offload, p.depth_on_gpu, p.fits) == ("none", True, True)
    assert "offload none" in p.reason and "free" in p.reason


@pytest.mark.parametrize("free_gib, expected", [(80, "none"), (26, "model"), (20, "sequential"), (6, "sequential")])
def test_the_fastest_mode_that_fits_is_chosen(free_gib, expected):
    p = plan(int(free_gib * GIB), 80 * GIB, flux=True, depth=False)
    assert p.offload == expected and p.fits


def test_thresholds_follow_the_footprints():
    """A card just large enough for a mode gets it; one byte less gets the next mode."""
    work = 512 * 512
    need_none = FOOTPRINTS.need("none", work)
    assert plan(need_none, H200, work_pixels=work).offload == "none"
    assert plan(need_none - 1, H200, work_pixels=work).offload == "model"
    need_model = FOOTPRINTS.need("model", work)
    assert plan(need_model - 1, H200, work_pixels=work).offload == "sequential"


def test_the_depth_model_moves_to_the_cpu_before_flux_goes_block_by_block():
    work = 512 * 512
    need_model = FOOTPRINTS.need("model", work)
    p = plan(need_model, H200, flux=True, depth=True, work_pixels=work)
    assert (p.offload, p.depth_on_gpu) == ("model", False)
    assert "depth model on the CPU" in p.reason


def test_the_budget_caps_what_a_free_card_offers():
    for budget_gib, mode in ((12, "sequential"), (16, "sequential"), (24, "sequential"), (40, "none")):
        p = plan(H200, H200, budget=budget_gib * GIB, flux=True, depth=True)
        assert p.offload == mode, (budget_gib, p.reason)
        assert p.available_bytes == budget_gib * GIB
        assert f"{budget_gib}.0 GiB budget" in p.reason


def test_memory_already_held_counts_against_the_budget():
    assert plan(H200, H200, budget=28 * GIB).offload == "none"
    held = plan(H200, H200, budget=28 * GIB, allocated=3 * GIB)
    assert held.offload == "sequential" and held.available_bytes == 25 * GIB


def test_a_budget_above_the_free_memory_changes_nothing():
    assert plan(20 * GIB, 24 * GIB, budget=64 * GIB).available_bytes == 20 * GIB


def test_more_work_pixels_need_more_memory():
    assert plan(27 * GIB, H200, work_pixels=256 * 256).offload == "none"
    assert plan(27 * GIB, H200, work_pixels=8 * 544 * 416).offload == "sequential"


def test_too_little_memory_is_said_not_hidden():
    p = plan(1 * GIB, 8 * GIB, flux=True, depth=True)
    assert (p.offload, p.depth_on_gpu, p.fits) == ("sequential", False, False)
    assert "out-of-memory" in p.reason


def test_a_fixed_mode_is_kept_and_only_the_depth_device_is_chosen():
    p = plan(H200, H200, requested="sequential", flux=True, depth=True)
    assert (p.offload, p.depth_on_gpu) == ("sequential", True) and "--offload" in p.reason
    tight = plan(10 * GIB, 10 * GIB, requested="none", flux=True)
    assert tight.offload == "none" and not tight.fits


def test_without_flux_only_the_depth_device_is_chosen():
    assert plan(H200, H200, flux=False, depth=True).depth_on_gpu
    assert not plan(3 * GIB, 4 * GIB, flux=False, depth=True).depth_on_gpu


def test_the_placement_is_json():
    p = plan(H200, H200, budget=16 * GIB, flux=True, depth=True)
    d = json.loads(json.dumps(p.to_json()))
    assert d["offload"] == "sequential" and d["budget_bytes"] == 16 * GIB and d["needs"]["model"] > d["needs"]["sequential"]


def test_on_a_cpu_device_nothing_is_read():
    p = place("cpu", budget=4 * GIB)
    assert not p.on_gpu and p.offload == "none" and "no CUDA" in p.reason


class _Depth:
    name = "moge"
    _device = "cuda"


class _Flux:
    name = "flux-fill"
    offload = "auto"
    placement = None


def test_configure_applies_a_plan(monkeypatch):
    import vd.models.offload as off

    monkeypatch.setattr(off, "place", lambda device, **kw: plan(24 * GIB, 24 * GIB, **kw))
    depth, flux = _Depth(), _Flux()
    out = configure(depth, flux, device="cuda", budget=None)
    assert flux.offload == out["offload"] == "sequential"
    assert depth._device == "cuda" and flux.placement == out


def test_configure_moves_the_depth_model_off_a_small_card(monkeypatch):
    import vd.models.offload as off

    monkeypatch.setattr(off, "place", lambda device, **kw: plan(3 * GIB, 4 * GIB, **kw))
    depth = _Depth()
    out = configure(depth, None, device="cuda")
    assert depth._device == "cpu" and out["depth_on_gpu"] is False


def test_memory_options_defaults_live_in_the_dataclass():
    assert (FluxParams().offload, FluxParams().vram_budget) == ("auto", None)
    o = FluxParams(offload="model", vram_budget=12.5)
    o.validate()
    assert (o.offload, o.budget_bytes) == ("model", int(12.5 * GIB))


@pytest.mark.parametrize("offload, budget", [("disk", None), ("auto", -1.0), ("auto", 0.0), ("auto", math.inf),
                                             ("auto", math.nan)])
def test_memory_options_reject_bad_values(offload, budget):
    with pytest.raises(UsageError):
        FluxParams(offload=offload, vram_budget=budget).validate()


@pytest.mark.parametrize("args, words", [(["--vram-budget", "-2"], "--vram-budget"), (["--vram-budget", "inf"], "--vram-budget"),
                                         (["--offload", "disk"], "--offload")])
@pytest.mark.parametrize("command", ["coarse", "fine"])
def test_bad_memory_options_are_usage_errors(command, args, words, tmp_path, capsys):
    from vd.commands.app import run

    img = tmp_path / "x.png"
    img.write_bytes(b"")
    code = run([command, str(img), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_flux_backend_decides_auto_offload_when_it_loads(tmp_path):
    """On the CPU the lazily resolved "auto" becomes "none" and the choice is kept for the summary."""
    from vd.models.flux_fill import FluxFillInpaint

    b = FluxFillInpaint(device="cpu", paths={"transformer": "t", "ae": "a", "txt": "x", "vec": "v"})
    assert b.offload == "auto"
    b._place()
    assert b.offload == "none" and b.placement["on_gpu"] is False


@pytest.mark.gpu
@pytest.mark.parametrize("budget_gib, expected", [(None, "none"), (1, "sequential")])
def test_auto_offload_on_the_gpu(tmp_path, budget_gib, expected):
    """On a real device: the free VRAM is read when the model loads, the plan is applied, the inpaint works."""
    import numpy as np
    import torch
    from flux_tiny import make_tiny_flux

    from vd.models.flux_fill import FluxFillInpaint

    if budget_gib is None and torch.cuda.mem_get_info()[0] < 40 * GIB:
        pytest.skip("needs a GPU with 40 GiB free")
    tiny = make_tiny_flux(tmp_path)
    paths = {k: tiny[k] for k in ("transformer", "ae", "txt", "vec")}
    b = FluxFillInpaint(device="cuda", paths=paths, config=tiny["config"], steps=2,
                        vram_budget=None if budget_gib is None else budget_gib * GIB)
    rgb = np.full((32, 48, 3), 100, np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 8:40] = True
    out = b.inpaint(rgb, mask, seed=0)
    assert np.array_equal(out[~mask], rgb[~mask])
    assert b.offload == expected and b.placement["on_gpu"] and b.placement["free_bytes"] > 0
    b.release()
