"""Conformance (declared journey and pm4py model) and drift alerts: exact answers on planted deviations."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining.alerts import AlertConfig, detect_alerts
from insight.mining.conformance import IntendedJourney, align_to_path, check_conformance

J = IntendedJourney(
    steps=["Created", "Triage", "Assign", "Work", "Wait", "Resolved", "Closed"],
    optional=["Wait"],
    allowed_anywhere=["Viewed"],
)


def test_align_fitting_and_optional_and_allowed() -> None:
    assert align_to_path(["Created", "Triage", "Assign", "Work", "Resolved", "Closed"], J) == (1.0, [], [], [])
    assert align_to_path(["Viewed", "Created", "Triage", "Assign", "Work", "Wait", "Resolved", "Closed"], J)[0] == 1.0


def test_align_skip_insert_reorder() -> None:
    fit, skipped, inserted, reordered = align_to_path(["Created", "Assign", "Work", "Resolved", "Closed"], J)
    assert (skipped, inserted, reordered) == (["Triage"], [], [])
    assert fit == pytest.approx(1 - 1 / (6 + 5))
    _, skipped, inserted, _ = align_to_path(
        ["Created", "Triage", "Assign", "Work", "Resolved", "Work", "Resolved", "Closed"], J
    )
    assert skipped == [] and sorted(inserted) == ["Resolved", "Work"]
    _, skipped, inserted, reordered = align_to_path(["Created", "Triage", "Assign", "Work", "Closed", "Resolved"], J)
    assert (skipped, inserted, reordered) == ([], [], ["Closed"]) or (skipped, inserted, reordered) == (
        [], [], ["Resolved"]
    )


def test_journey_validation() -> None:
    with pytest.raises(InvalidInput, match="optional"):
        IntendedJourney(steps=["A", "B"], optional=["C"])
    with pytest.raises(InvalidInput, match="steps"):
        IntendedJourney.from_dict({"optional": []})


@pytest.fixture(scope="module")
def sim():
    from insight.simulate import simulate

    return simulate(n_cases=2000, seed=11)


def _journey(sim) -> IntendedJourney:
    ij = sim.truth.deviations.intended_journey
    return IntendedJourney(steps=[s["activity"] for s in ij], optional=[s["activity"] for s in ij if s["optional"]])


def test_sim_deviation_cases_recovered(sim) -> None:
    res = check_conformance(sim.log, journey=_journey(sim))
    truth = sim.truth.deviations
    deviating = set(res.case_fitness.index[res.case_fitness < 1.0])
    assert deviating == set(truth.all_cases)
    skipped_triage = next(d for d in res.deviations if d.kind == "skipped" and d.activity == "Triage")
    assert skipped_triage.cases == len(truth.cases["skipped_triage"])
    assert res.fitting_share == pytest.approx(1 - truth.share, abs=1e-9)
    # Per variant, not per case: far fewer alignments than cases.
    assert res.n_variants < res.n_cases / 5


def test_no_designed_journey_is_refused(sim) -> None:
    """The most frequent path is not a norm: without a designed journey or a model there is nothing to check."""
    with pytest.raises(InvalidInput, match="designed journey") as err:
        check_conformance(sim.log)
    assert err.value.context["field"] == "journey"
    assert "model_path" in str(err.value) and "docs/JOURNEYS.md" in str(err.value)


def test_pm4py_model_route(tmp_path, sim) -> None:
    import pm4py

    from insight.eventlog import to_pm4py

    # A model discovered from the conforming cases only; deviating cases must then score below 1.
    truth = sim.truth.deviations
    ok_ids = [c for c in sim.log.df["case_id"].unique()[:300] if c not in set(truth.all_cases)]
    ok_log = sim.log.filter_cases(ok_ids)
    net, im, fm = pm4py.discover_petri_net_inductive(to_pm4py(ok_log), noise_threshold=0.0)
    pnml = tmp_path / "journey.pnml"
    pm4py.write_pnml(net, im, fm, str(pnml))
    bad_ids = list(truth.cases["skipped_triage"][:10])
    sub = sim.log.filter_cases(ok_ids[:100] + bad_ids)
    res = check_conformance(sub, model_path=pnml)
    assert res.method == "pm4py_alignments"
    assert (res.case_fitness.loc[ok_ids[:100]] == 1.0).all()
    assert (res.case_fitness.loc[bad_ids] < 1.0).all()
    assert any(d.kind == "skipped" and d.activity == "Triage" for d in res.deviations)


def test_missing_model_file_is_named(tmp_path, sim) -> None:
    with pytest.raises(InvalidInput, match="nope.bpmn"):
        check_conformance(sim.log.filter_cases(["C000001"]), model_path=tmp_path / "nope.bpmn")


# --- alerts -----------------------------------------------------------------------------------------------------


def test_sim_variant_spike_found(sim) -> None:
    rep = detect_alerts(sim.log)
    drift = sim.truth.drift
    new_act = [a for a in rep.by_kind("new_activity") if a.subject == drift.activity]
    assert len(new_act) == 1
    assert new_act[0].cases == len(drift.cases)
    assert set(new_act[0].example_cases) <= set(drift.cases)
    new_paths = rep.by_kind("new_variant")
    assert new_paths and all(drift.activity in a.subject for a in new_paths)
    assert rep.recent_end is not None and rep.recent_end >= pd.Timestamp(drift.week_start, tz="UTC")


def _weekly_log(recent_misrouted: float, recent_slow: float) -> EventLog:
    """9 weeks of cases: team A resolves them; in the last week a share is misrouted B -> A and/or slower."""
    rows = []
    start = pd.Timestamp("2026-01-05 09:00", tz="UTC")
    n = 0
    for week in range(9):
        for i in range(40):
            t0 = start + pd.Timedelta(days=7 * week + (i % 7), hours=i % 5)
            last = week == 8
            mis = last and i < 40 * recent_misrouted
            hours = 2.0 * (recent_slow if last else 1.0)
            cid = f"w{week}-{i}"
            rows.append((cid, "Created", t0, "B" if mis else "A"))
            if mis:
                rows.append((cid, "Reassign", t0 + pd.Timedelta(minutes=30), "A"))
            rows.append((cid, "Resolved", t0 + pd.Timedelta(hours=hours), "A"))
            n += 1
    df = pd.DataFrame(rows, columns=["case_id", "activity", "timestamp", "group"])
    return EventLog(df.sort_values(["case_id", "timestamp"], kind="stable").reset_index(drop=True), name="weekly")


def test_misrouting_spike_and_kpi_regression_flagged_with_magnitude() -> None:
    rep = detect_alerts(_weekly_log(recent_misrouted=0.5, recent_slow=3.0), config=AlertConfig(window="7D"))
    spike = [a for a in rep.by_kind("misrouting_spike") if a.subject == "all cases"]
    assert len(spike) == 1
    assert spike[0].recent == pytest.approx(0.5) and spike[0].baseline == 0.0
    assert spike[0].cases == 20
    slow = [a for a in rep.by_kind("kpi_regression") if a.subject == "all cases" and "throughput" in a.title]
    assert len(slow) == 1 and slow[0].magnitude == pytest.approx(3.0, rel=0.2)


def test_quiet_log_raises_no_alert() -> None:
    rep = detect_alerts(_weekly_log(recent_misrouted=0.0, recent_slow=1.0))
    assert rep.alerts == []
    assert rep.recent_cases > 0 and rep.baseline_cases > rep.recent_cases


def test_bad_window_is_named() -> None:
    with pytest.raises(InvalidInput, match="window"):
        detect_alerts(_weekly_log(0.0, 1.0), config=AlertConfig(window="soon"))
