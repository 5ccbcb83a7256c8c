"""Integer per-group statistics: the partition path (large groups) and the packed sort (small ones) agree with a sort."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from insight.mining._core import _PARTITION_MIN, distinct_per_key, group_stats, grouping


def _reference(g: np.ndarray, v: np.ndarray, scale: float) -> dict[int, tuple[float, ...]]:
    """Per group: count, mean, median, p90, max from a full sort, with the same interpolation formula."""
    out = {}
    for k in np.unique(g):
        s = np.sort(v[g == k]).astype(np.float64) / scale
        n = len(s)
        stats = []
        for q in (0.5, 0.9):
            pos = q * (n - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, n - 1)
            stats.append(s[lo] + (s[hi] - s[lo]) * (pos - lo))
        out[int(k)] = (n, float(np.sum(v[g == k]) / scale / n), *stats, s[-1])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_int_group_stats_match_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # sizes on both sides of the partition threshold, keys with gaps, many ties and a negative value
    sizes = [1, 2, 3, _PARTITION_MIN - 1, _PARTITION_MIN, _PARTITION_MIN + 1, 5000, 17]
    keys = rng.permutation(1000)[: len(sizes)] * 7
    g = np.repeat(keys, sizes)
    v = rng.integers(-5, 400, len(g)) * 1_000_003
    perm = rng.permutation(len(g))
    g, v = g[perm], v[perm]
    gs = group_stats(g, v, scale=1e6)
    ref = _reference(g, v, 1e6)
    assert list(gs.group) == sorted(ref)
    for i, k in enumerate(gs.group):
        n, mean, med, p90, mx = ref[int(k)]
        assert gs.count[i] == n
        assert gs.median[i] == med and gs.p90[i] == p90 and gs.max[i] == mx
        assert gs.mean[i] == pytest.approx(mean, rel=1e-12)
        sel = v[g == k] / 1e6
        assert gs.median[i] == pytest.approx(np.median(sel), rel=1e-12)
        assert gs.p90[i] == pytest.approx(np.percentile(sel, 90), rel=1e-12)


def test_shared_grouping_gives_the_same_answers() -> None:
    rng = np.random.default_rng(5)
    key = rng.integers(0, 40, 20_000) ** 2
    case = np.sort(rng.integers(0, 3000, 20_000))
    v = rng.integers(0, 10**12, 20_000)
    by = grouping(key)
    a, b = group_stats(key, v, by=by), group_stats(key, v)
    for f in ("group", "count", "total", "mean", "median", "p90", "max"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    k1, c1 = distinct_per_key(case, key, by=by)
    k2, c2 = distinct_per_key(case, key)
    assert np.array_equal(k1, k2) and np.array_equal(c1, c2)
    expect = [len(set(case[key == k].tolist())) for k in k1]
    assert c1.tolist() == expect


def test_coarsened_grouping_matches_a_direct_one() -> None:
    rng = np.random.default_rng(9)
    n_act = 30
    src = rng.integers(0, n_act, 120_000)
    dst = np.minimum(rng.geometric(0.08, 120_000) - 1, n_act - 1)  # big and small groups alike
    v = rng.integers(0, 10**9, 120_000)
    by = grouping(dst * n_act + src)
    fine = group_stats(dst * n_act + src, v, by=by)  # puts v in the grouping's order, which `coarsen` shares
    coarse = by.coarsen(n_act)
    a, b = group_stats(dst, v, by=coarse), group_stats(dst, v)
    for f in ("group", "count", "total", "mean", "median", "p90", "max"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    # another array through the same groupings is put in order on its own, not taken from the shared one
    w = v[::-1].copy()
    for x, y in ((group_stats(dst, w, by=coarse), group_stats(dst, w)),
                 (group_stats(dst * n_act + src, w, by=by), group_stats(dst * n_act + src, w)),
                 (group_stats(dst * n_act + src, v, by=by), fine)):
        for f in ("group", "count", "total", "mean", "median", "p90", "max"):
            assert np.array_equal(getattr(x, f), getattr(y, f)), f
    with pytest.raises(InvalidInput):
        distinct_per_key(np.zeros(len(dst), dtype=np.int64), dst, by=coarse)
