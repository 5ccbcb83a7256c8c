"""The misroute model on the simulator, whose misroutes are planted (ambiguous wording borrowed from another
intent is misrouted far more often): it must rank misrouted tickets above the others and be calibrated on newer
tickets it never saw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.errors import InvalidInput
from insight.models.misroute import MisrouteModel, probability_scores
from insight.simulate import simulate
from insight.training import router_table, train_misroute


@pytest.fixture(scope="module")
def sim3k() -> Any:
    return simulate(n_cases=3000, seed=5)


def test_misroute_model_ranks_and_is_calibrated_on_newer_tickets(sim3k: Any) -> None:
    tm = train_misroute(log=sim3k.log, tickets=sim3k.tickets, seed=7, proxy=False, refit=False)
    m = tm.metrics["model"]
    base = tm.metrics["baseline_base_rate"]
    assert m["n"] == 600 and 0.05 < m["positive_rate"] < 0.5
    assert m["auc"] > 0.68  # planted pattern learned (0.5 = no ranking)
    assert m["brier"] < base["brier"] - 0.01  # better than predicting the training base rate for everyone
    assert m["ece"] < 0.07  # calibrated: per decile of predictions, observed rate close to the mean prediction
    # The planted truth: misrouted tickets whose text borrowed another intent's wording get clearly higher risk.
    table, cats, text = router_table(log=sim3k.log, tickets=sim3k.tickets)
    test = table.iloc[-600:]
    p = tm.model.predict_proba(test[cats + [text]])
    truth = sim3k.truth.misrouting
    ambiguous = test.index.isin(set(truth.ambiguous_cases))
    assert ambiguous.sum() >= 10
    assert p[ambiguous].mean() > 2 * p[~test["misrouted"].astype(bool).to_numpy()].mean()


def test_records_and_frames_give_the_same_probabilities(sim3k: Any) -> None:
    table, cats, text = router_table(log=sim3k.log, tickets=sim3k.tickets)
    cols = cats + [text]
    model = MisrouteModel(categorical=cats, text=text, C=1.0).fit(table.iloc[:2000][cols],
                                                                 table.iloc[:2000]["misrouted"].astype(bool))
    rows = table.iloc[2000:2100][cols]
    records = rows.to_dict("records")
    records[0]["product"] = "a product never seen"
    records[1].pop("channel")  # absent = missing
    frame = rows.copy()
    frame.iloc[0, frame.columns.get_loc("product")] = "a product never seen"
    frame.iloc[1, frame.columns.get_loc("channel")] = None
    assert np.allclose(model.predict_proba(records), model.predict_proba(frame), atol=1e-12)
    raw = np.asarray(model.model_.predict_proba(model._design(frame))[:, 1])
    assert np.allclose(model.raw_proba(frame), raw, atol=1e-12)
    assert model.calibration_ in ("platt", "isotonic")


def test_probability_scores_on_known_values() -> None:
    s = probability_scores([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert s.auc == 1.0 and s.brier == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert probability_scores([1, 1], [0.5, 0.5]).auc is None


def test_too_few_cases_is_a_clear_error(sim3k: Any) -> None:
    table, cats, text = router_table(log=sim3k.log, tickets=sim3k.tickets)
    small = table.iloc[:100]
    with pytest.raises(InvalidInput, match="too few cases"):
        MisrouteModel(categorical=cats, text=text).fit(small[cats + [text]], small["misrouted"].astype(bool))
    with pytest.raises(InvalidInput, match="calibration"):
        MisrouteModel(categorical=cats, text=text, calibration="magic").fit(
            table[cats + [text]], table["misrouted"].astype(bool))


def test_deployed_model_is_refitted_on_every_case_with_the_chosen_settings(sim3k: Any, tmp_path: Any) -> None:
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "registry")
    evaluated = train_misroute(log=sim3k.log, tickets=sim3k.tickets, seed=7, proxy=False, refit=False)
    deployed = train_misroute(log=sim3k.log, tickets=sim3k.tickets, seed=7, proxy=False, registry=reg)
    assert deployed.metrics["model"] == evaluated.metrics["model"]  # the figures describe the evaluated model
    assert deployed.model.C_ == evaluated.model.C_ and deployed.model.calibration_ == evaluated.model.calibration_
    meta = reg.read_metadata("misroute", deployed.version or "")
    assert meta.extra["refit_on_all_data"] is True and meta.extra["n_cases_refit"] == 3000
    assert meta.extra["n_cases_evaluated_train"] == 2400 and "newest 600" in meta.extra["evaluated_on"]

