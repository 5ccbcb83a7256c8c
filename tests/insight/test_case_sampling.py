"""Case samples for training at scale: whole cases, each start week's share kept, deterministic per seed, bad
arguments refused, and the trainers' sample option fits on the sample while scoring every test case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, EventLog
from insight.models.split import case_starts, sample_case_ids, sample_cases_by_window, split_log
from insight.simulate import simulate
from insight.training import train_next_activity, train_remaining_time, train_router


@pytest.fixture(scope="module")
def log() -> EventLog:
    return simulate(n_cases=3000, seed=5, weeks=12).log


def _week_shares(lg: EventLog, t0: pd.Timestamp) -> pd.Series:
    starts = case_starts(lg)
    weeks = (starts - t0) // pd.Timedelta("7D")
    return weeks.value_counts(normalize=True).sort_index()


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.1])
def test_sample_keeps_whole_cases_and_each_weeks_share(log: EventLog, fraction: float) -> None:
    sample = sample_cases_by_window(log, fraction=fraction, window="7D", seed=3)
    full_sizes = log.df.groupby(log.df[CASE_ID].astype(str)).size()
    got_sizes = sample.df.groupby(sample.df[CASE_ID].astype(str)).size()
    # Every kept case has all of its events, and the events are the log's own rows.
    assert (got_sizes == full_sizes.loc[got_sizes.index]).all()
    assert len(sample.df) == int(full_sizes.loc[got_sizes.index].sum())
    assert sample.n_cases == round(log.n_cases * fraction)
    t0 = case_starts(log).min()
    full, got = _week_shares(log, t0), _week_shares(sample, t0).reindex(_week_shares(log, t0).index, fill_value=0.0)
    # Per week, the sample's share differs from the log's by at most one case's worth of rounding.
    assert (got - full).abs().max() <= 1.0 / sample.n_cases + 1e-9
    assert sample.case_attributes == log.case_attributes


def test_uniform_sample_drifts_more_than_the_stratified_one(log: EventLog) -> None:
    t0 = case_starts(log).min()
    full = _week_shares(log, t0)
    worst = {}
    for window in ("7D", None):
        gaps = [(_week_shares(sample_cases_by_window(log, fraction=0.1, window=window, seed=s), t0)
                 .reindex(full.index, fill_value=0.0) - full).abs().max() for s in range(5)]
        worst[window] = max(gaps)
    assert worst["7D"] < worst[None]


def test_sample_is_deterministic_per_seed_and_nested(log: EventLog) -> None:
    starts = case_starts(log)
    a = sample_case_ids(starts, fraction=0.2, seed=1)
    b = sample_case_ids(starts.sample(frac=1.0, random_state=0), fraction=0.2, seed=1)  # rows in another order
    c = sample_case_ids(starts, fraction=0.2, seed=2)
    assert set(a) == set(b)
    assert set(a) != set(c)
    assert set(sample_case_ids(starts, fraction=0.1, seed=1)) <= set(a)
    pd.testing.assert_frame_equal(sample_cases_by_window(log.df, fraction=0.2, seed=1),
                                  sample_cases_by_window(log.df, fraction=0.2, seed=1))


def test_max_cases_and_whole_log(log: EventLog) -> None:
    assert sample_cases_by_window(log, max_cases=250, seed=1).n_cases == 250
    assert sample_cases_by_window(log, max_cases=10 * log.n_cases) is log
    assert sample_cases_by_window(log, fraction=1.0) is log


@pytest.mark.parametrize(("kwargs", "field", "says"), [
    ({"fraction": 0.0}, "fraction", "(0, 1]"),
    ({"fraction": 1.5}, "fraction", "(0, 1]"),
    ({"fraction": -0.1}, "fraction", "(0, 1]"),
    ({"fraction": float("nan")}, "fraction", "(0, 1]"),
    ({"fraction": "half"}, "fraction", "(0, 1]"),
    ({"max_cases": 0}, "max_cases", "positive integer"),
    ({"max_cases": 2.5}, "max_cases", "positive integer"),
    ({}, "fraction", "exactly one"),
    ({"fraction": 0.5, "max_cases": 10}, "max_cases", "exactly one"),
    ({"fraction": 0.5, "window": "a fortnight"}, "window", "fixed duration"),
    ({"fraction": 0.5, "window": "-7D"}, "window", "positive duration"),
])
def test_bad_arguments_are_refused(log: EventLog, kwargs: dict, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        sample_cases_by_window(log, **kwargs)
    assert says in err.value.message
    assert err.value.context["field"] == field


def test_trainers_refuse_a_bad_fraction(log: EventLog) -> None:
    with pytest.raises(InvalidInput, match=r"\(0, 1\]"):
        train_next_activity(log=log, sample_fraction=2.0, refit=False)


def test_next_activity_trains_on_the_sample_and_scores_every_test_case(log: EventLog, tmp_path) -> None:
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(tmp_path)
    train, test = split_log(log, test_fraction=0.2)
    got = train_next_activity(log=log, sample_fraction=0.3, params={"n_estimators": 40}, seed=3, registry=reg)
    assert got.metrics["n_cases"] == test.n_cases  # every test case scored, none sampled away
    assert got.metrics["accuracy"] > got.metrics["baseline_majority_accuracy"]
    meta = reg.read_metadata("next_activity", str(got.version))
    sample = meta.extra["train_sample"]
    assert sample["n_cases_before_sample"] == train.n_cases
    assert sample["n_cases_sampled"] == round(train.n_cases * 0.3)
    # The deployed model is refitted on train + test sampled by the same rule, not on every case.
    assert meta.extra["n_cases_refit"] == got.model.n_cases_fit_ == round(log.n_cases * 0.3)
    pred = got.model.predict(test)
    assert len(pred) == got.metrics["n_prefixes"]
    assert set(pred) <= set(got.model.classes_)


def test_remaining_time_with_max_train_cases(log: EventLog) -> None:
    params = {"n_estimators": 30}
    full = train_remaining_time(log=log, params=params, refit=False)
    part = train_remaining_time(log=log, params=params, max_train_cases=600, refit=False)
    assert full.metrics["n_cases"] == part.metrics["n_cases"]  # the same test cases
    assert part.model.n_cases_fit_ == 600 < full.model.n_cases_fit_
    assert np.isfinite(part.metrics["mae_hours"])
    first = log.df[log.df[CASE_ID].isin(log.df[CASE_ID].unique()[:5])]
    assert (part.model.predict(first) >= 0).all()


def test_router_trains_on_a_sample(log: EventLog, tmp_path) -> None:
    from insight.models.registry import ModelRegistry
    from insight.training import creation_frame

    feats = ["channel", "segment", "priority", "product"]
    reg = ModelRegistry(tmp_path)
    full = train_router(log=log, features=feats, seed=3, refit=False)
    got = train_router(log=log, features=feats, sample_fraction=0.4, seed=3, registry=reg, refit=False)
    assert got.metrics["n_cases"] == full.metrics["n_cases"]  # the same test cases
    extra = reg.read_metadata("router", str(got.version)).extra
    assert extra["n_cases_evaluated_train"] == extra["train_sample"]["n_cases_sampled"]
    assert extra["n_cases_evaluated_train"] == round(0.4 * extra["train_sample"]["n_cases_before_sample"])
    rows = creation_frame(log, feats).iloc[:3]
    assert len(got.model.predict(rows[feats])) == 3
