"""Source layouts recognised by their columns, input pitfalls in the quality report, journey files and the three
journeys (designed / in the data / experienced), on small files written the way each source writes them."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from api.commands.mine import load_journey
from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog import read_log
from insight.eventlog.readers.detect import detect_source, is_placeholder_activity
from insight.eventlog.schema import EventLog
from insight.mining import mine
from insight.mining.conformance import IntendedJourney, compare_journeys
from insight.mining.kpis import compute_kpis
from insight.mining.report import MineConfig

ZENDESK = ["Id", "Requester", "Requester id", "Assignee", "Group", "Subject", "Status", "Via", "Created at",
           "Updated at", "Solved at", "Satisfaction Score", "Group stations", "Reopens"]
FRESHDESK = ["Ticket ID", "Subject", "Status", "Priority", "Source", "Agent", "Group", "Created time",
             "Last update time", "Resolved time", "Agent interactions", "Customer interactions", "Survey results"]


@pytest.mark.parametrize(
    ("columns", "kind", "preset"),
    [
        (ZENDESK, "zendesk_export", "zendesk_export"),
        (FRESHDESK, "freshdesk_export", "freshdesk_export"),
        (["number", "incident_state", "sys_updated_at", "assignment_group"], "servicenow", "servicenow"),
        (["SR Number", "Change Date+Time", "Status", "Sub Status", "Involved ST"], "bpic2013_vinst_csv",
         "bpic2013_vinst"),
        (["Case ID", "Activity", "Resource", "Complete Timestamp", "Variant", "Variant index"], "disco_csv",
         "helpdesk_csv"),
        (["CaseID", "ActivityID", "CompleteTimestamp"], "tax2017_csv", "tax2017"),
        (["ticket", "step", "when"], "unknown", None),
    ],
)
def test_detect_source_by_columns(columns, kind, preset) -> None:
    guess = detect_source(columns)
    assert (guess.kind, guess.preset) == (kind, preset)


def test_detect_xes_flavours_by_lifecycle() -> None:
    cols = ["case_id", "activity", "timestamp", "lifecycle"]
    assert detect_source(cols, fmt="xes", lifecycle_values=["In Progress", "Closed"]).preset == "bpic2013_xes"
    assert detect_source(cols, fmt="xes", lifecycle_values=["complete"], creator="Fluxicon Disco").kind == "disco_xes"
    assert detect_source(cols, fmt="xes", lifecycle_values=["start", "complete"]).kind == "openxes_lifecycle"


def test_placeholder_labels() -> None:
    assert all(is_placeholder_activity(x) for x in ("-100", "?", "N/A", "-", "null", " unknown "))
    assert not any(is_placeholder_activity(x) for x in ("Closed", "Wait - User", "1", "Level 2"))


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _status_rows(n_cases: int = 30) -> list[dict[str, object]]:
    """A status-change log: one agent's changes days apart, a team-like column under its own name."""
    rows: list[dict[str, object]] = []
    t0 = pd.Timestamp("2024-01-01 09:00")
    for c in range(n_cases):
        start = t0 + pd.Timedelta(hours=7 * c)
        for k, status in enumerate(["New", "Active", "Resolved", "Closed"]):
            rows.append({"Ticket": f"T{c:03d}", "Status": status, "Changed": start + pd.Timedelta(days=2 * k),
                         "Agent": f"a{c % 3}", "workgroup": f"W{c % 2}"})
    rows.append({"Ticket": "T000", "Status": "-100", "Changed": t0 + pd.Timedelta(days=1), "Agent": "a0",
                 "workgroup": "W0"})
    return rows


def test_quality_report_names_team_column_and_placeholder(tmp_path) -> None:
    path = _write_csv(tmp_path / "status.csv", _status_rows())
    log = read_log(path, mapping={"Ticket": "case_id", "Status": "activity", "Changed": "timestamp",
                                  "Agent": "resource"})
    q = log.quality
    assert q.suggestions["team_column"] == "workgroup"
    assert q.count("placeholder_activity") == 1
    assert any("'-100'" in n for n in q.notices) and any("--map 'workgroup=group'" in n for n in q.notices)
    assert q.to_dict()["suggestions"] == {"team_column": "workgroup"}


