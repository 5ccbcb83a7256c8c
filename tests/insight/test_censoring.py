"""Extraction-aware durations: planted snapshot and end-date windows, and the BPIC 2013 incidents extract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insight.eventlog import EventLog, read_log
from insight.mining import compute_kpis, encode
from insight.mining.censoring import detect_extraction, duration_summary
from insight.simulate import simulate


@pytest.fixture(scope="module")
def full() -> EventLog:
    return simulate(n_cases=6000, seed=11, weeks=12).log


def _cut(log: EventLog, *, keep: str) -> EventLog:
    """The same process seen through an extract: a snapshot at a cut-off, or the cases closed in a window."""
    df = log.df
    ends = df.groupby("case_id")["timestamp"].transform("max")
    starts = df.groupby("case_id")["timestamp"].transform("min")
    span_end = df["timestamp"].max()
    if keep == "snapshot":
        cutoff = starts.min() + pd.Timedelta("7D")  # a week in: a good share of cases still open
        out = df[(df["timestamp"] <= cutoff)]
    else:  # closed in the last 20 days of the log
        out = df[(ends > span_end - pd.Timedelta("20D"))]
    return EventLog(out.reset_index(drop=True), name=f"{log.name}-{keep}")


def _true_median_s(log: EventLog) -> float:
    g = log.df.groupby("case_id")["timestamp"]
    return float((g.max() - g.min()).dt.total_seconds().median())


def test_complete_log_is_complete(full: EventLog) -> None:
    x = detect_extraction(encode(full))
    assert x.kind == "complete"
    assert x.end_activities == ["Closed"]
    assert x.open_cases == 0


def test_snapshot_open_cases_found_and_km_recovers_the_median(full: EventLog) -> None:
    snap = _cut(full, keep="snapshot")
    enc = encode(snap)
    x = detect_extraction(enc)
    assert x.kind == "open_at_cutoff"
    # every case cut before its "Closed" event is open; every case that got there is finished
    closed = snap.df.groupby("case_id")["activity"].agg(lambda a: "Closed" in set(a))
    assert x.open_cases == int((~closed).sum()) > 0
    # the same cases, had they been followed to the end
    ids = set(snap.df["case_id"])
    truth = _true_median_s(EventLog(full.df[full.df["case_id"].isin(ids)].reset_index(drop=True)))
    naive = float(np.median(x.censored_s[x.finished]))
    km = duration_summary(x.censored_s, x.finished).median_s
    assert km is not None
    assert abs(km - truth) / truth < 0.1 < abs(naive - truth) / truth  # the naive median of finished cases is short
    kpis = compute_kpis(enc=enc, extraction=x)
    assert kpis.overall.throughput_median_s == pytest.approx(km)
    assert kpis.overall.open_cases == x.open_cases
    assert "Kaplan-Meier" in kpis.throughput_basis
    # the last windows are mostly open: marked biased, never a median falling to zero
    last = [r for r in kpis.trend if r.cases][-1]
    assert last.biased is not None and "still open" in last.biased


def _closed_in_window_log(seed: int = 3) -> EventLog:
    """Cases opened over two years with heavy-tailed durations; the extract keeps those closed in the last 3 weeks."""
    rng = np.random.default_rng(seed)
    n = 40_000
    t_end = pd.Timestamp("2012-05-22", tz="UTC")
    start = t_end - pd.to_timedelta(rng.uniform(0, 730, n), unit="D")
    dur = pd.to_timedelta(rng.lognormal(np.log(5.0), 1.5, n), unit="D")
    end = start + dur
    keep = (end > t_end - pd.Timedelta("21D")) & (end <= t_end)
    rows = []
    for i in np.flatnonzero(keep):
        rows += [(f"c{i}", "Accepted", start[i]), (f"c{i}", "Queued", start[i] + dur[i] / 2),
                 (f"c{i}", "Completed-Closed", end[i])]
    return EventLog(pd.DataFrame(rows, columns=["case_id", "activity", "timestamp"]), name="closed-in-window")


def test_closed_in_window_extract_trends_by_end_date() -> None:
    win = _closed_in_window_log()
    x = detect_extraction(encode(win))
    assert x.kind == "closed_in_window"
    assert x.end_window_start is not None and "survivors" in x.warnings[0]
    kpis = compute_kpis(win, extraction=x)
    assert kpis.trend_axis == "end"
    # three or four weeks by close date, each complete: no week of "fast" recent starts
    assert 3 <= len(kpis.trend) <= 4
    assert all(pd.Timestamp(r.value, tz="UTC") >= x.end_window_start.floor("D") - pd.Timedelta("7D")
               for r in kpis.trend)
    meds = [r.throughput_median_s for r in kpis.trend if r.cases >= 100]
    assert max(meds) / min(meds) < 1.5


def test_trend_keeps_empty_weeks() -> None:
    rows = []
    for case, day in (("a", "2026-01-05"), ("b", "2026-01-26")):  # three weeks apart, nothing between
        t = pd.Timestamp(day, tz="UTC")
        rows += [(case, "Open", t), (case, "Closed", t + pd.Timedelta("2h"))]
    log = EventLog(pd.DataFrame(rows, columns=["case_id", "activity", "timestamp"]))
    trend = compute_kpis(log).trend
    assert [r.cases for r in trend] == [1, 0, 0, 1]


@pytest.mark.realdata
def test_bpic2013_incidents_are_a_closed_in_window_extract(shared_data) -> None:
    log = read_log(shared_data / "process_logs" / "bpic2013" / "VINST_incidents_ibm_with_support_level.csv.gz",
                   preset="bpic2013_vinst")
    x = detect_extraction(encode(log))
    assert x.kind == "closed_in_window"
    assert x.end_activities == ["Completed-Closed", "Completed-In Call"]
    assert x.end_window_start is not None and x.end_window_start.strftime("%Y-%m") == "2012-05"
    kpis = compute_kpis(log, extraction=x)
    # starts stop on 6 May while closes run to 22 May: the later close weeks hold only older cases, and say so
    assert x.starts_stop is not None and x.starts_stop.strftime("%Y-%m-%d") == "2012-05-06"
    assert kpis.trend_axis == "end"
    flagged = [r for r in kpis.trend if r.biased]
    assert [r.value[:10] for r in flagged] == ["2012-05-07", "2012-05-14", "2012-05-21"]
    assert all("only older" in r.biased for r in flagged)


def test_many_noisy_segments_raise_no_alert_after_fdr() -> None:
    """60 categories with the same behaviour before and after: chance differences must not become alerts."""
    from insight.mining.alerts import AlertConfig, detect_alerts

    rng = np.random.default_rng(0)
    rows = []
    t0 = pd.Timestamp("2026-01-05 08:00", tz="UTC")
    for week in range(9):
        for i in range(60 * 25):
            cid = f"w{week}-{i}"
            start = t0 + pd.Timedelta(days=7 * week + rng.uniform(0, 6.9))
            cat = f"Category {i % 60}"
            hours = rng.lognormal(1.0, 1.0)
            rows.append((cid, "Open", start, cat, "A"))
            if rng.random() < 0.3:
                rows.append((cid, "Reassign", start + pd.Timedelta(hours=hours / 2), cat, "B"))
            rows.append((cid, "Closed", start + pd.Timedelta(hours=hours), cat, "B" if rng.random() < 0.3 else "A"))
    log = EventLog(pd.DataFrame(rows, columns=["case_id", "activity", "timestamp", "category", "group"]))
    rep = detect_alerts(log, config=AlertConfig(window="7D"))
    assert rep.tested > 0
    assert [(a.title, a.subject, a.cases, a.recent, a.baseline) for a in rep.alerts] == []


@pytest.mark.realdata
def test_bpic2013_alerts_are_explained_as_extraction_artefacts(shared_data) -> None:
    from insight.mining import mine
    from insight.mining.report import MineConfig

    log = read_log(shared_data / "process_logs" / "bpic2013" / "VINST_incidents_ibm_with_support_level.csv.gz",
                   preset="bpic2013_vinst")
    rep = mine(log, config=MineConfig(render_map=False))
    assert rep.alerts.window_axis == "end"
    assert rep.alerts.alerts, "the comparisons are still listed"
    assert all(a.severity == "low" and "no case started after 2012-05-06" in a.explanation
               for a in rep.alerts.alerts)
    assert not any("Path share up" in a.title for a in rep.alerts.alerts if a.severity != "low")
    text = " ".join(rep.headlines)
    assert "long-running survivors" in text and "length-biased" in text
    assert rep.conformance is None and "no designed journey" in text
