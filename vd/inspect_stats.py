"""Statistics of Gaussian PLY files for `vd inspect` (in the spirit of `splat-transform --stats`).

`ply_stats(path)` returns a JSON-ready dict; `render_table(stats)` builds rich renderables.
Only numpy and the PLY reader are used (no torch), so inspecting a file is quick.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vd.errors import check_input_file
from vd.units import format_size

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
    """Statistics of one PLY file (raises InputError for a missing or malformed file)."""
    from vd.ply import read_ply_columns

    p = check_input_file(path, "PLY file")
    cols, meta = read_ply_columns(p)
    n = int(meta["count"])
    names = list(cols)
    rest = [c for c in names if c.startswith("f_rest_")]
    n_rest = len(rest)
    sh_degree = {0: 0, 9: 1, 24: 2, 45: 3}.get(n_rest)
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
        scales = {"median_exp": [_f(np.median(es[np.isfinite(es[:, i]), i])) if np.isfinite(es[:, i]).any() else None
                                 for i in range(len(sc))]}
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
        "count": n,
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


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def render_table(st: dict):
    """rich renderables (a summary grid and a per-column table) for one file's statistics."""
    from rich.console import Group
    from rich.table import Table

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("file", st["file"])
    summary.add_row("format", f"{st['format']}, {st['count']:,} Gaussians, SH degree {st['sh_degree'] if st['sh_degree'] is not None else '?'} ({st['f_rest']} f_rest)")
    summary.add_row("memory", f"{format_size(st['memory_bytes'], binary=True)} in memory, {format_size(st['file_bytes'], binary=True)} on disk")
    if st["bounds"]:
        b = st["bounds"]
        summary.add_row("bounds", "min " + ", ".join(_fmt(v) for v in b["min"]) + "  max " + ", ".join(_fmt(v) for v in b["max"]))
    nf = st["nan"] + st["inf"]
    summary.add_row("non-finite", f"[red]{st['nan']} NaN, {st['inf']} Inf[/]" if nf else "none")
    if st["scale"]:
        summary.add_row("median exp(scale)", ", ".join(_fmt(v) for v in st["scale"]["median_exp"]))
    if st["anisotropy"]:
        for k, v in st["anisotropy"].items():
            summary.add_row(f"anisotropy {k}", f"p10 {_fmt(v['p10'])}  median {_fmt(v['median'])}  p90 {_fmt(v['p90'])}")
    if st["rotation"]:
        r = st["rotation"]
        frac = r["fraction_within_5deg"]
        summary.add_row("rotations ≤5° from identity", f"{r['within_5deg_of_identity']:,} ({_fmt(frac * 100 if frac is not None else None, 3)}%)")
    if st["opacity"]:
        o = st["opacity"]
        peak = max(o["histogram"]) or 1
        bars = "▁▂▃▄▅▆▇█"
        spark = "".join(bars[min(len(bars) - 1, int(h / peak * (len(bars) - 1) + 0.5))] if h else " " for h in o["histogram"])
        summary.add_row("opacity histogram", f"0 [cyan]{spark}[/] 1  (median {_fmt(o['median'])}, {o['below_1_255']:,} below 1/255)")
        summary.add_row("", " ".join(f"{h:,}" for h in o["histogram"]))
    for k, v in (st["comments"] or {}).items():
        summary.add_row(f"comment {k}", str(v))

    cols = Table(show_edge=False, header_style="bold")
    for h in ("column", "min", "median", "mean", "max", "std", "NaN", "Inf"):
        cols.add_column(h, justify="left" if h == "column" else "right")
    for name, c in st["columns"].items():
        bad = c["nan"] or c["inf"]
        cols.add_row(
            f"[red]{name}[/]" if bad else name,
            _fmt(c["min"]), _fmt(c["median"]), _fmt(c["mean"]), _fmt(c["max"]), _fmt(c["std"]),
            f"[red]{c['nan']}[/]" if c["nan"] else "0",
            f"[red]{c['inf']}[/]" if c["inf"] else "0",
        )
    return Group(summary, cols)


__all__ = ["ply_stats", "render_table"]
del Path
