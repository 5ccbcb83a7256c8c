"""read_log: any supported file onto the canonical schema with a quality report (cleaning comes after)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import polars as pl
import pyarrow as pa

from core.errors import InvalidEventLog
from insight.eventlog.cleaning import TimestampPolicy, factorize_strings
from insight.eventlog.readers.columns import (
    drop_canonical_copies,
    looks_numeric,
    numeric_cast,
    resolve_mapping,
)
from insight.eventlog.readers.csv_file import read_csv
from insight.eventlog.readers.detect import detect_format, detect_source, review_source
from insight.eventlog.readers.parquet import read_parquet
from insight.eventlog.readers.presets import PRESETS, Preset
from insight.eventlog.readers.raw import RawTable, log_name
from insight.eventlog.readers.timestamps import first_bad_row, parse_fixed_layout, parse_timestamps
from insight.eventlog.readers.xes import read_xes
from insight.eventlog.schema import (
    ACTIVITY,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    REQUIRED_COLUMNS,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)


class _Columns:
    """The table being mapped: each column a polars Series, or still the reader's Arrow array, which becomes a
    Series only where a step computes on it and otherwise goes to pandas as it is (no string copies)."""

    def __init__(self, raw: RawTable) -> None:
        self.cols: dict[str, pl.Series | pa.ChunkedArray]
        if raw.arrow is not None:
            self.cols = dict(zip(raw.frame.columns, raw.arrow.columns, strict=True))
            self.height = raw.arrow.num_rows
        else:
            self.cols = {c: raw.frame[c] for c in raw.frame.columns}
            self.height = raw.frame.height
        # Arrow columns already handed out as the pandas Series to_pandas gives them (the same array objects)
        self._pandas: dict[str, pd.Series] = {}

    @property
    def columns(self) -> list[str]:
        return list(self.cols)

    def rename(self, mapping: Mapping[str, str]) -> None:
        # polars decides the new names (and rejects clashes) exactly as it does for a full frame
        names = pl.DataFrame(schema=dict.fromkeys(self.cols, pl.Null)).rename(dict(mapping)).columns
        self.cols = {n: c.alias(n) if isinstance(c, pl.Series) else c
                     for n, c in zip(names, self.cols.values(), strict=True)}

    def series(self, name: str) -> pl.Series:
        col = self.cols[name]
        if isinstance(col, pl.Series):
            return col
        out = pl.Series(name, col)
        assert isinstance(out, pl.Series)
        return out

    def head_series(self, name: str, n: int) -> pl.Series:
        """The first n rows of a column as a Series (without converting the rest of an Arrow column)."""
        col = self.cols[name]
        if isinstance(col, pl.Series):
            return col.head(n)
        out = pl.Series(name, col.slice(0, n))
        assert isinstance(out, pl.Series)
        return out

    def null_count(self, name: str) -> int:
        col = self.cols[name]
        return col.null_count() if isinstance(col, pl.Series) else int(col.null_count)

    def timestamps(self, name: str, *, path: Path, source_tz: str, dayfirst: bool | None,
                   report: DataQualityReport, fix_prefix: str = "timestamp") -> pl.Series:
        """`parse_timestamps` of a column; an Arrow column whose every value has one fixed layout is computed from
        its bytes instead (parse_fixed_layout gives the same answer and report)."""
        col = self.cols[name]
        if not isinstance(col, pl.Series):
            fixed = parse_fixed_layout(col, column=name, source_tz=source_tz, dayfirst=dayfirst, report=report,
                                       fix_prefix=fix_prefix)
            if fixed is not None:
                return fixed
        return parse_timestamps(self.series(name), column=name, path=path, source_tz=source_tz, dayfirst=dayfirst,
                                report=report, fix_prefix=fix_prefix)

    def dtype(self, name: str) -> pl.DataType:
        col = self.cols[name]
        if isinstance(col, pl.Series):
            return col.dtype
        return pl.String()  # the CSV reader's Arrow columns are all strings

    def set(self, col: pl.Series) -> None:
        self.cols[col.name] = col
        self._pandas.pop(col.name, None)

    def factorize_soon(self, name: str, pool: ThreadPoolExecutor) -> Future[object] | None:
        """Start `factorize_strings` of an Arrow column, as the pandas column to_pandas will hold, on `pool`: it
        keeps the answer for the source review and the cleaner. None when the column is not a string one read
        by Arrow."""
        col = self.cols.get(name)
        if col is None or isinstance(col, pl.Series) or not pa.types.is_large_string(col.type):
            return None
        series = pa.table({name: col}).to_pandas()[name]
        self._pandas[name] = series
        return pool.submit(factorize_strings, series)

    def to_pandas(self) -> pd.DataFrame:
        pl_cols = [c for c in self.cols.values() if isinstance(c, pl.Series)]
        if len(pl_cols) == len(self.cols):
            return pl.DataFrame(pl_cols).to_pandas()
        parts: dict[str, pd.Series] = dict(self._pandas)
        if pl_cols:
            parts.update(pl.DataFrame(pl_cols).to_pandas().items())
        arrow = {n: c for n, c in self.cols.items() if not isinstance(c, pl.Series) and n not in parts}
        if arrow:
            parts.update(pa.table(arrow).to_pandas().items())
        # copy=False keeps each column's array, so a factorize_soon answer stays tied to its column
        return pd.DataFrame({n: parts[n] for n in self.cols}, copy=False)


def canonicalize(
    raw: RawTable, *, path: Path, mapping: Mapping[str, str] | None, how: str, preset: Preset | None,
    source_tz: str, dayfirst: bool | None, timestamp_policy: TimestampPolicy,
) -> tuple[pd.DataFrame, DataQualityReport]:
    """A raw table onto the canonical columns: mapping, activity, timestamps to UTC, value types; as pandas."""
    report = raw.report
    report.warnings.extend(raw.warnings)
    frame = _Columns(raw)
    if frame.height == 0:
        raise InvalidEventLog("the log has a header but no events", file=str(path))
    used = resolve_mapping(frame.columns, mapping, path, report, how)
    clash = [t for s, t in used.items() if t in frame.columns and t not in used]
    if clash:
        # a source already holds a column under the canonical name we are mapping onto
        frame.rename({c: f"{c}_source" for c in clash})
        report.warnings.append(f"source column(s) {clash} renamed to *_source to make room for the mapping")
    frame.rename(used)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        guess = detect_source(list(raw.frame.columns))
        hint = f"; it looks like a {guess.kind} source: use --preset {guess.preset}" if guess.preset else ""
        raise InvalidEventLog(
            f"missing required column(s) {missing}; the file has {raw.frame.columns} "
            "(pass a mapping like {'Ticket': 'case_id'} or a preset)" + hint,
            file=str(path), column=missing[0],
        )
    if preset and preset.activity_from:
        parts = [c for c in preset.activity_from if c in frame.columns]
        part_frame = pl.DataFrame([frame.series(c) for c in parts])
        frame.set(part_frame.select(
            pl.concat_str([pl.col(c).cast(pl.String) for c in parts], separator="-", ignore_nulls=True).alias(ACTIVITY)
        ).to_series())
        report.add("activity_from_columns", frame.height, "activity = " + "-".join(parts))
    # The case and activity columns' codes, which the source review and the cleaner need, are computed on a
    # second thread while this one parses timestamps: Arrow's kernels and numpy's array work run without the GIL.
    with ThreadPoolExecutor(max_workers=1) as pool:
        coding = [frame.factorize_soon(c, pool) for c in (CASE_ID, ACTIVITY)]
        ts = frame.timestamps(TIMESTAMP, path=path, source_tz=source_tz, dayfirst=dayfirst, report=report)
        # every value present parsed on the fixed-layout path: only a local time the source zone skips can be null
        if timestamp_policy == "error" and ts.null_count() != frame.null_count(TIMESTAMP):
            raw_ts = frame.series(TIMESTAMP)
            bad = first_bad_row(ts, raw_ts)
            if bad is not None:
                src_col = next((s for s, t in used.items() if t == TIMESTAMP), TIMESTAMP)
                raise InvalidEventLog(
                    f"unparseable timestamp {raw_ts[bad]!r} (timestamp policy 'error')",
                    file=str(path), row=bad + 1, column=src_col,
                )
        cols = [ts]
        for extra in preset.extra_timestamps if preset else ():
            if extra in frame.columns:
                cols.append(frame.timestamps(extra, path=path, source_tz=source_tz, dayfirst=dayfirst, report=report,
                                             fix_prefix=extra))
    for col in cols:
        frame.set(col)
    keep_str = {CASE_ID, ACTIVITY, RESOURCE, GROUP, CHANNEL, LIFECYCLE, TIMESTAMP}
    for c in (CASE_ID, ACTIVITY):
        if frame.dtype(c) != pl.String:
            frame.set(frame.series(c).cast(pl.String))
    for name in frame.columns:
        if name in keep_str or frame.dtype(name) != pl.String:
            continue
        # the first 200 values present decide; most columns show them within the first rows
        head = frame.head_series(name, _HEAD_ROWS)
        if head.len() - head.null_count() < 200 and frame.height > _HEAD_ROWS:
            head = frame.series(name)
        if head.null_count() == head.len() or not looks_numeric(head):
            continue
        conv = numeric_cast(frame.series(name))
        if conv is not None:
            frame.set(conv)
    for job in coding:
        if job is not None:
            job.result()  # its error, if any, is raised here
    return frame.to_pandas(), report


# rows an Arrow column is sampled from before deciding whether the whole of it is converted for type inference
_HEAD_ROWS = 20_000


def read_options(
    p: Path, *, preset: str | None, mapping: Mapping[str, str] | None, source_tz: str | None, dayfirst: bool | None,
    na_values: Sequence[str] | None,
) -> tuple[Preset | None, Mapping[str, str] | None, str, str, bool | None, tuple[str, ...]]:
    """What a preset fills in when the caller left it open: (preset, mapping, how the mapping was chosen, source
    time zone, day-first, missing-value markers); an unknown preset or time zone is an error naming the file."""
    pre: Preset | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise InvalidEventLog(f"unknown preset {preset!r}; known: {sorted(PRESETS)}", file=str(p))
        pre = PRESETS[preset]
    how = f"preset {preset}" if pre else "given"
    if pre and not mapping:
        mapping = pre.mapping or None
        if not pre.mapping:
            how = f"preset {preset} (pm4py names)"
    tz = source_tz or (pre.source_tz if pre else "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEventLog(f"unknown source time zone {tz!r} (use an IANA name like 'Europe/Rome')",
                              file=str(p)) from None
    dayf = dayfirst if dayfirst is not None else (pre.dayfirst if pre else None)
    nas = tuple(na_values) if na_values is not None else (pre.na_values if pre else ())
    return pre, mapping, how, tz, dayf, nas


def read_log(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    preset: str | None = None,
    source_tz: str | None = None,
    dayfirst: bool | None = None,
    na_values: Sequence[str] | None = None,
    delimiter: str | None = None,
    timestamp_policy: TimestampPolicy = "drop",
) -> EventLog:
    """Read a CSV(.gz) / XES(.gz) / Parquet log into canonical columns with a quality report (no cleaning yet).

    Row order and duplicates are as in the file; `clean` fixes those. Timestamps are tz-aware UTC, with NaT
    where a value was missing or unparseable (counted in `log.quality`).
    """
    p = Path(path)
    pre, mapping, how, tz, dayf, nas = read_options(p, preset=preset, mapping=mapping, source_tz=source_tz,
                                                    dayfirst=dayfirst, na_values=na_values)
    fmt = detect_format(p)
    if fmt == "xes":
        log = read_xes(p, mapping=mapping, how=how, preset=pre)
    else:
        if fmt == "csv":
            raw = read_csv(p, na_values=nas, delimiter=delimiter)
            meta: dict[str, Any] = {}
        else:
            raw, meta = read_parquet(p)
        df, report = canonicalize(raw, path=p, mapping=mapping, how=how, preset=pre, source_tz=tz,
                                   dayfirst=dayf, timestamp_policy=timestamp_policy)
        log = EventLog(df, name=meta.get("name") or log_name(p), case_attributes=list(meta.get("case_attributes", [])),
                       quality=report)
    drop_canonical_copies(log)
    if pre and pre.drop_cases:
        _drop_known_cases(log, pre)
    review_source(log, path=p, fmt=fmt, preset=preset)
    return log


def _drop_known_cases(log: EventLog, pre: Preset) -> None:
    mask = log.df[CASE_ID].isin(list(pre.drop_cases))
    n = int(mask.sum())
    log.df = log.df.loc[~mask].reset_index(drop=True)
    if log.quality is not None:
        log.quality.add("known_incomplete_case_dropped", n,
                        f"cases {list(pre.drop_cases)}: {pre.drop_cases_reason}")
