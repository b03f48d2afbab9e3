"""Stage parameters: every default declared once, every value checked in one place.

The CLI reads the defaults from here for `--help` (its options default to None, meaning "the
default below"), and every stage validates its parameters here before any work starts. A bad
value is a `UsageError` (exit 2) whose one sentence names the option.

Standard library only: the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
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


FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


def check_intrinsics(focal: Optional[float] = None, fov: Optional[float] = None) -> None:
    """A focal length in pixels (> 0), a horizontal field of view in degrees (0.5 to 179.5), not both."""
    require(focal is None or fov is None, "give either --focal or --fov, not both")
    if focal is not None:
        require(math.isfinite(focal) and focal > 0, f"--focal must be a positive number of pixels, got {focal:g}")
        # intrinsics are float32: beyond its range (or below its smallest normal) a focal becomes inf or 0
        require(FLOAT32_TINY <= focal <= FLOAT32_MAX, f"--focal must be between {FLOAT32_TINY:g} and {FLOAT32_MAX:g} "
                f"pixels (a float32), got {focal:g}")
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


__all__ = ["SEED", "SPZ_VERSIONS", "ExportParams", "MAX_RESOLUTION", "TRAJECTORIES", "FALLBACKS", "RESCALES", "RENDER_BACKENDS", "CoarseParams", "FineParams", "FluxParams", "GIB", "OFFLOAD_MODES", "OFFLOAD_CHOICES",
           "VideoParams", "check_choice", "check_device", "check_finite", "check_intrinsics", "check_max_resolution", "given",
           "option_name", "require"]
