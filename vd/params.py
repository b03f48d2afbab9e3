"""Stage parameters: every default declared once, every value checked in one place.

The CLI reads the defaults from here for `--help` (its options default to None, meaning "the
default below"), and every stage validates its parameters here before any work starts. A bad
value is a `UsageError` (exit 2) whose one sentence names the option.

Standard library only: the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from vd.errors import UsageError

SEED = 0
MAX_RESOLUTION = 512
TRAJECTORIES = ("spiral", "wobble", "rot")
FALLBACKS = ("none", "closest")
RESCALES = ("shrink", "match", "none")
RENDER_BACKENDS = ("auto", "gsplat", "torch")
LICENCES = ("any", "commercial")  # commercial: refuse weights whose licence forbids commercial use
DEPTH_MODELS = ("vitl", "vitb", "vits")  # MoGe-2 sizes, largest (best) first
FLUX_QUANTS = ("auto", "bf16", "q8_0", "q5_k", "q4_k")  # FLUX.1-Fill-dev transformer weights
SPZ_VERSIONS = (
    2,
    3,
)  # written by vd; 3 (smallest-three rotations) is what Niantic's library writes and current readers take
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def option_name(field: str) -> str:
    """The CLI option of a parameter: n_frames -> --n-frames."""
    return "--" + field.replace("_", "-")


# a field that `key_params` leaves out of every key because the runners key it apart: the seed and the
# renderer (a stage key's own seed and backend), a trajectory file (its poses, by content)
KEYED_APART = ("*",)


def param(default: Any, help: str = "", *, not_in_keys: tuple[str, ...] = (), option: Optional[str] = None) -> Any:
    """A parameter-dataclass field with what the CLI and the cache keys need declared beside its default:
    its --help text, its option when that is not `option_name(field)`, and `not_in_keys`, the cache
    keys (stage names, or KEYED_APART) whose result it does not change. Every other key derived by
    `key_params` includes it, so a field added later can never be left out of a key by mistake."""
    meta: dict[str, Any] = {"help": help, "not_in_keys": tuple(not_in_keys)}
    if option is not None:
        meta["option"] = option
    return field(default=default, metadata=meta)


def key_params(obj, key: str) -> dict:
    """The fields of a parameter dataclass that change the result cached under `key` (a stage name):
    all of them but those whose `param(..., not_in_keys=...)` names that key or is KEYED_APART."""
    out = {}
    for f in fields(obj):
        outside = f.metadata.get("not_in_keys", ())
        if key not in outside and KEYED_APART[0] not in outside:
            value = getattr(obj, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def help_of(cls, name: str) -> str:
    """The --help text declared with a parameter field."""
    return next(f for f in fields(cls) if f.name == name).metadata.get("help", "")


def option_of(cls, name: str) -> str:
    """The CLI option of a parameter field: declared with it, else `option_name(name)`."""
    return next(f for f in fields(cls) if f.name == name).metadata.get("option") or option_name(name)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def check_finite(obj) -> None:
    """Every float (or tuple of floats) field of a parameter dataclass is a finite number."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"{option_name(f.name)} must be a finite number, got {v}")


def check_choice(value: str, choices, option: str) -> None:
    require(value in choices, f"{option} must be one of {', '.join(choices)}, got {value!r}")


def check_device(device: Optional[str], option: str = "--device") -> None:
    """cpu, cuda, cuda:N or mps (None: the default device)."""
    require(
        device is None or bool(_DEVICE.match(str(device))), f"{option} must be cpu, cuda, cuda:N or mps, got {device!r}"
    )


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


