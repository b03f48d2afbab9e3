"""`vd depth`: estimate depth, intrinsics and validity for each image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vd import console
from vd.commands import common, tables
from vd.commands import viewer_options as vo
from vd.errors import VdError
from vd.models import memory
from vd.params import (
    DEPTH_MODELS,
    LICENCES,
    RunOptions,
    check_choice,
    check_device,
    check_intrinsics,
    check_max_resolution,
)

DEPTH_BYTES_PER_PIXEL = 9  # at least depth.npy (float32), a 16-bit colourised depth.png and the mask


def depth(
    images: List[Path] = common.IMAGES,
    out: Optional[Path] = common.OUT,
    backend: str = typer.Option(
        "auto",
        "--backend",
        "--depth-backend",  # the name vd coarse and vd batch give it
        help="auto (a sidecar <stem>.depth.npy next to the image, else moge), moge, or file.",
    ),
    depth_model: str = common.field_option(RunOptions, "depth_model"),
    licence: Optional[str] = common.field_option(RunOptions, "licence"),
    focal: Optional[float] = typer.Option(None, "--focal", help="Focal length in pixels of the original image."),
    fov: Optional[float] = typer.Option(None, "--fov", help="Horizontal field of view in degrees."),
    intrinsics: Optional[Path] = typer.Option(
        None,
        "--intrinsics",
        help=(
            "Intrinsics JSON (K, fx/fy/cx/cy, focal or fov_x_deg; optional width/height it refers to). "
            "Default for the file backend: <stem>.intrinsics.json or intrinsics.json beside the image."
        ),
    ),
    max_resolution: int = common.MAX_RES,
    depth_device: Optional[str] = typer.Option(
        None,
        "--depth-device",
        "--device",
        help="cuda, cuda:N or cpu for the depth model (default: $VD_DEVICE, else cuda when available).",
    ),
    json_: bool = common.JSON,
    fetch: bool = common.FETCH,
    overwrite: bool = common.OVERWRITE,
    viewer: str = vo.VIEWER,
    viewer_port: int = vo.VIEWER_PORT,
    rrd: Optional[Path] = vo.RRD,
    wait: bool = vo.WAIT,
    wait_seconds: Optional[float] = vo.WAIT_SECONDS,
) -> None:
    """Estimate depth for each IMAGE; writes depth.npy, depth.png, mask.png, normals.npy (moge), intrinsics.json.

    The file backend reads a depth map you supply (a sidecar <image stem>.depth.npy/.npz/16-bit .png
    in millimetres, with intrinsics from --focal, --fov, --intrinsics or an intrinsics.json beside
    the image). Results are memoised: a second run on the same image is instant.
    """
    from vd.models.choose import check_licence
    from vd.stages.depth import depth_one

    check_intrinsics(focal, fov)
    check_choice(depth_model, DEPTH_MODELS, "--depth-model")
    if licence is not None:
        check_choice(licence, LICENCES, "--licence")
    check_max_resolution(max_resolution)
    check_device(depth_device)
    check_licence(backend, depth_model=depth_model, licence=licence)  # before any folder is made
    memory.reset()
    rows, failures = [], []
    backends: dict = {}
    dests = common.output_dirs(
        out, images, overwrite=overwrite, bytes_per_pixel=DEPTH_BYTES_PER_PIXEL, max_resolution=max_resolution
    )
    with console.Bar("depth: images", len(images)) as done:  # drawn from the first of several
        for i, (image, dest) in enumerate(zip(images, dests, strict=False)):
            if len(images) > 1:
                done.update(i)
            try:
                row = depth_one(
                    image,
                    out=dest,
                    backend=backend,
                    model=depth_model,
                    licence=licence,
                    focal=focal,
                    fov=fov,
                    intrinsics=intrinsics,
                    max_resolution=max_resolution,
                    device=depth_device,
                    auto_fetch=True if fetch else None,
                    shared_backends=backends,
                )
            except VdError as e:
                if len(images) == 1:
                    raise
                console.err.print(f"error: {image}: {e}", markup=False)
                failures.append(e)
                continue
            rows.append(row)
            vo.log_outputs(
                "depth",
                row["json"]["out"],
                viewer=viewer,
                viewer_port=viewer_port,
                rrd=rrd,
                wait=wait,
                wait_seconds=wait_seconds,
                image=image,
                n_images=len(images),
                max_resolution=max_resolution,
            )
            if json_:
                console.out_json(row["json"])
            else:
                console.out(*row["paths"])
    for b in backends.values():
        b.release()
    if rows:
        tables.print_depth_summary(rows)
        tables.print_memory(memory.records(), "peak memory (vd depth)")
    if failures:
        codes = {e.exit_code for e in failures}
        err = VdError(f"{len(failures)} of {len(images)} images failed (see above)")
        err.exit_code = codes.pop() if len(codes) == 1 else 1
        raise err
