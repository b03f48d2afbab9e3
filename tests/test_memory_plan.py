"""The one memory plan (`vd.models.offload.plan` over `vd.models.footprints`): which inpainter, which
quantisation, which offload mode, where the depth model and a text encoder run; and `vd doctor --vram`.

The rules are tested against the footprint table itself (a need one byte above what is available
changes the choice), so a measured footprint that replaces an estimate keeps the tests meaningful."""

from __future__ import annotations

import json

import pytest

from vd.models.footprints import DEPTH_BYTES, FOOTPRINTS, INPAINT_VARIANTS, QUALITY_ORDER, SEQUENTIAL_ORDER
from vd.models.offload import DEFAULT_WORK_PIXELS, plan, variants_for

G = 2**30
ALL = list(QUALITY_ORDER)
W = DEFAULT_WORK_PIXELS


def need(variant: str, mode: str, depth_model: str = "vitl") -> int:
    return FOOTPRINTS.for_variant(INPAINT_VARIANTS[variant], depth_model).need(mode, W)


def test_the_best_quality_that_fits_whole_is_chosen():
    room = need("bf16", "none") + DEPTH_BYTES["vitl"]
    p = plan(room, 80 * G, depth=True, variants=ALL)
    assert (p.variant, p.quant, p.offload, p.depth_on_gpu) == ("bf16", "bf16", "none", True)
    assert p.backend == "flux-fill" and p.weights == ["flux-fill", "flux-prompt"]


def test_a_quantisation_that_fits_beats_moving_full_precision_block_by_block():
    room = need("q8_0", "none")
    only_bf16 = plan(room, 80 * G, variants=["bf16"])
    assert only_bf16.offload == "sequential"
    with_q8 = plan(room, 80 * G, variants=["bf16", "q8_0"])
    assert (with_q8.variant, with_q8.offload) == ("q8_0", "none")
    assert "flux-fill q8_0" in with_q8.reason


def test_the_depth_model_leaves_the_gpu_before_the_inpainter_loses_quality():
    room = need("q8_0", "model")  # q8_0 whole-model offload fits only without MoGe beside it
    assert room + DEPTH_BYTES["vitl"] > room
    p = plan(room, 80 * G, depth=True, variants=ALL)
    assert (p.variant, p.offload, p.depth_on_gpu) == ("q8_0", "model", False)
    assert "depth model on the CPU" in p.reason


def test_a_smaller_depth_model_can_stay_on_the_gpu():
    room = need("q8_0", "model") + DEPTH_BYTES["vits"]
    assert not plan(room, 80 * G, depth=True, variants=["q8_0"]).depth_on_gpu  # ViT-L does not fit beside it
    p = plan(room, 80 * G, depth=True, variants=["q8_0"], depth_model="vits")
    assert p.depth_on_gpu and p.depth_model == "vits" and p.needs["depth"] == DEPTH_BYTES["vits"]


def test_views_cost_the_transformer_for_all_of_them_and_the_autoencoder_for_one():
    """`vd fine` batches its views through the transformer; the AE takes them one at a time (FluxFill's
    slicing), so four views plan for four views' transformer and one view's AE."""
    view = 512 * 512
    fill = FOOTPRINTS.for_variant(INPAINT_VARIANTS["q8_0"])
    assert fill.activations(view) == fill.activations(view, view)  # one view: nothing changes
    four = fill.activations(4 * view, view)
    assert four < fill.activations(4 * view)  # less than one image of four views' pixels
    assert four == fill.activations_fixed + max(
        int(fill.transformer_per_mpx * 4 * view / 1e6), int(fill.ae_per_mpx * view / 1e6)
    )
    # a card that fits the four views whole only when the AE takes one at a time
    room = fill.need("none", 4 * view, view)
    assert plan(room, 80 * G, variants=["q8_0"], work_pixels=4 * view, view_pixels=view).offload == "none"
    assert plan(room, 80 * G, variants=["q8_0"], work_pixels=4 * view).offload != "none"
    # klein's transformer carries the image again as reference tokens: its share grows twice as fast
    klein = FOOTPRINTS.for_variant(INPAINT_VARIANTS["klein"])
    assert klein.activations(4 * view, view) - klein.activations_fixed > 1.9 * (four - fill.activations_fixed)


