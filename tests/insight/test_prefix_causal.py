"""Prefix features are causal: a prefix's row reads only its own events, on the pandas and the Python path.

Trace-level columns that name the whole case (variant labels, case ids, event counts) are never features, and
automatic feature choice never takes a trace-level attribute.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.models.next_activity import BigramBaseline, NextActivityPredictor
from insight.models.prefix_features import PrefixEncoder, feature_matrix, trace_attribute_problem

CREATION = ["intent", "segment", "priority", "product"]


@pytest.fixture(scope="module")
def sim():
    from insight.simulate import simulate

    return simulate(n_cases=300, seed=21, weeks=6)


@pytest.fixture(scope="module")
def messy(sim):
    """The simulated log with holes in every attribute (so values first appear at later events) and a numeric
    case attribute that is sometimes filled in late."""
    df = sim.log.df.copy()
    rng = np.random.default_rng(4)
    n = len(df)
    for col in ("resource", "group", "intent", "segment", "product"):
        df[col] = df[col].astype(object)
        df.loc[rng.random(n) < 0.25, col] = None
    codes = pd.factorize(df["case_id"])[0]
    items = rng.integers(1, 9, size=codes.max() + 1).astype(float)
    df["n_items"] = np.where(rng.random(n) < 0.4, np.nan, items[codes])
    return df


def _encoders(messy):
    train = messy.iloc[: len(messy) // 2]
    return [
        PrefixEncoder(case_attributes=[*CREATION, "n_items"]).fit(train),
        PrefixEncoder(case_attributes=["segment", "n_items"], time_trend=True, k=3, max_categories=4).fit(train),
    ]


def _random_events(rng, case_rows: pd.DataFrame, activities: list[str], n: int, case_id: str, *,
                   ties: bool = True) -> list[dict]:
    """n events after the case's last one (same time or later), with random, missing or unseen attribute values.

    An event at the same time as the case's last one comes after it by input position, so `ties=False` (strictly
    later times) is used when the input rows are shuffled."""
    last = case_rows["timestamp"].max() if len(case_rows) else pd.Timestamp("2026-03-01", tz="UTC")
    out = []
    pool = {"resource": ["A1", "A2", "never-seen agent"], "group": ["Billing", "L2 Support", "Somewhere new"],
            "intent": ["refund", "new intent"], "segment": ["gold", "basic"], "product": ["P1", "P9"],
            "priority": ["high", "low"]}
    for _ in range(n):
        last = last + timedelta(minutes=float(rng.choice([0.0 if ties else 0.5, 3.0, 90.0, 3000.0])))
        ev = {"case_id": case_id, "activity": str(rng.choice([*activities, "A step never seen"])),
              "timestamp": last, "channel": "email", "lifecycle": "complete"}
        for col, values in pool.items():
            ev[col] = None if rng.random() < 0.3 else str(rng.choice(values))
        ev["n_items"] = float(rng.integers(1, 20)) if rng.random() < 0.5 else np.nan
        out.append(ev)
    return out


def _rows(ps) -> pd.DataFrame:
    """The feature rows keyed by case id and prefix length."""
    keys = [f"{c}#{n}" for c, n in zip(ps.case_id, ps.prefix_len, strict=True)]
    return ps.X.set_axis(pd.Index(keys, dtype=object))


def _check_extension(enc: PrefixEncoder, before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Rows of `before`'s prefixes are identical inside `after` (both paths), and the two paths agree."""
    by_method = {}
    for method in ("pandas", "python"):
        old, new = enc.transform(before, method=method), enc.transform(after, method=method)
        a, b = _rows(old), _rows(new).loc[_rows(old).index]
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        by_method[method] = new
    pd.testing.assert_frame_equal(by_method["pandas"].X, by_method["python"].X, check_exact=True)
    # The event-dict path the live service uses gives the same matrix.
    m = enc.encode_events(after.to_dict("records"))
    assert np.array_equal(m.values, feature_matrix(by_method["python"].X), equal_nan=True)


