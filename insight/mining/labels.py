"""Training labels mined from an event log: per case (resolving team, misrouted, outcome) and per prefix.

The routing and prediction models (insight.models) train on these, so the definitions live in one place:

* **first team**: the team the case was first assigned to: the first non-empty `group`, skipping teams that
  only held the case before its first *assignment* step (activity matching `assignment_pattern`, e.g. "Assign
  to team": the service desk that logged and triaged it) and groups listed in `intake_groups`.
* **resolving team**: the group at the case's last *resolve* event (activity matching `resolve_pattern`); when the
  case has none, the group at its last *close* event; else the last non-empty group. It is never simply the first
  team: a ticket that went L1 -> Billing L2 and was solved there is labelled "Billing L2".
* **consulted teams** (group matching `consult_group_pattern`, default: names starting with "Approv") sign off
  without owning the case; they are left out of team sequences.
* **reassignments**: how many times the team changed along the case up to the resolving event (consecutive
  repeats collapsed; a hand-back after resolution, e.g. to the desk that closes tickets, is not counted).
  A change whose first event is an escalate step (`escalate_pattern`) is an **escalation**; every other change
  is a **transfer**.
* **misrouted**: the case was transferred at least once, or the resolving team differs from the first team
  without an escalation explaining it. (Logs without escalate steps, such as BPIC 2013: misrouted = reassigned.)
  This is the training label of the misroute model (insight.models.misroute, insight.training) and keeps that
  meaning. It is not what a report calls avoidable: reports, the web findings and the misrouting alert use the
  transfer taxonomy of insight.mining.misrouting (per case `transfer_kind` / `avoidable`), where an escalation
  to a line that resolved the case is justified, not misrouted.
* **outcome**: ``reopened`` (a reopen activity), else ``escalated`` (an escalate activity, or the case reached a
  higher support line than it started in), else ``resolved`` (a resolve or close activity), else ``open``.
* **per prefix** (every prefix of every case): the next activity, with an explicit end-of-case class
  (`END_OF_CASE`), and the remaining time to the case's last event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, GROUP, EventLog
from insight.mining._core import EncodedLog, encode

END_OF_CASE = "<END>"

OUTCOMES = ("resolved", "escalated", "reopened", "open")

# Support-line naming rules seen in real logs: BPIC 2013 "G230 2nd" / "V5 3rd", the simulator's "Billing L2".
_LINE_RULES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"(?:\b|_)(?:3rd|L3|tier\s*3|third)\b", re.IGNORECASE), 3),
    (re.compile(r"(?:\b|_)(?:2nd|L2|tier\s*2|second)\b", re.IGNORECASE), 2),
    (re.compile(r"(?:\b|_)(?:1st|L1|tier\s*1|first)\b", re.IGNORECASE), 1),
)


def support_line(group: Any, *, mapping: dict[str, int] | None = None, default: int | None = 1) -> int | None:
    """Support line (1, 2, 3) of a team from an explicit mapping, else from its name suffix, else `default`."""
    if group is None or (isinstance(group, float) and np.isnan(group)) or group is pd.NA:
        return None
    name = str(group)
    if mapping is not None and name in mapping:
        return int(mapping[name])
    for rx, line in _LINE_RULES:
        if rx.search(name):
            return line
    return default


def support_lines(groups: Any, *, mapping: dict[str, int] | None = None) -> dict[str, int] | None:
    """Line of every distinct team, or None when neither a mapping nor any name suffix tells lines apart.

    Unsuffixed teams count as first line only when some team carries a 2nd/3rd-line suffix (BPIC 2013 style),
    so a log without any line information is not silently treated as all first line.
    """
    names = [str(g) for g in pd.unique(pd.Series(groups).dropna())]
    if mapping:
        return {n: int(mapping.get(n, support_line(n, default=1) or 1)) for n in names}
    found = {n: support_line(n, default=None) for n in names}
    if not any(v is not None and v > 1 for v in found.values()):
        return None
    return {n: (v if v is not None else 1) for n, v in found.items()}


@dataclass
class LabelConfig:
    """How activities are read as resolve / close / escalate / reopen steps (regexes, case-insensitive)."""

    resolve_pattern: str = r"resolv|solved|solution accepted|in call"
    close_pattern: str = r"clos|complete|done"
    escalate_pattern: str = r"escalat"
    reopen_pattern: str = r"reopen|re-open"
    intake_groups: tuple[str, ...] = ()
    # The dispatch step: teams that only held the case before it (logging, triage) are intake, not first team.
    assignment_pattern: str | None = r"^(assign|route|dispatch)(ed)?( to (a )?(team|group|queue))?$"
    # Teams that are consulted without taking the case (an approvals desk signs off, the owner keeps the ticket);
    # their events are left out of team sequences so a sign-off is not a reassignment or a ping-pong.
    consult_group_pattern: str | None = r"^approv"
    line_mapping: dict[str, int] | None = None
    end_label: str = END_OF_CASE


@dataclass
class CaseLabels:
    """One row per case (index `case_id`).

    Columns: start, end, throughput_s, n_events, first_team, resolving_team, resolved_at (time of the event that
    defines the resolving team), teams (the team sequence joined
    with " > "), n_teams, reassignments, transfers, escalations, misrouted, first_line, max_line, resolving_line, outcome.
    Team columns are missing values when the log has no `group` column.
    """

    df: pd.DataFrame
    has_groups: bool
    lines: dict[str, int] | None = None
    # One row per team segment (consecutive events of one team in one case): case_id, case (int code, the
    # case's row number in `df`), seq, team, pos, start, end, n_events, counted (before resolution, not intake).
    segments: pd.DataFrame | None = None
    # Position (in the shared encoded event order) of each case's resolving event, -1 if none.
    resolve_pos: np.ndarray | None = None

    @property
    def misrouted_share(self) -> float:
        """Share of cases flagged misrouted (0 when the log has no teams)."""
        if not self.has_groups or self.df.empty:
            return 0.0
        return float(self.df["misrouted"].fillna(False).astype(bool).mean())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (not the per-case rows)."""
        d = self.df
        return {
            "cases": len(d),
            "has_groups": self.has_groups,
            "misrouted_share": round(self.misrouted_share, 4),
            "reassigned_cases": int((d["reassignments"].fillna(0) > 0).sum()) if self.has_groups else 0,
            "outcomes": {k: int(v) for k, v in d["outcome"].value_counts().items()},
            "resolving_teams": {
                str(k): int(v) for k, v in d["resolving_team"].value_counts().head(20).items()
            } if self.has_groups else {},
        }


