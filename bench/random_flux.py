"""A full-size FLUX.1-Fill-dev transformer and AE with random weights, for GPU timing.

Random weights time the same as the real ones, so the benchmarks need no download. Built on the
meta device from the configs bundled in vd (or the configs given), then materialised in bf16 on
`device` (the CPU by default; filling 12 B parameters is far faster on a GPU).
"""

from __future__ import annotations

import json


def random_flux_parts(transformer_config: dict | None = None, vae_config: dict | None = None, device: str = "cpu",
                      dtype=None):
    """(transformer, ae, txt, vec): the pieces `vd.models.flux_fill.FluxFill` is built from."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from vd.models import flux_fill as F

    def config(name: str) -> dict:
        cfg = json.loads((F.config_dir() / name / "config.json").read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    def public(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    dtype = dtype or torch.bfloat16
    tcfg = public(transformer_config) if transformer_config else config("transformer")
    vcfg = public(vae_config) if vae_config else config("vae")
    with torch.device("meta"):
        tr = FluxTransformer2DModel.from_config(tcfg).to(dtype)  # cast on meta: no fp32 copy is ever allocated
    tr = tr.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)
    ae = AutoencoderKL.from_config(vcfg).to(device=device, dtype=dtype)
    txt = torch.randn(1, 512, tcfg["joint_attention_dim"])
    vec = torch.randn(1, tcfg["pooled_projection_dim"])
    return tr, ae, txt, vec
