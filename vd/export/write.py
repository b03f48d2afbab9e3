"""Writing a resolved SOURCE (`vd.export.source`) in one format: what `vd export` and `vd batch --export` run.

    report = write_export(source, "ply", Path("scene.ply"), force=True)    # a JSON-ready dict

Checks the target first (an existing file needs `force`; a COLMAP target folder must be empty or
forced), then writes atomically; the report names the format, the path, the counts kept and
dropped, the source and its stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from vd.cameras import scene_radius
from vd.errors import InputError, UsageError
from vd.export import GAUSSIAN_FORMATS, export_gaussians
from vd.export.colmap import check_target, points_from_gaussians, write_colmap_dataset
from vd.export.glb import write_glb
from vd.export.html import write_html
from vd.export.sog import write_sog
from vd.export.source import Source
from vd.export.video import export_video, fit_camera
from vd.params import ExportParams, VideoParams
from vd.views import find_input

log = logging.getLogger(__name__)

NO_CAMERA_FOV = 60.0  # degrees: the camera of a video of a source without cameras
NO_CAMERA_SIZE = (512, 384)


def write_export(
    src: Source,
    fmt: str,
    out: Path,
    *,
    up: str = "-y",
    sh_degree: Optional[int] = None,
    video: Optional[VideoParams] = None,
    export: Optional[ExportParams] = None,
    force: bool = False,
    device: str = "cpu",
    progress=None,
    size: Optional[tuple[int, int]] = None,
    faces: Optional[int] = None,
    collider: bool = False,
) -> dict:
    """Write `src` as `fmt` to `out`; returns the report (see the module docstring). `size`: (W, H) of a video
    (default the scene's input camera)."""
    export = export or ExportParams()
    out = Path(out)
    if fmt == "colmap":
        check_target(out, force)
        prov = {**src.provenance, "points_source": "gaussians"}
        dataset = write_colmap_dataset(
            out, src.views(), points=points_from_gaussians(src.gaussians()), provenance=prov, force=force
        )
        return {"format": "colmap", **dataset.to_dict(), "source": str(src.path), "stage": src.stage}
    check_output_file(out, force)
    if fmt == "mesh":
        from vd.export.mesh import check_mesh_target

        check_mesh_target(out)
    g = src.gaussians()
    if fmt in GAUSSIAN_FORMATS:
        comments = {"source": str(src.path), "stage": src.stage} if src.stage else {"source": str(src.path)}
        written = export_gaussians(
            g, out, fmt, up=up, sh_degree=sh_degree, comments=comments, spz_version=export.spz_version
        )
        return {**written, "source": str(src.path), "stage": src.stage}
    if fmt == "sog":
        r = write_sog(out, g, sh_degree=sh_degree)
        return {
            "format": fmt,
            "path": str(out),
            "written": r.written,
            "dropped_nonfinite": r.dropped_nonfinite,
            "dropped_transparent": r.dropped_transparent,
            "bytes": r.bytes,
            "converter": r.converter,
            "axes": "vd's OpenCV world (-y up)",
            "source": str(src.path),
            "stage": src.stage,
        }
    if fmt == "html":
        return write_page(src, g, out)
    if fmt == "glb":
        return write_gltf(src, g, out, sh_degree)
    if fmt == "mesh":
        return write_mesh_export(src, g, out, faces=faces, collider=collider, device=device, progress=progress)
    video = video or VideoParams()
    K, W, H, radius = video_camera(src, g)
    K, W, H = fit_camera(K, W, H, size)
    rep = export_video(
        g,
        out,
        K=K,
        width=W,
        height=H,
        traj=video.traj,
        frames=video.frames,
        fps=video.fps,
        radius=radius,
        side_by_side_depth=video.side_by_side_depth,
        device=device,
        progress=progress,
    )
    return {"format": "video", **rep.to_dict(), "source": str(src.path), "stage": src.stage}


def write_page(src: Source, g, out: Path) -> dict:
    """The self-contained viewer page, opening at the source's input camera (or a default one)."""
    K, W, H, _ = video_camera(src, g)
    pose = find_input(src.views()).world_from_camera if src.has_views else None
    r = write_html(out, g, K=K, width=W, height=H, world_from_camera=pose, title=f"{Path(src.path).name} (vd)")
    return {
        "format": "html",
        "path": str(out),
        "written": r.written,
        "dropped_nonfinite": r.dropped_nonfinite,
        "dropped_transparent": r.dropped_transparent,
        "bytes": r.bytes,
        "scene_bytes": r.spz_bytes,
        "camera": {"width": W, "height": H, "K": np.asarray(K, float).tolist()},
        "source": str(src.path),
        "stage": src.stage,
    }


def write_gltf(src: Source, g, out: Path, sh_degree: Optional[int]) -> dict:
    """glTF binary with KHR_gaussian_splatting, with the input camera as a glTF camera when the source has one."""
    if out.suffix.lower() != ".glb":
        raise UsageError(f"a glTF binary file name ends in .glb, got {out.name}")
    camera = None
    if src.has_views:
        v = find_input(src.views())
        camera = {"K": v.K, "width": v.width, "height": v.height, "world_from_camera": v.world_from_camera}
    r = write_glb(out, g, sh_degree=sh_degree, camera=camera)
    return {
        "format": "glb",
        "path": str(out),
        "written": r.written,
        "dropped_nonfinite": r.dropped_nonfinite,
        "dropped_transparent": r.dropped_transparent,
        "bytes": r.bytes,
        "sh_degree": r.sh_degree,
        "axes": "glTF: +Y up, right-handed, the input camera at the origin looking along -Z",
        "camera": camera is not None,
        "source": str(src.path),
        "stage": src.stage,
    }


def write_mesh_export(
    src: Source, g, out: Path, *, faces: Optional[int], collider: bool, device: str = "cpu", progress=None
) -> dict:
    """A triangle mesh fused from depth rendered at the source's cameras and along a fly-through of them."""
    from vd.export.mesh import MeshCamera, MeshParams, export_mesh, mesh_cameras
    from vd.export.video import trajectory_poses

    params = MeshParams()
    K, W, H, radius = video_camera(src, g)
    traj = trajectory_poses("spiral", params.trajectory_frames, radius=radius, width=W, height=H)
    cams = mesh_cameras(src.views() if src.has_views else [], traj, K, W, H)
    if not src.has_views:
        cams.insert(0, MeshCamera(K, W, H, np.eye(4)))
    rep = export_mesh(out, g.to(device), cams, faces=faces, collider_only=collider, params=params, progress=progress)
    return {**rep, "source": str(src.path), "stage": src.stage}


def check_output_file(out: Path, force: bool) -> None:
    if out.exists():
        if out.is_dir():
            raise UsageError(f"the output {out} is a folder; give a file name")
        if not force:
            raise UsageError(f"the output {out} already exists; pass --force to replace it")


def video_camera(src: Source, g) -> tuple[np.ndarray, int, int, float]:
    """(K, width, height, scene radius) of a fly-through or a viewer page: the input camera when the source has views,
    else a 60° camera at the world origin sized by the Gaussians."""
    means = g.means.detach().cpu().numpy()
    if src.has_views:
        v = find_input(src.views())
        K = np.asarray(v.K, np.float64)
        try:
            return K, v.width, v.height, scene_radius(v.depth, K, v.spawn if v.spawn is not None else v.supervise)
        except InputError:
            return K, v.width, v.height, radius_from_points(means)
    W, H = NO_CAMERA_SIZE
    f = 0.5 * W / np.tan(np.deg2rad(NO_CAMERA_FOV) / 2)
    log.info(
        f"export: {src.path} has no cameras; using a {NO_CAMERA_FOV:g}° field of view at {W}x{H} from the world origin"
    )
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]]), W, H, radius_from_points(means)


def radius_from_points(means: np.ndarray) -> float:
    """A scene radius from Gaussian centres in front of the camera (1 when there are too few)."""
    ok = np.isfinite(means).all(1) & (means[:, 2] > 0)
    pts = means[ok] if ok.sum() >= 3 else means[np.isfinite(means).all(1)]
    if len(pts) < 3:
        return 1.0
    r = float(np.mean(np.percentile(pts, 50, axis=0) - np.percentile(pts, 5, axis=0)))
    return r if np.isfinite(r) and r > 0 else 1.0


__all__ = [
    "write_export",
    "write_gltf",
    "write_mesh_export",
    "write_page",
    "check_output_file",
    "video_camera",
    "radius_from_points",
]
