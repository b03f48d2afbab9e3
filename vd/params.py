"""Stage parameters: every default declared once, every value checked in one place.

The CLI reads the defaults from here for `--help` (its options default to None, meaning "the
default below"), and every stage validates its parameters here before any work starts. A bad
value is a `UsageError` (exit 2) whose one sentence names the option.

Standard library only: the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Optional

from vd.errors import UsageError

SEED = 0
MAX_RESOLUTION = 512
TRAJECTORIES = ("spiral", "wobble", "rot")
FALLBACKS = ("none", "closest")
RESCALES = ("shrink", "match", "none")
RENDER_BACKENDS = ("auto", "gsplat", "torch")
SPZ_VERSIONS = (2, 3)  # written by vd; 3 (smallest-three rotations) is what Niantic's library writes and current readers take
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def option_name(field: str) -> str:
    """The CLI option of a parameter: n_frames -> --n-frames."""
    return "--" + field.replace("_", "-")


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
    require(device is None or bool(_DEVICE.match(str(device))),
            f"{option} must be cpu, cuda, cuda:N or mps, got {device!r}")


def check_intrinsics(focal: Optional[float] = None, fov: Optional[float] = None) -> None:
    """A focal length in pixels (> 0), a horizontal field of view in degrees (0.5 to 179.5), not both."""
    require(focal is None or fov is None, "give either --focal or --fov, not both")
    if focal is not None:
        require(math.isfinite(focal) and focal > 0, f"--focal must be a positive number of pixels, got {focal:g}")
    if fov is not None:
        require(math.isfinite(fov) and 0.5 < fov < 179.5,
                f"--fov must be a horizontal field of view in degrees between 0.5 and 179.5, got {fov:g}")


def check_max_resolution(n: int) -> None:
    require(n >= 16, f"--max-resolution must be at least 16 pixels, got {n}")


def given(**options) -> dict:
    """The options a user gave (those not None), e.g. to build a parameter dataclass from a CLI call."""
    return {k: v for k, v in options.items() if v is not None}


GIB = 2**30
OFFLOAD_MODES = ("none", "model", "sequential")
OFFLOAD_CHOICES = ("auto", *OFFLOAD_MODES)  # auto: decided from the free VRAM when the model loads (vd.models.offload)


@dataclass
class FluxParams:
    """FLUX.1-Fill-dev sampling and its GPU memory (`vd coarse`, `vd fine`)."""

    offload: str = "auto"  # auto, none (fastest), model (modules moved to the GPU while used), sequential (least VRAM)
    vram_budget: Optional[float] = None  # GiB vd may plan for (None: the free memory)
    inpaint_steps: int = 25
    guidance: float = 30.0

    def validate(self) -> None:
        check_finite(self)
        check_choice(self.offload, OFFLOAD_CHOICES, "--offload")
        b = self.vram_budget
        require(b is None or (math.isfinite(b) and b > 0), f"--vram-budget must be a positive number of GiB, got {b}")
        require(self.inpaint_steps >= 1, f"--inpaint-steps must be at least 1, got {self.inpaint_steps}")
        require(self.guidance >= 0, f"--guidance must be 0 or more, got {self.guidance:g}")

    @property
    def budget_bytes(self) -> Optional[int]:
        return None if self.vram_budget is None else int(self.vram_budget * GIB)

    def backend_options(self) -> dict:
        """Keyword arguments of `vd.models.choose.get_inpaint_backend`."""
        return {"offload": self.offload, "steps": self.inpaint_steps, "guidance": self.guidance,
                "vram_budget": self.budget_bytes}


@dataclass
class CoarseParams:
    """`vd coarse`: frame selection, trajectory, scaffold and optimisation."""

    n_frames: int = 10
    dense_multiplier: int = 10
    margin: int = 32
    min_ratio: float = 0.05
    max_ratio: float = 0.25
    adjacent_exclusion: int = 1
    fallback: str = "none"
    traj: str = "spiral"
    trajectory_file: Optional[str] = None
    forward_ratio: float = 0.3
    backward_ratio: float = 0.4
    radius_percentiles: tuple = (5.0, 50.0)
    expansion: float = 0.3
    outpaint: bool = True
    init_iters: Optional[int] = None  # None: 100 on CUDA (upstream), 30 on CPU
    view_iters: Optional[int] = None  # None: 500 on CUDA (upstream), 60 on CPU
    scan_scale: Optional[float] = None  # None: 1/4, at least 64 px on the long side (vd.holes)
    refine_tolerance: float = 0.03  # error bound of the fast hole scan (max 0.022 measured); closer calls are exact
    edge_times: float = 0.05
    depth_weight: float = 1.0  # weight of the relative depth error in the optimisation (0: photometric only)

    def validate(self) -> None:
        check_finite(self)
        require(self.n_frames >= 2, f"--n-frames must be at least 2 (input + ring), got {self.n_frames}")
        require(self.dense_multiplier >= 1, f"--dense-multiplier must be at least 1, got {self.dense_multiplier}")
        require(self.margin >= 0 and self.margin % 2 == 0, f"--margin must be an even number of pixels >= 0, got {self.margin}")
        require(0.0 <= self.min_ratio <= self.max_ratio <= 1.0,
                f"--min-ratio/--max-ratio must satisfy 0 <= min <= max <= 1, got {self.min_ratio:g} {self.max_ratio:g}")
        require(self.adjacent_exclusion >= 0, f"--adjacent-exclusion must be 0 or more, got {self.adjacent_exclusion}")
        check_choice(self.fallback, FALLBACKS, "--fallback")
        check_choice(self.traj, TRAJECTORIES, "--traj")
        require(self.forward_ratio >= 0, f"--forward-ratio must be 0 or more, got {self.forward_ratio:g}")
        require(self.backward_ratio >= 0, f"--backward-ratio must be 0 or more, got {self.backward_ratio:g}")
        require(0.0 <= self.expansion <= 2.0, f"--expansion is a total fraction between 0 and 2, got {self.expansion:g}")
        require(self.init_iters is None or self.init_iters >= 0, f"--init-iters must be 0 or more, got {self.init_iters}")
        require(self.view_iters is None or self.view_iters >= 0, f"--view-iters must be 0 or more, got {self.view_iters}")
        require(self.scan_scale is None or 0.0 < self.scan_scale <= 1.0, f"the scan scale must be in (0, 1], got {self.scan_scale}")
        require(self.refine_tolerance >= 0, f"the refine tolerance must be 0 or more, got {self.refine_tolerance}")
        require(self.edge_times > 0, f"the depth-edge threshold must be positive, got {self.edge_times}")
        require(self.depth_weight >= 0, f"--depth-weight must be 0 or more, got {self.depth_weight:g}")
        lo_hi = tuple(self.radius_percentiles)
        require(len(lo_hi) == 2 and 0 <= lo_hi[0] < lo_hi[1] <= 100,
                f"--radius-percentiles must be LOW HIGH with 0 <= LOW < HIGH <= 100, got {lo_hi}")


@dataclass
class FineParams:
    """`vd fine`: multi-view consistency sampling."""

    views: int = 8
    steps: int = 9
    total_steps: int = 25
    gs_iters: int = 192
    rect_weight: float = 0.5
    margin: int = 16  # pixels per side (rounded up so both sides are multiples of 16)
    candidate_stride: int = 3  # every 3rd dense pose (upstream 2026)
    select_scale: float = 0.25  # resolution of the hole-ratio renders used to pick views
    guidance: float = FluxParams.guidance
    rescale: str = "shrink"  # vd.mcs: shrink (never lengthen v~), match (as the paper writes it) or none
    depth_weight: float = 1.0  # weight of the anchors' relative depth error in each fit (0: photometric only)
    seed: int = SEED
    render_backend: str = "auto"

    def validate(self) -> None:
        check_finite(self)
        require(self.views >= 1, f"--views must be at least 1, got {self.views}")
        require(self.total_steps >= 1, f"--total-steps must be at least 1, got {self.total_steps}")
        require(1 <= self.steps <= self.total_steps,
                f"--steps must be between 1 and --total-steps ({self.total_steps}), got {self.steps}")
        require(self.gs_iters >= 0, f"--gs-iters must be 0 or more, got {self.gs_iters}")
        require(0.0 <= self.rect_weight <= 1.0, f"--rect-weight must be between 0 and 1, got {self.rect_weight:g}")
        check_choice(self.rescale, RESCALES, "--rescale")
        check_choice(self.render_backend, RENDER_BACKENDS, "--render-backend")
        require(self.margin >= 0, f"--margin must be 0 or more, got {self.margin}")
        require(self.candidate_stride >= 1, f"the candidate stride must be at least 1, got {self.candidate_stride}")
        require(0.0 < self.select_scale <= 1.0, f"the selection scale must be in (0, 1], got {self.select_scale}")
        require(self.guidance >= 0, f"--guidance must be 0 or more, got {self.guidance:g}")
        require(self.depth_weight >= 0, f"--depth-weight must be 0 or more, got {self.depth_weight:g}")

    def key_params(self) -> dict:
        """The parameters that change the result, for the cache key (seed and backend are keyed apart)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seed", "render_backend")}


