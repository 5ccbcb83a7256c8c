"""Shared fast encoding for mining: cases and attributes as integer codes, per-case offsets, sorted arrays.

Every miner in `insight.mining` works on an `EncodedLog` instead of the pandas frame: one factorisation of
the columns it needs, events in (case, time, original position) order, and `case_start` offsets so per-case
work is `np.add.reduceat` / `np.bincount` on integer arrays rather than Python loops per event.
Build it once with `encode(log)` and pass it as `enc=` to several miners to share the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.cleaning import string_runs
from insight.eventlog.schema import ACTIVITY, CASE_ID, TIMESTAMP, EventLog

if TYPE_CHECKING:
    import pyarrow as pa

_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass
class Codes:
    """One column as integer codes (-1 = missing) plus the label of each code."""

    codes: np.ndarray  # int32 per event, in EncodedLog order
    labels: np.ndarray  # object array, labels[code]

    @property
    def n(self) -> int:
        """Number of distinct non-missing values."""
        return len(self.labels)


@dataclass
class EncodedLog:
    """An event log as integer arrays in (case, time, original position) order.

    `case[i]` is the case code of event i (non-decreasing), `case_start[c]:case_start[c+1]` the events of
    case c, `ts` the timestamps as int64 in `ts_unit` units, and `order[i]` the row of `df` event i came from.
    """

    case: np.ndarray
    case_labels: np.ndarray
    case_start: np.ndarray
    activity: Codes
    ts: np.ndarray
    ts_unit: str
    order: np.ndarray | None
    df: pd.DataFrame
    _columns: dict[str, Codes] = field(default_factory=dict, repr=False)
    _follows: dict[str, Pairs] = field(default_factory=dict, repr=False)
    _has: dict[str, bool] = field(default_factory=dict, repr=False)
    _first_act: np.ndarray | None = field(default=None, repr=False)
    _act_bits: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_events(self) -> int:
        """Number of events."""
        return len(self.case)

    @property
    def n_cases(self) -> int:
        """Number of cases."""
        return len(self.case_labels)

    @property
    def units_per_second(self) -> int:
        """How many `ts` units make a second."""
        return _UNITS_PER_SECOND[self.ts_unit]

    @property
    def case_len(self) -> np.ndarray:
        """Events per case."""
        return np.diff(self.case_start)

    @property
    def position(self) -> np.ndarray:
        """Index of each event inside its case (0 for the first event)."""
        return np.arange(self.n_events, dtype=np.int64) - np.repeat(self.case_start[:-1], self.case_len)

    def seconds(self, delta: np.ndarray) -> np.ndarray:
        """Convert int64 timestamp differences to float seconds."""
        return delta.astype(np.float64) / self.units_per_second

    def has(self, column: str) -> bool:
        """True when the frame has the column with at least one value."""
        if column not in self._has:
            self._has[column] = column in self.df.columns and _any_value(self.df[column])
        return self._has[column]

    @property
    def first_activity_occurrence(self) -> np.ndarray:
        """Mask: the event is the first of its activity in its case (cached; rework = the other events)."""
        if self._first_act is None:
            self._first_act = first_occurrence(self.case, self.activity.codes, max(1, self.activity.n))
        return self._first_act

    def activity_sets(self) -> np.ndarray | None:
        """Per case, which activities it has as a uint64 bit mask (cached); None with more than 64 activities."""
        if self.activity.n > 64 or self.n_cases == 0:
            return None
        if self._act_bits is None:
            bits = np.left_shift(np.uint64(1), self.activity.codes.astype(np.uint64))
            self._act_bits = np.bitwise_or.reduceat(bits, self.case_start[:-1])
        return self._act_bits

    def cases_per_activity(self) -> np.ndarray:
        """Number of cases each activity occurs in."""
        sets = self.activity_sets()
        if sets is None:
            return np.bincount(self.activity.codes[self.first_activity_occurrence], minlength=self.activity.n)
        one = np.uint64(1)
        return np.array(
            [np.count_nonzero(sets & (one << np.uint64(a))) for a in range(self.activity.n)], dtype=np.int64
        )

    def column(self, name: str) -> Codes:
        """Factorise another column (cached on this object); missing values get code -1."""
        if name == ACTIVITY:
            return self.activity
        if name not in self._columns:
            if name not in self.df.columns:
                raise InvalidInput(f"event log has no column {name!r}; has {list(self.df.columns)}", field=name)
            self._columns[name] = _factorize(self._values(name))
        return self._columns[name]

    def column_follows(self, name: str) -> Pairs:
        """Consecutive pairs of a column's values in each case, events without a value skipped (cached)."""
        if name not in self._follows:
            self._follows[name] = follows(self, self.column(name).codes, skip_missing=True)
        return self._follows[name]

    def _values(self, name: str) -> pd.Series:
        s = self.df[name]
        return s if self.order is None else s.iloc[self.order]

    def values(self, name: str) -> np.ndarray:
        """Raw values of a column in encoded (sorted) order."""
        return self._values(name).to_numpy()

    def case_first(self, codes: np.ndarray) -> np.ndarray:
        """Per case, the first non-missing code of an event-level code array (-1 if none)."""
        valid = codes >= 0
        big = np.iinfo(np.int64).max
        idx = np.where(valid, np.arange(self.n_events, dtype=np.int64), big)
        first = np.minimum.reduceat(idx, self.case_start[:-1]) if self.n_events else np.empty(0, np.int64)
        out = np.full(self.n_cases, -1, dtype=np.int64)
        ok = first != big
        out[ok] = codes[first[ok]]
        return out

    def case_last(self, codes: np.ndarray) -> np.ndarray:
        """Per case, the last non-missing code of an event-level code array (-1 if none)."""
        valid = codes >= 0
        idx = np.where(valid, np.arange(self.n_events, dtype=np.int64), -1)
        last = np.maximum.reduceat(idx, self.case_start[:-1]) if self.n_events else np.empty(0, np.int64)
        out = np.full(self.n_cases, -1, dtype=np.int64)
        ok = last >= 0
        out[ok] = codes[last[ok]]
        return out


