"""`vd doctor`: the checks (vd.doctor) on this CPU machine and on simulated installations, and the command."""

from __future__ import annotations

import json
import os
import stat

import pytest

from vd import doctor as D
from vd.commands.app import run

CUDA13 = D.TorchInfo("2.11.0+cu130", "13.0", True, "NVIDIA H200", "9.0")


def _manifest(tmp_path, monkeypatch) -> None:
    """The three GPU models as one-file entries of any size; moge's file has a published sha256."""
    import hashlib

    published = {"moge": hashlib.sha256(b"weights").hexdigest()}
    models = {m: {"description": m, "files": [{"name": "w.bin", "size": None, "sha256": published.get(m),
                                               "sources": ["file:///nowhere"]}]} for m in D.GPU_MODELS}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "vd-weights/1", "models": models}))
    monkeypatch.setenv("VD_MANIFEST", str(path))


def _place(model: str, data: bytes = b"weights") -> None:
    from vd.fetch.registry import model_dir

    d = model_dir(model)
    d.mkdir(parents=True, exist_ok=True)
    (d / "w.bin").write_bytes(data)


def test_this_cpu_machine_is_not_gpu_ready(capsys):
    code = run(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["gpu_ready"] is False
    torch_check = next(c for c in report["checks"] if c["name"] == "torch")
    assert torch_check["status"] == "missing" and torch_check["fix"].startswith("pip install")
    assert report["picks"]["render"] == "torch" and report["picks"]["inpaint"] == "telea"
    assert {c["name"] for c in report["checks"]} >= {"gsplat", "fused-ssim", "diffusers", "MoGe code", "rerun",
                                                     "splat-transform", "weights moge", "weights flux-fill"}


def test_the_text_report_gives_a_fix_under_each_missing_piece(capsys):
    assert run(["doctor"]) == 1
    lines = capsys.readouterr().out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("MISSING"):
            assert "fix: " in lines[i + 1], line
    assert lines[-1].startswith("GPU path: not ready (missing: torch")


def test_exit_0_when_nothing_blocks_the_gpu_path(monkeypatch, capsys):
    import vd.doctor

    report = D.Report([D.Check("torch", "ok", "fine"), D.Check("fused-ssim", "optional", "absent", "pip ...")],
                      {"device": "cuda", "depth": "moge", "depth_device": "cuda", "inpaint": "flux-fill", "render": "gsplat",
                       "ssim": "torch", "offload": "none", "offload_reason": "offload none (...)"},
                      {"free_bytes": 130 * 2**30, "total_bytes": 140 * 2**30})
    monkeypatch.setattr(vd.doctor, "diagnose", lambda **kw: report)
    assert run(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "GPU path: ready" in out and "free VRAM: 130.0 of 140.0 GiB" in out


def test_weights_present_missing_and_verified(tmp_path, monkeypatch):
    _manifest(tmp_path, monkeypatch)
    _place("moge")
    checks = {c.name: c for c in D.check_weights()}
    assert checks["weights moge"].status == "ok" and "re-hash" in checks["weights moge"].detail
    assert checks["weights flux-fill"].status == "missing" and checks["weights flux-fill"].fix == "vd fetch flux-fill"
    verified = {c.name: c for c in D.check_weights(verify=True)}
    assert "verified" in verified["weights moge"].detail
    _place("moge", b"changed")  # no longer the published sha256
    bad = {c.name: c for c in D.check_weights(verify=True)}
    assert bad["weights moge"].status == "missing" and bad["weights moge"].fix == "vd fetch --force moge"


def test_gsplat_states(monkeypatch):
    monkeypatch.setattr(D, "_version", lambda dist: "1.5.3" if dist == "gsplat" else None)
    monkeypatch.setattr(D, "gsplat_kernels", lambda: None)
    assert D.check_gsplat(CUDA13, "13.0").status == "warn"  # compiles on first use
    no_nvcc = D.check_gsplat(CUDA13, None)
    assert no_nvcc.status == "missing" and "nvcc" in no_nvcc.fix
    mismatch = D.check_gsplat(CUDA13, "12.4")
    assert mismatch.status == "missing" and "does not match" in mismatch.detail
    monkeypatch.setattr(D, "gsplat_kernels", lambda: "prebuilt")
    assert D.check_gsplat(CUDA13, None).status == "ok"
    monkeypatch.setattr(D, "_version", lambda dist: None)
    assert D.check_gsplat(CUDA13, "13.0").status == "missing"


def test_torch_states():
    assert D.check_torch(CUDA13).status == "ok"
    assert D.check_torch(D.TorchInfo()).status == "missing"
    assert "driver" in D.check_torch(D.TorchInfo("2.11.0+cu130", "13.0", False)).fix


def test_nvcc_release_is_read(tmp_path, monkeypatch):
    exe = tmp_path / "nvcc"
    exe.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                   "echo 'Cuda compilation tools, release 13.0, V13.0.48'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert D.nvcc_version() == "13.0"


@pytest.mark.parametrize("names, expected", [
    ({"gsplat", "diffusers", "MoGe code", "weights moge", "weights flux-fill", "weights flux-prompt"},
     {"render": "gsplat", "inpaint": "flux-fill", "depth": "moge"}),
    ({"diffusers", "weights flux-fill"}, {"render": "torch", "inpaint": "telea"}),
])
def test_picks_follow_the_checks(names, expected, monkeypatch):
    import vd.models.offload as off

    monkeypatch.setattr(off, "place", lambda device, **kw: off.plan(80 * off.GIB, 80 * off.GIB, **kw))
    checks = [D.Check(n, "ok", "") for n in names]
    picks, _ = D.picks(CUDA13, checks, "cuda")
    assert {k: picks[k] for k in expected} == expected
    assert picks["offload"] == "none"


def test_gsplat_without_built_kernels_is_said_with_the_build_line_and_not_picked(monkeypatch):
    monkeypatch.setattr(D, "_version", lambda dist: "1.5.3" if dist == "gsplat" else None)
    monkeypatch.setattr(D, "gsplat_kernels", lambda: None)
    c = D.check_gsplat(CUDA13, "13.0")
    assert "installed but its CUDA kernels are not built" in c.detail and "torch renderer" in c.detail
    assert c.fix.endswith("from gsplat.cuda._backend import _C'")
    no_nvcc = D.check_gsplat(CUDA13, None)
    assert "not built" in no_nvcc.detail and "from gsplat.cuda._backend import _C" in no_nvcc.fix
    import vd.models.offload as off

    monkeypatch.setattr(off, "place", lambda device, **kw: off.plan(80 * off.GIB, 80 * off.GIB, **kw))
    picks, _ = D.picks(CUDA13, [c, D.Check("diffusers", "ok", "")], "cuda")
    assert picks["render"] == "torch"  # auto does not compile on a first render


def test_vd_doctor_names_unbuilt_gsplat_kernels(tmp_path, monkeypatch, capsys, request):
    """The whole command with a gsplat that imports but has no kernels (its wheel without a build)."""
    from test_render import use_stub_gsplat

    use_stub_gsplat(tmp_path, monkeypatch, request)
    assert run(["doctor"]) == 1  # a CPU machine: the GPU path cannot run
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " gsplat " in ln)
    assert "1.5.3 installed but its CUDA kernels are not built" in line
    assert "from gsplat.cuda._backend import _C" in out
