"""Coarse frame selection: a pure function over candidate hole ratios, plus diagnostics.

Behaviour follows the FORK's `_select_best_pose_index` (docs/upstream.md#coarse-frame-selection):

- valid = all candidate indices minus every already selected index ± `adjacent_exclusion`
  (a negative exclusion counts as 0);
- strict: among valid candidates with min_ratio <= ratio <= max_ratio take the largest ratio
  (ties go to the lowest index);
- otherwise `fallback="closest"` takes the valid candidate nearest to the band
  (min - ratio below it, ratio - max above it; a ratio <= 0 is infinitely far), and
  `fallback="none"` selects nothing.

When nothing is selected, `diagnose` explains why and names the flags to change.
No I/O and no torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from vd.params import FALLBACKS


@dataclass(frozen=True)
class Selection:
    index: int
    ratio: float
    fallback: bool  # True when chosen by the closest fallback (ratio outside the band)


def valid_indices(n: int, selected: Iterable[int], adjacent_exclusion: int = 1) -> np.ndarray:
    """Boolean [n]: candidates not within ±adjacent_exclusion of a selected index."""
    ex = max(int(adjacent_exclusion), 0)
    ok = np.ones(n, dtype=bool)
    for s in selected:
        lo, hi = max(int(s) - ex, 0), min(int(s) + ex, n - 1)
        if lo <= hi:
            ok[lo : hi + 1] = False
    return ok


def select(
    ratios: Sequence[float],
    selected: Iterable[int] = (),
    *,
    min_ratio: float = 0.05,
    max_ratio: float = 0.25,
    adjacent_exclusion: int = 1,
    fallback: str = "none",
) -> Selection | None:
    """The candidate to add next, or None (see the module docstring)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    r = np.asarray(ratios, dtype=np.float64).reshape(-1)
    n = r.size
    if n == 0:
        return None
    valid = valid_indices(n, selected, adjacent_exclusion)
    if not valid.any():
        return None
    in_band = valid & (r >= min_ratio) & (r <= max_ratio)
    if in_band.any():
        cand = np.where(in_band, r, -np.inf)
        i = int(np.argmax(cand))  # ties -> lowest index
        return Selection(i, float(r[i]), False)
    if fallback == "none":
        return None
    dist = np.where(r < min_ratio, min_ratio - r, r - max_ratio)
    dist = np.where((r <= 0) | ~np.isfinite(r) | ~valid, np.inf, dist)
    i = int(np.argmin(dist))
    if not np.isfinite(dist[i]):
        return None
    return Selection(i, float(r[i]), True)


def candidates_to_refine(
    ratios: Sequence[float],
    selected: Iterable[int] = (),
    *,
    min_ratio: float = 0.05,
    max_ratio: float = 0.25,
    adjacent_exclusion: int = 1,
    fallback: str = "none",
    tolerance=0.02,
) -> np.ndarray:
    """Indices whose approximate ratio is too close to the decision to trust (sorted, unique).

    `ratios` come from a fast scan whose error is at most `tolerance` (a number, or one per
    candidate; 0 marks an exact ratio, which is never returned). Re-measuring the returned
    candidates (exactly, or with a smaller tolerance and calling this again) and running
    `select` on the merged ratios then selects exactly what `select` would on exact ratios:

    - each candidate's true ratio lies in [r − tol, r + tol];
    - when some valid candidate is surely in the band, the largest lower bound L among them
      bounds the answer from below: only candidates that may be in the band and whose upper
      bound reaches L can win;
    - otherwise every candidate that may be in the band is returned, and with the closest
      fallback also every candidate whose distance interval to the band can reach the smallest
      upper bound of the distances (a ratio that may be 0 may be infinitely far).
    """
    r = np.asarray(ratios, dtype=np.float64).reshape(-1)
    n = r.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), r.shape)
    lo, hi = r - tol, r + tol
    valid = valid_indices(n, selected, adjacent_exclusion)
    maybe = valid & (hi >= min_ratio) & (lo <= max_ratio)
    sure = valid & (lo >= min_ratio) & (hi <= max_ratio)
    if sure.any():
        pick = maybe & (hi >= lo[sure].max())
    else:
        pick = maybe.copy()
        if fallback == "closest":
            d_lo = np.maximum(np.maximum(min_ratio - hi, lo - max_ratio), 0.0)
            d_hi = np.where(lo > 0, np.maximum(np.maximum(min_ratio - lo, hi - max_ratio), 0.0), np.inf)
            bound = d_hi[valid].min() if valid.any() else np.inf
            pick |= valid & (d_lo <= bound)
    pick &= tol > 0
    return np.nonzero(pick)[0].astype(np.int64)


