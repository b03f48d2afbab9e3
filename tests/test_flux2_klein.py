"""The flux2-klein backend (FLUX.2 [klein] 4B) on tiny random models of the real classes, saved in
the files `vd fetch flux2-klein flux2-klein-text` installs (tests/klein_tiny.py): loading, inpainting,
the cached prompt embedding that spares the text encoder, missing weights, `vd coarse` end to end
and the `vd fine` denoiser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from klein_tiny import make_tiny_klein, make_tiny_text

from vd.errors import MissingWeightsError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tinyklein")
    out = make_tiny_klein(base / "klein")
    out["text"] = make_tiny_text(base / "text")
    return out


def install(tiny, monkeypatch, text: bool = True) -> Path:
    """Place the tiny files where the registry looks (VD_MODELS_DIR), described by a user manifest
    (VD_MANIFEST) with the same model names, and point the bundled configs at the tiny ones."""
    import os

    from vd.models import flux2_klein_loading

    models = Path(os.environ["VD_MODELS_DIR"])
    entries = {}
    groups = {"flux2-klein": [tiny["transformer"], tiny["vae"]], "flux2-klein-text": sorted(tiny["text"].iterdir())}
    for model, files in groups.items():
        entries[model] = {
            "license": "Apache-2.0",
            "files": [{"name": f.name, "size": None, "sha256": None, "sources": [f.as_uri()]} for f in files],
        }
        if model == "flux2-klein-text" and not text:
            continue
        (models / model).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, models / model / f.name)
    manifest = models.parent / "manifest.json"
    manifest.write_text(json.dumps({"format": "vd-weights/1", "models": entries}))
    monkeypatch.setenv("VD_MANIFEST", str(manifest))
    monkeypatch.setattr(flux2_klein_loading, "config_dir", lambda: tiny["config"])
    return models


def scene():
    rng = np.random.default_rng(3)
    rgb = (rng.random((40, 56, 3)) * 255).astype(np.uint8)  # not a multiple of 16: padded, then cropped
    mask = np.zeros((40, 56), bool)
    mask[8:30, 20:44] = True
    return rgb, mask


def test_checkpoints_load_into_the_weights_they_were_written_from(tiny):
    """The BFL single-file layout goes through diffusers' conversion into exactly the tiny weights."""
    import torch

    from vd.models.flux2_klein_loading import load_transformer, load_vae

    tr = load_transformer(tiny["transformer"], config=tiny["config"] / "transformer", dtype=torch.float32)
    vae = load_vae(tiny["vae"], config=tiny["config"] / "vae", dtype=torch.float32)
    for model, want in ((tr, tiny["tr_state"]), (vae, tiny["vae_state"])):
        got = model.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_truncated_checkpoint_is_one_sentence_with_the_refetch(tiny, tmp_path):
    from vd.errors import VdError
    from vd.models.flux2_klein_loading import load_transformer, load_vae

    bad = tmp_path / "flux-2-klein-4b.safetensors"
    bad.write_bytes(tiny["transformer"].read_bytes()[:1000])
    with pytest.raises(VdError, match="cannot load the FLUX.2 \\[klein\\] transformer .*vd fetch flux2-klein --force"):
        load_transformer(bad, config=tiny["config"] / "transformer")
    with pytest.raises(VdError, match="autoencoder .*vd fetch flux2-klein --force"):
        load_vae(bad, config=tiny["config"] / "vae")


def test_inpaint_fills_holes_keeps_known_pixels_and_follows_the_seed(tiny, monkeypatch):
    from vd.models.choose import get_inpaint_backend

    install(tiny, monkeypatch)
    rgb, mask = scene()
    b = get_inpaint_backend("flux2-klein", device="cpu")
    assert b.name == "flux2-klein" and b.steps == 4  # Flux Fill's default 25 means the distilled model's 4
    a, a2, c = b.inpaint(rgb, mask, seed=1), b.inpaint(rgb, mask, seed=1), b.inpaint(rgb, mask, seed=2)
    assert a.shape == rgb.shape and a.dtype == np.uint8
    assert np.array_equal(a[~mask], rgb[~mask])  # bit-identical outside the hole
    assert (a[mask] != rgb[mask]).mean() > 0.5  # generated inside it
    assert np.array_equal(a, a2) and not np.array_equal(a[mask], c[mask])
    assert b.identity.startswith("flux2-klein:") and ":steps=4:" in b.identity and ":emb=" in b.identity
    b.release()
    assert b._model is None


