"""`vd refine`: scale+shift alignment, NaN-safe Huber depth loss, sign-insensitive normal loss,
config rejection, and an end-to-end run on a procedural plane whose depth prior is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _export_scene import make_views, noisy, plane_gaussians


# ------------------------------------------------------------------ pieces
def test_alignment_recovers_known_scale_and_shift():
    from vd.stages.refine import align_scale_shift

    rng = np.random.default_rng(0)
    target = rng.uniform(1, 5, (40, 50))
    s_true, b_true = 2.5, -0.7
    prior = (target - b_true) / s_true
    prior[0, :5] = np.nan
    prior[1, :5] = np.inf
    mask = np.ones_like(target, bool)
    mask[10:20] = False
    prior_bad = prior.copy()
    prior_bad[10:20] = 1e6  # outside the mask: must be ignored
    s, b, n = align_scale_shift(prior_bad, target, mask)
    assert s == pytest.approx(s_true, rel=1e-9) and b == pytest.approx(b_true, abs=1e-9)
    assert n == 40 * 50 - 10 * 50 - 10
    s2, b2, _ = align_scale_shift(torch.tensor(prior_bad), torch.tensor(target), torch.tensor(mask))
    assert (s2, b2) == pytest.approx((s_true, b_true))
    # degenerate: a constant prior gives scale 1 and the mean offset
    assert align_scale_shift(np.full(100, 2.0), np.full(100, 3.0)) == (1.0, 1.0, 100)
    assert align_scale_shift(np.ones(4), np.ones(4), np.zeros(4, bool))[2] == 0


def test_normal_loss_is_sign_insensitive():
    from vd.stages.refine import normal_loss

    rng = np.random.default_rng(1)
    n = torch.tensor(rng.normal(size=(8, 9, 3)))
    n = n / n.norm(dim=-1, keepdim=True)
    p = torch.tensor(rng.normal(size=(8, 9, 3)))
    p = p / p.norm(dim=-1, keepdim=True)
    m = torch.ones(8, 9, dtype=torch.bool)
    base = normal_loss(n, p, m)
    assert normal_loss(-n, p, m) == pytest.approx(base.item())
    assert normal_loss(n, -p, m) == pytest.approx(base.item())
    flip = torch.where(torch.rand(8, 9, 1) > 0.5, -1.0, 1.0).double()
    assert normal_loss(n * flip, p, m) == pytest.approx(base.item())
    assert normal_loss(n, n, m).item() == pytest.approx(0.0, abs=1e-12)
    assert normal_loss(n, -n, m).item() == pytest.approx(0.0, abs=1e-12)
    e = torch.zeros(8, 9, 3, dtype=torch.double)
    e[..., 0] = 1
    f = torch.zeros_like(e)
    f[..., 1] = 1
    assert normal_loss(e, f, m).item() == pytest.approx(1.0)


def test_huber_depth_loss_is_nan_and_inf_safe():
    from vd.stages.refine import huber_depth_loss

    pred = torch.full((6, 7), 2.0, requires_grad=True)
    target = torch.full((6, 7), 2.5)
    target[0, 0] = float("nan")
    target[0, 1] = float("inf")
    mask = torch.ones(6, 7, dtype=torch.bool)
    mask[5] = False
    with torch.no_grad():
        p2 = pred.clone()
    p2[1, 1] = float("nan")
    p2 = p2.requires_grad_(True)
    loss = huber_depth_loss(p2, target, mask, delta=0.01)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.5 - 0.005)
    assert torch.isfinite(p2.grad).all()
    assert p2.grad[0, 0] == 0 and p2.grad[0, 1] == 0 and p2.grad[1, 1] == 0 and (p2.grad[5] == 0).all()
    assert (p2.grad[2] < 0).all()  # pulls the prediction up towards the target
    # no valid pixel: zero loss that still backpropagates
    z = huber_depth_loss(pred, target, torch.zeros(6, 7, dtype=torch.bool))
    z.backward()
    assert z.item() == 0.0


def test_normals_from_rendered_depth_match_numpy():
    from _export_scene import K, plane_depth

    from vd.export.normals import normals_from_depth, normals_from_depth_torch

    d = plane_depth(K, np.eye(4))
    n_np, ok_np = normals_from_depth(d, K)
    n_t, ok_t = normals_from_depth_torch(torch.tensor(d, dtype=torch.float64), torch.tensor(K))
    assert np.array_equal(ok_np, ok_t.numpy())
    assert np.allclose(n_np[ok_np], n_t.numpy()[ok_np], atol=1e-5)
    assert (n_np[ok_np][:, 2] < 0).all()  # faces the camera


@pytest.mark.parametrize("cfg", [{"thinness_weight": 0.1}, {"regularisers": {"thickness": 1.0}}, {"Thin_Shell": True}])
def test_config_with_thinness_or_thickness_is_rejected(tmp_path, cfg):
    from vd.errors import UsageError
    from vd.stages.refine import check_config, load_config

    with pytest.raises(UsageError, match="thinness/thickness"):
        check_config(cfg)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(UsageError):
        load_config(p)


def test_config_toml_unknown_keys_and_types(tmp_path):
    from vd.errors import UsageError
    from vd.stages.refine import load_config, resolve_params

    p = tmp_path / "c.toml"
    p.write_text("iters = 7\ndepth_weight = 1\n")
    cfg = load_config(p)
    assert cfg == {"iters": 7, "depth_weight": 1.0}
    assert resolve_params(cfg, iters=3).iters == 3  # explicit options win
    assert resolve_params(cfg).iters == 7
    with pytest.raises(UsageError, match="unknown"):
        load_config(_write(tmp_path / "u.json", {"learning_rate": 1}))
    with pytest.raises(UsageError, match="must be a int"):
        load_config(_write(tmp_path / "t.json", {"iters": "many"}))


def _write(p, obj):
    p.write_text(json.dumps(obj))
    return p


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def plane_dataset(tmp_path_factory):
    from vd.export.colmap import points_from_gaussians, write_colmap_dataset
    from vd.ply import write_ply

    root = tmp_path_factory.mktemp("refine")
    g = plane_gaussians()
    views = make_views(g)  # exact depth prior (analytic plane) and RGB rendered from the truth
    write_colmap_dataset(root / "ds", views, points=points_from_gaussians(g))
    write_ply(root / "init.ply", noisy(g, sigma=0.06))
    return root


@pytest.mark.slow
def test_refine_lowers_the_depth_and_normal_errors_it_reports(plane_dataset, tmp_path, run_vd):
    ds, init = plane_dataset / "ds", plane_dataset / "init.ply"
    out = tmp_path / "refined"
    # the input view alone trains what it sees (hold_anchored): 32 steps, 8 of them its own
    r = run_vd("refine", ds, "--init", init, "-o", out, "--iters", "32", "--device", "cpu", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["cached"] is False
    meta = json.loads((out / "refine_meta.json").read_text())
    before, after = meta["metrics"]["before"], meta["metrics"]["after"]
    assert after["depth_abs_rel"] < 0.8 * before["depth_abs_rel"]
    assert after["normal_deg"] < 0.8 * before["normal_deg"]
    assert after["normal_loss"] < before["normal_loss"]
    assert len(meta["alignment"]) == 4 and all(a["pixels"] > 100 for a in meta["alignment"])
    # the prior is exact, so the fitted alignment is close to the identity
    assert all(abs(a["scale"] - 1) < 0.15 and abs(a["shift"]) < 0.3 for a in meta["alignment"])
    assert meta["inputs"]["init_hash"] and meta["inputs"]["dataset_hash"] and meta["params"]["iters"] == 32
    assert meta["losses"][0]["iter"] == 1 and meta["losses"][-1]["iter"] == 32
    from vd.ply import read_ply

    g, pm = read_ply(out / "gaussians_refined.ply")
    assert len(g) == meta["gaussians"]["final"] and pm["comments"]["stage"] == "refine"
    assert "depth AbsRel" in r.stderr
    held = meta["gaussians"]["held_by_anchors"]
    assert 0 < held < len(g) and rep["held_by_anchors"] == held
    assert f"({held} trained by the photo and its ring alone" in r.stderr
    sealed = meta["gaussians"]["sealed"]
    assert rep["sealed"] == sealed and (f"{sealed} sealing pinholes" in r.stderr) == (sealed > 0)
    # memoised: the second run is a cache hit with identical outputs
    first = (out / "gaussians_refined.ply").read_bytes()
    r2 = run_vd("refine", ds, "--init", init, "-o", tmp_path / "again", "--iters", "32", "--device", "cpu", "--json")
    assert r2.code == 0 and json.loads(r2.stdout)["cached"] is True
    assert (tmp_path / "again" / "gaussians_refined.ply").read_bytes() == first


@pytest.mark.slow
def test_refine_densify_and_prune(plane_dataset):
    from vd.export.colmap import load_dataset
    from vd.ply import read_ply
    from vd.stages.refine import resolve_params, run_refine

    views, _ = load_dataset(plane_dataset / "ds")
    g0, _ = read_ply(plane_dataset / "init.ply")
    g0.opacity_logits[:10] = -7.0  # below prune_opacity
    p = resolve_params({"densify_every": 2, "densify_from": 2, "densify_until": 1.0, "densify_fraction": 0.05},
                       iters=2, densify=True)
    g, info = run_refine(views, g0, p, device="cpu")
    assert info["gaussians"]["pruned"] >= 10 and info["gaussians"]["split"] > 0
    counts = info["gaussians"]
    assert len(g) == len(g0) - counts["pruned"] + counts["split"] + counts["sealed"]
    assert torch.isfinite(g.means).all()


def test_the_coverage_term_keeps_the_refined_scene_opaque():
    """Fitting images with detail at the pixel scale slides the Gaussians apart and opens pinholes
    (alpha below 0.98 on 15 % of the pixels here) unless --alpha-weight holds them closed."""
    from vd.stages.refine import resolve_params, run_refine

    g = plane_gaussians()
    views = make_views(g)
    rng = np.random.default_rng(0)
    for v in views:
        v.rgb = (rng.random(v.rgb.shape) * 255).astype(np.uint8)
        v.kind = "view"  # every view trains every Gaussian (no anchor holds what it sees)
    low = {}
    for weight in (0.0, 10.0):
        _, info = run_refine(views, g, resolve_params({}, iters=30, alpha_weight=weight), device="cpu")
        low[weight] = info["metrics"]["after"]["alpha_below_0.98"]
        assert info["metrics"]["before"]["alpha_below_0.98"] < 0.01  # the initial plane is opaque
    assert low[0.0] > 0.05 and low[10.0] < 0.1 * low[0.0], low


def test_what_the_anchor_views_see_is_theirs_alone():
    """The added views' images are renders of the scene as it was plus generated pixels: where they disagree
    with the photo (here: every pixel of them is grey), they must not move what the photo sees."""
    from vd.gaussians import Gaussians
    from vd.stages.refine import resolve_params, run_refine, seen_by_anchors, train_views
    from vd.train import DeviceView

    g = plane_gaussians()
    views = make_views(g)
    for v in views[1:]:
        v.rgb[...] = 128
    # what the input sees: the plane inside its frustum, not the plane's far corners nor what hides behind it
    hidden = Gaussians.from_rgb(torch.tensor([[0.0, 0.0, 2.6]]), torch.tensor([[1.0, 0.0, 0.0]]), scales=0.01)  # 1 px
    scene = Gaussians.cat([g, hidden])
    device_views = [DeviceView.of(t, "cpu", depth=True) for t in train_views(views)]
    assert [v.anchor for v in device_views] == [True, False, False, False]
    seen = seen_by_anchors(scene, device_views, "torch")
    x, y = g.means[:, 0] / g.means[:, 2], g.means[:, 1] / g.means[:, 2]  # the input camera's normalised image
    inside = (x.abs() < 0.45) & (y.abs() < 0.3)
    outside = (x.abs() > 32 / 60 + 0.1) | (y.abs() > 24 / 60 + 0.1)
    assert seen[:-1][inside].all() and not seen[:-1][outside].any() and not seen[-1]

    psnr = {}
    for hold in (False, True):
        _, info = run_refine(views, g, resolve_params({}, iters=24, hold_anchored=hold), device="cpu")
        psnr[hold] = info["metrics"]["after"]["per_view"][0]["psnr"]
        held = info["gaussians"]["held_by_anchors"]
        assert (held is None) if not hold else (0 < held < len(g))
    assert psnr[True] > psnr[False] + 3.0, psnr


def test_refine_takes_a_vd_output_folder_and_writes_its_dataset_first(tmp_path, run_vd):
    """`vd refine vd-out/photo -o refined`: the dataset `vd export --format colmap` would write goes into
    refined/dataset, and the folder's Gaussians are the start."""
    from _export_scene import write_vd_folder

    from vd.export.validate import validate_dataset

    folder = write_vd_folder(tmp_path / "vd-out" / "plane")
    out = tmp_path / "refined"
    r = run_vd("refine", folder, "-o", out, "--iters", "4", "--device", "cpu", "--json")
    assert r.code == 0, r
    assert validate_dataset(out / "dataset") == []
    meta = json.loads((out / "refine_meta.json").read_text())
    assert meta["inputs"]["init"] == str((folder / "coarse.ply").resolve())
    assert meta["inputs"]["dataset"] == str((out / "dataset").resolve())
    assert f"written to {out / 'dataset'}" in r.stderr
    assert json.loads(r.stdout)["ply"] == str(out / "gaussians_refined.ply")
    # the same folder again: the same dataset, so the cached result
    r = run_vd("refine", folder, "-o", out, "--iters", "4", "--device", "cpu", "--json")
    assert r.code == 0 and json.loads(r.stdout)["cached"] is True, r


