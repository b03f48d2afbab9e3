"""`vd export`: write a scene as PLY, compressed PLY, .splat, SPZ, SOG, a web page, a COLMAP dataset or a video."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from vd import console
from vd.commands import common
from vd.errors import InputError, UsageError
from vd.params import ExportParams, VideoParams, check_device, given
from vd.paths import resolve_device

HELP = (
    "Export a scene to a file format other tools read, or validate a refine dataset.\n"
    "\n"
    "SOURCE is a Gaussian file (.ply, compressed .ply, .splat, .spz, .sog, .glb), a vd output folder "
    "(with cameras.json), or an image vd has processed (its latest cached stage; --stage to choose). "
    "A PLY that is not Gaussian splats (a triangle mesh, a point cloud) is refused unless --as-splats.\n"
    "\n"
    "Formats: [bold]ply[/] (INRIA 3DGS), [bold]compressed-ply[/] (PlayCanvas/SuperSplat), "
    "[bold]splat[/] (antimatter15), [bold]spz[/] (Niantic; --spz-version), "
    "[bold]sog[/] (PlayCanvas SOG, through splat-transform when installed), "
    "[bold]glb[/] (glTF 2.0 with KHR_gaussian_splatting, +Y up, the input camera included), "
    "[bold]mesh[/] (a triangle mesh with vertex colours, .glb, .ply or .obj by suffix, "
    "fused from depth rendered at the scene's cameras; --faces N to decimate, "
    "--collider for a small watertight proxy), "
    "[bold]html[/] (one self-contained page with a WebGL2 viewer, opening at the input camera), "
    "[bold]colmap[/] (the `vd refine` dataset: COLMAP model, images, masks, depth and normal priors), "
    "[bold]video[/] (.mp4 or .gif fly-through).\n"
    "\n"
    "vd's world is the input camera's OpenCV frame (x right, y down, z forward), so -y is up; "
    "--up +y or +z rotates a ply, compressed-ply or splat export for tools that expect another up axis "
    "and records the axis in the file header. SPZ is always RUB (x right, y up, z back): "
    "vd rotates the scene 180° about x when it writes one and back when it reads one.\n"
    "\n"
    """Examples:

  vd export vd-out/photo --format ply -o photo.ply

  vd export photo.ply --format compressed-ply -o photo.compressed.ply

  vd export vd-out/photo --format spz -o photo.spz

  vd export vd-out/photo --format glb -o photo.glb

  vd export vd-out/photo --format mesh -o photo.mesh.glb --faces 200000

  vd export vd-out/photo --format html -o photo.html

  vd export vd-out/photo --format colmap -o dataset/

  vd export vd-out/photo --format video -o fly.mp4 --frames 60 --side-by-side-depth

  vd export --validate dataset/