def check_intrinsics(focal: Optional[float] = None, fov: Optional[float] = None) -> None:
    """A focal length in pixels (> 0), a horizontal field of view in degrees (0.5 to 179.5), not both."""
    require(focal is None or fov is None, "give either --focal or --fov, not both")
    if focal is not None:
        require(math.isfinite(focal) and focal > 0, f"--focal must be a positive number of pixels, got {focal:g}")
        # intrinsics are float32: beyond its range (or below its smallest normal) a focal becomes inf or 0
        require(
            FLOAT32_TINY <= focal <= FLOAT32_MAX,
            f"--focal must be between {FLOAT32_TINY:g} and {FLOAT32_MAX:g} pixels (a float32), got {focal:g}",
        )
    if fov is not None:
        require(
            math.isfinite(fov) and 0.5 < fov < 179.5,
            f"--fov must be a horizontal field of view in degrees between 0.5 and 179.5, got {fov:g}",
        )


def check_max_resolution(n: int) -> None:
    require(n >= 16, f"--max-resolution must be at least 16 pixels, got {n}")


def given(**options) -> dict:
    """The options a user gave (those not None), e.g. to build a parameter dataclass from a CLI call."""
    return {k: v for k, v in options.items() if v is not None}


GIB = 2**30
OFFLOAD_MODES = ("none", "model", "sequential")
OFFLOAD_CHOICES = ("auto", *OFFLOAD_MODES)  # auto: decided from the free VRAM when the model loads (vd.models.offload)
GPU_ITERS = (100, 500)  # upstream scaffold / per-view optimisation iterations (CUDA)
CPU_ITERS = (30, 60)  # the documented CPU defaults (bench/coarse.md)
FINE_GS_ITERS = {"gpu": 192, "cpu": 30}  # vd fine's scene-fit iterations (CPU: bench/quality's fine method)

OFFLOAD_HELP = (
    "Flux Fill GPU memory mode: auto (chosen from the free VRAM when the model loads), none (fastest), "
    "model (whole modules moved to the GPU while used), sequential (block by block, the least VRAM)."
)
VRAM_BUDGET_HELP = (
    "Cap on the GPU memory vd plans for, in GiB (e.g. 16 on a shared 24 GB card); --offload auto picks within it."
)


@dataclass
class RunOptions:
    """What a stage run needs beside its parameters: backends, device, seed, image size, intrinsics.

    `vd coarse`, `vd fine`, `vd depth` and `vd batch` build one from their options; the stage
    runners (`vd.stages.coarse.run_coarse`, `vd.stages.fine.prepare_fine`) take it."""

    depth_backend: str = param("auto", "auto, moge or file (a depth map next to the image).")
    depth_model: str = param(
        "vitl", "MoGe-2 size for the moge depth backend: vitl (best), vitb or vits (smaller and faster, less VRAM)."
    )
    inpaint_backend: str = param(
        "auto",
        "auto, flux-fill (FLUX.1-Fill-dev, non-commercial), flux2-klein (FLUX.2 [klein] 4B, Apache-2.0), telea or fsr "
        "(classical, no diffusion model: `vd fine` needs --allow-classical to use them).",
    )
    licence: Optional[str] = param(
        None,
        "any or commercial: commercial refuses model weights whose licence forbids commercial use, and auto picks "
        "permissive ones (default: $VD_LICENCE, else any).",
    )
    render_backend: str = param("auto", "auto, gsplat or torch.")
    device: Optional[str] = param(None, "cuda, cuda:N or cpu (default: $VD_DEVICE, else cuda when available).")
    seed: int = param(SEED, "Random seed; part of every cache key.")
    max_resolution: int = param(
        MAX_RESOLUTION, "Long side cap in pixels; never upscales; sides become multiples of 16."
    )
    focal: Optional[float] = param(None, "Focal length in pixels (file depth backend).")
    fov: Optional[float] = param(None, "Horizontal field of view in degrees (file depth backend).")
    fetch: bool = param(False, "Download missing model weights first (also VD_AUTO_FETCH=1).")
    allow_classical: bool = param(
        False, "With the telea backend, run `vd fine`'s rectification loop on classical inpaints instead of failing."
    )

    def validate(self) -> None:
        check_choice(self.render_backend, RENDER_BACKENDS, "--render-backend")
        check_choice(self.depth_model, DEPTH_MODELS, "--depth-model")
        if self.licence is not None:
            check_choice(self.licence, LICENCES, "--licence")
        check_intrinsics(self.focal, self.fov)
        check_max_resolution(self.max_resolution)
        check_device(self.device)

    @property
    def auto_fetch(self) -> Optional[bool]:
        """What the model loaders take: True to download missing weights, None to follow VD_AUTO_FETCH."""
        return True if self.fetch else None


