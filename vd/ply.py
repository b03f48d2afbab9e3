"""Gaussian PLY files in the INRIA 3DGS layout.

Writer: one ``vertex`` element, binary little-endian float32 properties in the INRIA order
``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3`` with pre-activation values
(log-scale, logit opacity, unnormalised wxyz quaternion, SH coefficients) and channel-major
``f_rest`` (all R coefficients, then G, then B). Header comments carry the vd version, the up
axis, the source-image hash and the intrinsics (``comment key: value``). Rows with non-finite
values or opacity below 1/255 are dropped and counted. The file is written atomically.

Reader: INRIA files and the layouts other tools write (no normals, lower SH degree, SHARP's extra
metadata elements, 2DGS two-axis scales, ascii / binary little / big endian). Malformed files
raise `InputError` with one sentence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vd import __version__
from vd.errors import InputError, check_input_file
from vd.fsio import atomic_write_bytes
from vd.splat_constants import ALPHA_MIN as MIN_OPACITY
from vd.splat_constants import C0

if TYPE_CHECKING:
    from vd.gaussians import Gaussians


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER = 1 << 20


@dataclass
class PlyReport:
    written: int
    dropped_nonfinite: int
    dropped_transparent: int
    path: str = ""
    bytes: int = 0

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "written": self.written,
            "dropped_nonfinite": self.dropped_nonfinite,
            "dropped_transparent": self.dropped_transparent,
            "bytes": self.bytes,
        }


def inria_property_names(sh_degree: int) -> list[str]:
    """The exact INRIA vertex property list for an SH degree 0..3."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _comment_lines(comments: dict | None) -> list[str]:
    merged: dict[str, Any] = {
        "vd_version": __version__,
        "up": "-y",
        "convention": "OpenCV (x right, y down, z forward); world = input camera",
    }
    if comments:
        merged.update(comments)
    lines = []
    for key, value in merged.items():
        if value is None:
            continue
        if not isinstance(value, str):
            if hasattr(value, "tolist"):
                value = value.tolist()
            value = json.dumps(value, separators=(",", ":"))
        key = re.sub(r"[\s:]+", "_", str(key))
        value = re.sub(r"[\r\n]+", " ", value)
        lines.append(f"comment {key}: {value}")
    return lines