def test_views_go_through_the_transformer_as_many_at_a_time_as_fit():
    """Quality first: the inpainter and mode are chosen for one view per transformer call, then the plan
    takes as many views per call as still fit, and says so."""
    view, views = 704 * 704, 8  # vd fine's default: 8 views of a 672-pixel frame and its margin
    q8 = FOOTPRINTS.for_variant(INPAINT_VARIANTS["q8_0"])
    room = q8.need("none", 3 * view, view)  # three views at once fit whole, four do not
    assert q8.need("none", 4 * view, view) > room
    p = plan(room, 80 * G, variants=ALL, work_pixels=views * view, view_pixels=view)
    assert (p.variant, p.offload, p.views_per_call) == ("q8_0", "none", 3)
    assert "3 of 8 views through the transformer at a time" in p.reason
    assert p.needs["none"] == room
    # all of them when they fit; one view (a coarse call) plans none
    assert plan(80 * G, 80 * G, variants=ALL, work_pixels=views * view, view_pixels=view).views_per_call == 8
    assert plan(room, 80 * G, variants=ALL, work_pixels=view, view_pixels=view).views_per_call is None


def test_block_by_block_prefers_the_fewest_bytes_above_five_bits():
    room = need("q8_0", "sequential")
    assert room < need("q4_k", "model")  # nothing fits whole
    p = plan(room, 80 * G, variants=ALL)
    assert (p.variant, p.offload) == ("q8_0", "sequential")
    assert plan(room, 80 * G, variants=["bf16", "q4_k"]).offload == "sequential"


@pytest.mark.parametrize("licence", ["any", "commercial"])
def test_more_memory_never_gives_a_worse_inpainter(licence):
    variants, offer, _ = variants_for(licence, installed=[])
    allowed = variants + offer
    rank = {v: i for i, v in enumerate(QUALITY_ORDER)}
    seq_rank = {v: i for i, v in enumerate(SEQUENTIAL_ORDER)}
    speed = {"sequential": 0, "model": 1, "none": 2}
    last = None
    for gib in range(4, 81):
        p = plan(gib * G, 80 * G, depth=True, variants=allowed)
        assert p.variant in allowed
        if p.fits:
            used = p.needs[p.offload] + (p.needs["depth"] if p.depth_on_gpu else 0)
            assert used <= gib * G
        whole = p.offload != "sequential"
        # quality first, then the depth model on the GPU, then the faster mode; block by block: fewest bytes first
        score = (whole, -(rank if whole else seq_rank)[p.variant], p.depth_on_gpu, speed[p.offload])
        assert last is None or score >= last, (gib, p.reason)
        last = score


def test_a_commercial_licence_only_ever_plans_permissive_weights():
    ready, offer, _ = variants_for("commercial", installed=[])
    assert ready == [] and offer == ["klein"]
    assert all(INPAINT_VARIANTS[v].commercial for v in offer)
    for gib in (8, 12, 16, 24, 48):
        p = plan(gib * G, gib * G, depth=True, variants=offer)
        assert p.backend == "flux2-klein" and p.quant is None


def test_the_text_encoder_runs_on_the_cpu_when_it_does_not_fit_alone():
    klein = INPAINT_VARIANTS["klein"]
    small = max(need("klein", "sequential"), klein.text_encoder + FOOTPRINTS.scene - 1)
    p = plan(small, 80 * G, variants=["klein"])
    assert p.text_encoder_on_gpu is False and "text encoder on the CPU" in p.reason
    p = plan(klein.text_encoder + FOOTPRINTS.scene + need("klein", "none"), 80 * G, variants=["klein"])
    assert p.text_encoder_on_gpu is True and p.offload == "none"
    assert plan(80 * G, 80 * G, variants=["bf16"]).text_encoder_on_gpu is None  # Flux Fill has none


