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


# --- planted patterns of the simulator -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    from insight.simulate import simulate

    return simulate(n_cases=2000, seed=11)


@pytest.fixture(scope="module")
def sim_mis(sim):
    from insight.mining.misrouting import analyze_misrouting

    return analyze_misrouting(sim.log)


def _ids(frame: pd.DataFrame, col: str) -> set[str]:
    return {str(c) for c in frame.index[frame[col].fillna(False).astype(bool)]}


def test_sim_labels_match_ticket_truth(sim) -> None:
    d = case_labels(sim.log).df
    t = sim.tickets.set_index("case_id")
    assert (d["resolving_team"] == t.loc[d.index, "resolving_team"]).mean() >= 0.995
    assert (d["first_team"] == t.loc[d.index, "first_team"]).mean() >= 0.995


def test_sim_misrouted_cases_recovered(sim, sim_mis) -> None:
    truth = sim.truth.misrouting
    reassigned = set(truth.reassigned_cases)
    found = _ids(sim_mis.cases, "misrouted")
    # Misrouted (transferred at least once) = the planted misroutes plus the ping-pong cases.
    assert len(found ^ reassigned) <= 0.005 * sim_mis.n_cases
    wrong = _ids(sim_mis.cases, "wrong_first_team")
    assert len(wrong ^ set(truth.cases)) <= 0.005 * sim_mis.n_cases
    assert sim_mis.wrong_first_team_share == pytest.approx(truth.share, abs=0.005)


def test_sim_ping_pong_pair_recovered(sim, sim_mis) -> None:
    truth = sim.truth.ping_pong
    top = sim_mis.ping_pong_pairs[0]
    assert {top.team_a, top.team_b} == {truth.team_a, truth.team_b}
    assert _ids(sim_mis.cases, "ping_pong") == set(truth.cases)
    # The approvals sign-off (Billing -> Approvals -> Billing) must not look like ping-pong.
    assert all("Approvals" not in (p.team_a, p.team_b) for p in sim_mis.ping_pong_pairs)


def test_sim_push_to_front_recovered(sim, sim_mis) -> None:
    truth = sim.truth.push_to_front
    ptf = sim_mis.push_to_front
    assert ptf is not None
    assert set(truth.escalated_cases) <= _ids(sim_mis.cases, "pushed")
    assert _ids(sim_mis.cases, "could_have_stayed") == set(truth.could_have_stayed)
    assert ptf.could_have_stayed == len(truth.could_have_stayed)
    assert ptf.resolved_back_in_first_line == 0  # the simulator never hands a pushed case back


def test_sim_channel_transfers_and_extra_time(sim, sim_mis) -> None:
    moved = sum(c.cases for c in sim_mis.channel_transfers)
    assert moved == len(sim.truth.channel_transfers)
    assert sim_mis.kind_column == "intent"
    # Misrouted cases wait for the right team, so they take longer than right-first-time cases of their intent.
    assert sim_mis.extra_hours_mean is not None and sim_mis.extra_hours_mean > 1.0
    pp_pair = next(p for p in sim_mis.pairs if {p.from_team, p.to_team} <= {"Billing L2", "Accounts L2"})
    assert pp_pair.cases > 0


# --- real data: BPIC 2013 incidents (VINST CSV) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bpic2013(shared_data):
    from insight.eventlog import read_log

    return read_log(
        shared_data / "process_logs/bpic2013/VINST_incidents_ibm_with_support_level.csv.gz", preset="bpic2013_vinst"
    )


@pytest.mark.realdata
def test_bpic2013_reassignments_match_an_independent_count(bpic2013) -> None:
    import re

    from insight.mining.misrouting import analyze_misrouting

    res = analyze_misrouting(bpic2013)
    # Independent count: collapse each case's team sequence up to its last resolving event.
    df = bpic2013.df
    rx = re.compile(LabelConfig().resolve_pattern, re.IGNORECASE)
    reassigned = ping = 0
    from itertools import groupby

    rows = zip(df["case_id"].tolist(), df["activity"].astype(str).tolist(), df["group"].astype(str).tolist(),
               strict=True)
    for _, grp in groupby(rows, key=lambda r: r[0]):
        events = list(grp)
        hits = [i for i, (_, a, _) in enumerate(events) if rx.search(a)]
        upto = hits[-1] if hits else len(events) - 1
        seq: list[str] = []
        for _, _, t in events[: upto + 1]:
            if not seq or seq[-1] != t:
                seq.append(t)
        reassigned += len(seq) > 1
        ping += len(seq) != len(set(seq))
    assert res.reassigned_cases == reassigned
    assert res.ping_pong_cases == ping
    assert res.n_cases == 7554
    assert res.push_to_front is not None and res.push_to_front.pushed_cases > 0
    assert res.teams[0].misrouted_out >= res.teams[-1].misrouted_out


def test_transfer_taxonomy_recovers_the_planted_kinds() -> None:
    """Every planted kind lands in its class: misroutes, ping-pong, needless push-to-front, real escalations."""
    from insight.mining.misrouting import analyze_misrouting
    from insight.simulate import simulate

    sim = simulate(n_cases=3000, seed=5)
    t = sim.truth
    res = analyze_misrouting(sim.log)
    kind = res.cases["transfer_kind"]
    by = {k.kind: k for k in res.taxonomy}
    ping = set(t.ping_pong.cases)
    assert set(kind[kind == "ping_pong"].index) == ping
    misroutes = set(t.misrouting.cases) - ping
    assert set(kind[kind == "misroute"].index) == misroutes
    stayed = set(t.push_to_front.could_have_stayed)
    assert set(kind[kind == "push_to_front"].index) == stayed
    legit = set(t.push_to_front.escalated_cases) - stayed - ping - set(t.misrouting.cases)
    assert legit and set(kind[kind == "justified_escalation"].index) >= legit
    # every reassigned case has exactly one kind; avoidable = misroutes + ping-pong + needless push-to-front
    assert kind.notna().sum() == res.reassigned_cases
    assert res.avoidable_cases == len(misroutes) + len(ping) + len(stayed)
    assert not by["justified_escalation"].avoidable and by["misroute"].avoidable
    # the costliest example comes first
    ex = by["misroute"].example_cases
    assert res.cases.loc[ex[0], "throughput_s"] >= res.cases.loc[ex[-1], "throughput_s"] or len(ex) == 1