def test_handling_time_not_measurable_on_status_changes(tmp_path) -> None:
    path = _write_csv(tmp_path / "status.csv", _status_rows())
    log = read_log(path, mapping={"Ticket": "case_id", "Status": "activity", "Changed": "timestamp",
                                  "Agent": "resource"})
    k = compute_kpis(log)
    assert k.handling_basis.startswith("not measurable")
    assert k.overall.aht_mean_s is None or math.isnan(k.overall.aht_mean_s)
    assert any("handling time (AHT) not measurable" in n for n in k.notes)
    # the same log with work minutes apart by one agent: the gap proxy is measured
    df = log.df.copy()
    df["timestamp"] = df.groupby("case_id")["timestamp"].transform("min") + pd.to_timedelta(
        df.groupby("case_id").cumcount() * 10, unit="min")
    df["resource"] = "a0"
    k2 = compute_kpis(EventLog(df, name="work"))
    assert k2.handling_basis.startswith("gaps between consecutive events")
    assert k2.overall.aht_mean_s == pytest.approx(30 * 60, rel=0.2)


def test_missing_columns_error_suggests_preset(tmp_path) -> None:
    path = _write_csv(tmp_path / "tax.csv", [{"CaseID": 1, "ActivityID": 3, "CompleteTimestamp": "2024-01-01 10:00"}])
    with pytest.raises(InvalidEventLog, match="--preset tax2017"):
        read_log(path)


XES = """<?xml version="1.0" encoding="UTF-8" ?>
<log xes.version="1.0" xmlns="http://www.xes-standard.org/">
<string key="creator" value="Fluxicon Disco"/>
{traces}
</log>"""
TRACE = """<trace><string key="concept:name" value="{case}"/>{events}</trace>"""
EVENT = ('<event><string key="concept:name" value="{act}"/><string key="lifecycle:transition" value="{life}"/>'
         '<date key="time:timestamp" value="2024-01-0{day}T10:00:00+00:00"/></event>')


def _xes(path: Path, lifecycles: list[tuple[str, str]]) -> Path:
    traces = [
        TRACE.format(case=f"c{c}", events="".join(EVENT.format(act=a, life=lc, day=k + 1)
                                                  for k, (a, lc) in enumerate(lifecycles)))
        for c in range(3)
    ]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(XES.format(traces="\n".join(traces)))
    return path


def test_preset_rewriting_labels_is_flagged(tmp_path) -> None:
    disco = _xes(tmp_path / "disco.xes.gz", [("Open", "complete"), ("Closed", "complete")])
    log = read_log(disco, preset="bpic2013_xes")
    assert "Open-complete" in log.activities
    assert any("appended the lifecycle transition" in n and "without the preset" in n for n in log.quality.notices)
    assert not read_log(disco).quality.notices


def test_sub_statuses_left_out_are_flagged(tmp_path) -> None:
    openxes = _xes(tmp_path / "vinst.xes.gz", [("Accepted", "In Progress"), ("Completed", "Closed")])
    log = read_log(openxes)
    assert log.quality.suggestions["preset"] == "bpic2013_xes"
    assert any("sub-statuses" in n and "--preset bpic2013_xes" in n for n in log.quality.notices)
    joined = read_log(openxes, preset="bpic2013_xes")
    assert "Accepted-In Progress" in joined.activities and not joined.quality.notices