def _arrow_strings(values: pd.Series) -> pa.ChunkedArray | pa.Array | None:
    """The arrow array behind a column of arrow-backed strings (None for any other column)."""
    arr = values.array
    if isinstance(values.dtype, pd.CategoricalDtype) or not hasattr(arr, "__arrow_array__"):
        return None
    import pyarrow as pa

    ca = arr.__arrow_array__()
    t = ca.type
    return ca if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) else None


def _any_missing(values: pd.Series) -> bool:
    """True when a value is missing (arrow strings: from the null count, without a pass over the values)."""
    ca = _arrow_strings(values)
    return bool(values.isna().any()) if ca is None else ca.null_count > 0


def _any_value(values: pd.Series) -> bool:
    """True when at least one value is present."""
    ca = _arrow_strings(values)
    return bool(values.notna().any()) if ca is None else ca.null_count < len(ca)


def _lower_equals(values: pd.Series, words: tuple[str, ...]) -> list[np.ndarray] | None:
    """Per word, the mask of values equal to it once lower-cased (`str(x).lower() == word`, missing: False).

    Straight on arrow strings (None for other columns): an ASCII lower-casing pass and one comparison per word.
    That agrees with `str.lower` for ASCII words without a "k": the only non-ASCII character that lower-cases to
    ASCII is the Kelvin sign (to "k"), so no other value can lower-case to such a word.
    """
    ca = _arrow_strings(values)
    if ca is None or not all(w.isascii() and w == w.lower() and "k" not in w for w in words):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    low = pc.ascii_lower(ca)
    out = []
    for w in words:
        m = pc.equal(low, pa.scalar(w, type=low.type)).fill_null(False)
        if isinstance(m, pa.ChunkedArray):
            m = m.combine_chunks()
        out.append(np.asarray(m.to_numpy(zero_copy_only=False), dtype=bool))
    return out


def _factorize(values: pd.Series) -> Codes:
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.cat.remove_unused_categories()
        return Codes(np.asarray(cat.cat.codes, dtype=np.int32), np.asarray(cat.cat.categories, dtype=object))
    arr = values.array
    if hasattr(arr, "__arrow_array__"):
        # arrow-backed strings: dictionary-encode in pyarrow directly (faster than pd.factorize)
        import pyarrow as pa

        ca = arr.__arrow_array__()
        chunk = ca.combine_chunks() if isinstance(ca, pa.ChunkedArray) else ca
        d = chunk.dictionary_encode()
        codes_pa = d.indices.fill_null(-1) if d.indices.null_count else d.indices
        return Codes(
            np.asarray(codes_pa.to_numpy(zero_copy_only=False), dtype=np.int32),
            np.asarray(d.dictionary.to_pylist(), dtype=object),
        )
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return Codes(codes.astype(np.int32, copy=False), np.asarray(uniques, dtype=object))


