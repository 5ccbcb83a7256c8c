"""IntentClassifier: estimator contract, calibration, persistence with the embedder, out-of-scope, few-shot."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core.errors import InvalidInput, ModelArtifactError, ModelNotReady
from insight.models.intent import OOS_SCORES, IntentClassifier, IntentPrediction

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
]


class _Counting:
    """Wraps the real embedder, memoising vectors so the module's fits embed each ticket once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self._mem: dict[str, np.ndarray] = {}

    def encode(self, texts, *, show_progress=False):
        todo = sorted({t for t in texts if t not in self._mem})
        if todo:
            self._mem.update(zip(todo, self.inner.encode(todo), strict=True))
        return np.stack([self._mem[t] for t in texts])


class _OtherEmbedder:
    name = "some-other-model@0123456789ab"
    fingerprint = "0123456789ab" * 5

    def encode(self, texts, *, show_progress=False):
        return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)


@pytest.fixture(scope="module")
def tickets():
    """Simulator tickets (subject + body, planted intent); first 75 % train, rest test."""
    from insight.simulate import simulate

    t = simulate(n_cases=400, seed=3).tickets
    text = (t["subject"].astype(str) + ". " + t["body"].astype(str)).tolist()
    y = t["intent"].astype(str).to_numpy()
    cut = int(len(text) * 0.75)
    return text[:cut], y[:cut], text[cut:], y[cut:]


@pytest.fixture(scope="module")
def cached_embedder(embedder):
    return _Counting(embedder)


@pytest.fixture(scope="module")
def fitted(tickets, cached_embedder):
    tr_x, tr_y, _, _ = tickets
    return IntentClassifier(embedder=cached_embedder, seed=7).fit(tr_x, tr_y)


