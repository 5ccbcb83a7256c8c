"""Read CSV / XES / Parquet event logs onto the canonical schema (column mapping, timestamps to UTC)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import polars as pl

from insight.errors import InvalidEventLog
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    PM4PY_COLUMNS,
    REQUIRED_COLUMNS,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)

LogFormat = Literal["csv", "xes", "parquet"]
TimestampPolicy = Literal["drop", "impute", "error"]

PARQUET_META_KEY = b"deskpilot"


@dataclass(frozen=True)
class Preset:
    """How to read one known public log: column mapping, missing-value marker, date order and known defects."""

    mapping: dict[str, str]
    na_values: tuple[str, ...] = ()
    dayfirst: bool | None = None
    source_tz: str = "UTC"
    # cases the source itself is known to hold incomplete (e.g. a truncated copy); dropped and counted
    drop_cases: tuple[str, ...] = ()
    drop_cases_reason: str = ""
    # canonical activity built by joining these (already mapped) columns with "-"
    activity_from: tuple[str, ...] = ()
    # further columns holding timestamps, parsed with the same rules as `timestamp`
    extra_timestamps: tuple[str, ...] = ()
    # customer / agent identifier columns pseudonymized by `ingest` besides `resource`
    identifier_columns: tuple[str, ...] = ()
    description: str = ""


PRESETS: dict[str, Preset] = {
    "helpdesk_csv": Preset(
        mapping={
            "Case ID": CASE_ID,
            "Activity": ACTIVITY,
            "Complete Timestamp": TIMESTAMP,
            "Resource": RESOURCE,
        },
        identifier_columns=("customer",),
        description="Helpdesk finale.csv with case attributes (naive local times, read as UTC).",
    ),
    "helpdesk_xes": Preset(mapping={}, description="Helpdesk.xes.gz (pm4py names)."),
    "bpic2013_vinst": Preset(
        mapping={
            "SR Number": CASE_ID,
            "Activity": ACTIVITY,
            "Change Date+Time": TIMESTAMP,
            "Owner First Name": RESOURCE,
            "Involved ST": GROUP,
            "Sub Status": LIFECYCLE,
        },
        description="BPIC 2013 VINST incidents CSV (IBM copy); activity = Status-Sub Status, group = Involved ST.",
    ),
    "bpic2013_xes": Preset(
        mapping={},
        activity_from=(ACTIVITY, LIFECYCLE),
        description="BPIC 2013 incidents XES; activity = Status-Sub Status (concept:name-lifecycle:transition).",
    ),
    "bpic2012_xes": Preset(mapping={}, description="BPIC 2012 loan applications XES."),
    "servicenow": Preset(
        mapping={
            "number": CASE_ID,
            "incident_state": ACTIVITY,
            "sys_updated_at": TIMESTAMP,
            "assignment_group": GROUP,
            "assigned_to": RESOURCE,
            "contact_type": CHANNEL,
        },
        na_values=("?",),
        dayfirst=True,
        drop_cases=("INC0029233",),
        drop_cases_reason="the stored copy is truncated inside this last incident (SOURCES.md)",
        extra_timestamps=("opened_at", "sys_created_at", "resolved_at", "closed_at"),
        identifier_columns=("caller_id", "opened_by", "sys_created_by", "sys_updated_by", "resolved_by"),
        description="UCI 498 ServiceNow incident log (IBM subset): '?' is missing, day-first dates.",
    ),
    "tax2017": Preset(
        mapping={"CaseID": CASE_ID, "ActivityID": ACTIVITY, "CompleteTimestamp": TIMESTAMP},
        description="Tax et al. 2017 preprocessed CSVs (integer activity ids).",
    ),
}

# Names seen in the wild for each canonical column, compared after lower-casing and dropping
# everything but letters and digits; earlier entries win.
_AUTO_NAMES: dict[str, tuple[str, ...]] = {
    CASE_ID: ("caseconceptname", "caseid", "case", "ticketid", "incidentid", "srnumber", "ticket", "caseidentifier"),
    ACTIVITY: ("conceptname", "activity", "activityname", "eventname", "event", "task", "action"),
    TIMESTAMP: ("timetimestamp", "completetimestamp", "timestamp", "endtimestamp", "eventtime", "datetime", "time",
                "changedatetime", "date"),
    RESOURCE: ("orgresource", "resource", "agent", "user", "owner", "assignedto", "performer"),
    GROUP: ("orggroup", "group", "team", "queue", "assignmentgroup"),
    CHANNEL: ("channel", "contacttype", "medium"),
    LIFECYCLE: ("lifecycletransition", "lifecycle", "transition"),
}

_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (unzip it first)",
}

# Timestamp formats tried in order (polars/chrono syntax). Day-first and month-first slashed dates are
# tried as two groups so an ambiguous column is noticed instead of guessed.
_ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M:%S%.f", "%Y/%m/%d %H:%M", "%Y/%m/%d",
)
_DAYFIRST_FORMATS = (
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
)
_MONTHFIRST_FORMATS = (
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p",
    "%m-%d-%Y %H:%M:%S", "%m-%d-%Y %H:%M", "%m-%d-%Y",
)


@dataclass
class _Raw:
    """A source read into a frame of strings (or typed values) before canonical mapping."""

    frame: pl.DataFrame
    report: DataQualityReport
    warnings: list[str] = field(default_factory=list)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def detect_format(path: Path) -> LogFormat:
    """csv / xes / parquet from the file's first bytes (and its name as a tie-breaker); rejects other files."""
    if not path.is_file():
        raise InvalidEventLog("file does not exist", file=str(path))
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        raise InvalidEventLog("file is empty: an event log needs a header and at least one event", file=str(path))
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            try:
                head = gz.read(4096)
            except (OSError, EOFError) as exc:
                raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise InvalidEventLog(f"not an event log: the file is {what}", file=str(path))
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"<?xml", b"<log")):
        if b"<log" in head or b"xes" in head.lower():
            return "xes"
        raise InvalidEventLog("XML file that is not an XES event log (no <log> element)", file=str(path))
    if text.startswith((b"{", b"[")):
        raise InvalidEventLog(
            "not an event log: the file is JSON; deskpilot reads CSV, XES or Parquet logs", file=str(path)
        )
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidEventLog("not an event log: binary content (NUL bytes) in a file expected to be CSV",
                              file=str(path))
    return "csv"


