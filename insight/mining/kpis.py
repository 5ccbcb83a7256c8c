"""Support KPIs per channel, team, intent / category and customer segment, overall and over time windows.

Definitions (per case, then averaged over the cases of a group):

* **throughput**: last event time minus first event time.
* **handling time (AHT)**: with `start`/`complete` lifecycle pairs, the sum of start -> complete durations.
  With complete timestamps only, no log records when work began, so we use the honest proxy "time between two
  consecutive events done by the same agent": work that continued without a handover. It overstates handling
  when an agent parks a case and misses the work behind a case's first event. A status-change log (one agent's
  events typically more than a shift apart) or a log naming only teams records no work at all: handling time
  is then "not measurable" (NaN, never a misleading number). `handling_basis` says which definition was used.
* **wait time**: throughput minus handling time.
* **transfers**: changes of team between consecutive events that have a team (resource when there is no team).
* **first contact resolution (FCR)**: the case was never transferred (zero transfers).
* **escalation**: the case reached support line >= 2 (lines from `lines` or a "2nd"/"3rd"/"L2"/"L3" team name
  suffix); **time to escalation** is from case start to the first such event.
* **contacts per case**: events per case. **rework**: the case repeats an activity.

A case belongs to a group by the first non-empty value of the dimension's column in that case (for teams,
the team that received it), or the last one with `attribution="last"` (the resolving team).

Time to close respects how the log was extracted (`insight.mining.censoring`): unfinished cases are left out
of the throughput mean, and when the extract is a snapshot with open cases, the median and p90 are Kaplan-Meier
estimates with the open cases censored at the cut-off (None when too many are still open to know). When the
extract holds only the cases closed in a window, the trend is by end date, the only axis on which every window
is complete. Rows say how many of their cases are finished and, for windows, why a figure is biased.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import CHANNEL, GROUP, RESOURCE, EventLog
from insight.mining._core import (
    EncodedLog,
    case_durations,
    case_start_ts,
    changes_per_case,
    ensure_encoded,
    follows,
    repeats_per_case,
    service_times,
)
from insight.mining.censoring import Extraction, detect_extraction, duration_summary

DEFAULT_DIMENSIONS: dict[str, str] = {
    "channel": CHANNEL,
    "team": GROUP,
    "intent": "intent",
    "category": "category",
    "segment": "segment",
}
NOT_MEASURABLE = "not measurable"
# Longest typical gap between one agent's consecutive events that still reads as continued work (a shift).
MAX_WORK_GAP_S = 8 * 3600
LINE_SUFFIX = re.compile(r"(?i)(?:^|[\s_\-/])(?:([123])(?:st|nd|rd)|l([123]))(?:\s*line)?$")


@dataclass
class KpiRow:
    """KPIs of one group of cases (a dimension value, a time window, or all cases)."""

    dimension: str
    value: str
    cases: int
    contacts_per_case: float
    aht_mean_s: float | None
    wait_mean_s: float | None
    fcr_rate: float | None
    transfers_per_case: float | None
    escalation_rate: float | None
    time_to_escalation_median_s: float | None
    rework_rate: float
    throughput_mean_s: float
    throughput_median_s: float
    throughput_p90_s: float
    finished_cases: int | None = None
    open_cases: int | None = None
    biased: str | None = None


@dataclass
class KpiTable:
    """Overall KPIs, KPIs per dimension value and per time window."""

    overall: KpiRow
    by_dimension: dict[str, list[KpiRow]]
    trend: list[KpiRow]
    window: str
    handling_basis: str
    attribution: str
    notes: list[str] = field(default_factory=list)
    throughput_basis: str = "all cases"
    trend_axis: str = "start"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "throughput_basis": self.throughput_basis,
            "trend_axis": self.trend_axis,
            "overall": asdict(self.overall),
            "by_dimension": {k: [asdict(r) for r in v] for k, v in self.by_dimension.items()},
            "trend": [asdict(r) for r in self.trend],
            "window": self.window,
            "handling_basis": self.handling_basis,
            "attribution": self.attribution,
            "notes": list(self.notes),
        }

    def frame(self, dimension: str) -> pd.DataFrame:
        """One dimension's rows as a DataFrame (for display)."""
        rows = self.trend if dimension == "trend" else self.by_dimension.get(dimension, [])
        return pd.DataFrame([asdict(r) for r in rows])