def test_journey_yaml_inline_optional_and_errors(tmp_path) -> None:
    y = tmp_path / "j.yaml"
    y.write_text("name: Support\nsteps:\n  - Open\n  - step: Ask customer\n    optional: true\n  - Close\n"
                 "allowed_anywhere: [Note]\n", encoding="utf-8")
    j = load_journey(y)
    assert (j.steps, j.optional, j.allowed_anywhere, j.source) == (
        ["Open", "Ask customer", "Close"], ["Ask customer"], ["Note"], "Support")
    js = tmp_path / "j.json"
    js.write_text(json.dumps({"steps": ["Open", {"step": "Ask customer", "optional": True}, "Close"]}),
                  encoding="utf-8")
    assert load_journey(js).optional == ["Ask customer"] and load_journey(js).source == "declared journey (j.json)"
    with pytest.raises(InvalidInput, match="allowed_anywhere"):
        IntendedJourney.from_dict({"steps": ["Open"], "optional": ["Elsewhere"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [Open\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="cannot read journey file"):
        load_journey(bad)


def _journey_log(score: bool) -> EventLog:
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for c in range(60):
        slow = c % 3 == 0
        acts = ["Open", "Work", "Reopen", "Work", "Close"] if slow else ["Open", "Work", "Close"]
        start = t0 + pd.Timedelta(days=c)
        for k, a in enumerate(acts):
            row = {"case_id": f"c{c:02d}", "activity": a, "timestamp": start + pd.Timedelta(hours=k)}
            if score:
                row["CSAT score"] = (2.0 if slow else 5.0) if a == "Close" else None
            else:
                # slow cases' customers come back the next day about the same category
                row["customer"] = f"u{c}"
                row["category"] = "billing"
            rows.append(row)
        if not score and slow:
            for k, a in enumerate(["Open", "Close"]):
                rows.append({"case_id": f"r{c:02d}", "activity": a, "customer": f"u{c}", "category": "billing",
                             "timestamp": start + pd.Timedelta(days=1, hours=k)})
    return EventLog(pd.DataFrame(rows), name="journeys")


def test_three_journeys_with_a_csat_column() -> None:
    log = _journey_log(score=True)
    j = compare_journeys(log, journey=IntendedJourney(steps=["Open", "Work", "Close"]),
                         case_fitness=None, min_cases=5)
    assert j.experience == "score" and "'CSAT score'" in j.experience_basis
    assert j.in_data.activities == ["Open", "Work", "Close"] and j.in_data.score_mean == pytest.approx(5.0)
    slow = next(p for p in j.paths if "Reopen" in p.activities)
    assert (slow.cases, slow.score_mean, slow.score_cases) == (20, pytest.approx(2.0), 20)
    step = next(s for s in j.steps if s.activity == "Reopen")
    assert step.score_mean == pytest.approx(2.0)


def test_three_journeys_repeat_contact_in_mine(tmp_path) -> None:
    from insight.mining.html import write_html

    report = mine(_journey_log(score=False),
                  config=MineConfig(journey=IntendedJourney(steps=["Open", "Work", "Close"]), render_map=False))
    html = write_html(report, tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="journeys"' in html and "repeat contacts" in html and "Open &gt; Work &gt; Reopen" in html
    j = report.journeys
    assert j.experience == "repeat_contact" and "'customer'" in j.experience_basis
    assert "'category'" in j.experience_basis
    slow = next(p for p in j.paths if "Reopen" in p.activities)
    assert slow.repeat_rate == pytest.approx(1.0) and slow.repeat_cases == 20
    reopen = next(s for s in j.steps if s.activity == "Reopen")
    assert (reopen.cases, reopen.repeat_rate) == (20, pytest.approx(1.0))
    assert j.in_data.activities == ["Open", "Work", "Close"]
    # the designed journey is followed exactly by the fast cases and the repeat contacts themselves
    assert j.designed.cases == report.conformance.fitting_cases
    assert j.designed.repeat_rate is not None and j.designed.repeat_rate < slow.repeat_rate
    assert any(h.startswith("Journeys (repeat contact") for h in report.headlines)
    assert report.to_dict()["journeys"]["experience"] == "repeat_contact"


ANGRY = ["This is the third time I write, nobody helps me and I am furious.",
         "Terrible service, the problem is back again. Awful and useless.",
         "Still broken!! I am very angry and disappointed with your support."]
HAPPY = ["Thanks a lot, that was quick and very helpful!",
         "Great support, problem solved. I am happy, thank you.",
         "Wonderful, it works perfectly now. Thanks for the excellent help."]


def _text_journey_log(*, csat: bool = False) -> EventLog:
    """Every third case is reopened and its customer writes angry comments; the others' customers write thanks."""
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for c in range(60):
        slow = c % 3 == 0
        acts = ["Open", "Work", "Reopen", "Work", "Close"] if slow else ["Open", "Work", "Close"]
        start = t0 + pd.Timedelta(days=c)
        for k, a in enumerate(acts):
            row = {"case_id": f"c{c:02d}", "activity": a, "timestamp": start + pd.Timedelta(hours=k),
                   "Customer comment": None}
            if a in ("Reopen", "Close"):  # the customer writes when reopening and when the case closes
                row["Customer comment"] = (ANGRY if slow else HAPPY)[c % 3 if not slow else (c // 3) % 3]
            if csat:
                row["CSAT"] = (1.0 if slow else 4.0) if a == "Close" else None
            rows.append(row)
    return EventLog(pd.DataFrame(rows), name="text journeys")


def test_three_journeys_sentiment_derived_from_customer_text(tmp_path) -> None:
    from insight.mining.html import write_html

    report = mine(_text_journey_log(),
                  config=MineConfig(journey=IntendedJourney(steps=["Open", "Work", "Close"]), render_map=False))
    j = report.journeys
    assert j.experience == "sentiment"
    assert "derived from the text in 'Customer comment'" in j.experience_basis and "60 cases carry text" in \
        j.experience_basis
    slow = next(p for p in j.paths if "Reopen" in p.activities)
    fast = j.in_data
    assert fast.activities == ["Open", "Work", "Close"] and (fast.cases, slow.cases) == (40, 20)
    assert (fast.sentiment_cases, slow.sentiment_cases) == (40, 20)
    assert slow.sentiment_mean < -0.3 < 0.3 < fast.sentiment_mean
    assert fast.score_mean is None and fast.repeat_rate is None
    steps = {s.activity: s for s in j.steps}
    assert steps["Reopen"].sentiment_mean == pytest.approx(slow.sentiment_mean)
    assert steps["Reopen"].sentiment_mean < steps["Work"].sentiment_mean < fast.sentiment_mean
    # the designed journey is followed by the happy cases: it is experienced better than the reopened path
    assert j.designed.sentiment_mean == pytest.approx(fast.sentiment_mean)
    head = next(h for h in report.headlines if h.startswith("Journeys (sentiment derived from the text"))
    assert "worst experienced path: Open > Work > Reopen > Work > Close" in head and "(derived from text)" in head
    html = write_html(report, tmp_path / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="journeys"'):html.index('id="alerts"')]
    assert section.count("mean sentiment (derived from text)") == 2
    assert f"{slow.sentiment_mean:,.2f} (20)" in section
    assert report.to_dict()["journeys"]["paths"][1]["sentiment_mean"] == pytest.approx(slow.sentiment_mean)


def test_a_csat_column_wins_over_text_and_codes_are_not_text() -> None:
    j = compare_journeys(_text_journey_log(csat=True), min_cases=5)
    assert j.experience == "score" and "'CSAT'" in j.experience_basis
    slow = next(p for p in j.paths if "Reopen" in p.activities)
    assert slow.score_mean == pytest.approx(1.0) and slow.sentiment_mean is None
    # a column named like text but holding codes is not read as the customer's words
    log = _text_journey_log()
    log.df["Customer comment"] = log.df["Customer comment"].map(lambda t: None if t is None else "E42")
    assert compare_journeys(log, min_cases=5).experience == "none"


def test_zendesk_export_preset_and_its_satisfaction_column(tmp_path) -> None:
    path = tmp_path / "zendesk.csv"
    path.write_text(
        ",".join(ZENDESK) + "\n"
        "101,Ann,9001,Bob,Billing,Refund,solved,Mail,2024-01-05 10:22,2024-01-06 09:00,2024-01-06 09:00,Good,1,0\n"
        "102,Carl,9002,Dee,Tech,Login,solved,Web form,2024-01-05 11:00,2024-01-05 12:00,2024-01-05 12:00,Bad,2,1\n"
        "103,Eve,9003,Dee,Tech,Login,open,Web form,2024-01-05 11:30,2024-01-05 12:30,,Unoffered,1,0\n",
        encoding="utf-8",
    )
    log = read_log(path, preset="zendesk_export")
    assert log.quality.source_kind == "zendesk_export" and not log.quality.notices
    assert log.df[["case_id", "activity", "group", "resource", "channel"]].iloc[0].tolist() == [
        "101", "solved", "Billing", "Bob", "Mail"]
    j = compare_journeys(log, min_cases=1)
    assert j.experience == "score" and "'Satisfaction Score'" in j.experience_basis
    solved = next(p for p in j.paths if p.activities == ["solved"])
    assert (solved.cases, solved.score_mean, solved.score_cases) == (2, pytest.approx(0.5), 2)
