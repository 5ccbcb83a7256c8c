"""The analyst pages' data layer (api/insight_runs.py) on a simulated log: preview, mining job, filters that slice the
encoding and give the miners' own answers, the path slider, a continuous time axis, drill-down and timelines."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from api.insight_runs import (
    CaseFilter,
    RunData,
    RunManager,
    RunStore,
    edge_threshold_for,
    path_filter,
    preview_upload,
    subset_encoded,
    summarize,
    trend,
    upload_reader,
)
from core.errors import InvalidInput, NotFound
from insight.eventlog import EventLog, write_log
from insight.mining import case_kpis, discover_process_map, encode, mine_variants
from insight.simulate import simulate

KEY = "k" * 32


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory):
    """A simulated log exported as CSV under a helpdesk's own column names, uploaded, previewed and mined inline."""
    d = tmp_path_factory.mktemp("analyst")
    sim = simulate(n_cases=700, seed=11)
    write_log(sim.log, d / "canonical.csv")
    lines = (d / "canonical.csv").read_text().splitlines()
    header = lines[0].split(",")
    own = {"case_id": "Ticket ID", "activity": "Step", "timestamp": "When", "group": "Queue"}
    lines[0] = ",".join(own.get(h, h) for h in header)
    raw = d / "helpdesk export.csv"
    raw.write_text("\n".join(lines) + "\n")
    store = RunStore(d / "home")
    up = store.save_upload(raw.name, raw.read_bytes())
    auto = preview_upload(up)
    prev = preview_upload(up, mapping={"activity": "Step", "timestamp": "When"})
    manager = RunManager(store)
    meta = store.new_run(name="sim", source="upload", created_by="tester", mapping=prev.mapping)
    meta = manager.start(meta, upload_reader(up, prev.mapping, pseudonym_key=KEY), background=False)
    assert meta.status == "done", meta.error
    return sim, store, up, (auto, prev), manager, manager.data(meta.id)


def test_preview_auto_detects_what_it_can_and_names_what_is_missing(mined) -> None:
    sim, store, up, (auto, prev), _, _ = mined
    assert auto.error and "activity" in auto.error and "Step" in auto.error
    assert auto.columns[:3] == ["Ticket ID", "Step", "When"]
    assert prev.error is None
    assert prev.mapping["case_id"] == "Ticket ID" and prev.mapping["group"] == "Queue"
    assert prev.mapping["activity"] == "Step" and prev.mapping["timestamp"] == "When"
    assert len(prev.sample) == 8 and prev.sample[0][0].startswith("C")
    names = {f["name"] for f in prev.quality["fixes"]}
    assert "column_mapping" in names and "timestamp_format" in names
    assert prev.events == 2000 and 0 < prev.cases < sim.log.n_cases


def test_a_wrong_mapping_is_named_not_guessed(mined) -> None:
    _, store, up, _, _, _ = mined
    bad = preview_upload(up, mapping={"activity": "Step", "timestamp": "Queue"})
    assert bad.error and "timestamp" in bad.error.lower() and not bad.quality
    with pytest.raises(InvalidInput, match="empty"):
        store.save_upload("x.csv", b"")


def test_the_run_keeps_every_case_and_its_report(mined) -> None:
    sim, _, _, _, _, run = mined
    assert run.enc.n_cases == sim.log.n_cases
    assert run.cases.height == sim.log.n_cases
    assert set(run.report) >= {"process_map", "variants", "misrouting", "bottlenecks", "alerts"}
    assert run.meta.quality is not None and run.meta.headlines


def test_a_filtered_map_and_variants_equal_mining_the_filtered_log(mined) -> None:
    _, _, _, _, _, run = mined
    f = CaseFilter(channel=("email",), segment=("consumer",))
    mask = run.mask(f)
    assert 0 < mask.sum() < run.enc.n_cases
    log = EventLog(run.enc.df, name="run").filter_cases(run.enc.case_labels[mask])
    ref = encode(log)
    for cov in (1.0, 0.8):
        ours = run.process_map(f, activity_coverage=cov)
        theirs = discover_process_map(enc=ref, activity_coverage=cov)
        assert ours.dfg() == theirs.dfg()
        assert [(a.name, a.count, a.cases) for a in ours.activities] == \
            [(a.name, a.count, a.cases) for a in theirs.activities]
        assert {(e.source, e.target): e.median_s for e in ours.edges} == \
            {(e.source, e.target): e.median_s for e in theirs.edges}
    ours_v, theirs_v = run.variant_table(f), mine_variants(enc=ref)
    assert [(v.activities, v.cases, round(v.cost, 6)) for v in ours_v.variants] == \
        [(v.activities, v.cases, round(v.cost, 6)) for v in theirs_v.variants]


