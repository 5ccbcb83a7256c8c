"""Timestamps of one fixed layout are computed from the bytes of the Arrow column (parse_fixed_layout); the frame,
the quality report and every error must equal what the polars reader and the format chooser give, and any column
that is not a clean instance of one layout (a late change of format, an impossible date, padding) must decline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from core.errors import InvalidEventLog
from insight.eventlog import clean, read_log
from insight.eventlog.readers import csv_file, read, timestamps
from insight.eventlog.schema import DataQualityReport

N = 3000  # rows per file; more than the head the chooser ranks formats on


def _stamps(fmt: str, n: int = N, start: datetime = datetime(2024, 1, 30, 22, 58, 7, 123456),
            step: timedelta = timedelta(hours=7, minutes=13, seconds=11, microseconds=654321)) -> list[str]:
    return [(start + i * step).strftime(fmt) for i in range(n)]


def _write(tmp_path, stamps: list[str], name: str = "log.csv"):
    p = tmp_path / name
    lines = ["Case ID,Activity,Complete Timestamp,Resource"]
    lines += [f"C{i // 7:05d},{'Open' if i % 7 == 0 else 'Work'},{ts},agent{i % 5}" for i, ts in enumerate(stamps)]
    p.write_text("\n".join(lines) + "\n")
    return p


def _outcome(p, **kwargs):
    try:
        log = read_log(p, **kwargs)
    except InvalidEventLog as exc:
        return str(exc)
    return log


def _compare(tmp_path, monkeypatch, stamps, *, fast: bool, **kwargs):
    """read_log on the Arrow path against the polars reader; `fast`: whether the fixed-layout parser answered."""
    p = _write(tmp_path, stamps)
    answers = []
    real = read.parse_fixed_layout

    def spy(*a, **k):
        out = real(*a, **k)
        answers.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(read, "parse_fixed_layout", spy)
        ours = _outcome(p, **kwargs)
    assert answers and answers[0] is fast
    with monkeypatch.context() as m:
        m.setattr(csv_file, "_read_plain_arrow", lambda *a, **k: None)
        ref = _outcome(p, **kwargs)
    if isinstance(ours, str) or isinstance(ref, str):
        assert ours == ref
        return ours
    pd.testing.assert_frame_equal(ours.df, ref.df, check_exact=True)
    assert list(ours.df.dtypes) == list(ref.df.dtypes)
    assert ours.quality is not None and ref.quality is not None
    assert ours.quality.to_dict() == ref.quality.to_dict()
    a, b = clean(ours), clean(ref)
    pd.testing.assert_frame_equal(a.df, b.df, check_exact=True)
    assert a.quality is not None and b.quality is not None
    assert a.quality.to_dict() == b.quality.to_dict()
    return ours


@pytest.mark.parametrize("fmt", [
    "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M", "%Y-%m-%d", "%Y/%m/%d", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f",
    "%Y/%m/%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%SZ",
])
def test_fixed_layouts_equal_the_chooser(tmp_path, monkeypatch, fmt):
    log = _compare(tmp_path, monkeypatch, _stamps(fmt), fast=True)
    assert not isinstance(log, str) and str(log.df["timestamp"].dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize("digits", [1, 3, 5])
def test_short_fractions(tmp_path, monkeypatch, digits):
    stamps = [s[: len(s) - 6 + digits] for s in _stamps("%Y-%m-%d %H:%M:%S.%f")]
    _compare(tmp_path, monkeypatch, stamps, fast=True)


def test_seven_fraction_digits_decline(tmp_path, monkeypatch):
    _compare(tmp_path, monkeypatch, [s + "7" for s in _stamps("%Y-%m-%d %H:%M:%S.%f")], fast=False)


@pytest.mark.parametrize("offsets", [["+01:00"], ["-05:30", "+14:00", "+00:00", "-00:00", "+05:45"]])
@pytest.mark.parametrize("frac", [False, True])
@pytest.mark.parametrize("sep", ["T", " "])
def test_utc_offsets(tmp_path, monkeypatch, offsets, frac, sep):
    base = _stamps(f"%Y-%m-%d{sep}%H:%M:%S" + (".%f" if frac else ""))
    stamps = [s + offsets[i % len(offsets)] for i, s in enumerate(base)]
    log = _compare(tmp_path, monkeypatch, stamps, fast=True)
    assert not isinstance(log, str)
    want = datetime.fromisoformat(stamps[1].replace(" ", "T")).astimezone(UTC)
    assert log.df["timestamp"].iloc[1] == pd.Timestamp(want)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Rome", "America/New_York", "Australia/Lord_Howe"])
def test_naive_times_in_a_source_zone_with_gaps_and_repeats(tmp_path, monkeypatch, tz):
    # every ten minutes across the spring and autumn clock changes: skipped times become null, repeated ones
    # take the earlier instant
    stamps = _stamps("%Y-%m-%d %H:%M:%S", n=N, start=datetime(2024, 3, 30, 20, 0),
                     step=timedelta(minutes=10)) + _stamps("%Y-%m-%d %H:%M:%S", n=N, start=datetime(2024, 10, 26),
                                                           step=timedelta(minutes=10))
    _compare(tmp_path, monkeypatch, stamps, fast=True, source_tz=tz)
    _compare(tmp_path, monkeypatch, stamps, fast=True, source_tz=tz, timestamp_policy="error")


def test_missing_values_and_markers(tmp_path, monkeypatch):
    stamps = _stamps("%Y-%m-%d %H:%M:%S")
    for i in range(0, N, 97):
        stamps[i] = ""
    for i in range(5, N, 131):
        stamps[i] = "NA"
    stamps[:1200] = [""] * 1200  # the head holds no value at first
    _compare(tmp_path, monkeypatch, stamps, fast=True, na_values=["NA"])


@pytest.mark.parametrize("late", [
    "2024/01/05 10:00:00",  # same length, other separators
    "2024-01-05T10:00:00",  # same length, T instead of a space
    "2024-01/05 10:00:00",  # one separator changed, at each place
    "2024-01-05 10:00-00",
    "2024-01-05 10.00:00",
    "2024-01-05 10:00",  # shorter
    "05/01/2024 10:00:00",  # day-first, same length
    " 2024-01-05 10:00:0",  # padded, same length
    "2024-02-30 10:00:00",  # no such day
    "2023-02-29 10:00:00",  # not a leap year
    "2024-13-01 10:00:00",  # no such month
    "2023-13-01 10:00:00",
    "2024-00-10 10:00:00",
    "2024-01-00 10:00:00",  # no such day
    "2024-04-31 10:00:00",
    "2024-01-05 24:00:00",  # no such hour
    "2024-01-05 10:60:00",  # no such minute
    "2024-01-05 10:00:60",  # a leap second (polars moves it to the next minute)
    "0000-01-05 10:00:00",  # year zero
    "2024-01-05 1O:00:00",  # a letter
    "not a date at all!!",
])
def test_a_late_change_of_layout_declines(tmp_path, monkeypatch, late):
    stamps = _stamps("%Y-%m-%d %H:%M:%S")
    stamps[N - 10] = late
    _compare(tmp_path, monkeypatch, stamps, fast=False)
    _compare(tmp_path, monkeypatch, stamps, fast=False, timestamp_policy="error")


def test_leap_days_and_old_dates(tmp_path, monkeypatch):
    stamps = ["2024-02-29 00:00:00.000001", "1969-12-31 23:59:59.500000", "1900-03-01 12:00:00.000000",
              "2000-02-29 23:59:59.999999", "0001-01-01 00:00:00.000000", "9999-12-31 23:59:59.999999"] * 600
    _compare(tmp_path, monkeypatch, stamps, fast=True)


def test_day_first_and_month_first_columns_keep_the_chooser(tmp_path, monkeypatch):
    _compare(tmp_path, monkeypatch, _stamps("%d/%m/%Y %H:%M:%S"), fast=False)
    _compare(tmp_path, monkeypatch, _stamps("%m/%d/%Y %H:%M"), fast=False, dayfirst=True)


def test_preset_extra_timestamp_columns(tmp_path, monkeypatch):
    updated = _stamps("%Y-%m-%dT%H:%M:%SZ")
    created = _stamps("%Y-%m-%d %H:%M")
    solved = _stamps("%d.%m.%Y %H:%M")
    p = tmp_path / "zendesk.csv"
    rows = ["Id,Status,Updated at,Group,Assignee,Via,Created at,Solved at"]
    rows += [f"{i},open,{u},g{i % 3},a{i % 4},web,{c},{s}" for i, (u, c, s) in
             enumerate(zip(updated, created, solved, strict=True))]
    p.write_text("\n".join(rows) + "\n")
    ours = read_log(p, preset="zendesk_export")
    with monkeypatch.context() as m:
        m.setattr(csv_file, "_read_plain_arrow", lambda *a, **k: None)
        ref = read_log(p, preset="zendesk_export")
    pd.testing.assert_frame_equal(ours.df, ref.df, check_exact=True)
    assert ours.quality is not None and ref.quality is not None
    assert ours.quality.to_dict() == ref.quality.to_dict()


def test_sliced_and_string_chunks(monkeypatch):
    # offsets into a sliced chunk and 32-bit offsets (pa.string) read the same values
    values = _stamps("%Y-%m-%d %H:%M:%S.%f", n=50)
    big = pa.chunked_array([pa.array(values[:20], pa.large_string()), pa.array(values[20:], pa.large_string())])
    for col in (big.slice(3, 40), big.cast(pa.string()).slice(7)):
        got = timestamps.parse_fixed_layout(col, column="t", source_tz="UTC", dayfirst=None,
                                            report=DataQualityReport(source="x", rows_in=len(col)))
        assert got is not None
        assert got.to_list() == [datetime.strptime(v, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
                                 for v in col.to_pylist()]


@pytest.mark.parametrize("late", ["+24:00", "+01:60", "*01:00", "+0a:00", "-1:000"])
def test_a_bad_offset_late_declines(tmp_path, monkeypatch, late):
    stamps = [s + "+02:00" for s in _stamps("%Y-%m-%dT%H:%M:%S")]
    stamps[N - 3] = stamps[N - 3][:-6] + late
    _compare(tmp_path, monkeypatch, stamps, fast=False)


def test_tables_agree_with_the_calendar():
    tab = timestamps._tables()
    for year in (1, 4, 100, 400, 1582, 1900, 1969, 1970, 2000, 2024, 2100, 9999):
        for month in range(1, 13):
            code = ((year // 100) * 101 + year % 100) * 13 + month
            first = datetime(year, month, 1)
            nxt = datetime(year + (month == 12), month % 12 + 1, 1) if year < 9999 or month < 12 else None
            assert tab.month_start[code] == (first - datetime(1970, 1, 1)).days
            assert tab.month_len[code] == ((nxt - first).days if nxt else 31)
    assert tab.month_len[(0 * 101 + 0) * 13 + 1] == 0  # year zero