@dataclass
class FluxParams:
    """FLUX.1-Fill-dev sampling and its GPU memory (`vd coarse`, `vd fine`)."""

    offload: str = param("auto", OFFLOAD_HELP)
    vram_budget: Optional[float] = param(None, VRAM_BUDGET_HELP)  # None: the free memory
    quant: str = param(
        "auto",
        "FLUX.1-Fill-dev transformer weights: auto (with --offload auto, the best installed ones that fit the VRAM), "
        "bf16, or the GGUF quantisations q8_0, q5_k, q4_k (less VRAM; vd fetch flux-fill-q8 ...).",
    )
    inpaint_steps: int = param(25, "Flux Fill sampling steps.")
    guidance: float = param(30.0, "Flux Fill guidance.")

    def validate(self) -> None:
        check_finite(self)
        check_choice(self.offload, OFFLOAD_CHOICES, "--offload")
        check_choice(self.quant, FLUX_QUANTS, "--quant")
        b = self.vram_budget
        require(b is None or (math.isfinite(b) and b > 0), f"--vram-budget must be a positive number of GiB, got {b}")
        require(self.inpaint_steps >= 1, f"--inpaint-steps must be at least 1, got {self.inpaint_steps}")
        require(self.guidance >= 0, f"--guidance must be 0 or more, got {self.guidance:g}")

    @property
    def budget_bytes(self) -> Optional[int]:
        return None if self.vram_budget is None else int(self.vram_budget * GIB)

    def backend_options(self) -> dict:
        """Keyword arguments of `vd.models.choose.get_inpaint_backend`."""
        return {
            "offload": self.offload,
            "quant": self.quant,
            "steps": self.inpaint_steps,
            "guidance": self.guidance,
            "vram_budget": self.budget_bytes,
        }


LOOP_ONLY = ("scaffold",)  # a field of the coarse view loop: the scaffold's key leaves it out
# a field of the views after the trajectory's: the scaffold's and the trajectory views' keys leave it out
# (vd.stages.coarse keys it into the run's folder key itself)
MOVES_ONLY = ("scaffold", "coarse-view")