def test_the_path_slider_is_the_miners_edge_threshold(mined) -> None:
    _, _, _, _, _, run = mined
    full = run.process_map(CaseFilter(), activity_coverage=1.0)
    for pct in (0, 10, 35, 70):
        shown = path_filter(full, pct)
        mined_again = discover_process_map(enc=run.enc, edge_threshold=edge_threshold_for(full, pct))
        assert shown.dfg() == mined_again.dfg()
        assert len(shown.edges) < len(full.edges)
    assert path_filter(full, 100) is full


def test_filters_select_the_cases_a_person_would_expect(mined) -> None:
    sim, _, _, _, _, run = mined
    df = run.enc.df
    start = run.cases["start"].min().date() + timedelta(days=14)
    f = CaseFilter(start=start, end=start + timedelta(days=13), team=("Billing L2",), intent=("refund request",))
    got = set(run.frame(f)["case_id"].to_list())
    first = df.groupby("case_id")["timestamp"].min()
    in_window = set(first[(first.dt.date >= start) & (first.dt.date <= start + timedelta(days=13))].index)
    billing = set(df.loc[df["group"] == "Billing L2", "case_id"])
    refund = set(df.loc[df["intent"] == "refund request", "case_id"])
    assert got == in_window & billing & refund and got
    assert run.kpis(f).cases == len(got)
    v3 = set(run.frame(CaseFilter(variant=(3,)))["case_id"].to_list())
    assert len(v3) == run.variant_table(CaseFilter()).variants[2].cases


def test_filter_parameters_are_checked_and_named() -> None:
    from starlette.datastructures import QueryParams

    f = CaseFilter.parse(QueryParams("from=2026-01-05&to=2026-02-01&team=A&team=B&variant=2"))
    assert f.start == date(2026, 1, 5) and f.team == ("A", "B") and f.variant == (2,)
    with pytest.raises(InvalidInput, match="from must be a date"):
        CaseFilter.parse(QueryParams("from=yesterday"))
    with pytest.raises(InvalidInput, match="before"):
        CaseFilter.parse(QueryParams("from=2026-02-01&to=2026-01-01"))
    with pytest.raises(InvalidInput, match="variant"):
        CaseFilter.parse(QueryParams("variant=-1"))


def test_kpis_summarise_the_miners_per_case_values(mined) -> None:
    _, _, _, _, _, run = mined
    ck = case_kpis(enc=run.enc)
    k = summarize(run.cases)
    assert k.cases == run.enc.n_cases and k.events == run.enc.n_events
    assert k.throughput_median_s == pytest.approx(float(np.median(ck.throughput_s)))
    assert k.fcr_rate == pytest.approx(float(np.mean(ck.transfers == 0)))
    assert k.rework_rate == pytest.approx(float(np.mean(ck.rework)))


def test_the_time_axis_has_every_window_even_empty_ones() -> None:
    starts = [date(2026, 1, 5), date(2026, 1, 6), date(2026, 2, 2), date(2026, 2, 20)]
    frame = pl.DataFrame({"start": [f"{d}T10:00:00+00:00" for d in starts], "throughput_s": [3600.0, 7200, 60, 120]}
                         ).with_columns(pl.col("start").str.to_datetime(time_zone="UTC"))
    weeks = trend(frame, window="week")
    assert [p.start for p in weeks] == [date(2026, 1, 5) + timedelta(weeks=i) for i in range(7)]
    assert [p.cases for p in weeks] == [2, 0, 0, 0, 1, 0, 1]
    assert weeks[1].throughput_median_s is None and weeks[0].throughput_median_s == 5400.0
    assert len(trend(frame, window="day")) == 47


def test_edge_drill_down_lists_exactly_the_cases_with_that_step(mined) -> None:
    _, _, _, _, _, run = mined
    page = run.cases_for(CaseFilter(), kind="edge", a="Triage", b="Assign to team", limit=10_000, sort="detail")
    df = run.enc.df
    nxt = df.groupby("case_id")["activity"].shift(-1)
    expected = set(df.loc[(df["activity"] == "Triage") & (nxt == "Assign to team"), "case_id"])
    assert {r.case_id for r in page.rows} == expected and page.total == len(expected)
    waits = [r.detail for r in page.rows]
    assert waits == sorted(waits, reverse=True)
    with pytest.raises(NotFound, match="no activity"):
        run.cases_for(CaseFilter(), kind="edge", a="Triage", b="Teleport")