@dataclass
class PrefixLabels:
    """One row per prefix of every case (prefix = the case's first `prefix_len` events).

    Columns: case_id, prefix_len, row (position of the prefix's last event in `log.df`), activity (last
    activity of the prefix), timestamp, next_activity (`end_label` after the last event), elapsed_s,
    remaining_s (to the case's last event).
    """

    df: pd.DataFrame
    end_label: str = END_OF_CASE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        d = self.df
        return {
            "prefixes": len(d),
            "classes": int(d["next_activity"].nunique()),
            "end_label": self.end_label,
            "mean_remaining_h": round(float(d["remaining_s"].mean() / 3600.0), 3) if len(d) else 0.0,
        }


@dataclass
class TrainingLabels:
    """Case and prefix labels of one log."""

    cases: CaseLabels
    prefixes: PrefixLabels
    config: LabelConfig = field(default_factory=LabelConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"cases": self.cases.to_dict(), "prefixes": self.prefixes.to_dict()}


@dataclass
class _Sorted:
    """The log's events in case/time order with per-case offsets (internal)."""

    case: np.ndarray  # case code per event, non-decreasing
    case_ids: np.ndarray  # case id per code
    starts: np.ndarray  # first event position per case
    ends: np.ndarray  # one past the last event per case
    order: np.ndarray  # positions in log.df of each sorted event
    activity: np.ndarray  # str activity per sorted event
    ts_ns: np.ndarray  # int64 ns per sorted event
    enc: EncodedLog  # the shared encoding (activity / group codes)