def test_refine_rejects_invalid_dataset_and_bad_config(plane_dataset, tmp_path, run_vd):
    import shutil

    ds = tmp_path / "broken"
    shutil.copytree(plane_dataset / "ds", ds)
    (ds / "masks" / "000002.png").unlink()
    r = run_vd("refine", ds, "--init", plane_dataset / "init.ply", "-o", tmp_path / "o")
    assert r.code == 1 and "masks/000002.png: missing" in r.stderr
    assert "is not a valid refine dataset: 1 problem" in r.stderr
    assert not (tmp_path / "o").exists()
    # a broken vd output folder given where the dataset goes: one sentence, nothing written
    run = tmp_path / "run"
    run.mkdir()
    (run / "cameras.json").write_text("{}")
    shutil.copy(plane_dataset / "init.ply", run / "coarse.ply")
    r = run_vd("refine", run, "-o", tmp_path / "o")
    assert r.code == 1 and r.stderr.count("\n") == 1 and "cameras.json" in r.stderr, r
    assert not (tmp_path / "o").exists()
    # a path that is not there is named as such, with or without --init
    for extra in ([], ["--init", plane_dataset / "init.ply"]):
        r = run_vd("refine", tmp_path / "nothere", *extra, "-o", tmp_path / "o")
        assert r.code == 1 and r.stderr == f"error: dataset not found: {tmp_path / 'nothere'}\n", r
        assert not (tmp_path / "o").exists()
    # a dataset needs --init
    r = run_vd("refine", plane_dataset / "ds", "-o", tmp_path / "o")
    assert r.code == 2 and "--init is required with a refine dataset" in r.stderr, r
    assert not (tmp_path / "o").exists()
    cfg = _write(tmp_path / "c.json", {"thickness_lambda": 0.5})
    r = run_vd("refine", plane_dataset / "ds", "--init", plane_dataset / "init.ply", "-o", tmp_path / "o", "--config", cfg)
    assert r.code == 2 and "thinness/thickness" in r.stderr
    r = run_vd("refine", plane_dataset / "ds", "--init", tmp_path / "nope.ply", "-o", tmp_path / "o")
    assert r.code == 1 and "not found" in r.stderr
    r = run_vd("refine", plane_dataset / "ds", "--init", plane_dataset / "init.ply", "-o", tmp_path / "o", "--depth-weight", "-1")
    assert r.code == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_refine_on_gpu(plane_dataset):
    from vd.export.colmap import load_dataset
    from vd.ply import read_ply
    from vd.stages.refine import resolve_params, run_refine

    views, _ = load_dataset(plane_dataset / "ds")
    g0, _ = read_ply(plane_dataset / "init.ply")
    p = resolve_params({"densify_every": 10, "densify_from": 10}, iters=30, densify=True)
    g, info = run_refine(views, g0, p, device="cuda")
    before, after = info["metrics"]["before"], info["metrics"]["after"]
    assert after["depth_abs_rel"] < before["depth_abs_rel"] and after["normal_deg"] < before["normal_deg"]
    assert g.device.type == "cpu" and torch.isfinite(g.means).all()


