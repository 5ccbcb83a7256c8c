"""Variants: distinct activity sequences with volume, throughput time, handoffs, rework and a cost ranking.

Cost counts time and work: each case-hour at `hour_cost`, each handoff between teams and each event (a touch)
at their own price, all in the same unit. By default a handoff is priced like half an hour and a touch like six
minutes of `hour_cost`, because re-reading a case and acting on it is work whatever the clock says.

The **happy path** is the most frequent variant. Costly paths are ranked by their *excess* cost over it: the
extra per-case cost times the cases that took the path, among variants with at least `min_support` cases (so
one odd case does not top the list).

On an extract with unfinished cases (`finished` mask), a path's times, its cost and the happy path come from its
finished cases only: an open case's duration is a lower bound and its path a prefix of one not yet known. Every
case still counts in `cases` and `share`, so each case keeps its variant; `duration_basis` says which basis the
times use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from core.errors import InvalidInput
from insight.eventlog.schema import GROUP, RESOURCE, EventLog
from insight.mining._core import (
    EncodedLog,
    case_durations_raw,
    case_variant_ids,
    changes_per_case,
    ensure_encoded,
    group_stats,
    repeats_per_case,
)


@dataclass
class CostModel:
    """What a case costs: time at `hour_cost` per hour, plus `handoff_cost` per handoff and `touch_cost` per event.

    `time_basis` picks the variant's typical case time (median or mean throughput) for the time part.
    """

    hour_cost: float = 1.0
    handoff_cost: float = 0.5
    touch_cost: float = 0.1
    time_basis: Literal["median", "mean"] = "median"
    # Variants with fewer cases are listed but never ranked among the costly paths.
    min_support: int = 10

    def __post_init__(self) -> None:
        if self.time_basis not in ("median", "mean"):
            raise InvalidInput("time_basis must be 'median' or 'mean'", field="time_basis")
        for name in ("hour_cost", "handoff_cost", "touch_cost"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be >= 0", field=name)
        if self.min_support < 1:
            raise InvalidInput("min_support must be >= 1", field="min_support")


@dataclass(slots=True)
class Variant:
    """One variant (distinct activity sequence) with its volume, time, handoffs, rework and cost."""

    rank: int
    activities: tuple[str, ...]
    cases: int
    share: float
    median_s: float
    p90_s: float
    mean_s: float
    events_per_case: float
    handoffs_per_case: float
    rework_per_case: float
    cost: float
    example_case: str
    cost_per_case: float = 0.0
    excess_cost: float = 0.0  # (cost per case - the happy path's) x finished cases
    happy_path: bool = False
    # Cases of the path that reached an end: the ones its times and cost are measured on.
    finished_cases: int = -1

    def __post_init__(self) -> None:
        if self.finished_cases < 0:
            self.finished_cases = self.cases

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["activities"] = list(self.activities)
        return d


@dataclass
class _Rows:
    """A variant table's columns in rank order; `Variant` objects are made from them on first use.

    `seq[offs[i]:offs[i + 1]]` are the activity codes of variant i (labels in `labels`).
    """

    labels: np.ndarray
    seq: np.ndarray
    offs: np.ndarray
    cases: np.ndarray
    share: np.ndarray
    median_s: np.ndarray
    p90_s: np.ndarray
    mean_s: np.ndarray
    events_per_case: np.ndarray
    handoffs_per_case: np.ndarray
    rework_per_case: np.ndarray
    cost: np.ndarray
    example_case: np.ndarray
    cost_per_case: np.ndarray
    excess_cost: np.ndarray
    happy_path: np.ndarray
    finished_cases: np.ndarray
    _acts: list[tuple[str, ...]] | None = None

    def activities(self) -> list[tuple[str, ...]]:
        """Each variant's activity sequence (built once)."""
        if self._acts is None:
            names = self.labels[self.seq].tolist()
            offs = self.offs.tolist()
            self._acts = list(map(tuple, map(names.__getitem__, map(slice, offs, offs[1:]))))
        return self._acts

    def build(self) -> list[Variant]:
        """The `Variant` objects, positionally in field order (keyword calls per variant cost more)."""
        return list(map(
            Variant, range(1, len(self.cases) + 1), self.activities(), self.cases.tolist(), self.share.tolist(),
            self.median_s.tolist(), self.p90_s.tolist(), self.mean_s.tolist(), self.events_per_case.tolist(),
            self.handoffs_per_case.tolist(), self.rework_per_case.tolist(), self.cost.tolist(),
            map(str, self.example_case.tolist()), self.cost_per_case.tolist(), self.excess_cost.tolist(),
            self.happy_path.tolist(), self.finished_cases.tolist(),
        ))


