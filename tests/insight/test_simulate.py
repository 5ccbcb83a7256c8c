"""The contact-center simulator: determinism, a valid EventLog, and every planted pattern present as stated."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.simulate import GroundTruth, SimConfig, allowed_transitions, simulate, simulate_events
from insight.simulate.config import INTENTS, TEAM_NAMES


@pytest.fixture(scope="module")
def sim(sim_small):
    return sim_small


@pytest.fixture(scope="module")
def sim_big():
    """3,000 cases: enough for share checks with tight-ish tolerances, still well under a second."""
    return simulate(n_cases=3000, seed=11)


def _paths(sim) -> dict[str, list[tuple[str, str | None]]]:
    df = sim.log.df
    out: dict[str, list[tuple[str, str | None]]] = {}
    for cid, act, grp in zip(df["case_id"], df["activity"], df["group"], strict=True):
        out.setdefault(cid, []).append((act, None if pd.isna(grp) else grp))
    return out


def test_same_seed_same_frames_other_seed_differs() -> None:
    a = simulate(n_cases=200, seed=3)
    b = simulate(n_cases=200, seed=3)
    c = simulate(n_cases=200, seed=4)
    pd.testing.assert_frame_equal(a.log.df, b.log.df)
    pd.testing.assert_frame_equal(a.tickets, b.tickets)
    assert a.truth.to_dict() == b.truth.to_dict()
    assert not a.tickets["body"].equals(c.tickets["body"])
    assert not a.log.df["timestamp"].equals(c.log.df["timestamp"]) or len(a.log.df) != len(c.log.df)
    # Text off (for event-only benchmarks) leaves the event log of a seed unchanged.
    d = simulate(n_cases=200, seed=3, config=SimConfig(ticket_text=False))
    pd.testing.assert_frame_equal(a.log.df, d.log.df)
    assert (d.tickets["body"] == "").all() and a.truth.misrouting.cases == d.truth.misrouting.cases


def test_log_is_a_valid_canonical_event_log(sim) -> None:
    log = sim.log
    assert isinstance(log, EventLog)
    df = log.df
    assert log.n_cases == 600 and len(sim.tickets) == 600 and sim.truth.n_cases == 600
    assert sim.truth.n_events == len(df)
    for col in ("case_id", "activity", "timestamp", "resource", "group", "channel", "lifecycle",
                "intent", "segment", "priority", "product"):
        assert col in df.columns, col
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert set(df["lifecycle"]) == {"complete"}
    assert set(df["channel"]) <= {"phone", "chat", "email", "portal"}
    assert set(df["group"].dropna()) <= set(TEAM_NAMES)
    assert df["resource"].dropna().str.fullmatch(r"agent_\d{3}").all()
    # Ordered by case then time, strictly increasing inside a case.
    assert df["case_id"].is_monotonic_increasing
    same = df["case_id"].to_numpy()[1:] == df["case_id"].to_numpy()[:-1]
    dt = np.diff(df["timestamp"].dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype("int64"))
    assert (dt[same] > 0).all()
    # Case attributes are constant within a case and agree with the ticket table.
    per_case = df.groupby("case_id")[["intent", "segment", "priority", "product"]].nunique()
    assert (per_case == 1).all().all()
    t = sim.tickets.set_index("case_id")
    first = df.groupby("case_id").first()
    assert (first["intent"] == t["intent"]).all()
    created = df[df["activity"] == "Ticket created"].set_index("case_id")["timestamp"]
    assert (created.reindex(t.index) == t["created_at"]).all()
    # An agent works for exactly one team.
    assert (df.dropna(subset=["resource"]).groupby("resource")["group"].nunique() == 1).all()


def test_misrouted_cases_start_at_a_wrong_team_and_are_learnable(sim, sim_big) -> None:
    for s in (sim, sim_big):
        tr = s.truth.misrouting
        assert 0.13 <= tr.share <= 0.22
        t = s.tickets.set_index("case_id")
        mis = set(tr.cases)
        assert (t.loc[list(mis), "first_team"] != t.loc[list(mis), "resolving_team"]).all()
        paths = _paths(s)
        for cid in mis:
            acts = [a for a, _ in paths[cid]]
            assert "Reassign" in acts, cid
    tr = sim_big.truth.misrouting
    # The learnable part: borrowed wording makes misrouting ~10x more likely.
    assert tr.misroute_rate_if_ambiguous > 5 * tr.misroute_rate_if_clear
    cases = sim_big.cases.set_index("case_id")
    assert cases.loc[tr.ambiguous_cases, "ambiguous_text"].all()
    # A clean case (no misrouting, no ping-pong, no escalation) is resolved by its first team.
    clean = cases[~cases["misrouted"] & ~cases["escalated"]]
    t = sim_big.tickets.set_index("case_id").loc[clean.index]
    assert (t["first_team"] == t["resolving_team"]).all()
    assert (t["resolving_team"] == clean["home_team"]).all()


def test_ping_pong_cases_bounce_between_the_pair(sim_big) -> None:
    pp = sim_big.truth.ping_pong
    assert pp.cases and 0.01 <= pp.share <= 0.06
    paths = _paths(sim_big)
    pair = {pp.team_a, pp.team_b}

    def bounces(cid: str) -> bool:
        groups = [g for a, g in paths[cid] if a in ("Assign to team", "Reassign")]
        return len(groups) == 3 and groups[0] == groups[2] and {groups[0], groups[1]} == pair

    assert all(bounces(c) for c in pp.cases)
    others = set(paths) - set(pp.cases)
    assert not any(bounces(c) for c in others)


def test_push_to_front_cases_resolved_with_a_trivial_step(sim_big) -> None:
    ptf = sim_big.truth.push_to_front
    assert set(ptf.could_have_stayed) <= set(ptf.escalated_cases)
    assert 0.15 <= ptf.share_of_l1_cases <= 0.30
    df = sim_big.log.df
    by_case = {cid: g for cid, g in df.groupby("case_id", sort=False)}
    for cid in ptf.could_have_stayed:
        g = by_case[cid]
        acts = g["activity"].tolist()
        i = acts.index("Escalate")
        assert g["group"].iloc[i - 1] == "Service Desk L1"
        assert g["group"].iloc[i] != "Service Desk L1"
        assert acts[i + 1] == ptf.trivial_step  # no work started at the higher line
        gap = g["timestamp"].iloc[i + 1] - g["timestamp"].iloc[i]
        assert gap < pd.Timedelta(hours=2)
    # Legitimate escalations do real work at the higher line.
    legit = set(ptf.escalated_cases) - set(ptf.could_have_stayed)
    for cid in legit:
        acts = by_case[cid]["activity"].tolist()
        assert acts[acts.index("Escalate") + 1] == "Work started"


def _waits(df: pd.DataFrame) -> pd.DataFrame:
    prev = df.groupby("case_id")["timestamp"].shift()
    return df.assign(wait_h=(df["timestamp"] - prev).dt.total_seconds() / 3600.0)


def test_approval_is_the_slow_step(sim_big) -> None:
    ss = sim_big.truth.slow_step
    w = _waits(sim_big.log.df)
    medians = w.dropna(subset=["wait_h"]).groupby("activity")["wait_h"].median()
    assert medians.idxmax() == ss.activity == "Approval granted"
    assert medians[ss.activity] == pytest.approx(ss.median_wait_hours, rel=0.01)
    assert 36 <= ss.median_wait_hours <= 60
    assert medians[ss.activity] > 2.5 * medians.drop(ss.activity).max()
    prev_act = w.groupby("case_id")["activity"].shift()
    assert (prev_act[w["activity"] == ss.activity] == ss.after).all()


def test_rework_loops_are_exactly_the_truth_cases(sim_big) -> None:
    rw = sim_big.truth.rework
    df = sim_big.log.df
    reopened = df.loc[df["activity"] == "Reopened", "case_id"].value_counts()
    assert set(reopened.index) == set(rw.cases)
    assert {c: int(v) for c, v in reopened.items()} == rw.loops
    assert 0.06 <= rw.share <= 0.12
    paths = _paths(sim_big)
    for cid in rw.cases[:50]:
        acts = [a for a, _ in paths[cid]]
        i = acts.index("Reopened")
        assert acts[i - 1] == "Solution proposed" and acts[i + 1] == "Work started"


def test_deviations_are_the_only_cases_leaving_the_journey(sim_big) -> None:
    dv = sim_big.truth.deviations
    allowed = {tuple(p) for p in dv.allowed_transitions}
    assert allowed == allowed_transitions()
    paths = _paths(sim_big)
    deviating = set(dv.all_cases)
    assert 0.04 <= dv.share <= 0.10
    for cid, path in paths.items():
        acts = [a for a, _ in path]
        pairs = set(zip(acts, acts[1:], strict=False))
        if cid in deviating:
            assert pairs - allowed, cid
        else:
            assert pairs <= allowed, (cid, pairs - allowed)
    for cid in dv.cases["skipped_triage"]:
        assert "Triage" not in [a for a, _ in paths[cid]]
    for cid in dv.cases["closed_without_solution"]:
        acts = [a for a, _ in paths[cid]]
        assert "Solution proposed" not in acts and "Resolved" not in acts and acts[-1] == "Closed"
    steps = [s["activity"] for s in dv.intended_journey if not s["optional"]]
    assert steps == ["Ticket created", "Triage", "Assign to team", "Work started", "Solution proposed", "Resolved",
                     "Closed"]


def test_knowledge_gap_intent_takes_far_longer(sim_big) -> None:
    kg = sim_big.truth.knowledge_gap
    ct = sim_big.log.case_table()
    ct["hours"] = (ct["end"] - ct["start"]).dt.total_seconds() / 3600.0
    owner = {i.name: i.team for i in INTENTS}
    slow = ct.loc[ct["intent"] == kg.intent, "hours"].median()
    peers = ct.loc[(ct["intent"] != kg.intent) & (ct["intent"].map(owner) == kg.team), "hours"].median()
    assert slow / peers == pytest.approx(kg.measured_throughput_ratio, rel=0.01)
    assert slow / peers > 1.5
    others = ct.groupby("intent")["hours"].median().drop(kg.intent)
    assert slow > others.max()


def test_drift_variant_only_in_last_week(sim_big) -> None:
    dr = sim_big.truth.drift
    df = sim_big.log.df
    bot = df[df["activity"] == dr.activity]
    assert set(bot["case_id"]) == set(dr.cases) and len(dr.cases) > 10
    assert (bot["timestamp"] >= pd.Timestamp(dr.week_start, tz="UTC")).all()
    assert dr.week_index == sim_big.truth.weeks - 1
    assert 0.1 <= dr.share_of_week <= 0.4


def test_channel_transfers_change_event_channel(sim_big) -> None:
    df = sim_big.log.df
    n_channels = df.groupby("case_id")["channel"].nunique()
    moved = set(n_channels[n_channels > 1].index)
    # Self-service views are on the portal anyway; a transfer is the only way a case changes channel.
    assert moved == set(sim_big.truth.channel_transfers)


def test_ticket_text_is_varied_noisy_and_carries_pii(sim_big) -> None:
    t = sim_big.tickets
    cases = sim_big.cases
    assert t["body"].nunique() > 0.95 * len(t)
    assert t["subject"].nunique() > 60
    words = t["body"].str.split().str.len()
    assert words.min() <= 10 and words.max() >= 40
    assert 0.2 <= cases["has_typo"].mean() <= 0.4
    pii = t["body"].str.contains(r"[\w.]+@[\w.]+\.\w+|\+44 7700 900\d{3}|\(\d{3}\) 555-01\d{2}", regex=True)
    assert (pii == cases["has_pii"]).all()
    assert 0.25 <= pii.mean() <= 0.45
    # A typo really changes a word: re-rendering without typos gives different text for those tickets.
    clean = simulate(n_cases=3000, seed=11, config=SimConfig(typo_share=0.0))
    changed = clean.tickets["body"] != t["body"]
    assert (changed == cases["has_typo"]).all()


def test_intent_is_learnable_but_not_trivial(sim_big) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    t = sim_big.tickets
    text = (t["subject"] + " " + t["body"]).tolist()
    y = t["intent"].to_numpy()
    train, test = slice(0, 2000), slice(2000, None)
    x = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(text)
    # A linear model on TF-IDF (LinearSVC: same picture as logistic regression, 30x faster; LR is in the bench).
    clf = LinearSVC(C=1.0).fit(x[train], y[train])
    acc = float((clf.predict(x[test]) == y[test]).mean())
    assert 0.82 <= acc <= 0.96, acc
    # Vague tickets carry no intent signal: the model does far worse on them.
    vague = sim_big.cases["vague_text"].to_numpy()[test]
    hit = clf.predict(x[test]) == y[test]
    assert hit[vague].mean() < hit[~vague].mean() - 0.3


def test_truth_is_json_round_trippable(sim) -> None:
    d = sim.truth.to_dict()
    json.dumps(d, allow_nan=False)
    again = GroundTruth.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == json.loads(json.dumps(d))
    assert again.misrouting.cases == sim.truth.misrouting.cases


def test_sizing_and_bad_input() -> None:
    s = simulate_events(n_events=6000, seed=2)
    assert abs(s.log.n_events - 6000) / 6000 < 0.1
    one = simulate(n_cases=1, seed=1)
    assert one.log.n_cases == 1 and len(one.tickets) == 1
    json.dumps(one.truth.to_dict(), allow_nan=False)  # strict JSON even when patterns are absent
    with pytest.raises(InvalidInput, match="n_cases"):
        simulate(n_cases=0)
    with pytest.raises(InvalidInput, match="weeks"):
        simulate(n_cases=10, weeks=1)
    with pytest.raises(InvalidInput, match="misroute_base"):
        simulate(n_cases=10, config=SimConfig(misroute_base=1.5))
    with pytest.raises(InvalidInput, match="knowledge_gap_intent"):
        simulate(n_cases=10, config=SimConfig(knowledge_gap_intent="nope"))


def test_confusers_point_to_another_team() -> None:
    owner = {i.name: i.team for i in INTENTS}
    for i in INTENTS:
        assert owner[i.confuser] != i.team, i.name
    assert re.fullmatch(r".* L[123]", "Billing L2")


def test_cli_writes_events_tickets_and_truth(tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from api.commands import simulate as simulate_cmd

    app = typer.Typer()
    simulate_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root (makes `simulate` a sub-command)."""

    out = tmp_path / "sim"
    r = CliRunner().invoke(app, ["simulate", "--cases", "150", "--seed", "5", "--out", str(out), "--format", "both"])
    assert r.exit_code == 0, r.output
    events = pd.read_parquet(out / "events.parquet")
    direct = simulate(n_cases=150, seed=5)
    assert len(events) == direct.log.n_events == len(pd.read_csv(out / "events.csv"))
    assert events["case_id"].nunique() == 150
    assert len(pd.read_csv(out / "tickets.csv")) == 150
    truth = GroundTruth.from_dict(json.loads((out / "truth.json").read_text()))
    assert truth.misrouting.cases == direct.truth.misrouting.cases