# ------------------------------------------------------------------ parameters, key, options
def _changed(value):
    """A different valid value of a RefineParams field."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value * 0.5 if value else 0.5


def test_every_refine_parameter_changes_the_cache_key():
    """The key derives from RefineParams' fields: a field added later cannot be left out of it."""
    from dataclasses import fields, replace

    from vd.params import RefineParams
    from vd.stages.refine import cache_key

    inputs = {"dataset": "d" * 32, "init": "i" * 32}
    base = RefineParams()
    key = cache_key(base, inputs, "torch")
    seen = {key}
    for f in fields(RefineParams):
        if f.name == "backend":  # keyed as the backend it resolves to
            assert cache_key(replace(base, backend="gsplat"), inputs, "gsplat") not in seen
            continue
        other = replace(base, **{f.name: _changed(getattr(base, f.name))})
        other.validate()
        k = cache_key(other, inputs, "torch")
        assert k not in seen, f.name
        seen.add(k)
    assert cache_key(base, {**inputs, "init": "j" * 32}, "torch") != key


def test_refine_parameters_are_declared_once_with_their_help():
    import math
    from dataclasses import fields

    from vd.errors import UsageError
    from vd.params import RefineParams

    RefineParams().validate()
    for f in fields(RefineParams):
        assert f.metadata.get("help"), f.name
        if isinstance(f.default, float):
            for bad in (math.inf, math.nan):
                with pytest.raises(UsageError, match="--" + f.name.replace("_", "-")):
                    RefineParams(**{f.name: bad}).validate()


