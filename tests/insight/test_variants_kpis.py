"""Variants + cost, bottlenecks and KPIs on planted logs with hand-counted answers; pm4py parity on Helpdesk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining import CostModel, compute_kpis, encode, find_bottlenecks, mine_variants, support_line
from tests.insight.test_process_map import PLANTED, T0, make_log


@pytest.fixture()
def planted() -> EventLog:
    return make_log(PLANTED)


def test_variant_counts_and_times(planted: EventLog) -> None:
    vt = mine_variants(planted)
    assert vt.counts() == {("A", "B", "C"): 2, ("A", "B", "B", "C"): 1, ("A", "C", "A", "C"): 1}
    abc = next(v for v in vt.variants if v.activities == ("A", "B", "C"))
    assert abc.share == pytest.approx(0.5)
    assert abc.median_s == pytest.approx(35 * 60)
    assert abc.p90_s == pytest.approx(39 * 60)
    assert abc.handoffs_per_case == pytest.approx(1.0)  # team T1 -> T2 once in each case
    acac = next(v for v in vt.variants if v.activities == ("A", "C", "A", "C"))
    assert acac.handoffs_per_case == pytest.approx(3.0)
    assert acac.rework_per_case == pytest.approx(2.0)
    assert vt.handoff_column == "group"


def test_cost_ranking(planted: EventLog) -> None:
    # 60 per hour = 1 per minute; 10 per handoff; 1 per event
    vt = mine_variants(planted, cost_model=CostModel(hour_cost=60, handoff_cost=10, touch_cost=1))
    costs = {v.activities: v.cost for v in vt.variants}
    assert costs[("A", "C", "A", "C")] == pytest.approx(200 + 30 + 4)
    assert costs[("A", "B", "C")] == pytest.approx(2 * 35 + 2 * 10 + 6)
    assert costs[("A", "B", "B", "C")] == pytest.approx(70 + 10 + 4)
    assert [v.activities for v in vt.variants] == [("A", "C", "A", "C"), ("A", "B", "C"), ("A", "B", "B", "C")]
    assert [v.rank for v in vt.variants] == [1, 2, 3]
    # ranking by volume puts the frequent variant first
    assert vt.top(1, by="cases")[0].activities == ("A", "B", "C")
    assert vt.total_cost == pytest.approx(sum(costs.values()))
    with pytest.raises(InvalidInput):
        CostModel(hour_cost=-1)


def test_handoffs_fall_back_to_resource(planted: EventLog) -> None:
    log = EventLog(planted.df.drop(columns=["group"]), name="nogroup")
    vt = mine_variants(log)
    assert vt.handoff_column == "resource"
    abc = next(v for v in vt.variants if v.activities == ("A", "B", "C"))
    assert abc.handoffs_per_case == pytest.approx(1.0)  # r1 r1 r2 and r1 r2 r2


def test_bottlenecks_and_loops(planted: EventLog) -> None:
    b = find_bottlenecks(planted, top=None)
    # biggest total wait: A -> C (100 + 90 minutes)
    assert b.edges[0].name == "A -> C"
    assert b.edges[0].total_s == pytest.approx(190 * 60)
    assert b.total_wait_s == pytest.approx((40 + 30 + 70 + 200) * 60)
    loops = {x.activity: x for x in b.loops}
    assert loops["B"].self_loops == 1 and loops["B"].cases_with_self_loop == 1 and loops["B"].repeats == 1
    assert loops["A"].repeats == 1 and loops["A"].short_loops == 1  # A C A
    assert loops["C"].short_loops == 1  # C A C
    assert b.rework_rate == pytest.approx(0.5)
    assert b.cases_with_self_loop == 1
    teams = {t.name: t for t in b.teams}
    # waits before T2 events: c1 30, c2 10, c3 5, c4 10 (C@100 -> A@110)
    assert teams["T2"].total_s == pytest.approx(55 * 60)


# KPI log: k1 email, one team, two events; k2 phone, escalates to a 2nd-line team and back, waits on the
# customer; k3 phone, a single event.
KPI_ROWS = [
    ("k1", "Open", 0, "r1", "S1", "email"), ("k1", "Resolve", 60, "r1", "S1", "email"),
    ("k2", "Open", 0, "r1", "S1", "phone"), ("k2", "Pending customer", 30, "r9", "G9 2nd", "phone"),
    ("k2", "Resolve", 90, "r9", "G9 2nd", "phone"), ("k2", "Close", 100, "r1", "S1", "phone"),
    ("k3", "Resolve", 0, "r2", "S1", "phone"),
]


@pytest.fixture()
def kpi_log() -> EventLog:
    df = pd.DataFrame(KPI_ROWS, columns=["case_id", "activity", "minute", "resource", "group", "channel"])
    df["timestamp"] = T0 + pd.to_timedelta(df.pop("minute"), unit="min")
    return EventLog(df, name="kpi")


def test_support_line_rule() -> None:
    assert support_line("G230 2nd") == 2
    assert support_line("V5 3rd") == 3
    assert support_line("Desk-L2") == 2
    assert support_line("G97") == 1
    assert support_line("G97", {"G97": 3}) == 3


def test_kpis_overall_and_by_channel(kpi_log: EventLog) -> None:
    k = compute_kpis(kpi_log, window="D")
    o = k.overall
    assert o.cases == 3
    assert o.contacts_per_case == pytest.approx(7 / 3)
    assert o.fcr_rate == pytest.approx(2 / 3)
    assert o.transfers_per_case == pytest.approx(2 / 3)
    assert o.escalation_rate == pytest.approx(1 / 3)
    assert o.time_to_escalation_median_s == pytest.approx(30 * 60)
    # same-resource gaps: k1 60 min (r1 r1), k2 60 min (r9 r9), k3 none
    assert o.aht_mean_s == pytest.approx(120 * 60 / 3)
    assert o.wait_mean_s == pytest.approx((160 - 120) * 60 / 3)
    assert "same resource" in k.handling_basis
    ch = {r.value: r for r in k.by_dimension["channel"]}
    assert ch["email"].cases == 1 and ch["email"].fcr_rate == 1.0 and ch["email"].escalation_rate == 0.0
    assert ch["phone"].cases == 2 and ch["phone"].fcr_rate == pytest.approx(0.5)
    assert ch["phone"].throughput_median_s == pytest.approx(50 * 60)
    team = {r.value: r for r in k.by_dimension["team"]}
    assert list(team) == ["S1"]  # every case arrived at S1 first
    last = compute_kpis(kpi_log, attribution="last")
    assert {r.value for r in last.by_dimension["team"]} == {"S1"}
    assert len(k.trend) == 1 and k.trend[0].cases == 3


def test_kpi_lifecycle_service_time() -> None:
    rows = [
        ("x", "Work", 0, "start"), ("x", "Work", 15, "complete"), ("x", "Check", 20, "start"),
        ("x", "Check", 25, "complete"),
    ]
    df = pd.DataFrame(rows, columns=["case_id", "activity", "minute", "lifecycle"])
    df["timestamp"] = T0 + pd.to_timedelta(df.pop("minute"), unit="min")
    k = compute_kpis(EventLog(df))
    assert k.overall.aht_mean_s == pytest.approx(20 * 60)
    assert k.handling_basis.startswith("lifecycle")
    assert k.overall.fcr_rate is None  # no team or resource: not computable, not zero


def test_waiting_states(kpi_log: EventLog) -> None:
    b = find_bottlenecks(kpi_log)
    assert [w.label for w in b.waiting_states] == ["Pending customer"]
    w = b.waiting_states[0]
    assert w.total_s == pytest.approx(60 * 60) and w.cases == 1
    assert w.share_of_throughput == pytest.approx(60 / 160)
    none = find_bottlenecks(kpi_log, wait_pattern="nothing-matches-this")
    assert none.waiting_states == [] and none.notes


def test_to_dict_is_json_ready(planted: EventLog) -> None:
    import json

    enc = encode(planted)
    json.dumps(mine_variants(enc=enc).to_dict())
    json.dumps(find_bottlenecks(enc=enc).to_dict())
    json.dumps(compute_kpis(enc=enc).to_dict())


@pytest.mark.realdata
def test_helpdesk_variant_counts_match_pm4py(shared_data) -> None:
    import pm4py

    from insight.eventlog.pm4py_bridge import from_pm4py, read_xes_frame

    frame = read_xes_frame(shared_data / "process_logs" / "helpdesk" / "Helpdesk.xes.gz")
    vt = mine_variants(from_pm4py(frame, name="helpdesk"))
    theirs = pm4py.get_variants(frame)
    assert vt.counts() == dict(theirs)
    assert vt.n_variants == 226
    assert sum(v.cases for v in vt.variants) == 4580


@pytest.fixture(scope="module")
def sim():
    from insight.simulate.engine import simulate

    return simulate(n_cases=3000, seed=5)


def test_simulator_slow_step_is_the_longest_median_wait(sim) -> None:
    truth = sim.truth.slow_step
    b = find_bottlenecks(sim.log, top=None)
    busy = [a for a in b.activities if a.count >= 50]
    slowest = max(busy, key=lambda a: a.median_s)
    assert slowest.name == truth.activity
    # the truth is rounded to 4 decimals of an hour and measured before timestamps are cut to whole seconds
    assert slowest.median_s / 3600 == pytest.approx(truth.median_wait_by_activity_hours[truth.activity], abs=2e-3)
    for name, hours in truth.median_wait_by_activity_hours.items():
        got = next(a for a in b.activities if a.name == name)
        assert got.median_s / 3600 == pytest.approx(hours, abs=2e-3)


def test_simulator_rework_loops_are_recovered(sim) -> None:
    truth = sim.truth.rework
    b = find_bottlenecks(sim.log, top=None)
    loops = {x.activity: x for x in b.loops}
    assert loops["Solution proposed"].cases_with_repeat == len(truth.cases)
    assert loops["Solution proposed"].repeats == sum(truth.loops.values())


def test_costly_paths_rank_excess_over_the_happy_path_with_support() -> None:
    """A one-case outlier never tops the costly paths; the frequent path is named the happy path."""
    rows = []
    t0 = pd.Timestamp("2026-02-02 09:00", tz="UTC")

    def case(cid: str, steps: list[tuple[str, str]], hours: float) -> None:
        for k, (act, team) in enumerate(steps):
            rows.append((cid, act, t0 + pd.Timedelta(hours=hours * k / (len(steps) - 1)), team))

    happy = [("Open", "L1"), ("Solve", "L1"), ("Close", "L1")]
    bounced = [("Open", "L1"), ("Transfer", "L2"), ("Transfer", "L1"), ("Solve", "L2"), ("Close", "L2")]
    for i in range(60):
        case(f"h{i}", happy, 2.0)
    for i in range(12):
        case(f"b{i}", bounced, 10.0)
    case("odd", [("Open", "L1"), ("Wait", "L1"), ("Close", "L1")], 500.0)
    log = EventLog(pd.DataFrame(rows, columns=["case_id", "activity", "timestamp", "group"]))
    vt = mine_variants(log)
    assert vt.happy is not None and vt.happy.activities == tuple(a for a, _ in happy)
    assert vt.variants[0].activities == ("Open", "Wait", "Close")  # total cost still ranks the outlier first
    top = vt.costly(5)
    assert [v.activities for v in top] == [tuple(a for a, _ in bounced)]
    cm = vt.cost_model
    per_case = 10.0 * cm.hour_cost + 3 * cm.handoff_cost + 5 * cm.touch_cost
    happy_cost = 2.0 * cm.hour_cost + 0 * cm.handoff_cost + 3 * cm.touch_cost
    assert top[0].excess_cost == pytest.approx(12 * (per_case - happy_cost))
    assert cm.handoff_cost > 0 and cm.touch_cost > 0  # work is costed by default, not only time


def test_variant_rows_made_on_first_read_match_the_cases(sim) -> None:
    """The table keeps its rows as arrays until `variants` is read; counts and objects agree with the cases."""
    from collections import Counter

    from insight.mining import variant_of_cases

    enc = encode(sim.log)
    lazy = mine_variants(enc=enc, finished=np.arange(enc.n_cases) % 4 != 0)
    counts, n = lazy.counts(), lazy.n_variants  # read from the rows, before any Variant object exists
    assert lazy._variants is None
    per_case = variant_of_cases(enc=enc)
    assert counts == dict(Counter(per_case.values()))
    vs = lazy.variants
    assert n == len(vs) == len(counts) and {v.activities: v.cases for v in vs} == counts
    assert [v.rank for v in vs] == list(range(1, n + 1))
    assert sum(v.happy_path for v in vs) == 1 and lazy.happy is not None and lazy.happy.happy_path
    for v in vs:
        assert per_case[v.example_case] == v.activities
        assert v.events_per_case == len(v.activities)
        assert v.share == v.cases / enc.n_cases
        assert isinstance(v.cases, int) and isinstance(v.example_case, str) and isinstance(v.happy_path, bool)
    again = mine_variants(enc=enc, finished=np.arange(enc.n_cases) % 4 != 0)
    assert list(map(repr, again.variants)) == list(map(repr, vs))  # repr: paths with no finished case have NaNs
    assert mine_variants(enc=enc) == mine_variants(enc=enc)
    assert lazy.counts() == counts and lazy.n_variants == n