@dataclass
class CoarseParams:
    """`vd coarse`: frame selection, trajectory, scaffold and optimisation.

    Cache keys (`key_params`): "scaffold" (`vd.stages.scaffold.scaffold_key`) and "coarse-view"
    (`vd.stages.coarse.view_key`, which also chains from the scaffold's key)."""

    n_frames: int = param(10, "Frames in the scene: input + ring + up to N-2 added views.", not_in_keys=LOOP_ONLY)
    dense_multiplier: int = param(10, "Candidate poses = n_frames x this.", not_in_keys=LOOP_ONLY)
    margin: int = param(32, "Pixels added to the width and height of candidate views.", not_in_keys=LOOP_ONLY)
    min_ratio: float = param(0.05, "Smallest hole ratio a candidate may have to be added.", not_in_keys=LOOP_ONLY)
    max_ratio: float = param(0.25, "Largest hole ratio a candidate may have to be added.", not_in_keys=LOOP_ONLY)
    adjacent_exclusion: int = param(1, "Candidates within +-N of an added one are skipped.", not_in_keys=LOOP_ONLY)
    fallback: str = param(
        "none", "none or closest: what to do when no candidate view is in the hole-ratio band.", not_in_keys=LOOP_ONLY
    )
    traj: str = param("spiral", "Candidate trajectory: spiral, wobble or rot.", not_in_keys=LOOP_ONLY)
    # the poses it holds are keyed by content (vd.stages.coarse.view_key), not by the file's name
    trajectory_file: Optional[str] = param(
        None,
        "Candidate poses from a file: JSON list of 4x4 world-from-camera matrices (OpenCV, world = input camera) "
        "or a COLMAP images.txt.",
        option="--trajectory",
        not_in_keys=KEYED_APART,
    )
    forward_ratio: float = param(0.3, "Scales the camera's motion into the scene (+z).", not_in_keys=LOOP_ONLY)
    backward_ratio: float = param(0.4, "Scales the camera's pull-back (-z).", not_in_keys=LOOP_ONLY)
    radius_percentiles: tuple = param(
        (5.0, 50.0), "LOW HIGH depth percentiles (valid input pixels) that size the trajectory.", not_in_keys=LOOP_ONLY
    )
    move_views: int = param(
        3,
        "Views added after the trajectory's, each at the move of 15% of the median depth (along an axis or a "
        "diagonal) that still uncovers the most pixels, while one uncovers more than 0.05% (0 = none; none with "
        "--n-frames 2).",
        not_in_keys=MOVES_ONLY,
    )
    expansion: float = param(0.3, "Outpainted canvas size as a total fraction of the input (0.3 = 15% per side).")
    reach: float = param(
        6.0,
        "Degrees the outpainted canvas reaches at least beyond each edge of the input, where the camera is known "
        "before outpainting (a depth file's intrinsics, --focal, --fov, or the depth model's estimate): a narrow "
        "photo gets a wider ring, up to its own size per side (0 = --expansion alone).",
    )
    outpaint: bool = param(
        True,
        "Outpaint a canvas around the input (--no-outpaint: the input frame only).",
        option="--outpaint/--no-outpaint",
    )
    init_iters: Optional[int] = param(
        None, f"Scaffold optimisation iterations (default: {GPU_ITERS[0]} on GPU, {CPU_ITERS[0]} on CPU)."
    )
    view_iters: Optional[int] = param(
        None,
        f"Optimisation iterations per added view (default: {GPU_ITERS[1]} on GPU, {CPU_ITERS[1]} on CPU).",
        not_in_keys=LOOP_ONLY,
    )
    scan_scale: Optional[float] = param(
        None,
        "Resolution of the fast hole scan, a fraction of the candidate size (default: 1/4, at least 64 px on "
        "the long side).",
        not_in_keys=LOOP_ONLY,
    )
    refine_tolerance: float = param(
        0.03,
        "Error bound of the fast hole scan (0.022 measured): closer calls are measured exactly.",
        not_in_keys=LOOP_ONLY,
    )
    edge_times: float = param(
        0.05, "Depth-edge threshold: a jump of this fraction of the depth range is an edge (smaller: more edges)."
    )
    depth_weight: float = param(
        1.0,
        "Weight of the depth error in the optimisation (keeps Gaussians at the depth "
        "they were placed; 0 = photometric only).",
    )
    alpha_weight: float = param(
        3.0,
        "Weight of the coverage term in the optimisation: how far each view's supervised pixels' alpha falls "
        "below 0.99, averaged (no pinholes where the photo has a surface; 0 = off).",
    )

    def resolved(self, device: str) -> CoarseParams:
        """These parameters with the optimisation iterations decided: the upstream counts on CUDA,
        the documented CPU defaults elsewhere (what the cache keys hold)."""
        base = GPU_ITERS if str(device).startswith("cuda") else CPU_ITERS
        return replace(
            self,
            init_iters=base[0] if self.init_iters is None else int(self.init_iters),
            view_iters=base[1] if self.view_iters is None else int(self.view_iters),
        )

    def validate(self) -> None:
        check_finite(self)
        require(self.n_frames >= 2, f"--n-frames must be at least 2 (input + ring), got {self.n_frames}")
        require(self.move_views >= 0, f"--move-views must be at least 0, got {self.move_views}")
        require(self.dense_multiplier >= 1, f"--dense-multiplier must be at least 1, got {self.dense_multiplier}")
        require(
            self.margin >= 0 and self.margin % 2 == 0,
            f"--margin must be an even number of pixels >= 0, got {self.margin}",
        )
        require(
            0.0 <= self.min_ratio <= self.max_ratio <= 1.0,
            f"--min-ratio/--max-ratio must satisfy 0 <= min <= max <= 1, got {self.min_ratio:g} {self.max_ratio:g}",
        )
        require(self.adjacent_exclusion >= 0, f"--adjacent-exclusion must be 0 or more, got {self.adjacent_exclusion}")
        check_choice(self.fallback, FALLBACKS, "--fallback")
        check_choice(self.traj, TRAJECTORIES, "--traj")
        require(self.forward_ratio >= 0, f"--forward-ratio must be 0 or more, got {self.forward_ratio:g}")
        require(self.backward_ratio >= 0, f"--backward-ratio must be 0 or more, got {self.backward_ratio:g}")
        require(
            0.0 <= self.expansion <= 2.0, f"--expansion is a total fraction between 0 and 2, got {self.expansion:g}"
        )
        require(0.0 <= self.reach <= 45.0, f"--reach is in degrees, between 0 and 45, got {self.reach:g}")
        require(
            self.init_iters is None or self.init_iters >= 0, f"--init-iters must be 0 or more, got {self.init_iters}"
        )
        require(
            self.view_iters is None or self.view_iters >= 0, f"--view-iters must be 0 or more, got {self.view_iters}"
        )
        require(
            self.scan_scale is None or 0.0 < self.scan_scale <= 1.0,
            f"the scan scale must be in (0, 1], got {self.scan_scale}",
        )
        require(self.refine_tolerance >= 0, f"the refine tolerance must be 0 or more, got {self.refine_tolerance}")
        require(self.edge_times > 0, f"the depth-edge threshold must be positive, got {self.edge_times}")
        require(self.depth_weight >= 0, f"--depth-weight must be 0 or more, got {self.depth_weight:g}")
        require(self.alpha_weight >= 0, f"--alpha-weight must be 0 or more, got {self.alpha_weight:g}")
        lo_hi = tuple(self.radius_percentiles)
        require(
            len(lo_hi) == 2 and 0 <= lo_hi[0] < lo_hi[1] <= 100,
            f"--radius-percentiles must be LOW HIGH with 0 <= LOW < HIGH <= 100, got {lo_hi}",
        )


