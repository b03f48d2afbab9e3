"""`vd batch`: inputs, per-image overrides, failures that do not stop the others, results.jsonl,
and a local Ray cluster (num_cpus=2) with a worker killed mid-task and a cached second run."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_coarse import make_scene

OPTS = ["--depth-backend", "file", "--inpaint-backend", "telea", "--render-backend", "torch", "--device", "cpu",
        "--focal", "56", "-O", "n_frames=4", "-O", "dense_multiplier=3", "-O", "margin=8", "-O", "init_iters=2",
        "-O", "view_iters=3"]


def scenes(base: Path, n: int) -> list[Path]:
    """`n` distinct tiny RGB-D scenes (a different tint each), in folders that share the stem."""
    from PIL import Image

    out = []
    for i in range(n):
        img = make_scene(base / f"s{i}")
        rgb = np.asarray(Image.open(img)).astype(np.int16)
        rgb[..., 2] = np.clip(rgb[..., 2] + 25 * i, 0, 255)
        Image.fromarray(rgb.astype(np.uint8)).save(img)
        out.append(img)
    return out


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_collect_inputs_from_files_folders_globs_lists_and_stdin(tmp_path):
    from vd.batch import collect_inputs

    imgs = scenes(tmp_path / "in", 3)
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("# two of them\ns0/scene.png\n\ns1/scene.png\n")
    assert collect_inputs([str(tmp_path / "in")]) == imgs
    assert collect_inputs([str(tmp_path / "in" / "s*" / "*.png")]) == imgs
    assert collect_inputs([str(listing), str(imgs[0])]) == imgs[:2]
    assert collect_inputs(["-"], stdin=io.StringIO(f"{imgs[2]}\n")) == [imgs[2]]
    from vd.errors import InputError

    with pytest.raises(InputError, match="not found"):
        collect_inputs([str(tmp_path / "nope.png")])


@pytest.mark.slow
def test_serial_batch_failure_does_not_stop_the_others(run_vd, tmp_path, one_torch_thread):
    imgs = scenes(tmp_path / "in", 2)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    bf = tmp_path / "batch.toml"
    bf.write_text('[defaults]\nseed = 0\n\n[[images]]\nimage = "in/s1/scene.png"\nseed = 7\n')
    out = tmp_path / "B"
    r = run_vd("batch", imgs[0], broken, "-o", out, "--executor", "serial", "--batch-file", bf, *OPTS, "--export", "ply")
    assert r.code == 1, r
    assert r.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 images failed"), r
    assert f"failed: {broken}" in r.stderr
    got = {Path(x["image"]).name if "broken" in x["image"] else Path(x["image"]).parent.name: x for x in rows(out)}
    assert got["broken.png"]["status"] == "failed" and got["broken.png"]["error"]
    for name in ("s0", "s1"):
        row = got[name]
        assert row["status"] == "ok" and row["timings"]["coarse"] > 0 and row["peak_rss"] > 0, row
        assert Path(row["outputs"]["export_ply"]).is_file()
    s1 = json.loads((Path(got["s1"]["out"]) / "summary.json").read_text())
    s0 = json.loads((Path(got["s0"]["out"]) / "summary.json").read_text())
    assert s1 != s0  # the per-image seed override changed s1's run
    assert r.stdout.split() == [got["s0"]["out"], got["s1"]["out"]]


def test_batch_usage_errors(run_vd, tmp_path):
    img = scenes(tmp_path / "in", 1)[0]
    r = run_vd("batch", img, "--stages", "fine,depth")
    assert r.code == 2 and "--stages" in r.stderr, r
    r = run_vd("batch", img, "-O", "no_such_option=1", "--executor", "serial")
    assert r.code == 2 and "no_such_option" in r.stderr, r
    r = run_vd("batch", img, "--stages", "depth", "--export", "ply")
    assert r.code == 2, r


def _kill_first_task_after_its_first_view():
    """A Ray worker setup hook: the first task to finish a coarse view kills its worker, once."""
    marker = os.environ.get("VD_TEST_KILL_MARKER")
    if not marker:
        return
    from vd.stages import coarse

    def die(k):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)

    coarse._after_view = die


@pytest.mark.slow
def test_ray_batch_end_to_end_with_a_killed_worker_then_all_cache_hits(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from vd.batch import BatchSpec, collect_inputs, plan_jobs, run_batch

    imgs = scenes(tmp_path / "in", 3)
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("VD_TEST_KILL_MARKER", str(marker))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    options = {"depth_backend": "file", "inpaint_backend": "telea", "render_backend": "torch", "device": "cpu",
               "focal": 56.0, "n_frames": 4, "dense_multiplier": 3, "margin": 8, "init_iters": 2, "view_iters": 3}
    out = tmp_path / "B"
    jobs = plan_jobs(collect_inputs([str(tmp_path / "in")]), out, options)
    spec = BatchSpec(stages=("coarse",), retries=1, gpus_per_task=0)
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _kill_first_task_after_its_first_view})
    try:
        first = run_batch(jobs, spec, out, executor="ray")
        assert [r["status"] for r in first] == ["ok"] * 3, first
        assert marker.exists(), "no worker was killed"
        assert {r["host"] for r in first} and all(r["pid"] != os.getpid() for r in first)
        # the retried task resumed from what its killed attempt had cached (scaffold, view 1)
        assert max(r["cache"]["hits"] for r in first) >= 2, [r["cache"] for r in first]
        for img, r in zip(imgs, sorted(first, key=lambda r: r["image"])):
            assert (Path(r["out"]) / "coarse.ply").is_file()
        second = run_batch(jobs, spec, out, executor="ray")
        # an identical rerun is served whole: one hit on the run's folder record (vd.stages.coarse.RUN_STAGE)
        assert all(r["status"] == "ok" and r["cache"]["computed"] == 0 and r["cache"]["hits"] >= 1 for r in second), second
        assert len(rows(out)) == 3
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_serial_batch_coarse_then_fine(run_vd, tmp_path, one_torch_thread):
    img = scenes(tmp_path / "in", 1)[0]
    out = tmp_path / "B"
    r = run_vd("batch", img, "-o", out, "--executor", "serial", "--stages", "coarse,fine", *OPTS, "-O", "allow_classical=true",
               "-O", "fine_views=2", "-O", "fine_steps=2", "-O", "fine_total_steps=4", "-O", "fine_gs_iters=2")
    assert r.code == 0, r
    (row,) = rows(out)
    assert row["status"] == "ok" and set(row["timings"]) >= {"coarse", "fine"}, row
    assert Path(row["outputs"]["fine"][0]).is_file()
