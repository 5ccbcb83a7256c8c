"""The fast CSV read (Arrow) and the code-based cleaner give exactly what the polars reader and the row-wise
pandas cleaner gave, on a realistic CSV with planted problems: missing and blank ids and activities,
whitespace in labels, exact and near duplicates, unsorted rows, missing and unparseable timestamps."""

from __future__ import annotations

import copy
import random
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidEventLog
from insight.eventlog import ACTIVITY, CASE_ID, TIMESTAMP, EventLog, clean, read_log
from insight.eventlog.cleaning import detect_case_attributes
from insight.eventlog.readers import csv_file
from insight.eventlog.schema import DataQualityReport

HEADER = ["Case ID", "Activity", "Complete Timestamp", "Resource", "Team", "Cost", "Score", "Code", "Priority"]
ACTS = ["Open", " Assign", "Reply  twice", "Wait", "Resolve ", "Close", "N/A"]


def _planted_rows(seed: int = 3, n_cases: int = 300) -> list[list[str]]:
    rng = random.Random(seed)
    rows: list[list[str]] = []
    for c in range(n_cases):
        t0 = 1_700_000_000 + c * 3000
        for _ in range(rng.randint(1, 9)):
            ts = datetime.fromtimestamp(t0 + rng.randint(0, 20000), UTC).strftime("%Y/%m/%d %H:%M:%S")
            case = rng.choice([f"C{c:04d}"] * 40 + ["", "  "])
            act = rng.choice(ACTS * 10 + ["", "   "])
            r = rng.random()
            ts = "" if r < 0.02 else "not a date" if r < 0.03 else ts[:16] if r < 0.05 else ts
            if rng.random() < 0.03:  # same case and time as the previous event, another step
                ts = rows[-1][2] if rows else ts
                case = rows[-1][0] if rows else case
            rows.append([case, act, ts, rng.choice(["agent1", "agent2", "", "NA"]), f"team{c % 3}", str(c % 7),
                         f"{rng.random():.3f}", f"0{c % 5}", f"prio{c % 2}"])
            if rng.random() < 0.05:
                rows.append(list(rows[-1]))  # exact duplicate
            if rng.random() < 0.03:
                rows.append(rows[-1][:3] + ["agent9"] + rows[-1][4:])  # same key, another resource
    rng.shuffle(rows)
    return rows


def _write(path, rows, *, sep=",", newline="\n", header=HEADER):
    path.write_text(newline.join([sep.join(header)] + [sep.join(r) for r in rows]) + newline, newline="")
    return path


# --------------------------------------------------------------- the previous cleaner, row by row, as the oracle

_SPACES = re.compile(r"\s+")