def support_line(team: str, lines: Mapping[str, int] | None = None) -> int:
    """Support line of a team: from `lines` when given, else its name suffix ("2nd", "L3"), else 1."""
    if lines is not None and team in lines:
        return int(lines[team])
    m = LINE_SUFFIX.search(team.strip())
    if m:
        return int(m.group(1) or m.group(2))
    return 1


@dataclass
class CaseKpis:
    """Per-case KPI inputs (one entry per case, in EncodedLog case order)."""

    case_id: np.ndarray
    start: pd.DatetimeIndex
    events: np.ndarray
    throughput_s: np.ndarray
    handling_s: np.ndarray
    transfers: np.ndarray | None
    escalation_s: np.ndarray | None
    rework: np.ndarray
    handling_basis: str


def case_kpis(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    team_column: str = GROUP,
    resource_column: str = RESOURCE,
    lines: Mapping[str, int] | None = None,
    lifecycle_column: str = "lifecycle",
) -> CaseKpis:
    """Per-case throughput, handling time, transfers, escalation time and rework (see module docstring)."""
    enc = ensure_encoded(log, enc)
    nc = enc.n_cases
    through = case_durations(enc)
    svc = service_times(enc, lifecycle_column=lifecycle_column)
    actor_col = resource_column if enc.has(resource_column) else (team_column if enc.has(team_column) else None)
    if not np.isnan(svc).all():
        ok = ~np.isnan(svc)
        handling = np.bincount(enc.case[ok], weights=svc[ok], minlength=nc)
        basis = "lifecycle start->complete"
    elif actor_col == resource_column:
        codes = enc.column(actor_col).codes
        p = follows(enc, codes)
        same = (p.src == p.dst) & (p.src >= 0)
        gap = enc.seconds(enc.ts[p.src_event[same] + 1] - enc.ts[p.src_event[same]])
        # Work events by one agent follow each other within a shift; when the typical gap is longer, the events
        # are status changes hours or days apart and their gaps are waiting, not handling.
        if same.any() and float(np.median(gap)) <= MAX_WORK_GAP_S:
            handling = np.bincount(enc.case[p.src_event[same]], weights=gap, minlength=nc)
            basis = f"gaps between consecutive events by the same {actor_col}"
        else:
            handling = np.full(nc, np.nan)
            basis = (f"{NOT_MEASURABLE}: no lifecycle start/complete pairs, and consecutive events by the same "
                     f"agent are typically more than a shift apart (status changes, not work records)")
    else:
        handling = np.full(nc, np.nan)
        basis = (f"{NOT_MEASURABLE}: no lifecycle start/complete pairs and no per-agent work events"
                 + (f" (only the team, {actor_col!r}, is recorded)" if actor_col else ""))
    hand_col = team_column if enc.has(team_column) else (resource_column if enc.has(resource_column) else None)
    transfers = changes_per_case(enc, enc.column(hand_col).codes).astype(np.float64) if hand_col else None

    escalation: np.ndarray | None = None
    if enc.has(team_column):
        tc = enc.column(team_column)
        line = np.array([support_line(str(t), lines) for t in tc.labels] + [0], dtype=np.int64)
        if (line[:-1] >= 2).any():
            ev_line = line[tc.codes]  # code -1 picks the trailing 0
            high = np.flatnonzero(ev_line >= 2)
            first_high = np.full(nc, -1, dtype=np.int64)
            # first event at line >= 2 per case: reversed assignment leaves the smallest index
            first_high[enc.case[high[::-1]]] = high[::-1]
            escalation = np.full(nc, np.nan)
            hit = first_high >= 0
            escalation[hit] = enc.seconds(enc.ts[first_high[hit]] - enc.ts[enc.case_start[:-1][hit]])
    return CaseKpis(
        case_id=enc.case_labels,
        start=case_start_ts(enc),
        events=enc.case_len,
        throughput_s=through,
        handling_s=handling,
        transfers=transfers,
        escalation_s=escalation,
        rework=repeats_per_case(enc) > 0,
        handling_basis=basis,
    )


def _none(x: Any) -> float | None:
    return None if pd.isna(x) else float(x)