VIEWS_APART = ("fine-views",)  # a field of the MCS loop: the choice of views does not depend on it


# vd fine's position rate (pixels a step at the median depth): Adam's first steps move every Gaussian by about the
# rate whatever its gradient, and a scene fit of vd fine is short (60 iterations on CPU) and starts afresh each step,
# so it ends in that dip (bench/quality.md, "vd fine's position rate")
FINE_LR_MEANS = 0.0


@dataclass
class FineParams:
    """`vd fine`: multi-view consistency sampling.

    Cache keys (`key_params`): "fine-views" (the choice of views) and "fine" (the MCS loop), both
    in `vd.stages.fine`; the seed and the renderer are keyed apart."""

    views: int = param(8, "Number of refined views (greedy largest-hole choice).")
    steps: int = param(9, "Refinement steps: the last STEPS of the schedule.", not_in_keys=VIEWS_APART)
    total_steps: int = param(25, "Length of the full sampling schedule.", not_in_keys=VIEWS_APART)
    gs_iters: Optional[int] = param(
        None,
        f"Optimisation iterations of each scene rectification (default: {FINE_GS_ITERS['gpu']} on GPU, "
        f"{FINE_GS_ITERS['cpu']} on CPU).",
        not_in_keys=VIEWS_APART,
    )
    rect_weight: float = param(
        0.5,
        "Weight of the rendered scene's velocity (0 = plain sampler, 1 = follow the scene).",
        not_in_keys=VIEWS_APART,
    )
    margin: int = param(
        16, "Pixels added to each side of the refined views (rounded up so both sides are multiples of 16)."
    )
    candidate_stride: int = param(
        3, "Candidate views: every Nth pose of the coarse trajectory (plus the coarse views)."
    )
    select_scale: float = param(
        0.25, "Resolution of the hole-ratio renders that choose the views, a fraction of their size."
    )
    guidance: float = param(FluxParams.guidance, "Flux Fill guidance of the refinement.", not_in_keys=VIEWS_APART)
    rescale: str = param(
        "shrink",
        "Implied-velocity rescale to the predicted norm: shrink (only ever shortens it), "
        "match (both ways, can overshoot) or none.",
        not_in_keys=VIEWS_APART,
    )
    depth_weight: float = param(
        1.0, "Weight of the anchors' depth error in each scene fit (0 = photometric only).", not_in_keys=VIEWS_APART
    )
    alpha_weight: float = param(
        3.0,
        "Weight of the coverage term in each scene fit: how far each view's supervised pixels' alpha falls "
        "below 0.99, averaged (no pinholes where a picture has a surface; 0 = off).",
        not_in_keys=VIEWS_APART,
    )
    lr_means: float = param(
        FINE_LR_MEANS,
        "Learning rate of the positions in each scene fit, in pixels at the median depth (times median depth / "
        "focal length); 0 keeps the coarse scene's positions.",
        not_in_keys=VIEWS_APART,
    )
    seed: int = param(SEED, "Random seed; part of every cache key.", not_in_keys=KEYED_APART)
    render_backend: str = param("auto", "auto, gsplat or torch.", not_in_keys=KEYED_APART)

    def validate(self) -> None:
        check_finite(self)
        require(self.views >= 1, f"--views must be at least 1, got {self.views}")
        require(self.lr_means >= 0, f"--lr-means must be 0 or more, got {self.lr_means:g}")
        require(self.total_steps >= 1, f"--total-steps must be at least 1, got {self.total_steps}")
        require(
            1 <= self.steps <= self.total_steps,
            f"--steps must be between 1 and --total-steps ({self.total_steps}), got {self.steps}",
        )
        require(self.gs_iters is None or self.gs_iters >= 0, f"--gs-iters must be 0 or more, got {self.gs_iters}")
        require(0.0 <= self.rect_weight <= 1.0, f"--rect-weight must be between 0 and 1, got {self.rect_weight:g}")
        check_choice(self.rescale, RESCALES, "--rescale")
        check_choice(self.render_backend, RENDER_BACKENDS, "--render-backend")
        require(self.margin >= 0, f"--margin must be 0 or more, got {self.margin}")
        require(self.candidate_stride >= 1, f"the candidate stride must be at least 1, got {self.candidate_stride}")
        require(0.0 < self.select_scale <= 1.0, f"the selection scale must be in (0, 1], got {self.select_scale}")
        require(self.guidance >= 0, f"--guidance must be 0 or more, got {self.guidance:g}")
        require(self.depth_weight >= 0, f"--depth-weight must be 0 or more, got {self.depth_weight:g}")
        require(self.alpha_weight >= 0, f"--alpha-weight must be 0 or more, got {self.alpha_weight:g}")

    def resolved(self, device: str) -> FineParams:
        """These parameters with the scene-fit iterations decided for `device` (what the cache keys hold)."""
        if self.gs_iters is not None:
            return self
        return replace(self, gs_iters=FINE_GS_ITERS["gpu" if str(device).startswith("cuda") else "cpu"])

    def key_params(self) -> dict:
        """The parameters that change the MCS loop's result, for its cache key (seed and backend are keyed apart)."""
        return key_params(self, "fine")


