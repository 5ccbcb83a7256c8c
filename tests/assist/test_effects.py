"""Agent actions ranked by mined effect, on the simulator with planted agent steps (known effects)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assist.effects import ActionEffects, EvidenceRule, rank_by_effect
from insight.simulate import SimConfig, simulate
from insight.simulate.config import AGENT_STEPS, best_step, planted_benefit

STATES = ("Ticket created", "Triage", "Assign to team", "Reassign", "Work started", "Escalate", "Customer replied",
          "Approval granted", "Solution proposed", "Reopened", "Resolved", "Closed", "Self-service article viewed")


@pytest.fixture(scope="module")
def planted():
    return simulate(n_cases=8000, seed=31, config=SimConfig(agent_steps=True))


@pytest.fixture(scope="module")
def effects(planted):
    return ActionEffects(level=0.95).fit(planted.log)


def test_planting_is_opt_in_and_leaves_a_seed_alone():
    plain = simulate(n_cases=300, seed=31)
    again = simulate(n_cases=300, seed=31, config=SimConfig(agent_steps=False, ticket_fields=False))
    pd.testing.assert_frame_equal(plain.log.df, again.log.df)
    assert plain.truth.agent_steps is None and "customer_name" not in plain.tickets.columns


def test_planted_steps_follow_work_started_and_the_truth_names_the_best(planted):
    df = planted.log.df
    names = {st.activity for steps in AGENT_STEPS.values() for st in steps}
    is_step = df["activity"].isin(names).to_numpy()
    # the event before every step is "Work started" or another step of the same case, by the same agent
    prev_act = df.groupby("case_id", sort=False)["activity"].shift(1).to_numpy()
    assert is_step.sum() > 5000 and all(p == "Work started" or p in names for p in prev_act[is_step])
    truth = planted.truth.agent_steps
    for intent, steps in AGENT_STEPS.items():
        assert truth.best[intent] == best_step(intent) == max(steps, key=planted_benefit).activity
    # a step's cases are exactly the cases whose log shows it
    some = truth.best["refund request"]
    assert set(truth.cases[some]) == set(df.loc[df["activity"] == some, "case_id"])


def test_process_states_are_not_actions(effects):
    assert not set(STATES) & set(effects.actions_)
    assert {"Wait for customer", "Approval requested"} <= set(effects.actions_)
    assert {st.activity for steps in AGENT_STEPS.values() for st in steps} <= set(effects.actions_)
    assert all(p == "Work started" for a, p in effects.decision_points_.items() if a != "Approval requested")


def test_mined_effects_find_the_planted_benefit(effects, planted):
    hits, clean_nulls, nulls = 0, 0, 0
    for intent, steps in AGENT_STEPS.items():
        mined = {st.activity: effects.effect(st.activity, intent) for st in steps}
        assert all(e is not None and e.group == intent and e.n_with + e.n_without > 300 for e in mined.values())
        best = min(mined.values(), key=lambda e: e.hours_change)
        hits += best.activity == best_step(intent) and best.hours_ci[1] < 0
        for st in steps:
            if st.hours_factor == 1.0 and st.reopen_factor == 1.0:
                nulls += 1
                e = mined[st.activity]
                clean_nulls += e.hours_ci[0] <= 0 <= e.hours_ci[1]
    assert hits >= 13, hits  # of 15 intents: the largest planted benefit is the largest mined one, interval < 0
    assert clean_nulls >= nulls - 2, (clean_nulls, nulls)  # a 95 % interval covers "no effect" for the nulls


def test_ranking_shows_only_evidence_excludes_done_and_demotes_rejected(effects):
    intent = "refund request"
    key = best_step(intent)
    rule = EvidenceRule(min_support=50)
    ranked = rank_by_effect(effects=effects, group=intent, guideline=[key, "Solution proposed"], rule=rule)
    assert ranked[0].activity == key and ranked[0].sources == ["guideline", "log"]
    assert all(r.enough and r.effect.support >= 50 for r in ranked)
    assert "Solution proposed" not in [r.activity for r in ranked]  # a milestone: no effect is mined for it
    hours = [r.effect.hours_change for r in ranked]
    assert hours == sorted(hours)
    assert key not in [r.activity for r in rank_by_effect(effects=effects, group=intent, done=[key], rule=rule)]
    demoted = rank_by_effect(effects=effects, group=intent, rule=rule, demoted=[key.lower()])
    assert demoted[-1].activity == key
    strict = rank_by_effect(effects=effects, group=intent, rule=EvidenceRule(min_support=10**6))
    assert strict == []
    # an intent the log never saw falls back to all tickets
    assert rank_by_effect(effects=effects, group="no such intent", rule=rule)


def test_bootstrap_interval_is_reproducible_and_level_widens_it(planted):
    small = planted.log.filter_cases(set(planted.tickets["case_id"].iloc[:1000]))
    a = ActionEffects(level=0.9).fit(small).effect("Wait for customer", None)
    b = ActionEffects(level=0.9).fit(small).effect("Wait for customer", None)
    c = ActionEffects(level=0.99).fit(small).effect("Wait for customer", None)
    assert a == b and a.group == "__all__"
    assert c.hours_ci[0] < a.hours_ci[0] < a.hours_change < a.hours_ci[1] < c.hours_ci[1]
    assert np.isclose(a.hours_change, a.hours_with - a.hours_without)


@pytest.mark.parametrize(("level", "shown"), [(0.999, "99.9% interval"), (0.95, "95% interval")])
def test_the_reason_names_the_interval_level_without_rounding_it_up(level: float, shown: str) -> None:
    from types import SimpleNamespace

    from assist.service import _effect_action

    effect = SimpleNamespace(group="__all__", hours_change=-5.0, decision_point="Triage", n_with=40, n_without=60,
                             hours_ci=(-8.0, -2.0), reopen_with=0.05, reopen_without=0.1, reopen_change=-0.05,
                             reopen_ci=(-0.1, 0.0))
    action = _effect_action(1, SimpleNamespace(effect=effect, activity="Check refund window", sources=["log"]),
                            level, {}, False)
    assert shown in action.why
    assert "100% interval" not in action.why