def test_team_pair_drill_down_matches_the_team_sequence(mined) -> None:
    _, _, _, _, _, run = mined
    pair = run.report["misrouting"]["pairs"][0]
    page = run.cases_for(CaseFilter(), kind="pair", a=pair["from_team"], b=pair["to_team"], limit=10_000)
    for r in page.rows:
        teams = run.frame(CaseFilter()).filter(pl.col("case_id") == r.case_id)["teams"][0].split(" > ")
        assert any(x == pair["from_team"] and y == pair["to_team"] for x, y in zip(teams, teams[1:], strict=False))
    assert page.total >= pair["cases"]


def test_a_case_timeline_lists_its_events_with_the_waits(mined) -> None:
    _, _, _, _, _, run = mined
    cid = run.cases["case_id"][5]
    tl = run.timeline(cid)
    events = run.enc.df[run.enc.df["case_id"] == cid]
    assert [e.activity for e in tl.events] == events["activity"].tolist()
    assert tl.events[0].since_previous_s is None
    assert tl.events[-1].since_start_s == pytest.approx(tl.throughput_s)
    with pytest.raises(NotFound):
        run.timeline("no-such-case")


def test_subset_of_nothing_and_of_everything(mined) -> None:
    _, _, _, _, _, run = mined
    every = subset_encoded(run.enc, np.ones(run.enc.n_cases, dtype=bool))
    assert discover_process_map(enc=every).dfg() == discover_process_map(enc=run.enc).dfg()
    assert run.kpis(CaseFilter(intent=("no such intent",))).cases == 0
    keeps_all = CaseFilter(start=run.options().first_day)  # every case starts on or after the first day
    assert run.process_map(keeps_all, activity_coverage=1.0) is run.process_map(CaseFilter(), activity_coverage=1.0)


