"""Cleaning rules for canonical event logs; every change is counted in the DataQualityReport."""

from __future__ import annotations

import copy
import csv
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl

from core.errors import InvalidEventLog
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)

TimestampPolicy = Literal["drop", "impute", "error"]
SOURCE = "source"
SOURCE_CASE_ID = "source_case_id"
_SPACES = re.compile(r"\s+")


def load_activity_map(path: str | Path) -> dict[str, str]:
    """An activity relabelling {old: new} from a JSON object or a two-column CSV (old,new; header optional)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidEventLog("activity map file does not exist", file=str(p))
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidEventLog(f"activity map is not valid JSON: {exc.msg}", file=str(p), row=exc.lineno) from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise InvalidEventLog("activity map JSON must be an object {old label: new label}", file=str(p))
        return {str(k): v for k, v in data.items()}
    out: dict[str, str] = {}
    rows = list(csv.reader(text.splitlines()))
    for i, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise InvalidEventLog(f"activity map rows need exactly 2 fields (old,new), got {len(row)}",
                                  file=str(p), row=i)
        old, new = row[0].strip(), row[1].strip()
        if i == 1 and old.lower() in {"old", "from", "source", "activity"}:
            continue  # header
        out[old] = new
    return out


def _map_distinct(s: pd.Series, fn: Callable[[str], str]) -> pd.Series:
    """Apply a string function once per distinct value (labels repeat a lot) and broadcast back."""
    codes, uniques = pd.factorize(s)
    # a take on the mapped distinct values stays in Arrow; no per-row Python string objects
    mapped = pd.array([fn(str(u)) for u in uniques], dtype="str")
    return pd.Series(mapped.take(codes, allow_fill=True), index=s.index, name=s.name)


def _normalise_label(label: str) -> str:
    return _SPACES.sub(" ", label.strip())


def _first_occurrence_mask(df: pd.DataFrame) -> np.ndarray:
    """True for rows that are not an exact repeat of an earlier row.

    Exact repeats must share case, activity and time, so only rows whose (case, activity, time) key occurs
    more than once are compared on every column; wide logs then cost about as much as narrow ones.
    """
    key = pl.DataFrame({
        "c": pl.from_pandas(df[CASE_ID].astype("str")),
        "a": pl.from_pandas(df[ACTIVITY].astype("str")),
        "t": pd.DatetimeIndex(df[TIMESTAMP]).asi8,
    })
    # rows whose key hash repeats are the candidates (a hash collision only adds a candidate; the exact
    # comparison below decides), which is far cheaper than hashing the string key columns as a struct
    shared = key.hash_rows().is_duplicated().to_numpy()
    keep = np.ones(len(df), dtype=bool)
    if shared.any():
        pos = np.flatnonzero(shared)
        keep[pos] = ~df.iloc[pos].duplicated(keep="first").to_numpy()
    return keep


def _stable_case_time_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions sorted by case id, then timestamp, ties kept in their current (file) order."""
    keys = pl.DataFrame({
        "c": pl.from_pandas(df[CASE_ID].astype("str")),
        "t": pd.DatetimeIndex(df[TIMESTAMP]).asi8,
    }).with_row_index("i")
    return keys.sort(["c", "t"], maintain_order=True)["i"].to_numpy()


def detect_case_attributes(df: pd.DataFrame, *, exclude: tuple[str, ...] = CANONICAL_COLUMNS) -> list[str]:
    """Columns whose value never changes within a case (missing counts as a value)."""
    cols = [c for c in df.columns if c not in exclude and c not in (SOURCE, SOURCE_CASE_ID)]
    if not cols or df.empty:
        return []
    case_codes = pd.factorize(df[CASE_ID])[0]
    # group rows of a case together (stable), then compare each row with the previous one of the same case
    order = np.argsort(case_codes, kind="stable")
    sc = case_codes[order]
    same_case = sc[1:] == sc[:-1]
    out = []
    for col in cols:
        vcodes = pd.factorize(df[col], use_na_sentinel=False)[0][order]
        if not np.any(same_case & (vcodes[1:] != vcodes[:-1])):
            out.append(col)
    return out


