"""What each model call of vd allocates at full size, traced on the CPU: no weights, no GPU, no compute.

Every model is built from its real configuration on torch's meta device, in the dtype vd runs it in on a
GPU (bf16; MoGe-2 fp16, as its autocast computes), and the same calls vd makes are run on meta tensors
while a dispatch mode follows every tensor they allocate and free. The peak it reports is the
tensors' own bytes: a lower bound of what the CUDA caching allocator holds (it rounds blocks up and
keeps freed ones), without cuDNN/cuBLAS workspaces or the CUDA context. Attention goes through
`scaled_dot_product_attention`, whose fused kernels hold no score matrix, on meta as on a GPU.

    python bench/gpu/traced.py                  # every model, ~2 min on 2 cores; rewrites bench/gpu.md's section
    python bench/gpu/traced.py --only flux      # flux | klein | qwen3 | moge

The figures are compared with the allowances of vd/models/footprints.py, which the memory plan uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE), str(REPO / "tests")]

MIB = 2**20
GIB = 2**30
SECTION = ("<!-- traced:start -->", "<!-- traced:end -->")
# work sizes (views, height, width): the plan's default work (a 512-pixel input outpainted by 30 %), the
# outpainting of a 512-pixel input at 512², a 1-megapixel view, and `vd fine`'s batches of 2 and 4 views
WORK = ((1, 512, 512), (1, 672, 672), (1, 1024, 1024), (2, 672, 672), (4, 512, 512))


@dataclass
class Traced:
    model: str
    call: str
    work: str  # what the call works on
    pixels: int  # views x height x width (0 where it does not scale with them)
    views: int
    weights_bytes: int
    peak_bytes: int  # tensors the call allocates beyond the weights, at their peak
    seconds: float


def tracked_peak(call: Callable[[], object], *modules) -> int:
    """Bytes of the tensors `call` allocates beyond the weights of `modules`, at their peak, on the modules'
    device (meta here; the same count on real tensors is what tests/test_traced_memory.py compares)."""
    device = next(modules[0].parameters()).device
    with _LiveBytes(device) as live:
        call()
    return live.peak


class _LiveBytes:
    """Every storage that an operator returns on `device`, counted from its allocation until it is freed.

    (torch's MemTracker does the same but refuses a module called twice in one pass, which the AE's slicing
    does.) A storage is known by its C++ address while its Python object lives; views and in-place results
    share their input's storage and count once."""

    def __init__(self, device):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._saw(out)
                return out

        self.device, self.mode = device, Mode()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _saw(self, out) -> None:
        import weakref

        import torch
        from torch.utils._pytree import tree_leaves

        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device != self.device:
                continue
            st = t.untyped_storage()
            key = st._cdata
            if key in self.live:
                continue
            self.live[key] = st.nbytes()
            self.now += self.live[key]
            self.peak = max(self.peak, self.now)
            weakref.finalize(st, self._freed, key)

    def _freed(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def weight_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def built(build: Callable[[], object], dtype, device: str = "meta", *, built_on_cpu: bool = False):
    """The module `build` makes, on `device` in `dtype` (on meta: no memory, random values never drawn);
    `built_on_cpu` for a constructor that reads values (DINOv2 reads its drop-path rates)."""
    import torch

    if built_on_cpu or device != "meta":
        return build().to(device=device, dtype=dtype).eval()
    with torch.device("meta"):
        return build().to(dtype).eval()


def flux_fill(work=WORK, configs: Optional[tuple[dict, dict]] = None, device: str = "meta") -> list[Traced]:
    """FLUX.1-Fill-dev in bf16 through vd's `FluxFill`: the Fill conditioning (AE encode), one velocity
    call of the transformer, the AE decode. `configs`: (transformer, vae) configs in place of the real ones."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from vd.models.flux_loading import config_dir
    from vd.models.flux_model import FluxFill

    cd, bf = config_dir(), torch.bfloat16
    tcfg, vcfg = configs or (
        FluxTransformer2DModel.load_config(cd / "transformer"),
        AutoencoderKL.load_config(cd / "vae"),
    )
    tr = built(lambda: FluxTransformer2DModel.from_config(tcfg), bf, device)
    ae = built(lambda: AutoencoderKL.from_config(vcfg), bf, device)
    txt = torch.zeros(512, int(tr.config.joint_attention_dim))
    vec = torch.zeros(int(tr.config.pooled_projection_dim))
    ff = FluxFill(tr, ae, txt, vec, device=device, dtype=bf, offload="none")
    return [t for b, h, w in work for t in _trace_calls("flux-fill bf16", (b, h, w), _flux_calls(ff, b, h, w), tr, ae)]


def _flux_calls(ff, b: int, h: int, w: int) -> dict:
    import torch

    from vd.models.flux_sampling import unpack_latents

    images, masks = torch.zeros(b, 3, h, w), torch.zeros(b, 1, h, w)
    x = torch.zeros(b, (h // 16) * (w // 16), 64, device=ff.device)
    cond = torch.zeros(b, (h // 16) * (w // 16), 320, device=ff.device)
    return {
        "encode": (lambda: ff.condition(images, masks), ff.ae),
        "velocity": (lambda: ff.velocity(x, 0.5, cond, height=h, width=w), ff.transformer),
        "decode": (lambda: ff.decode(unpack_latents(x, h // 8, w // 8)), ff.ae),
    }


def _trace_calls(model: str, work: tuple[int, int, int], calls: dict, *modules) -> list[Traced]:
    """One row per call: `calls` maps a call's name to (the call, the module whose weights it uses)."""
    b, h, w = work
    rows = []
    for name, (call, module) in calls.items():
        t0 = time.perf_counter()
        peak = tracked_peak(call, *modules)
        rows.append(Traced(model, name, f"{b} x {w}x{h}", b * h * w, b, weight_bytes(module), peak, _since(t0)))
    return rows


def klein(work=WORK) -> list[Traced]:
    """FLUX.2 [klein] 4B in bf16 through vd's `Flux2Klein` building blocks (those `vd fine` samples with;
    the pipeline's inpaint makes the same calls): reference (AE encode), one velocity call with the
    reference tokens appended, the AE decode."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    from vd.models.flux2_klein_loading import config_dir
    from vd.models.flux2_klein_model import Flux2Klein

    cd, bf = config_dir(), torch.bfloat16
    tr = built(lambda: Flux2Transformer2DModel.from_config(Flux2Transformer2DModel.load_config(cd / "transformer")), bf)
    vae = built(lambda: AutoencoderKLFlux2.from_config(AutoencoderKLFlux2.load_config(cd / "vae")), bf)
    emb = torch.zeros(1, 512, int(tr.config.joint_attention_dim))
    kl = Flux2Klein(tr, vae, FlowMatchEulerDiscreteScheduler(), emb, device="meta", dtype=bf, offload="none")
    return [t for b, h, w in work for t in _trace_calls("flux2-klein", (b, h, w), _klein_calls(kl, b, h, w), tr, vae)]


def _klein_calls(kl, b: int, h: int, w: int) -> dict:
    import torch

    images = torch.zeros(b, 3, h, w, device="meta")
    ref = kl.reference(images)
    x = torch.zeros_like(ref["tokens"], dtype=torch.float32)
    return {
        "encode": (lambda: kl.reference(images), kl.vae),
        "velocity": (lambda: kl.velocity(x, 0.5, ref), kl.transformer),
        "decode": (lambda: kl.decode(x, h, w), kl.vae),
    }


def qwen3() -> list[Traced]:
    """FLUX.2 [klein]'s text encoder, Qwen3-4B in bf16, embedding one 512-token prompt (a cache miss)."""
    import torch
    from klein import QWEN3_4B
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vd.models.flux2_klein_loading import MAX_PROMPT_TOKENS, TEXT_LAYERS

    te = built(lambda: Qwen3ForCausalLM(Qwen3Config(**QWEN3_4B)), torch.bfloat16)
    ids = torch.zeros(1, MAX_PROMPT_TOKENS, dtype=torch.long, device="meta")

    def encode():
        # transformers reads the position ids' values to find packed sequences, which meta tensors do not
        # have; one unpadded prompt has none (the real call's padding mask adds 1 x 512 x 512 booleans)
        with mock.patch("transformers.masking_utils.find_packed_sequence_indices", lambda position_ids: None):
            return _encode()

    def _encode():
        with torch.inference_mode():
            hs = te(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            return torch.stack([hs[k] for k in TEXT_LAYERS], dim=1)

    t0 = time.perf_counter()
    peak = tracked_peak(encode, te)
    return [Traced("qwen3-4b", "encode", f"{MAX_PROMPT_TOKENS} tokens", 0, 1, weight_bytes(te), peak, _since(t0))]


def moge(sizes=("vitl", "vitb", "vits"), side: int = 672) -> list[Traced]:
    """MoGe-2 (normal head) at its largest token count (resolution level 9: 3600 tokens), the network's
    forward in fp16 and in fp32: `infer(use_fp16=True)` autocasts on a GPU, which computes the matmuls and
    convolutions in fp16 and keeps norms and softmax in fp32, so it holds between the two. The weights stay
    the published fp32 ones (autocast casts each layer's for its own call). The ViT-L and ViT-B layouts are
    the published ViT-S one at the backbone's width (tests/moge_tiny.py); their heads are not verified."""
    import torch
    from moge.model.v2 import MoGeModel

    out = []
    for size in sizes:
        cfg = moge_config(size)
        for dtype in (torch.float16, torch.float32):
            model = built(lambda cfg=cfg: MoGeModel(**cfg), dtype, built_on_cpu=True)
            image = torch.zeros(1, 3, side, side, dtype=dtype, device="meta")

            def forward(model=model, image=image):
                with torch.inference_mode():
                    return model(image, num_tokens=3600)

            t0 = time.perf_counter()
            peak = tracked_peak(forward, model)
            fp32 = weight_bytes(model) * (2 if dtype == torch.float16 else 1)
            call = "forward, " + ("fp16" if dtype == torch.float16 else "fp32")
            work = f"1 x {side}x{side}, 3600 tokens"
            out.append(Traced(f"moge-2 {size}", call, work, 0, 1, fp32, peak, _since(t0)))
    return out


def moge_config(size: str) -> dict:
    """A MoGe-2 normal-model config of `size` at full size: the published ViT-S layout (tests/moge_tiny.py),
    at ViT-B's or ViT-L's width for those (their heads are not verified), 1200-3600 tokens."""
    from moge_tiny import tiny_config

    widths = {"vitl": ("dinov2_vitl14", [5, 11, 17, 23], 1024), "vitb": ("dinov2_vitb14", [2, 5, 8, 11], 768)}
    cfg = tiny_config("vits")
    cfg["num_tokens_range"] = [1200, 3600]
    if size in widths:
        cfg = _widened(cfg, *widths[size])
    return cfg


def _widened(cfg: dict, backbone: str, layers: list[int], width: int) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["encoder"].update(backbone=backbone, intermediate_layers=layers, dim_out=width)
    cfg["neck"]["dim_in"][0] = width + 2
    cfg["neck"]["dim_res_blocks"][0] = width
    for head in ("points_head", "normal_head", "mask_head"):
        cfg[head]["dim_in"][0] = cfg[head]["dim_res_blocks"][0] = width
    cfg["scale_head"]["dims"] = [width, width, width, 1]
    return cfg


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 1)


RUNS = {"flux": flux_fill, "klein": klein, "qwen3": qwen3, "moge": moge}


def allowance(t: Traced) -> tuple[int, str]:
    """What vd/models/footprints.py sets aside for the same thing, and how it is made up."""
    from vd.models.footprints import DEPTH_BYTES, FOOTPRINTS, INPAINT_VARIANTS

    if t.model.startswith("moge"):
        return DEPTH_BYTES[t.model.split()[-1]], "DEPTH_BYTES (weights and activations)"
    if t.model == "qwen3-4b":
        return INPAINT_VARIANTS["klein"].text_encoder, "the klein variant's text_encoder (weights and activations)"
    fp = FOOTPRINTS.for_variant(INPAINT_VARIANTS["klein" if t.model == "flux2-klein" else "bf16"])
    return fp.activations(t.pixels, t.pixels // t.views), "Footprints.activations(pixels, one view's pixels)"


def report(rows: list[Traced]) -> list[str]:
    lines = [
        "## What each model call allocates, traced on the CPU",
        "",
        f"`python bench/gpu/traced.py` ({time.strftime('%Y-%m-%d')}, the CPU development machine): each model "
        "built at full size from its real configuration on torch's meta device, in the dtype vd runs it in on a "
        "GPU, and vd's own calls run on it while a dispatch mode follows every tensor they allocate until it is "
        "freed. These are tensor bytes, a lower bound of torch's allocated peak on a GPU: no allocator rounding "
        "or cached blocks, no cuDNN/cuBLAS workspace, no CUDA context, and none of what vd prepares in host "
        "memory (the Fill conditioning's masked image, for one). **They are not GPU measurements**; the GPU run "
        "above measures the same calls. `tests/test_traced_memory.py` checks that a tiny FLUX.1-Fill traced on "
        "meta counts, byte for byte, what it allocates when it runs for real on the CPU.",
        "",
        "| model | call | work | weights | traced peak beyond the weights | the plan's allowance"
        " | allowance / traced |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = [
        "",
        "For the inpainters the allowance is the activations' alone (`Footprints.activations`: a fixed part and "
        "the larger of the transformer's share of all the views' pixels and the AE's of one view's, the weights "
        "counted apart); for MoGe-2 and Qwen3 it holds the weights too (`DEPTH_BYTES`, the "
        "klein variant's `text_encoder`), and the ratio is taken with them.",
    ]
    for t in rows:
        allow, _ = allowance(t)
        if t.pixels == 0:  # a depth model or the text encoder: the allowance holds the weights too
            traced = t.weights_bytes + t.peak_bytes
            peak = f"{_gib(t.peak_bytes)} ({_gib(traced)} with the weights)"
        else:
            traced, peak = t.peak_bytes, _gib(t.peak_bytes)
        ratio = f"{allow / traced:.1f}x" if traced else "-"
        lines.append(
            f"| {t.model} | {t.call} | {t.work} | {_gib(t.weights_bytes)} | {peak} | {_gib(allow)} | {ratio} |"
        )
    return lines + notes


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / MIB:.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RUNS), action="append", help="trace these models only (repeatable)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "gpu-traced.json", help="where the rows go")
    ap.add_argument(
        "--md", type=Path, default=REPO / "bench" / "gpu.md", help="the markdown whose section is rewritten"
    )
    args = ap.parse_args(argv)
    rows: list[Traced] = []
    for name in args.only or RUNS:
        t0 = time.perf_counter()
        rows += RUNS[name]()
        print(f"{name}: {_since(t0)} s", file=sys.stderr)
    args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    from bench.sections import write_section

    write_section(args.md, report(rows), *SECTION)
    print("\n".join(report(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