def test_appending_events_never_changes_earlier_prefixes(messy):
    """Property test, seeded: random cut points, random appended events (to existing and new cases)."""
    rng = np.random.default_rng(12)
    ids = messy["case_id"].unique()
    activities = sorted(messy["activity"].astype(str).unique())
    trials = 0
    for enc in _encoders(messy):
        for trial in range(15):
            picked = rng.choice(ids, size=int(rng.integers(1, 6)), replace=False)
            part = messy[messy["case_id"].isin(picked)]
            cut = part.groupby("case_id", sort=False).cumcount() < rng.integers(1, 8)
            before = part[cut.to_numpy()].reset_index(drop=True)
            shuffle = trial % 4 == 1
            extra = []
            for cid in picked:
                extra += _random_events(rng, before[before["case_id"] == cid], activities,
                                        int(rng.integers(1, 5)), cid, ties=not shuffle)
            if trial % 3 == 0:
                extra += _random_events(rng, before.iloc[:0], activities, 2, f"new-{trial}", ties=not shuffle)
            after = pd.concat([before, pd.DataFrame(extra)], ignore_index=True)
            if shuffle:  # input row order does not matter (the original events keep their relative order)
                after = pd.concat([before, after.iloc[len(before):].sample(frac=1.0, random_state=trial)],
                                  ignore_index=True)
            _check_extension(enc, before, after)
            trials += 1
    assert trials == 30


def test_whole_log_truncated_then_completed(messy):
    """Every case cut at a random point, then its real later events appended: on the log scale too."""
    rng = np.random.default_rng(5)
    enc = _encoders(messy)[0]
    pos = messy.groupby("case_id", sort=False).cumcount().to_numpy()
    limit = rng.integers(1, 6, size=len(messy))
    limit = pd.Series(limit).groupby(messy["case_id"].to_numpy()).transform("first").to_numpy()
    before = messy[pos < limit].reset_index(drop=True)
    assert len(before) < len(messy) and len(messy) <= 5000
    _check_extension(enc, before, messy)


def test_planted_lookahead_attribute_is_not_in_the_first_prefix(messy):
    """A value that only appears at a later event (event and declared case attribute) is invisible before it."""
    enc = PrefixEncoder(case_attributes=["segment", "n_items"], event_attributes=["resource", "group"]).fit(messy)
    t0 = pd.Timestamp("2026-04-01 09:00", tz="UTC")
    agent, team, segment = (str(messy[c].dropna().iloc[0]) for c in ("resource", "group", "segment"))
    case = pd.DataFrame({
        "case_id": ["late"] * 3, "activity": ["Ticket created", "Assigned", "Resolved"],
        "timestamp": [t0, t0 + timedelta(hours=1), t0 + timedelta(hours=5)],
        "resource": [None, None, agent], "group": [None, team, team],
        "segment": [None, None, segment], "n_items": [np.nan, np.nan, 4.0],
    })
    for method in ("pandas", "python"):
        X = enc.transform(case, method=method).X
        first = X.iloc[0]
        for col in ("first_resource", "last_resource", "first_group", "last_group", "case_segment", "case_n_items"):
            assert pd.isna(first[col]), (method, col, first[col])
        assert pd.isna(X.iloc[1]["case_segment"]) and X.iloc[1]["first_group"] == team
        assert X.iloc[2]["case_segment"] == segment and X.iloc[2]["case_n_items"] == 4.0
        assert X.iloc[2]["first_resource"] == agent


def _disco_log(sim) -> EventLog:
    """The simulated log as a Disco export gives it: variant label and index repeated on every event."""
    df = sim.log.df.copy()
    seqs = df.groupby("case_id", sort=False)["activity"].agg(tuple)
    rank = {s: i + 1 for i, s in enumerate(seqs.value_counts().index)}
    per_case = seqs.map(rank)
    df["variant-index"] = df["case_id"].map(per_case).astype(int)
    df["variant"] = "Variant " + df["variant-index"].astype(str)
    df["route"] = "R" + (df["variant-index"] * 7).astype(str)  # a variant under an innocent name
    df["case_copy"] = df["case_id"]
    df["n_steps"] = df.groupby("case_id", sort=False)["activity"].transform("size")
    return EventLog(df, name="disco-like", case_attributes=[*sim.log.case_attributes, "variant", "variant-index",
                                                             "route", "case_copy", "n_steps"])


def test_trace_naming_columns_are_refused_even_when_declared(sim):
    log = _disco_log(sim)
    for col, why in (("variant", "variant"), ("variant-index", "variant"), ("route", "one to one"),
                     ("case_copy", "case id"), ("n_steps", "number of events")):
        assert trace_attribute_problem(log.df, col) is not None, col
        with pytest.raises(InvalidInput, match=why) as err:
            PrefixEncoder(case_attributes=["segment", col]).fit(log)
        assert repr(col) in str(err.value) and "refused" in str(err.value)
        with pytest.raises(InvalidInput, match=repr(col)):
            PrefixEncoder(event_attributes=["resource", col]).fit(log)
    for col in CREATION:
        assert trace_attribute_problem(log.df, col) is None, col
    # The refusal message a user sees for a Disco variant column.
    with pytest.raises(InvalidInput) as err:
        NextActivityPredictor(case_attributes=["variant"]).fit(log)
    assert str(err.value) == ("case feature 'variant' is refused as a prefix feature: it names the case's variant, "
                              "i.e. its complete sequence of activities, known only when it ends")