@dataclass
class VideoParams:
    """`vd export --format video`: the fly-through."""

    traj: str = "spiral"  # or a trajectory file
    frames: int = 60
    fps: float = 20.0
    side_by_side_depth: bool = False

    def validate(self) -> None:
        check_finite(self)
        require(self.frames >= 1, f"--frames must be at least 1, got {self.frames}")
        require(self.fps > 0, f"--fps must be positive, got {self.fps:g}")


@dataclass
class ExportParams:
    """`vd export` options with defaults of their own."""

    spz_version: int = 3

    def validate(self) -> None:
        require(self.spz_version in SPZ_VERSIONS,
                f"--spz-version must be one of {', '.join(map(str, SPZ_VERSIONS))}, got {self.spz_version}")


# ------------------------------------------------------------------------------ vd refine
REFINE_FORBIDDEN = ("thin", "thick")  # a thinness/thickness regulariser is an explicit non-goal of vd refine


def _refine(default, help: str, *, keyed_apart: bool = False, option: Optional[str] = None):
    """A RefineParams field: its default and --help text, declared once; `option` when it is not
    `option_name(field)`. `keyed_apart`: the cache key holds it outside the parameters (the seed,
    the resolved renderer)."""
    meta = {"help": help, "not_in_keys": ("*",) if keyed_apart else ()}
    if option is not None:
        meta["option"] = option
    return field(default=default, metadata=meta)