"""
)


def export(
    source: Optional[Path] = typer.Argument(
        None,
        help=(
            "A processed image (its latest stage), a vd output folder "
            "or a Gaussian file (.ply, .splat, .spz, .sog, .glb)."
        ),
        show_default=False,
    ),
    format_: Optional[str] = typer.Option(
        None,
        "--format",
        "-f",
        help=(
            "ply, compressed-ply, splat, spz, sog, glb, mesh, html, colmap or video. Default: what the output's "
            "name asks for (.ply, .compressed.ply, .splat, .spz, .sog, .glb, .obj for a mesh, .html, .mp4 or "
            ".gif for a video), else ply."
        ),
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Output file (a folder for colmap).", show_default=False
    ),
    stage: Optional[str] = typer.Option(
        None,
        "--stage",
        help="Which stage's Gaussians: fine, coarse, scaffold (or refine for a refine folder). Default: the latest.",
        show_default=False,
    ),
    sh_degree: Optional[int] = typer.Option(
        None, "--sh-degree", help="SH degree to write (0-3; default: the scene's).", show_default=False
    ),
    up: str = typer.Option(
        "-y", "--up", help="Up axis of a ply, compressed-ply or splat export: -y (vd/OpenCV, SuperSplat), +y or +z."
    ),
    spz_version: Optional[int] = common.param_option(
        ExportParams,
        "spz_version",
        (
            "spz: format version, 2 or 3 (3: smallest-three rotations, read by Niantic's library, Spark, Babylon.js, "
            "three.js and splat-transform; 2 for older readers)."
        ),
    ),
    as_splats: bool = typer.Option(
        False,
        "--as-splats",
        help=(
            "Read a PLY that is not Gaussian splats (a mesh's vertices, a point cloud) as opaque grey splats "
            "of scale 0.01 with no rotation, filling what it lacks."
        ),
    ),
    traj: Optional[str] = typer.Option(
        None,
        "--traj",
        help=common.shows_default(
            "video: spiral, wobble, rot, or a trajectory file (JSON poses or COLMAP images.txt).", VideoParams.traj
        ),
        show_default=False,
    ),
    frames: Optional[int] = common.param_option(VideoParams, "frames", "video: number of frames."),
    fps: Optional[float] = common.param_option(VideoParams, "fps", "video: frames per second."),
    side_by_side_depth: bool = typer.Option(
        False, "--side-by-side-depth", help="video: RGB and colour-mapped depth side by side."
    ),
    size: Optional[str] = typer.Option(
        None,
        "--size",
        show_default=False,
        help="video: WIDTHxHEIGHT up to 4K, e.g. 1920x1080 (default: the scene's size; another aspect crops the view).",
    ),
    faces: Optional[int] = typer.Option(
        None,
        "--faces",
        show_default=False,
        help="mesh: decimate to about N triangles (default: keep all; --collider: 2000).",
    ),
    collider: bool = typer.Option(
        False, "--collider", help="mesh: a small closed (watertight) proxy for physics instead of the detailed surface."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file or non-empty output folder."),
    validate: Optional[Path] = typer.Option(
        None, "--validate", help="Validate a refine dataset folder and exit (1 when invalid).", show_default=False
    ),
    device: Optional[str] = common.DEVICE,
    json_: bool = typer.Option(False, "--json", help="Print one JSON object with the result on stdout."),
) -> None:
    check_device(device)
    video = given(traj=traj, frames=frames, fps=fps, side_by_side_depth=side_by_side_depth or None, size=size)
    options = given(spz_version=spz_version)
    if validate is not None:
        validate_only(validate, source, out, json_)
    else:
        mesh = given(faces=faces, collider=collider or None)
        run_export(
            source=source,
            fmt=format_,
            out=out,
            stage=stage,
            sh_degree=sh_degree,
            up=up,
            video=video,
            options=options,
            as_splats=as_splats,
            force=force,
            device=device,
            as_json=json_,
            mesh=mesh,
        )


export.__doc__ = HELP


def validate_only(dataset: Path, source: Optional[Path], out: Optional[Path], as_json: bool) -> None:
    """`vd export --validate DIR`: every problem on stderr and exit 1, or one line saying it is valid."""
    if source is not None or out is not None:
        raise UsageError("--validate DIR takes no SOURCE or --out; run it on its own")
    from vd.export.validate import check_dataset

    with problems_listed():
        check_dataset(dataset)
    n = len(json.loads((dataset / "meta.json").read_text())["views"])
    if as_json:
        console.out_json({"dataset": str(dataset), "valid": True, "views": n})
    else:
        console.out(f"{dataset}: valid refine dataset ({n} views)")


@contextmanager
def problems_listed():
    """When a refine dataset is invalid, list every problem on stderr, then one sentence counting them."""
    from vd.export.validate import DatasetInvalid

    try:
        yield
    except DatasetInvalid as e:
        if (Path(e.path) / "cameras.json").is_file():  # a coarse or fine output folder, given where a dataset goes
            raise InputError(
                f"{e.path} is a vd output folder, not a refine dataset; write one from it first: "
                f"vd export {e.path} --format colmap -o dataset/"
            ) from None
        for p in e.problems:
            console.err.print(f"  - {p}", markup=False, highlight=False)
        n = len(e.problems)
        raise InputError(
            f"{e.path} is not a valid refine dataset: {n} problem{'s' if n != 1 else ''} (listed above)"
        ) from None


def run_export(
    *,
    source: Optional[Path],
    fmt: Optional[str],
    out: Optional[Path],
    stage: Optional[str],
    sh_degree: Optional[int],
    up: str,
    video: dict,
    options: dict,
    as_splats: bool,
    force: bool,
    device: Optional[str],
    as_json: bool,
    mesh: Optional[dict] = None,
) -> None:
    """Resolve SOURCE, check every option against the format, then write the export."""
    from vd.export import FIXED_FRAME_FORMATS, FORMATS, check_name, format_of
    from vd.export.source import resolve_source
    from vd.export.transform import up_rotation
    from vd.export.write import write_export

    if source is None:
        raise UsageError(
            "missing SOURCE: give a Gaussian file (.ply, .splat, .spz, .sog, .glb), a vd output folder "
            "or a processed image (or use --validate DIR)"
        )
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None:
        raise UsageError("missing --out/-o: where to write the export")
    if fmt is None:
        fmt = format_of(out) or "ply"
    check_name(fmt, out)
    up_rotation(up)
    if fmt in FIXED_FRAME_FORMATS and up != "-y":
        raise UsageError(
            f"--up applies to ply, compressed-ply and splat; the {fmt} export has a frame of its own "
            "(see vd export --help)"
        )
    mesh = mesh or {}
    if fmt != "mesh" and mesh:
        raise UsageError("--faces and --collider apply to --format mesh only")
    if mesh.get("faces") is not None and mesh["faces"] < 4:
        raise UsageError(f"--faces must be at least 4, got {mesh['faces']}")
    if fmt in ("colmap", "video", "html", "mesh") and sh_degree is not None:
        raise UsageError(f"--sh-degree applies to ply, compressed-ply, spz, sog and glb, not to {fmt}")
    if fmt != "spz" and options:
        raise UsageError("--spz-version applies to --format spz only")
    export_params = ExportParams(**options)
    export_params.validate()
    if sh_degree is not None and not 0 <= sh_degree <= 3:
        raise UsageError(f"--sh-degree must be 0, 1, 2 or 3, got {sh_degree}")
    if fmt != "video" and video:
        raise UsageError("--traj, --frames, --fps, --size and --side-by-side-depth apply to --format video only")
    from vd.export.video import parse_size

    frame_size = parse_size(video.pop("size")) if "size" in video else None
    params = VideoParams(**video)
    params.validate()
    src = resolve_source(source, stage, as_splats=as_splats)
    if fmt == "colmap":
        with console.status("export: writing the COLMAP dataset"):
            rep = write_export(src, fmt, out, force=force)
    elif fmt == "sog":
        with console.status(
            "export: splat-transform is writing the SOG file (minutes without a GPU when the scene has SH)"
        ):
            rep = write_export(src, fmt, out, sh_degree=sh_degree, force=force)
    elif fmt == "mesh":
        with console.progress() as prog:
            rep = write_export(
                src,
                fmt,
                out,
                force=force,
                device=resolve_device(device),
                progress=prog,
                faces=mesh.get("faces"),
                collider=bool(mesh.get("collider")),
            )
    elif fmt == "video":
        with console.progress() as prog:
            rep = write_export(
                src, fmt, out, video=params, force=force, device=resolve_device(device), progress=prog, size=frame_size
            )
    else:
        rep = write_export(src, fmt, out, up=up, sh_degree=sh_degree, export=export_params, force=force)
    if rep.get("dropped_nonfinite") or rep.get("dropped_transparent"):
        console.info(
            f"export: dropped {rep['dropped_nonfinite']} non-finite and {rep['dropped_transparent']} "
            f"transparent (alpha < 1/255) Gaussians; wrote {rep['written']}"
        )
    if as_json:
        console.out_json(rep)
    else:
        console.out(str(out))