def test_a_failed_job_says_why(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    up = store.save_upload("bad.csv", bad.read_bytes())
    manager = RunManager(store)
    meta = manager.start(store.new_run(name="bad", source="upload", created_by="t"),
                         upload_reader(up, {}, pseudonym_key=KEY), background=False)
    assert meta.status == "failed" and "case_id" in (meta.error or "")
    with pytest.raises(NotFound, match="failed"):
        manager.data(meta.id)


def test_parquet_and_xes_uploads_are_previewed_and_mined(tmp_path: Path) -> None:
    import pm4py

    from insight.eventlog import to_pm4py

    sim = simulate(n_cases=120, seed=3)
    write_log(sim.log, tmp_path / "log.parquet")
    pm4py.write_xes(to_pm4py(sim.log), str(tmp_path / "log.xes"))
    store = RunStore(tmp_path / "home")
    manager = RunManager(store)
    for name in ("log.parquet", "log.xes"):
        up = store.save_upload(name, (tmp_path / name).read_bytes())
        prev = preview_upload(up)
        assert prev.error is None, prev.error
        assert prev.mapping["case_id"] and prev.mapping["activity"] and prev.mapping["timestamp"]
        assert prev.sample and prev.quality is not None
        meta = manager.start(store.new_run(name=name, source="upload", created_by="t", mapping=prev.mapping),
                             upload_reader(up, prev.mapping if prev.editable else {}, pseudonym_key=KEY),
                             background=False)
        assert meta.status == "done", meta.error
        assert meta.n_cases == 120


def test_a_job_another_worker_runs_is_not_called_dead_until_it_goes_quiet(tmp_path: Path) -> None:
    import os
    import time as _time

    store = RunStore(tmp_path)
    meta = store.new_run(name="elsewhere", source="upload", created_by="t")
    meta.status, meta.step = "running", "variants"
    store.save_meta(meta)
    manager = RunManager(store)  # this process runs no thread for it
    assert manager.status(meta.id).status == "running"
    old = _time.time() - 16 * 60
    os.utime(store.run_dir(meta.id) / "meta.json", (old, old))
    gone = manager.status(meta.id)
    assert gone.status == "failed" and "stopped" in (gone.error or "")


def snapshot_log(n_cases: int = 500, seed: int = 11, open_share: float = 0.4) -> EventLog:
    """A simulated log cut like a snapshot: the newest cases stop after their first three events (no end activity),
    so the most frequent path is an open prefix whose recorded time is only a lower bound."""
    df = simulate(n_cases=n_cases, seed=seed).log.df
    first = df.groupby("case_id")["timestamp"].min().sort_values()
    newest = set(first.index[int(len(first) * (1 - open_share)):])
    pos = df.groupby("case_id").cumcount()
    return EventLog(df[~df["case_id"].isin(newest) | (pos < 3)].reset_index(drop=True), name="snapshot")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    """The snapshot log uploaded as CSV and mined by the run manager, as the analyst pages do."""
    d = tmp_path_factory.mktemp("snapshot")
    log = snapshot_log()
    write_log(log, d / "snapshot.csv")
    store = RunStore(d / "home")
    up = store.save_upload("snapshot.csv", (d / "snapshot.csv").read_bytes())
    prev = preview_upload(up)
    manager = RunManager(store)
    meta = manager.start(store.new_run(name="snapshot", source="upload", created_by="tester", mapping=prev.mapping),
                         upload_reader(up, prev.mapping, pseudonym_key=KEY), background=False)
    assert meta.status == "done", meta.error
    return manager.data(meta.id)


def _times(vt) -> list[tuple]:
    return [(v.rank, v.activities, v.cases, v.finished_cases, None if np.isnan(v.median_s) else round(v.median_s, 3),
             round(v.cost, 6), v.happy_path) for v in vt.variants]


def test_the_variant_explorer_times_finished_cases_as_the_report_does(snapshot) -> None:
    run = snapshot
    ext = run.report["extraction"]
    assert ext["kind"] == "open_at_cutoff" and ext["open_cases"] == 200
    fin = run.finished()
    assert fin is not None and int((~fin).sum()) == 200
    vt = run.variant_table(CaseFilter())
    assert vt.unfinished_cases == 200 and "finished cases" in vt.duration_basis
    stored = {v["rank"]: v for v in run.report["variants"]["variants"]}
    for v in vt.variants[: len(stored)]:
        s = stored[v.rank]
        assert (tuple(s["activities"]), s["cases"], s["happy_path"]) == (v.activities, v.cases, v.happy_path)
        assert (s["median_s"] is None) == bool(np.isnan(v.median_s))
        if s["median_s"] is not None:
            assert s["median_s"] == pytest.approx(v.median_s)
    # Counted as if finished, the open prefix would be the happy path with a few minutes' time.
    raw = mine_variants(enc=run.enc)
    assert vt.happy.activities[-1] == "Closed" and raw.happy.activities[-1] != "Closed"
    prefix = next(v for v in vt.variants if v.activities == raw.happy.activities)
    assert prefix.finished_cases == 0 and np.isnan(prefix.median_s) and not np.isnan(raw.happy.median_s)
    # A drill-down by rank lists the cases of the variant the explorer shows under that rank.
    assert run.frame(CaseFilter(variant=(vt.happy.rank,))).height == vt.happy.cases
    # A run saved before the per-case frame kept the flag gets it back from the report's end activities.
    older = RunData(run.dir, run.meta)
    older.cases = older.cases.drop("finished")
    assert np.array_equal(older.finished(), fin)


def test_a_filtered_explorer_times_the_filtered_finished_cases(snapshot) -> None:
    run = snapshot
    f = CaseFilter(channel=("email",))
    mask = run.mask(f)
    fin = run.finished()
    assert 0 < mask.sum() < run.enc.n_cases and (~fin[mask]).sum() > 0
    ref = encode(EventLog(run.enc.df, name="run").filter_cases(run.enc.case_labels[mask]))
    assert _times(run.variant_table(f)) == _times(mine_variants(enc=ref, finished=fin[mask]))
    assert _times(run.variant_table(f)) != _times(mine_variants(enc=ref))


def test_kpis_and_trend_count_avoidable_transfers_not_every_transfer(mined) -> None:
    _, _, _, _, _, run = mined
    m = run.report["misrouting"]
    k = summarize(run.cases)
    assert k.avoidable_rate == pytest.approx(m["avoidable_cases"] / m["n_cases"])
    escalations = next(t["cases"] for t in m["taxonomy"] if t["kind"] == "justified_escalation")
    assert escalations > 0 and k.avoidable_rate < m["reassigned_cases"] / m["n_cases"]
    # the misroute model's training label is kept beside it, unchanged
    assert int(run.cases["misrouted"].sum()) == m["misrouted_cases"]
    assert (run.cases["avoidable"] != run.cases["misrouted"]).any()
    # filters keep working: the share is over the filtered cases, and the drill-down lists exactly those
    f = CaseFilter(channel=("email",))
    frame = run.frame(f)
    assert run.kpis(f).avoidable_rate == pytest.approx(frame["avoidable"].mean())
    page = run.cases_for(f, kind="avoidable", limit=10_000)
    assert page.total == int(frame["avoidable"].sum()) > 0
    kinds = dict(zip(frame["case_id"].to_list(), frame["transfer_kind"].to_list(), strict=True))
    assert {kinds[r.case_id] for r in page.rows} <= {"misroute", "ping_pong", "push_to_front"}
    weeks = run.trend(CaseFilter(), "week")
    total = sum((p.avoidable_rate or 0.0) * p.cases for p in weeks)
    assert total == pytest.approx(m["avoidable_cases"])