def select_pose_index(
    ratios, selected=(), min_ratio=0.05, max_ratio=0.25, adjacent_exclusion=1, fallback_mode="none"
) -> int | None:
    """Upstream-compatible signature: the index only."""
    s = select(
        ratios,
        selected,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        adjacent_exclusion=adjacent_exclusion,
        fallback=fallback_mode,
    )
    return None if s is None else s.index


@dataclass
class Diagnostics:
    n_candidates: int
    n_valid: int
    n_excluded: int
    ratio_min: float | None
    ratio_mean: float | None
    ratio_max: float | None
    ratio_percentiles: dict  # "p10", "p50", "p90" over valid candidates
    below_min: int
    in_range: int
    above_max: int
    below_min_all: int  # ignoring adjacency exclusion
    in_range_all: int
    above_max_all: int
    top: list = field(default_factory=list)  # [(index, ratio)] descending, valid candidates
    reason: str = ""
    hint: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["top"] = [[int(i), float(v)] for i, v in self.top]
        return d

    def lines(self) -> list[str]:
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"

        out = [
            f"candidates {self.n_candidates}, valid {self.n_valid}, excluded by adjacency {self.n_excluded}",
            f"hole ratio over valid candidates: min {f(self.ratio_min)}, mean {f(self.ratio_mean)}, "
            f"max {f(self.ratio_max)}"
            + (
                f", p10/p50/p90 {self.ratio_percentiles['p10']:.4f}/{self.ratio_percentiles['p50']:.4f}"
                f"/{self.ratio_percentiles['p90']:.4f}"
                if self.ratio_percentiles
                else ""
            ),
            f"below/in/above the band: {self.below_min}/{self.in_range}/{self.above_max} "
            f"(ignoring adjacency: {self.below_min_all}/{self.in_range_all}/{self.above_max_all})",
            "top candidates: " + (", ".join(f"{i}:{v:.4f}" for i, v in self.top) or "none"),
            f"why: {self.reason}",
            f"hint: {self.hint}",
        ]
        return out


