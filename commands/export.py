"""`vd export`: write a scene as PLY, compressed PLY, .splat, a COLMAP dataset or a video."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vd.commands import common

HELP = """Export a scene to a file format other tools read, or validate a refine dataset.

SOURCE is a PLY/.splat file, a vd output folder (with cameras.json), or an image vd has processed (its latest cached stage; --stage to choose).

Formats: [bold]ply[/] (INRIA 3DGS), [bold]compressed-ply[/] (PlayCanvas/SuperSplat), [bold]splat[/] (antimatter15), [bold]colmap[/] (the `vd refine` dataset: COLMAP model, images, masks, depth and normal priors), [bold]video[/] (.mp4 or .gif fly-through).

vd's world is the input camera's OpenCV frame (x right, y down, z forward), so -y is up; --up +y or +z rotates the scene for tools that expect another up axis and records the axis in the file header.

Examples:

  vd export vd-out/photo --format ply -o photo.ply

  vd export photo.ply --format compressed-ply -o photo.compressed.ply

  vd export vd-out/photo --format colmap -o dataset/

  vd export vd-out/photo --format video -o fly.mp4 --frames 60 --side-by-side-depth

  vd export --validate dataset/
"""


def export(
    source: Optional[Path] = typer.Argument(None, help="A processed image (its latest stage), a vd output folder or a PLY/.splat file.", show_default=False),
    format_: str = typer.Option("ply", "--format", "-f", help="ply, compressed-ply, splat, colmap or video."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (a folder for colmap).", show_default=False),
    stage: Optional[str] = typer.Option(None, "--stage", help="Which stage's Gaussians: fine, coarse, scaffold (or refine for a refine folder). Default: the latest.", show_default=False),
    sh_degree: Optional[int] = typer.Option(None, "--sh-degree", help="SH degree to write (0-3; default: the scene's).", show_default=False),
    up: str = typer.Option("-y", "--up", help="Up axis of the written scene: -y (vd/OpenCV, SuperSplat), +y or +z."),
    traj: str = typer.Option("spiral", "--traj", help="video: spiral, wobble, rot, or a trajectory file (JSON poses or COLMAP images.txt)."),
    frames: int = typer.Option(60, "--frames", help="video: number of frames."),
    fps: float = typer.Option(20.0, "--fps", help="video: frames per second."),
    side_by_side_depth: bool = typer.Option(False, "--side-by-side-depth", help="video: RGB and colour-mapped depth side by side."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file or non-empty output folder."),
    validate: Optional[Path] = typer.Option(None, "--validate", help="Validate a refine dataset folder and exit (1 when invalid).", show_default=False),
    device: Optional[str] = common.DEVICE,
    json_: bool = typer.Option(False, "--json", help="Print one JSON object with the result on stdout."),
) -> None:
    from vd.export.cli import run_export

    run_export(source=source, fmt=format_, out=out, stage=stage, sh_degree=sh_degree, up=up, traj=traj, frames=frames,
               fps=fps, side_by_side_depth=side_by_side_depth, force=force, validate=validate, device=device, as_json=json_)


export.__doc__ = HELP