def _sorted_events(log: EventLog, enc: EncodedLog | None = None) -> _Sorted:
    # Reuse the shared mining encoding (one sort / factorisation for every miner when `enc` is passed).
    e = enc if enc is not None else encode(log)
    n = e.n_events
    order = np.arange(n, dtype=np.int64) if e.order is None else np.asarray(e.order, dtype=np.int64)
    scale = 1_000_000_000 // e.units_per_second
    return _Sorted(
        case=e.case,
        case_ids=np.asarray(e.case_labels, dtype=object),
        starts=e.case_start[:-1],
        ends=e.case_start[1:],
        order=order,
        activity=np.asarray([str(x) for x in e.activity.labels], dtype=object)[e.activity.codes]
        if n
        else np.zeros(0, dtype=object),
        ts_ns=e.ts.astype(np.int64) * scale,
        enc=e,
    )


def _last_per_case(case_of_event: np.ndarray, mask: np.ndarray, n_cases: int) -> np.ndarray:
    """Sorted-position of the last masked event per case, -1 where none."""
    out = np.full(n_cases, -1, dtype=np.int64)
    pos = np.flatnonzero(mask)
    # Positions ascend, so a plain fancy assignment leaves the last one per case.
    out[case_of_event[pos]] = pos
    return out


def _utc(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 nanoseconds since the epoch as a UTC DatetimeIndex (no per-element parsing)."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")


def _first_per_case(case_of_event: np.ndarray, mask: np.ndarray, n_cases: int) -> np.ndarray:
    """Sorted-position of the first masked event per case, -1 where none."""
    out = np.full(n_cases, -1, dtype=np.int64)
    pos = np.flatnonzero(mask)[::-1]
    # Reversed, so the fancy assignment leaves the first one per case.
    out[case_of_event[pos]] = pos
    return out


def _match_codes(codes: np.ndarray, labels: np.ndarray, pattern: str | None) -> np.ndarray:
    """Per event: does its label (given as a code into `labels`, -1 = missing) match the regex?"""
    if not pattern or len(codes) == 0:
        return np.zeros(len(codes), dtype=bool)
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidInput(f"label pattern {pattern!r} is not a valid regex: {exc}", field="pattern") from exc
    hit = np.array([bool(rx.search(str(u))) for u in labels] + [False], dtype=bool)
    return hit[codes]  # code -1 picks the trailing False


def usable_teams(teams: np.ndarray, cfg: LabelConfig) -> np.ndarray:
    """Per team name: does it count as a team that holds the case (not blank, not a consulted desk)?"""
    usable = np.array([len(str(t).strip()) > 0 for t in teams], dtype=bool)
    if cfg.consult_group_pattern:
        usable &= ~_match_codes(np.arange(len(teams)), teams, cfg.consult_group_pattern)
    return usable


def _match(activities: np.ndarray, pattern: str) -> np.ndarray:
    if not pattern:
        return np.zeros(len(activities), dtype=bool)
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidInput(f"label pattern {pattern!r} is not a valid regex: {exc}", field="pattern") from exc
    # Hash-factorise first so the regex runs once per distinct label, not once per event.
    inv, uniq = pd.factorize(pd.Series(activities, dtype=object))
    hit = np.array([bool(rx.search(str(u))) for u in uniq], dtype=bool)
    return hit[inv] if len(uniq) else np.zeros(len(activities), dtype=bool)


