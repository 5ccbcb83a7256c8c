"""Process map, handovers and the shared encoding: planted small logs with hand-counted answers, and pm4py parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining import discover_process_map, encode, handover_network, team_handover_network
from insight.mining._core import case_variant_ids, group_stats

T0 = pd.Timestamp("2024-01-01", tz="UTC")

# (case, activity, minute, resource, group)
PLANTED = [
    ("c1", "A", 0, "r1", "T1"), ("c1", "B", 10, "r1", "T1"), ("c1", "C", 40, "r2", "T2"),
    ("c2", "A", 0, "r1", "T1"), ("c2", "B", 20, "r2", "T1"), ("c2", "C", 30, "r2", "T2"),
    ("c3", "A", 0, "r3", "T1"), ("c3", "B", 5, "r3", "T1"), ("c3", "B", 65, "r3", "T1"), ("c3", "C", 70, "r1", "T2"),
    ("c4", "A", 0, "r1", "T2"), ("c4", "C", 100, "r2", "T1"), ("c4", "A", 110, "r1", "T2"), ("c4", "C", 200, "r2", "T1"),
]


def make_log(rows: list[tuple], name: str = "planted") -> EventLog:
    """A canonical log from (case, activity, minute, resource, group) tuples."""
    df = pd.DataFrame(rows, columns=["case_id", "activity", "minute", "resource", "group"])
    df["timestamp"] = T0 + pd.to_timedelta(df.pop("minute"), unit="min")
    return EventLog(df, name=name)


@pytest.fixture()
def planted() -> EventLog:
    return make_log(PLANTED)


def test_dfg_counts_and_start_end(planted: EventLog) -> None:
    pm = discover_process_map(planted)
    assert pm.dfg() == {("A", "B"): 3, ("B", "C"): 3, ("B", "B"): 1, ("A", "C"): 2, ("C", "A"): 1}
    assert pm.start_activities == {"A": 4}
    assert pm.end_activities == {"C": 4}
    assert (pm.n_cases, pm.n_events) == (4, 14)
    acts = {a.name: a for a in pm.activities}
    assert (acts["A"].count, acts["B"].count, acts["C"].count) == (5, 4, 5)
    assert acts["B"].cases == 3
    assert acts["A"].service_mean_s is None  # complete timestamps only: service time unknown, not zero


def test_edge_waiting_times(planted: EventLog) -> None:
    pm = discover_process_map(planted)
    ab = pm.edge("A", "B")
    assert ab is not None
    assert ab.mean_s == pytest.approx(35 / 3 * 60)
    assert ab.median_s == pytest.approx(10 * 60)
    assert ab.p90_s == pytest.approx(18 * 60)  # linear interpolation between 10 and 20 minutes
    assert ab.cases == 3
    ac = pm.edge("A", "C")
    assert ac is not None and ac.count == 2 and ac.cases == 1 and ac.median_s == pytest.approx(95 * 60)
    # sojourn before B: 10, 20, 5, 60 minutes
    b = next(a for a in pm.activities if a.name == "B")
    assert b.sojourn_median_s == pytest.approx(15 * 60)


def test_activity_coverage_hides_rare_activity_and_reconnects(planted: EventLog) -> None:
    pm = discover_process_map(planted, activity_coverage=0.7)
    assert pm.hidden_activities == ["B"]
    assert pm.dfg() == {("A", "C"): 5, ("C", "A"): 1}
    ac = pm.edge("A", "C")
    assert ac is not None
    assert sorted([40, 30, 70, 100, 90])[2] * 60 == ac.median_s


def test_edge_threshold_keeps_strongest_edges_per_node(planted: EventLog) -> None:
    pm = discover_process_map(planted, edge_threshold=0.5)
    # B->B (1) is below half of the strongest edge; C->A (1) is too but is A's only incoming edge
    assert set(pm.dfg()) == {("A", "B"), ("B", "C"), ("A", "C"), ("C", "A")}
    assert pm.hidden_edges == 1


def test_bad_thresholds_are_rejected(planted: EventLog) -> None:
    with pytest.raises(InvalidInput):
        discover_process_map(planted, activity_coverage=0)
    with pytest.raises(InvalidInput):
        discover_process_map(planted, edge_threshold=1.5)


def test_unsorted_input_gives_same_map(planted: EventLog) -> None:
    shuffled = EventLog(planted.df.sample(frac=1.0, random_state=7).reset_index(drop=True), name="shuffled")
    assert discover_process_map(shuffled).dfg() == discover_process_map(planted).dfg()
    enc = encode(shuffled)
    assert np.all(np.diff(enc.case) >= 0)
    assert enc.order is not None


def test_variant_ids_group_equal_sequences(planted: EventLog) -> None:
    enc = encode(planted)
    vid, first = case_variant_ids(enc)
    assert vid[0] == vid[1] and len({vid[0], vid[2], vid[3]}) == 3
    assert len(first) == 3


def test_group_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    g = rng.integers(0, 5, 500)
    v = rng.exponential(10, 500)
    gs = group_stats(g, v)
    for i, k in enumerate(gs.group):
        sel = v[g == k]
        assert gs.count[i] == len(sel)
        assert gs.median[i] == pytest.approx(np.median(sel))
        assert gs.p90[i] == pytest.approx(np.percentile(sel, 90))
        assert gs.mean[i] == pytest.approx(sel.mean())


def test_resource_handover_counts(planted: EventLog) -> None:
    hn = handover_network(planted)
    assert hn.counts() == {
        ("r1", "r1"): 1, ("r1", "r2"): 4, ("r2", "r2"): 1, ("r3", "r3"): 2, ("r3", "r1"): 1, ("r2", "r1"): 1,
    }
    assert hn.total == 10
    assert hn.shares()[("r1", "r2")] == pytest.approx(0.4)
    no_self = handover_network(planted, include_self=False)
    assert no_self.total == 6


def test_team_handover_counts(planted: EventLog) -> None:
    tn = team_handover_network(planted)
    assert tn.counts() == {("T1", "T2"): 4, ("T2", "T1"): 2}
    nodes = {n.name: n for n in tn.nodes}
    assert (nodes["T1"].sent, nodes["T1"].received) == (4, 2)


def test_handover_skips_missing_resources() -> None:
    rows = [("x", "A", 0, "r1", "T1"), ("x", "B", 1, None, "T1"), ("x", "C", 2, "r2", "T1")]
    hn = handover_network(make_log(rows))
    assert hn.counts() == {("r1", "r2"): 1}


def test_svg_and_dot_render(planted: EventLog) -> None:
    pm = discover_process_map(planted)
    svg = pm.to_svg(engine="builtin")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    for name in ("A", "B", "C"):
        assert f">{name}<" in svg
    assert svg.count("marker-end=") == len(pm.edges)
    dot = pm.to_dot()
    assert '"A" -> "B" [label="3"' in dot


@pytest.fixture(scope="module")
def helpdesk(shared_data):
    from insight.eventlog.pm4py_bridge import from_pm4py, read_xes_frame

    frame = read_xes_frame(shared_data / "process_logs" / "helpdesk" / "Helpdesk.xes.gz")
    return frame, from_pm4py(frame, name="helpdesk")


@pytest.mark.realdata
def test_helpdesk_matches_pm4py_dfg_and_performance(helpdesk) -> None:
    import pm4py

    frame, log = helpdesk
    pm = discover_process_map(log)
    dfg, sa, ea = pm4py.discover_dfg(frame)
    assert pm.dfg() == dict(dfg)
    assert sum(pm.dfg().values()) == 21348 - 4580
    assert pm.start_activities == dict(sa) and pm.end_activities == dict(ea)
    perf, _, _ = pm4py.discover_performance_dfg(frame)
    for (a, b), stats in perf.items():
        e = pm.edge(a, b)
        assert e is not None
        assert e.mean_s == pytest.approx(stats["mean"], rel=1e-9)
        assert e.median_s == pytest.approx(stats["median"], rel=1e-9)
        assert e.max_s == pytest.approx(stats["max"], rel=1e-9)


@pytest.mark.realdata
def test_helpdesk_matches_pm4py_handover(helpdesk) -> None:
    import pm4py

    frame, log = helpdesk
    ours = handover_network(log)
    theirs = pm4py.discover_handover_of_work_network(frame, beta=0).connections
    assert set(ours.shares()) == set(theirs)
    for k, v in theirs.items():
        assert ours.shares()[k] == pytest.approx(v, rel=1e-12)
    assert ours.total == 21348 - 4580  # every event has a resource in Helpdesk


def test_discover_model_writes_bpmn_and_pnml(planted: EventLog, tmp_path) -> None:
    from insight.mining import discover_model

    m = discover_model(planted, noise_threshold=0.0, bpmn_path=tmp_path / "m.bpmn", pnml_path=tmp_path / "m.pnml")
    pnml = (tmp_path / "m.pnml").read_text()
    bpmn = (tmp_path / "m.bpmn").read_text()
    for name in ("A", "B", "C"):
        assert f"<text>{name}</text>" in pnml
        assert f'name="{name}"' in bpmn
    labelled = {t.label for t in m.petri_net.transitions if t.label}
    assert labelled == {"A", "B", "C"}
    assert m.to_dict()["n_transitions"] == len(m.petri_net.transitions)


def test_lifecycle_read_from_arrow_strings_matches_the_factorised_column() -> None:
    """Start / complete masks compared on the arrow strings agree with the per-label `str.lower` path."""
    from insight.mining._core import _lifecycle_masks, service_pairs

    rng = np.random.default_rng(3)
    # mixed case, padding, near misses, non-ASCII look-alikes (long s, Kelvin sign) and missing values
    words = np.array(["start", "START", "Start", "complete", "COMPLETE", "Complete", "schedule", " start",
                      "started", "\u017ftart", "\u212aomplete", "compl\u00e9te", "St\u0061rt"], dtype=object)
    n_cases, per_case = 300, 12
    rows = []
    for c in range(n_cases):
        acts = rng.choice(["A", "B", "C"], per_case)
        for i, (a, w) in enumerate(zip(acts, rng.choice(words, per_case), strict=True)):
            rows.append((f"c{c:04d}", a, c * 1000 + i * 7 + int(rng.integers(0, 3)), w))
    df = pd.DataFrame(rows, columns=["case_id", "activity", "minute", "lifecycle"])
    df.loc[df.index[::13], "lifecycle"] = None
    df["timestamp"] = T0 + pd.to_timedelta(df.pop("minute"), unit="min")
    for col in ("case_id", "activity", "lifecycle"):
        df[col] = df[col].astype("str")
    for log_df in (df, df.sample(frac=1.0, random_state=4)):  # in (case, time) order and re-sorted on encoding
        log = EventLog(log_df.reset_index(drop=True), name="lifecycle")
        fast_enc, slow_enc = encode(log), encode(log)
        slow_enc.column("lifecycle")  # factorised first: the per-label path
        fast, slow = _lifecycle_masks(fast_enc, "lifecycle"), _lifecycle_masks(slow_enc, "lifecycle")
        assert "lifecycle" not in fast_enc._columns
        assert fast[0].any() and fast[1].any()
        for a, b in zip(fast, slow, strict=True):
            assert a.dtype == b.dtype == bool and np.array_equal(a, b)
        lc = slow_enc.values("lifecycle")
        expect_start = np.array([isinstance(x, str) and x.lower() == "start" for x in lc])
        assert np.array_equal(fast[0], expect_start)
        for a, b in zip(service_pairs(fast_enc), service_pairs(slow_enc), strict=True):
            assert np.array_equal(a, b)
        assert len(service_pairs(fast_enc)[0]) > 0
        assert discover_process_map(enc=encode(log)).to_dict() == discover_process_map(enc=slow_enc).to_dict()
