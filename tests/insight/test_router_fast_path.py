"""The router's design matrix from plain records (live triage) is the one _design builds from a frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insight.models.router import TeamRouter
from insight.training import router_table


@pytest.fixture(scope="module")
def table():
    from insight.simulate import simulate

    sim = simulate(n_cases=500, seed=4, weeks=6)
    table, cats, text = router_table(log=sim.log, tickets=sim.tickets)
    table = table.reset_index(drop=True)
    rng = np.random.default_rng(8)
    n = len(table)
    # Rare values (infrequent categories at min_frequency=2), holes, and a numeric column with holes.
    table.loc[rng.choice(n, 6, replace=False), "product"] = [f"rare product {i}" for i in range(6)]
    table.loc[rng.random(n) < 0.1, "segment"] = None
    table["age_days"] = rng.integers(0, 900, size=n).astype(float)
    table.loc[rng.random(n) < 0.1, "age_days"] = np.nan
    return table, cats, text


def _probe_rows(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Held-out rows plus unseen values, missing values and numbers given as text, as the service may send."""
    rows = table[cols].tail(120).copy().astype(object).reset_index(drop=True)
    rows.loc[0:9, "product"] = "a product nobody saw"
    rows.loc[10:19, "channel"] = None
    rows.loc[20:24, "priority"] = np.nan
    rows.loc[25:29, "product"] = "rare product 1"
    rows.loc[40:44, "segment"] = ""  # empty is a value, not a hole
    if "age_days" in cols:
        rows.loc[30:34, "age_days"] = "17"
        rows.loc[35:39, "age_days"] = None
    return rows


@pytest.mark.parametrize("pairs,numeric", [(True, False), (False, True), (True, True)])
def test_records_give_the_frames_design_and_ranking(table, pairs, numeric):
    table, cats, text = table
    num = ["age_days"] if numeric else []
    cols = cats + num + [text]
    train = table.iloc[:-120]
    router = TeamRouter(categorical=cats, numeric=num, text=text, C=3.0, pair_features=pairs, seed=3)
    router.fit(train[cols], train["resolving_team"])
    assert any(c is not None for c in router.onehot_.infrequent_categories_)  # the shared column is exercised
    frame = _probe_rows(table, cols)
    records = frame.to_dict("records")
    A = router._design(frame)
    B = router._design_rows(records)
    assert A.shape == B.shape
    assert np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)
    assert np.array_equal(A.data, B.data)
    assert router.rank(frame, k=3, n_reasons=3) == router.rank(records, k=3, n_reasons=3)
    # One record at a time (the single-ticket path) and absent keys (= missing) too.
    for i in (0, 12, 33, 41):
        one = {c: v for c, v in records[i].items() if v is not None}
        assert router.rank([one]) == router.rank(frame.iloc[[i]])


def test_texts_with_no_shared_word_train_a_router_on_its_other_inputs(table):
    """Schemathesis's finding: a retrain over fuzzed tickets (every word in one ticket only) failed with
    scikit-learn's "After pruning, no terms remain"; the text becomes one always-zero column instead."""
    table, cats, text = table
    cols = cats + [text]
    train = table.iloc[:-120].copy()
    train[text] = [f"w{i}x unique{i}y" for i in range(len(train))]  # no word in two tickets
    router = TeamRouter(categorical=cats, text=text, C=3.0, seed=3).fit(train[cols], train["resolving_team"])
    assert list(router.tfidf_.get_feature_names_out()) == ["no shared words"]
    frame = _probe_rows(table, cols)
    assert router._design(frame).shape == router._design_rows(frame.to_dict("records")).shape
    assert router._design(frame).shape[1] == len(router.onehot_.get_feature_names_out()) + 1
    teams, _ = router.rank(frame, k=3)
    assert len(teams) == len(frame) and all(len(t) == 3 for t in teams)
    assert len(router.predict(table[cols].tail(120))) == 120