def test_a_better_inpainter_not_installed_is_named_with_its_fetch_line():
    room = need("q8_0", "none")
    p = plan(room, 80 * G, variants=["bf16"], offer=["q8_0", "q5_k"], have=["flux-fill", "flux-prompt"])
    assert p.variant == "bf16" and p.offload == "sequential"
    assert "flux-fill q8_0" in p.hint and p.hint.endswith("vd fetch flux-fill-q8")  # the bf16 AE is reused
    roomy = plan(80 * G, 80 * G, variants=["bf16"], offer=["q8_0"])
    assert roomy.hint == ""  # nothing better to fetch


def test_variants_need_all_their_weights():
    ready, offer, have = variants_for("any", installed=["flux-fill-q4k", "flux-prompt"])
    assert ready == [] and "q4_k" in offer  # no autoencoder
    ready, _, _ = variants_for("any", installed=["flux-fill-q4k", "flux-ae", "flux-prompt"])
    assert ready == ["q4_k"]
    ready, _, _ = variants_for("any", installed=["flux-fill", "flux-fill-q4k", "flux-prompt"])
    assert ready == ["bf16", "q4_k"]  # the GGUF variant reads the bf16 model's AE


def test_a_fixed_mode_picks_the_best_variant_for_it():
    p = plan(need("q5_k", "model"), 80 * G, requested="model", variants=ALL)
    assert (p.variant, p.offload) == ("q5_k", "model") and "--offload" in p.reason


def test_the_plan_is_json_with_its_choice():
    p = plan(16 * G, 16 * G, depth=True, variants=ALL)
    d = json.loads(json.dumps(p.to_json()))
    assert {"variant", "backend", "quant", "weights", "text_encoder_on_gpu", "hint", "depth_model"} <= set(d)


def test_unknown_variants_are_refused():
    with pytest.raises(ValueError):
        plan(16 * G, 16 * G, variants=["q3_k"])


