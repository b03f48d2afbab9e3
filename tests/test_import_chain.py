"""vd's model import chain with and without transformers and peft.

diffusers imports transformers and peft (unguarded in its loaders) whenever they are installed, as
on the GPU image; the dev venv has them too. Each case runs in a fresh interpreter: "without" hides
them the way an absent package looks to diffusers (`importlib.util.find_spec` -> None)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("diffusers")

CHAIN = """
import json, sys
{hide}
from flux_tiny import make_tiny_flux
import tempfile, pathlib
from vd.models import flux_fill as F
from vd.models.choose import get_inpaint_backend
from vd.stages import denoisers
from diffusers import FluxTransformer2DModel
tiny = make_tiny_flux(pathlib.Path(tempfile.mkdtemp()))
tr = F.load_transformer(tiny["transformer"], config=tiny["config"] / "transformer")
ae = F.load_ae(tiny["ae"], config=tiny["config"] / "vae")
print(json.dumps({{"transformers": "transformers" in sys.modules and sys.modules["transformers"] is not None,
                  "peft": "peft" in sys.modules and sys.modules["peft"] is not None,
                  "params": sum(p.numel() for p in tr.parameters())}}))
"""
HIDE = "sys.modules['transformers'] = None; sys.modules['peft'] = None"


def _run(hide: str, tmp_path) -> dict:
    from conftest import REPO

    p = subprocess.run([sys.executable, "-c", CHAIN.format(hide=hide)], cwd=REPO / "tests", capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_flux_loads_with_transformers_and_peft_installed(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    out = _run("", tmp_path)
    assert out["transformers"] and out["peft"]  # diffusers really went through them
    assert out["params"] > 0


def test_flux_loads_without_transformers_and_peft(tmp_path):
    out = _run(HIDE, tmp_path)
    assert not out["transformers"] and not out["peft"]
    assert out["params"] > 0