@dataclass
class RefineParams:
    """`vd refine`: RGB plus depth- and normal-prior supervision (`vd.stages.refine`). A config
    file (JSON or TOML) may set any field; an option given on the command line wins."""

    iters: int = _refine(300, "Optimisation steps.")
    depth_weight: float = _refine(0.5, "Weight of the depth loss (Huber of the residual to the aligned prior).")
    normal_weight: float = _refine(0.1, "Weight of the normal loss, 1 - |n_render . n_prior|.")
    densify: bool = _refine(False, "Split high-gradient and prune transparent Gaussians.")
    ssim_lambda: float = _refine(0.2, "RGB loss = L1 + ssim_lambda * (1 - SSIM), as vd's other stages.")
    huber_delta: float = _refine(0.01, "Relative depth residual where the depth loss turns linear.")
    lr_means: float = _refine(5e-4, "Learning rate of the positions, times the scene extent (median prior depth).")
    lr_scales: float = _refine(5e-3, "Learning rate of the log-scales.")
    lr_quats: float = _refine(1e-3, "Learning rate of the rotations (quaternions).")
    lr_opacity: float = _refine(2.5e-2, "Learning rate of the opacity logits.")
    lr_sh: float = _refine(2.5e-3, "Learning rate of the colours (SH coefficients).")
    densify_every: int = _refine(100, "Iterations between two densification steps.")
    densify_from: int = _refine(100, "First iteration that may densify.")
    densify_until: float = _refine(0.6, "Last iteration that may densify, as a fraction of the iterations.")
    densify_fraction: float = _refine(0.02, "Share of the Gaussians split at each densification step.")
    prune_opacity: float = _refine(0.005, "Densification removes the Gaussians less opaque than this.")
    min_alpha: float = _refine(0.5, "Rendered alpha above which the rendered depth counts as a surface.")
    backend: str = _refine("auto", "Renderer: auto, gsplat or torch.", keyed_apart=True, option="--render-backend")
    seed: int = _refine(SEED, "Random seed; part of the cache key.", keyed_apart=True)

    @classmethod
    def check_mapping(cls, cfg, where: str = "config") -> dict:
        """The fields a mapping (a config file's) sets, type-checked: UsageError on a
        thinness/thickness key (anywhere in it), an unknown key or a value of the wrong type."""
        require(isinstance(cfg, dict), f"{where} must hold a table/object of refine parameters")
        bad = _forbidden_keys(cfg)
        require(not bad, f"{where} asks for {', '.join(bad)}: thinness/thickness regularisers are an explicit "
                         "non-goal of vd refine (it supervises depth and normals only); remove these keys")
        types = {f.name: type(f.default) for f in fields(cls)}
        unknown = [k for k in cfg if k not in types]
        require(not unknown, f"{where} has unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(types)}")
        out = {}
        for k, v in cfg.items():
            t = types[k]
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            require(isinstance(v, t) and not (t is int and isinstance(v, bool)),
                    f"{where}: {k} must be a {t.__name__}, got {v!r}")
            out[k] = v
        return out

    @classmethod
    def resolve(cls, config: Optional[dict] = None, **options) -> "RefineParams":
        """The defaults, then a config mapping, then the options given (None: not given); validated."""
        values = cls.check_mapping(dict(config or {}), "the refine config")
        values.update(cls.check_mapping(given(**options), "the refine options"))
        p = cls(**values)
        p.validate()
        return p

    def validate(self) -> None:
        require(self.iters >= 0, f"--iters must be >= 0, got {self.iters}")
        for name in ("depth_weight", "normal_weight"):
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
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("not_in_keys")}


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


__all__ = ["SEED", "SPZ_VERSIONS", "ExportParams", "MAX_RESOLUTION", "TRAJECTORIES", "FALLBACKS", "RESCALES", "RENDER_BACKENDS", "CoarseParams", "FineParams", "FluxParams", "GIB", "OFFLOAD_MODES", "OFFLOAD_CHOICES",
           "VideoParams", "check_choice", "check_device", "check_finite", "check_intrinsics", "check_max_resolution", "given",
           "option_name", "require"]