def _gaussian_table(g, sh_degree: int | None):
    """float32 [N, P] table in INRIA order plus the keep mask and drop counts."""
    import torch

    if sh_degree is None:
        sh_degree = g.sh_degree
    if not 0 <= sh_degree <= 3:
        raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
    g = g.detach().to("cpu").with_sh_degree(sh_degree)
    n = len(g)
    k = (sh_degree + 1) ** 2
    sh = g.sh.numpy()
    cols = [
        g.means.numpy(),
        np.zeros((n, 3), np.float32),
        sh[:, 0, :],
        # channel-major f_rest: [N, K-1, 3] -> [N, 3, K-1] -> flatten
        np.ascontiguousarray(sh[:, 1:, :].transpose(0, 2, 1)).reshape(n, 3 * (k - 1)),
        g.opacity_logits.numpy()[:, None],
        g.log_scales.numpy(),
        g.quats.numpy(),
    ]
    table = np.concatenate(cols, axis=1).astype("<f4", copy=False)
    finite = np.isfinite(table).all(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        opac = 1.0 / (1.0 + np.exp(-g.opacity_logits.numpy().astype(np.float64)))
    opaque = opac >= MIN_OPACITY
    keep = finite & opaque
    del torch
    return table, keep, int((~finite).sum()), int((finite & ~opaque).sum()), sh_degree


def encode_ply(g, *, comments: dict | None = None, sh_degree: int | None = None) -> tuple[bytes, PlyReport]:
    """The bytes of `g` as an INRIA-layout binary PLY, and how many rows were written and dropped.

    comments: extra ``comment key: value`` header lines (non-string values as compact JSON).
    Always present: ``vd_version``, ``up`` (default "-y": vd's world is the input camera's OpenCV
    frame) and ``convention``; callers should add ``source_image`` (the xxh3 content hash of the
    input image), ``intrinsics`` (3x3 K) and ``image_size`` ([W, H]). A key given here overrides
    the default. sh_degree: write this SH degree (truncating or zero-padding), default g's own.
    """
    table, keep, n_nonfinite, n_transparent, deg = _gaussian_table(g, sh_degree)
    if not keep.all():
        table = table[keep]
    names = inria_property_names(deg)
    assert table.shape[1] == len(names)
    header = [
        "ply",
        "format binary_little_endian 1.0",
        *_comment_lines(comments),
        f"element vertex {table.shape[0]}",
        *[f"property float {p}" for p in names],
        "end_header",
    ]
    data = ("\n".join(header) + "\n").encode("ascii", "replace") + np.ascontiguousarray(table).tobytes()
    return data, PlyReport(int(table.shape[0]), n_nonfinite, n_transparent, "", len(data))


def write_ply(path, g, *, comments: dict | None = None, sh_degree: int | None = None) -> PlyReport:
    """Write `encode_ply(g, ...)` to `path` atomically; returns its report (with the path)."""
    data, rep = encode_ply(g, comments=comments, sh_degree=sh_degree)
    atomic_write_bytes(path, data)
    rep.path = str(Path(path))
    return rep


# ---------------------------------------------------------------------------------- reading


@dataclass
class _Element:
    name: str
    count: int
    props: list  # (name, dtype str, list count dtype or None)


def _parse_header(buf: bytes, where: str):
    if not buf.startswith(b"ply"):
        raise InputError(f"{where} is not a PLY file (it does not start with 'ply')")
    end = buf.find(b"end_header")
    if end < 0:
        raise InputError(f"{where} has no complete PLY header (no 'end_header' line)")
    nl = buf.find(b"\n", end)
    if nl < 0:
        raise InputError(f"{where} has no complete PLY header (no newline after 'end_header')")
    header_len = nl + 1
    try:
        text = buf[:header_len].decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{where} has a PLY header that is not ASCII text") from None
    fmt = None
    elements: list[_Element] = []
    comments: list[str] = []
    for lineno, raw in enumerate(text.splitlines()[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        kw = parts[0]
        if kw == "format":
            if len(parts) != 3 or parts[1] not in _FORMATS:
                raise InputError(f"{where}: unsupported PLY format line {line!r} (line {lineno})")
            fmt = parts[1]
        elif kw == "comment":
            comments.append(raw.strip()[len("comment") :].strip())
        elif kw == "obj_info":
            comments.append(raw.strip())
        elif kw == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise InputError(f"{where}: malformed PLY element line {line!r} (line {lineno})")
            elements.append(_Element(parts[1], int(parts[2]), []))
        elif kw == "property":
            if not elements:
                raise InputError(f"{where}: PLY property before any element (line {lineno})")
            if len(parts) == 3 and parts[1] in _PLY_TYPES:
                elements[-1].props.append((parts[2], _PLY_TYPES[parts[1]], None))
            elif len(parts) == 5 and parts[1] == "list" and parts[2] in _PLY_TYPES and parts[3] in _PLY_TYPES:
                elements[-1].props.append((parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]]))
            else:
                raise InputError(f"{where}: malformed PLY property line {line!r} (line {lineno})")
        elif kw == "end_header":
            break
        else:
            raise InputError(f"{where}: unknown PLY header keyword {kw!r} (line {lineno})")
    if fmt is None:
        raise InputError(f"{where} has no 'format' line in its PLY header")
    return fmt, elements, comments, header_len


def _read_elements(path: Path, where: str) -> tuple[str, dict[str, np.ndarray], list[str], list[_Element]]:
    """Return (format, {element name: structured array}, comments, element specs)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(min(size, 65536))
        while b"end_header" not in head and len(head) < min(size, _MAX_HEADER):
            more = f.read(65536)
            if not more:
                break
            head += more
    fmt, elements, comments, header_len = _parse_header(head, where)
    has_lists = any(p[2] is not None for e in elements for p in e.props)
    if fmt != "ascii" and not has_lists:
        order = _FORMATS[fmt]
        offset = header_len
        out: dict[str, np.ndarray] = {}
        with open(path, "rb") as f:
            for e in elements:
                dt = np.dtype([(p[0], order + p[1]) for p in e.props]) if e.props else None
                if dt is None:
                    out[e.name] = np.zeros(e.count)
                    continue
                need = dt.itemsize * e.count
                if offset + need > size:
                    raise InputError(
                        f"{where} is truncated: element '{e.name}' needs {need} bytes, {max(size - offset, 0)} remain"
                    )
                f.seek(offset)
                # one sequential read into a writable array (faster than a memory map + gathers)
                out[e.name] = np.fromfile(f, dtype=dt, count=e.count)
                offset += need
        if offset != size and size - offset > 1:
            # Trailing garbage is tolerated by most readers; a short file is not (handled above).
            pass
        return fmt, out, comments, elements
    # ascii, or list properties: plyfile handles them well.
    import plyfile

    try:
        ply = plyfile.PlyData.read(str(path))
    except (plyfile.PlyParseError, plyfile.PlyHeaderParseError, ValueError, IndexError, EOFError) as e:
        raise InputError(f"{where} is not a valid PLY file ({e})") from None
    except Exception as e:  # plyfile raises a variety of errors on truncated data
        raise InputError(f"{where} could not be parsed as PLY ({type(e).__name__}: {e})") from None
    out = {el.name: el.data for el in ply.elements}
    return fmt, out, comments, elements


def parse_comments(comments: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for c in comments:
        m = re.match(r"^([^:\s][^:]*?)\s*:\s*(.*)$", c)
        if not m:
            continue
        key, value = m.group(1).strip(), m.group(2).strip()
        if value[:1] in "[{" or value in ("true", "false", "null"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        parsed[key] = value
    return parsed


def _sorted_numbered(names, prefix: str) -> list[str]:
    found = [(int(n[len(prefix) :]), n) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
    return [n for _, n in sorted(found)]


def read_ply(path) -> tuple[Gaussians, dict]:
    """Read a Gaussian PLY; returns (Gaussians on CPU, metadata dict).

    Metadata: ``comments`` ({key: value} from ``comment key: value`` lines), ``raw_comments``,
    ``format``, ``count``, ``sh_degree``, ``properties`` (vertex property names in file order),
    ``extra`` ({element name: {property: list}} for non-vertex elements such as SHARP's
    ``intrinsic``/``extrinsic``), ``elements`` ({element name: count}), ``ignored_properties`` and
    ``kind`` ("3dgs" or "2dgs"). Properties a splat needs and the file lacks get defaults (opaque,
    scale 0.01, no rotation, grey); `vd.export.content` names such files.
    """
    import torch

    from vd.gaussians import Gaussians, safe_logit

    path = check_input_file(path, "PLY file")
    where = str(path)
    fmt, elems, comments, specs = _read_elements(path, where)
    cols = _Columns(_vertex_element(elems, path))
    means = cols.many(["x", "y", "z"])
    sh = _sh(cols, where)
    opaque = safe_logit(torch.ones(1)).numpy().repeat(cols.n)  # a file without opacities is read as opaque
    opac = cols.one("opacity") if "opacity" in cols.names else opaque.astype(np.float32)
    log_scales, kind = _log_scales(cols)
    quats = _quats(cols)
    cols.used.update(n for n in ("nx", "ny", "nz") if n in cols.names)  # normals carry nothing for a splat
    g = Gaussians(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (means, log_scales, quats, opac, sh)))
    meta = {
        "comments": parse_comments(comments),
        "raw_comments": comments,
        "format": fmt,
        "count": cols.n,
        "sh_degree": int(round(sh.shape[1] ** 0.5)) - 1,
        "properties": cols.names,
        "ignored_properties": [p for p in cols.names if p not in cols.used],
        "extra": _other_elements(elems),
        "elements": {e.name: e.count for e in specs},
        "kind": kind,
    }
    return g, meta


def _vertex_element(elems: dict, path) -> np.ndarray:
    where = str(path)
    if "vertex" not in elems:
        raise InputError(f"{where} has no 'vertex' element, so it holds no Gaussians")
    if is_compressed(elems):
        raise _compressed_error(path)
    v = elems["vertex"]
    for req in ("x", "y", "z"):
        if req not in (v.dtype.names or ()):
            raise InputError(f"{where} has no '{req}' vertex property, so it is not a point or Gaussian PLY")
    return v


class _Columns:
    """float32 columns of a PLY's vertex element, gathered with as few copies as possible; it
    remembers which properties were read (the others are reported as ignored)."""

    def __init__(self, v: np.ndarray):
        self.v, self.n = v, len(v)
        self.names = list(v.dtype.names or ())
        self.used: set[str] = set()
        self.pos = {x: i for i, x in enumerate(self.names)}
        self.mat = None
        if (
            self.names
            and all(v.dtype[x] == np.dtype("<f4") for x in self.names)
            and v.dtype.itemsize == 4 * len(self.names)
        ):
            try:  # all float32 little endian: one [N, P] view
                self.mat = v.view("<f4").reshape(self.n, len(self.names))
            except ValueError:
                self.mat = None

    def one(self, name: str) -> np.ndarray:
        self.used.add(name)
        src = self.mat[:, self.pos[name]] if self.mat is not None else self.v[name]
        return np.array(src, dtype=np.float32)

    def many(self, names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((self.n, 0), np.float32)
        if self.mat is None:
            return np.stack([self.one(x) for x in names], axis=1)
        self.used.update(names)
        idx = [self.pos[x] for x in names]
        if idx == list(range(idx[0], idx[0] + len(idx))):  # a run of columns: a strided slice
            return np.ascontiguousarray(self.mat[:, idx[0] : idx[0] + len(idx)], dtype=np.float32)
        return np.ascontiguousarray(self.mat[:, idx], dtype=np.float32)


def _sh(cols: _Columns, where: str) -> np.ndarray:
    """SH coefficients [N, K, 3]: f_dc_* (or red/green/blue) and channel-major f_rest_*."""
    if all(f"f_dc_{i}" in cols.names for i in range(3)):
        dc = cols.many([f"f_dc_{i}" for i in range(3)])
    elif all(c in cols.names for c in ("red", "green", "blue")):
        full = 255.0 if cols.v.dtype["red"].kind in "ui" else 1.0
        dc = (cols.many(["red", "green", "blue"]) / full - 0.5) / C0
    else:
        dc = np.zeros((cols.n, 3), np.float32)
    rest_names = _sorted_numbered(cols.names, "f_rest_")
    if len(rest_names) not in (0, 9, 24, 45):
        raise InputError(f"{where} has {len(rest_names)} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0..3)")
    k = len(rest_names) // 3 + 1
    sh = np.empty((cols.n, k, 3), np.float32)
    sh[:, 0] = dc
    if rest_names:
        sh[:, 1:] = cols.many(rest_names).reshape(cols.n, 3, k - 1).transpose(0, 2, 1)
    return sh


def _log_scales(cols: _Columns) -> tuple[np.ndarray, str]:
    """(log-scales [N, 3], "3dgs" | "2dgs"): 2DGS surfels get a thin third axis."""
    names = _sorted_numbered(cols.names, "scale_")
    if len(names) >= 3:
        return cols.many(names[:3]), "3dgs"
    if len(names) == 2:
        s2 = cols.many(names)
        return np.concatenate([s2, s2.min(axis=1, keepdims=True) - np.log(np.float32(100.0))], axis=1), "2dgs"
    return np.full((cols.n, 3), np.log(0.01), np.float32), "3dgs"


def _quats(cols: _Columns) -> np.ndarray:
    names = _sorted_numbered(cols.names, "rot_")
    if len(names) >= 4:
        return cols.many(names[:4])
    q = np.zeros((cols.n, 4), np.float32)
    q[:, 0] = 1.0
    return q


def _other_elements(elems: dict) -> dict:
    """{element name: {property: list}} of every element but the vertices."""
    extra = {}
    for name, arr in elems.items():
        if name == "vertex":
            continue
        try:
            extra[name] = {p: np.asarray(arr[p]).tolist() for p in (arr.dtype.names or ())}
        except Exception:  # pragma: no cover - exotic list elements
            extra[name] = {}
    return extra


def is_compressed(elems: dict) -> bool:
    """Whether parsed PLY elements are PlayCanvas's compressed layout (chunk + packed vertices)."""
    return "chunk" in elems and "packed_position" in (elems["vertex"].dtype.names or ())


def _compressed_error(path) -> InputError:
    return InputError(
        f"{path} is a PlayCanvas compressed PLY; vd.export.read_gaussians reads it "
        f"(or convert it: vd export {path} --format ply -o OUT.ply)"
    )


def gaussian_columns(g) -> dict[str, np.ndarray]:
    """INRIA-named float32 columns of Gaussians (the rows the writer would write, before drops)."""
    table, _, _, _, deg = _gaussian_table(g, None)
    return {name: table[:, i] for i, name in enumerate(inria_property_names(deg))}


def read_ply_columns(path) -> tuple[dict[str, np.ndarray], dict]:
    """Raw vertex columns of a PLY (for `vd inspect`): ({name: array}, {format, comments, ...})."""
    path = Path(path)
    where = str(path)
    fmt, elems, comments, specs = _read_elements(path, where)
    if "vertex" not in elems:
        raise InputError(f"{where} has no 'vertex' element, so it holds no Gaussians")
    v = elems["vertex"]
    if is_compressed(elems):
        raise _compressed_error(path)
    cols = {name: np.asarray(v[name]) for name in (v.dtype.names or ())}
    meta = {
        "format": fmt,
        "comments": parse_comments(comments),
        "raw_comments": comments,
        "elements": {e.name: e.count for e in specs},
        "count": len(v),
        "header_bytes": None,
    }
    return cols, meta


__all__ = [
    "MIN_OPACITY",
    "PlyReport",
    "encode_ply",
    "gaussian_columns",
    "inria_property_names",
    "is_compressed",
    "parse_comments",
    "read_ply",
    "read_ply_columns",
    "write_ply",
]