def test_every_refine_parameter_is_one_option_showing_its_default(run_vd):
    import re
    from dataclasses import fields

    import typer

    from vd.commands.app import app
    from vd.params import RefineParams, option_name

    command = typer.main.get_command(app).commands["refine"]
    declared = [o for prm in command.params for o in (*prm.opts, *prm.secondary_opts)]
    r = run_vd("refine", "--help")
    text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", r.stdout))
    text = text[text.index("Refine parameters"):]
    for f in fields(RefineParams):
        option = f.metadata.get("option") or option_name(f.name)
        assert declared.count(option) == 1, option
        (prm,) = [prm for prm in command.params if option in prm.opts]
        assert prm.name == f.name and prm.default is None  # None: not given, the config's or the field's default
        shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
        block = text[text.index(option + " "):]
        nxt = re.search(r" --(?!no-)[a-z]", block[len(option):])
        block = block[: len(option) + nxt.start()] if nxt else block
        assert f"[default: {shown}]" in block, (option, block)
        assert f.metadata["help"].split()[0] in block, option


def test_refine_options_and_config_reach_the_run(plane_dataset, tmp_path, run_vd):
    cfg = _write(tmp_path / "c.json", {"lr_sh": 0.01, "huber_delta": 0.02, "iters": 5})
    out = tmp_path / "o"
    r = run_vd("refine", plane_dataset / "ds", "--init", plane_dataset / "init.ply", "-o", out, "--config", cfg,
               "--iters", "0", "--min-alpha", "0.4", "--render-backend", "torch", "--device", "cpu")
    assert r.code == 0, r
    params = json.loads((out / "refine_meta.json").read_text())["params"]
    assert (params["iters"], params["lr_sh"], params["huber_delta"], params["min_alpha"]) == (0, 0.01, 0.02, 0.4)
    assert params["backend"] == "torch" and params["lr_means"] == 0.02  # a default
    r = run_vd("refine", plane_dataset / "ds", "--init", plane_dataset / "init.ply", "-o", out, "--densify-until", "2")
    assert r.code == 2 and "--densify-until" in r.stderr


