"""Training labels and misrouting analysis on hand-made logs (exact counts), the simulator and BPIC 2013."""

from __future__ import annotations

import pandas as pd
import pytest

from insight.eventlog.schema import EventLog
from insight.mining.labels import END_OF_CASE, LabelConfig, case_labels, prefix_labels, support_lines


def _log(rows: list[tuple], extra: list[str] | None = None) -> EventLog:
    cols = ["case_id", "activity", "timestamp", "group"] + (extra or [])
    df = pd.DataFrame(rows, columns=cols)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return EventLog(df, name="hand", case_attributes=extra or [])


ROWS = [
    ("c1", "Created", "2026-01-01 09:00", "Service Desk L1"),
    ("c1", "Assign", "2026-01-01 09:10", "Billing L2"),
    ("c1", "Reassign", "2026-01-01 10:00", "Accounts L2"),
    ("c1", "Resolved", "2026-01-01 12:00", "Accounts L2"),
    ("c1", "Closed", "2026-01-02 12:00", "Service Desk L1"),
    ("c2", "Created", "2026-01-01 09:00", "Billing L2"),
    ("c2", "Resolved", "2026-01-01 09:30", "Billing L2"),
    ("c2", "Reopened", "2026-01-01 10:30", "Billing L2"),
    ("c2", "Resolved", "2026-01-01 11:30", "Billing L2"),
    ("c3", "Created", "2026-01-01 09:00", None),
]


def test_case_labels_resolving_team_is_not_first_team() -> None:
    cl = case_labels(_log(ROWS))
    d = cl.df
    # The service desk only logged c1 before the "Assign" step: Billing L2 is the first team.
    assert d.loc["c1", "first_team"] == "Billing L2"
    # Resolved at Accounts L2; the hand-back to L1 for closing neither makes L1 the resolver nor counts.
    assert d.loc["c1", "resolving_team"] == "Accounts L2"
    assert d.loc["c1", "reassignments"] == 1
    assert d.loc["c1", "transfers"] == 1
    assert bool(d.loc["c1", "misrouted"]) is True
    assert d.loc["c1", "outcome"] == "resolved"
    assert d.loc["c1", "teams"] == "Service Desk L1 > Billing L2 > Accounts L2 > Service Desk L1"
    assert d.loc["c2", "resolving_team"] == "Billing L2"
    assert d.loc["c2", "reassignments"] == 0
    assert bool(d.loc["c2", "misrouted"]) is False
    assert d.loc["c2", "outcome"] == "reopened"
    assert pd.isna(d.loc["c3", "misrouted"])
    assert d.loc["c3", "outcome"] == "open"
    assert cl.misrouted_share == pytest.approx(1 / 3)
    assert d.loc["c1", "throughput_s"] == 27 * 3600


def test_without_assignment_step_the_first_group_is_first_team() -> None:
    d = case_labels(_log(ROWS), config=LabelConfig(assignment_pattern=None)).df
    assert d.loc["c1", "first_team"] == "Service Desk L1"
    assert d.loc["c1", "reassignments"] == 2
    # Reached 2nd line from the first line with no escalate step: escalated by support line.
    assert d.loc["c1", "outcome"] == "escalated"
    d2 = case_labels(_log(ROWS), config=LabelConfig(assignment_pattern=None, intake_groups=("Service Desk L1",))).df
    assert d2.loc["c1", "first_team"] == "Billing L2"


def test_escalation_is_not_a_misroute() -> None:
    rows = [
        ("e1", "Ticket created", "2026-01-01 09:00", "Service Desk L1"),
        ("e1", "Assign to team", "2026-01-01 09:05", "Tech Support L2"),
        ("e1", "Work started", "2026-01-01 09:30", "Tech Support L2"),
        ("e1", "Escalate", "2026-01-01 10:00", "Engineering L3"),
        ("e1", "Resolved", "2026-01-01 12:00", "Engineering L3"),
        ("e2", "Ticket created", "2026-01-01 09:00", "Service Desk L1"),
        ("e2", "Assign to team", "2026-01-01 09:05", "Accounts L2"),
        ("e2", "Reassign", "2026-01-01 09:30", "Tech Support L2"),
        ("e2", "Escalate", "2026-01-01 10:00", "Engineering L3"),
        ("e2", "Resolved", "2026-01-01 12:00", "Engineering L3"),
    ]
    d = case_labels(_log(rows)).df
    assert (d.loc["e1", "transfers"], d.loc["e1", "escalations"]) == (0, 1)
    assert bool(d.loc["e1", "misrouted"]) is False
    assert d.loc["e1", "outcome"] == "escalated"
    assert (d.loc["e2", "transfers"], d.loc["e2", "escalations"]) == (1, 1)
    assert bool(d.loc["e2", "misrouted"]) is True


def test_unsorted_log_gives_same_labels() -> None:
    log = _log(ROWS)
    shuffled = EventLog(log.df.sample(frac=1.0, random_state=3).reset_index(drop=True), name="x")
    a = case_labels(log).df.sort_index()
    b = case_labels(shuffled).df.sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_prefix_labels_next_activity_and_remaining_time() -> None:
    p = prefix_labels(_log(ROWS)).df
    assert len(p) == len(ROWS)
    c1 = p[p["case_id"] == "c1"]
    assert c1["prefix_len"].tolist() == [1, 2, 3, 4, 5]
    assert c1["next_activity"].tolist() == ["Assign", "Reassign", "Resolved", "Closed", END_OF_CASE]
    assert c1["remaining_s"].tolist() == [97200.0, 96600.0, 93600.0, 86400.0, 0.0]
    assert p[p["case_id"] == "c3"]["next_activity"].tolist() == [END_OF_CASE]


def test_support_lines_naming_rules() -> None:
    assert support_lines(["G97", "G230 2nd", "V5 3rd"]) == {"G97": 1, "G230 2nd": 2, "V5 3rd": 3}
    assert support_lines(["Service Desk L1", "Billing L2", "Engineering L3"]) == {
        "Service Desk L1": 1,
        "Billing L2": 2,
        "Engineering L3": 3,
    }
    # No line information anywhere: do not pretend every team is first line.
    assert support_lines(["Group 1", "Group 2"]) is None
    assert support_lines(["A", "B"], mapping={"B": 2}) == {"A": 1, "B": 2}