def test_business_hours_option_moves_back_office_work_into_office_hours() -> None:
    s = simulate(n_cases=800, seed=4, config=SimConfig(business_hours=True))
    df = s.log.df
    office_acts = {"Work started", "Approval requested", "Approval granted", "Solution proposed", "Resolved"}
    back = df[df["activity"].isin(office_acts) & (df["group"] != "Service Desk L1")]
    ts = back["timestamp"]
    inside = (ts.dt.hour >= 8) & (ts.dt.hour < 18) & (ts.dt.day_of_week < 5)
    assert inside.all()
    front = df[df["activity"].isin(office_acts) & (df["group"] == "Service Desk L1")]["timestamp"]
    assert ((front.dt.hour < 8) | (front.dt.hour >= 18) | (front.dt.day_of_week >= 5)).any()  # L1 is 24/7
    same = df["case_id"].to_numpy()[1:] == df["case_id"].to_numpy()[:-1]
    assert (np.diff(df["timestamp"].dt.tz_localize(None).to_numpy().astype("int64"))[same] > 0).all()
    # The truth reports the waits the log really shows.
    w = _waits(df)
    med = w.loc[w["activity"] == "Approval granted", "wait_h"].median()
    assert med == pytest.approx(s.truth.slow_step.median_wait_hours, rel=0.01)