# ------------------------------------------------------------------ one optimiser, no host reads
def test_refine_trains_through_vd_train_and_its_steps_do_not_wait_for_the_device(plane_dataset, monkeypatch):
    """refine's loop is vd.train.optimise; its depth and normal terms read nothing back from the
    device, so a step waits for the GPU only when it logs (every LOG_EVERY) or densifies."""
    from _host_reads import HostReads

    import vd.stages.refine as stage
    import vd.train as train
    from vd.export.colmap import load_dataset
    from vd.ply import read_ply
    from vd.stages.refine import resolve_params, run_refine

    views, _ = load_dataset(plane_dataset / "ds")
    g0, _ = read_ply(plane_dataset / "init.ply")
    reads = HostReads()
    train_render, eval_render = train.render, stage.render

    def training_render(*a, **kw):
        reads.iteration()
        return train_render(*a, **kw)

    def evaluation_render(*a, **kw):
        reads.aside()
        return eval_render(*a, **kw)

    monkeypatch.setattr(train, "render", training_render)
    monkeypatch.setattr(stage, "render", evaluation_render)
    iters = 14
    p = resolve_params({"densify_every": 6, "densify_from": 6, "densify_until": 1.0, "densify_fraction": 0.05},
                       iters=iters, densify=True)
    with reads:
        g, info = run_refine(views, g0, p, device="cpu")
    assert len(reads.per_iteration) == iters
    quiet = [it for it in range(iters) if it not in (0, 9, iters - 1) and (it + 1) % 6]
    assert len(quiet) == 9
    for it in quiet:
        assert reads.per_iteration[it] == [], (it, reads.per_iteration[it])
    assert info["adam_steps"] == iters and info["gaussians"]["split"] > 0  # densified twice, Adam never restarted
    assert [e["iter"] for e in info["losses"]] == [1, 10, 14]
    assert set(info["losses"][0]) == {"iter", "loss", "rgb", "depth", "normal", "alpha"}