def _rows(
    frame: pd.DataFrame, by: pd.Series | None, dimension: str, *, survival: bool = False
) -> list[KpiRow]:
    key = by if by is not None else pd.Series(np.zeros(len(frame), dtype=np.int64), name="all")
    g = frame.groupby(key.to_numpy(), sort=True, dropna=True)
    agg = g.agg(
        cases=("events", "size"),
        finished=("finished", "sum"),
        contacts=("events", "mean"),
        aht=("handling_s", "mean"),
        wait=("wait_s", "mean"),
        fcr=("fcr", "mean"),
        transfers=("transfers", "mean"),
        escalated=("escalated", "mean"),
        tte=("escalation_s", "median"),
        rework=("rework", "mean"),
        tmean=("closed_s", "mean"),
        tmed=("closed_s", "median"),
    )
    agg["tp90"] = g["closed_s"].quantile(0.9)
    if survival:
        # Kaplan-Meier per group where the group has open cases (their durations are only lower bounds).
        for value, part in g:
            if not part["finished"].all():
                s = duration_summary(part["censored_s"].to_numpy(), part["finished"].to_numpy())
                agg.loc[value, "tmed"] = np.nan if s.median_s is None else s.median_s
                agg.loc[value, "tp90"] = np.nan if s.p90_s is None else s.p90_s
    out = []
    for value, r in agg.iterrows():
        out.append(
            KpiRow(
                dimension=dimension,
                value="all" if by is None else str(value.isoformat() if isinstance(value, pd.Timestamp) else value),
                cases=int(r["cases"]),
                contacts_per_case=float(r["contacts"]),
                aht_mean_s=_none(r["aht"]),
                wait_mean_s=_none(r["wait"]),
                fcr_rate=_none(r["fcr"]),
                transfers_per_case=_none(r["transfers"]),
                escalation_rate=_none(r["escalated"]),
                time_to_escalation_median_s=_none(r["tte"]),
                rework_rate=float(r["rework"]),
                throughput_mean_s=float(r["tmean"]),
                throughput_median_s=float(r["tmed"]),
                throughput_p90_s=float(r["tp90"]),
                finished_cases=int(r["finished"]),
                open_cases=int(r["cases"] - r["finished"]),
            )
        )
    return out


