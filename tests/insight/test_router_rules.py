"""The router against trivial rules: it serves a rule that the model cannot beat, wins where attributes carry the
signal, reports both on the same split (CLI --metrics-out), and a saved rule router ranks a live ticket."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.models.router import RULES, TeamRouter, TeamRule, rule_accuracies

T0 = pd.Timestamp("2026-01-05 08:00", tz="UTC")
FIRST_TEAMS = [f"Desk {c}" for c in "ABCDEFGH"]
RESOLVERS = ["Network L2", "Accounts L2", "Billing L2", "Apps L3", "Hardware L2"]
PRODUCTS = [f"product {i}" for i in range(12)]


def _ticket_log(*, n: int = 900, seed: int = 11, signal: str = "first_team", noise: float = 0.04) -> EventLog:
    """An incident log: each case is created in a first team (the dispatcher's pick), may be handed on, and is
    resolved and closed by its resolving team.

    signal="first_team": every first team escalates its tickets to one fixed resolver (4 % elsewhere), products
    say nothing. signal="product": the product decides the resolver (4 % elsewhere) and the dispatcher picks the
    first team at random.
    """
    rng = np.random.default_rng(seed)
    desk_to = {d: RESOLVERS[i % len(RESOLVERS)] for i, d in enumerate(FIRST_TEAMS)}
    product_to = {p: RESOLVERS[(3 * i + 1) % len(RESOLVERS)] for i, p in enumerate(PRODUCTS)}
    starts = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 120, n)), unit="D")
    rows = []
    for i, start in enumerate(starts):
        desk = FIRST_TEAMS[int(rng.integers(len(FIRST_TEAMS)))]
        product = PRODUCTS[int(rng.integers(len(PRODUCTS)))]
        channel = str(rng.choice(["phone", "email", "portal"]))
        team = desk_to[desk] if signal == "first_team" else product_to[product]
        if rng.random() < noise:
            team = RESOLVERS[int(rng.integers(len(RESOLVERS)))]
        case = f"INC{i:05d}"
        t = start
        attrs = {"product": product, "channel": channel}
        rows.append((case, "Created", t, desk, attrs))
        if team != desk:
            t += pd.Timedelta(hours=float(rng.uniform(1, 30)))
            rows.append((case, "Reassigned", t, team, attrs))
        t += pd.Timedelta(hours=float(rng.uniform(1, 48)))
        rows.append((case, "Resolved", t, team, attrs))
        t += pd.Timedelta(hours=float(rng.uniform(1, 24)))
        rows.append((case, "Closed", t, team, attrs))
    df = pd.DataFrame([{"case_id": c, "activity": a, "timestamp": t, "group": g, **x} for c, a, t, g, x in rows])
    return EventLog(df, name=f"planted-{signal}", case_attributes=[])


FEATURES = ["group", "product", "channel"]
FAST = {"C_grid": (1.0, 10.0), "pair_features": False}


@pytest.fixture(scope="module")
def rule_log() -> EventLog:
    return _ticket_log(signal="first_team")


def test_rules_are_servable_with_their_conditional_frequencies() -> None:
    first = ["Desk A", "Desk A", "Desk A", "Desk B", None, "Desk B", None]
    y = ["Net", "Net", "Apps", "Apps", "Net", "Apps", "Net"]
    rule = TeamRule("majority_given_first_team").fit(first, y)
    P = rule.proba(["Desk A", "Desk B", "Desk Z", None])
    assert list(rule.classes_) == ["Apps", "Net"]
    # Desk A: (1 + 3/7) / 4 for Apps, (2 + 4/7) / 4 for Net; unseen or missing first team: the global shares
    assert P[0].tolist() == pytest.approx([(1 + 3 / 7) / 4, (2 + 4 / 7) / 4])
    assert P[2].tolist() == pytest.approx([3 / 7, 4 / 7]) and P[3].tolist() == pytest.approx([3 / 7, 4 / 7])
    assert np.allclose(P.sum(axis=1), 1.0)
    assert list(rule.predict(["Desk A", "Desk B"])) == ["Net", "Apps"]
    stay = TeamRule("first_team").fit(first, y)
    assert list(stay.predict(["Net", "Desk Q", None])) == ["Net", "Desk Q", "Net"]  # stays, even if unseen
    acc = rule_accuracies(first, y, ["Desk A", "Desk B"], ["Net", "Net"])
    assert acc == {"majority_given_first_team": 0.5, "first_team": 0.0, "majority": 1.0}


def test_router_serves_the_rule_when_the_first_team_decides(rule_log: EventLog) -> None:
    from insight.training import train_router

    tm = train_router(log=rule_log, features=FEATURES, seed=3, params={**FAST, "history": False})
    m = tm.metrics
    assert m["first_team_column"] == "group"
    val = m["validation"]
    assert set(val) >= {"majority_given_first_team", "first_team", "majority", "model", "model+rule"}
    # Validation chooses: the served strategy is the best candidate there, never below the best rule.
    assert val[m["selected"]] == max(val.values())
    assert val[m["selected"]] >= max(val[r] for r in RULES)
    # On the newest cases it never does worse than the rule it could have served (same split, same cases).
    rule_acc = m["baseline_majority_given_first_team_accuracy"]
    assert rule_acc > 0.9
    assert m["accuracy"] >= rule_acc
    if m["selected"] == "majority_given_first_team":
        assert m["accuracy"] == rule_acc and any("does not beat" in w for w in m["warnings"])
    for name in ("accuracy", "accuracy_reassigned", "baseline_first_team_accuracy", "baseline_majority_accuracy"):
        assert 0.0 <= m[name] <= 1.0


def test_model_wins_where_attributes_carry_the_signal() -> None:
    from insight.training import train_router

    log = _ticket_log(signal="product", seed=12)
    m = train_router(log=log, features=FEATURES, seed=3, params={**FAST, "history": False}).metrics
    assert m["selected"] not in RULES
    best_rule = max(m[f"baseline_{r}_accuracy"] for r in RULES)
    assert m["accuracy"] > best_rule + 0.3, (m["accuracy"], best_rule)
    assert m["accuracy_reassigned"] > m["baseline_majority_given_first_team_accuracy_reassigned"] + 0.3
    assert not m["warnings"]


def test_rule_router_with_history_reports_frozen_and_live_memory(rule_log: EventLog) -> None:
    from insight.training import train_router

    m = train_router(log=rule_log, features=FEATURES, seed=3, params={**FAST, "history": True}).metrics
    assert m["memory"] == "live" and m["accuracy"] == m["accuracy_live_memory"]  # the service feeds the memory
    assert "accuracy_frozen_memory" in m and "model+history" in m["validation"]
    assert m["accuracy"] >= m["baseline_majority_given_first_team_accuracy"]
    fz = train_router(log=rule_log, features=FEATURES, seed=3, params={**FAST, "history": True},
                      live_memory=False).metrics
    assert fz["memory"] == "frozen" and fz["accuracy"] == fz["accuracy_frozen_memory"]
    assert fz["accuracy"] >= fz["baseline_majority_given_first_team_accuracy"]


def test_saved_rule_router_is_refitted_and_ranks_one_live_ticket(rule_log: EventLog, tmp_path) -> None:
    from insight.models.registry import ModelRegistry
    from insight.training import train_router

    reg = ModelRegistry(tmp_path / "reg")
    tm = train_router(log=rule_log, features=FEATURES, seed=3, registry=reg,
                      params={**FAST, "history": False, "strategy": "majority_given_first_team"})
    art = reg.load("router")
    extra = art.metadata.extra
    assert extra["refit_on_all_data"] is True and extra["selected"] == "majority_given_first_team"
    assert extra["n_cases_refit"] == extra["n_cases_evaluated_train"] + extra["n_cases_evaluated_test"]
    assert "newest 20%" in extra["evaluated_on"]
    router = pickle.loads(pickle.dumps(art.model))
    assert isinstance(router, TeamRouter) and router.strategy_ == "majority_given_first_team"
    assert tm.model.rule_.table_["Desk A"].sum() > 0
    # The live path: one record as routing/triage.py builds it (extra keys, no text), the desk as a custom field.
    tops, reasons = router.rank([{"channel": "email", "segment": None, "intent": None, "group": "Desk A",
                                  "product": "product 3", "__text__": "printer"}], k=3, n_reasons=3)
    assert [s.team for s in tops[0]][0] == "Network L2"  # Desk A escalates to Network L2 (see _ticket_log)
    assert tops[0][0].probability > 0.8 and sum(s.probability for s in tops[0]) <= 1.0 + 1e-9
    assert reasons == [["group=Desk A"]]
    unseen, _ = router.rank([{"group": "Desk nobody knows"}], k=1)
    assert unseen[0][0].probability < 0.5  # the global shares, not a confident guess


def test_cli_metrics_out_has_the_documented_names(rule_log: EventLog, tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from api.commands import train as train_cmd

    path = tmp_path / "log.csv"
    rule_log.df.to_csv(path, index=False)
    app = typer.Typer()
    train_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root (makes `train` a sub-command)."""

    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["train", "router", str(path), "--features", ",".join(FEATURES), "--no-history",
                                 "--no-save", "--metrics-out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    for name in ("accuracy", "accuracy_reassigned", "baseline_first_team_accuracy",
                 "baseline_majority_given_first_team_accuracy", "baseline_majority_accuracy"):
        assert 0.0 <= m[name] <= 1.0, name
    assert m["selected"] in m["validation"] and m["memory"] == "live"
    assert m["accuracy"] >= m["baseline_majority_given_first_team_accuracy"]
    r = CliRunner().invoke(app, ["train", "router", str(path), "--features", "group,nope", "--no-save"])
    assert r.exit_code == 2 and "nope" in r.output


def test_kept_candidates_are_scored_on_the_same_test_cases(rule_log: EventLog) -> None:
    from insight.training import train_router

    tm = train_router(log=rule_log, features=FEATURES, seed=3,
                      params={**FAST, "history": False, "keep_candidates": True})
    m, router = tm.metrics, tm.model
    assert set(m["test_candidates"]) == set(m["validation"])
    served = m["test_candidates"][m["selected"]]
    assert served["accuracy"] == m["accuracy"] and served["accuracy_reassigned"] == m["accuracy_reassigned"]
    # Each kept rule is the baseline rule itself (the `group` feature is the mined first team here).
    assert m["test_candidates"]["majority"]["accuracy"] == m["baseline_majority_accuracy"]
    assert (m["test_candidates"]["majority_given_first_team"]["accuracy"]
            == m["baseline_majority_given_first_team_accuracy"])
    probe = rule_log.df.groupby("case_id").head(1)[FEATURES].head(20)
    assert np.allclose(router.candidate_proba(probe, m["selected"]), router.predict_proba(probe))
    with pytest.raises(InvalidInput, match="not kept"):
        TeamRouter(categorical=["group"], C=1.0).fit(probe[["group"]], ["x", "y"] * 10).candidate_proba(
            probe[["group"]], "majority")


def test_triage_routes_a_ticket_with_a_rule_router(rule_log: EventLog) -> None:
    """routing/triage.py reads the router's top teams (rank) for the team, its confidence and the decision."""
    from insight.training import train_router
    from routing.models import DecisionThresholds, TicketIn
    from routing.triage import ModelBundle, decide_batch

    router = train_router(log=rule_log, features=FEATURES, seed=3,
                          params={**FAST, "history": False, "strategy": "majority_given_first_team"}).model
    tickets = [TicketIn(ticket_id="t-1", subject="VPN drops", channel="email", custom_fields={"group": "Desk A"}),
               TicketIn(ticket_id="t-2", subject="VPN drops", channel="email", custom_fields={"group": "Desk ?"})]
    known, unseen = decide_batch(bundle=ModelBundle(router=router, versions={"router": "v"}), tickets=tickets,
                                 thresholds=DecisionThresholds())
    assert known.team == "Network L2" and known.team_confidence > 0.85 and len(known.top_teams) == 3
    assert any("group=Desk A" in r for r in known.reasons)
    assert unseen.team_confidence < 0.5 and unseen.decision == "triage"  # the shares: nobody is confident
