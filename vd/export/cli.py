"""The bodies of `vd export` and `vd refine` (the Typer functions in commands/ stay thin)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from vd.errors import InputError, UsageError, VdError


class DatasetInvalid(VdError):
    """The refine dataset failed validation (the problems were listed on stderr)."""


def check_dataset_or_fail(path: Path) -> None:
    """Validate; on failure list every problem on stderr and raise with one summary sentence."""
    from vd import console
    from vd.export.validate import summary_sentence, validate_dataset

    problems = validate_dataset(path)
    if problems:
        for p in problems:
            console.err.print(f"  - {p}", markup=False, highlight=False)
        raise DatasetInvalid(summary_sentence(path, problems))


def _check_output_file(out: Path, force: bool) -> None:
    if out.exists():
        if out.is_dir():
            raise UsageError(f"the output {out} is a folder; give a file name")
        if not force:
            raise UsageError(f"the output {out} already exists; pass --force to replace it")


def _input_view(views):
    for v in views:
        if v.kind == "input":
            return v
    return views[0]


def _radius_from_points(means: np.ndarray) -> float:
    ok = np.isfinite(means).all(1) & (means[:, 2] > 0)
    pts = means[ok] if ok.sum() >= 3 else means[np.isfinite(means).all(1)]
    if len(pts) < 3:
        return 1.0
    r = float(np.mean(np.percentile(pts, 50, axis=0) - np.percentile(pts, 5, axis=0)))
    return r if np.isfinite(r) and r > 0 else 1.0


def run_export(*, source: Optional[Path], fmt: str, out: Optional[Path], stage: Optional[str], sh_degree: Optional[int],
               up: str, traj: str, frames: int, fps: float, side_by_side_depth: bool, force: bool,
               validate: Optional[Path], device: Optional[str], as_json: bool) -> None:
    from vd import console
    from vd.export import FORMATS, GAUSSIAN_FORMATS, export_gaussians
    from vd.export.transform import up_rotation

    if validate is not None:
        if source is not None or out is not None:
            raise UsageError("--validate DIR takes no SOURCE or --out; run it on its own")
        check_dataset_or_fail(validate)
        import json

        n = len(json.loads((validate / "meta.json").read_text())["views"])
        if as_json:
            console.out_json({"dataset": str(validate), "valid": True, "views": n})
        else:
            console.out(f"{validate}: valid refine dataset ({n} views)")
        return
    if source is None:
        raise UsageError("missing SOURCE: give a PLY/.splat file, a vd output folder or a processed image (or use --validate DIR)")
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None:
        raise UsageError("missing --out/-o: where to write the export")
    up_rotation(up)
    if fmt in ("colmap", "video") and up != "-y":
        raise UsageError(f"--up applies to ply, compressed-ply and splat; the {fmt} export keeps vd's world frame")
    if fmt in ("colmap", "video") and sh_degree is not None:
        raise UsageError(f"--sh-degree applies to ply and compressed-ply, not to {fmt}")
    if sh_degree is not None and not 0 <= sh_degree <= 3:
        raise UsageError(f"--sh-degree must be 0, 1, 2 or 3, got {sh_degree}")
    if fmt != "video" and (traj != "spiral" or frames != 60 or side_by_side_depth or fps != 20.0):
        raise UsageError("--traj, --frames, --fps and --side-by-side-depth apply to --format video only")

    from vd.export.source import resolve_source

    src = resolve_source(source, stage)
    if fmt in GAUSSIAN_FORMATS:
        _check_output_file(out, force)
        g = src.gaussians()
        comments = {"source": str(src.path), "stage": src.stage} if src.stage else {"source": str(src.path)}
        rep = export_gaussians(g, out, fmt, up=up, sh_degree=sh_degree, comments=comments)
        rep["source"] = str(src.path)
        rep["stage"] = src.stage
        _report_drops(rep)
        _emit(rep, out, as_json)
        return
    if fmt == "colmap":
        from vd.export.colmap import check_target, points_from_gaussians, write_colmap_dataset

        check_target(out, force)
        views = src.views()
        g = src.gaussians()
        points = points_from_gaussians(g)
        prov = dict(src.provenance)
        prov["points_source"] = "gaussians"
        with console.status("export: writing the COLMAP dataset"):
            rep = write_colmap_dataset(out, views, points=points, provenance=prov, force=force)
        d = {"format": "colmap", **rep.to_dict(), "source": str(src.path), "stage": src.stage}
        _emit(d, out, as_json)
        return
    # video
    from vd.export.video import export_video
    from vd.paths import default_device

    _check_output_file(out, force)
    g = src.gaussians()
    if src.has_views:
        from vd.cameras import scene_radius

        v = _input_view(src.views())
        K, H, W = np.asarray(v.K, np.float64), v.rgb.shape[0], v.rgb.shape[1]
        try:
            radius = scene_radius(v.depth, K, v.mask)
        except InputError:
            radius = _radius_from_points(g.means.detach().cpu().numpy())
    else:
        W, H = 512, 384
        f = 0.5 * W / np.tan(np.deg2rad(60.0) / 2)
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
        radius = _radius_from_points(g.means.detach().cpu().numpy())
        console.info(f"video: {src.path} has no cameras; using a 60° field of view at {W}x{H} from the world origin")
    prog = console.progress()
    with prog:
        rep = export_video(g, out, K=K, width=W, height=H, traj=traj, frames=frames, fps=fps, radius=radius,
                           side_by_side_depth=side_by_side_depth, device=device or default_device(), progress=prog)
    d = {"format": "video", **rep.to_dict(), "source": str(src.path), "stage": src.stage}
    _emit(d, out, as_json)


def _report_drops(rep: dict) -> None:
    from vd import console

    if rep.get("dropped_nonfinite") or rep.get("dropped_transparent"):
        console.info(f"export: dropped {rep['dropped_nonfinite']} non-finite and {rep['dropped_transparent']} "
                     f"transparent (alpha < 1/255) Gaussians; wrote {rep['written']}")


def _emit(rep: dict, out: Path, as_json: bool) -> None:
    from vd import console

    if as_json:
        console.out_json(rep)
    else:
        console.out(str(out))


def run_refine_command(*, dataset: Path, init: Path, out: Path, iters, depth_weight, normal_weight, densify, config,
                       device, seed, as_json: bool) -> None:
    from vd import console
    from vd.stages.refine import load_config, refine

    if config is not None:
        load_config(config)  # usage errors (forbidden/unknown keys) before anything heavy
    check_dataset_or_fail(dataset)
    prog = console.progress()
    with prog:
        res = refine(dataset, init, out, iters=iters, depth_weight=depth_weight, normal_weight=normal_weight,
                     densify=densify, config=config, device=device, seed=seed, progress=prog)
    m = res.meta.get("metrics", {})
    b, a = m.get("before", {}), m.get("after", {})

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    console.info(
        f"refine{' (cached)' if res.cached else ''}: {res.meta.get('gaussians', {}).get('final')} Gaussians; "
        f"depth AbsRel {f(b.get('depth_abs_rel'), '.4f')} -> {f(a.get('depth_abs_rel'), '.4f')}, "
        f"normal error {f(b.get('normal_deg'), '.2f')}° -> {f(a.get('normal_deg'), '.2f')}°, "
        f"PSNR {f(b.get('psnr'), '.2f')} -> {f(a.get('psnr'), '.2f')} dB"
    )
    if as_json:
        console.out_json(res.to_dict())
    else:
        console.out(str(res.ply), str(res.meta_path))


__all__ = ["run_export", "run_refine_command", "check_dataset_or_fail", "DatasetInvalid"]