@dataclass
class VideoParams:
    """`vd export --format video`: the fly-through."""

    traj: str = param("spiral", "video: spiral, wobble, rot, or a trajectory file (JSON poses or COLMAP images.txt).")
    frames: int = param(60, "video: number of frames.")
    fps: float = param(20.0, "video: frames per second.")
    side_by_side_depth: bool = param(False, "video: RGB and colour-mapped depth side by side.")

    def validate(self) -> None:
        check_finite(self)
        require(self.frames >= 1, f"--frames must be at least 1, got {self.frames}")
        require(self.fps > 0, f"--fps must be positive, got {self.fps:g}")


@dataclass
class ExportParams:
    """`vd export` options with defaults of their own."""

    spz_version: int = param(
        3,
        "spz: format version, 2 or 3 (3: smallest-three rotations, read by Niantic's library, "
        "Spark, Babylon.js, three.js and splat-transform; 2 for older readers).",
    )

    def validate(self) -> None:
        require(
            self.spz_version in SPZ_VERSIONS,
            f"--spz-version must be one of {', '.join(map(str, SPZ_VERSIONS))}, got {self.spz_version}",
        )


# ------------------------------------------------------------------------------ vd refine
REFINE_FORBIDDEN = ("thin", "thick")  # a thinness/thickness regulariser is an explicit non-goal of vd refine


