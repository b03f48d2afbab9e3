"""Tiny random MoGe-2 models for tests: MoGe's own `moge.model.v2.MoGeModel`, saved in the published
`model.pt` layout (`model_config` + `model`) where the registry puts it, so the production loader reads them.

- `tiny`: a 2-block, 32-wide DINOv2 ViT/14 under a test hub name, the ViT-L-normal config with every width shrunk.
- `vits`: the published ViT-S-normal config (backbone `dinov2_vits14` as MoGe builds it: 12 blocks, 384 wide;
  blocks 5 and 11 read; neck and heads 384/256/128/64/32 wide, one residual block per level; scale head
  384-384-384-1), but for `num_tokens_range`, lowered so that CPU inference takes a moment.
- `vitb`: the same layout at ViT-B's width (backbone name `dinov2_vitb14`, 768 wide, 12 heads), its depth shrunk
  to 2 blocks (MoGe builds its backbone by hub name with no arguments, so the shrunk one is registered under that
  name) and blocks 0 and 1 read.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

TINY_BACKBONE = "vd_test_tiny14"


def _vit(embed_dim: int, depth: int, num_heads: int, mlp_ratio: int = 4):
    from moge.model.dinov2.layers import MemEffAttention, NestedTensorBlock
    from moge.model.dinov2.models.vision_transformer import DinoVisionTransformer

    def build(pretrained: bool = False, **kw):
        assert not pretrained
        return DinoVisionTransformer(
            img_size=518, patch_size=14, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), init_values=1.0,
            ffn_layer="mlp", block_chunks=0, num_register_tokens=0, interpolate_antialias=False,
            interpolate_offset=0.1,
        )

    return build


# size -> (backbone hub name, the backbone to register under it or None for MoGe's own, blocks read, width)
SIZES = {
    "tiny": (TINY_BACKBONE, _vit(32, 2, 2, mlp_ratio=2), [0, 1], 32),
    "vitb": ("dinov2_vitb14", _vit(768, 2, 12), [0, 1], 768),
    "vits": ("dinov2_vits14", None, [5, 11], 384),
}


def register_backbone(monkeypatch, size: str) -> None:
    """Make MoGe's encoder find the backbone of `size` by its hub name (for as long as the test runs)."""
    from moge.model.dinov2.hub import backbones

    name, build, _, _ = SIZES[size]
    if build is not None:
        monkeypatch.setattr(backbones, name, build, raising=False)


def tiny_config(size: str = "tiny") -> dict:
    """The MoGe-2 normal-model config (configs/train/v2.json layout) for `size` (see the module docstring)."""
    backbone, _, layers, width = SIZES[size]
    if size == "tiny":
        dims, neck_res, scale = [32, 16, 16, 8, 8], [0, 1, 1, 1, 0], [32, 16, 1]
    else:
        dims, neck_res, scale = [width, 256, 128, 64, 32], [0, 1, 1, 1, 0], [width, width, width, 1]
    common = {"res_block_in_norm": "none", "res_block_hidden_norm": "none",
              "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]}
    head = lambda out: {  # noqa: E731
        "dim_in": list(dims), "dim_out": [None, None, None, None, out], "dim_res_blocks": list(dims),
        "num_res_blocks": [0, 1, 1, 1, 0], **common,
    }
    return {
        "encoder": {"backbone": backbone, "intermediate_layers": list(layers), "dim_out": dims[0]},
        "neck": {"dim_in": [dims[0] + 2, 2, 2, 2, 2], "dim_out": None, "dim_res_blocks": list(dims),
                 "num_res_blocks": neck_res, **common},
        "points_head": head(3),
        "normal_head": head(3),
        "mask_head": head(1),
        "scale_head": {"dims": scale},
        "remap_output": "exp",
        "num_tokens_range": [60, 120],
    }


def write_tiny_moge(monkeypatch, models_dir: Path, entry: str = "moge", size: str = "tiny", seed: int = 0) -> Path:
    """Write `<models_dir>/<entry>/model.pt` for a random MoGe-2 of `size`; return its path."""
    import torch
    from moge.model.v2 import MoGeModel

    register_backbone(monkeypatch, size)
    torch.manual_seed(seed)
    cfg = tiny_config(size)
    model = MoGeModel(**cfg)
    with torch.no_grad():  # bias the mask head to "valid" and the depth to ~2 m
        model.mask_head.output_blocks[-1].bias.fill_(4.0)
        model.points_head.output_blocks[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.7]))
    path = Path(models_dir) / entry / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": cfg, "model": model.state_dict()}, path)
    return path