def _case_runs(values: pd.Series) -> tuple[Codes, np.ndarray] | None:
    """Case codes from runs of equal adjacent ids, when every case is one contiguous run (else None).

    Returns the codes (int64 here: they become EncodedLog.case as they are) and where each run starts.
    """
    arr = values.array
    if len(values) < 2 or not hasattr(arr, "__arrow_array__"):
        return None
    # ids in increasing order are distinct (the usual case: readers sort by case); in another order, checked
    runs = string_runs(arr.__arrow_array__(), unsorted=True)
    if runs is None:
        return None
    starts, heads = runs
    labels = np.asarray(heads.to_numpy(zero_copy_only=False), dtype=object)
    codes = np.repeat(np.arange(len(labels), dtype=np.int64), np.diff(np.r_[starts, len(values)]))
    return Codes(codes, labels), starts


def encode(log: EventLog, *, columns: tuple[str, ...] = ()) -> EncodedLog:
    """Encode a log once for all miners; `columns` are factorised eagerly (others lazily via `.column`)."""
    df = log.df
    if len(df) and _any_missing(df[CASE_ID]):
        row = int(np.flatnonzero(df[CASE_ID].isna().to_numpy())[0])
        raise InvalidEventLog("case id is missing", file=log.name, row=row, column=CASE_ID)
    if len(df) and _any_missing(df[ACTIVITY]):
        row = int(np.flatnonzero(df[ACTIVITY].isna().to_numpy())[0])
        raise InvalidEventLog("activity is missing", file=log.name, row=row, column=ACTIVITY)
    ts_series = df[TIMESTAMP]
    if ts_series.isna().any():
        row = int(np.flatnonzero(ts_series.isna().to_numpy())[0])
        raise InvalidEventLog("timestamp is missing", file=log.name, row=row, column=TIMESTAMP)
    unit = getattr(ts_series.dtype, "unit", "ns")
    ts = np.asarray(ts_series.array.asi8, dtype=np.int64)  # type: ignore[attr-defined]

    # Readers hand us logs sorted by case then time: then case codes are just run numbers (no hashing).
    runs = _case_runs(df[CASE_ID])
    case_c = runs[0] if runs is not None else _factorize(df[CASE_ID])
    case = np.asarray(case_c.codes, dtype=np.int64)
    # only re-sort (stably) when the log is not in (case, time) order
    order: np.ndarray | None = None
    n = len(case)
    if n > 1:
        same = case[1:] == case[:-1]
        contiguous = runs is not None or bool(np.all(case[1:] >= case[:-1]))
        time_ok = not bool(np.any((ts[1:] < ts[:-1]) & same))
        if not (contiguous and time_ok):
            order = np.lexsort((np.arange(n), ts, case))
            case = case[order]
            ts = ts[order]
    if order is not None:
        # renumber cases by first appearance in the sorted order so codes stay non-decreasing
        starts_mask = np.r_[True, case[1:] != case[:-1]] if n else np.zeros(0, bool)
        old_codes = case[starts_mask]
        remap = np.empty(case_c.n, dtype=np.int64)
        remap[old_codes] = np.arange(len(old_codes))
        case = remap[case]
        case_labels = case_c.labels[old_codes]
    else:
        case_labels = case_c.labels
    if runs is not None and order is None:
        bounds = runs[1]
    else:
        bounds = np.flatnonzero(np.r_[True, case[1:] != case[:-1]]) if n else np.zeros(0, np.int64)
    case_start = np.r_[bounds, n].astype(np.int64)

    act_series = df[ACTIVITY] if order is None else df[ACTIVITY].iloc[order]
    enc = EncodedLog(
        case=case,
        case_labels=case_labels,
        case_start=case_start,
        activity=_factorize(act_series),
        ts=ts,
        ts_unit=unit,
        order=order,
        df=df,
    )
    for c in columns:
        enc.column(c)
    return enc


def ensure_encoded(log: EventLog | None, enc: EncodedLog | None) -> EncodedLog:
    """Return `enc` when given, else encode `log` (one of the two is required)."""
    if enc is not None:
        return enc
    if log is None:
        raise InvalidInput("pass an EventLog as `log` or an EncodedLog as `enc`", field="log")
    return encode(log)


