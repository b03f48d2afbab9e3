"""`vd batch`: many images, one task each, on Ray or one after another in this process.

    jobs = plan_jobs(collect_inputs(["photos/", "more/*.jpg"]), out=Path("vd-batch"), options={...})
    summary = run_batch(jobs, BatchSpec(stages=("coarse",), exports=("ply",)), executor="ray")

Every stage goes through the shared cache, so a re-run is all cache hits and a killed batch
resumes where its tasks stopped (the coarse stage resumes view by view). Each finished image
appends one JSON line to `<out>/results.jsonl`. Ray is imported only by the ray executor.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from vd.errors import InputError, UsageError, VdError
from vd.install import pip_install
from vd.params import CoarseParams, FineParams, FluxParams, RunOptions

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
STAGE_CHOICES = {
    "depth": ("depth",),
    "coarse": ("coarse",),
    "coarse,fine": ("coarse", "fine"),
    "fine": ("coarse", "fine"),
}
EXPORT_FILES = {
    "ply": "scene.ply",
    "compressed-ply": "scene.compressed.ply",
    "splat": "scene.splat",
    "spz": "scene.spz",
    "sog": "scene.sog",
    "html": "scene.html",
    "colmap": "colmap",
    "video": "scene.mp4",
}
RESULTS = "results.jsonl"
NOT_IN_BATCH = {"fetch"}  # workers never download weights (several at once would race): run `vd fetch` first
# options a batch forwards to the stages (names as in the commands, with _ for -), with their defaults
RUN_OPTIONS = {
    **{f.name: f.default for f in fields(RunOptions) if f.name not in NOT_IN_BATCH},
    **{f.name: f.default for f in fields(FluxParams)},
}


# ------------------------------------------------------------------------------ inputs
def _looks_like_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_list(lines: Iterable[str], base: Path) -> list[Path]:
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else base / p)
    return out


def collect_inputs(items: Sequence[str], stdin=None) -> list[Path]:
    """Images from files, folders (their images, recursively), globs, text files of paths
    (one a line, relative to the list), and `-` (paths on stdin); duplicates once, in order."""
    found: list[Path] = []
    for item in items:
        if item == "-":
            found += _read_list((stdin or sys.stdin).read().splitlines(), Path.cwd())
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found += _images_in(p)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found += _read_list(p.read_text().splitlines(), p.parent)
        elif p.is_file():
            found.append(p)
        elif _looks_like_glob(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            images = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise InputError(f"no images match {item}")
            found += images
        else:
            raise InputError(f"input not found: {item}")
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise InputError(
            f"input not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    out = list(unique.values())
    if not out:
        raise InputError("no input images: give files, folders, globs, a list file or - for stdin")
    return out


def load_batch_file(path: Path) -> tuple[dict, dict[Path, dict]]:
    """(defaults, {image: overrides}) from a JSON or TOML batch file:

    {"defaults": {"n_frames": 8}, "images": [{"image": "a.jpg", "seed": 3}, ...]}
    [defaults] / [[images]] in TOML. Image paths are relative to the file.
    """
    try:
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            import tomllib

            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except OSError as e:
        raise InputError(f"cannot read the batch file {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise InputError(
            f"the batch file {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {e}"
        ) from e
    if not isinstance(doc, dict):
        raise InputError(f"the batch file {path} must hold a table with `defaults` and/or `images`")
    defaults = dict(doc.get("defaults") or {})
    per_image: dict[Path, dict] = {}
    for row in doc.get("images") or []:
        if not isinstance(row, dict) or "image" not in row:
            raise InputError(f"every entry of `images` in {path} needs an `image` path")
        row = dict(row)
        image = Path(row.pop("image")).expanduser()
        per_image[image if image.is_absolute() else path.parent / image] = row
    return defaults, per_image


# ------------------------------------------------------------------------------ jobs
@dataclass
class BatchSpec:
    stages: tuple[str, ...] = ("coarse",)
    exports: tuple[str, ...] = ()
    retries: int = 1
    gpus_per_task: float | None = None  # None: 1 when CUDA is available, else 0


@dataclass
class Job:
    image: str
    out: str
    options: dict = field(default_factory=dict)


def parse_stages(text: str) -> tuple[str, ...]:
    key = ",".join(s.strip() for s in text.split(",") if s.strip())
    if key not in STAGE_CHOICES:
        raise UsageError(f"--stages must be depth, coarse or coarse,fine, got {text!r}")
    return STAGE_CHOICES[key]


def parse_exports(text: str | None, stages: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in EXPORT_FILES]
    if bad:
        raise UsageError(f"--export takes {', '.join(EXPORT_FILES)}; unknown: {', '.join(bad)}")
    if stages == ("depth",):
        raise UsageError("--export needs a scene: use --stages coarse or coarse,fine")
    return names


def _coarse_fields() -> set[str]:
    return {f.name for f in fields(CoarseParams)}


FINE_PREFIX = "fine_"  # -O fine_gs_iters=64: a FineParams field (views, steps, gs_iters, ...)


def _fine_fields() -> set[str]:
    return {f.name for f in fields(FineParams)} - {"seed", "render_backend"}


def check_options(options: dict, where: str) -> None:
    known = set(RUN_OPTIONS) | _coarse_fields() | {FINE_PREFIX + n for n in _fine_fields()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown option{'s' if len(unknown) > 1 else ''} in {where}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


def plan_jobs(images: Sequence[Path], out: Path, options: dict, per_image: dict[Path, dict] | None = None) -> list[Job]:
    """One job per image: its distinct output folder under `out` and its options (overrides win)."""
    from vd.outputs import distinct_names

    check_options(options, "the batch options")
    per_image = {p.resolve(): o for p, o in (per_image or {}).items()}
    jobs = []
    for img, name in zip(images, distinct_names(images), strict=False):
        dest = Path(out) / name
        extra = per_image.get(img.resolve(), {})
        check_options(extra, f"the batch file entry of {img}")
        jobs.append(Job(str(img.absolute()), str(dest.absolute()), {**options, **extra}))
        check_values({**options, **extra}, f"the options of {img}")
    return jobs


def check_values(options: dict, where: str) -> None:
    """UsageError (exit 2, before any task starts) for a value the stages would refuse: every image would fail;
    weights the licence policy (`licence`, else $VD_LICENCE) refuses are such a value."""
    from vd.models.choose import check_licence
    from vd.params import check_intrinsics, check_max_resolution

    opts = {**RUN_OPTIONS, **options}
    coarse = {k: v for k, v in options.items() if k in _coarse_fields()}
    fine = {k[len(FINE_PREFIX) :]: v for k, v in options.items() if k.startswith(FINE_PREFIX)}
    try:
        check_intrinsics(opts["focal"], opts["fov"])
        check_max_resolution(opts["max_resolution"])
        if "radius_percentiles" in coarse:
            coarse["radius_percentiles"] = tuple(coarse["radius_percentiles"])
        CoarseParams(**coarse).validate()
        FineParams(**fine).validate()
        FluxParams(**{f.name: opts[f.name] for f in fields(FluxParams)}).validate()
        check_licence(
            opts["depth_backend"], opts["inpaint_backend"], depth_model=opts["depth_model"], licence=opts["licence"]
        )
    except UsageError as e:
        raise UsageError(f"{e} (in {where})") from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"a value of the wrong type in {where}: {e}") from None


# ------------------------------------------------------------------------------ one task
def _peak_rss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _peak_vram() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())


def _run_options(opts: dict) -> RunOptions:
    return RunOptions(**{f.name: opts[f.name] for f in fields(RunOptions) if f.name in opts})


def _flux_params(opts: dict) -> FluxParams:
    return FluxParams(**{f.name: opts[f.name] for f in fields(FluxParams)})


def _run_stages(job: Job, spec: BatchSpec, timings: dict, outputs: dict) -> None:
    opts = {**RUN_OPTIONS, **job.options}
    image, dest = Path(job.image), Path(job.out)
    options = _run_options(opts)
    if spec.stages == ("depth",):
        from vd.stages.depth import depth_one

        t = time.perf_counter()
        row = depth_one(
            image,
            out=dest,
            backend=options.depth_backend,
            model=options.depth_model,
            licence=options.licence,
            focal=options.focal,
            fov=options.fov,
            max_resolution=options.max_resolution,
            device=options.device,
        )
        timings["depth"] = round(time.perf_counter() - t, 3)
        outputs.update(row["json"]["files"])
        return
    from vd.stages.coarse import run_coarse

    coarse_opts = {k: v for k, v in job.options.items() if k in _coarse_fields()}
    if "radius_percentiles" in coarse_opts:
        coarse_opts["radius_percentiles"] = tuple(coarse_opts["radius_percentiles"])
    t = time.perf_counter()
    res = run_coarse(image, CoarseParams(**coarse_opts), options, flux=_flux_params(opts), out=dest)
    timings["coarse"] = round(time.perf_counter() - t, 3)
    outputs["coarse"] = [str(p) for p in res.paths]
    if "fine" in spec.stages:
        _run_fine(image, dest, opts, options, timings, outputs)
    for fmt in spec.exports:
        _export(dest, fmt, opts, timings, outputs)


def _run_fine(image: Path, dest: Path, opts: dict, options: RunOptions, timings: dict, outputs: dict) -> None:
    from vd.stages.fine import prepare_fine

    fine_opts = {k[len(FINE_PREFIX) :]: v for k, v in opts.items() if k.startswith(FINE_PREFIX)}
    params = FineParams(render_backend=options.render_backend, seed=options.seed, **fine_opts)
    runner = prepare_fine(params, options, _flux_params(opts))
    t = time.perf_counter()
    result = runner.run(dest, dest / "fine", image=str(image))
    timings["fine"] = round(time.perf_counter() - t, 3)
    outputs["fine"] = [str(result.ply), str(result.summary_path)]


def _export(dest: Path, fmt: str, opts: dict, timings: dict, outputs: dict) -> None:
    from vd.export.source import resolve_source
    from vd.export.write import write_export
    from vd.paths import resolve_device

    target = dest / "export" / EXPORT_FILES[fmt]
    t = time.perf_counter()
    write_export(resolve_source(dest), fmt, target, force=True, device=resolve_device(opts["device"]))
    timings[f"export_{fmt}"] = round(time.perf_counter() - t, 3)
    outputs[f"export_{fmt}"] = str(target)


def run_job(job: Job, spec: BatchSpec) -> dict:
    """Run one image's stages in this process; never raises for the image's own failure.

    Returns the results row: image, out, status (ok | failed), error (one sentence), timings (s
    per stage), cache counters, peak RSS and VRAM (bytes), output paths, attempts and host.
    """
    import socket

    from vd.cache.store import stats

    before = stats()
    timings: dict = {}
    outputs: dict = {}
    row: dict[str, Any] = {"image": job.image, "out": job.out, "status": "ok", "error": None}
    t0 = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            _run_stages(job, spec, timings, outputs)
            break
        except VdError as e:  # the user's problem: retrying would not help
            row.update(status="failed", error=str(e), exit_code=e.exit_code)
            break
        except Exception as e:  # a crash inside a stage: retried, then reported in one line
            if attempts <= spec.retries:
                continue
            row.update(
                status="failed",
                error=f"unexpected {type(e).__name__}: {e}",
                exit_code=1,
                traceback=traceback.format_exc(limit=8),
            )
            break
    after = stats()
    row.update(
        timings={**timings, "total": round(time.perf_counter() - t0, 3)},
        cache={k: after[k] - before[k] for k in after},
        peak_rss=_peak_rss_bytes(),
        peak_vram=_peak_vram(),
        outputs=outputs,
        attempts=attempts,
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    return row


# ------------------------------------------------------------------------------ executors
class Reporter:
    """Appends each finished row to results.jsonl and drives the progress display."""

    def __init__(self, out: Path, total: int, progress=None):
        self.path = Path(out) / RESULTS
        self.rows: list[dict] = []
        self.total = total
        self.progress = progress
        self.task = progress.add_task(self._label(0), total=total) if progress is not None else None
        self.running = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def _label(self, running: int) -> str:
        failed = sum(r["status"] != "ok" for r in self.rows)
        return f"done {len(self.rows) - failed}  failed {failed}  running {running}"

    def set_running(self, n: int) -> None:
        self.running = n
        if self.progress is not None:
            self.progress.update(self.task, description=self._label(n))

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=self._label(self.running))


def run_serial(jobs: Sequence[Job], spec: BatchSpec, reporter: Reporter) -> None:
    for job in jobs:
        reporter.set_running(1)
        reporter.add(run_job(job, spec))
    reporter.set_running(0)


def _ray_task(job: dict, spec: dict) -> dict:
    return run_job(Job(**job), BatchSpec(**spec))


def _died(job: Job, error: Exception, retries: int) -> dict:
    return {
        "image": job.image,
        "out": job.out,
        "status": "failed",
        "exit_code": 1,
        "error": f"the worker running it died ({retries + 1} attempt{'s' if retries else ''}): {type(error).__name__}",
        "timings": {},
        "cache": {},
        "outputs": {},
        "attempts": retries + 1,
    }


def default_gpus_per_task() -> float:
    try:
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:
        return 0.0


def run_ray(
    jobs: Sequence[Job],
    spec: BatchSpec,
    reporter: Reporter,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    init_options: dict | None = None,
) -> None:
    """One Ray task per image; a task whose worker dies is retried `spec.retries` times by Ray."""
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            kwargs["address"] = address
            kwargs["runtime_env"] = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("VD_")}}
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        kwargs.update(init_options or {})
        ray.init(**kwargs)
        started = True
    try:
        gpus = spec.gpus_per_task if spec.gpus_per_task is not None else default_gpus_per_task()
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=spec.retries, retry_exceptions=False)(_ray_task)
        spec_dict = asdict(spec)
        pending = {task.remote(asdict(j), spec_dict): j for j in jobs}
        while pending:
            reporter.set_running(min(len(pending), _slots(ray, gpus)))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    reporter.add(ray.get(ref))
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError, ray.exceptions.RayError) as e:
                    reporter.add(_died(job, e, spec.retries))
        reporter.set_running(0)
    finally:
        if started:
            ray.shutdown()


def _slots(ray, gpus: float) -> int:
    res = ray.cluster_resources()
    slots = int(res.get("CPU", 1))
    if gpus:
        slots = min(slots, int(res.get("GPU", 0) / gpus))
    return max(slots, 1)


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run_batch(
    jobs: Sequence[Job],
    spec: BatchSpec,
    out: Path,
    *,
    executor: str | None = None,
    address: str | None = None,
    progress=None,
    ray_options: dict | None = None,
    num_cpus: int | None = None,
) -> list[dict]:
    """Run every job; return the result rows (also in `out`/results.jsonl)."""
    from vd.outputs import prepare

    executor = executor or ("ray" if ray_available() else "serial")
    if executor not in ("ray", "serial"):
        raise UsageError(f"--executor must be ray or serial, got {executor!r}")
    if executor == "ray" and not ray_available():
        raise UsageError(f"--executor ray needs Ray: {pip_install('cluster')}")
    prepare(Path(out))
    for job in jobs:
        prepare(Path(job.out))
    reporter = Reporter(Path(out), len(jobs), progress)
    if executor == "ray":
        run_ray(jobs, spec, reporter, address=address, num_cpus=num_cpus, init_options=ray_options)
    else:
        run_serial(jobs, spec, reporter)
    return reporter.rows


def failed(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r["status"] != "ok"]


def on_worker_start(hook: Callable[[], None]) -> dict:
    """Ray init options that run `hook` in every worker process as it starts (tests use it)."""
    return {"runtime_env": {"worker_process_setup_hook": hook}}
