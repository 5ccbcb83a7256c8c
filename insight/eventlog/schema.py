"""The canonical event-log object every deskpilot component works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.errors import InvalidEventLog

CASE_ID = "case_id"
ACTIVITY = "activity"
TIMESTAMP = "timestamp"
RESOURCE = "resource"
GROUP = "group"
CHANNEL = "channel"
LIFECYCLE = "lifecycle"

REQUIRED_COLUMNS: tuple[str, ...] = (CASE_ID, ACTIVITY, TIMESTAMP)
OPTIONAL_COLUMNS: tuple[str, ...] = (RESOURCE, GROUP, CHANNEL, LIFECYCLE)
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# pm4py's own column names; the only place deskpilot spells them (see insight.eventlog.pm4py_bridge).
PM4PY_COLUMNS = {
    CASE_ID: "case:concept:name",
    ACTIVITY: "concept:name",
    TIMESTAMP: "time:timestamp",
    RESOURCE: "org:resource",
    GROUP: "org:group",
    LIFECYCLE: "lifecycle:transition",
}


@dataclass
class QualityFix:
    """One kind of change cleaning made to a log, with how many rows it touched."""

    name: str
    rows: int
    detail: str = ""


@dataclass
class DataQualityReport:
    """What ingestion and cleaning did to a log: rows in, rows out and every fix with its count."""

    source: str
    rows_in: int
    rows_out: int = 0
    cases_out: int = 0
    fixes: list[QualityFix] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # what the source looks like (insight.eventlog.readers.detect.detect_source) and what reading it better needs
    source_kind: str = ""
    suggestions: dict[str, str] = field(default_factory=dict)
    # input pitfalls a reader of the mined report must know (label rewrites, placeholder activities, ...)
    notices: list[str] = field(default_factory=list)

    def add(self, name: str, rows: int, detail: str = "") -> None:
        """Record a fix (zero counts are kept too, so the report shows each rule ran)."""
        self.fixes.append(QualityFix(name=name, rows=int(rows), detail=detail))

    def count(self, name: str) -> int:
        """Total rows touched by fixes of this name."""
        return sum(f.rows for f in self.fixes if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "cases_out": self.cases_out,
            "fixes": [{"name": f.name, "rows": f.rows, "detail": f.detail} for f in self.fixes],
            "warnings": list(self.warnings),
            "source_kind": self.source_kind,
            "suggestions": dict(self.suggestions),
            "notices": list(self.notices),
        }


@dataclass
class EventLog:
    """A support event log in canonical form.

    `df` holds one row per event with at least `case_id` (str), `activity` (str) and `timestamp`
    (tz-aware UTC), optionally `resource`, `group`, `channel`, `lifecycle`, plus any case or event
    attributes under their own names. Rows are ordered by case, then time, then original position,
    so every consumer sees the same deterministic order.
    """

    df: pd.DataFrame
    name: str = "log"
    case_attributes: list[str] = field(default_factory=list)
    quality: DataQualityReport | None = None

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.df.columns]
        if missing:
            raise InvalidEventLog(
                f"event log lacks required column(s) {missing}; has {list(self.df.columns)}",
                file=self.name,
                column=missing[0],
            )
        ts = self.df[TIMESTAMP]
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise InvalidEventLog("timestamp column must be tz-aware UTC datetimes", file=self.name, column=TIMESTAMP)

    @property
    def n_events(self) -> int:
        """Number of events."""
        return len(self.df)

    @property
    def n_cases(self) -> int:
        """Number of distinct cases."""
        return int(self.df[CASE_ID].nunique())

    @property
    def activities(self) -> list[str]:
        """Distinct activity labels, sorted."""
        return sorted(self.df[ACTIVITY].astype(str).unique().tolist())

    def has(self, column: str) -> bool:
        """True when the column exists and holds at least one value."""
        return column in self.df.columns and bool(self.df[column].notna().any())

    def time_window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last event time."""
        return self.df[TIMESTAMP].min(), self.df[TIMESTAMP].max()

    def case_table(self) -> pd.DataFrame:
        """One row per case: first/last timestamp, event count and the case attributes."""
        g = self.df.groupby(CASE_ID, sort=False, observed=True)
        out = pd.DataFrame(
            {
                "start": g[TIMESTAMP].min(),
                "end": g[TIMESTAMP].max(),
                "events": g.size(),
            }
        )
        for col in self.case_attributes:
            if col in self.df.columns:
                out[col] = g[col].first()
        return out

    def filter_cases(self, case_ids: Any) -> EventLog:
        """A new log holding only the given cases (order kept)."""
        mask = self.df[CASE_ID].isin(list(case_ids))
        return EventLog(
            self.df.loc[mask].reset_index(drop=True), name=self.name, case_attributes=list(self.case_attributes)
        )
