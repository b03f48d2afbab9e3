"""Coarse frame selection: the eight upstream cases (docs/upstream.md#coarse-frame-selection) and the
diagnostics branches."""

import numpy as np
import pytest

from vd.stages.select import Selection, diagnose, select, select_pose_index

# --- the eight upstream (FORK tests/test_coarse_frame_selection.py) cases -------------------

def test_ratio_above_max_is_never_chosen():
    assert select_pose_index(np.array([0.10, 0.30, 0.20]), []) == 2


def test_adjacent_exclusion_leaves_only_index_3():
    r = np.array([0.10, 0.20, 0.15, 0.12])
    assert select_pose_index(r, [1], adjacent_exclusion=1) == 3


def test_all_below_min_gives_none():
    assert select_pose_index(np.array([0.01, 0.02, 0.03]), []) is None


def test_negative_exclusion_is_zero():
    r = np.array([0.10, 0.20, 0.15])
    # with exclusion 0, only the selected index itself is excluded
    assert select_pose_index(r, [1], adjacent_exclusion=-3) == 2
    assert select_pose_index(r, [1], adjacent_exclusion=0) == 2


def test_empty_array_gives_none():
    assert select_pose_index(np.array([]), []) is None
    assert select_pose_index(np.array([]), [], fallback_mode="closest") is None


def test_closest_all_above_picks_smallest():
    assert select_pose_index(np.array([0.60, 0.35, 0.40]), [], fallback_mode="closest") == 1
    assert select_pose_index(np.array([0.60, 0.35, 0.40]), [], fallback_mode="none") is None


def test_closest_all_below_picks_largest():
    assert select_pose_index(np.array([0.01, 0.04, 0.03]), [], fallback_mode="closest") == 1


def test_fallback_respects_exclusion():
    assert select_pose_index(np.array([0.01, 0.04, 0.03]), [1], adjacent_exclusion=1, fallback_mode="closest") is None


# --- more semantics ---------------------------------------------------------------------------

def test_band_is_inclusive_and_ties_go_to_lowest_index():
    assert select_pose_index([0.05, 0.25, 0.25, 0.3], []) == 1
    assert select_pose_index([0.05, 0.01], []) == 0


def test_closest_never_picks_zero_ratio():
    assert select_pose_index([0.0, 0.0], [], fallback_mode="closest") is None
    s = select([0.0, 0.001], fallback="closest")
    assert s == Selection(1, 0.001, True)


def test_strict_selection_is_not_fallback():
    s = select([0.1, 0.2], fallback="closest")
    assert s == Selection(1, 0.2, False)


def test_unknown_fallback_raises():
    with pytest.raises(ValueError):
        select([0.1], fallback="bogus")


def test_closest_selects_where_none_selects_nothing():
    r = [0.5, 0.6, 0.7]
    assert select(r, fallback="none") is None
    assert select(r, fallback="closest").index == 0


# --- diagnostics branches ---------------------------------------------------------------------

def test_diag_too_small():
    d = diagnose([0.01, 0.02, 0.03, 0.02])
    assert (d.below_min, d.in_range, d.above_max) == (4, 0, 0)
    assert "too little" in d.reason
    assert "--min-ratio" in d.hint and "--fallback closest" in d.hint
    assert d.top[0] == (2, 0.03)
    assert d.ratio_max == pytest.approx(0.03)


def test_diag_all_zero():
    d = diagnose([0.0, 0.0, 0.0])
    assert "every hole ratio is 0" in d.reason
    assert "--forward-ratio" in d.hint


def test_diag_too_large():
    d = diagnose([0.5, 0.4, 0.9])
    assert (d.below_min, d.in_range, d.above_max) == (0, 0, 3)
    assert "--max-ratio" in d.hint
    assert "0.44" in d.hint  # 1.1 * smallest ratio 0.4


def test_diag_blocked_by_adjacency():
    d = diagnose([0.01, 0.10, 0.01, 0.02, 0.01], [1], adjacent_exclusion=1)
    assert d.in_range == 0 and d.in_range_all == 1
    assert d.n_excluded == 3
    assert "adjacent" in d.reason and "--adjacent-exclusion" in d.hint