def _decode(data: bytes, path: Path, warnings: list[str]) -> bytes:
    """UTF-8 bytes without BOM (UTF-16 and cp1252 sources are re-encoded, with a warning)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        warnings.append("source encoded as UTF-16; re-encoded to UTF-8")
        return data.decode("utf-16").encode("utf-8")
    try:
        data[:1_000_000].decode("utf-8")
        return data
    except UnicodeDecodeError:
        pass
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        warnings.append("source is not UTF-8; decoded as cp1252/latin-1")
        try:
            return data.decode("cp1252").encode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1").encode("utf-8")


def _sniff_delimiter(sample: str, path: Path) -> str:
    lines = [ln for ln in sample.splitlines()[:50] if ln.strip()]
    if not lines:
        raise InvalidEventLog("file holds no header line", file=str(path))
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        if counts[best] == 0:
            raise InvalidEventLog(
                "cannot find a column delimiter (tried , ; tab |) in the header line", file=str(path),
            ) from None
        return best


def _dedupe_header(names: list[str], warnings: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for raw in names:
        name = raw.strip() or "unnamed"
        if name in seen:
            seen[name] += 1
            new = f"{name}_{seen[name]}"
            warnings.append(f"duplicate column name {name!r} renamed to {new!r}")
            out.append(new)
        else:
            seen[name] = 1
            out.append(name)
    return out


def _read_csv(path: Path, *, na_values: Sequence[str], delimiter: str | None) -> _Raw:
    warnings: list[str] = []
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    data = _decode(raw, path, warnings)
    sample = data[:65536].decode("utf-8", errors="replace")
    sep = delimiter or _sniff_delimiter(sample, path)
    header_line = sample.splitlines()[0] if sample else ""
    header = next(csv.reader([header_line], delimiter=sep))
    names = _dedupe_header(header, warnings)
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            separator=sep,
            infer_schema=False,
            null_values=list(na_values) + [""] if na_values else [""],
        )
    except pl.exceptions.PolarsError as exc:
        row = _first_ragged_row(data, sep, len(names))
        where = f"; data row {row} has a different number of fields than the {len(names)} header columns" if row else ""
        raise InvalidEventLog(f"cannot parse CSV (delimiter {sep!r}): {str(exc).splitlines()[0]}{where}",
                              file=str(path), row=row) from exc
    if len(frame.columns) != len(names):
        raise InvalidEventLog(
            f"header has {len(names)} fields but rows have {len(frame.columns)}", file=str(path),
        )
    frame.columns = names
    if len(names) < 2:
        raise InvalidEventLog(
            f"only one column {names} found; not an event log (delimiter {sep!r})", file=str(path),
        )
    report = DataQualityReport(source=str(path), rows_in=frame.height)
    report.add("csv_dialect", 0, f"delimiter {sep!r}, {len(names)} columns")
    return _Raw(frame, report, warnings)


def _first_ragged_row(data: bytes, sep: str, n_fields: int) -> int | None:
    """1-based data row whose field count differs from the header's (only run when parsing failed)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")), delimiter=sep)
    next(reader, None)
    for i, fields in enumerate(reader, start=1):
        if fields and len(fields) != n_fields:
            return i
    return None


