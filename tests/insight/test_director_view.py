"""What `mine` tells a support director about each public log, checked case by case.

Each log is read and mined once per module. Every headline and every alert graded high or medium must be one a
director would accept: significant after the false-discovery control and backed by enough cases, no unexplained
negative time, open-case figures on finished cases or by survival, input pitfalls named, and the specific facts
of each log (BPIC 2013 extraction artefacts, ServiceNow's "-100" placeholder, Helpdesk's workgroup column).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from insight.eventlog import ingest
from insight.mining import mine
from insight.mining.conformance import IntendedJourney
from insight.mining.report import InsightReport, MineConfig

pytestmark = pytest.mark.realdata

LOGS = "process_logs"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "JOURNEYS.md"
# a duration or hour count written with a minus sign ("-6.5 d", "-120 case-hours")
NEGATIVE_TIME = re.compile(r"(?<![\w>])-\d[\d,.]*\s*(?:s|min|h|d|case-hours|hours)\b")


def _mine(path: Path, preset: str | None = None, journey: IntendedJourney | None = None) -> InsightReport:
    log = ingest(path, preset=preset, privacy=False)
    return mine(log, config=MineConfig(journey=journey, render_map=False))


@pytest.fixture(scope="module")
def helpdesk(shared_data) -> InsightReport:
    return _mine(shared_data / LOGS / "helpdesk" / "helpdesk_finale_attributes.csv.gz")


@pytest.fixture(scope="module")
def bpic2012(shared_data) -> InsightReport:
    return _mine(shared_data / LOGS / "bpic2012" / "BPI_Challenge_2012.xes.gz")


@pytest.fixture(scope="module")
def bpic2013(shared_data) -> InsightReport:
    return _mine(shared_data / LOGS / "bpic2013" / "VINST_incidents_ibm_with_support_level.csv.gz",
                 preset="bpic2013_vinst")


@pytest.fixture(scope="module")
def bpic2014(shared_data) -> InsightReport:
    return _mine(shared_data / LOGS / "bpic2014" / "BPIC14_f_incident_activity.xes.gz")


@pytest.fixture(scope="module")
def servicenow(shared_data) -> InsightReport:
    return _mine(shared_data / LOGS / "servicenow_uci498" / "incident_event_log_ibm_subset.csv.gz",
                 preset="servicenow")


def _acceptable(report: InsightReport) -> None:
    """The checks every log's report must pass."""
    assert report.headlines, "a report without headlines"
    # 1. alerts a director is asked to act on are significant after FDR control and backed by enough cases
    for a in report.alerts.alerts:
        if a.severity in ("high", "medium"):
            assert a.q_value <= 0.05, (a.title, a.q_value)
            assert a.cases >= 20, (a.title, a.cases)
            assert a.effect_measure, f"{a.title}: graded {a.severity} without an effect size"
    # 2. no negative time in a headline unless the same sentence explains it
    for h in report.headlines:
        if NEGATIVE_TIME.search(h):
            assert "faster" in h or "less" in h, f"unexplained negative time: {h}"
    # 3. time to close never pretends open cases are closed
    ext = report.extraction
    assert ext is not None
    if ext.open_cases:
        basis = report.kpis.throughput_basis
        assert "finished" in basis or "Kaplan-Meier" in basis, basis
    # 4. handling time is a number only when the log records work; otherwise it says so and shows none
    ov = report.kpis.overall
    if report.kpis.handling_basis.startswith("not measurable"):
        assert ov.aht_mean_s is None or math.isnan(ov.aht_mean_s)
        assert any(h.startswith("Handling time (AHT): not measurable") for h in report.headlines)
        assert any("not measurable" in n for n in report.kpis.notes)
    # 5. the happy path is named, and conformance is never against the most frequent variant
    assert any(h.startswith("Happy path (") for h in report.headlines)
    assert report.conformance is None or report.conformance.reference != "most frequent variant"
    # 5b. paths, their costs and routing hours are measured on finished cases, and say so
    vt = report.variants
    if ext.open_cases:
        assert vt.unfinished_cases == ext.open_cases and "finished cases" in vt.duration_basis
        assert "over its" in _headline(report, "Happy path (")
        if report.misrouting.has_groups:
            assert "finished cases" in report.misrouting.duration_basis
    assert vt.happy.finished_cases == max(v.finished_cases for v in vt.variants)
    assert all(v.finished_cases >= vt.cost_model.min_support and v.excess_cost > 0 for v in vt.costly(10))
    # 5c. the HTML leads routing with what is avoidable, costly paths with their excess over the happy path
    from insight.mining.html import render_html

    html = render_html(report)
    assert "misrouted cases (" not in html and "Cost = cases" not in html
    assert "<b>happy path</b>" in html
    if report.misrouting.has_groups:
        assert 'id="transfer-kinds"' in html
    # 6. the three journeys are there, and say where the experience figure comes from
    j = report.journeys
    assert j is not None and j.in_data is not None and j.experience_basis
    assert j.in_data.cases == max(p.cases for p in j.paths)


