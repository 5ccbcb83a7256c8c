"""`deskpilot train intent` end to end: validation file, known out-of-scope rows, metrics JSON, stratified hold-out,
refit metadata, clear errors; and the simulator-trained model keeps the README's example ticket in scope."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from api.commands import train as train_cmd

METRIC_NAMES = {"in_scope_accuracy", "oos_recall", "oos_precision", "accuracy", "macro_f1", "threshold"}
COUNT_NAMES = {"n_train", "n_validation", "n_test", "n_test_in_scope", "n_test_oos", "n_flagged",
               "n_test_in_scope_flagged"}
README_TICKET = ("Charged twice for my order. Hi, my card was charged two times for order #55120 on Nimbus Pay. "
                 "Please refund the second payment. Reach me at jane.doe@example.com.")
FOREIGN = [
    "What is the boiling point of liquid nitrogen in kelvin?",
    "Give me a recipe for a vegetarian lasagne with spinach",
    "Who won the football world cup in 1998?",
    "Translate 'good morning' into Japanese please",
    "How many moons does Jupiter have?",
    "Write a short poem about autumn leaves",
    "What is the capital city of Australia?",
    "Recommend a good science fiction novel to read this summer",
    "How do I train for my first marathon?",
    "Explain the rules of chess to a child",
    "What time does the sun set in Oslo in June?",
    "Which wine goes well with grilled salmon?",
]


def _app() -> typer.Typer:
    app = typer.Typer()
    train_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root (makes `train` a sub-command)."""

    return app


def _tickets(cases: int, seed: int) -> pd.DataFrame:
    from insight.simulate import simulate

    t = simulate(n_cases=cases, seed=seed).tickets
    return pd.DataFrame({"text": t["subject"].astype(str) + ". " + t["body"].astype(str),
                         "label": t["intent"].astype(str)})


def _run(args: list[str]):
    return CliRunner().invoke(_app(), ["train", "intent", *args])


@pytest.mark.slow
def test_end_to_end_with_validation_known_oos_and_metrics_out(tmp_path):
    oos = lambda texts: pd.DataFrame({"text": texts, "label": "oos"})  # noqa: E731
    train = pd.concat([_tickets(260, 21), oos(FOREIGN[:3])], ignore_index=True)
    val = pd.concat([_tickets(100, 22), oos(FOREIGN[3:7])], ignore_index=True)
    test = pd.concat([_tickets(100, 23), oos(FOREIGN[7:])], ignore_index=True)
    for name, df in (("train", train), ("val", val), ("test", test)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "m.json"
    reg = tmp_path / "registry"
    r = _run([str(tmp_path / "train.csv"), "--validation", str(tmp_path / "val.csv"), "--test",
              str(tmp_path / "test.csv"), "--metrics-out", str(out), "--registry", str(reg)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert set(m) == METRIC_NAMES | COUNT_NAMES
    assert m["n_validation"] == len(val) and m["n_test"] == len(test) and m["n_test_oos"] == len(FOREIGN) - 7
    for k in METRIC_NAMES:
        assert 0.0 <= m[k] <= 1.0, (k, m[k])
    assert m["in_scope_accuracy"] >= 0.7 and m["oos_recall"] >= 0.6 and m["macro_f1"] >= 0.6
    assert m["n_test_in_scope_flagged"] <= 0.1 * m["n_test_in_scope"]
    assert "in_scope_accuracy" in r.output and "oos_recall" in r.output

    from insight.models.registry import ModelRegistry

    loaded = ModelRegistry(reg).load("intent")
    extra = loaded.metadata.extra
    assert extra["refit_on_all_data"] is True and extra["evaluated_on"] == "the given test set"
    assert extra["n_rows_deployed"] == len(train) + len(val) + len(test)
    assert extra["evaluated"]["oos_calibration"]["method"] == "validation"
    assert extra["evaluated"]["oos_calibration"]["oos_source"] == "known"
    assert extra["deployed_oos_calibration"]["method"] == "refit"
    assert "oos" not in set(loaded.model.classes_)  # known out-of-scope rows are examples, never a class


def test_label_sorted_file_without_test_holds_out_a_stratified_sample(tmp_path):
    df = _tickets(300, 31).sort_values("label", kind="stable")
    df.to_csv(tmp_path / "sorted.csv", index=False)
    out = tmp_path / "m.json"
    r = _run([str(tmp_path / "sorted.csv"), "--no-embeddings", "--no-save", "--metrics-out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert m["n_train"] + m["n_test"] == len(df) and 0.1 * len(df) <= m["n_test"] <= 0.3 * len(df)
    assert m["accuracy"] >= 0.6, m  # the last rows are one label: a tail hold-out would score ~0
    assert m["oos_recall"] is None and m["n_test_oos"] == 0
    assert "never seen in training" not in r.output


def test_unseen_test_label_is_warned(tmp_path):
    df = _tickets(200, 41)
    df.to_csv(tmp_path / "train.csv", index=False)
    test = pd.concat([df.sample(20, random_state=1), pd.DataFrame({"text": FOREIGN[:2], "label": "weather"})])
    test.to_csv(tmp_path / "test.csv", index=False)
    r = _run([str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"), "--no-embeddings", "--no-save"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "never seen in training" in text and "weather" in text


def test_bad_inputs_get_clear_errors(tmp_path):
    good = _tickets(120, 51)
    good.to_csv(tmp_path / "good.csv", index=False)
    pd.DataFrame({"body": ["a", "b"], "label": ["x", "y"]}).to_csv(tmp_path / "nocol.csv", index=False)
    pd.DataFrame({"text": ["reset my password", "password help"], "label": ["pw", "pw"]}).to_csv(
        tmp_path / "one.csv", index=False)
    pd.DataFrame({"text": ["where is my parcel"], "label": ["no such intent"]}).to_csv(
        tmp_path / "val.csv", index=False)
    cases = [
        ([str(tmp_path / "nocol.csv")], "needs a text column"),
        ([str(tmp_path / "one.csv")], "at least two distinct labels"),
        ([str(tmp_path / "missing.csv")], "does not exist"),
        ([str(tmp_path / "good.csv"), "--validation", str(tmp_path / "val.csv")], "never seen in training"),
        ([str(tmp_path / "good.csv"), "--max-in-scope-flagged", "1.5"], "max_in_scope_flagged"),
    ]
    for args, message in cases:
        r = _run([*args, "--no-embeddings", "--no-save"])
        assert r.exit_code == 2, (args, r.output)
        text = " ".join(r.output.split())  # rich wraps long messages
        assert message in text, (args, r.output)
        assert "Traceback" not in text


@pytest.mark.slow
def test_simulator_model_keeps_readme_ticket_and_fresh_tickets_in_scope(sim_small, embedder):
    from insight.simulate import simulate
    from insight.training import ticket_texts, train_intent

    t, texts = ticket_texts(sim_small.tickets)
    m = train_intent(texts=texts, labels=t["intent"].astype(str).tolist(), embedder=embedder, seed=7)
    model = m.model
    readme = model.predict_with_oos([README_TICKET])[0]
    assert not readme.out_of_scope, readme
    assert readme.label == "billing dispute"
    _, fresh = ticket_texts(simulate(n_cases=150, seed=1234).tickets)
    flagged = np.mean([p.out_of_scope for p in model.predict_with_oos(fresh)])
    assert flagged <= 0.1, flagged
    assert np.mean([p.out_of_scope for p in model.predict_with_oos(FOREIGN)]) >= 0.75