def case_labels(
    log: EventLog, *, config: LabelConfig | None = None, enc: EncodedLog | None = None
) -> CaseLabels:
    """Per-case labels: first and resolving team, team sequence, reassignments, misrouted flag, outcome."""
    cfg = config or LabelConfig()
    s = _sorted_events(log, enc)
    n_cases = len(s.starts)
    start = s.ts_ns[s.starts] if n_cases else np.zeros(0, dtype=np.int64)
    end = s.ts_ns[s.ends - 1] if n_cases else np.zeros(0, dtype=np.int64)
    out = pd.DataFrame(
        {
            "start": _utc(start),
            "end": _utc(end),
            "throughput_s": (end - start) / 1e9,
            "n_events": (s.ends - s.starts).astype(np.int64),
        },
        index=pd.Index(s.case_ids, name=CASE_ID),
    )
    resolve = _match_codes(s.enc.activity.codes, s.enc.activity.labels, cfg.resolve_pattern)
    close = _match_codes(s.enc.activity.codes, s.enc.activity.labels, cfg.close_pattern)
    reopen = _match_codes(s.enc.activity.codes, s.enc.activity.labels, cfg.reopen_pattern)
    escalate = _match_codes(s.enc.activity.codes, s.enc.activity.labels, cfg.escalate_pattern)

    def any_per_case(mask: np.ndarray) -> np.ndarray:
        return np.bincount(s.case[mask], minlength=n_cases) > 0

    has_groups = log.has(GROUP)
    lines: dict[str, int] | None = None
    segments: pd.DataFrame | None = None
    resolve_pos: np.ndarray | None = None
    escalated_by_line = np.zeros(n_cases, dtype=bool)
    if has_groups:
        # Work on the team's integer codes; strings only per distinct team.
        gc = s.enc.column(GROUP)
        glabels = np.asarray([str(x) for x in gc.labels], dtype=object)
        gcode = gc.codes.astype(np.int64)
        usable = np.r_[usable_teams(glabels, cfg), False]  # code -1 (no team) picks the trailing False
        gmask = usable[gcode]
        is_intake = np.isin(glabels, np.asarray(cfg.intake_groups, dtype=object)) if cfg.intake_groups else np.zeros(
            len(glabels), dtype=bool
        )
        intake = np.r_[is_intake, False][gcode] & gmask
        group = np.r_[glabels, np.array([None], dtype=object)][gcode]
        # Team segments: non-empty group rows where the case starts or the team differs from the previous team.
        gpos = np.flatnonzero(gmask)
        gcase = s.case[gpos]
        gcodes_kept = gcode[gpos]
        new_seg = np.r_[True, (gcase[1:] != gcase[:-1]) | (gcodes_kept[1:] != gcodes_kept[:-1])] if len(
            gpos
        ) else np.zeros(0, dtype=bool)
        seg_case = gcase[new_seg]
        seg_name = glabels[gcodes_kept[new_seg]] if len(gpos) else np.zeros(0, dtype=object)
        seg_pos = gpos[new_seg]
        seg_intake = intake[gpos][new_seg]
        if cfg.assignment_pattern and len(seg_pos):
            # Segments that end before the case's first assignment step only dispatched it (e.g. a service desk
            # logging and triaging the ticket); the team the ticket is assigned to is the first team.
            assign_pos = _first_per_case(s.case, _match_codes(s.enc.activity.codes, s.enc.activity.labels, cfg.assignment_pattern) & gmask, n_cases)
            row_start = np.flatnonzero(new_seg)
            seg_last_pos = gpos[np.r_[row_start[1:], len(gpos)] - 1]
            seg_intake = seg_intake | (seg_last_pos < assign_pos[seg_case])
        n_seg = np.bincount(seg_case, minlength=n_cases)
        # First team: first segment that is not an intake desk; fall back to the first segment.
        first = np.full(n_cases, None, dtype=object)
        seg_idx = np.arange(len(seg_case))
        if len(seg_case):
            firsts = np.flatnonzero(np.r_[True, seg_case[1:] != seg_case[:-1]])
            first[seg_case[firsts]] = seg_name[firsts]
            non_intake = seg_idx[~seg_intake]
            if len(non_intake):
                nc = seg_case[non_intake]
                keep = np.r_[True, nc[1:] != nc[:-1]]
                first[nc[keep]] = seg_name[non_intake[keep]]
        # Resolving team: group at the last resolve event, else last close event, else last non-empty group.
        res_pos = _last_per_case(s.case, resolve & gmask, n_cases)
        close_pos = _last_per_case(s.case, close & gmask, n_cases)
        last_pos = _last_per_case(s.case, gmask, n_cases)
        pick = np.where(res_pos >= 0, res_pos, np.where(close_pos >= 0, close_pos, last_pos))
        resolving = np.full(n_cases, None, dtype=object)
        resolve_pos = pick
        ok = pick >= 0
        resolving[ok] = group[pick[ok]]
        team_seq = np.full(n_cases, None, dtype=object)
        names = seg_name.tolist()
        seg_bounds = np.r_[np.flatnonzero(np.r_[True, seg_case[1:] != seg_case[:-1]]), len(seg_case)] if len(
            seg_case
        ) else np.zeros(1, dtype=np.int64)
        for k in range(len(seg_bounds) - 1):
            lo, hi = int(seg_bounds[k]), int(seg_bounds[k + 1])
            team_seq[seg_case[lo]] = " > ".join(names[lo:hi])
        # Team changes after the resolving event (e.g. handing back to the service desk to close) are not
        # reassignments; intake segments are a dispatch step, not a reassignment either.
        counted = (seg_pos <= np.where(pick >= 0, pick, np.iinfo(np.int64).max)[seg_case]) & ~seg_intake
        reassign = np.maximum(np.bincount(seg_case[counted], minlength=n_cases) - 1, 0)
        # A change whose first event is an escalate step is an escalation, every other change a transfer.
        cidx = np.flatnonzero(counted)
        later = cidx[np.r_[False, seg_case[cidx][1:] == seg_case[cidx][:-1]]] if len(cidx) else cidx
        esc_change = later[escalate[seg_pos[later]]]
        escalations = np.bincount(seg_case[esc_change], minlength=n_cases)
        transfers = reassign - escalations
        misrouted = pd.array(
            np.where(ok, (transfers > 0) | ((first != resolving) & (escalations == 0)), False), dtype="boolean"
        )
        misrouted[~ok] = pd.NA
        seg_of_row = np.cumsum(new_seg) - 1
        seg_end = np.r_[s.ts_ns[seg_pos[1:]], 0] if len(seg_pos) else np.zeros(0, dtype=np.int64)
        last_of_case = np.r_[seg_case[1:] != seg_case[:-1], True] if len(seg_pos) else np.zeros(0, dtype=bool)
        seg_end = np.where(last_of_case, end[seg_case] if len(seg_pos) else seg_end, seg_end)
        segments = pd.DataFrame(
            {
                CASE_ID: s.case_ids[seg_case] if len(seg_pos) else np.zeros(0, dtype=object),
                "case": seg_case.astype(np.int64),
                "seq": pd.Series(seg_case).groupby(seg_case).cumcount().to_numpy(dtype=np.int64),
                "team": seg_name,
                "pos": seg_pos.astype(np.int64),
                "start": _utc(s.ts_ns[seg_pos]),
                "end": _utc(seg_end),
                "n_events": np.bincount(seg_of_row, minlength=len(seg_pos)).astype(np.int64),
                "counted": counted,
            }
        )
        out["first_team"] = first
        out["resolving_team"] = resolving
        # When the resolving team became known: the time of the event that defines it (NaT without one).
        out["resolved_at"] = pd.Series(_utc(s.ts_ns[np.maximum(pick, 0)]) if n_cases else _utc(np.zeros(0, np.int64)),
                                       index=out.index).where(ok)
        out["teams"] = team_seq
        out["n_teams"] = n_seg.astype(np.int64)
        out["reassignments"] = reassign.astype(np.int64)
        out["transfers"] = transfers.astype(np.int64)
        out["escalations"] = escalations.astype(np.int64)
        out["misrouted"] = misrouted
        lines = support_lines(glabels[np.unique(gcode[gmask])], mapping=cfg.line_mapping)
        if lines is not None:
            lmap = pd.Series(lines, dtype="Int64")
            out["first_line"] = pd.Series(first).map(lmap).astype("Int64").to_numpy()
            out["resolving_line"] = pd.Series(resolving).map(lmap).astype("Int64").to_numpy()
            seg_line = pd.Series(seg_name).map(lmap).fillna(1).to_numpy(dtype=np.int64)
            max_line = np.zeros(n_cases, dtype=np.int64)
            # Highest line that held the case up to its resolution (intake and hand-backs after it excluded).
            np.maximum.at(max_line, seg_case[counted], seg_line[counted])
            has_counted = np.bincount(seg_case[counted], minlength=n_cases) > 0
            out["max_line"] = pd.array(np.where(has_counted, max_line, 0), dtype="Int64")
            out.loc[~has_counted, "max_line"] = pd.NA
            escalated_by_line = (out["max_line"].fillna(0).to_numpy() > out["first_line"].fillna(99).to_numpy())
    else:
        for col in ("first_team", "resolving_team", "teams"):
            out[col] = None
        out["resolved_at"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
        out["n_teams"] = 0
        out["reassignments"] = 0
        out["transfers"] = 0
        out["escalations"] = 0
        out["misrouted"] = pd.array([pd.NA] * n_cases, dtype="boolean")

    outcome = np.full(n_cases, "open", dtype=object)
    outcome[any_per_case(resolve) | any_per_case(close)] = "resolved"
    outcome[any_per_case(escalate) | escalated_by_line] = "escalated"
    outcome[any_per_case(reopen)] = "reopened"
    out["outcome"] = outcome
    return CaseLabels(df=out, has_groups=has_groups, lines=lines, segments=segments, resolve_pos=resolve_pos)


def prefix_labels(
    log: EventLog, *, config: LabelConfig | None = None, enc: EncodedLog | None = None
) -> PrefixLabels:
    """Next activity (with an end-of-case class) and remaining time for every prefix of every case."""
    cfg = config or LabelConfig()
    s = _sorted_events(log, enc)
    n = len(s.case)
    n_cases = len(s.starts)
    case_start = np.repeat(s.starts, s.ends - s.starts)
    case_end_ts = np.repeat(s.ts_ns[s.ends - 1], s.ends - s.starts) if n_cases else np.zeros(0, dtype=np.int64)
    case_start_ts = s.ts_ns[case_start] if n else np.zeros(0, dtype=np.int64)
    is_last = np.zeros(n, dtype=bool)
    if n_cases:
        is_last[s.ends - 1] = True
    nxt = np.empty(n, dtype=object)
    if n:
        nxt[:-1] = s.activity[1:]
        nxt[is_last] = cfg.end_label
    df = pd.DataFrame(
        {
            CASE_ID: s.case_ids[s.case] if n else np.zeros(0, dtype=object),
            "prefix_len": (np.arange(n) - case_start + 1).astype(np.int64),
            "row": s.order.astype(np.int64),
            "activity": s.activity,
            "timestamp": _utc(s.ts_ns),
            "next_activity": nxt,
            "elapsed_s": (s.ts_ns - case_start_ts) / 1e9,
            "remaining_s": (case_end_ts - s.ts_ns) / 1e9,
        }
    )
    return PrefixLabels(df=df, end_label=cfg.end_label)


def training_labels(
    log: EventLog, *, config: LabelConfig | None = None, enc: EncodedLog | None = None
) -> TrainingLabels:
    """Case labels and prefix labels of a log in one call."""
    cfg = config or LabelConfig()
    e = enc if enc is not None else encode(log)
    return TrainingLabels(
        cases=case_labels(log, config=cfg, enc=e), prefixes=prefix_labels(log, config=cfg, enc=e), config=cfg
    )