def compute_kpis(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    dimensions: Mapping[str, str] | None = None,
    team_column: str = GROUP,
    resource_column: str = RESOURCE,
    lines: Mapping[str, int] | None = None,
    window: Literal["D", "W", "M"] = "W",
    attribution: Literal["first", "last"] = "first",
    lifecycle_column: str = "lifecycle",
    extraction: Extraction | None = None,
) -> KpiTable:
    """KPIs overall, per dimension value (`dimensions`: name -> column, absent columns skipped) and per window.

    `extraction` (from `detect_extraction`, computed when not given) decides how unfinished cases count.
    """
    if window not in ("D", "W", "M"):
        raise InvalidInput("window must be 'D', 'W' or 'M'", field="window")
    if attribution not in ("first", "last"):
        raise InvalidInput("attribution must be 'first' or 'last'", field="attribution")
    enc = ensure_encoded(log, enc)
    ck = case_kpis(
        enc=enc, team_column=team_column, resource_column=resource_column, lines=lines,
        lifecycle_column=lifecycle_column,
    )
    ext = extraction if extraction is not None else detect_extraction(enc)
    notes: list[str] = list(ext.warnings)
    finished = ext.finished if len(ext.finished) == enc.n_cases else np.ones(enc.n_cases, dtype=bool)
    survival = ext.survival
    frame = pd.DataFrame(
        {
            "events": ck.events,
            "finished": finished,
            "closed_s": np.where(finished, ck.throughput_s, np.nan),
            "censored_s": ext.censored_s if len(ext.censored_s) == enc.n_cases else ck.throughput_s,
            "throughput_s": ck.throughput_s,
            "handling_s": ck.handling_s,
            "wait_s": ck.throughput_s - ck.handling_s,
            "transfers": ck.transfers if ck.transfers is not None else np.nan,
            "escalation_s": ck.escalation_s if ck.escalation_s is not None else np.nan,
            "rework": ck.rework.astype(np.float64),
        }
    )
    frame["fcr"] = np.where(frame["transfers"].isna(), np.nan, (frame["transfers"] == 0).astype(np.float64))
    if ck.escalation_s is not None:
        frame["escalated"] = (~np.isnan(ck.escalation_s)).astype(np.float64)
    else:
        frame["escalated"] = np.nan
        notes.append("support lines unknown (no lines mapping, no 2nd/3rd team suffix): escalation not computed")
    if ck.transfers is None:
        notes.append("no team or resource column: transfers and FCR not computed")
    if ck.handling_basis.startswith(NOT_MEASURABLE):
        notes.append(f"handling time (AHT) {ck.handling_basis}; waiting time is not split from it either")
    dims = dict(DEFAULT_DIMENSIONS if dimensions is None else dimensions)
    by_dim: dict[str, list[KpiRow]] = {}
    for name, col in dims.items():
        if not enc.has(col):
            continue
        c = enc.column(col)
        per_case = enc.case_first(c.codes) if attribution == "first" else enc.case_last(c.codes)
        labels = np.r_[c.labels.astype(object), None]
        by_dim[name] = sorted(
            _rows(frame, pd.Series(labels[per_case], name=name), name, survival=survival), key=lambda r: -r.cases
        )
    # weeks run Monday..Sunday; a window is labelled by its first day
    period_code = {"D": "D", "W": "W-SUN", "M": "M"}[window]
    trend_axis = "end" if ext.kind == "closed_in_window" else "start"
    if trend_axis == "end":
        end_ts = enc.ts[enc.case_start[1:] - 1] if enc.n_cases else np.zeros(0, np.int64)
        axis = pd.Series(pd.to_datetime(end_ts, unit=enc.ts_unit, utc=True))  # type: ignore[arg-type]
        notes.append("trend by the week cases closed: the extract holds the cases closed in its window")
    else:
        axis = pd.Series(ck.start)
    axis = axis.dt.tz_convert("UTC").dt.tz_localize(None)
    periods = axis.dt.to_period(period_code).dt.start_time
    trend: list[KpiRow] = []
    if len(frame):
        trend = _fill_windows(
            _rows(frame, pd.Series(periods.to_numpy(), name="window"), "window", survival=survival),
            period_code,
        )
        _mark_biased(trend, ext, biased_open_share=0.1)
    return KpiTable(
        overall=_rows(frame, None, "all", survival=survival)[0] if len(frame) else _empty_row(),
        by_dimension=by_dim,
        trend=trend,
        window=window,
        handling_basis=ck.handling_basis,
        attribution=attribution,
        notes=notes,
        throughput_basis=ext.duration_basis,
        trend_axis=trend_axis,
    )


def _fill_windows(rows: list[KpiRow], period_code: str) -> list[KpiRow]:
    """Insert empty windows (0 cases) so the time axis never skips a week with no cases."""
    if len(rows) < 2:
        return rows
    have = {r.value: r for r in rows}
    first = pd.Timestamp(rows[0].value)
    last = pd.Timestamp(rows[-1].value)
    every = pd.period_range(first, last, freq=period_code).start_time
    nan = float("nan")
    out = []
    for t in every:
        key = t.isoformat()
        out.append(have.get(key) or KpiRow("window", key, 0, 0.0, None, None, None, None, None, None, 0.0,
                                           nan, nan, nan, 0, 0))
    return out


def _mark_biased(trend: list[KpiRow], ext: Extraction, *, biased_open_share: float) -> None:
    """Say, per window, when the extraction makes its time figures unreliable."""
    for r in trend:
        if not r.cases:
            continue
        begins = pd.Timestamp(r.value, tz="UTC")
        if ext.kind == "closed_in_window" and ext.starts_stop is not None and begins > ext.starts_stop:
            r.biased = (f"no case in the extract started after {ext.starts_stop:%Y-%m-%d}: cases closed in this "
                        "window are only older ones, so its times look long")
        elif (ext.kind != "closed_in_window" and ext.end_window_start is None and ext.starts_stop is not None
              and begins > ext.starts_stop):
            r.biased = f"the extract holds no case started after {ext.starts_stop:%Y-%m-%d}"
        elif ext.kind == "open_at_cutoff" and r.open_cases and r.open_cases / r.cases > biased_open_share:
            r.biased = (f"{r.open_cases / r.cases:.0%} of this window's cases were still open at the cut-off"
                        + ("; median not yet known" if math.isnan(r.throughput_median_s) else ""))


def _empty_row() -> KpiRow:
    nan = float("nan")
    return KpiRow("all", "all", 0, 0.0, None, None, None, None, None, None, 0.0, nan, nan, nan, 0, 0)
