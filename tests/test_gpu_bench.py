"""bench/gpu/run.sh --dry-run: the GPU validation run's whole logic on the CPU with tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_module():
    spec = importlib.util.spec_from_file_location("vd_gpu_run", REPO / "bench" / "gpu" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_dry_run_exercises_every_section(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, VD_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh"), "--dry-run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["run"]["dry_run"] is True
    assert res["gsplat_build"]["status"].startswith("skipped: needs nvcc")
    names = [n for n, *_ in _run_module().PLAN]
    assert list(res["sections"]) == names
    for name, sec in res["sections"].items():
        expected = "skipped: gsplat rasterises on CUDA only" if name == "render-gsplat" else "ok"
        assert sec["status"].startswith(expected), (name, sec["status"])
    s = res["sections"]
    assert {f"offload={m}" for m in ("none", "model-resident", "model", "sequential")} <= set(s["flux"]["data"])
    assert s["flux"]["data"]["offload=model"]["steps"] == 1
    assert s["render-torch"]["data"]["500/fwd+bwd"]["best_s"] > 0
    assert s["render-gsplat"]["data"]["all"]["skipped"].startswith("gsplat rasterises on CUDA only")
    assert s["coarse-fine"]["data"]["coarse"]["exit_code"] == 0 and s["coarse-fine"]["data"]["fine"]["exit_code"] == 0
    assert s["budget"]["data"]["16 GiB"]["exit_code"] == 0
    # summary.json of both stages carries the memory plan (on the CPU: nothing to place)
    assert s["budget"]["data"]["16 GiB"]["memory_plan"].startswith("no CUDA device")
    assert s["coarse-fine"]["data"]["fine"]["memory_plan"].startswith("no CUDA device")
    # the real run's budgets exercise every offload mode, model offload with the transformer resident
    planned = {k: v for k, v in s["budget"]["data"].items() if k.startswith("planned ")}
    assert {p["offload"] for p in planned.values()} == {"none", "model", "sequential"}
    assert any(p["offload"] == "model" and p["evict_for_ae"] is False for p in planned.values())
    assert s["env"]["data"]["diffusers_import"]["seconds"] >= 0
    assert s["tests"]["data"]["exit_code"] == 0
    # the depth section ran vd's own MogeDepth on a random MoGe-2 and says what the plan set aside for it
    assert s["depth"]["data"]["vits"]["depth_shape"] == [64, 64]
    assert s["depth"]["data"]["vits"]["plan_gib"] > s["depth"]["data"]["vits"]["weights_gib"] > 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.startswith("# vd GPU validation: DRY RUN") and "## coarse-fine: ok" in md
    assert p.stdout == md


def test_the_answers_that_matter_come_first_and_fit_six_minutes():
    run = _run_module()
    names = [n for n, *_ in run.PLAN]
    assert names[:7] == ["env", "flux", "quant", "klein", "depth", "plan", "coarse-fine"] and names[-1] == "budget"
    assert names.index("render-gsplat") < names.index("tests")
    assert sum(box for _, box, _ in run.PLAN) + 20 <= run.TOTAL_S <= 360  # 20 s for run.sh's installs
    sh = (REPO / "bench" / "gpu" / "run.sh").read_text()
    assert f'VD_GPU_TOTAL_S:-{run.TOTAL_S}' in sh


def test_a_failing_or_hanging_section_loses_only_itself(tmp_path):
    run = _run_module()
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    res = run.run_group(["no-such-section", "render-gsplat"], 120, work, out, True, False, env)
    assert res["no-such-section"]["status"].startswith("error: KeyError")
    assert res["render-gsplat"]["status"].startswith("skipped")  # the next section of the same child still ran
    hung = run.run_group(["env"], 0.01, work, out, True, False, env)
    assert hung["env"]["status"].startswith("incomplete (timeout after")
