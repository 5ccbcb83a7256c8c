"""The champion / challenger rule: a paired one-sided bound against a tolerance, and enough cases to tell."""

from __future__ import annotations

import numpy as np

from insight.models.gate import FAIL, PASS, TOO_FEW, GateRule, paired_check, task_verdict

RULE = GateRule(tolerance=0.02, z=1.645, min_cases=30)


def test_identical_models_pass_and_a_clearly_worse_one_fails():
    rng = np.random.default_rng(0)
    champ = rng.random(200) < 0.8
    same = paired_check(champ, champ.copy(), rule=RULE)
    assert same["verdict"] == PASS and same["difference"] == 0 and same["lower_bound"] == 0
    worse = champ.copy()
    worse[np.flatnonzero(champ)[:30]] = False  # 30 of 200 cases newly wrong: 15 points worse
    out = paired_check(champ, worse, rule=RULE)
    assert out["verdict"] == FAIL and out["difference"] == -0.15 and out["lower_bound"] < -0.15


def test_a_small_evaluation_cannot_tell_and_noise_within_it_is_not_a_pass():
    champ = np.array([True, False] * 10)
    assert paired_check(champ, champ, rule=RULE)["verdict"] == TOO_FEW  # 20 < 30 cases
    # 100 cases, the challenger fixes 5 and breaks 5: no better on average, the bound is far below -2 points.
    a = np.array([True] * 50 + [False] * 50)
    b = a.copy()
    b[:5] = False
    b[50:55] = True
    out = paired_check(a, b, rule=RULE)
    assert out["difference"] == 0 and out["verdict"] == FAIL and out["lower_bound"] < -0.02


def test_grouped_rows_count_cases_not_rows():
    # 10 cases of 5 prefixes each: 50 rows, 10 units: too few to tell.
    a = np.ones(50, dtype=bool)
    out = paired_check(a, a, rule=RULE, groups=np.repeat(np.arange(10), 5))
    assert out["n"] == 10 and out["n_rows"] == 50 and out["verdict"] == TOO_FEW


def test_task_verdict_needs_its_primary_metric():
    ok = {"verdict": PASS}
    assert task_verdict("router", {"team_accuracy": ok, "team_accuracy_reassigned": {"verdict": TOO_FEW}}) == PASS
    assert task_verdict("router", {"team_accuracy": {"verdict": TOO_FEW}}) == TOO_FEW
    assert task_verdict("router", {"team_accuracy": ok, "golden_team_accuracy": {"verdict": FAIL}}) == FAIL