@dataclass
class RefineParams:
    """`vd refine`: RGB plus depth- and normal-prior supervision (`vd.stages.refine`). A config
    file (JSON or TOML) may set any field; an option given on the command line wins."""

    iters: int = param(300, "Optimisation steps.")
    depth_weight: float = param(0.5, "Weight of the depth loss (Huber of the residual to the aligned prior).")
    normal_weight: float = param(0.1, "Weight of the normal loss, 1 - |n_render . n_prior|.")
    alpha_weight: float = param(
        3.0,
        "Weight of the coverage term: how far each pixel's alpha falls below 0.99, averaged (a photo has no "
        "see-through pixels: no pinholes; 0 = off).",
    )
    densify: bool = param(False, "Split high-gradient and prune transparent Gaussians.")
    hold_anchored: bool = param(
        True,
        "The Gaussians the anchor views (the photo, the ring) see train on those views only; the added "
        "views train the rest.",
    )
    seal: bool = param(
        True,
        "After the fit, seal the pinholes a small move opens, out of the photo's sight (as vd coarse ends; "
        "needs the dataset's input view).",
    )
    ssim_lambda: float = param(0.2, "RGB loss = L1 + ssim_lambda * (1 - SSIM), as vd's other stages.")
    huber_delta: float = param(0.01, "Relative depth residual where the depth loss turns linear.")
    lr_means: float = param(
        0.02, "Learning rate of the positions, in pixels at the median depth (times median depth / focal length)."
    )
    lr_scales: float = param(5e-3, "Learning rate of the log-scales.")
    lr_quats: float = param(1e-3, "Learning rate of the rotations (quaternions).")
    lr_opacity: float = param(2.5e-2, "Learning rate of the opacity logits.")
    lr_sh: float = param(2.5e-3, "Learning rate of the colours (SH coefficients).")
    densify_every: int = param(100, "Iterations between two densification steps.")
    densify_from: int = param(100, "First iteration that may densify.")
    densify_until: float = param(0.6, "Last iteration that may densify, as a fraction of the iterations.")
    densify_fraction: float = param(0.02, "Share of the Gaussians split at each densification step.")
    prune_opacity: float = param(0.005, "Densification removes the Gaussians less opaque than this.")
    min_alpha: float = param(0.5, "Rendered alpha above which the rendered depth counts as a surface.")
    backend: str = param("auto", "Renderer: auto, gsplat or torch.", not_in_keys=KEYED_APART, option="--render-backend")
    seed: int = param(SEED, "Random seed; part of the cache key.", not_in_keys=KEYED_APART)

    @classmethod
    def check_mapping(cls, cfg, where: str = "config") -> dict:
        """The fields a mapping (a config file's) sets, type-checked: UsageError on a
        thinness/thickness key (anywhere in it), an unknown key or a value of the wrong type."""
        require(isinstance(cfg, dict), f"{where} must hold a table/object of refine parameters")
        bad = _forbidden_keys(cfg)
        require(
            not bad,
            f"{where} asks for {', '.join(bad)}: thinness/thickness regularisers are an explicit "
            "non-goal of vd refine (it supervises depth and normals only); remove these keys",
        )
        types = {f.name: type(f.default) for f in fields(cls)}
        unknown = [k for k in cfg if k not in types]
        require(not unknown, f"{where} has unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(types)}")
        out = {}
        for k, v in cfg.items():
            t = types[k]
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            require(
                isinstance(v, t) and not (t is int and isinstance(v, bool)),
                f"{where}: {k} must be a {t.__name__}, got {v!r}",
            )
            out[k] = v
        return out

    @classmethod
    def resolve(cls, config: Optional[dict] = None, **options) -> RefineParams:
        """The defaults, then a config mapping, then the options given (None: not given); validated."""
        values = cls.check_mapping(dict(config or {}), "the refine config")
        values.update(cls.check_mapping(given(**options), "the refine options"))
        p = cls(**values)
        p.validate()
        return p

    def validate(self) -> None:
        require(self.iters >= 0, f"--iters must be >= 0, got {self.iters}")
        for name in ("depth_weight", "normal_weight", "alpha_weight"):
            v = getattr(self, name)
            require(math.isfinite(v) and v >= 0, f"{option_name(name)} must be a finite number >= 0, got {v}")
        check_finite(self)
        require(self.huber_delta > 0, f"--huber-delta must be > 0, got {self.huber_delta:g}")
        require(self.ssim_lambda >= 0, f"--ssim-lambda must be 0 or more, got {self.ssim_lambda:g}")
        for name in ("lr_means", "lr_scales", "lr_quats", "lr_opacity", "lr_sh"):
            require(getattr(self, name) >= 0, f"{option_name(name)} must be 0 or more, got {getattr(self, name):g}")
        require(self.densify_every >= 1, f"--densify-every must be at least 1, got {self.densify_every}")
        require(self.densify_from >= 0, f"--densify-from must be 0 or more, got {self.densify_from}")
        for name in ("densify_until", "densify_fraction", "prune_opacity", "min_alpha"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"{option_name(name)} must be between 0 and 1, got {v:g}")
        check_choice(self.backend, RENDER_BACKENDS, "--render-backend")

    def key_params(self) -> dict:
        """The parameters that change the result, for the cache key: every field but those keyed apart."""
        return key_params(self, "refine")


