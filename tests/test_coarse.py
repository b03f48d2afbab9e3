"""End-to-end coarse runs on a procedural RGB-D scene (file depth, telea inpaint, torch renderer)."""

import json

import numpy as np
import pytest

W, H, F = 64, 48, 56.0


def make_scene(folder):
    """A textured back wall at z=4 with a box at z=2 in front of it (disocclusions when moving)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.zeros((H, W, 3), np.uint8)
    checker = ((u // 6 + v // 6) % 2).astype(np.uint8)
    rgb[..., 0] = 60 + 120 * checker
    rgb[..., 1] = 90 + 40 * (u * 3 % 50) // 10
    rgb[..., 2] = 140
    depth = np.full((H, W), 4.0, np.float32)
    box = (u >= 22) & (u < 40) & (v >= 16) & (v < 34)
    depth[box] = 2.0
    rgb[box] = [200, 50, 40]
    rgb[box & ((u + v) % 7 == 0)] = [250, 220, 60]
    img = folder / "scene.png"
    Image.fromarray(rgb).save(img)
    np.save(folder / "scene.depth.npy", depth)
    return img


BASE = ["--depth-backend", "file", "--inpaint-backend", "telea", "--render-backend", "torch", "--device", "cpu",
        "--focal", str(F), "--n-frames", "4", "--dense-multiplier", "3", "--margin", "8", "--init-iters", "2",
        "--view-iters", "3", "--expansion", "0.3"]


def _run(run_vd, img, out, *extra):
    r = run_vd("coarse", str(img), "-o", str(out), *BASE, *extra)
    assert r.code == 0, r
    return r


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted CLI run (--fallback closest) shared by several tests: (img, out, cache, summary, stderr)."""
    import os
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("coarse_ref")
    img = make_scene(base / "in")
    out, cache = base / "out", base / "cache"
    env = dict(os.environ, VD_CACHE_DIR=str(cache), VD_MODELS_DIR=str(base / "models"), COLUMNS="200")
    p = subprocess.run([sys.executable, "-m", "vd.commands.app", "coarse", str(img), "-o", str(out), *BASE,
                        "--fallback", "closest", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return img, out, cache, json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


@pytest.mark.slow
def test_end_to_end_adds_views_and_writes_outputs(reference):
    from vd.ply import read_ply
    from vd.views import read_views

    img, out, _, summary, stderr = reference
    assert summary["selected"] >= 1
    g_c, _ = read_ply(out / "coarse.ply")
    g_s, _ = read_ply(out / "scaffold.ply")
    assert len(g_c) > len(g_s) > 0
    assert np.isfinite(g_c.means.numpy()).all()
    assert summary["totals"]["gaussians_total"] >= len(g_c)  # the writer may drop transparent ones
    v = summary["views"][0]
    assert v["added_gaussians"] > 0 and v["spawn_pixels"] <= v["hole_pixels"]
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["convention"].startswith("OpenCV")
    kinds = [c["kind"] for c in cams["views"]]
    assert kinds[:2] == ["input", "ring"] and kinds.count("view") == summary["selected"]
    assert np.allclose(cams["views"][0]["world_from_camera"], np.eye(4))
    views = read_views(out)
    assert len(views) == len(kinds)
    for vw in views:
        assert vw.rgb.dtype == np.uint8 and vw.depth.shape == vw.rgb.shape[:2] and vw.spawn.dtype == bool
    # the ring shares the input's principal point: K_ring = K_input shifted by the padding
    # (docs/upstream.md#symmetric-outpaint-padding)
    K0, K1 = views[0].K, views[1].K
    px, py = (views[1].rgb.shape[1] - W) // 2, (views[1].rgb.shape[0] - H) // 2
    assert K1[0, 2] - K0[0, 2] == pytest.approx(px) and K1[1, 2] - K0[1, 2] == pytest.approx(py)
    assert (views[1].rgb.shape[1] - W) % 2 == 0 and px > 0
    assert np.array_equal(views[1].rgb[py:py + H, px:px + W], views[0].rgb)
    assert "coarse:" in stderr and "peak memory" in stderr


@pytest.mark.slow
def test_coarse_covers_more_than_scaffold(reference):
    import torch

    from vd.cameras import invert_pose
    from vd.ply import read_ply
    from vd.render import render
    from vd.views import read_views

    img, out, _, _, _ = reference
    views = [v for v in read_views(out) if v.kind == "view"]
    assert views
    g_c, _ = read_ply(out / "coarse.ply")
    g_s, _ = read_ply(out / "scaffold.ply")
    vm = torch.as_tensor(np.stack([invert_pose(v.world_from_camera) for v in views]), dtype=torch.float32)
    Ks = torch.as_tensor(np.stack([v.K for v in views]), dtype=torch.float32)
    w, h = views[0].rgb.shape[1], views[0].rgb.shape[0]
    a_c = render(g_c, vm, Ks, w, h, backend="torch").alpha
    a_s = render(g_s, vm, Ks, w, h, backend="torch").alpha
    cov_c = float((a_c > 0.5).float().mean())
    cov_s = float((a_s > 0.5).float().mean())
    assert cov_c > cov_s + 0.01, (cov_c, cov_s)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_ply(tmp_path, run_vd, monkeypatch, reference):
    from vd.ply import read_ply
    from vd.stages import coarse as coarse_mod

    img, ref_out, _, _, _ = reference
    args = ["--fallback", "closest", "--json"]
    # interrupted after view 1, then resumed, in a fresh cache (the reference ran uninterrupted)

    def boom(k):
        if k == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(coarse_mod, "_after_view", boom)
    r = run_vd("coarse", str(img), "-o", str(tmp_path / "b"), *BASE, *args)
    assert r.code == 130 and not (tmp_path / "b" / "coarse.ply").exists()
    monkeypatch.setattr(coarse_mod, "_after_view", None)
    r = _run(run_vd, img, tmp_path / "b", *args)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["scaffold"]["cached"] and s["views"][0]["cached"]
    assert s["selected"] >= 2 and not s["views"][1]["cached"]
    ga, _ = read_ply(ref_out / "coarse.ply")
    gb, _ = read_ply(tmp_path / "b" / "coarse.ply")
    for k, t in ga.tensors().items():
        assert torch_equal(t, gb.tensors()[k]), k
    # a third identical run is all cache hits
    r = _run(run_vd, img, tmp_path / "b", *args)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["scaffold"]["cached"] and all(v["cached"] for v in s["views"])


def torch_equal(a, b):
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


@pytest.mark.slow
def test_fallback_closest_selects_where_none_does_not(tmp_path, run_vd, monkeypatch, reference):
    img, _, cache, _, _ = reference
    monkeypatch.setenv("VD_CACHE_DIR", str(cache))  # reuse the reference's scaffold
    band = ["--min-ratio", "0.97", "--max-ratio", "0.99", "--n-frames", "3", "--json"]
    r = _run(run_vd, img, tmp_path / "none", *band)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["selected"] == 0 and s["stopped"]["hint"]
    assert "--min-ratio" in s["stopped"]["hint"] or "--max-ratio" in s["stopped"]["hint"]
    assert "hint:" in r.stderr
    rows = [m["stage"] for m in s["memory"]]  # the search that chose nothing is not a second "view 1"
    assert "view search (none chosen)" in rows and len(rows) == len(set(rows)), rows
    r = _run(run_vd, img, tmp_path / "closest", *band, "--fallback", "closest")
    s2 = json.loads(r.stdout.strip().splitlines()[-1])
    assert s2["selected"] == 1 and s2["views"][0]["fallback"]
    assert s["scaffold"]["cached"] and s2["scaffold"]["cached"]  # shared through the cache


def test_usage_errors(tmp_path, run_vd):
    img = make_scene(tmp_path / "in")
    for bad in (["--fallback", "maybe"], ["--traj", "helix"], ["--min-ratio", "0.5", "--max-ratio", "0.1"],
                ["--n-frames", "1"], ["--radius-percentiles", "60", "10"], ["--offload", "gpu"],
                ["--inpaint-steps", "0"]):
        r = run_vd("coarse", str(img), "-o", str(tmp_path / "o"), *bad)
        assert r.code == 2, (bad, r)
        assert "Traceback" not in r.stderr
    r = run_vd("coarse", str(tmp_path / "missing.png"))
    assert r.code == 1 and "not found" in r.stderr
    r = run_vd("coarse", str(img), "--trajectory", str(tmp_path / "nope.json"))
    assert r.code == 1 and "trajectory file not found" in r.stderr


@pytest.mark.slow
def test_trajectory_file_and_no_outpaint(tmp_path, run_vd):
    from vd import cameras

    img = make_scene(tmp_path / "in")
    poses = cameras.spiral(6, 0.6)
    traj = tmp_path / "traj.json"
    traj.write_text(json.dumps(poses.tolist()))
    r = _run(run_vd, img, tmp_path / "o", "--no-outpaint", "--trajectory", str(traj), "--fallback", "closest",
             "--n-frames", "3", "--json")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["candidates"] == 6 and s["scaffold"]["frames"] == 1
    cams = json.loads((tmp_path / "o" / "cameras.json").read_text())
    assert [c["kind"] for c in cams["views"]][0] == "input" and "ring" not in [c["kind"] for c in cams["views"]]
    from_file = [c for c in cams["views"][1:] if c["dense_index"] is not None]
    assert len(from_file) == 1  # --n-frames 3: one of the file's poses
    for c in from_file:
        assert np.allclose(c["world_from_camera"], poses[c["dense_index"]])
    # then the views at probe moves (--move-views 3): with no outpainted ring every move uncovers the border
    assert s["move_views"] == len(cams["views"]) - 2 == 3


def test_a_scaffold_without_optimisation(tmp_path, run_vd):
    """--init-iters 0 (the lifted Gaussians as they are) has no loss to report: it used to fail formatting it."""
    img = make_scene(tmp_path / "in")
    r = _run(run_vd, img, tmp_path / "o", "--init-iters", "0", "--n-frames", "2", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["scaffold"]["frames"] == 2


@pytest.mark.slow
def test_viewer_receives_frames_and_gaussians(reference):
    """Stage functions accept a viewer; a failing viewer only warns."""
    from vd.cache import Cache
    from vd.stages.coarse import CoarseParams, run_coarse

    img, _, cache, summary, _ = reference

    class Recorder:
        enabled = True

        def __init__(self):
            self.calls = []

        def log_frame(self, name, **kw):
            self.calls.append(("frame", name, kw["tab"]))

        def log_gaussians(self, entity, g):
            self.calls.append(("gaussians", entity, len(g)))
            if entity == "coarse":
                raise RuntimeError("viewer went away")

    rec = Recorder()
    p = CoarseParams(n_frames=4, dense_multiplier=3, margin=8, init_iters=2, view_iters=3, fallback="closest")
    r = run_coarse(img, p, depth_backend="file", inpaint_backend="telea", render_backend="torch", device="cpu",
                   focal=F, cache=Cache.open(cache), viewer=rec)
    assert r.summary["scaffold"]["cached"] and all(v["cached"] for v in r.summary["views"])
    names = [c[1] for c in rec.calls if c[0] == "frame"]
    assert names[:2] == ["input", "ring"] and len(names) == 2 + summary["selected"]
    assert ("gaussians", "coarse", summary["totals"]["gaussians_total"]) in rec.calls


@pytest.mark.slow
def test_an_identical_rerun_is_served_whole_without_torch(reference, tmp_path):
    """The second identical run writes the same folder from one cache record, imports no torch and
    computes nothing; a changed view-loop parameter is a different record (the loop runs again)."""
    import os
    import subprocess
    import sys

    img, out, cache, summary, _ = reference
    env = dict(os.environ, VD_CACHE_DIR=str(cache), VD_MODELS_DIR=str(cache.parent / "models"), COLUMNS="200")
    code = ("import sys; from vd.commands.app import run; from vd.cache import store; c = run(sys.argv[1:]); "
            "print(c, 'torch' in sys.modules, store.STATS['computed'], store.STATS['hits'])")

    def rerun(dest, *extra):
        args = ["coarse", str(img), "-o", str(dest), *BASE, "--fallback", "closest", *extra]
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        return p.stdout.split()[-4:], p.stderr

    again = tmp_path / "again"
    (code_, torch_imported, computed, hits), stderr = rerun(again)
    assert (code_, torch_imported, computed, hits) == ("0", "False", "0", "1"), stderr
    assert "the whole scene is cached" in stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "summary.json")
    assert written and written == sorted(p.relative_to(again) for p in again.rglob("*")
                                         if p.is_file() and p.name != "summary.json")
    for rel in written:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    s = json.loads((again / "summary.json").read_text())
    assert s["scaffold"]["cached"] and all(v["cached"] for v in s["views"])
    assert s["totals"] == summary["totals"] and s["image"] == str(img)

    (_, torch_imported, computed, _), _ = rerun(tmp_path / "changed", "--view-iters", "4")
    assert torch_imported == "True" and int(computed) >= 1
