"""A full-size FLUX.1-Fill-dev transformer and AE with random weights, for GPU timing.

Random weights time the same as the real ones, so the benchmarks need no download. Built on the
meta device from the configs bundled in vd, then materialised in bf16 on the CPU.
"""

from __future__ import annotations

import json


def random_flux_parts():
    """(transformer, ae, txt, vec): the pieces `vd.models.flux_fill.FluxFill` is built from."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from vd.models import flux_fill as F

    def config(name: str) -> dict:
        cfg = json.loads((F.config_dir() / name / "config.json").read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    with torch.device("meta"):
        tr = FluxTransformer2DModel.from_config(config("transformer"))
    tr = tr.to_empty(device="cpu").to(torch.bfloat16)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)
    ae = AutoencoderKL.from_config(config("vae")).to(torch.bfloat16)
    return tr, ae, torch.randn(1, 512, 4096), torch.randn(1, 768)
