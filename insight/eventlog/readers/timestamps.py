"""Timestamp inference: which format a column's values follow (day- or month-first noticed, not guessed), to UTC."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl

from core.errors import InvalidEventLog
from insight.eventlog.schema import DataQualityReport

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


def timestamp_text(values: pl.Series) -> pl.Series:
    """Timestamp values as stripped text, a trailing Z spelled +00:00 (what the formats are tried on)."""
    s = values.cast(pl.String).str.strip_chars()
    if s.str.ends_with("Z").any():
        s = s.str.replace(r"Z$", "+00:00")
    return s


def ranked_formats(nonnull: pl.Series, *, column: str, dayfirst: bool | None,
                   report: DataQualityReport) -> list[str]:
    """The formats to try, best first, from a sample of the non-null values (distinct values from the head plus an
    even spread, so late format changes show up); warns when day / month order is ambiguous."""
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
    return fmts


def choose_format(s: pl.Series, fmts: list[str], *, column: str, report: DataQualityReport,
                  fix_prefix: str) -> tuple[str | None, pl.Series | None]:
    """The format among `fmts` that parses the most of `s`, and `s` parsed with it; (None, None) if none parses."""
    best: pl.Series | None = None
    chosen: str | None = None
    for fmt in fmts:
        cand = s.str.to_datetime(fmt, strict=False, time_unit="us")
        if best is None or cand.null_count() < best.null_count():
            best, chosen = cand, fmt
            report.add(f"{fix_prefix}_format", 0, f"column {column!r}: {fmt}")
        if best.null_count() == s.null_count():
            break
    return chosen, best


def parse_mixed(s: pl.Series, *, dayfirst: bool | None) -> pl.Series:
    """The last resort: pandas' mixed-format parser, over the distinct values only."""
    uniq = s.drop_nulls().unique()
    conv = pd.to_datetime(pd.Series(uniq.to_list(), dtype=object), errors="coerce", format="mixed",
                          dayfirst=bool(dayfirst), utc=True).astype("datetime64[us, UTC]")
    table = pl.DataFrame({"raw": uniq, "parsed": pl.from_pandas(conv)})
    return pl.DataFrame({"raw": s}).join(table, on="raw", how="left", maintain_order="left")["parsed"]


def parse_timestamps(
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
        s = timestamp_text(values)
        nonnull = s.drop_nulls()
        if nonnull.len() == 0:
            raise InvalidEventLog("timestamp column holds no values", file=str(path), column=column)
        _, best = choose_format(s, ranked_formats(nonnull, column=column, dayfirst=dayfirst, report=report),
                                  column=column, report=report, fix_prefix=fix_prefix)
        if best is None:
            best = parse_mixed(s, dayfirst=dayfirst)
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


def first_bad_row(parsed: pl.Series, raw: pl.Series) -> int | None:
    """0-based row of the first value present in `raw` that did not parse (None when all did)."""
    mask = parsed.is_null() & raw.is_not_null()
    idx = mask.arg_true()
    return int(idx[0]) if idx.len() else None
