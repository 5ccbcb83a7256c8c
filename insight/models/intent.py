"""Intent classifier on ticket text with calibrated probabilities and out-of-scope detection.

One linear model (LinearSVC, one-vs-rest) over three blocks of features: TF-IDF word 1-2-grams, TF-IDF character
2-5-grams and the sentence embedding (all-MiniLM-L6-v2 by default) scaled by `embedding_weight`, so lexical cues and
meaning are weighed against each other in one fit (no separate models to average). Without an embedder it is a
TF-IDF-only model.

Probabilities are a softmax of the SVM scores with a temperature fitted on out-of-fold scores. The out-of-scope
threshold is fitted on out-of-fold data too, with *pseudo out-of-scope* examples: in every inner fold a group of
intents is left out of training, so their held-out examples play the part of tickets that fit no known intent. The
threshold maximises `(1 - oos_prior) * in-scope accuracy + oos_prior * out-of-scope recall` on those folds, so no test
data (and no real out-of-scope data) is needed. The score thresholded is, by default, the mean of the top calibrated
probability and the cosine similarity to the nearest training ticket ("mix"); "proba", "knn" and "auto" (best inner
objective) are the alternatives.

The embedder is never pickled: `__getstate__` drops it, the model keeps its name and fingerprint, and
`set_embedder()` refuses a different model (`ModelArtifactError`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from insight.errors import InvalidInput, ModelArtifactError, ModelNotReady

OUT_OF_SCOPE = "out_of_scope"
# Out-of-scope scores (higher = more in scope): top calibrated probability, cosine similarity of the nearest
# training ticket's embedding, and their average.
OOS_SCORES: tuple[str, ...] = ("proba", "knn", "mix")


class TextEmbedder(Protocol):
    """What the classifier needs from an embedder (insight.embedding.Embedder fits)."""

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class LabelScore:
    """One candidate intent and its calibrated probability."""

    label: str
    probability: float


@dataclass(frozen=True)
class IntentPrediction:
    """The intent for one ticket: best label, its probability, whether it fits no known intent, the top-k."""

    label: str
    confidence: float
    out_of_scope: bool
    top_k: list[LabelScore] = field(default_factory=list)


@dataclass(frozen=True)
class OOSCalibration:
    """How the out-of-scope threshold was chosen (from inner folds of the training data only)."""

    score: str
    threshold: float
    objective: float
    n_in_scope: int
    n_pseudo_oos: int
    in_scope_accuracy: float
    oos_recall: float
    method: str


def _mix(top_proba: np.ndarray, nn_sim: np.ndarray) -> np.ndarray:
    # Both live on [0, 1] for in-scope text; the average needs both to be high, which either alone does not.
    return 0.5 * (top_proba + nn_sim)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of softmax(scores / T) (golden-section on log T)."""
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        p = _softmax(scores / np.exp(log_t))
        return float(-np.log(np.clip(p[rows, y], 1e-12, None)).mean())

    lo, hi = np.log(1e-3), np.log(10.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def _check_texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise InvalidInput(f"{name} must be a sequence of strings, not one string", field=name)
    out = []
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            out.append("")
        elif not isinstance(t, str):
            raise InvalidInput(f"{name}[{i}] is {type(t).__name__}, expected str", field=name, row=i)
        else:
            out.append(t)
    return out


class IntentClassifier(ClassifierMixin, BaseEstimator):
    """Ticket-text intent classifier: TF-IDF word+char and sentence-embedding features, one linear SVM,
    temperature-calibrated probabilities and an out-of-scope threshold fitted on pseudo out-of-scope folds."""

    def __init__(
        self,
        *,
        embedder: TextEmbedder | None = None,
        # C=0.3 and embedding_weight=2.0: best 3-fold CV accuracy on Banking77 *train* (bench/predictors_intent.py).
        C: float = 0.3,
        embedding_weight: float = 2.0,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 5),
        char_min_df: int = 2,
        inner_folds: int = 4,
        oos_prior: float = 0.5,
        oos_quantile: float = 0.05,
        oos_score: str = "mix",
        max_iter: int = 5000,
        seed: int = 7,
    ) -> None:
        self.embedder = embedder
        self.C = C
        self.embedding_weight = embedding_weight
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.char_min_df = char_min_df
        self.inner_folds = inner_folds
        self.oos_prior = oos_prior
        self.oos_quantile = oos_quantile
        self.oos_score = oos_score
        self.max_iter = max_iter
        self.seed = seed

    # ---- persistence: the embedder is loaded from the model folder, never pickled ----

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["embedder"] = None
        return state

    def set_embedder(self, embedder: TextEmbedder) -> IntentClassifier:
        """Attach the embedder after loading; refuses one that differs from the model used in `fit`."""
        expected = getattr(self, "embedder_fingerprint_", None)
        if expected is None and hasattr(self, "classes_"):
            raise ModelArtifactError("this intent model was trained without embeddings; it takes no embedder")
        if expected is not None and embedder.fingerprint != expected:
            raise ModelArtifactError(
                f"embedder mismatch: intent model was trained with {self.embedder_name_} "
                f"(fingerprint {expected[:12]}), got {embedder.name} (fingerprint {embedder.fingerprint[:12]})"
            )
        self.embedder = embedder
        return self

    # ---- features ----

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        fitted = hasattr(self, "classes_")
        if fitted and self.embedder_fingerprint_ is None:
            return None
        if self.embedder is None:
            if fitted:
                raise ModelArtifactError(
                    f"intent model needs its embedder {self.embedder_name_}; call set_embedder() after loading"
                )
            return None
        return np.asarray(self.embedder.encode(texts), dtype=np.float32)

    def _new_vectorizers(self) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        word = TfidfVectorizer(ngram_range=tuple(self.word_ngrams), sublinear_tf=True, lowercase=True,
                               dtype=np.float32)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams), sublinear_tf=True,
                               lowercase=True, min_df=self.char_min_df, dtype=np.float32)
        return word, char

    def _stack(self, word: TfidfVectorizer, char: TfidfVectorizer, texts: list[str],
               emb: np.ndarray | None, *, fit: bool) -> csr_matrix:
        if fit:
            w = word.fit_transform(texts)
            try:
                c = char.fit_transform(texts)
            except ValueError:  # few tiny texts: no char n-gram reaches min_df
                char.set_params(min_df=1)
                c = char.fit_transform(texts)
        else:
            w, c = word.transform(texts), char.transform(texts)
        blocks = [w, c]
        if emb is not None:
            blocks.append(csr_matrix(emb * np.float32(self.embedding_weight)))
        return hstack(blocks, format="csr")

    def _svm(self) -> LinearSVC:
        return LinearSVC(C=self.C, max_iter=self.max_iter, random_state=self.seed)

    @staticmethod
    def _scores(svm: LinearSVC, X: csr_matrix) -> np.ndarray:
        d = svm.decision_function(X)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

    # ---- fit ----

    def fit(self, texts: Sequence[str], labels: Sequence[Any]) -> IntentClassifier:
        """Fit features, the linear model, the probability temperature and the out-of-scope threshold."""
        X_text = _check_texts(texts)
        y_raw = np.asarray([str(v) for v in labels], dtype=object)
        if len(y_raw) != len(X_text):
            raise InvalidInput(f"texts has {len(X_text)} rows but labels has {len(y_raw)}", field="labels")
        classes, y = np.unique(y_raw, return_inverse=True)
        if len(classes) < 2:
            raise InvalidInput("intent training needs at least two distinct labels", field="labels")
        if not 0.0 <= self.oos_prior < 1.0:
            raise InvalidInput(f"oos_prior must be in [0, 1), got {self.oos_prior}", field="oos_prior")

        emb = self._embed(X_text) if self.embedder is not None else None
        self.embedder_name_ = self.embedder.name if self.embedder is not None else None
        self.embedder_fingerprint_ = self.embedder.fingerprint if self.embedder is not None else None

        if self.oos_score not in OOS_SCORES + ("auto",):
            raise InvalidInput(f"oos_score must be one of {OOS_SCORES + ('auto',)}, got {self.oos_score!r}",
                               field="oos_score")
        if self.oos_score == "knn" and emb is None:
            raise InvalidInput("oos_score='knn' needs an embedder", field="oos_score")

        self.temperature_, in_scores, inner_ok, pseudo_scores = self._inner_folds(X_text, y, len(classes), emb)
        if self.oos_score == "auto":
            names = [n for n in OOS_SCORES if n in in_scores]
        else:
            # Without embeddings the nearest-neighbour half of "mix" does not exist: documented, recorded in
            # oos_calibration_.score.
            names = [self.oos_score if emb is not None else "proba"]
        # Which score separates pseudo out-of-scope best is decided on the inner folds, never on test data.
        cals = [self._choose_threshold(n, in_scores.get(n, np.zeros(0)), inner_ok, pseudo_scores.get(n, np.zeros(0)))
                for n in names]
        self.oos_calibration_ = max(cals, key=lambda c: c.objective if np.isfinite(c.objective) else -1.0)
        self.oos_threshold_ = self.oos_calibration_.threshold
        self.train_embeddings_ = emb if self.oos_calibration_.score in ("knn", "mix") else None

        self.word_vectorizer_, self.char_vectorizer_ = self._new_vectorizers()
        X = self._stack(self.word_vectorizer_, self.char_vectorizer_, X_text, emb, fit=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny few-shot sets
            self.svm_ = self._svm().fit(X, y)
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        return self

    def _inner_folds(
        self, texts: list[str], y: np.ndarray, n_classes: int, emb: np.ndarray | None
    ) -> tuple[float, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
        """Out-of-fold scores; in fold k the intents of group k are left out of training (pseudo out-of-scope).

        Returns the softmax temperature (fitted on in-scope out-of-fold rows), the out-of-scope scores of every
        in-scope row, whether its top intent is right, and the scores of every pseudo out-of-scope row.
        """
        counts = np.bincount(y, minlength=n_classes)
        n_splits = int(min(self.inner_folds, max(2, counts.max())))
        rng = np.random.default_rng(self.seed)
        # Left-out groups need at least two intents to remain in training.
        group = rng.permutation(n_classes) % n_splits if n_classes >= 3 else np.full(n_classes, -1)
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        score_rows: list[np.ndarray] = []
        y_rows: list[np.ndarray] = []
        pseudo_rows: list[np.ndarray] = []
        nn_in: list[np.ndarray] = []
        nn_pseudo: list[np.ndarray] = []
        text_arr = np.asarray(texts, dtype=object)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes with fewer members than folds are expected few-shot
            splits = list(skf.split(np.zeros(len(y)), y))
        for k, (tr, va) in enumerate(splits):
            left_out = group == k
            tr = tr[~left_out[y[tr]]]
            present = np.unique(y[tr])
            if len(present) < 2:
                continue
            word, char = self._new_vectorizers()
            Xtr = self._stack(word, char, text_arr[tr].tolist(), None if emb is None else emb[tr], fit=True)
            Xva = self._stack(word, char, text_arr[va].tolist(), None if emb is None else emb[va], fit=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                svm = self._svm().fit(Xtr, y[tr])
            s = self._scores(svm, Xva)
            full = np.full((len(va), n_classes), -np.inf)
            full[:, present] = s
            is_pseudo = left_out[y[va]]
            known = np.isin(y[va], present) & ~is_pseudo
            score_rows.append(full[known])
            y_rows.append(y[va][known])
            pseudo_rows.append(full[is_pseudo])
            if emb is not None:
                nn = (emb[va] @ emb[tr].T).max(axis=1)
                nn_in.append(nn[known])
                nn_pseudo.append(nn[is_pseudo])
        if not score_rows:
            return 1.0, {}, np.zeros(0, dtype=bool), {}
        oof = np.vstack(score_rows)
        oof_y = np.concatenate(y_rows)
        # Temperature on in-scope rows only; -inf columns become probability 0 in the softmax.
        t = _fit_temperature(oof, oof_y) if len(oof_y) else 1.0
        in_p = _softmax(oof / t)
        inner_ok = in_p.argmax(axis=1) == oof_y
        pseudo = np.vstack(pseudo_rows)
        pseudo_max = _softmax(pseudo / t).max(axis=1) if len(pseudo) else np.zeros(0)
        in_scores = {"proba": in_p.max(axis=1)}
        pseudo_scores = {"proba": pseudo_max}
        if emb is not None:
            for rows, out in ((nn_in, in_scores), (nn_pseudo, pseudo_scores)):
                out["knn"] = np.concatenate(rows)
                out["mix"] = _mix(out["proba"], out["knn"])
        return t, in_scores, inner_ok, pseudo_scores

    def _choose_threshold(self, score: str, inner_max: np.ndarray, inner_ok: np.ndarray,
                          pseudo_max: np.ndarray) -> OOSCalibration:
        """Threshold on one score: best prior-weighted accuracy on pseudo-OOS folds, else a quantile."""
        if len(inner_max) == 0:
            return OOSCalibration(score, 0.0, float("nan"), 0, 0, float("nan"), float("nan"), "none")
        if len(pseudo_max) == 0 or self.oos_prior == 0.0:
            thr = float(np.quantile(inner_max, self.oos_quantile)) if self.oos_prior > 0 else 0.0
            acc = float((inner_ok & (inner_max >= thr)).mean())
            return OOSCalibration(score, thr, acc, len(inner_max), 0, acc, float("nan"), "quantile")
        cands = np.unique(np.concatenate([inner_max, pseudo_max, [0.0]]))
        # For each candidate t: in-scope accuracy = correct and accepted; OOS recall = pseudo rejected (< t).
        ok_sorted = np.sort(inner_max[inner_ok])
        in_acc = (len(ok_sorted) - np.searchsorted(ok_sorted, cands, side="left")) / len(inner_max)
        oos_rec = np.searchsorted(np.sort(pseudo_max), cands, side="left") / len(pseudo_max)
        obj = (1 - self.oos_prior) * in_acc + self.oos_prior * oos_rec
        best = int(np.argmax(obj))
        return OOSCalibration(score, float(cands[best]), float(obj[best]), len(inner_max), len(pseudo_max),
                              float(in_acc[best]), float(oos_rec[best]), "pseudo_oos")

    # ---- inference ----

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise ModelNotReady("IntentClassifier is not fitted; call fit(texts, labels) or train the intent model")

    def _score_with_emb(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_fitted()
        X_text = _check_texts(texts)
        emb = self._embed(X_text)
        X = self._stack(self.word_vectorizer_, self.char_vectorizer_, X_text, emb, fit=False)
        return self._scores(self.svm_, X), emb

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Raw linear-model scores, shape (n, n_classes)."""
        return self._score_with_emb(texts)[0]

    def _proba_and_oos_score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        scores, emb = self._score_with_emb(texts)
        proba = _softmax(scores / self.temperature_)
        top = proba.max(axis=1)
        score = self.oos_calibration_.score
        if score == "proba" or len(proba) == 0:
            return proba, top
        assert emb is not None and self.train_embeddings_ is not None
        nn = np.empty(len(emb), dtype=np.float32)
        for i in range(0, len(emb), 1024):  # bounded memory for big batches against big training sets
            nn[i:i + 1024] = (emb[i:i + 1024] @ self.train_embeddings_.T).max(axis=1)
        return proba, (nn if score == "knn" else _mix(top, nn))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated class probabilities (rows sum to 1), columns in `classes_` order."""
        return _softmax(self.decision_function(texts) / self.temperature_)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Most probable known intent for each text (no out-of-scope rejection)."""
        scores = self.decision_function(texts)
        return self.classes_[scores.argmax(axis=1)]

    def predict_with_oos(self, texts: Sequence[str], *, top_k: int = 3,
                         threshold: float | None = None) -> list[IntentPrediction]:
        """Intent, confidence and out-of-scope flag (top probability below `oos_threshold_`) with the top-k."""
        proba, oos_score = self._proba_and_oos_score(texts)
        thr = self.oos_threshold_ if threshold is None else threshold
        k = max(1, min(top_k, len(self.classes_)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        out = []
        for i in range(len(proba)):
            top = [LabelScore(str(self.classes_[j]), float(proba[i, j])) for j in order[i]]
            out.append(IntentPrediction(label=top[0].label, confidence=top[0].probability,
                                        out_of_scope=bool(oos_score[i] < thr), top_k=top))
        return out

    def predict_labels_with_oos(self, texts: Sequence[str], *, oos_label: str = OUT_OF_SCOPE) -> np.ndarray:
        """Like `predict`, but out-of-scope texts get `oos_label`."""
        proba, oos_score = self._proba_and_oos_score(texts)
        labels = self.classes_[proba.argmax(axis=1)].astype(object)
        labels[oos_score < self.oos_threshold_] = oos_label
        return labels