def _reference_clean(log: EventLog, *, activity_map=None, timestamp_policy="drop", drop_duplicates=True,
                     normalise_labels=True) -> EventLog:
    report = copy.deepcopy(log.quality) if log.quality else DataQualityReport(source=log.name, rows_in=len(log.df))
    df = log.df.reset_index(drop=True)
    for col, fix in ((CASE_ID, "missing_case_id_dropped"), (ACTIVITY, "missing_activity_dropped")):
        miss = df[col].isna() | (df[col].astype("str").str.strip() == "")
        report.add(fix, int(miss.sum()), f"column {col!r}")
        df = df.loc[~miss]
    act = df[ACTIVITY].astype("str")
    if normalise_labels:
        norm = act.map(lambda a: _SPACES.sub(" ", a.strip())).astype("str")
        report.add("activity_whitespace_normalised", int((norm != act).sum()))
        act = norm
    if activity_map:
        mapped = act.map(lambda a: activity_map.get(a, a)).astype("str")
        unused = sorted(set(activity_map) - set(act.unique()))
        detail = f"{len(activity_map)} rules" + (f"; {len(unused)} never matched: {unused[:5]}" if unused else "")
        report.add("activity_relabelled", int((mapped != act).sum()), detail)
        act = mapped
    else:
        report.add("activity_relabelled", 0, "no activity map given")
    df = df.assign(**{ACTIVITY: act, CASE_ID: df[CASE_ID].astype("str")})
    if drop_duplicates:
        dup = df.duplicated(keep="first")
        report.add("exact_duplicates_dropped", int(dup.sum()), "identical in every column; first kept")
        df = df.loc[~dup]
    else:
        report.add("exact_duplicates_dropped", 0, "duplicate dropping disabled")
    nat = df[TIMESTAMP].isna()
    if timestamp_policy == "error" and nat.any():
        raise InvalidEventLog(f"{int(nat.sum())} event(s) without a usable timestamp (timestamp policy 'error')",
                              file=log.name, row=int(df.index[np.flatnonzero(nat)[0]]) + 1, column=TIMESTAMP)
    if timestamp_policy == "impute" and nat.any():
        g = df.groupby(CASE_ID, sort=False, observed=True)[TIMESTAMP]
        filled = df[TIMESTAMP].fillna(g.ffill()).fillna(g.bfill())
        report.add("timestamp_imputed", int((nat & filled.notna()).sum()),
                   "from the previous (else next) event of the same case")
        df = df.assign(**{TIMESTAMP: filled})
        still = df[TIMESTAMP].isna()
        report.add("timestamp_unimputable_dropped", int(still.sum()), "case has no timestamped event")
        df = df.loc[~still]
    else:
        report.add("timestamp_imputed", 0)
        report.add("timestamp_missing_dropped", int(nat.sum()))
        df = df.loc[~nat]
    keys = pd.DataFrame({"c": df[CASE_ID].to_numpy(dtype=object), "t": pd.DatetimeIndex(df[TIMESTAMP]).asi8})
    order = keys.sort_values(["c", "t"], kind="stable").index.to_numpy()
    report.add("rows_reordered", int((order != np.arange(len(order))).sum()),
               "sorted by case, timestamp, original position")
    df = df.iloc[order].reset_index(drop=True)
    report.rows_out = len(df)
    report.cases_out = int(df[CASE_ID].nunique())
    return EventLog(df, name=log.name, case_attributes=detect_case_attributes(df), quality=report)


def _same(a: EventLog, b: EventLog) -> None:
    pd.testing.assert_frame_equal(a.df, b.df, check_exact=True)
    assert list(a.df.dtypes) == list(b.df.dtypes)
    assert a.case_attributes == b.case_attributes
    assert a.quality is not None and b.quality is not None
    assert a.quality.to_dict() == b.quality.to_dict()


@pytest.mark.parametrize("layout", ["comma", "semicolon", "tab", "crlf", "blank_line", "dup_header"])
def test_arrow_read_equals_polars_read(tmp_path, monkeypatch, layout):
    rows = _planted_rows()
    sep = {"semicolon": ";", "tab": "\t"}.get(layout, ",")
    header = HEADER[:-1] + ["Team"] if layout == "dup_header" else HEADER
    if layout == "blank_line":
        rows = rows[:40] + [[""]] + rows[40:]
    p = _write(tmp_path / "log.csv", rows, sep=sep, newline="\r\n" if layout == "crlf" else "\n", header=header)
    arrow_read = csv_file.read_csv(p, na_values=(), delimiter=None)
    assert arrow_read.arrow is not None  # the fast path ran
    fast = read_log(p, na_values=["NA"])
    monkeypatch.setattr(csv_file, "_read_plain_arrow", lambda *a, **k: None)
    slow = read_log(p, na_values=["NA"])
    _same(fast, slow)


@pytest.mark.parametrize("kwargs", [
    {},
    {"timestamp_policy": "impute", "activity_map": {"Wait": "Pause", "Reply twice": "Reply", "Nope": "x"}},
    {"drop_duplicates": False, "normalise_labels": False},
    {"activity_map": {"Open": "Close"}},
])
def test_clean_equals_row_wise_reference(tmp_path, kwargs):
    log = read_log(_write(tmp_path / "log.csv", _planted_rows()), na_values=["NA"])
    ours, ref = clean(log, **kwargs), _reference_clean(log, **kwargs)
    _same(ours, ref)
    q = ours.quality
    assert q is not None
    for fix in ("missing_case_id_dropped", "missing_activity_dropped", "rows_reordered"):
        assert q.count(fix) > 0, fix  # the planted problems were there to be found
    if kwargs.get("drop_duplicates", True):
        assert q.count("exact_duplicates_dropped") > 0


