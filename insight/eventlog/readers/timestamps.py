"""Timestamp inference: which format a column's values follow (day- or month-first noticed, not guessed), to UTC."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

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
    return _to_utc(parsed, missing=missing, column=column, source_tz=source_tz, report=report, fix_prefix=fix_prefix)


def _to_utc(parsed: pl.Series, *, missing: int, column: str, source_tz: str, report: DataQualityReport,
            fix_prefix: str) -> pl.Series:
    """Parsed times as UTC microseconds (naive ones read in `source_tz`), with the missing count recorded."""
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


# One layout at fixed positions: a year-first date, optionally a time of day in minutes or seconds (seconds with
# an optional fraction of at most six digits) and a UTC offset.
_FIXED_LAYOUT = re.compile(rb"\d{4}([-/])\d\d\1\d\d(?:([ T])\d\d:\d\d(?::\d\d(\.\d{1,6})?)?(Z|[+-]\d\d:\d\d)?)?")
# values of the column's head the format chooser ranks formats on before the layout is trusted
_LAYOUT_HEAD = 200


def _layout_format(m: re.Match[bytes]) -> str:
    """The chooser's format for values laid out like the match."""
    sep, tsep, frac, offset = (g.decode() if g else "" for g in m.groups())
    fmt = f"%Y{sep}%m{sep}%d"
    if tsep:
        fmt += tsep + ("%H:%M:%S" if len(m.group(0)) - len(frac) - len(offset) == 19 else "%H:%M")
        fmt += ("%.f" if frac else "") + ("%z" if offset else "")
    return fmt


# two ASCII digits read as one little-endian 16-bit number -> their value (anything else -> 255, which fails every
# range check below)
_PAIR_VALUE = np.full(1 << 16, 255, dtype=np.uint8)
for _tens in range(10):
    for _ones in range(10):
        _PAIR_VALUE[(48 + _tens) | ((48 + _ones) << 8)] = 10 * _tens + _ones