def test_a_step_of_refine_moves_the_gaussians_of_a_photo_by_a_fraction_of_a_pixel(tmp_path):
    """A narrow photo's scene: fine texture, a long focal length. Adam's first step moves every Gaussian by
    about the learning rate; counted in the scene's units (half a millimetre a metre of depth) that was a quarter
    of a pixel at this focal length, and the input view fell from 59 to 18 dB in one step (43 dB now)."""
    from vd.export.colmap import points_from_gaussians, write_colmap_dataset
    from vd.lift import gaussians_from_rgbd
    from vd.ply import write_ply
    from vd.render import render
    from vd.stages.refine import refine
    from vd.views import View

    w, h, f = 96, 72, 480.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    rng = np.random.default_rng(0)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)  # texture at the pixel scale: leaves, a cloth
    # a surface at 2 m, gently slanted: neighbours 1 mm apart in depth, so that a step of a quarter of a pixel
    # (1 mm here) reorders them, and the colours fitted for their order are lost
    depth = (2.0 + 0.001 * np.arange(w)[None, :] + 0.0003 * np.arange(h)[:, None]).astype(np.float32)
    g = gaussians_from_rgbd(rgb.astype(np.float32) / 255, depth, K, opacity=0.99)
    out = render(g, torch.eye(4)[None], torch.tensor(K, dtype=torch.float32)[None], w, h)
    target = (out.rgb[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)  # what the scene shows
    everything = np.ones((h, w), bool)
    views = [View("000", "input", target, depth, K, np.eye(4), supervise=everything)]
    write_colmap_dataset(tmp_path / "ds", views, points=points_from_gaussians(g))
    write_ply(tmp_path / "init.ply", g)
    res = refine(tmp_path / "ds", tmp_path / "init.ply", tmp_path / "out", iters=1, device="cpu")
    from vd.ply import read_ply

    g1 = read_ply(res.ply)[0]
    moved = (g1.means - g.means).norm(dim=-1) * f / 2.0  # pixels at the depth of 2 m
    assert 0 < float(moved.median()) < 0.05
    after = render(g1, torch.eye(4)[None], torch.tensor(K, dtype=torch.float32)[None], w, h).rgb[0].clamp(0, 1)
    mse = float(((after - torch.tensor(target / 255.0, dtype=torch.float32)) ** 2).mean())
    assert -10 * np.log10(mse) > 35.0
