"""Statistics of Gaussian files for `vd inspect` (in the spirit of `splat-transform --stats`).

A PLY that is not Gaussian splats is named for what it is (``content``: triangle mesh, point
cloud, ...) with the splat properties it lacks (``missing``); its ``count`` of Gaussians is 0, and
``vertices`` and ``faces`` count what it holds.

`ply_stats(path)` returns a JSON-ready dict (`vd inspect` prints it as a table).
Only numpy and the PLY reader are used (no torch), so inspecting a file is quick.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vd.errors import check_input_file
from vd.export.content import ply_content
from vd.export.read import read_columns

OPACITY_BINS = 10


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _column_stats(a: np.ndarray) -> dict:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        nan = int(np.isnan(a).sum())
        inf = int(np.isinf(a).sum())
        fin = a[np.isfinite(a)] if (nan or inf) else a
    else:
        nan = inf = 0
        fin = a
    if fin.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None, "std": None, "nan": nan, "inf": inf}
    f64 = fin.astype(np.float64, copy=False)
    return {
        "min": _f(f64.min()),
        "median": _f(np.median(f64)),
        "mean": _f(f64.mean()),
        "max": _f(f64.max()),
        "std": _f(f64.std()),
        "nan": nan,
        "inf": inf,
    }


def _pcts(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"p10": None, "median": None, "p90": None}
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {"p10": _f(p10), "median": _f(p50), "p90": _f(p90)}


def ply_stats(path) -> dict:
    """Statistics of one PLY, SPZ or .splat file (raises InputError for a missing or malformed file)."""
    p = check_input_file(path, "Gaussian file")
    cols, meta = read_columns(p)
    n = int(meta["count"])
    names = list(cols)
    rest = [c for c in names if c.startswith("f_rest_")]
    n_rest = len(rest)
    sh_degree = {0: 0, 9: 1, 24: 2, 45: 3}.get(n_rest)
    content = ply_content(names, meta["elements"])
    columns = {name: _column_stats(cols[name]) for name in names}
    nan_total = sum(c["nan"] for c in columns.values())
    inf_total = sum(c["inf"] for c in columns.values())

    bounds = None
    if all(k in cols for k in ("x", "y", "z")) and n:
        xyz = np.stack([cols[k].astype(np.float64) for k in ("x", "y", "z")], 1)
        ok = np.isfinite(xyz).all(1)
        if ok.any():
            lo, hi = xyz[ok].min(0), xyz[ok].max(0)
            bounds = {"min": lo.tolist(), "max": hi.tolist(), "size": (hi - lo).tolist()}

    scales = None
    anis = None
    sc = sorted((c for c in names if c.startswith("scale_") and c[6:].isdigit()), key=lambda c: int(c[6:]))
    if len(sc) >= 2 and n:
        s = np.stack([cols[c].astype(np.float64) for c in sc], 1)
        with np.errstate(over="ignore", invalid="ignore"):
            es = np.exp(s)
        scales = {
            "median_exp": [
                _f(np.median(es[np.isfinite(es[:, i]), i])) if np.isfinite(es[:, i]).any() else None
                for i in range(len(sc))
            ]
        }
        with np.errstate(over="ignore", invalid="ignore"):
            anis = {"x/y": _pcts(np.exp(s[:, 0] - s[:, 1]))}
            if len(sc) >= 3:
                anis["x/z"] = _pcts(np.exp(s[:, 0] - s[:, 2]))

    rot = None
    rc = [f"rot_{i}" for i in range(4)]
    if all(c in cols for c in rc) and n:
        q = np.stack([cols[c].astype(np.float64) for c in rc], 1)
        norm = np.linalg.norm(q, axis=1)
        ok = np.isfinite(norm) & (norm > 0)
        w = np.abs(q[ok, 0]) / norm[ok]
        ang = 2 * np.degrees(np.arccos(np.clip(w, 0, 1)))
        rot = {
            "within_5deg_of_identity": int((ang <= 5.0).sum()),
            "fraction_within_5deg": _f((ang <= 5.0).mean()) if ok.any() else None,
            "zero_norm": int((norm == 0).sum()),
        }

    opac = None
    if "opacity" in cols and n:
        o = cols["opacity"].astype(np.float64)
        o = o[~np.isnan(o)]
        with np.errstate(over="ignore"):
            a = 1.0 / (1.0 + np.exp(-o))
        hist, edges = np.histogram(a, bins=OPACITY_BINS, range=(0.0, 1.0))
        opac = {
            "histogram": hist.tolist(),
            "edges": [round(float(e), 3) for e in edges],
            "below_1_255": int((a < 1 / 255).sum()),
            "median": _f(np.median(a)) if a.size else None,
        }

    mem = sum(np.asarray(c).dtype.itemsize for c in cols.values()) * n
    return {
        "file": str(p),
        "format": meta["format"],
        "count": n if content.is_splats else 0,
        "vertices": n,
        "content": content.kind,
        "is_splats": content.is_splats,
        "missing": content.missing,
        "faces": content.faces,
        "description": content.describe(),
        "sh_degree": sh_degree,
        "f_rest": n_rest,
        "properties": names,
        "elements": meta["elements"],
        "comments": meta["comments"],
        "file_bytes": p.stat().st_size,
        "memory_bytes": int(mem),
        "bounds": bounds,
        "nan": nan_total,
        "inf": inf_total,
        "scale": scales,
        "anisotropy": anis,
        "rotation": rot,
        "opacity": opac,
        "columns": columns,
    }


__all__ = ["ply_stats"]
del Path
