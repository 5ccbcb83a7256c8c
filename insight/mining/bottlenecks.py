"""Bottlenecks and rework: where cases wait longest, repeated activities and loops, and waiting states.

All times come from consecutive events of a case (complete timestamps): the wait *on an edge* A -> B is
B's time minus A's; the wait *before an activity / team* is the time from the previous event of the case to
an event of that activity / by that team; the time *in a waiting state* (an event whose label matches
`wait_pattern`, e.g. "Wait - User", "Pending customer") runs from that event to the next event of the case.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InvalidInput
from insight.eventlog.schema import ACTIVITY, GROUP, LIFECYCLE, EventLog
from insight.mining._core import (
    EncodedLog,
    case_durations,
    compact,
    distinct_per_key,
    ensure_encoded,
    follows,
    group_stats,
    repeats_per_case,
)

DEFAULT_WAIT_PATTERN = r"wait|pending|awaiting|on hold"


@dataclass
class WaitStat:
    """Waiting time attributed to one thing (an edge "A -> B", an activity or a team), in seconds."""

    name: str
    count: int
    cases: int
    total_s: float
    mean_s: float
    median_s: float
    p90_s: float
    share_of_wait: float


@dataclass
class LoopStat:
    """Rework on one activity: direct self-loops (A A), repeats (A .. A) and short loops (A B A)."""

    activity: str
    self_loops: int
    cases_with_self_loop: int
    repeats: int
    cases_with_repeat: int
    short_loops: int


@dataclass
class WaitingState:
    """Time spent in a waiting state (from the waiting event to the next event of the case)."""

    label: str
    column: str
    count: int
    cases: int
    total_s: float
    median_s: float
    p90_s: float
    share_of_throughput: float


@dataclass
class Bottlenecks:
    """Where cases wait, where work repeats, and how long cases sit in waiting states."""

    edges: list[WaitStat]
    activities: list[WaitStat]
    teams: list[WaitStat]
    loops: list[LoopStat]
    waiting_states: list[WaitingState]
    rework_rate: float
    cases_with_self_loop: int
    wait_pattern: str
    total_wait_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rework_rate": self.rework_rate,
            "cases_with_self_loop": self.cases_with_self_loop,
            "wait_pattern": self.wait_pattern,
            "total_wait_s": self.total_wait_s,
            "edges": [asdict(x) for x in self.edges],
            "activities": [asdict(x) for x in self.activities],
            "teams": [asdict(x) for x in self.teams],
            "loops": [asdict(x) for x in self.loops],
            "waiting_states": [asdict(x) for x in self.waiting_states],
            "notes": list(self.notes),
        }


def _wait_stats(
    enc: EncodedLog, keys: np.ndarray, waits: np.ndarray, cases: np.ndarray, names: list[str], total_wait: float
) -> list[WaitStat]:
    gs = group_stats(keys, waits, scale=enc.units_per_second)
    if len(gs.group) == 0:
        return []
    _, case_counts = distinct_per_key(cases, keys)  # same sorted key set as gs.group
    out = [
        WaitStat(
            name=names[int(g)],
            count=int(gs.count[i]),
            cases=int(case_counts[i]),
            total_s=float(gs.total[i]),
            mean_s=float(gs.mean[i]),
            median_s=float(gs.median[i]),
            p90_s=float(gs.p90[i]),
            share_of_wait=float(gs.total[i] / total_wait) if total_wait > 0 else 0.0,
        )
        for i, g in enumerate(gs.group)
    ]
    out.sort(key=lambda w: -w.total_s)
    return out


def find_bottlenecks(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    wait_pattern: str = DEFAULT_WAIT_PATTERN,
    wait_columns: tuple[str, ...] = (ACTIVITY, LIFECYCLE),
    team_column: str = GROUP,
    top: int | None = 20,
) -> Bottlenecks:
    """Rank edges, activities and teams by total waiting time; count loops and time in waiting states.

    `wait_pattern` (regex, case-insensitive) is matched against the labels of each of `wait_columns` that the
    log has (BPIC 2013 keeps "Wait - User" in the lifecycle / sub-status column). `top` limits each list.
    """
    try:
        rx = re.compile(wait_pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidInput(f"wait_pattern is not a valid regex: {exc}", field="wait_pattern") from exc
    enc = ensure_encoded(log, enc)
    codes = enc.activity.codes
    labels = [str(x) for x in enc.activity.labels]
    n_act = enc.activity.n
    pairs = follows(enc, codes)
    later = pairs.src_event + 1
    waits = enc.ts[later] - enc.ts[pairs.src_event]  # int64 in ts units; stats scale to seconds
    total_wait = float(waits.sum()) / enc.units_per_second
    pair_case = enc.case[pairs.src_event]
    notes: list[str] = []

    ekey = pairs.src.astype(np.int64) * n_act + pairs.dst
    used, remap, _ = compact(ekey)
    edge_names = [f"{labels[int(k) // n_act]} -> {labels[int(k) % n_act]}" for k in used]
    edges = _wait_stats(enc, remap, waits, pair_case, edge_names, total_wait)
    acts = _wait_stats(enc, pairs.dst.astype(np.int64), waits, pair_case, labels, total_wait)

    teams: list[WaitStat] = []
    if enc.has(team_column):
        tc = enc.column(team_column)
        t_later = tc.codes[later]
        ok = t_later >= 0
        teams = _wait_stats(
            enc, t_later[ok].astype(np.int64), waits[ok], pair_case[ok], [str(x) for x in tc.labels], total_wait
        )
    else:
        notes.append(f"no {team_column!r} column: team waits not computed")

    # loops
    selfl = pairs.src == pairs.dst
    self_count = np.bincount(pairs.src[selfl], minlength=n_act)
    self_cases = np.bincount(
        np.unique(pair_case[selfl].astype(np.int64) * n_act + pairs.src[selfl]) % max(n_act, 1), minlength=n_act
    )
    key = enc.case.astype(np.int64) * n_act + codes
    _, first_idx = np.unique(key, return_index=True)
    is_repeat = np.ones(enc.n_events, dtype=bool)
    is_repeat[first_idx] = False
    rep_count = np.bincount(codes[is_repeat], minlength=n_act)
    rep_cases = np.bincount(np.unique(key[is_repeat]) % max(n_act, 1), minlength=n_act)
    # A B A with A != B: event i and i+2 in the same case with equal activities and a different one between
    if enc.n_events > 2:
        same2 = enc.case[2:] == enc.case[:-2]
        aba = same2 & (codes[2:] == codes[:-2]) & (codes[1:-1] != codes[:-2])
        short = np.bincount(codes[:-2][aba], minlength=n_act)
    else:
        short = np.zeros(n_act, dtype=np.int64)
    loops = [
        LoopStat(
            activity=labels[a],
            self_loops=int(self_count[a]),
            cases_with_self_loop=int(self_cases[a]),
            repeats=int(rep_count[a]),
            cases_with_repeat=int(rep_cases[a]),
            short_loops=int(short[a]),
        )
        for a in range(n_act)
        if rep_count[a] or short[a]
    ]
    loops.sort(key=lambda x: -x.repeats)
    rework_rate = float((repeats_per_case(enc) > 0).mean()) if enc.n_cases else 0.0
    cases_self = int(len(np.unique(pair_case[selfl])))

    # waiting states: time from a matching event to the next event of its case
    throughput = float(case_durations(enc).sum())
    states: list[WaitingState] = []
    src_event = pairs.src_event
    for col in wait_columns:
        if not enc.has(col):
            continue
        cc = enc.column(col)
        hit = np.flatnonzero([bool(rx.search(str(x))) for x in cc.labels])
        if len(hit) == 0:
            continue
        lab = cc.codes[src_event]
        m = np.isin(lab, hit)
        if not m.any():
            continue
        gs = group_stats(lab[m].astype(np.int64), waits[m], scale=enc.units_per_second)
        for i, g in enumerate(gs.group):
            sel = m & (lab == g)
            states.append(
                WaitingState(
                    label=str(cc.labels[g]),
                    column=col,
                    count=int(gs.count[i]),
                    cases=int(len(np.unique(pair_case[sel]))),
                    total_s=float(gs.total[i]),
                    median_s=float(gs.median[i]),
                    p90_s=float(gs.p90[i]),
                    share_of_throughput=float(gs.total[i] / throughput) if throughput > 0 else 0.0,
                )
            )
    states.sort(key=lambda s: -s.total_s)
    if not states:
        notes.append(f"no activity or status matched the waiting-state pattern {wait_pattern!r}")

    def cut(xs: list[Any]) -> list[Any]:
        return xs if top is None else xs[:top]

    return Bottlenecks(
        edges=cut(edges),
        activities=cut(acts),
        teams=cut(teams),
        loops=cut(loops),
        waiting_states=cut(states),
        rework_rate=rework_rate,
        cases_with_self_loop=cases_self,
        wait_pattern=wait_pattern,
        total_wait_s=total_wait,
        notes=notes,
    )