def _impute_timestamps(df: pd.DataFrame) -> pd.Series:
    """Missing timestamps from the previous event of the same case (file order), else the next one."""
    g = df.groupby(CASE_ID, sort=False, observed=True)[TIMESTAMP]
    return df[TIMESTAMP].fillna(g.ffill()).fillna(g.bfill())


def clean(
    log: EventLog,
    *,
    activity_map: Mapping[str, str] | None = None,
    timestamp_policy: TimestampPolicy = "drop",
    drop_duplicates: bool = True,
    normalise_labels: bool = True,
) -> EventLog:
    """Standardised, de-duplicated, time-complete and deterministically ordered copy of a log.

    Order: case, timestamp, then original row position (a stable sort). Every rule adds a fix to the
    quality report, zero counts included, so the report shows what ran.
    """
    if timestamp_policy not in ("drop", "impute", "error"):
        raise InvalidEventLog(f"timestamp policy must be drop, impute or error, got {timestamp_policy!r}",
                              file=log.name, column=TIMESTAMP)
    # a copy: cleaning the same log twice must not append to the first result's report
    report = copy.deepcopy(log.quality) if log.quality else DataQualityReport(source=log.name, rows_in=len(log.df))
    df = log.df
    if df.empty:
        raise InvalidEventLog("the log holds no events", file=log.name)
    # keep the original position so the sort below can break timestamp ties by it
    df = df.reset_index(drop=True)

    for col, fix in ((CASE_ID, "missing_case_id_dropped"), (ACTIVITY, "missing_activity_dropped")):
        miss = df[col].isna() | (df[col].astype("str").str.strip() == "")
        report.add(fix, int(miss.sum()), f"column {col!r}")
        df = df.loc[~miss]

    act = df[ACTIVITY].astype("str")
    if normalise_labels:
        norm = _map_distinct(act, _normalise_label)
        report.add("activity_whitespace_normalised", int((norm != act).sum()))
        act = norm
    if activity_map:
        amap = dict(activity_map)
        mapped = _map_distinct(act, lambda a: amap.get(a, a))
        changed = int((mapped != act).sum())
        unused = sorted(set(activity_map) - set(act.unique()))
        detail = f"{len(activity_map)} rules"
        if unused:
            detail += f"; {len(unused)} never matched: {unused[:5]}"
        report.add("activity_relabelled", changed, detail)
        act = mapped
    else:
        report.add("activity_relabelled", 0, "no activity map given")
    df = df.assign(**{ACTIVITY: act, CASE_ID: df[CASE_ID].astype("str")})

    if drop_duplicates:
        keep = _first_occurrence_mask(df)
        report.add("exact_duplicates_dropped", int((~keep).sum()), "identical in every column; first kept")
        df = df.loc[keep]
    else:
        report.add("exact_duplicates_dropped", 0, "duplicate dropping disabled")

    nat = df[TIMESTAMP].isna()
    n_nat = int(nat.sum())
    if timestamp_policy == "error" and n_nat:
        first = int(np.flatnonzero(nat.to_numpy())[0])
        raise InvalidEventLog(
            f"{n_nat} event(s) without a usable timestamp (timestamp policy 'error')",
            file=log.name, row=int(df.index[first]) + 1, column=TIMESTAMP,
        )
    if timestamp_policy == "impute" and n_nat:
        filled = _impute_timestamps(df)
        imputed = int((nat & filled.notna()).sum())
        df = df.assign(**{TIMESTAMP: filled})
        report.add("timestamp_imputed", imputed, "from the previous (else next) event of the same case")
        still = df[TIMESTAMP].isna()
        report.add("timestamp_unimputable_dropped", int(still.sum()), "case has no timestamped event")
        df = df.loc[~still]
    else:
        report.add("timestamp_imputed", 0)
        report.add("timestamp_missing_dropped", n_nat)
        df = df.loc[~nat]

    if df.empty:
        raise InvalidEventLog("no events left after cleaning (see the quality report)", file=log.name)

    # a stable sort: equal (case, time) keep their original file order
    order = _stable_case_time_order(df)
    moved = int((order != np.arange(len(order))).sum())
    df = df.iloc[order]
    report.add("rows_reordered", moved, "sorted by case, timestamp, original position")
    df = df.reset_index(drop=True)

    case_attrs = detect_case_attributes(df)
    report.rows_out = len(df)
    report.cases_out = int(df[CASE_ID].nunique())
    return EventLog(df, name=log.name, case_attributes=case_attrs, quality=report)