@dataclass
class Pairs:
    """Directly-follows pairs of a code array: event `src_event[j]` is followed by `dst_event[j]` in its case."""

    src_event: np.ndarray  # index of the first event of each pair
    src: np.ndarray
    dst: np.ndarray
    dst_event: np.ndarray  # index of the next kept event (src_event + 1 unless missing codes were skipped)


def follows(enc: EncodedLog, codes: np.ndarray, *, skip_missing: bool = False) -> Pairs:
    """Consecutive pairs of `codes` inside each case; with `skip_missing`, events coded -1 are dropped first."""
    if skip_missing:
        keep = np.flatnonzero(codes >= 0)
        case = enc.case[keep]
        c = codes[keep]
        i = np.flatnonzero(case[1:] == case[:-1])  # pairs (keep[i], keep[i + 1]); gathers beat four masks
        j = i + 1
        return Pairs(keep.take(i), c.take(i), c.take(j), keep.take(j))
    same = enc.case[1:] == enc.case[:-1]
    idx = np.flatnonzero(same)
    return Pairs(idx, codes[idx], codes[idx + 1], idx + 1)


def pair_counts(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count (src, dst) pairs over an alphabet of size n; returns (src, dst, count) for pairs seen."""
    key = src.astype(np.int64) * n + dst
    counts = np.bincount(key, minlength=n * n) if n * n <= 4 * len(key) + 1024 else None
    if counts is not None:
        nz = np.flatnonzero(counts)
        return nz // n, nz % n, counts[nz]
    uniq, cnt = np.unique(key, return_counts=True)
    return uniq // n, uniq % n, cnt


@dataclass
class GroupStats:
    """Per-group count, sum, mean, median, p90 and max of a float array."""

    group: np.ndarray
    count: np.ndarray
    total: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    p90: np.ndarray
    max: np.ndarray


@dataclass
class Grouping:
    """Integer keys grouped once: distinct keys (sorted), each element's group, group sizes and a stable order.

    `order` lists the elements group by group, each group's elements in array order (a linear radix sort).
    Build it with `grouping(keys)` and hand it to `group_stats` and `distinct_per_key` for the same keys,
    so several statistics over one key array share the grouping work.
    """

    keys: np.ndarray
    rank: np.ndarray
    count: np.ndarray
    _order: np.ndarray | None = field(default=None, repr=False)
    # False when `order` groups the elements but does not keep array order inside a group (see `coarsen`);
    # group_stats needs only the grouping, distinct_per_key needs the stable order
    stable: bool = True
    # arrays already put in `order` (see `grouped`), shared with the groupings made by `coarsen`
    _grouped: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    def grouped(self, values: np.ndarray) -> np.ndarray:
        """`values[self.order]`, kept for later calls with the same array object."""
        for v, g in self._grouped:
            if v is values:
                return g
        g = values[self.order]
        self._grouped.append((values, g))
        return g

    @property
    def order(self) -> np.ndarray:
        """Stable order of the elements by group (computed on first use)."""
        if self._order is None:
            self._order = stable_order(self.rank, len(self.keys))
        return self._order

    @property
    def starts(self) -> np.ndarray:
        """Offset of each group's first element in `order`."""
        return np.r_[0, np.cumsum(self.count)[:-1]].astype(np.int64)

    def coarsen(self, width: int) -> Grouping:
        """The grouping by `key // width`, reusing this order (those groups are runs of it, in key order).

        Inside a coarse group the elements keep this grouping's order (by fine key first), not array order,
        so the result is for `group_stats`, not for `distinct_per_key`.
        """
        coarse = self.keys // width
        keys, first = np.unique(coarse, return_index=True)
        of_group = np.cumsum(np.r_[False, coarse[1:] != coarse[:-1]])
        return Grouping(keys, of_group[self.rank], np.add.reduceat(self.count, first) if len(first) else first,
                        self.order, stable=False, _grouped=self._grouped)


def grouping(keys: np.ndarray, *, ordered: bool = True) -> Grouping:
    """Group non-negative integer keys (see `Grouping`); `ordered=False` leaves `order` to its first use."""
    uniq, rank, count = compact(np.asarray(keys, dtype=np.int64))
    by = Grouping(uniq, rank, count)
    if ordered:
        _ = by.order
    return by


def group_stats(
    groups: np.ndarray, values: np.ndarray, *, scale: float = 1.0, by: Grouping | None = None
) -> GroupStats:
    """Vectorised per-group statistics (quantiles interpolate linearly, like numpy's default).

    Integer `values` (e.g. raw timestamp differences) take a fast path that needs no full sort: the values
    are grouped by a linear radix sort of the group codes, large groups get their order statistics from
    `np.partition` and the small ones share one sort of packed (group, value) keys; every statistic is then
    divided by `scale` (e.g. units per second). `by` is an already built `grouping(groups)` to reuse.
    """
    if len(groups) == 0:
        e = np.zeros(0)
        return GroupStats(np.zeros(0, np.int64), np.zeros(0, np.int64), e, e, e, e, e)
    groups = np.asarray(groups, dtype=np.int64)
    if np.issubdtype(values.dtype, np.integer):
        fast = _group_stats_int(by if by is not None else grouping(groups, ordered=False),
                                values.astype(np.int64, copy=False), scale)
        if fast is not None:
            return fast
    order = np.lexsort((values, groups))
    g = groups[order]
    v = values[order].astype(np.float64) / scale
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    count = np.diff(np.r_[starts, len(g)])
    total = np.add.reduceat(v, starts)
    return GroupStats(
        group=g[starts],
        count=count,
        total=total,
        mean=total / count,
        median=_sorted_quantile(v, starts, count, 0.5),
        p90=_sorted_quantile(v, starts, count, 0.9),
        max=v[starts + count - 1],
    )


def compact(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct non-negative int keys (sorted), each element's rank among them, and the count per key."""
    kmax = int(keys.max()) if len(keys) else -1
    if len(keys) and int(keys.min()) >= 0 and kmax < 4 * len(keys) + 1_000_000:
        present = np.bincount(keys, minlength=kmax + 1)
        uniq = np.flatnonzero(present)
        rank_of = np.cumsum(present > 0) - 1
        return uniq, rank_of[keys], present[uniq]
    uniq, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
    return uniq, inv.ravel(), cnt


# Groups at least this large get their order statistics from np.partition (linear) instead of the shared sort:
# from about this size on, one partition call costs less than sorting the group's elements.
_PARTITION_MIN = 256


def _group_stats_int(by: Grouping, v: np.ndarray, scale: float) -> GroupStats | None:
    count = by.count
    ng = len(count)
    starts = by.starts
    # the sorted positions every statistic reads: median and p90 neighbours (as in _sorted_quantile), max
    p50 = 0.5 * (count - 1)
    p90 = 0.9 * (count - 1)
    lo50 = np.floor(p50).astype(np.int64)
    lo90 = np.floor(p90).astype(np.int64)
    last = count - 1
    picked = np.empty((5, ng), dtype=np.int64)
    # a short array sorts whole faster than it groups
    big = count >= _PARTITION_MIN if len(v) > _PARTITION_MIN**2 else np.zeros(ng, dtype=bool)
    small = ~big
    if small.any():
        sel = small[by.rank]
        g = by.rank[sel]
        sv = v[sel]
        vmin = int(sv.min())
        shift = max(1, (int(sv.max()) - vmin).bit_length())
        if max(1, (ng - 1).bit_length()) + shift > 62:
            return None
        key = (g << shift) | (sv - vmin)
        key.sort()
        srt = (key & ((1 << shift) - 1)) + vmin
        sub_starts = np.r_[0, np.cumsum(count[small])[:-1]]
        ks = np.stack([lo50, np.minimum(lo50 + 1, last), lo90, np.minimum(lo90 + 1, last), last])
        picked[:, small] = srt[sub_starts + ks[:, small]]
    if big.any():
        n_big = int(count[big].sum())
        if by._order is not None or 2 * n_big >= len(v):
            gv = by.grouped(v)
        else:  # mostly small groups: group only the large groups' elements
            idx = np.flatnonzero(big[by.rank])
            gv = v[idx[stable_order(by.rank[idx], ng)]]
            starts = np.zeros(ng, dtype=np.int64)
            starts[big] = np.r_[0, np.cumsum(count[big])[:-1]]
        for i, s, c, a, b in zip(np.flatnonzero(big).tolist(), starts[big].tolist(), count[big].tolist(),
                                 lo50[big].tolist(), lo90[big].tolist(), strict=True):
            # after partitioning at a <= b (a < b < c - 1 in groups this large), the elements right of a
            # are >= seg[a]: their minimum is the next order statistic; the maximum lies right of b
            seg = np.partition(gv[s : s + c], (a, b))
            picked[:, i] = (seg[a], seg[a + 1 :].min(), seg[b], seg[b + 1 :].min(), seg[b:].max())
    f = picked.astype(np.float64) / scale
    total = np.bincount(by.rank, weights=v.astype(np.float64), minlength=ng) / scale
    return GroupStats(
        group=by.keys,
        count=count,
        total=total,
        mean=total / count,
        median=f[0] + (f[1] - f[0]) * (p50 - lo50),
        p90=f[2] + (f[3] - f[2]) * (p90 - lo90),
        max=f[4],
    )


def stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of integer keys in [0, n_keys): a linear radix sort when they fit in 16 bits.

    Events are stored case-major, so a stable sort by any per-event key leaves each key's events in
    (case, time) order; most "per case and per key" questions then need no second sort.
    """
    if n_keys <= 65536:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if n_keys <= 1 << 32:
        # two stable 16-bit radix passes (low half, then high half) sort 32-bit keys in linear time
        o = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
        return o[np.argsort((keys[o] >> 16).astype(np.uint16), kind="stable")]
    return np.argsort(keys, kind="stable")


def distinct_per_key(
    outer: np.ndarray, key: np.ndarray, *, by: Grouping | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-negative keys (sorted) and in how many distinct `outer` values (e.g. cases) each occurs.

    `outer` must be non-decreasing (true for case codes in EncodedLog order and for any subset of it).
    `by` is an already built `grouping(key)` to reuse.
    """
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if by is None:
        by = grouping(key)
    if not by.stable:
        raise InvalidInput("distinct_per_key needs a grouping in array order inside each group", field="by")
    # in `order` the groups are consecutive runs (each non-empty): count, per run, its first element and every
    # element whose outer value differs from the one before it
    o = outer[by.order]
    new = np.empty(len(o), dtype=bool)
    np.not_equal(o[1:], o[:-1], out=new[1:])
    starts = by.starts
    new[starts] = True
    return by.keys, np.add.reduceat(new, starts, dtype=np.int64)


def first_occurrence(outer: np.ndarray, key: np.ndarray, n_keys: int) -> np.ndarray:
    """Boolean mask: element i is the first (in array order) with its (outer, key); `outer` non-decreasing."""
    mask = np.zeros(len(key), dtype=bool)
    if len(key) == 0:
        return mask
    order = stable_order(key, n_keys)
    k = key[order]
    o = outer[order]
    mask[order[np.r_[True, (k[1:] != k[:-1]) | (o[1:] != o[:-1])]]] = True
    return mask


def _sorted_quantile(v: np.ndarray, starts: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    pos = q * (count - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count - 1)
    frac = pos - lo
    a = v[starts + lo]
    b = v[starts + hi]
    return a + (b - a) * frac


def case_variant_ids(enc: EncodedLog, codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Variant id per case (cases with the same code sequence share an id) and each variant's first case.

    Sequences are hashed (64-bit polynomial hash mixed with the length), then every case is checked event by
    event against its variant's representative, so a hash collision can never merge variants (it falls back
    to an exact per-case key).
    """
    codes = enc.activity.codes if codes is None else codes
    n = enc.n_events
    if enc.n_cases == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = enc.position
    c = codes.astype(np.uint64) + np.uint64(1)
    maxlen = int(enc.case_len.max())
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.r_[np.uint64(1), np.full(maxlen - 1, 0x9E3779B97F4A7C15, np.uint64)], dtype=np.uint64)
        h = np.add.reduceat(c * powers[pos], enc.case_start[:-1])
        h ^= enc.case_len.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    _, first_case, vid = np.unique(h, return_index=True, return_inverse=True)
    vid = vid.ravel().astype(np.int64)
    # exactness check: each event must equal the same-position event of its variant's representative case
    rep_event = enc.case_start[first_case[vid]][enc.case] + pos if n else np.zeros(0, np.int64)
    if not np.array_equal(codes[rep_event], codes):
        return _variant_ids_exact(enc, codes)
    return vid, first_case


def _variant_ids_exact(enc: EncodedLog, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Collision fallback (astronomically rare): key each case by its byte string.
    seen: dict[bytes, int] = {}
    vid = np.empty(enc.n_cases, dtype=np.int64)
    firsts: list[int] = []
    for i in range(enc.n_cases):
        k = codes[enc.case_start[i] : enc.case_start[i + 1]].tobytes()
        if k not in seen:
            seen[k] = len(firsts)
            firsts.append(i)
        vid[i] = seen[k]
    return vid, np.asarray(firsts, dtype=np.int64)


def changes_per_case(enc: EncodedLog, codes: np.ndarray, *, pairs: Pairs | None = None) -> np.ndarray:
    """Per case, how often a non-missing code differs from the previous non-missing code (handoffs).

    `pairs` is `follows(enc, codes, skip_missing=True)` when already at hand (e.g. `enc.column_follows`).
    """
    p = follows(enc, codes, skip_missing=True) if pairs is None else pairs
    changed = p.src != p.dst
    return np.bincount(enc.case[p.src_event[changed]], minlength=enc.n_cases)


def repeats_per_case(enc: EncodedLog, codes: np.ndarray | None = None) -> np.ndarray:
    """Per case, events whose code already occurred earlier in that case (rework events)."""
    if codes is None:
        sets = enc.activity_sets()
        if sets is not None:  # events minus distinct activities
            return enc.case_len - np.bitwise_count(sets)
        is_first = enc.first_activity_occurrence
    else:
        width = int(codes.max()) + 2 if len(codes) else 1
        is_first = first_occurrence(enc.case, codes.astype(np.int64) + 1, width)
    return np.bincount(enc.case[~is_first], minlength=enc.n_cases)


def case_durations(enc: EncodedLog) -> np.ndarray:
    """Throughput time per case in seconds (last minus first event)."""
    return enc.seconds(case_durations_raw(enc))


def case_durations_raw(enc: EncodedLog) -> np.ndarray:
    """Throughput time per case as int64 in `enc.ts_unit` units."""
    if enc.n_cases == 0:
        return np.zeros(0, dtype=np.int64)
    return enc.ts[enc.case_start[1:] - 1] - enc.ts[enc.case_start[:-1]]


def case_start_ts(enc: EncodedLog) -> pd.DatetimeIndex:
    """Start timestamp per case as UTC datetimes."""
    return pd.to_datetime(enc.ts[enc.case_start[:-1]], unit=enc.ts_unit, utc=True)  # type: ignore[arg-type]


def service_times(enc: EncodedLog, *, lifecycle_column: str = "lifecycle") -> np.ndarray:
    """Per event, seconds since its matching `start` event (for `complete` events with one), else NaN.

    A complete event is matched with the immediately preceding start of the same activity in the same
    case; logs with complete timestamps only get all-NaN (service time is then unknown, not zero).
    """
    out = np.full(enc.n_events, np.nan)
    events, raw = service_pairs(enc, lifecycle_column=lifecycle_column)
    out[events] = enc.seconds(raw)
    return out


def _lifecycle_masks(enc: EncodedLog, column: str) -> tuple[np.ndarray, np.ndarray]:
    if column not in enc._columns:  # not factorised yet: compare the arrow strings, cheaper than encoding them
        fast = _lower_equals(enc._values(column), ("start", "complete"))
        if fast is not None:
            return fast[0], fast[1]
    # factorise once (cached on enc) and map the few distinct labels, instead of lower-casing every event
    lc = enc.column(column)
    low_labels = np.array([str(x).lower() for x in lc.labels] + [""], dtype=object)
    return (low_labels == "start")[lc.codes], (low_labels == "complete")[lc.codes]


def service_pairs(enc: EncodedLog, *, lifecycle_column: str = "lifecycle") -> tuple[np.ndarray, np.ndarray]:
    """Complete events that have a matching start (see `service_times`) and their durations in ts units."""
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if not enc.has(lifecycle_column):
        return empty
    is_start, is_complete = _lifecycle_masks(enc, lifecycle_column)
    if not is_start.any() or not is_complete.any():
        return empty
    idx = np.flatnonzero(is_start | is_complete)
    # a stable sort by activity keeps each activity's events in (case, time) order, so a complete event
    # right after a start of the same activity and case in that order is its match
    ev = idx[stable_order(enc.activity.codes[idx], enc.activity.n)]
    # candidates: a start right before a complete in that order (every event of `ev` is one or the other)
    st = is_start[ev]
    at = np.flatnonzero(st[:-1] & ~st[1:])
    prev, cur = ev[at], ev[at + 1]
    match = (enc.case[prev] == enc.case[cur]) & (enc.activity.codes[prev] == enc.activity.codes[cur])
    cur = cur[match]
    return cur, enc.ts[cur] - enc.ts[prev[match]]