class VariantTable:
    """All variants of a log ranked by cost (highest first).

    `mine_variants` hands the rows over as arrays; the `Variant` objects are built when `variants` is first
    read (a log can have ~10^5 variants), while `n_variants` and `counts()` need no objects.
    """

    def __init__(
        self,
        variants: list[Variant] | None,
        n_cases: int,
        cost_model: CostModel,
        handoff_column: str | None,
        total_cost: float,
        duration_basis: str = "all cases",
        unfinished_cases: int = 0,
        *,
        rows: _Rows | None = None,
    ) -> None:
        if (variants is None) == (rows is None):
            raise InvalidInput("pass the variants as a list or as rows, not both", field="variants")
        self._variants = variants
        self._rows = rows
        self.n_cases = n_cases
        self.cost_model = cost_model
        self.handoff_column = handoff_column
        self.total_cost = total_cost
        # Which cases the times, costs and the happy path are measured on (all cases, or the finished ones).
        self.duration_basis = duration_basis
        self.unfinished_cases = unfinished_cases

    @property
    def variants(self) -> list[Variant]:
        """All variants, highest cost first (rank 1 first)."""
        if self._variants is None:
            assert self._rows is not None
            self._variants = self._rows.build()
        return self._variants

    @variants.setter
    def variants(self, value: list[Variant]) -> None:
        self._variants = value
        self._rows = None

    def __repr__(self) -> str:
        return (f"VariantTable(n_variants={self.n_variants}, n_cases={self.n_cases}, "
                f"handoff_column={self.handoff_column!r}, total_cost={self.total_cost!r}, "
                f"duration_basis={self.duration_basis!r}, unfinished_cases={self.unfinished_cases})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VariantTable):
            return NotImplemented
        return (self.variants, self.n_cases, self.cost_model, self.handoff_column, self.total_cost,
                self.duration_basis, self.unfinished_cases) == (
            other.variants, other.n_cases, other.cost_model, other.handoff_column, other.total_cost,
            other.duration_basis, other.unfinished_cases)

    __hash__ = None  # type: ignore[assignment]

    @property
    def happy(self) -> Variant | None:
        """The happy path: the variant most finished cases followed."""
        return next((v for v in self.variants if v.happy_path), None)

    def costly(self, n: int = 10) -> list[Variant]:
        """The n paths with the largest excess cost over the happy path, among well-supported variants."""
        ok = [v for v in self.variants if not v.happy_path and v.finished_cases >= self.cost_model.min_support
              and v.excess_cost > 0]
        return sorted(ok, key=lambda v: (-v.excess_cost, -v.cases))[:n]

    @property
    def n_variants(self) -> int:
        """Number of distinct variants."""
        if self._variants is None and self._rows is not None:
            return len(self._rows.cases)
        return len(self.variants)

    def counts(self) -> dict[tuple[str, ...], int]:
        """Case count per variant, keyed like `pm4py.get_variants`."""
        if self._variants is None and self._rows is not None:
            return dict(zip(self._rows.activities(), self._rows.cases.tolist(), strict=True))
        return {v.activities: v.cases for v in self.variants}

    def top(self, n: int = 10, *, by: Literal["cost", "cases"] = "cost") -> list[Variant]:
        """The n highest-cost (or most frequent) variants."""
        key = (lambda v: -v.cost) if by == "cost" else (lambda v: -v.cases)
        return sorted(self.variants, key=key)[:n]

    def to_dict(self, *, limit: int | None = 50) -> dict[str, Any]:
        """JSON-ready form (the `limit` highest-cost variants; None for all)."""
        vs = self.variants if limit is None else self.variants[:limit]
        return {
            "n_cases": self.n_cases,
            "n_variants": self.n_variants,
            "handoff_column": self.handoff_column,
            "total_cost": self.total_cost,
            "duration_basis": self.duration_basis,
            "unfinished_cases": self.unfinished_cases,
            "cost_model": asdict(self.cost_model),
            "happy_path": self.happy.to_dict() if self.happy else None,
            "costly_paths": [v.to_dict() for v in self.costly(limit or 50)],
            "variants": [v.to_dict() for v in vs],
        }


def _handoff_column(enc: EncodedLog, column: str | None) -> str | None:
    if column is not None:
        if not enc.has(column):
            raise InvalidInput(f"handoff column {column!r} is absent or empty", field="handoff_column")
        return column
    for c in (GROUP, RESOURCE):
        if enc.has(c):
            return c
    return None


def mine_variants(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    cost_model: CostModel | None = None,
    handoff_column: str | None = None,
    finished: np.ndarray | None = None,
) -> VariantTable:
    """Variants with case count, share, median/p90 throughput, handoffs, rework and cost, high cost first.

    Handoffs count changes of `handoff_column` between consecutive events that have a value (default: the
    `group` column, else `resource`); rework counts events repeating an activity already seen in the case.
    Cost = cases x typical time (hours) x hour_cost + handoffs x handoff_cost + events x touch_cost; each
    variant also carries its cost per case and its excess over the happy path (see the module docstring).
    `finished` (one flag per case, in encoded order) measures times, costs and the happy path on finished cases.
    """
    enc = ensure_encoded(log, enc)
    cm = cost_model or CostModel()
    hcol = _handoff_column(enc, handoff_column)
    vid, first_case = case_variant_ids(enc)
    nv = len(first_case)
    n_cases = enc.n_cases
    fin = np.ones(n_cases, dtype=bool) if finished is None else np.asarray(finished, dtype=bool)
    if len(fin) != n_cases:
        raise InvalidInput("finished mask must have one entry per case", field="finished")
    all_fin = bool(fin.all())
    cases = np.bincount(vid, minlength=nv).astype(np.int64)
    dur = case_durations_raw(enc)
    if all_fin:
        stats = group_stats(vid, dur, scale=enc.units_per_second)  # groups come out sorted 0..nv-1, all present
        med, p90, mean = stats.median, stats.p90, stats.mean
    else:
        # Only the groups with a finished case come out: spread them back, NaN for paths with none.
        stats = group_stats(vid[fin], dur[fin], scale=enc.units_per_second)
        med, p90, mean = (np.full(nv, np.nan) for _ in range(3))
        med[stats.group], p90[stats.group], mean[stats.group] = stats.median, stats.p90, stats.mean
    fcases = np.bincount(vid[fin], minlength=nv).astype(np.int64)
    ev_case = enc.case_len.astype(float)
    hand_case = (
        changes_per_case(enc, enc.column(hcol).codes, pairs=enc.column_follows(hcol)).astype(float)
        if hcol
        else np.zeros(n_cases)
    )
    ev = np.bincount(vid, weights=ev_case, minlength=nv)
    hand = np.bincount(vid, weights=hand_case, minlength=nv)
    rework = np.bincount(vid, weights=repeats_per_case(enc), minlength=nv)
    # Cost of the finished cases of each path (all cases when every case finished).
    ev_f = ev if all_fin else np.bincount(vid[fin], weights=ev_case[fin], minlength=nv)
    hand_f = hand if all_fin else np.bincount(vid[fin], weights=hand_case[fin], minlength=nv)
    t = np.nan_to_num(med if cm.time_basis == "median" else mean)
    cost = fcases * t / 3600.0 * cm.hour_cost + hand_f * cm.handoff_cost + ev_f * cm.touch_cost
    per_case = np.where(fcases > 0, cost / np.maximum(fcases, 1), np.nan)
    happy = int(np.lexsort((np.arange(nv), -cases, -fcases))[0]) if nv and fcases.any() else -1
    excess = np.nan_to_num((per_case - per_case[happy]) * fcases) if happy >= 0 else np.zeros(nv)
    order = np.lexsort((-cases, -cost))
    # the rows stay arrays here: `VariantTable.variants` makes the objects when first read
    o = order
    rep_case = first_case[o]
    starts = enc.case_start[rep_case]
    lens = enc.case_start[rep_case + 1] - starts
    offs = np.r_[0, np.cumsum(lens)].astype(np.int64)
    # all representative sequences in one gather
    rep = np.repeat(starts - offs[:-1], lens) + np.arange(offs[-1])
    rows = _Rows(
        labels=np.array([str(x) for x in enc.activity.labels], dtype=object),
        seq=enc.activity.codes[rep],
        offs=offs,
        cases=cases[o],
        share=cases[o] / max(1, n_cases),
        median_s=med[o],
        p90_s=p90[o],
        mean_s=mean[o],
        events_per_case=ev[o] / cases[o],
        handoffs_per_case=hand[o] / cases[o],
        rework_per_case=rework[o] / cases[o],
        cost=cost[o],
        example_case=enc.case_labels[rep_case],
        cost_per_case=per_case[o],
        excess_cost=excess[o],
        happy_path=o == happy,
        finished_cases=fcases[o],
    )
    n_open = int(n_cases - fin.sum())
    basis = "all cases" if finished is None else (
        f"all {n_cases:,} cases (all finished)" if not n_open else
        f"{n_cases - n_open:,} finished cases ({n_open:,} unfinished cases left out of times and costs: their "
        "durations are only lower bounds)")
    return VariantTable(
        None,
        n_cases=n_cases,
        cost_model=cm,
        handoff_column=hcol,
        total_cost=float(cost.sum()),
        duration_basis=basis,
        unfinished_cases=n_open,
        rows=rows,
    )


def variant_of_cases(log: EventLog | None = None, *, enc: EncodedLog | None = None) -> dict[str, tuple[str, ...]]:
    """Map each case id to its activity sequence (handy for drill-down; builds Python tuples per case)."""
    enc = ensure_encoded(log, enc)
    vid, first_case = case_variant_ids(enc)
    codes = enc.activity.codes
    labels = enc.activity.labels
    seqs = [
        tuple(str(x) for x in labels[codes[enc.case_start[c] : enc.case_start[c + 1]]]) for c in first_case
    ]
    return {str(cid): seqs[v] for cid, v in zip(enc.case_labels, vid, strict=True)}