def test_diag_everything_excluded():
    d = diagnose([0.1, 0.1, 0.1], [1], adjacent_exclusion=1)
    assert d.n_valid == 0 and d.ratio_min is None
    assert "--adjacent-exclusion" in d.hint and "--dense-multiplier" in d.hint


def test_diag_mixed_below_and_above():
    d = diagnose([0.01, 0.5, 0.02, 0.6])
    assert (d.below_min, d.in_range, d.above_max) == (2, 0, 2)
    assert "below and above" in d.reason
    assert "--min-ratio" in d.hint


def test_diag_unexpected_in_range():
    d = diagnose([0.1, 0.2])
    assert "unexpected" in d.reason


def test_diag_no_candidates():
    d = diagnose([])
    assert "no candidate" in d.reason and "--n-frames" in d.hint


def test_diag_lines_and_dict():
    d = diagnose([0.01, 0.02, 0.03], top_k=2)
    assert len(d.top) == 2
    text = "\n".join(d.lines())
    assert "below/in/above" in text and "hint:" in text
    js = d.to_dict()
    assert js["top"] == [[2, 0.03], [1, 0.02]]


# --- refinement of a fast, approximate scan ---------------------------------------------------

def test_refinement_reproduces_exact_selection():
    from vd.stages.select import candidates_to_refine

    rng = np.random.default_rng(0)
    tol = 0.02
    trials = 0
    for _ in range(3000):
        n = int(rng.integers(1, 40))
        exact = np.round(rng.uniform(0, 0.5, n), 3)  # rounding makes ties happen
        if rng.random() < 0.2:
            exact[rng.integers(0, n)] = 0.0
        approx = np.clip(exact + rng.uniform(-tol, tol, n), 0, 1)
        selected = list(rng.choice(n, size=min(n, int(rng.integers(0, 3))), replace=False))
        kw = dict(min_ratio=0.05, max_ratio=0.25, adjacent_exclusion=int(rng.integers(0, 2)),
                  fallback=["none", "closest"][int(rng.integers(0, 2))])
        idx = candidates_to_refine(approx, selected, tolerance=tol, **kw)
        merged = approx.copy()
        merged[idx] = exact[idx]
        assert select(merged, selected, **kw) == select(exact, selected, **kw)
        trials += len(idx) < n
    assert trials > 1000  # usually only a few candidates need re-measuring


def test_refinement_in_two_levels_with_per_candidate_tolerance():
    from vd.stages.select import candidates_to_refine

    rng = np.random.default_rng(1)
    for _ in range(2000):
        n = int(rng.integers(1, 30))
        exact = np.round(rng.uniform(0, 0.4, n), 3)
        exact[rng.random(n) < 0.1] = 0.0
        kw = dict(min_ratio=0.05, max_ratio=0.25, adjacent_exclusion=1, fallback=["none", "closest"][int(rng.integers(0, 2))])
        sel = list(rng.choice(n, size=min(n, int(rng.integers(0, 2))), replace=False))
        r = np.clip(exact + rng.uniform(-0.02, 0.02, n), 0, 1)
        tol = np.full(n, 0.02)
        i1 = candidates_to_refine(r, sel, tolerance=tol, **kw)
        r[i1] = exact[i1] + rng.uniform(-0.005, 0.005, len(i1))
        tol[i1] = 0.005
        i2 = candidates_to_refine(r, sel, tolerance=tol, **kw)
        r[i2] = exact[i2]
        tol[i2] = 0.0
        assert len(candidates_to_refine(r, sel, tolerance=tol, **kw)) == 0
        assert select(r, sel, **kw) == select(exact, sel, **kw)


def test_refinement_small_when_clear():
    from vd.stages.select import candidates_to_refine

    r = np.array([0.0, 0.01, 0.1, 0.2, 0.12, 0.6])
    assert list(candidates_to_refine(r, tolerance=0.01)) == [3]
    assert list(candidates_to_refine(r, tolerance=0.0)) == []
    assert len(candidates_to_refine([], tolerance=0.01)) == 0