def _headline(report: InsightReport, prefix: str) -> str:
    hits = [h for h in report.headlines if h.startswith(prefix)]
    assert hits, f"no headline starting {prefix!r} in {report.headlines}"
    return hits[0]


def test_helpdesk(helpdesk):
    _acceptable(helpdesk)
    q = helpdesk.quality
    assert q is not None and q.source_kind == "disco_csv"
    # the team column is there under its own name: suggested, and said in the headlines
    assert q.suggestions["team_column"] == "workgroup"
    assert "'workgroup' (4 values)" in _headline(helpdesk, "Input: no team column mapped")
    happy = _headline(helpdesk, "Happy path (")
    assert happy.endswith("Assign seriousness > Take in charge ticket > Resolve ticket > Closed")
    assert "52.8%" in happy
    # the costliest path is costed as excess over the happy path, not the happy path itself
    assert "more than the happy path" in _headline(helpdesk, "Costliest path beside it")
    j = helpdesk.journeys
    assert j.experience == "repeat_contact" and "'customer'" in j.experience_basis and "'product'" in j.experience_basis
    assert 0.0 < j.in_data.repeat_rate < 0.2
    # too few recent cases: no alert, and the headline says why
    assert not helpdesk.alerts.alerts and "too few cases" in _headline(helpdesk, "Alerts:")


def test_helpdesk_designed_journey_from_docs(shared_data, helpdesk):
    """The Helpdesk journey in docs/JOURNEYS.md is valid YAML and fits most finished cases."""
    import yaml

    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    spec = next(yaml.safe_load(b) for b in blocks if "Helpdesk" in b)
    journey = IntendedJourney.from_dict(spec)
    assert journey.optional == ["Assign seriousness"]  # marked inline, not repeated
    report = _mine(shared_data / LOGS / "helpdesk" / "helpdesk_finale_attributes.csv.gz", journey=journey)
    _acceptable(report)
    c = report.conformance
    assert c is not None and c.reference == "Helpdesk designed journey"
    assert c.unfinished_excluded == report.extraction.open_cases
    assert c.fitting_share > 0.5
    j = report.journeys
    assert j.designed is not None and j.designed.cases == c.fitting_cases
    assert "designed (Helpdesk designed journey): followed exactly by" in _headline(report, "Journeys (")