def test_a_cached_prompt_embedding_runs_without_the_text_encoder(tiny, monkeypatch, tmp_path):
    """First run: the encoder embeds "" once. Then its files are deleted: a second backend (a new
    process's worth of state) inpaints identically from the cache; a cold cache fails with exit 3."""
    from vd.models.choose import get_inpaint_backend
    from vd.models.flux2_klein_prompt import ENCODER_LOADS

    models = install(tiny, monkeypatch)
    rgb, mask = scene()
    before = ENCODER_LOADS[0]
    first = get_inpaint_backend("flux2-klein", device="cpu")
    a = first.inpaint(rgb, mask, seed=5)
    first.release()
    assert ENCODER_LOADS[0] == before + 1

    shutil.rmtree(models / "flux2-klein-text")
    second = get_inpaint_backend("flux2-klein", device="cpu")
    b = second.inpaint(rgb, mask, seed=5)
    assert np.array_equal(a, b) and second.identity == first.identity
    assert ENCODER_LOADS[0] == before + 1

    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "cold-cache"))
    cold = get_inpaint_backend("flux2-klein", device="cpu")
    with pytest.raises(MissingWeightsError, match="vd fetch flux2-klein-text") as e:
        cold.inpaint(rgb, mask, seed=5)
    assert e.value.exit_code == 3


def test_the_embedding_key_follows_the_encoder_files(tiny, monkeypatch, tmp_path):
    """Other encoder weights (same names) give another exact key: the prompt is embedded again."""
    from vd.models.flux2_klein_prompt import ENCODER_LOADS, prompt_embedding

    models = install(tiny, monkeypatch)
    e1 = prompt_embedding("")
    n = ENCODER_LOADS[0]
    assert np.array_equal(prompt_embedding("").numpy(), e1.numpy()) and ENCODER_LOADS[0] == n  # exact hit
    other = make_tiny_text(tmp_path / "other", seed=7)
    for f in other.iterdir():
        shutil.copy(f, models / "flux2-klein-text" / f.name)
        Path(str(models / "flux2-klein-text" / f.name) + ".sha256").unlink(missing_ok=True)
    e2 = prompt_embedding("")
    assert ENCODER_LOADS[0] == n + 1 and not np.array_equal(e1.numpy(), e2.numpy())
    assert e1.shape == (1, 512, 48)


def test_missing_weights_name_the_fetch_command(tmp_path, run_vd):
    from vd.models.choose import get_inpaint_backend

    b = get_inpaint_backend("flux2-klein", device="cpu")
    with pytest.raises(MissingWeightsError, match="run: vd fetch flux2-klein$"):
        b.inpaint(*scene(), seed=0)
    from test_coarse import BASE, make_scene

    img = make_scene(tmp_path / "in")
    args = [a if a != "telea" else "flux2-klein" for a in BASE]
    r = run_vd("coarse", str(img), "-o", str(tmp_path / "out"), *args)
    assert r.code == 3, r
    assert "vd fetch flux2-klein" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "out" / "coarse.ply").exists()


def test_vd_coarse_end_to_end_with_flux2_klein(tiny, monkeypatch, tmp_path, run_vd):
    from test_coarse import BASE, make_scene

    install(tiny, monkeypatch)
    img = make_scene(tmp_path / "in")
    args = [a if a != "telea" else "flux2-klein" for a in BASE]
    r = run_vd("coarse", str(img), "-o", str(tmp_path / "out"), *args, "--json")
    assert r.code == 0, r
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    text = json.dumps(summary)
    assert "flux2-klein" in text
    assert (tmp_path / "out" / "coarse.ply").exists()


