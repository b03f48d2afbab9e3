"""The rich tables commands print on stderr (the library returns data; printing is the CLI's job)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vd import console
from vd.units import format_size

if TYPE_CHECKING:
    from rich.console import JustifyMethod


def _size(n) -> str:
    return "-" if n is None else format_size(n, binary=True)


def print_memory(records, title: str = "memory") -> None:
    """Peak VRAM and RSS per stage (`vd.models.memory` records or their JSON rows); nothing when empty."""
    from rich.table import Table

    rows = [r if isinstance(r, dict) else r.to_json() for r in records]
    if not rows or console.is_quiet():
        return
    t = Table(title=title, title_justify="left", show_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("stage", "left"),
        ("device", "left"),
        ("time", "right"),
        ("peak VRAM", "right"),
        ("peak RSS", "right"),
    )
    for col, just in columns:
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(
            r["stage"],
            r.get("device", "cpu"),
            f"{r['seconds']:.1f} s",
            _size(r.get("peak_vram_bytes")),
            _size(r.get("peak_rss_bytes")),
        )
    console.err.print(t)


def print_coarse_summary(summary: dict) -> None:
    """The summary table on stderr: one row per added view, totals, peak memory per stage."""
    from rich.table import Table

    if console.is_quiet():
        return
    moves = int(summary.get("move_views", 0))
    title = f"coarse: {summary['selected'] - moves}/{summary['max_views']} views added"
    title += f" + {moves} at probe moves" if moves else ""
    t = Table(title=f"{title} ({summary['candidates']} candidates)")
    for col in ("view", "dense pose", "hole ratio", "hole px", "spawn px", "added Gaussians", "final loss", "cached"):
        t.add_column(col, justify="right", min_width=9 if col == "added Gaussians" else None)  # "Gaussians" whole
    for v in summary["views"]:
        loss = v["final_loss"]
        t.add_row(
            str(v["view"]),
            str(v["dense_index"]) if v.get("move") is None else f"move {v['move']}",
            f"{v['hole_ratio']:.3f}" + (" *" if v["fallback"] else ""),
            str(v["hole_pixels"]),
            str(v["spawn_pixels"]),
            str(v["added_gaussians"]),
            "-" if loss is None or loss != loss else f"{loss:.4f}",
            "yes" if v["cached"] else "no",
        )
    tot = summary["totals"]
    t.add_section()
    t.add_row("total", "", "", str(tot["hole_pixels"]), str(tot["spawn_pixels"]), str(tot["added_gaussians"]), "", "")
    console.err.print(t)
    console.info(
        f"Gaussians: scaffold {tot['gaussians_scaffold']}, coarse {tot['gaussians_total']} ({tot['frames']} frames)"
        + ("; * = chosen by --fallback closest" if any(v["fallback"] for v in summary["views"]) else "")
    )
    if summary.get("stopped"):
        d = summary["stopped"]
        console.info(f"stopped early: {d.get('reason', '')}")
        console.info(f"hint: {d.get('hint', '')}")
    print_memory(summary.get("memory") or [], "peak memory per stage")


def print_fine_summary(result) -> None:
    """The per-step table (and the memory table) on stderr."""
    from rich.table import Table

    if console.is_quiet():
        return
    s = result.summary
    t = Table(
        title=f"vd fine: {len(s['views'])} views, {len(s['steps'])} steps ({s['denoiser']['name']})",
        title_justify="left",
        show_edge=False,
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("step", "right"),
        ("t", "right"),
        ("GS loss", "right"),
        ("|render - x0|", "right"),
        ("rescale", "right"),
        ("holes", "right"),
        ("time", "right"),
        ("", "left"),
    ]
    for col, just in columns:
        t.add_column(col, justify=just)

    def f(x, fmt="{:.4f}"):
        return "-" if x is None else fmt.format(x)

    for r in s["steps"]:
        resc = r.get("rescale")
        t.add_row(
            str(r["step"]),
            f"{r['t']:.3f} → {r['t_next']:.3f}",
            f(r.get("gs_loss_final")),
            f(r.get("render_vs_estimate_l1")),
            f(sum(resc) / len(resc) if resc else None, "{:.3f}"),
            f(r.get("hole_ratio"), "{:.1%}"),
            f(r.get("wall_s"), "{:.1f} s"),
            "cached" if r.get("cached") else "",
        )
    fi = s["final"]
    t.add_row(
        "final",
        "0",
        f(fi.get("gs_loss_final")),
        "-",
        "-",
        "-",
        f(fi.get("wall_s"), "{:.1f} s"),
        "cached" if fi.get("cached") else "",
    )
    console.err.print(t)
    vram = s.get("vram", {}).get("peak_bytes")
    console.info(
        f"total {s['timings']['total_s']:.1f} s, peak VRAM "
        + (format_size(vram, binary=True) if vram else "n/a (CPU)")
        + f", {s['gaussians']['fine']} Gaussians -> {result.ply}"
    )


def print_depth_summary(rows: list[dict]) -> None:
    from rich.table import Table

    if console.is_quiet():
        return
    t = Table(title="vd depth", title_justify="left", show_edge=False, pad_edge=False)
    for c in ("image", "backend", "size", "focal", "FOV x", "depth", "valid", "cache"):
        t.add_column(c, justify="right" if c in ("focal", "FOV x", "valid") else "left", no_wrap=True)
    for row in rows:
        j = row["json"]
        t.add_row(
            Path(j["image"]).name,
            j["backend"],
            f"{j['width']}x{j['height']}",
            f"{j['focal']:.1f}",
            f"{j['fov_x_deg']:.1f}°",
            f"{j['depth_min']:.3g}-{j['depth_max']:.3g}",
            f"{100 * j['valid_fraction']:.1f}%",
            "hit" if j["cached"] else "new",
        )
    console.err.print(t)


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


def inspect_renderable(st: dict):
    """rich renderables (a summary grid and a per-column table) for one file's statistics."""
    from rich.console import Group
    from rich.table import Table

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("file", st["file"])
    if st["is_splats"]:
        degree = st["sh_degree"] if st["sh_degree"] is not None else "?"
        summary.add_row(
            "format", f"{st['format']}, {st['count']:,} Gaussians, SH degree {degree} ({st['f_rest']} f_rest)"
        )
    else:
        summary.add_row("format", f"{st['format']}")
        summary.add_row("content", f"[yellow]not Gaussian splats: {st['description']}[/]")
    memory, disk = format_size(st["memory_bytes"], binary=True), format_size(st["file_bytes"], binary=True)
    summary.add_row("memory", f"{memory} in memory, {disk} on disk")
    if st["bounds"]:
        b = st["bounds"]
        summary.add_row(
            "bounds", "min " + ", ".join(_fmt(v) for v in b["min"]) + "  max " + ", ".join(_fmt(v) for v in b["max"])
        )
    nf = st["nan"] + st["inf"]
    summary.add_row("non-finite", f"[red]{st['nan']} NaN, {st['inf']} Inf[/]" if nf else "none")
    if st["scale"]:
        summary.add_row("median exp(scale)", ", ".join(_fmt(v) for v in st["scale"]["median_exp"]))
    if st["anisotropy"]:
        for k, v in st["anisotropy"].items():
            summary.add_row(
                f"anisotropy {k}", f"p10 {_fmt(v['p10'])}  median {_fmt(v['median'])}  p90 {_fmt(v['p90'])}"
            )
    if st["rotation"]:
        r = st["rotation"]
        frac = r["fraction_within_5deg"]
        summary.add_row(
            "rotations ≤5° from identity",
            f"{r['within_5deg_of_identity']:,} ({_fmt(frac * 100 if frac is not None else None, 3)}%)",
        )
    if st["opacity"]:
        o = st["opacity"]
        peak = max(o["histogram"]) or 1
        bars = "▁▂▃▄▅▆▇█"
        spark = "".join(
            bars[min(len(bars) - 1, int(h / peak * (len(bars) - 1) + 0.5))] if h else " " for h in o["histogram"]
        )
        summary.add_row(
            "opacity histogram", f"0 [cyan]{spark}[/] 1  (median {_fmt(o['median'])}, {o['below_1_255']:,} below 1/255)"
        )
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
            _fmt(c["min"]),
            _fmt(c["median"]),
            _fmt(c["mean"]),
            _fmt(c["max"]),
            _fmt(c["std"]),
            f"[red]{c['nan']}[/]" if c["nan"] else "0",
            f"[red]{c['inf']}[/]" if c["inf"] else "0",
        )
    return Group(summary, cols)