def test_bpic2013_extraction_artefacts_are_low_or_explained(bpic2013):
    _acceptable(bpic2013)
    ext = bpic2013.extraction
    assert ext.kind == "closed_in_window"
    assert any("length-biased" in w for w in ext.warnings)
    assert any(h.startswith("Extraction: every case ended between") for h in bpic2013.headlines)
    assert "length-biased" in bpic2013.kpis.throughput_basis
    # alerts on a closed-in-window extract are artefacts: none high/medium, each low one explained
    assert bpic2013.alerts.alerts
    for a in bpic2013.alerts.alerts:
        assert a.severity == "low", (a.title, a.severity)
        assert a.explanation, a.title
    # routing: leads with what is avoidable; escalations that resolved are not counted as misroutes
    avoid = _headline(bpic2013, "Avoidable routing:")
    assert "misroute" in avoid and "ping-pong" in avoid
    assert "justified escalation" in _headline(bpic2013, "Not avoidable by routing:")
    mis = bpic2013.misrouting
    assert mis.avoidable_cases < mis.reassigned_cases
    # the worst first team is ranked on its avoidable transfers, not on every transfer it passed on
    worst = _headline(bpic2013, "Worst first team:")
    team = mis.worst_first_team
    assert team is not None and team.team == "G96" and 0 < team.avoidable_out < team.misrouted_out
    own = mis.cases[(mis.cases["first_team"] == "G96")]
    assert team.avoidable_out == int(own["avoidable"].sum())
    assert worst.startswith(f"Worst first team: G96, {team.avoidable_out:,} avoidable transfers of its 1,863 cases")
    assert "G96 passed on 1,051 of 1,863" in worst
    # every avoidable case hour is from a finished case
    timed = mis.cases[mis.cases["avoidable"] & mis.cases["extra_s"].notna()]
    assert set(timed.index) <= set(bpic2013.labels.df.index[bpic2013.extraction.finished])
    # the CSV already joins Status and Sub Status: no lifecycle warning, no preset suggestion
    assert not bpic2013.quality.notices


def test_servicenow_placeholder_and_unmeasurable_handling(servicenow):
    _acceptable(servicenow)
    q = servicenow.quality
    assert q.source_kind == "servicenow"
    assert q.count("placeholder_activity") == 2
    assert "'-100'" in _headline(servicenow, "Input: placeholder activity")
    # a status-change log: handling time is not measurable rather than days of "handling"
    assert servicenow.kpis.handling_basis.startswith("not measurable")
    assert servicenow.journeys.experience == "repeat_contact"
    assert "'caller_id'" in servicenow.journeys.experience_basis


def test_bpic2012_lifecycle_pairs_give_handling(bpic2012):
    _acceptable(bpic2012)
    assert bpic2012.kpis.handling_basis == "lifecycle start->complete"
    ov = bpic2012.kpis.overall
    assert ov.aht_mean_s is not None and 0 < ov.aht_mean_s < ov.throughput_mean_s
    assert bpic2012.quality.source_kind == "openxes_lifecycle"
    # no customer or score column: the experienced journey is not invented
    assert bpic2012.journeys.experience == "none"
    assert bpic2012.journeys.in_data.repeat_rate is None and bpic2012.journeys.in_data.score_mean is None


def test_bpic2014_no_team_no_work_records(bpic2014):
    _acceptable(bpic2014)
    assert bpic2014.quality.source_kind == "disco_xes"
    # the filtered activity log has no team and no agent: no routing claims, no handling time
    assert not bpic2014.misrouting.has_groups
    assert not any(h.startswith(("Avoidable routing", "Worst first team", "Ping-pong")) for h in bpic2014.headlines)
    assert "no per-agent work events" in bpic2014.kpis.handling_basis


def test_xes_label_pitfalls_are_named(shared_data):
    """A preset that rewrites a Disco export's labels, and an OpenXES log read without its sub-statuses."""
    from insight.eventlog import read_log

    disco = read_log(shared_data / LOGS / "helpdesk" / "Helpdesk.xes.gz", preset="bpic2013_xes")
    assert "Closed-complete" in disco.activities  # what the preset did ...
    assert any("appended the lifecycle transition" in n for n in disco.quality.notices)  # ... is said
    vinst = shared_data / LOGS / "bpic2013" / "BPI_Challenge_2013_incidents.xes.gz"
    plain = read_log(vinst)
    assert len(plain.activities) == 4 and plain.quality.suggestions["preset"] == "bpic2013_xes"
    assert any("13 sub-statuses" in n for n in plain.quality.notices)
    joined = read_log(vinst, preset="bpic2013_xes")
    assert len(joined.activities) == 13 and not joined.quality.notices
