"""Source columns onto canonical ones: the mapping (given or recognised by name), value types, redundant copies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from core.errors import InvalidEventLog
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)

# Names seen in the wild for each canonical column, compared after lower-casing and dropping
# everything but letters and digits; earlier entries win.
AUTO_NAMES: dict[str, tuple[str, ...]] = {
    CASE_ID: ("caseconceptname", "caseid", "case", "ticketid", "incidentid", "srnumber", "ticket", "caseidentifier"),
    ACTIVITY: ("conceptname", "activity", "activityname", "eventname", "event", "task", "action"),
    TIMESTAMP: ("timetimestamp", "completetimestamp", "timestamp", "endtimestamp", "eventtime", "datetime", "time",
                "changedatetime", "date"),
    RESOURCE: ("orgresource", "resource", "agent", "user", "owner", "assignedto", "performer"),
    GROUP: ("orggroup", "group", "team", "queue", "assignmentgroup"),
    CHANNEL: ("channel", "contacttype", "medium"),
    LIFECYCLE: ("lifecycletransition", "lifecycle", "transition"),
}


def norm_name(name: str) -> str:
    """A column name compared loosely: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def resolve_mapping(
    columns: list[str], mapping: Mapping[str, str] | None, path: Path, report: DataQualityReport, how: str
) -> dict[str, str]:
    """Validated {source: canonical} mapping; auto-detected (and recorded) when none is given."""
    if mapping:
        bad = [src for src in mapping if src not in columns]
        if bad:
            raise InvalidEventLog(
                f"column mapping names column(s) {bad} that the file does not have; it has {columns}",
                file=str(path), column=bad[0],
            )
        targets = list(mapping.values())
        dup = sorted({t for t in targets if targets.count(t) > 1})
        if dup:
            raise InvalidEventLog(f"column mapping sends several columns to {dup}", file=str(path), column=dup[0])
        used = dict(mapping)
    else:
        used = {}
        how = "auto-detected"
    # fill canonical columns the mapping left open with recognised names, never overriding it
    taken_targets = set(used.values())
    taken_sources = set(used)
    normed = {c: norm_name(c) for c in columns}
    for canon, names in AUTO_NAMES.items():
        if canon in taken_targets or canon in columns:
            continue
        for cand in names:
            hits = [c for c in columns if normed[c] == cand and c not in taken_sources]
            if len(hits) > 1:
                raise InvalidEventLog(
                    f"several columns {hits} could be {canon!r}; pass a mapping", file=str(path), column=hits[0]
                )
            if hits:
                used[hits[0]] = canon
                taken_sources.add(hits[0])
                taken_targets.add(canon)
                if mapping:
                    report.warnings.append(f"column {hits[0]!r} auto-detected as {canon!r}")
                break
    detail = ", ".join(f"{s!r}->{t}" for s, t in used.items()) or "columns already canonical"
    report.add("column_mapping", 0, f"{how}: {detail}")
    if not mapping and used:
        report.warnings.append(f"column mapping auto-detected (pass a mapping to fix it): {detail}")
    return used


def looks_numeric(head: pl.Series) -> bool:
    """True when the first 200 values present in `head` (a string column or its first rows) are all plain numbers
    without a leading zero (so ids like 007 stay strings)."""
    sample = head.drop_nulls().head(200)
    return bool(sample.str.contains(r"^\s*-?\d+(\.\d+)?\s*$").all()) and not sample.str.contains(r"^\s*0\d").any()


def numeric_cast(col: pl.Series) -> pl.Series | None:
    """The string column as Int64, else Float64, when every value present converts; None otherwise."""
    nn = col.null_count()
    for typ in (pl.Int64, pl.Float64):
        conv = col.str.strip_chars().cast(typ, strict=False)
        if conv.null_count() == nn:
            return conv.alias(col.name)
    return None


def infer_types(frame: pl.DataFrame, skip: set[str]) -> pl.DataFrame:
    """Numeric types for string columns whose every value is a number (ids and labels stay strings)."""
    casts = []
    for name, dtype in frame.schema.items():
        if name in skip or dtype != pl.String:
            continue
        col = frame[name]
        if col.null_count() == col.len() or not looks_numeric(col):
            continue
        conv = numeric_cast(col)
        if conv is not None:
            casts.append(conv)
    return frame.with_columns(casts) if casts else frame


def drop_canonical_copies(log: EventLog) -> None:
    """Drop source columns that repeat a canonical column value for value (e.g. XES `Resource` next to
    `org:resource`): they add nothing and would keep raw identifiers out of reach of pseudonymization."""
    df = log.df
    dropped = []
    for col in list(df.columns):
        if col in CANONICAL_COLUMNS:
            continue
        canon = next((c for c, names in AUTO_NAMES.items() if norm_name(col) in names), None)
        if canon is None or canon not in df.columns or col == canon:
            continue
        a, b = df[col], df[canon]
        if canon == TIMESTAMP or a.dtype != b.dtype:
            continue
        if bool(((a == b) | (a.isna() & b.isna())).all()):
            dropped.append(col)
    if dropped:
        log.df = df.drop(columns=dropped)
        if log.quality is not None:
            log.quality.add("redundant_columns_dropped", 0, f"{dropped} repeat canonical columns")