def diagnose(
    ratios: Sequence[float],
    selected: Iterable[int] = (),
    *,
    min_ratio: float = 0.05,
    max_ratio: float = 0.25,
    adjacent_exclusion: int = 1,
    fallback: str = "none",
    top_k: int = 10,
) -> Diagnostics:
    """Why `select` found nothing, with one concrete hint naming the flags to change."""
    r = np.asarray(ratios, dtype=np.float64).reshape(-1)
    n = r.size
    selected = list(selected)
    valid = valid_indices(n, selected, adjacent_exclusion) if n else np.zeros(0, dtype=bool)
    rv = r[valid]
    below_all, in_all, above_all = (
        int((r < min_ratio).sum()),
        int(((r >= min_ratio) & (r <= max_ratio)).sum()),
        int((r > max_ratio).sum()),
    )
    below, inr, above = (
        int((rv < min_ratio).sum()),
        int(((rv >= min_ratio) & (rv <= max_ratio)).sum()),
        int((rv > max_ratio).sum()),
    )
    order = np.argsort(-r, kind="stable")
    top = [(int(i), float(r[i])) for i in order if valid[i]][:top_k]
    pct = {}
    if rv.size:
        p = np.percentile(rv, [10, 50, 90])
        pct = {"p10": float(p[0]), "p50": float(p[1]), "p90": float(p[2])}
    d = Diagnostics(
        n_candidates=n,
        n_valid=int(valid.sum()),
        n_excluded=int(n - valid.sum()),
        ratio_min=float(rv.min()) if rv.size else None,
        ratio_mean=float(rv.mean()) if rv.size else None,
        ratio_max=float(rv.max()) if rv.size else None,
        ratio_percentiles=pct,
        below_min=below,
        in_range=inr,
        above_max=above,
        below_min_all=below_all,
        in_range_all=in_all,
        above_max_all=above_all,
        top=top,
    )
    band = f"[{min_ratio:g}, {max_ratio:g}]"
    if n == 0:
        d.reason = "there are no candidate poses"
        d.hint = "give more candidates with --n-frames or --dense-multiplier, or a --trajectory FILE with poses"
    elif inr > 0:
        d.reason = f"{inr} valid candidate(s) are inside {band} but none was selected (unexpected)"
        d.hint = "this is a bug in vd; please report it with the command line (--fallback closest works around it)"
    elif d.n_valid == 0:
        d.reason = f"all {n} candidates are within ±{adjacent_exclusion} of views already added"
        d.hint = (
            f"lower --adjacent-exclusion to {max(int(adjacent_exclusion) - 1, 0)}, "
            "or add candidates with a larger --dense-multiplier (e.g. 20)"
        )
    elif in_all > 0:
        d.reason = f"{in_all} candidate(s) inside {band} are all adjacent to views already added"
        d.hint = f"lower --adjacent-exclusion to {max(int(adjacent_exclusion) - 1, 0)}, or use --fallback closest"
    elif below == d.n_valid:
        best = d.ratio_max or 0.0
        if best > 0:
            d.reason = (
                f"every valid candidate uncovers too little: the largest hole ratio is {best:.4f} "
                f"< --min-ratio {min_ratio:g}"
            )
            d.hint = (
                f"lower the band with --min-ratio {max(best * 0.9, 1e-4):.4g}, "
                f"or move the camera further with --forward-ratio {0.5} --backward-ratio {0.6} "
                "--radius-percentiles 5 70, or use --fallback closest"
            )
        else:
            d.reason = (
                "no valid candidate uncovers any hole (every hole ratio is 0): "
                "the scene already covers all candidate views"
            )
            d.hint = (
                "move the camera further with --forward-ratio 0.5 --backward-ratio 0.6 --radius-percentiles 5 70 "
                "or --margin 64 (--fallback closest cannot pick a ratio of 0)"
            )
    elif above == d.n_valid:
        best = d.ratio_min or 0.0
        d.reason = (
            f"every valid candidate uncovers too much: the smallest hole ratio is {best:.4f} "
            f"> --max-ratio {max_ratio:g}"
        )
        d.hint = (
            f"raise the band with --max-ratio {min(best * 1.1, 1.0):.4g}, "
            "or move the camera less with --forward-ratio 0.15 --backward-ratio 0.2, or use --fallback closest"
        )
    else:
        lo = max((v for v in rv if v < min_ratio), default=None)
        hi = min((v for v in rv if v > max_ratio), default=None)
        d.reason = (
            f"valid candidates fall below and above {band} but none inside "
            f"(nearest: {lo if lo is None else round(lo, 4)} below, {hi if hi is None else round(hi, 4)} above)"
        )
        if lo is not None and lo > 0:
            d.hint = f"widen the band with --min-ratio {lo * 0.9:.4g}, or use --fallback closest"
        elif hi is not None:
            d.hint = f"widen the band with --max-ratio {hi * 1.1:.4g}, or use --fallback closest"
        else:
            d.hint = "use --fallback closest"
    if fallback == "closest" and n and d.n_valid and not (rv > 0).any():
        d.reason += "; --fallback closest never picks a hole ratio of 0"
    return d
