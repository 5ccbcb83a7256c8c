"""The format chooser's sample of a long timestamp column: the same file gives the same sample (distinct values
in file order, not in hash order), and a day-first date that only appears near the end of the file is in it."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from insight.eventlog.readers.timestamps import format_sample, ranked_formats
from insight.eventlog.schema import DataQualityReport


def _column(n: int, late: int) -> pl.Series:
    """n day-first timestamps; all but the last `late` have a day of the month <= 12 (day/month ambiguous)."""
    start = datetime(2024, 1, 1)
    values = []
    for i in range(n):
        t = start + timedelta(seconds=37 * i)
        day = 1 + i % 12 if i < n - late else 13 + i % 15
        values.append(f"{day:02d}/{t.month:02d}/2024 {t:%H:%M:%S}")
    return pl.Series("timestamp", values)


def _rank(col: pl.Series) -> tuple[list[str], list[str]]:
    report = DataQualityReport(source="timestamp", rows_in=col.len())
    return ranked_formats(col, column="timestamp", dayfirst=None, report=report), report.warnings


def test_late_day_first_dates_settle_the_order_every_time() -> None:
    col = _column(200_000, late=600)  # the last 0.3 % of rows alone show that the day comes first
    first = _rank(col)
    assert first[0][0] == "%d/%m/%Y %H:%M:%S"
    assert not any("ambiguous" in w for w in first[1])
    assert all(_rank(col) == first for _ in range(5))


def test_an_ambiguous_column_warns_every_time() -> None:
    col = _column(100_000, late=0)
    formats, warnings = _rank(col)
    assert formats[0].startswith("%m/%d/%Y") and any("ambiguous" in w for w in warnings)
    assert all(_rank(col) == (formats, warnings) for _ in range(3))


def test_two_formats_in_one_column_rank_the_same_every_time() -> None:
    # half the rows one layout, half another: which parses more of the sample is close, so a sample that changed
    # from call to call would change the format tried first
    start = datetime(2024, 1, 1)
    col = pl.Series("timestamp", [
        (start + timedelta(seconds=41 * i)).strftime("%Y-%m-%d %H:%M:%S" if i % 2 else "%Y/%m/%d %H:%M:%S")
        for i in range(120_000)
    ])
    first = _rank(col)
    assert first[0][0] in {"%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S"}
    assert all(_rank(col) == first for _ in range(8))


def test_the_sample_is_the_same_on_every_call_and_reaches_the_end() -> None:
    col = _column(200_000, late=2_000)
    sample = format_sample(col)
    assert all(format_sample(col).equals(sample) for _ in range(5))
    assert sample.len() <= 5_000
    assert sample.is_in(col.tail(2_000)).sum() > 0  # the last rows are represented
    assert sample.head(100).equals(col.head(100))  # file order, not hash order
