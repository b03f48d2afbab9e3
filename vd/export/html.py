"""One self-contained web page showing a scene: `vd export --format html`.

The page (template `vd/assets/viewer/viewer.html`) holds the scene as a base64 SPZ stream (SH
band 0: the viewer draws colour without view-dependent bands; positions with as many fractional bits as
24 bits allow) and the input camera as JSON, and a
small WebGL2 splat renderer written for vd: nothing is fetched when it is opened, from `file://`
or a web server. It opens at the input camera (OpenCV intrinsics, fitted to the window), upright
(the camera turns about the world's up axis), with orbit, fly and dolly controls.

The scene is written in the input camera's frame: when the source's input view is not at the
world origin (a refine dataset), the splats are moved so that it is.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vd import __version__
from vd.errors import InputError
from vd.export.spz import encode_spz, finest_fractional_bits
from vd.export.transform import SplatArrays, filter_splats, rotate_splats
from vd.fsio import atomic_write_bytes

TEMPLATE = Path(__file__).resolve().parent.parent / "assets" / "viewer" / "viewer.html"
SPZ_VERSION = 3  # the embedded stream; the page reads versions 2 and 3
# 1/65536 units; the example's page: 42.4 dB at 12 bits, 46.5 at 16 (+17 % size), 46.8 at 20 (+31 %)
PAGE_FRACTIONAL_BITS = 16


@dataclass
class HtmlReport:
    path: Path
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    bytes: int
    spz_bytes: int


def viewer_template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def to_camera_frame(a: SplatArrays, world_from_camera) -> SplatArrays:
    """Splats re-expressed in a camera's OpenCV frame (unchanged when the camera is the world origin)."""
    P = np.asarray(world_from_camera, np.float64)
    if np.allclose(P, np.eye(4)):
        return a
    R, t = P[:3, :3].T, -P[:3, :3].T @ P[:3, 3]
    r = rotate_splats(a, R)
    return SplatArrays((r.means + t).astype(np.float32), r.log_scales, r.quats, r.opacity_logits, r.sh)


def _script_json(obj) -> str:
    """JSON safe inside a <script> element (no "</" can close it)."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def render_page(a: SplatArrays, *, K, width: int, height: int, title: str) -> tuple[str, int]:
    """(the page, the embedded SPZ's size) for filtered splats in the input camera's frame."""
    # positions as fine as 24 bits allow (not SPZ's usual 1/4096): the page sorts splats by depth as vd does, and
    # coarser positions would turn near-equal depths into ties drawn in another order
    bits = finest_fractional_bits(a.means, PAGE_FRACTIONAL_BITS)
    spz = encode_spz(a.with_sh_degree(0), SPZ_VERSION, fractional_bits=bits)
    scene = {
        "generator": f"vd {__version__}",
        "count": len(a),
        "axes": "RUB (x right, y up, z back); input camera at the origin looking along -z",
        "camera": {"K": np.asarray(K, float).tolist(), "width": int(width), "height": int(height)},
    }
    page = (
        viewer_template()
        .replace("__TITLE__", html.escape(title))
        .replace("__SCENE_JSON__", _script_json(scene))
        .replace("__SPZ_BASE64__", base64.b64encode(spz).decode("ascii"))
    )
    return page, len(spz)


def write_html(path, g, *, K, width: int, height: int, world_from_camera=None, title: str = "vd scene") -> HtmlReport:
    """Write the viewer page of Gaussians (vd's frame) seen from the camera (K, width, height, pose)."""
    a, rep = filter_splats(SplatArrays.from_gaussians(g))
    if len(a) == 0:
        raise InputError("no Gaussians left to write after dropping non-finite and transparent ones")
    if world_from_camera is not None:
        a = to_camera_frame(a, world_from_camera)
    page, spz_bytes = render_page(a, K=K, width=width, height=height, title=title)
    data = page.encode("utf-8")
    atomic_write_bytes(path, data)
    return HtmlReport(Path(path), len(a), rep.dropped_nonfinite, rep.dropped_transparent, len(data), spz_bytes)


__all__ = ["HtmlReport", "render_page", "to_camera_frame", "viewer_template", "write_html"]