def merge_sources(
    *,
    logs: Mapping[str, EventLog],
    link: pd.DataFrame | None = None,
    link_columns: Mapping[str, str] | None = None,
    primary: str | None = None,
    unlinked: Literal["keep", "drop"] = "keep",
    name: str = "merged",
) -> EventLog:
    """One log from several source systems whose case ids a link table ties together.

    `link_columns` names, for each source, the link-table column holding that source's case id
    (e.g. {"helpdesk": "ticket_id", "chat": "conversation_id"}); the `primary` source's id becomes
    the merged case id. Unlinked cases of other sources are kept as "<source>:<id>" or dropped (counted).
    Adds `source` and `source_case_id` columns.
    """
    if not logs:
        raise InvalidEventLog("merge_sources needs at least one log", file=name)
    names = list(logs)
    prim = primary or names[0]
    if prim not in logs:
        raise InvalidEventLog(f"primary source {prim!r} is not among {names}", file=name)
    report = DataQualityReport(source=name, rows_in=sum(len(lg.df) for lg in logs.values()))
    cols = dict(link_columns or {})
    if link is not None:
        for src in names:
            if src not in cols:
                raise InvalidEventLog(f"link_columns lacks source {src!r}", file=name)
            if cols[src] not in link.columns:
                raise InvalidEventLog(f"link table has no column {cols[src]!r}; it has {list(link.columns)}",
                                      file="link table", column=cols[src])
    frames = []
    for src in names:
        df = logs[src].df.copy()
        ids = df[CASE_ID].astype("str")
        df[SOURCE] = src
        df[SOURCE_CASE_ID] = ids
        if src != prim:
            if link is None:
                raise InvalidEventLog("several sources need a link table to be merged", file=name)
            pairs = link[[cols[src], cols[prim]]].dropna().astype("str").drop_duplicates()
            multi = pairs[pairs.duplicated(cols[src], keep=False)]
            if not multi.empty:
                row = int(multi.index[0])
                raise InvalidEventLog(
                    f"{src} case {multi.iloc[0, 0]!r} is linked to several {prim} cases",
                    file="link table", row=row + 1, column=cols[src],
                )
            lookup = dict(zip(pairs[cols[src]], pairs[cols[prim]], strict=True))
            mapped = ids.map(lookup)
            miss = mapped.isna()
            report.add(f"linked_{src}", int((~miss).sum()), f"events of {src} mapped to a {prim} case")
            if unlinked == "drop":
                report.add(f"unlinked_{src}_dropped", int(miss.sum()))
                df = df.loc[~miss.to_numpy()]
                mapped = mapped.loc[~miss]
            else:
                report.add(f"unlinked_{src}_kept", int(miss.sum()), f"case id kept as '{src}:<id>'")
                mapped = mapped.where(~miss, src + ":" + ids)
            df[CASE_ID] = mapped.astype("str")
        else:
            report.add(f"events_{src}", len(df), "primary source")
        frames.append(df)
    merged = pd.concat(frames, ignore_index=True)
    order = {s: i for i, s in enumerate(names)}
    merged["_src_order"] = merged[SOURCE].map(order)
    merged = merged.sort_values([CASE_ID, TIMESTAMP, "_src_order"], kind="mergesort").drop(columns="_src_order")
    merged = merged.reset_index(drop=True)
    report.rows_out = len(merged)
    report.cases_out = int(merged[CASE_ID].nunique())
    attrs = detect_case_attributes(merged)
    return EventLog(merged, name=name, case_attributes=attrs, quality=report)