def test_contract_and_calibrated_probabilities(tickets):
    tr_x, tr_y, te_x, _ = tickets
    model = IntentClassifier(seed=7)
    with pytest.raises(ModelNotReady):
        model.predict(te_x[:2])
    assert model.fit(tr_x, tr_y) is model
    assert list(model.classes_) == sorted(set(tr_y))
    proba = model.predict_proba(te_x)
    assert proba.shape == (len(te_x), len(model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(model.predict(te_x), model.classes_[proba.argmax(axis=1)])
    assert 0.0 < model.temperature_ < 10.0
    assert 0.0 < model.oos_threshold_ < 1.0
    assert model.oos_calibration_.score == "proba"  # no embedder: no nearest-neighbour similarity
    preds = model.predict_with_oos(te_x[:5], top_k=3)
    assert all(isinstance(p, IntentPrediction) and len(p.top_k) == 3 for p in preds)
    assert all(p.top_k[0].probability >= p.top_k[1].probability >= p.top_k[2].probability for p in preds)


def test_bad_input_named():
    with pytest.raises(InvalidInput, match="two distinct labels"):
        IntentClassifier().fit(["a b", "c d"], ["x", "x"])
    with pytest.raises(InvalidInput, match="labels"):
        IntentClassifier().fit(["a b", "c d"], ["x"])
    with pytest.raises(InvalidInput, match="texts"):
        IntentClassifier().fit("just one string", ["x"])


def test_deterministic_with_seed(tickets):
    tr_x, tr_y, te_x, _ = tickets
    a = IntentClassifier(seed=11).fit(tr_x, tr_y)
    b = IntentClassifier(seed=11).fit(tr_x, tr_y)
    np.testing.assert_array_equal(a.predict_proba(te_x), b.predict_proba(te_x))
    assert a.oos_threshold_ == b.oos_threshold_ and a.temperature_ == b.temperature_


def test_separates_simulator_intents(fitted, tickets):
    _, _, te_x, te_y = tickets
    acc = float((fitted.predict(te_x) == te_y).mean())
    # The simulator's wording is ambiguous on purpose (borrowed cue sentences, vague tickets): ~0.9 is the ceiling
    # a TF-IDF model reaches; chance is ~0.07 over 15 intents.
    assert acc >= 0.85, acc


def test_pickle_round_trip_needs_same_embedder(fitted, tickets, cached_embedder):
    _, _, te_x, _ = tickets
    blob = pickle.dumps(fitted)
    assert len(blob) < 20_000_000
    loaded = pickle.loads(blob)
    assert loaded.embedder is None  # never pickled
    assert fitted.embedder is cached_embedder  # pickling did not strip the live model
    with pytest.raises(ModelArtifactError, match="set_embedder"):
        loaded.predict(te_x[:3])
    with pytest.raises(ModelArtifactError, match="embedder mismatch"):
        loaded.set_embedder(_OtherEmbedder())
    loaded.set_embedder(cached_embedder)
    np.testing.assert_allclose(loaded.predict_proba(te_x), fitted.predict_proba(te_x), atol=1e-6)
    assert loaded.embedder_fingerprint_ == cached_embedder.fingerprint


def test_out_of_scope_flagged_for_foreign_text(fitted, tickets):
    _, _, te_x, te_y = tickets
    foreign = fitted.predict_with_oos(FOREIGN)
    in_scope = fitted.predict_with_oos(te_x)
    foreign_rate = np.mean([p.out_of_scope for p in foreign])
    in_rate = np.mean([p.out_of_scope for p in in_scope])
    assert foreign_rate >= 0.8, foreign_rate
    # The objective flags at most max_in_scope_flagged (2 %) of held-out in-scope tickets; new tickets from the
    # same simulator should stay well inside 10 %.
    assert in_rate <= 0.1, in_rate
    cal = fitted.oos_calibration_
    assert cal.method == "inner_folds" and cal.n_oos > 0 and cal.oos_source == "pseudo (held-out intents)"
    assert cal.score in OOS_SCORES and set(cal.candidates) == set(OOS_SCORES)
    assert cal.in_scope_flagged <= cal.max_in_scope_flagged == 0.02
    assert cal.oos_recall == max(cal.candidates.values())
    labels = fitted.predict_labels_with_oos(FOREIGN, oos_label="NONE")
    assert (labels == "NONE").mean() == foreign_rate


def test_oos_score_is_public_and_matches_the_flag(fitted, tickets):
    _, _, te_x, _ = tickets
    scores = fitted.oos_score(te_x[:40] + FOREIGN)
    assert scores.shape == (40 + len(FOREIGN),) and ((scores >= 0) & (scores <= 1)).all()
    preds = fitted.predict_with_oos(te_x[:40] + FOREIGN)
    np.testing.assert_array_equal([p.out_of_scope for p in preds], scores < fitted.oos_threshold_)
    np.testing.assert_allclose([p.oos_score for p in preds], scores)
    # Foreign text looks less in scope than the simulator's own tickets.
    assert np.median(scores[40:]) < np.median(scores[:40])
    # A looser threshold flags more.
    assert sum(p.out_of_scope for p in fitted.predict_with_oos(te_x, threshold=0.5)) > sum(
        p.out_of_scope for p in fitted.predict_with_oos(te_x))


def test_known_oos_rows_are_examples_not_a_class(tickets, cached_embedder):
    tr_x, tr_y, te_x, _ = tickets
    x = list(tr_x) + FOREIGN[:6]
    y = list(tr_y) + ["oos"] * 6
    model = IntentClassifier(embedder=cached_embedder, seed=7).fit(x, y, oos_label="oos")
    assert "oos" not in set(model.classes_)
    assert "known" in model.oos_calibration_.oos_source
    assert "oos" not in set(model.predict(te_x + FOREIGN))
    labels = model.predict_labels_with_oos(FOREIGN[6:], oos_label="oos")
    assert (labels == "oos").mean() >= 0.75


def test_validation_file_chooses_threshold_and_refit_keeps_it(tickets, cached_embedder):
    tr_x, tr_y, te_x, te_y = tickets
    half = len(te_x) // 2
    val_x, val_y = te_x[:half] + FOREIGN[:5], list(te_y[:half]) + ["oos"] * 5
    model = IntentClassifier(embedder=cached_embedder, seed=7).fit(tr_x, tr_y, oos_label="oos",
                                                                    validation=(val_x, val_y))
    cal = model.oos_calibration_
    assert cal.method == "validation" and cal.oos_source == "known" and cal.n_oos == 5
    assert cal.n_in_scope == half and cal.in_scope_flagged <= 0.02
    refit = model.refit(list(tr_x) + val_x, list(tr_y) + val_y, oos_label="oos")
    assert refit.oos_calibration_.method == "refit" and refit.oos_threshold_ == model.oos_threshold_
    assert refit.oos_calibration_.score == cal.score
    assert len(refit.oos_reference_) == len(tr_x) + half  # cross-fitted in-scope scores of every in-scope row
    assert np.mean([p.out_of_scope for p in refit.predict_with_oos(te_x[half:])]) <= 0.1
    with pytest.raises(InvalidInput, match="never seen in training"):
        IntentClassifier(seed=7).fit(tr_x, tr_y, oos_label="oos", validation=(["x y"], ["no such intent"]))
    with pytest.raises(InvalidInput, match="two distinct labels besides"):
        IntentClassifier(seed=7).fit(["a b", "c d", "e f"], ["x", "x", "oos"], oos_label="oos")


def test_few_shot(tickets, cached_embedder):
    tr_x, tr_y, te_x, te_y = tickets
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(tr_y == c))[:8] for c in np.unique(tr_y)])
    model = IntentClassifier(embedder=cached_embedder, seed=7).fit([tr_x[i] for i in keep], tr_y[keep])
    acc = float((model.predict(te_x) == te_y).mean())
    assert acc >= 0.7, acc
    foreign_rate = np.mean([p.out_of_scope for p in model.predict_with_oos(FOREIGN)])
    assert foreign_rate >= 0.7, foreign_rate
