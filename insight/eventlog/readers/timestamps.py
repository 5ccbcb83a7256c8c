"""Timestamp inference: which format a column's values follow (day- or month-first noticed, not guessed), to UTC."""

from __future__ import annotations

import functools
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
    fmts = _ISO_FORMATS + _DAYFIRST_FORMATS + _MONTHFIRST_FORMATS
    # one query for all formats: the sample is small, and a query per format costs more than its parse
    misses = pl.DataFrame({"v": sample}).select(
        pl.col("v").str.to_datetime(fmt, strict=False).null_count().alias(str(i)) for i, fmt in enumerate(fmts)
    ).row(0)
    scores = {fmt: sample.len() - miss for fmt, miss in zip(fmts, misses, strict=True)}
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


# distinct values the format chooser samples from the head of a column, and as many from an even spread of it
_SAMPLE_HALF = 2500


def format_sample(nonnull: pl.Series) -> pl.Series:
    """Distinct values the formats are ranked on, in file order (the same column always gives the same sample):
    the first ones of the head, and an even spread over the whole column, so a format that only starts late in
    the file is in it too."""
    step = max(1, nonnull.len() // 20_000)
    head = nonnull.head(20_000).unique(maintain_order=True).head(_SAMPLE_HALF)
    spread = nonnull.gather_every(step).unique(maintain_order=True)
    spread = spread.gather_every(max(1, -(-spread.len() // _SAMPLE_HALF)))
    return pl.concat([head, spread]).unique(maintain_order=True)


def ranked_formats(nonnull: pl.Series, *, column: str, dayfirst: bool | None,
                   report: DataQualityReport) -> list[str]:
    """The formats to try, best first, from a sample of the non-null values (distinct values from the head plus an
    even spread, so late format changes show up); warns when day / month order is ambiguous."""
    fmts, ambiguous = _candidate_formats(format_sample(nonnull))
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


class _Tables:
    """Lookup tables of the fixed-layout parser, indexed by two ASCII characters read as one little-endian 16-bit
    number (pair) or by (year, month) codes; anything that is not a valid field maps to a value that fails the
    one range check each result gets."""

    def __init__(self) -> None:
        tens, ones = np.divmod(np.arange(100), 10)
        pairs = (48 + tens) | ((48 + ones) << 8)
        # two digits -> their value; anything else -> a value above every valid one (for year halves, the one
        # just above, which the (year, month) tables treat as a bad year)
        self.pair = np.full(1 << 16, 255, dtype=np.uint8)
        self.pair[pairs] = np.arange(100)
        year_half = np.full(1 << 16, 100, dtype=np.int32)
        year_half[pairs] = np.arange(100)
        # a year's first and last two digits -> their parts of the (year halves, month) code, so that the code is
        # a sum of three lookups
        self.year_high = year_half * (101 * 13)
        self.year_low = year_half * 13
        # a month -> its number, else zero; a day -> its number less one, else a value above any month's length
        self.month = np.zeros(1 << 16, dtype=np.int32)
        self.month[pairs[1:13]] = np.arange(1, 13)
        self.day = np.full(1 << 16, 255, dtype=np.uint8)
        self.day[pairs[1:32]] = np.arange(31)
        # hour, minute, second -> seconds of the day; else a negative number no valid sum can offset
        bad = -(1 << 28)
        self.hour = np.full(1 << 16, bad, dtype=np.int32)
        self.hour[pairs[:24]] = np.arange(24) * 3600
        self.minute = np.full(1 << 16, bad, dtype=np.int32)
        self.minute[pairs[:60]] = np.arange(60) * 60
        self.second = np.full(1 << 16, bad, dtype=np.int32)
        self.second[pairs[:60]] = np.arange(60)
        # by (year halves, month): days from the epoch to the month's first day and the month's length (none for
        # year zero, month zero or a bad year half, so no day fits)
        year = np.arange(101 * 101) // 101 * 100 + np.arange(101 * 101) % 101
        ok = (np.arange(101 * 101) // 101 < 100) & (np.arange(101 * 101) % 101 < 100) & (year >= 1)
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        y = year - 1  # whole years before `year` in the proleptic calendar, then their days since the epoch
        year_start = y * 365 + y // 4 - y // 100 + y // 400 - 719_162
        lens = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
        month_len = lens[None, :] + ((np.arange(13) == 2)[None, :] & leap[:, None])
        month_start = np.concatenate([np.zeros((len(year), 2), dtype=np.int64),
                                      np.cumsum(month_len[:, 1:12], axis=1)], axis=1)
        self.month_len = np.where(ok[:, None], month_len, 0).astype(np.int32).ravel()
        self.month_start = (year_start[:, None] + month_start).astype(np.int32).ravel()


@functools.cache
def _tables() -> _Tables:
    return _Tables()


def _separators_match(data: np.ndarray, n: int, template: bytes, sign_at: int) -> bool:
    """Whether each of the `n` values of `template`'s width packed in `data` holds the template's separators (its
    bytes other than digits and an offset's sign). They are compared eight bytes at a time, masked, so a value
    takes a pass per eight-byte word that holds separators rather than one per separator."""
    width = len(template)
    seps = [i for i, ch in enumerate(template) if not 48 <= ch <= 57 and i != sign_at]
    while seps:
        start = min(seps[0], width - 8)  # a word must end within the value
        mask = bytes(255 if start + i in seps else 0 for i in range(8))
        keep = np.uint64(int.from_bytes(mask, "little"))
        want = np.uint64(int.from_bytes(template[start:start + 8], "little")) & keep
        words = np.ndarray((n,), dtype="<u8", buffer=data, offset=start, strides=(width,))
        if not bool(np.all((words & keep) == want)):
            return False
        seps = [i for i in seps if i >= start + 8]
    return True


def _layout_micros(data: np.ndarray, n: int, template: bytes, m: re.Match[bytes]) -> np.ndarray | None:
    """Microseconds since the epoch (UTC when the layout has an offset, else wall-clock) of the `n` values of
    `template`'s width packed in `data`, when all follow its layout with a valid date and time of day; else None."""
    width = len(template)
    tab = _tables()

    def field(pos: int, dtype: str) -> np.ndarray:
        return np.ndarray((n,), dtype=dtype, buffer=data, offset=pos, strides=(width,))

    # np.take rather than indexing: it looks up small unsigned indices without first widening them
    def pair(table: np.ndarray, pos: int) -> np.ndarray:
        return np.take(table, field(pos, "<u2"))

    offset = m.group(4) or b""
    sign_at = width - 6 if len(offset) == 6 else -1
    if not _separators_match(data, n, template, sign_at):
        return None
    year_month = pair(tab.year_high, 0) + pair(tab.year_low, 2) + pair(tab.month, 5)
    day = pair(tab.day, 8)
    if not bool(np.all(day < np.take(tab.month_len, year_month))):
        return None
    micros = (np.take(tab.month_start, year_month) + day) * np.int64(86_400_000_000)
    if m.group(2):
        tod = pair(tab.hour, 11) + pair(tab.minute, 14)
        if width - len(m.group(3) or b"") - len(offset) == 19:
            tod += pair(tab.second, 17)
        if not bool(np.all(tod >= 0)):
            return None
        if sign_at >= 0:
            sign = field(sign_at, "u1")
            shift = pair(tab.hour, sign_at + 1) + pair(tab.minute, sign_at + 4)
            if not bool(np.all((shift >= 0) & ((sign == 43) | (sign == 45)))):
                return None
            tod -= np.where(sign == 45, -shift, shift)
        micros += tod * np.int64(1_000_000)
    if m.group(3):
        n_frac = len(m.group(3)) - 1
        frac = np.zeros(n, dtype=np.int32)
        for i in range(20, 20 + n_frac - 1, 2):
            p = pair(tab.pair, i)
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
