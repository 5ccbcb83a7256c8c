"""The figures a director reads: finished-case durations on a snapshot, avoidable transfers, graded alerts.

Hand-made logs with planted traps: a snapshot whose most frequent path is an unfinished prefix, escalations
that a "misrouted = every transfer" count would flag, and a striking alert on too few cases.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from insight.eventlog.schema import EventLog
from insight.mining._core import encode
from insight.mining.alerts import Alert, AlertConfig, _severity, detect_alerts
from insight.mining.censoring import CensoringConfig
from insight.mining.html import render_html
from insight.mining.report import MineConfig, mine
from insight.mining.variants import mine_variants

T0 = pd.Timestamp("2026-01-05 08:00", tz="UTC")
HAPPY = ("Open", "Work", "Close")
SLOW = ("Open", "Transfer", "Work", "Close")
OPEN = ("Open", "Transfer")


def _case(rows: list[tuple], cid: str, start: pd.Timestamp, steps: list[tuple[str, str]], hours: float) -> None:
    for k, (act, team) in enumerate(steps):
        rows.append((cid, act, start + pd.Timedelta(hours=hours * k / (len(steps) - 1)), team))


def _snapshot_log() -> EventLog:
    """40 quick finished cases, 15 slow finished misroutes, and 60 cases still open at the cut-off.

    Counted with the open ones, the open prefix "Open > Transfer" is the most frequent path and its short recorded
    durations would drag every time figure down.
    """
    rows: list[tuple] = []
    for i in range(40):
        _case(rows, f"h{i:02d}", T0 + pd.Timedelta(hours=12 * i),
              [("Open", "Desk 1st"), ("Work", "Desk 1st"), ("Close", "Desk 1st")], 10.0)
    for i in range(15):
        _case(rows, f"s{i:02d}", T0 + pd.Timedelta(hours=12 * i + 3),
              [("Open", "Desk 1st"), ("Transfer", "Other 1st"), ("Work", "Other 1st"), ("Close", "Other 1st")], 60.0)
    last = T0 + pd.Timedelta(days=25)
    for i in range(60):
        _case(rows, f"o{i:02d}", last + pd.Timedelta(minutes=30 * i),
              [("Open", "Desk 1st"), ("Transfer", "Other 1st")], 2.0)
    df = pd.DataFrame(rows, columns=["case_id", "activity", "timestamp", "group"])
    return EventLog(df, name="snapshot")


@pytest.fixture(scope="module")
def snapshot():
    log = _snapshot_log()
    cfg = MineConfig(render_map=False, censoring=CensoringConfig(end_activities=("Close",)))
    return log, mine(log, config=cfg)


def test_snapshot_happy_path_and_variant_times_come_from_finished_cases(snapshot) -> None:
    log, report = snapshot
    assert report.extraction.kind == "open_at_cutoff" and report.extraction.open_cases == 60
    # the trap is real: counted with the open cases, the open prefix would be the "happy path"
    assert mine_variants(enc=encode(log)).happy.activities == OPEN
    vt = report.variants
    by_path = {v.activities: v for v in vt.variants}
    happy = vt.happy
    assert happy.activities == HAPPY and happy.finished_cases == 40
    assert happy.median_s == 10 * 3600 and happy.p90_s == 10 * 3600
    slow = by_path[SLOW]
    assert slow.median_s == 60 * 3600 and slow.finished_cases == slow.cases == 15
    # the open prefix keeps its cases (each case keeps its path) but has no time, no cost and never ranks
    prefix = by_path[OPEN]
    assert prefix.cases == 60 and prefix.finished_cases == 0
    assert math.isnan(prefix.median_s) and prefix.cost == 0 and prefix.excess_cost == 0
    assert [v.activities for v in vt.costly(5)] == [SLOW]
    cm = vt.cost_model
    per_case = lambda h, handoffs, events: h * cm.hour_cost + handoffs * cm.handoff_cost + events * cm.touch_cost  # noqa: E731
    assert slow.excess_cost == pytest.approx(15 * (per_case(60, 1, 4) - per_case(10, 0, 3)))
    assert vt.total_cost == pytest.approx(40 * per_case(10, 0, 3) + 15 * per_case(60, 1, 4))
    # the report says which basis its path times use
    assert vt.unfinished_cases == 60 and "55 finished cases" in vt.duration_basis
    assert "60 unfinished" in vt.duration_basis
    head = next(h for h in report.headlines if h.startswith("Happy path ("))
    assert "median 10.0 h over its 40 finished cases" in head and head.endswith("Open > Work > Close")
    assert report.to_dict()["variants"]["duration_basis"] == vt.duration_basis


def test_snapshot_misrouting_hours_leave_open_cases_out(snapshot) -> None:
    _, report = snapshot
    m = report.misrouting
    kinds = {t.kind: t for t in m.taxonomy}
    # the open cases moved teams: counted as misroutes, but not timed (their durations are lower bounds)
    assert kinds["misroute"].cases == 75
    assert m.cases.loc[[f"o{i:02d}" for i in range(60)], "extra_s"].isna().all()
    # each slow case against the quick cases that stayed with their first team: 60 h - 10 h
    assert kinds["misroute"].extra_hours_total == pytest.approx(15 * 50.0)
    assert kinds["misroute"].extra_hours_mean == pytest.approx(50.0)
    assert "55 finished cases" in m.duration_basis and "60 unfinished" in m.duration_basis
    assert m.worst_first_team is not None and m.worst_first_team.team == "Desk 1st"
    assert m.worst_first_team.avoidable_out == 75 and m.worst_first_team.avoidable_hours == pytest.approx(750.0)
    assert any("timed on 55 finished cases" in h for h in report.headlines if h.startswith("Avoidable routing:"))


def _escalation_log(recent_kind: str) -> EventLog:
    """Eight weeks of cases mostly solved by the desk, then a week where half go elsewhere.

    `recent_kind` "escalation": to a 2nd-line team that works and resolves them (justified, not avoidable);
    "misroute": sideways to another first-line team that resolves them. No escalate steps in the log, so the
    mined `misrouted` training label flags both.
    """
    rows: list[tuple] = []
    stay = [("Open", "Desk 1st"), ("Work", "Desk 1st"), ("Resolve", "Desk 1st"), ("Close", "Desk 1st")]
    esc = [("Open", "Desk 1st"), ("Work", "Expert 2nd"), ("Resolve", "Expert 2nd"), ("Close", "Expert 2nd")]
    side = [("Open", "Desk 1st"), ("Work", "Other 1st"), ("Resolve", "Other 1st"), ("Close", "Other 1st")]
    moved = esc if recent_kind == "escalation" else side
    for i in range(224):  # four a day for eight weeks, one in ten escalated
        _case(rows, f"b{i:03d}", T0 + pd.Timedelta(hours=6 * i), esc if i % 10 == 0 else stay, 5.0)
    recent = T0 + pd.Timedelta(days=56, hours=1)
    for i in range(56):  # eight a day for a week, every other one moved
        _case(rows, f"r{i:03d}", recent + pd.Timedelta(hours=3 * i), moved if i % 2 == 0 else stay, 5.0)
    df = pd.DataFrame(rows, columns=["case_id", "activity", "timestamp", "group"])
    return EventLog(df, name=recent_kind)


def test_escalations_are_not_a_misrouting_spike_but_misroutes_are() -> None:
    from insight.mining.labels import case_labels

    esc_log = _escalation_log("escalation")
    # the training label keeps its meaning: with no escalate steps, every transfer is "misrouted"
    assert case_labels(esc_log).df.loc["r000", "misrouted"]
    rep = detect_alerts(esc_log)
    assert rep.recent_cases == 56 and rep.baseline_cases == 224
    assert not rep.by_kind("misrouting_spike")
    # the transfers themselves are still seen, as what they are: more reassignments
    assert any("reassignment rate" in a.title for a in rep.by_kind("kpi_regression"))

    mis_rep = detect_alerts(_escalation_log("misroute"))
    spikes = mis_rep.by_kind("misrouting_spike")
    overall = next(a for a in spikes if a.subject == "all cases")
    assert overall.title == "avoidable transfers up: 0.0% -> 50.0% of cases"
    assert overall.cases == 28 and overall.q_value <= 0.05
    assert set(overall.example_cases) <= {f"r{i:03d}" for i in range(0, 56, 2)}


def test_medium_or_high_needs_the_minimum_case_count() -> None:
    cfg = AlertConfig(min_cases=20)

    def alert(cases: int, effect: float = 0.9, share: float = 0.5) -> Alert:
        return Alert("new_activity", "low", "t", "s", 0.5, 0.0, 0.5, "share", cases, effect_size=effect,
                     effect_measure="cohen_h", impact_share=share)

    # a striking change on a handful of cases stays low however big its effect and impact
    assert _severity(alert(7), cfg) == "low"
    assert _severity(alert(19), cfg) == "low"
    assert _severity(alert(20), cfg) == "medium"
    assert _severity(alert(39), cfg) == "medium"
    assert _severity(alert(40), cfg) == "high"
    # enough cases but a negligible effect or impact is still low
    assert _severity(alert(100, effect=0.1), cfg) == "low"
    assert _severity(alert(100, share=0.01), cfg) == "low"


def test_html_leads_with_avoidable_transfers_and_excess_cost(snapshot) -> None:
    _, report = snapshot
    html = render_html(report)
    # no "misrouted = every transfer" figure; the taxonomy with its hours and example cases instead
    assert "misrouted cases (" not in html and "cases passed on from their first team" not in html
    assert 'id="transfer-kinds"' in html
    table = html[html.index('id="transfer-kinds"'):]
    table = table[: table.index("</table>")]
    assert "misroute" in table and "<b>yes</b>" in table and "750" in table and "s00" in table
    # costly paths: ranked by excess over the named happy path, with the basis of their times
    section = html[html.index('id="variants"'):]
    section = section[: section.index("</section>")]
    assert "Cost = cases" not in section
    assert "<b>happy path</b>" in section and "excess cost" in section
    assert "55 finished cases" in section
    rows = section.split("<tr>")[2:]
    assert "Work" in rows[0] and "Transfer" not in rows[0]  # the happy path first, then the costly one
    assert "Transfer" in rows[1] and len(rows) == 2


def test_html_alerts_show_effect_q_and_impact() -> None:
    log = _escalation_log("misroute")
    report = mine(log, config=MineConfig(render_map=False))
    assert report.alerts.alerts
    html = render_html(report)
    section = html[html.index('id="alerts"'):]
    section = section[: section.index("</section>")]
    assert "Cases started in the last window" in section
    for col in ("effect size", "q-value", "impact", "cases started"):
        assert f">{col}</th>" in section or f">{col} " in section, col
    assert "Cohen&#39;s h" in section or "Cohen's h" in section
    spike = next(a for a in report.alerts.alerts if a.kind == "misrouting_spike")
    assert f"{spike.q_value:.2g}" in section
    assert np.isfinite(spike.impact) and f"{spike.impact:,.0f} cases" in section