# --------------------------------------------------------------------------- vd doctor --vram
def _doctor(capsys, *args):
    from vd.commands.app import run

    code = run(["doctor", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_doctor_prints_a_plan_per_card_size(capsys, monkeypatch):
    monkeypatch.delenv("VD_LICENCE", raising=False)
    code, out, _ = _doctor(capsys, "--vram", "8", "--vram", "12", "--vram", "16", "--vram", "24")
    assert code == 0
    rows = [ln for ln in out.splitlines() if " GB " in ln]
    assert [r.split()[0] for r in rows] == ["8", "12", "16", "24"]
    assert "estimates" in out and "vd fetch" not in out  # the fetch column names models, not commands
    assert len([ln for ln in out.splitlines() if ln.split()[:1] == ["fine"]]) == 4  # vd fine's plan under each card
    code, out, _ = _doctor(capsys, "--vram", "8", "--vram", "24", "--json")
    cards = json.loads(out)["cards"]
    for c in cards:
        assert c["peak_bytes_estimate"] <= c["vram_gib"] * G and c["fits"]
        assert c["fine"]["peak_bytes_estimate"] <= c["vram_gib"] * G and c["fine"]["fits"]
    assert cards[0]["peak_bytes_estimate"] < cards[1]["peak_bytes_estimate"]
    # vd fine's eight views: a small card takes fewer of them through the transformer at a time
    assert cards[0]["fine"]["views_per_call"] < cards[1]["fine"]["views_per_call"] == cards[1]["fine"]["views"] == 8


def test_doctor_plans_for_the_licence(capsys, monkeypatch):
    code, out, _ = _doctor(capsys, "--vram", "12", "--vram", "48", "--licence", "commercial", "--json")
    assert code == 0
    assert {c["backend"] for c in json.loads(out)["cards"]} == {"flux2-klein"}
    monkeypatch.setenv("VD_LICENCE", "commercial")
    code, out, _ = _doctor(capsys, "--vram", "48", "--json")
    assert json.loads(out)["cards"][0]["commercial"] is True


@pytest.mark.parametrize("args", [["--vram", "0"], ["--vram", "-3"], ["--vram", "8", "--depth-model", "vitx"]])
def test_doctor_vram_usage_errors(capsys, args):
    code, _, err = _doctor(capsys, *args)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the plan applied to installed weights
def _install(models_dir, *models):
    """Stand-in files for every file of the registry `models` (the plan only looks whether they are there)."""
    from vd.fetch.registry import model_spec

    for m in models:
        for f in model_spec(m).files:
            (models_dir / m).mkdir(parents=True, exist_ok=True)
            (models_dir / m / f.name).write_bytes(b"stand-in")


@pytest.fixture
def fake_card(monkeypatch):
    """A CUDA device as far as the choice is concerned, with `card.gib` GiB free."""
    torch = pytest.importorskip("torch")
    import vd.models.offload as off

    class Card:
        gib = 80.0

    card = Card()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(off, "read_vram", lambda device: (int(card.gib * G), int(card.gib * G), 0))
    return card


def test_installed_variants_are_what_the_plan_chooses_from(vd_dirs, monkeypatch):
    from vd.fetch import registry

    monkeypatch.setattr(registry, "file_state", _present_by_name)
    _install(vd_dirs["models"], "flux-fill-q4k", "flux-prompt", "flux-ae")
    ready, offer, have = variants_for("any")
    assert ready == ["q4_k"] and "bf16" in offer and {"flux-fill-q4k", "flux-ae", "flux-prompt"} <= set(have)


def test_auto_backend_and_quantisation_follow_the_plan(vd_dirs, monkeypatch, fake_card):
    from vd.fetch import registry
    from vd.models.choose import get_inpaint_backend
    from vd.models.offload import configure

    monkeypatch.setattr(registry, "file_state", _present_by_name)
    _install(vd_dirs["models"], "flux-fill", "flux-prompt", "flux-fill-q8", "flux2-klein", "flux2-klein-text")
    fake_card.gib = 80
    b = get_inpaint_backend("auto", device="cuda", quiet_choice=True)
    assert b.name == "flux-fill"
    configure(None, b, device="cuda")
    assert (b.placement["quant"], b.offload) == ("bf16", "none") and b.resolved_quant == "bf16"
    fake_card.gib = 20  # bf16 only block by block here; q8_0 fits whole
    b = get_inpaint_backend("auto", device="cuda", quiet_choice=True)
    configure(None, b, device="cuda")
    assert (b.placement["quant"], b.offload) == ("q8_0", "none")
    assert b.resolved_quant == "q8_0" and b.paths()["transformer"].name == "flux1-fill-dev-Q8_0.gguf"
    assert b.paths()["ae"].parent.name == "flux-fill"  # the bf16 model's autoencoder, no flux-ae needed
    assert get_inpaint_backend("auto", device="cuda", quiet_choice=True, licence="commercial").name == "flux2-klein"
    fixed = get_inpaint_backend("auto", device="cuda", quiet_choice=True, quant="bf16")
    configure(None, fixed, device="cuda")
    assert fixed.placement["quant"] == "bf16" and fixed.offload == "sequential"


def _present_by_name(model, spec):
    """registry.file_state that takes a stand-in file for the real one (its size is not the published one)."""
    from vd.fetch.registry import FileState, model_dir

    path = model_dir(model) / spec.name
    state = "present" if path.is_file() else "missing"
    return FileState(model, spec.name, path, state, spec.size, spec.expected_bytes, sha256=spec.sha256 or "0" * 64)


def test_doctor_takes_an_installed_quantisation_for_the_missing_bf16_model(vd_dirs, monkeypatch, fake_card):
    from vd import doctor as D
    from vd.fetch import registry

    monkeypatch.setattr(registry, "file_state", _present_by_name)
    _install(vd_dirs["models"], "flux-fill-q8", "flux-ae", "flux-prompt")
    checks = {c.name: c for c in D.check_weights()}
    assert checks["weights flux-fill"].status == "optional" and "flux-fill q8_0 installed instead" in (
        checks["weights flux-fill"].detail
    )
    assert checks["weights flux-prompt"].status == "ok" and checks["weights moge"].status == "missing"
    fake_card.gib = 16
    cuda = D.TorchInfo("2.13.0", "13.0", True, "a card", "9.0")
    picks, _ = D.picks(cuda, [D.Check("diffusers", "ok", ""), *checks.values()], "cuda")
    assert picks["inpaint"] == "flux-fill q8_0" and picks["offload"] in ("none", "model")