def _resolve_mapping(
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
    normed = {c: _norm(c) for c in columns}
    for canon, names in _AUTO_NAMES.items():
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


def _candidate_formats(sample: pl.Series) -> tuple[list[str], bool]:
    """Formats ranked by how many sampled values they parse, and whether day- and month-first tie (ambiguous)."""
    scores: dict[str, int] = {}
    for fmt in _ISO_FORMATS + _DAYFIRST_FORMATS + _MONTHFIRST_FORMATS:
        scores[fmt] = sample.len() - sample.str.to_datetime(fmt, strict=False).null_count()
    ranked = [f for f in sorted(scores, key=lambda f: -scores[f]) if scores[f] > 0]
    if not ranked:
        return [], False
    top = scores[ranked[0]]
    best_day = max(scores[f] for f in _DAYFIRST_FORMATS)
    best_month = max(scores[f] for f in _MONTHFIRST_FORMATS)
    ambiguous = best_day == best_month == top
    return ranked[:4], ambiguous


def _parse_timestamps(
    values: pl.Series, *, column: str, path: Path, source_tz: str, dayfirst: bool | None,
    report: DataQualityReport, fix_prefix: str = "timestamp",
) -> pl.Series:
    """UTC datetimes from strings; unparseable values become null and are counted (never silently)."""
    if values.dtype != pl.String:
        if isinstance(values.dtype, pl.Datetime):
            parsed = values
        else:
            values = values.cast(pl.String)
            parsed = None
    else:
        parsed = None
    if parsed is None:
        s = values.str.strip_chars()
        if s.str.ends_with("Z").any():
            s = s.str.replace(r"Z$", "+00:00")
        nonnull = s.drop_nulls()
        if nonnull.len() == 0:
            raise InvalidEventLog("timestamp column holds no values", file=str(path), column=column)
        # distinct values from the head plus an even spread over the file, so late format changes show up
        step = max(1, nonnull.len() // 20_000)
        sample = pl.concat([nonnull.head(20_000), nonnull.gather_every(step)]).unique().head(5000)
        fmts, ambiguous = _candidate_formats(sample)
        if ambiguous:
            day = [f for f in fmts if f in _DAYFIRST_FORMATS]
            month = [f for f in fmts if f in _MONTHFIRST_FORMATS]
            rest = [f for f in fmts if f not in day and f not in month]
            if dayfirst is None:
                report.warnings.append(
                    f"column {column!r}: day/month order is ambiguous in the sample; assumed month-first "
                    "(pass dayfirst=True for day-first)"
                )
            fmts = (day + month if dayfirst else month + day) + rest
        elif dayfirst is False and fmts and fmts[0] in _DAYFIRST_FORMATS:
            report.warnings.append(f"column {column!r}: values only fit day-first dates; read day-first")
        best: pl.Series | None = None
        for fmt in fmts:
            cand = s.str.to_datetime(fmt, strict=False, time_unit="us")
            if best is None or cand.null_count() < best.null_count():
                best = cand
                report.add(f"{fix_prefix}_format", 0, f"column {column!r}: {fmt}")
            if best.null_count() == s.null_count():
                break
        if best is None:
            # last resort: pandas' mixed-format parser over distinct values only
            uniq = nonnull.unique()
            conv = pd.to_datetime(pd.Series(uniq.to_list(), dtype=object), errors="coerce", format="mixed",
                                  dayfirst=bool(dayfirst), utc=True).astype("datetime64[us, UTC]")
            table = pl.DataFrame({"raw": uniq, "parsed": pl.from_pandas(conv)})
            best = pl.DataFrame({"raw": s}).join(table, on="raw", how="left", maintain_order="left")["parsed"]
            report.add(f"{fix_prefix}_format", 0, f"column {column!r}: mixed formats (pandas fallback)")
        parsed = best
    missing = values.null_count()
    bad_mask = parsed.is_null() & values.is_not_null()
    n_bad = int(bad_mask.sum())
    nonnull_count = values.len() - missing
    if nonnull_count and n_bad == nonnull_count:
        first = int(bad_mask.arg_true()[0])
        raise InvalidEventLog(
            f"no value of the timestamp column could be parsed as a date/time (first: {values[first]!r})",
            file=str(path), row=first + 1, column=column,
        )
    detail = ""
    if n_bad:
        first = int(bad_mask.arg_true()[0])
        detail = f"column {column!r}, first at data row {first + 1}: {values[first]!r}"
    report.add(f"{fix_prefix}_unparseable", n_bad, detail)
    report.add(f"{fix_prefix}_missing", missing, f"column {column!r}" if missing else "")
    dtype = parsed.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is None:
        # naive times are wall-clock times of the source system
        parsed = parsed.dt.replace_time_zone(source_tz, ambiguous="earliest", non_existent="null")
        report.add(f"{fix_prefix}_timezone", 0, f"naive times read as {source_tz}, stored as UTC")
    return parsed.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(column)


def _first_bad_row(parsed: pl.Series, raw: pl.Series) -> int | None:
    mask = parsed.is_null() & raw.is_not_null()
    idx = mask.arg_true()
    return int(idx[0]) if idx.len() else None


def _infer_types(frame: pl.DataFrame, skip: set[str]) -> pl.DataFrame:
    """Numeric types for string columns whose every value is a number (ids and labels stay strings)."""
    casts = []
    for name, dtype in frame.schema.items():
        if name in skip or dtype != pl.String:
            continue
        col = frame[name]
        nn = col.null_count()
        if nn == col.len():
            continue
        head = col.drop_nulls().head(200)
        if head.str.contains(r"^\s*-?\d+(\.\d+)?\s*$").all() and not head.str.contains(r"^\s*0\d").any():
            for typ in (pl.Int64, pl.Float64):
                conv = col.str.strip_chars().cast(typ, strict=False)
                if conv.null_count() == nn:
                    casts.append(conv.alias(name))
                    break
    return frame.with_columns(casts) if casts else frame


def _canonicalize(
    raw: _Raw, *, path: Path, mapping: Mapping[str, str] | None, how: str, preset: Preset | None,
    source_tz: str, dayfirst: bool | None, timestamp_policy: TimestampPolicy,
) -> tuple[pl.DataFrame, DataQualityReport]:
    frame, report = raw.frame, raw.report
    report.warnings.extend(raw.warnings)
    if frame.height == 0:
        raise InvalidEventLog("the log has a header but no events", file=str(path))
    used = _resolve_mapping(frame.columns, mapping, path, report, how)
    clash = [t for s, t in used.items() if t in frame.columns and t not in used]
    if clash:
        # a source already holds a column under the canonical name we are mapping onto
        frame = frame.rename({c: f"{c}_source" for c in clash})
        report.warnings.append(f"source column(s) {clash} renamed to *_source to make room for the mapping")
    frame = frame.rename(used)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidEventLog(
            f"missing required column(s) {missing}; the file has {raw.frame.columns} "
            "(pass a mapping like {'Ticket': 'case_id'} or a preset)",
            file=str(path), column=missing[0],
        )
    if preset and preset.activity_from:
        parts = [c for c in preset.activity_from if c in frame.columns]
        frame = frame.with_columns(
            pl.concat_str([pl.col(c).cast(pl.String) for c in parts], separator="-", ignore_nulls=True).alias(ACTIVITY)
        )
        report.add("activity_from_columns", frame.height, "activity = " + "-".join(parts))
    raw_ts = frame[TIMESTAMP]
    ts = _parse_timestamps(raw_ts, column=TIMESTAMP, path=path, source_tz=source_tz, dayfirst=dayfirst, report=report)
    if timestamp_policy == "error":
        bad = _first_bad_row(ts, raw_ts)
        if bad is not None:
            src_col = next((s for s, t in used.items() if t == TIMESTAMP), TIMESTAMP)
            raise InvalidEventLog(
                f"unparseable timestamp {raw_ts[bad]!r} (timestamp policy 'error')",
                file=str(path), row=bad + 1, column=src_col,
            )
    cols = [ts]
    for extra in preset.extra_timestamps if preset else ():
        if extra in frame.columns:
            cols.append(_parse_timestamps(frame[extra], column=extra, path=path, source_tz=source_tz,
                                          dayfirst=dayfirst, report=report, fix_prefix=f"{extra}"))
    frame = frame.with_columns(cols)
    keep_str = {CASE_ID, ACTIVITY, RESOURCE, GROUP, CHANNEL, LIFECYCLE, TIMESTAMP}
    frame = frame.with_columns([pl.col(c).cast(pl.String) for c in (CASE_ID, ACTIVITY)])
    frame = _infer_types(frame, keep_str)
    return frame, report


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
    fmt = detect_format(p)
    if fmt == "xes":
        log = _read_xes(p, mapping=mapping, how=how, preset=pre)
    else:
        if fmt == "csv":
            raw = _read_csv(p, na_values=nas, delimiter=delimiter)
            meta: dict[str, Any] = {}
        else:
            raw, meta = _read_parquet(p)
        frame, report = _canonicalize(raw, path=p, mapping=mapping, how=how, preset=pre, source_tz=tz,
                                      dayfirst=dayf, timestamp_policy=timestamp_policy)
        df = frame.to_pandas()
        log = EventLog(df, name=meta.get("name") or _log_name(p), case_attributes=list(meta.get("case_attributes", [])),
                       quality=report)
    _drop_canonical_copies(log)
    if pre and pre.drop_cases:
        _drop_known_cases(log, pre)
    return log


def _drop_canonical_copies(log: EventLog) -> None:
    """Drop source columns that repeat a canonical column value for value (e.g. XES `Resource` next to
    `org:resource`): they add nothing and would keep raw identifiers out of reach of pseudonymization."""
    df = log.df
    dropped = []
    for col in list(df.columns):
        if col in CANONICAL_COLUMNS:
            continue
        canon = next((c for c, names in _AUTO_NAMES.items() if _norm(col) in names), None)
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


def _log_name(p: Path) -> str:
    name = p.name
    for suf in (".gz", ".csv", ".tsv", ".txt", ".xes", ".parquet", ".pq"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return name


def _drop_known_cases(log: EventLog, pre: Preset) -> None:
    mask = log.df[CASE_ID].isin(list(pre.drop_cases))
    n = int(mask.sum())
    log.df = log.df.loc[~mask].reset_index(drop=True)
    if log.quality is not None:
        log.quality.add("known_incomplete_case_dropped", n,
                        f"cases {list(pre.drop_cases)}: {pre.drop_cases_reason}")


def _read_parquet(path: Path) -> tuple[_Raw, dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for broken files
        raise InvalidEventLog(f"cannot read Parquet: {exc}", file=str(path)) from exc
    meta: dict[str, Any] = {}
    raw_meta = (table.schema.metadata or {}).get(PARQUET_META_KEY)
    if raw_meta:
        meta = json.loads(raw_meta)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    report = DataQualityReport(source=str(path), rows_in=frame.height)
    return _Raw(frame, report), meta


def _read_xes(path: Path, *, mapping: Mapping[str, str] | None, how: str, preset: Preset | None) -> EventLog:
    from insight.eventlog.pm4py_bridge import from_pm4py, read_xes_frame

    pm = read_xes_frame(path)
    if pm.empty:
        raise InvalidEventLog("the XES log holds no events", file=str(path))
    report = DataQualityReport(source=str(path), rows_in=len(pm))
    inverse = {v: k for k, v in PM4PY_COLUMNS.items()}
    try:
        log = from_pm4py(pm, _log_name(path))
    except InvalidEventLog as exc:
        raise InvalidEventLog(exc.message.split(" (file")[0], file=str(path), column=exc.column) from exc
    df = log.df
    if mapping:
        translated = {inverse.get(k, k): v for k, v in mapping.items()}
        bad = [k for k in translated if k not in df.columns]
        if bad:
            raise InvalidEventLog(
                f"column mapping names column(s) {bad} that the file does not have; it has {list(df.columns)}",
                file=str(path), column=bad[0],
            )
        df = df.rename(columns=translated)
        report.add("column_mapping", 0, f"{how}: pm4py names + " + ", ".join(f"{k!r}->{v}" for k, v in mapping.items()))
    else:
        report.add("column_mapping", 0, f"{how}: pm4py standard XES names")
    if preset and preset.activity_from:
        parts = [c for c in preset.activity_from if c in df.columns]
        joined = df[parts[0]].astype("str")
        for c in parts[1:]:
            joined = joined.str.cat(df[c].astype("str"), sep="-", na_rep="")
        df[ACTIVITY] = joined.str.rstrip("-")
        report.add("activity_from_columns", len(df), "activity = " + "-".join(parts))
    n_bad_ts = int(df[TIMESTAMP].isna().sum())
    report.add("timestamp_unparseable", n_bad_ts, "XES time:timestamp" if n_bad_ts else "")
    report.add("timestamp_missing", 0)
    case_attrs = [c for c in log.case_attributes if c in df.columns]
    return EventLog(df.reset_index(drop=True), name=log.name, case_attributes=case_attrs, quality=report)

