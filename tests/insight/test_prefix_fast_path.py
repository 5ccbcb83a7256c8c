"""The small-input prefix encoder (plain Python, used by live triage) gives exactly the pandas path's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidEventLog, InvalidInput
from insight.models.prefix_features import PrefixEncoder, PrefixSet, feature_matrix
from insight.models.remaining_time import RemainingTimePredictor

TARGETS = ("case_id", "prefix_len", "next_activity", "remaining_hours", "elapsed_hours", "case_start")


@pytest.fixture(scope="module")
def sim():
    from insight.simulate import simulate

    return simulate(n_cases=300, seed=5, weeks=6)


@pytest.fixture(scope="module")
def messy(sim):
    """The simulated log with holes, unseen values, an unseen activity and a numeric case attribute."""
    df = sim.log.df.copy()
    rng = np.random.default_rng(3)
    n = len(df)
    for col in ("resource", "group", "segment", "product"):
        df[col] = df[col].astype(object)
        df.loc[rng.random(n) < 0.15, col] = None
        df.loc[rng.random(n) < 0.05, col] = "never-seen-" + col
    df.loc[rng.random(n) < 0.03, "activity"] = "Unseen step"
    codes = pd.factorize(df["case_id"])[0]
    items = rng.integers(1, 9, size=codes.max() + 1).astype(float)
    items[rng.random(len(items)) < 0.2] = np.nan
    df["n_items"] = items[codes]
    return df


def _assert_same(a: PrefixSet, b: PrefixSet) -> None:
    pd.testing.assert_frame_equal(a.X, b.X, check_exact=True)
    for name in TARGETS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert a.sequences == b.sequences


def _case_slices(df: pd.DataFrame, n: int, seed: int) -> list[pd.DataFrame]:
    """Small inputs like the service sees: one new ticket (its first event), short prefixes, a few whole cases."""
    rng = np.random.default_rng(seed)
    ids = df["case_id"].unique()
    out = []
    for i in range(n):
        picked = rng.choice(ids, size=1 + i % 3, replace=False)
        part = df[df["case_id"].isin(picked)]
        keep = part.groupby("case_id", sort=False).cumcount() < rng.integers(1, 12)
        part = part[keep.to_numpy()]
        if i % 4 == 3:  # any row order: both paths sort by case, time, position
            part = part.sample(frac=1.0, random_state=i)
        out.append(part.reset_index(drop=True))
    return out


@pytest.mark.parametrize("params", [
    {},
    {"time_trend": True},
    {"timing": False, "k": 3},
    {"max_categories": 3, "max_bag_activities": 5, "time_trend": True},
])
def test_python_path_matches_pandas_on_simulated_prefixes(sim, messy, params):
    enc = PrefixEncoder(case_attributes=["intent", "segment", "priority", "product", "n_items"], **params)
    enc.fit(messy.iloc[: len(messy) // 2])
    assert "n_items" in enc.numeric_ and "segment" in enc.categories_
    for part in _case_slices(messy, 60, seed=len(params)):
        fast = enc.transform(part, method="python", with_sequences=True)
        _assert_same(enc.transform(part, method="pandas", with_sequences=True), fast)
        # The matrix the fast path hands to LightGBM is the frame's, converted as LightGBM converts it.
        events = part.to_dict("records")
        m = enc.encode_events(events)
        assert np.array_equal(m.values, feature_matrix(fast.X), equal_nan=True)
        assert list(m.case_id) == list(fast.case_id) and np.array_equal(m.prefix_len, fast.prefix_len)


def test_whole_log_same_on_both_paths(sim, messy):
    enc = PrefixEncoder(time_trend=True, case_attributes=["intent", "segment", "product", "n_items"]).fit(messy)
    assert len(messy) > 2000
    _assert_same(enc.transform(messy, method="pandas", with_sequences=True),
                 enc.transform(messy, method="python", with_sequences=True))
    shuffled = messy.sample(frac=1.0, random_state=1)
    _assert_same(enc.transform(messy, method="pandas"), enc.transform(shuffled))


def test_first_events_of_new_tickets(sim):
    """Live triage: each new ticket is a one-event case, timestamps as datetimes (aware or naive)."""
    enc = PrefixEncoder(time_trend=True).fit(sim.log)
    tickets = sim.tickets.head(200)
    base = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
    events = []
    for i, r in enumerate(tickets.itertuples()):
        when = base + timedelta(hours=7 * i, seconds=i)
        if i % 3 == 1:
            when = when.astimezone(timezone(timedelta(hours=-5)))
        elif i % 3 == 2:
            when = when.replace(tzinfo=None)  # naive = UTC, as pd.to_datetime(utc=True) reads it
        events.append({"case_id": f"t-{i}", "activity": "Ticket created", "timestamp": when,
                       "intent": r.intent if i % 5 else None, "segment": r.segment, "priority": r.priority,
                       "product": r.product if i % 7 else "a product nobody saw", "group": r.first_team,
                       "resource": None})
    m = enc.encode_events(events)
    df = pd.DataFrame(events)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    ref = enc.transform(df, method="pandas")
    assert np.array_equal(m.values, feature_matrix(ref.X), equal_nan=True)
    assert list(m.case_id) == list(ref.case_id)
    assert (m.prefix_len == 1).all() and (m.elapsed_hours == 0).all()


def test_predictions_from_the_matrix_are_the_frames(sim, messy):
    train = messy.iloc[: len(messy) // 2]
    model = RemainingTimePredictor(case_attributes=["intent", "segment", "priority", "product", "n_items"],
                                   n_estimators=60, learning_rate=0.2).fit(train)
    for part in _case_slices(messy.iloc[len(messy) // 2:], 25, seed=9):
        ps = model.encoder_.transform(part, method="pandas")
        m = model.prefix_matrix(part.to_dict("records"))
        assert np.array_equal(model.predict(m), model.predict(ps))
        assert np.array_equal(model.predict_breach_proba(m), model.predict_breach_proba(ps))
    assert model.predict(model.prefix_matrix([])).shape == (0,)


def test_inputs_the_python_path_cannot_take(sim):
    enc = PrefixEncoder().fit(sim.log)
    part = sim.log.df.head(5).copy()
    paris = part.assign(timestamp=part["timestamp"].dt.tz_convert("Europe/Paris"))
    with pytest.raises(InvalidInput, match="without pandas"):
        enc.transform(paris, method="python")
    _assert_same(enc.transform(paris, method="pandas"), enc.transform(paris))  # auto falls back to pandas
    with pytest.raises(InvalidEventLog, match="timestamp"):
        enc.encode_events([{"case_id": "a", "activity": "Ticket created"}])


def test_an_absent_attribute_column_reads_as_missing_on_every_path(messy):
    """A ticket without a field the training log had (a custom field not sent) encodes as that field missing."""
    enc = PrefixEncoder(case_attributes=["intent", "segment", "product", "n_items"]).fit(messy)
    part = messy[messy["case_id"].isin(messy["case_id"].unique()[:5])].reset_index(drop=True)
    lacking = part.drop(columns=["product", "n_items", "resource"])
    blank = part.assign(product=None, n_items=np.nan, resource=None)
    expected = enc.transform(blank, method="pandas")
    for method in ("pandas", "python"):
        _assert_same(expected, enc.transform(lacking, method=method))
    m = enc.encode_events(lacking.to_dict("records"))
    assert np.array_equal(m.values, feature_matrix(expected.X), equal_nan=True)


def test_attribute_names_that_clean_to_the_same_name_keep_features_of_their_own(messy):
    """Schemathesis's finding: custom fields "a b" and "a_b" (and names of non-ASCII letters) both became `case_a_b`;
    the pandas path kept one column twice, the Python path one column once, and the served remaining-time model
    refused every ticket (LightGBM: 105 features, trained on 95)."""
    df = messy.copy()
    df["a b"] = df["segment"]
    df["a_b"] = df["priority"]
    df["ümlaut"], df["ßeta"] = df["product"], df["intent"]
    attrs = ["a b", "a_b", "ümlaut", "ßeta", "n_items"]
    enc = PrefixEncoder(case_attributes=attrs).fit(df)
    assert len(set(enc.feature_names_)) == len(enc.feature_names_)
    assert len({enc.stems_[c] for c in attrs}) == len(attrs)
    for part in _case_slices(df, 12, seed=9):
        fast = enc.transform(part, method="python")
        _assert_same(enc.transform(part, method="pandas"), fast)
        assert list(fast.X.columns) == enc.feature_names_
        m = enc.encode_events(part.to_dict("records"))
        assert np.array_equal(m.values, feature_matrix(fast.X), equal_nan=True)
    # a model trained on the big (pandas) path predicts the one-event tickets of the small one
    model = RemainingTimePredictor(case_attributes=attrs, n_estimators=20).fit(df)
    first = df.groupby("case_id", sort=False).head(1).head(5).to_dict("records")
    assert model.predict(model.prefix_matrix(first)).shape == (5,)