@pytest.mark.parametrize("shuffled", [False, True])
def test_clean_of_a_log_without_problems_keeps_every_row(tmp_path, shuffled):
    good = {tuple(r) for r in _planted_rows() if r[0].strip() and r[1].strip() and len(r[2]) == 19}
    rows = [list(r) for r in sorted(good, key=lambda r: (r[0], r[2]))]
    if shuffled:
        random.Random(5).shuffle(rows)
    log = read_log(_write(tmp_path / "log.csv", rows))
    ours = clean(log)
    _same(ours, _reference_clean(log))
    assert ours.quality is not None and ours.quality.rows_out == len(rows)
    assert (ours.quality.count("rows_reordered") > 0) == shuffled


def test_clean_error_policy_names_the_same_row(tmp_path):
    log = read_log(_write(tmp_path / "log.csv", _planted_rows()))
    with pytest.raises(InvalidEventLog) as ours:
        clean(log, timestamp_policy="error")
    with pytest.raises(InvalidEventLog) as ref:
        _reference_clean(log, timestamp_policy="error")
    assert str(ours.value) == str(ref.value)


def test_clean_of_object_and_numeric_columns_equals_reference():
    # logs built in code (not read from a file) may hold numbers or mixed objects as ids and labels
    ts = pd.to_datetime(["2024-01-02 10:00", "2024-01-01 09:00", None, "2024-01-01 09:00", "2024-01-03 00:00"], utc=True)
    df = pd.DataFrame({CASE_ID: pd.Series([2, 1, 1, "1", None], dtype=object),
                       ACTIVITY: pd.Series(["a ", "b", "b", "b", "c"], dtype=object), TIMESTAMP: ts,
                       "tier": [1, 1, 1, 1, 2]})
    log = EventLog(df, name="objects")
    _same(clean(log), _reference_clean(log))


@pytest.mark.parametrize("body", [
    'c1,"quoted, value",2024-01-01 10:00:00\n',  # quoting: the polars reader reads it
    "c1,a,2024-01-01 10:00:00\rc2,b,2024-01-01 11:00:00\r",  # bare carriage returns
    "c1,a\nc2,b,2024-01-01 11:00:00\n",  # a short row
    "c1,a,2024-01-01 10:00:00,extra\n",  # a long row
    # the same past the head the reader checks before Arrow reads (the rest of the file is checked after)
    "c0,a,2024-01-01 09:00:00\n" * 4000 + 'c1,"quoted, value",2024-01-01 10:00:00\n',
    "c0,a,2024-01-01 09:00:00\n" * 4000 + 'c1,"quoted",2024-01-01 10:00:00\n',
    "c0,a,2024-01-01 09:00:00\r\n" * 4000 + "c1,a,2024-01-01 10:00:00\rc2,b,2024-01-01 11:00:00\r\n",
])
def test_files_the_arrow_path_declines_read_as_before(tmp_path, monkeypatch, body):
    p = tmp_path / "odd.csv"
    p.write_bytes(("case,activity,timestamp\n" + body).encode())
    assert p.stat().st_size < csv_file._HEAD_BYTES or p.read_bytes()[:csv_file._HEAD_BYTES].count(b'"') == 0
    assert csv_file._read_plain_arrow(p.read_bytes(), ",", 3, [""]) is None

    def outcome():
        try:
            log = read_log(p)
        except InvalidEventLog as exc:
            return str(exc)
        return log.df, log.quality.to_dict() if log.quality else None

    fast = outcome()
    monkeypatch.setattr(csv_file, "_read_plain_arrow", lambda *a, **k: None)
    slow = outcome()
    if isinstance(fast, str) or isinstance(slow, str):
        assert fast == slow
    else:
        pd.testing.assert_frame_equal(fast[0], slow[0], check_exact=True)
        assert fast[1] == slow[1]