def test_fine_denoiser_runs_mcs_steps(tiny, monkeypatch):
    import torch

    from vd import mcs
    from vd.stages.denoisers import choose_denoiser

    install(tiny, monkeypatch)
    dev, make, name = choose_denoiser("flux2-klein", device="cpu", offload="auto", allow_classical=False)
    assert name == "flux2-klein"
    dn = make()
    B, H, W = 2, 32, 48
    sched = dn.schedule(6, H, W)
    assert len(sched) == 7 and sched[0] == pytest.approx(1.0) and sched[-1] == 0.0
    assert all(a > b for a, b in zip(sched, sched[1:], strict=False))
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(B, H, W, 3, generator=g)
    holes = torch.zeros(B, H, W, dtype=torch.bool)
    holes[:, 8:24, 10:30] = True
    dn.prepare(rgb, holes)
    z = dn.encode(rgb)
    assert z.shape == (B, (H // 16) * (W // 16), 32)
    back = dn.decode(z)
    assert back.shape == (B, H, W, 3) and float(back.min()) >= 0 and float(back.max()) <= 1
    start = mcs.start_index(6, 2)
    x = mcs.add_noise(z, torch.randn(z.shape, generator=g), sched[start])
    x_plain = x.clone()
    for k in range(start, 6):  # two rectified steps, rendering = re-encoding the decoded estimate
        t, t_next = sched[k], sched[k + 1]
        v = dn.velocity(x, t, {})
        assert v.shape == x.shape and torch.isfinite(v).all()
        z0 = dn.encode(dn.decode(mcs.predict_x0(x, v, t)))
        x, stats = mcs.rectified_step(x, v, z0, t, t_next, 0.5)
        x_plain = mcs.euler_step(x_plain, dn.velocity(x_plain, t, {}), t, t_next)
    assert torch.isfinite(x).all() and not torch.equal(x, x_plain)
    assert dn.identity.startswith("flux2-klein:") and dn.identity.endswith(":fine")
    dn.release()


def test_fine_denoiser_without_weights_is_exit_3():
    from vd.stages.denoisers import choose_denoiser

    with pytest.raises(MissingWeightsError, match="vd fetch flux2-klein"):
        choose_denoiser("flux2-klein", device="cpu", offload="auto", allow_classical=False)


def test_vd_fine_end_to_end_with_flux2_klein(tiny, monkeypatch, tmp_path, run_vd):
    """`vd fine --inpaint-backend flux2-klein`: the distilled model's own schedule (4 steps, last 2)."""
    from test_fine import make_coarse

    install(tiny, monkeypatch)
    coarse = make_coarse(tmp_path / "coarse")
    args = ["--inpaint-backend", "flux2-klein", "--device", "cpu", "--views", "2", "--steps", "2"]
    r = run_vd("fine", str(coarse), "-o", str(tmp_path / "fine"), *args, "--total-steps", "4", "--gs-iters", "1")
    assert r.code == 0, r
    s = json.loads((tmp_path / "fine" / "summary.json").read_text())
    assert s["denoiser"]["name"] == "flux2-klein" and s["denoiser"]["identity"].endswith(":fine")
    assert len(s["steps"]) == 2 and s["steps"][-1]["t_next"] == 0.0
    assert all(len(row["norm_v"]) == 2 for row in s["steps"])
    assert (tmp_path / "fine" / "fine.ply").exists()


def test_a_named_klein_without_weights_fails_before_torch(tmp_path, vd_dirs):
    """`vd coarse --inpaint-backend flux2-klein` with no weights: exit 3 and the fetch line, torch never imported."""
    import subprocess
    import sys

    from PIL import Image

    img = tmp_path / "p.png"
    Image.new("RGB", (64, 48), (90, 120, 150)).save(img)
    code = (
        "import sys\nfrom vd.commands.app import run\n"
        f"c = run(['coarse', {str(img)!r}, '-o', {str(tmp_path / 'out')!r}, '--inpaint-backend', 'flux2-klein',"
        " '--depth-backend', 'file', '--focal', '60'])\n"
        "print('torch' in sys.modules)\nsys.exit(c)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    assert "vd fetch flux2-klein" in p.stderr and p.stdout.strip().splitlines()[-1] == "False"
    assert not (tmp_path / "out" / "coarse.ply").exists()