def _forbidden_keys(obj, prefix: str = "") -> list[str]:
    """The keys (dotted paths) of a nested mapping that ask for a thinness/thickness regulariser."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}{k}"
            if any(word in str(k).lower() for word in REFINE_FORBIDDEN):
                found.append(name)
            found += _forbidden_keys(v, name + ".")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _forbidden_keys(v, f"{prefix}{i}.")
    return found


__all__ = [
    "SEED",
    "SPZ_VERSIONS",
    "ExportParams",
    "MAX_RESOLUTION",
    "TRAJECTORIES",
    "FALLBACKS",
    "RESCALES",
    "RENDER_BACKENDS",
    "CoarseParams",
    "FineParams",
    "FluxParams",
    "GIB",
    "OFFLOAD_MODES",
    "OFFLOAD_CHOICES",
    "VideoParams",
    "check_choice",
    "check_device",
    "check_finite",
    "check_intrinsics",
    "check_max_resolution",
    "given",
    "option_name",
    "require",
    "RefineParams",
    "KEYED_APART",
    "CPU_ITERS",
    "FINE_GS_ITERS",
    "GPU_ITERS",
    "LOOP_ONLY",
    "OFFLOAD_HELP",
    "RunOptions",
    "VIEWS_APART",
    "VRAM_BUDGET_HELP",
    "help_of",
    "key_params",
    "option_of",
    "param",
]