# by year: days from 1970-01-01 to its first day, and whether it is a leap year (proleptic Gregorian)
_YEARS = np.arange(10_000)
_LEAP = ((_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))).astype(np.int32)
_YEAR_START = np.concatenate([[0], np.cumsum(365 + _LEAP)[:-1]]).astype(np.int64) - 719_528
# by month + 13 * leap: days from the year's first day to the month's, and the month's length (month 0: length 0,
# so no day fits)
_MONTH_START = np.zeros(26, dtype=np.int32)
_MONTH_LEN = np.zeros(26, dtype=np.int32)
for _leap in (0, 1):
    _lens = [31, 28 + _leap, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    _MONTH_LEN[13 * _leap + 1: 13 * _leap + 13] = _lens
    _MONTH_START[13 * _leap + 1: 13 * _leap + 13] = np.concatenate([[0], np.cumsum(_lens)[:-1]])


def _layout_micros(data: np.ndarray, n: int, template: bytes, m: re.Match[bytes]) -> np.ndarray | None:
    """Microseconds since the epoch (UTC when the layout has an offset, else wall-clock) of the `n` values of
    `template`'s width packed in `data`, when all follow its layout with a valid date and time of day; else None."""
    width = len(template)

    def field(pos: int, dtype: str) -> np.ndarray:
        return np.ndarray((n,), dtype=dtype, buffer=data, offset=pos, strides=(width,))

    def pair(pos: int) -> np.ndarray:
        return _PAIR_VALUE[field(pos, "<u2")]

    offset = m.group(4) or b""
    sign_at = width - 6 if len(offset) == 6 else -1
    for i, ch in enumerate(template):
        if not 48 <= ch <= 57 and i != sign_at and not bool(np.all(field(i, "u1") == ch)):
            return None
    century, year2, month, day = pair(0), pair(2), pair(5), pair(8)
    if not bool(np.all((century < 100) & (year2 < 100))):
        return None
    year = century.astype(np.int32) * 100 + year2
    if not bool(np.all((year >= 1) & (month <= 12))):
        return None
    month_at = month + 13 * _LEAP[year]
    if not bool(np.all((day >= 1) & (day <= _MONTH_LEN[month_at]))):
        return None
    days = _YEAR_START[year] + _MONTH_START[month_at] + (day - 1)
    micros = days * 86_400_000_000
    tod = None
    if m.group(2):
        hour, minute = pair(11), pair(14)
        if not bool(np.all((hour <= 23) & (minute <= 59))):
            return None
        tod = hour * np.int32(3600) + minute * np.int32(60)
        if width - len(m.group(3) or b"") - len(offset) == 19:
            second = pair(17)
            if not bool(np.all(second <= 59)):
                return None
            tod += second
        if sign_at >= 0:
            off_h, off_m, sign = pair(sign_at + 1), pair(sign_at + 4), field(sign_at, "u1")
            if not bool(np.all((off_h <= 23) & (off_m <= 59) & ((sign == 43) | (sign == 45)))):
                return None
            tod -= np.where(sign == 45, -1, 1) * (off_h * np.int32(3600) + off_m * np.int32(60))
        micros += tod * np.int64(1_000_000)
    if m.group(3):
        n_frac = len(m.group(3)) - 1
        frac = np.zeros(n, dtype=np.int32)
        for i in range(20, 20 + n_frac - 1, 2):
            p = pair(i)
            if not bool(np.all(p < 100)):
                return None
            frac = frac * 100 + p
        if n_frac % 2:
            one = field(20 + n_frac - 1, "u1") - np.uint8(48)
            if not bool(np.all(one < 10)):
                return None
            frac = frac * 10 + one
        micros += frac * 10 ** (6 - n_frac)
    return micros


def parse_fixed_layout(
    values: pa.ChunkedArray, *, column: str, source_tz: str, dayfirst: bool | None, report: DataQualityReport,
    fix_prefix: str = "timestamp",
) -> pl.Series | None:
    """`parse_timestamps` of a string column whose every value present has one fixed layout (the first value's:
    same length, same separators, digits elsewhere, a valid date and time of day), computed from the bytes;
    None, with nothing recorded, for any other column.

    Such values leave no room for choice: the formats the chooser tries either parse all of them or none, so
    it ranks the layout's own format first whatever its sample (checked on the head of the column; any other
    answer or a warning declines) and that format parses every value to the instant computed here.
    """
    if values.type not in (pa.large_string(), pa.string()) or values.null_count == len(values):
        return None
    for rows in (_LAYOUT_HEAD * 4, _LAYOUT_HEAD * 256, len(values)):  # wider only when the head is mostly empty
        head = values.slice(0, rows).drop_null().slice(0, _LAYOUT_HEAD)
        if len(head) == _LAYOUT_HEAD or rows >= len(values):
            break
    template = str(head[0].as_py()).encode()
    m = _FIXED_LAYOUT.fullmatch(template)
    if m is None:
        return None
    fmt = _layout_format(m)
    scratch = DataQualityReport(source=column, rows_in=len(head))
    head_series = pl.Series(column, head)
    assert isinstance(head_series, pl.Series)
    ranked = ranked_formats(timestamp_text(head_series), column=column, dayfirst=dayfirst, report=scratch)
    if not ranked or ranked[0] != fmt or scratch.warnings:
        return None
    width = len(template)
    offset_type = np.int64 if values.type == pa.large_string() else np.int32
    tz = "UTC" if m.group(4) else None
    micros = np.zeros(len(values), dtype=np.int64)
    valid = np.ones(len(values), dtype=bool) if values.null_count else None
    at = 0
    for chunk in values.chunks:
        n = len(chunk)
        if not n:
            continue
        bufs = chunk.buffers()
        offsets = np.frombuffer(bufs[1], dtype=offset_type, count=chunk.offset + n + 1)[chunk.offset:]
        lengths = np.diff(offsets)
        if chunk.null_count:
            assert valid is not None
            ok = chunk.is_valid().to_numpy(zero_copy_only=False)
            valid[at:at + n] = ok
            if bool(np.any(lengths != np.where(ok, width, 0))):
                return None
        else:
            ok = None
            if bool(np.any(lengths != width)):
                return None
        start, stop = int(offsets[0]), int(offsets[-1])
        if stop > start:
            got = _layout_micros(np.frombuffer(bufs[2], dtype=np.uint8)[start:stop], (stop - start) // width,
                                 template, m)
            if got is None:
                return None
            if ok is None:
                micros[at:at + n] = got
            else:
                micros[at:at + n][ok] = got
        at += n
    arr = pa.array(micros, type=pa.timestamp("us", tz=tz), mask=None if valid is None else ~valid)
    parsed = pl.Series(column, arr)
    assert isinstance(parsed, pl.Series)
    # what parse_timestamps records for a column its first-ranked format parses completely
    report.add(f"{fix_prefix}_format", 0, f"column {column!r}: {fmt}")
    report.add(f"{fix_prefix}_unparseable", 0, "")
    return _to_utc(parsed, missing=values.null_count, column=column, source_tz=source_tz, report=report,
                   fix_prefix=fix_prefix)