def test_default_features_never_take_trace_level_attributes(sim):
    log = _disco_log(sim)
    enc = PrefixEncoder().fit(log)
    assert enc.case_attributes_ == [] and set(enc.event_attributes_) == {"resource", "group"}
    assert not any("variant" in f or "route" in f or "n_steps" in f for f in enc.feature_names_)
    # A trace-level column passed as an event attribute would show the trace's value from the first event on.
    with pytest.raises(InvalidInput, match="trace-level attribute"):
        PrefixEncoder(event_attributes=["segment"]).fit(log)
    declared = PrefixEncoder(case_attributes=CREATION).fit(log)
    assert [f for f in declared.feature_names_ if f.startswith("case_")] == [f"case_{c}" for c in CREATION]
    with pytest.raises(InvalidInput, match="not a column"):
        PrefixEncoder(case_attributes=["no_such_field"]).fit(log)


def test_bigram_baseline_is_last_activity_to_most_frequent_follower():
    prefixes = [("a",), ("a", "b"), ("a",), ("a", "c"), ("x",), ("a",)]
    targets = ["b", "<END>", "c", "<END>", "b", "b"]
    bigram = BigramBaseline().fit(prefixes, targets)
    assert list(bigram.predict([("z", "a"), ("b",), ("never",), ()])) == ["b", "<END>", "b", "b"]


def test_cli_writes_metrics_and_refit_metadata(tmp_path):
    import typer
    from typer.testing import CliRunner

    from api.commands import train as train_cmd
    from insight.eventlog import write_log
    from insight.models.registry import ModelRegistry
    from insight.simulate import simulate

    sim = simulate(n_cases=260, seed=3, weeks=4)
    path = write_log(sim.log, tmp_path / "events.parquet")
    app = typer.Typer()
    train_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in sub-command mode
        """Nothing."""

    reg = tmp_path / "registry"
    out = tmp_path / "next.json"
    res = CliRunner().invoke(app, ["train", "next-activity", str(path), "--case-features", "intent,segment",
                                   "--metrics-out", str(out), "--registry", str(reg), "--seed", "3"])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    for key in ("accuracy", "baseline_bigram_accuracy", "baseline_majority_accuracy"):
        assert 0.0 <= m[key] <= 1.0, (key, m)
    assert m["accuracy"] > m["baseline_majority_accuracy"] and m["n_cases"] == 52
    meta = ModelRegistry(reg).load("next_activity").metadata
    assert meta.extra["refit_on_all_data"] is True and meta.extra["n_cases_refit"] == 260
    assert meta.extra["n_cases_evaluated_train"] == 208 and meta.extra["case_features"] == ["intent", "segment"]
    assert meta.metrics["accuracy"] == m["accuracy"]

    out = tmp_path / "remaining.json"
    res = CliRunner().invoke(app, ["train", "remaining-time", str(path), "--metrics-out", str(out), "--no-save"])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["mae_hours"] > 0 and r["baseline_median_per_prefix_length_mae_hours"] > 0

    res = CliRunner().invoke(app, ["train", "next-activity", str(path), "--case-features", "case_id", "--no-save"])
    assert res.exit_code == 2 and "'case_id'" in res.output


@pytest.mark.realdata
def test_disco_export_variant_columns_are_not_features(shared_data):
    """Helpdesk as Disco exports it (CSV and XES): variant columns are trace-level, never chosen, refused."""
    from insight.eventlog import ingest, read_log

    csv = ingest(shared_data / "process_logs/helpdesk/helpdesk_finale_attributes.csv.gz", preset="helpdesk_csv",
                 pseudonym_key="k")
    xes = read_log(shared_data / "process_logs/helpdesk/rama2021_split/test_Helpdesk.xes.gz", preset="helpdesk_xes")
    for log in (csv, xes):
        variants = [c for c in log.df.columns if "variant" in c.lower()]
        assert variants and set(variants) <= set(log.case_attributes), (variants, log.case_attributes)
        enc = PrefixEncoder().fit(log)
        assert enc.case_attributes_ == [] and enc.event_attributes_ == ["resource"], enc.feature_names_
        for col in variants:
            with pytest.raises(InvalidInput, match="variant"):
                PrefixEncoder(case_attributes=[col]).fit(log)
