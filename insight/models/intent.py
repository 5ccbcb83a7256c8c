"""Intent classifier on ticket text with calibrated probabilities and a calibrated out-of-scope flag.

Classifier: one linear model (LinearSVC, one-vs-rest) over three blocks of features: TF-IDF word 1-2-grams, TF-IDF
character 2-5-grams and the sentence embedding (all-MiniLM-L6-v2 by default) scaled by `embedding_weight`, so lexical
cues and meaning are weighed against each other in one fit. Without an embedder it is a TF-IDF-only model.
Probabilities are a softmax of the SVM scores with a temperature fitted on held-out scores.

Out of scope. A ticket that fits none of the known intents should go to a person; an in-domain ticket should not.
Several *raw scores* say how in-scope a text looks (higher = more in scope):

- ``proba``: the top calibrated probability;
- ``knn``: the mean cosine similarity of the `knn_k` nearest training tickets' embeddings;
- ``mahalanobis``: minus the smallest Mahalanobis distance of the embedding to a class mean (class-conditional
  means, one shared covariance with Ledoit-Wolf shrinkage);
- ``mix``: the mean of ``proba`` and ``knn``;
- ``mix_or_knn``: the smaller of the ``mix`` and ``knn`` shares below (flags what either finds unusual).

The public *out-of-scope score* (`oos_score(texts)`) turns the chosen raw score into a share: the fraction of
held-out in-scope tickets (the calibration reference) whose raw score was lower. A ticket is flagged out of scope
when that share is below `oos_threshold_`, so the threshold reads as "flag what looks less in scope than the least
in-scope `oos_threshold_` of known in-scope tickets", whatever raw score was chosen.

Objective (stored as `OOS_OBJECTIVE` in `oos_calibration_`): on validation data, maximise out-of-scope recall
subject to flagging at most `max_in_scope_flagged` of the in-scope validation tickets (ties go to the lower
threshold). Flagging an in-scope ticket costs at most that ticket's accuracy, so in-scope accuracy falls by at most
`max_in_scope_flagged` against the same model without rejection; a helpdesk keeps its in-domain tickets out of
triage and rejects as much out-of-scope traffic as that budget allows. The raw score is chosen by the same objective
(highest out-of-scope recall at the budget) among the scores available (``proba`` only without an embedder) unless
`oos_method` names one.

Validation data, never test data:

- `fit(..., validation=(texts, labels))`: the model trained on the training rows scores the validation file; its
  in-scope rows are the reference (and fix the temperature), its rows labelled `oos_label` are the out-of-scope
  examples. Without such rows the score is chosen on inner folds of the training data (below) and the threshold on
  the validation file.
- otherwise inner folds of the training data: in fold k a model trained on the other folds scores the held-out
  in-scope rows (the reference), and a second model trained without a group of intents scores that group's held-out
  rows, which play the part of tickets that fit no known intent (*pseudo out-of-scope*). Known out-of-scope rows
  (labelled `oos_label`) are never a class; they are scored as out-of-scope examples in every fold, and the
  recall weighs them and the pseudo ones half each. Held-out intents are near neighbours of the kept ones: they
  reward the top probability and say nothing about text from other domains, which the nearest-neighbour scores
  catch, so without known examples the score is chosen between ``mix_or_knn`` and ``knn`` only.

`refit(texts, labels)` trains the deployed model on all the data with the chosen score and the same threshold; the
reference is re-derived from that data by cross-fitting (held-out in-scope scores of inner-fold models), so the
threshold keeps its meaning for the refitted model.

Public API: `predict_with_oos(texts)` (each prediction carries `out_of_scope` and `oos_score`), `oos_score(texts)`,
`oos_threshold_`, `oos_calibration_` (score, threshold, objective, budget, method, what it gave on validation) and
`predict_labels_with_oos(texts, oos_label=...)`.

The embedder is never pickled: `__getstate__` drops it, the model keeps its name and fingerprint, and
`set_embedder()` refuses a different model (`ModelArtifactError`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidInput, ModelArtifactError, ModelNotReady

OUT_OF_SCOPE = "out_of_scope"
# Raw out-of-scope scores (higher = more in scope); ties in the choice go to the earlier name.
OOS_SCORES: tuple[str, ...] = ("mix_or_knn", "mix", "knn", "mahalanobis", "proba")
# Combined scores: the smallest of their parts' p-values (flag when either part looks out of scope).
COMBINED: dict[str, tuple[str, ...]] = {"mix_or_knn": ("mix", "knn")}
# What held-out intents (pseudo out-of-scope) may choose from when no known out-of-scope examples exist.
PSEUDO_OOS_SCORES: tuple[str, ...] = ("mix_or_knn", "knn")
OOS_OBJECTIVE = ("maximise out-of-scope recall on validation subject to flagging at most max_in_scope_flagged of "
                 "the in-scope validation tickets; ties go to the lower threshold")
# progress(step, done, total): called as long steps advance ("embedding", "inner folds", "final fit").
Progress = Callable[[str, int, int], None]
_EMBED_CHUNK = 512


class TextEmbedder(Protocol):
    """What the classifier needs from an embedder (core.embedding.Embedder fits)."""

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
    """The intent for one ticket: best label, its probability, whether it fits no known intent, the top-k, and the
    out-of-scope score (share of held-out in-scope tickets that looked less in scope; flagged below the threshold)."""

    label: str
    confidence: float
    out_of_scope: bool
    top_k: list[LabelScore] = field(default_factory=list)
    oos_score: float | None = None


@dataclass(frozen=True)
class OOSCalibration:
    """How the out-of-scope score and threshold were chosen (validation data only), with what they gave there."""

    score: str
    threshold: float
    objective: str
    max_in_scope_flagged: float
    method: str  # "validation", "inner_folds", "refit" or "quantile" (no out-of-scope examples to choose with)
    oos_source: str  # "known", "pseudo (held-out intents)", "known + pseudo", "none"
    n_in_scope: int
    n_oos: int
    in_scope_flagged: float
    in_scope_accuracy: float
    in_scope_accuracy_no_rejection: float
    oos_recall: float
    candidates: dict[str, float] = field(default_factory=dict)  # out-of-scope recall of each score at its threshold


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


@dataclass
class _EmbeddingStats:
    """What the embedding scores need from the training embeddings: the rows (kNN) and Gaussian class statistics."""

    ref: np.ndarray  # (m, d) training embeddings
    means_prec: np.ndarray  # (C, d) class means times the shared precision
    means_norm: np.ndarray  # (C,) mean' P mean
    prec: np.ndarray  # (d, d) shared precision


def _embedding_stats(emb: np.ndarray, y: np.ndarray) -> _EmbeddingStats:
    classes, inv = np.unique(y, return_inverse=True)
    means = np.zeros((len(classes), emb.shape[1]), dtype=np.float64)
    np.add.at(means, inv, emb.astype(np.float64))
    means /= np.bincount(inv)[:, None]
    centred = emb - means[inv]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prec = LedoitWolf(assume_centered=True).fit(centred).precision_
    mp = means @ prec
    return _EmbeddingStats(ref=np.ascontiguousarray(emb, dtype=np.float32), means_prec=mp.astype(np.float32),
                           means_norm=np.einsum("cd,cd->c", mp, means).astype(np.float32),
                           prec=prec.astype(np.float32))


def _knn_score(x: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine similarity of the k nearest reference rows (rows are L2-normalised)."""
    k = max(1, min(k, len(ref)))
    out = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), 1024):  # bounded memory for big batches against big training sets
        s = x[i:i + 1024] @ ref.T
        out[i:i + 1024] = (s.max(axis=1) if k == 1 else
                           np.partition(s, s.shape[1] - k, axis=1)[:, -k:].mean(axis=1))
    return out


def _mahalanobis_score(x: np.ndarray, st: _EmbeddingStats) -> np.ndarray:
    """Minus the smallest squared Mahalanobis distance to a class mean."""
    quad = np.einsum("nd,nd->n", x @ st.prec, x)
    d = quad[:, None] - 2.0 * (x @ st.means_prec.T) + st.means_norm[None, :]
    return -d.min(axis=1)


@dataclass
class _Fitted:
    """One fitted feature pipeline + SVM (+ embedding statistics): the final model or an inner-fold model."""

    word: TfidfVectorizer
    char: TfidfVectorizer
    svm: LinearSVC
    present: np.ndarray  # class indices the SVM knows (columns of its scores)
    stats: _EmbeddingStats | None


def _pvalues(reference: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Share of the (sorted) reference strictly below each raw score."""
    return np.searchsorted(reference, raw, side="left") / max(1, len(reference))


def _choose_threshold(reference: np.ndarray, oos_raw: np.ndarray, budget: float,
                      weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """Threshold on the p-value scale: highest out-of-scope recall (weighted by `weights` when given) with at most
    `budget` of the reference flagged, the lowest such threshold on ties. Returns (threshold, in-scope flagged
    share, out-of-scope recall)."""
    n = len(reference)
    if n == 0:
        return 0.0, 0.0, float("nan")
    p_in = _pvalues(reference, reference)
    grid = np.arange(n + 1) / n
    flagged = np.searchsorted(np.sort(p_in), grid, side="left") / n
    allowed = grid[flagged <= budget + 1e-12]
    j_max = allowed.max() if len(allowed) else 0.0
    if len(oos_raw) == 0:
        t = float(j_max)
        return t, float(np.mean(p_in < t)), float("nan")
    p_oos = _pvalues(reference, oos_raw)
    order = np.argsort(p_oos, kind="stable")
    p_oos = p_oos[order]
    w = np.full(len(p_oos), 1.0 / len(p_oos)) if weights is None else weights[order] / weights.sum()
    cand = allowed
    recall = np.concatenate([[0.0], np.cumsum(w)])[np.searchsorted(p_oos, cand, side="left")]
    best = recall.max()
    t = float(cand[np.flatnonzero(recall >= best - 1e-12)[0]])
    return t, float(np.mean(p_in < t)), float(best)


class IntentClassifier(ClassifierMixin, BaseEstimator):
    """Ticket-text intent classifier: TF-IDF word+char and sentence-embedding features, one linear SVM,
    temperature-calibrated probabilities and an out-of-scope score with a threshold chosen on validation data."""

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
        max_in_scope_flagged: float = 0.02,
        oos_method: str = "auto",
        knn_k: int = 5,
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
        self.max_in_scope_flagged = max_in_scope_flagged
        self.oos_method = oos_method
        self.knn_k = knn_k
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

    def _embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray | None:
        fitted = hasattr(self, "classes_")
        if fitted and self.embedder_fingerprint_ is None:
            return None
        if self.embedder is None:
            if fitted:
                raise ModelArtifactError(
                    f"intent model needs its embedder {self.embedder_name_}; call set_embedder() after loading"
                )
            return None
        if progress is None or len(texts) <= _EMBED_CHUNK:
            return np.asarray(self.embedder.encode(texts), dtype=np.float32)
        parts = []
        for i in range(0, len(texts), _EMBED_CHUNK):
            parts.append(np.asarray(self.embedder.encode(texts[i:i + _EMBED_CHUNK]), dtype=np.float32))
            progress("embedding", min(len(texts), i + _EMBED_CHUNK), len(texts))
        return np.vstack(parts)

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

    def _fit_parts(self, texts: list[str], y: np.ndarray, emb: np.ndarray | None) -> _Fitted:
        word, char = self._new_vectorizers()
        X = self._stack(word, char, texts, emb, fit=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny few-shot sets
            svm = self._svm().fit(X, y)
        return _Fitted(word, char, svm, np.unique(y), None if emb is None else _embedding_stats(emb, y))

    def _fold_scores(self, f: _Fitted, texts: list[str], emb: np.ndarray | None,
                     n_classes: int) -> np.ndarray:
        """SVM scores over all classes (classes the fold model does not know get -inf)."""
        s = self._scores(f.svm, self._stack(f.word, f.char, texts, emb, fit=False))
        full = np.full((len(texts), n_classes), -np.inf)
        full[:, f.present] = s
        return full

    def _raw_scores(self, proba: np.ndarray, emb: np.ndarray | None, stats: _EmbeddingStats | None,
                    names: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        top = proba.max(axis=1) if proba.shape[1] else np.zeros(len(proba))
        knn = None
        names = list(dict.fromkeys(p for n in names for p in COMBINED.get(n, (n,))))
        for n in names:
            if n == "proba":
                out[n] = top
            elif emb is None or stats is None:
                continue
            elif n in ("knn", "mix"):
                knn = _knn_score(emb, stats.ref, self.knn_k) if knn is None else knn
                out[n] = knn if n == "knn" else 0.5 * (top + knn)
            elif n == "mahalanobis":
                out[n] = _mahalanobis_score(emb, stats)
        return out

    # ---- fit ----

    def _candidates(self, has_emb: bool) -> list[str]:
        if self.oos_method == "auto":
            return [n for n in OOS_SCORES if has_emb or n == "proba"]
        if self.oos_method != "proba" and not has_emb:
            raise InvalidInput(f"oos_method={self.oos_method!r} needs an embedder", field="oos_method")
        return [self.oos_method]

    def _check_params(self) -> None:
        if self.oos_method not in OOS_SCORES + ("auto",):
            raise InvalidInput(f"oos_method must be one of {OOS_SCORES + ('auto',)}, got {self.oos_method!r}",
                               field="oos_method")
        if not 0.0 <= self.max_in_scope_flagged < 1.0:
            raise InvalidInput(f"max_in_scope_flagged must be in [0, 1), got {self.max_in_scope_flagged}",
                               field="max_in_scope_flagged")

    def fit(self, texts: Sequence[str], labels: Sequence[Any], *, oos_label: str | None = None,
            validation: tuple[Sequence[str], Sequence[Any]] | None = None,
            progress: Progress | None = None) -> IntentClassifier:
        """Fit features, the linear model, the probability temperature, the out-of-scope score and threshold.

        Rows labelled `oos_label` are known out-of-scope examples (never a class). `validation` = (texts, labels)
        is where the temperature, score and threshold are chosen; without it, inner folds of the training data.
        `progress(step, done, total)` is told how long steps advance.
        """
        self._check_params()
        return self._fit(texts, labels, oos_label=oos_label, validation=validation, progress=progress,
                         fixed_threshold=None)

    def refit(self, texts: Sequence[str], labels: Sequence[Any], *, oos_label: str | None = None,
              progress: Progress | None = None) -> IntentClassifier:
        """A new model on all these rows with this model's chosen score and threshold (see the module docstring)."""
        self._check_fitted()
        params = {**self.get_params(), "oos_method": self.oos_calibration_.score}
        new = IntentClassifier(**params)
        return new._fit(texts, labels, oos_label=oos_label, validation=None, progress=progress,
                        fixed_threshold=self.oos_threshold_)

    def _labels(self, texts: Sequence[str], labels: Sequence[Any], oos_label: str | None,
                name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        X_text = _check_texts(texts, f"{name} texts" if name != "training" else "texts")
        y_raw = np.asarray([str(v) for v in labels], dtype=object)
        if len(y_raw) != len(X_text):
            raise InvalidInput(f"{name}: texts has {len(X_text)} rows but labels has {len(y_raw)}", field="labels")
        oos = (y_raw == str(oos_label)) if oos_label is not None else np.zeros(len(y_raw), dtype=bool)
        return X_text, y_raw, oos

    def _fit(self, texts: Sequence[str], labels: Sequence[Any], *, oos_label: str | None,
             validation: tuple[Sequence[str], Sequence[Any]] | None, progress: Progress | None,
             fixed_threshold: float | None) -> IntentClassifier:
        X_text, y_raw, known_oos = self._labels(texts, labels, oos_label, "training")
        classes, y_in = np.unique(y_raw[~known_oos], return_inverse=True)
        if len(classes) < 2:
            extra = f" besides the out-of-scope label {oos_label!r}" if known_oos.any() else ""
            raise InvalidInput(f"intent training needs at least two distinct labels{extra}; got "
                               f"{[str(c) for c in classes]}", field="labels")
        y = np.full(len(y_raw), -1)
        y[~known_oos] = y_in
        v_text: list[str] = []
        v_y = np.zeros(0, dtype=int)
        if validation is not None:
            v_text, v_raw, v_oos = self._labels(validation[0], validation[1], oos_label, "validation")
            unknown = sorted(set(v_raw[~v_oos]) - set(classes))
            if unknown:
                raise InvalidInput(
                    f"validation has {len(unknown)} label(s) never seen in training: {unknown[:5]}"
                    + (f"; out-of-scope rows must be labelled {oos_label!r}" if oos_label is not None else ""),
                    field="validation")
            if v_oos.all():
                raise InvalidInput("validation has no in-scope rows (every row is labelled out of scope)",
                                   field="validation")
            v_y = np.where(v_oos, -1, np.searchsorted(classes, v_raw))
        emb_all = self._embed(X_text + v_text, progress)
        emb = None if emb_all is None else emb_all[:len(X_text)]
        v_emb = None if emb_all is None else emb_all[len(X_text):]
        self.embedder_name_ = self.embedder.name if self.embedder is not None else None
        self.embedder_fingerprint_ = self.embedder.fingerprint if self.embedder is not None else None
        names = self._candidates(emb is not None)
        in_rows = np.flatnonzero(y >= 0)
        text_arr = np.asarray(X_text, dtype=object)

        need_folds = validation is None or (fixed_threshold is None and not (v_y < 0).any())
        folds = (self._inner_folds(text_arr, y, len(classes), emb, names, pseudo=fixed_threshold is None,
                                   progress=progress) if need_folds else None)
        if progress is not None:
            progress("final fit", 0, 1)
        final = self._fit_parts(text_arr[in_rows].tolist(), y[in_rows], None if emb is None else emb[in_rows])
        if progress is not None:
            progress("final fit", 1, 1)

        if validation is not None and fixed_threshold is None:
            v_scores = self._fold_scores(final, v_text, v_emb, len(classes))
            v_in = v_y >= 0
            t = _fit_temperature(v_scores[v_in], v_y[v_in]) if v_in.any() else (folds or {}).get("t", 1.0)
            v_proba = _softmax(v_scores / t)
            raw = self._raw_scores(v_proba, v_emb, final.stats, names)
            ref = {n: r[v_in] for n, r in raw.items()}
            ok = v_proba[v_in].argmax(axis=1) == v_y[v_in]
            method = "validation"
            weights: np.ndarray | None = None
            if (~v_in).any():
                oos = {n: r[~v_in] for n, r in raw.items()}
                source = "known"
            else:  # score chosen on the inner folds' (pseudo) out-of-scope, threshold on the validation file
                assert folds is not None
                self._combine(folds["ref"], folds["oos"])
                names = [self._pick(folds["ref"], folds["oos"], names, folds["source"], folds["weights"])[0]]
                oos, weights = folds["oos"], folds["weights"]
                source = folds["source"]
        else:
            assert folds is not None
            t, ref, ok, oos, weights = folds["t"], folds["ref"], folds["ok"], folds["oos"], folds["weights"]
            source = folds["source"]
            method = "refit" if fixed_threshold is not None else "inner_folds"
        components = self._combine(ref, oos)
        if fixed_threshold is None and all(len(oos.get(n, ())) == 0 for n in names):
            method = "quantile"

        self.temperature_ = float(t)
        self.classes_ = classes
        self.word_vectorizer_, self.char_vectorizer_, self.svm_ = final.word, final.char, final.svm
        self.n_features_in_ = final.svm.coef_.shape[1]
        score, cands = self._pick(ref, oos, names, source, weights)
        self.oos_components_ = components if score in COMBINED else {}
        self.oos_reference_ = np.sort(np.asarray(ref[score], dtype=np.float64))
        if fixed_threshold is not None:
            thr = float(fixed_threshold)
            flagged = float(np.mean(_pvalues(self.oos_reference_, ref[score]) < thr)) if len(ref[score]) else 0.0
            rec = float("nan")
        else:
            thr, flagged, rec = _choose_threshold(self.oos_reference_, oos.get(score, np.zeros(0)),
                                                  self.max_in_scope_flagged, weights)
        accepted = _pvalues(self.oos_reference_, ref[score]) >= thr
        n_oos = len(oos.get(score, ()))
        self.oos_calibration_ = OOSCalibration(
            score=score, threshold=thr, objective=OOS_OBJECTIVE, max_in_scope_flagged=self.max_in_scope_flagged,
            method=method, oos_source=source if n_oos else "none", n_in_scope=len(ok), n_oos=n_oos,
            in_scope_flagged=flagged, in_scope_accuracy=float(np.mean(ok & accepted)) if len(ok) else float("nan"),
            in_scope_accuracy_no_rejection=float(np.mean(ok)) if len(ok) else float("nan"),
            oos_recall=rec, candidates=cands)
        self.oos_threshold_ = thr
        self.emb_stats_ = final.stats if score != "proba" else None
        return self

    @staticmethod
    def _combine(ref: dict[str, np.ndarray], oos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the combined scores (e.g. mix_or_knn = the smaller of the mix and knn p-values against `ref`) to
        `ref` and `oos` in place; returns the sorted component references they were read against."""
        components: dict[str, np.ndarray] = {}
        for name, parts in COMBINED.items():
            if not all(p in ref and len(ref[p]) for p in parts):
                continue
            for p in parts:
                components[p] = np.sort(np.asarray(ref[p], dtype=np.float64))
            for d in (ref, oos):
                if all(p in d for p in parts):
                    d[name] = np.min([_pvalues(components[p], d[p]) for p in parts], axis=0)
        return components

    def _pick(self, ref: dict[str, np.ndarray], oos: dict[str, np.ndarray], names: Sequence[str],
              source: str, weights: np.ndarray | None = None) -> tuple[str, dict[str, float]]:
        """The score with the highest out-of-scope recall at the budget (first in OOS_SCORES order on ties).

        Without known out-of-scope examples the choice is among PSEUDO_OOS_SCORES when available: held-out intents
        are near neighbours of the known ones, so they reward scores that separate close intents (the top
        probability) and tell nothing about text from other domains, which the nearest-neighbour term catches.
        """
        cands: dict[str, float] = {}
        for n in names:
            if n not in ref or len(ref[n]) == 0:
                continue
            cands[n] = _choose_threshold(np.sort(ref[n]), oos.get(n, np.zeros(0)), self.max_in_scope_flagged,
                                         weights)[2]
        if not cands:
            return names[-1] if names else "proba", cands
        allowed = [n for n in cands if "known" in source or n in PSEUDO_OOS_SCORES] or list(cands)
        finite = {n: cands[n] for n in allowed if np.isfinite(cands[n])}
        if not finite:  # nothing to choose with: the first available score in preference order
            return allowed[0], cands
        best = max(finite.values())
        return next(n for n in finite if finite[n] >= best - 1e-12), cands

    def _inner_folds(self, text_arr: np.ndarray, y: np.ndarray, n_classes: int, emb: np.ndarray | None,
                     names: Sequence[str], *, pseudo: bool, progress: Progress | None) -> dict[str, Any]:
        """Held-out scores of inner folds (y = -1 marks known out-of-scope rows).

        In fold k, model A (trained on the other folds' in-scope rows) scores the fold's in-scope rows (the
        reference) and its known out-of-scope rows; with `pseudo`, model B (trained without intent group k) scores
        group k's held-out rows as pseudo out-of-scope.
        """
        in_scope = y >= 0
        counts = np.bincount(y[in_scope], minlength=n_classes)
        n_splits = int(min(self.inner_folds, max(2, counts.max())))
        rng = np.random.default_rng(self.seed)
        # Left-out groups need at least two intents to remain in training.
        use_pseudo = pseudo and n_classes >= 3
        group = rng.permutation(n_classes) % n_splits if use_pseudo else np.full(n_classes, -1)
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        strat = np.where(in_scope, y, n_classes)  # known out-of-scope rows spread over the folds too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes with fewer members than folds are expected few-shot
            splits = list(skf.split(np.zeros(len(y)), strat))
        total = n_splits * (2 if use_pseudo else 1)
        done = 0
        in_scores: list[np.ndarray] = []
        in_y: list[np.ndarray] = []
        in_emb: list[np.ndarray | None] = []
        in_stats: list[_EmbeddingStats | None] = []
        known_scores: list[np.ndarray] = []
        known_emb: list[np.ndarray | None] = []
        known_stats: list[_EmbeddingStats | None] = []
        ps_scores: list[np.ndarray] = []
        ps_emb: list[np.ndarray | None] = []
        ps_stats: list[_EmbeddingStats | None] = []
        for k, (tr, va) in enumerate(splits):
            tr_in = tr[in_scope[tr]]
            if len(np.unique(y[tr_in])) < 2:
                continue
            ea = None if emb is None else emb[tr_in]
            a = self._fit_parts(text_arr[tr_in].tolist(), y[tr_in], ea)
            done += 1
            if progress is not None:
                progress("inner folds", done, total)
            va_in = va[in_scope[va] & np.isin(y[va], a.present)]
            va_known = va[~in_scope[va]]
            for rows, out_s, out_e, out_st in ((va_in, in_scores, in_emb, in_stats),
                                               (va_known, known_scores, known_emb, known_stats)):
                if len(rows):
                    out_s.append(self._fold_scores(a, text_arr[rows].tolist(),
                                                   None if emb is None else emb[rows], n_classes))
                    out_e.append(None if emb is None else emb[rows])
                    out_st.append(a.stats)
            in_y.append(y[va_in])
            if use_pseudo:
                left_out = group == k
                tr_b = tr_in[~left_out[y[tr_in]]]
                va_b = va[in_scope[va] & left_out[np.maximum(y[va], 0)]]
                if len(np.unique(y[tr_b])) >= 2 and len(va_b):
                    b = self._fit_parts(text_arr[tr_b].tolist(), y[tr_b], None if emb is None else emb[tr_b])
                    ps_scores.append(self._fold_scores(b, text_arr[va_b].tolist(),
                                                       None if emb is None else emb[va_b], n_classes))
                    ps_emb.append(None if emb is None else emb[va_b])
                    ps_stats.append(b.stats)
                done += 1
                if progress is not None:
                    progress("inner folds", done, total)
        y_ref = np.concatenate(in_y) if in_y else np.zeros(0, dtype=int)
        t = _fit_temperature(np.vstack(in_scores), y_ref) if len(y_ref) else 1.0

        def raw(scores: list[np.ndarray], embs: list[Any], stats: list[Any]) -> dict[str, np.ndarray]:
            parts = [self._raw_scores(_softmax(s / t), e, st, names) for s, e, st in zip(scores, embs, stats,
                                                                                        strict=True)]
            base = dict.fromkeys(b for n in names for b in COMBINED.get(n, (n,)))
            return {n: np.concatenate([p[n] for p in parts]) if parts else np.zeros(0) for n in base
                    if n == "proba" or emb is not None}

        ok = (np.vstack(in_scores) / t).argmax(axis=1) == y_ref if len(y_ref) else np.zeros(0, dtype=bool)
        known = raw(known_scores, known_emb, known_stats)
        pseudo_raw = raw(ps_scores, ps_emb, ps_stats)
        oos = {n: np.concatenate([known.get(n, np.zeros(0)), pseudo_raw.get(n, np.zeros(0))])
               for n in known}
        # Known out-of-scope rows and held-out intents weigh half each: a few real examples count as much as the
        # many pseudo ones.
        n_known = len(next(iter(known.values()), ()))
        n_pseudo = len(next(iter(pseudo_raw.values()), ()))
        weights = None
        if n_known and n_pseudo:
            weights = np.concatenate([np.full(n_known, 0.5 / n_known), np.full(n_pseudo, 0.5 / n_pseudo)])
        source = {(True, True): "known + pseudo", (True, False): "known",
                  (False, True): "pseudo (held-out intents)", (False, False): "none"}[
            (bool(known_scores), bool(ps_scores))]
        return {"t": t, "ref": raw(in_scores, in_emb, in_stats), "ok": ok, "oos": oos, "source": source,
                "weights": weights}

    # ---- inference ----

    def _check_fitted(self) -> None:
        # scikit-learn's check, reported as the domain error the service maps to "model not ready".
        try:
            check_is_fitted(self, "classes_",
                            msg="%(name)s is not fitted; call fit(texts, labels) or train the intent model")
        except NotFittedError as exc:
            raise ModelNotReady(str(exc)) from exc

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
        name = self.oos_calibration_.score
        reference = self.oos_reference_
        if len(proba) == 0:
            return proba, np.zeros(0)
        parts = self._raw_scores(proba, emb, self.emb_stats_, [name])
        if name in COMBINED:
            raw = np.min([_pvalues(self.oos_components_[p], parts[p]) for p in COMBINED[name]], axis=0)
        else:
            raw = parts[name]
        return proba, _pvalues(reference, raw)

    def oos_score(self, texts: Sequence[str]) -> np.ndarray:
        """Out-of-scope score of each text in [0, 1]: the share of held-out in-scope tickets whose raw score (the
        one in `oos_calibration_.score`) was lower. Low = unlike the known intents; flagged below `oos_threshold_`."""
        return self._proba_and_oos_score(texts)[1]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated class probabilities (rows sum to 1), columns in `classes_` order."""
        return _softmax(self.decision_function(texts) / self.temperature_)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Most probable known intent for each text (no out-of-scope rejection)."""
        scores = self.decision_function(texts)
        return self.classes_[scores.argmax(axis=1)]

    def predict_with_oos(self, texts: Sequence[str], *, top_k: int = 3,
                         threshold: float | None = None) -> list[IntentPrediction]:
        """Intent, confidence, the top-k and the out-of-scope flag (`oos_score` below `oos_threshold_`, or below
        `threshold` when given)."""
        proba, oos_score = self._proba_and_oos_score(texts)
        thr = self.oos_threshold_ if threshold is None else threshold
        k = max(1, min(top_k, len(self.classes_)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        out = []
        for i in range(len(proba)):
            top = [LabelScore(str(self.classes_[j]), float(proba[i, j])) for j in order[i]]
            out.append(IntentPrediction(label=top[0].label, confidence=top[0].probability,
                                        out_of_scope=bool(oos_score[i] < thr), top_k=top,
                                        oos_score=float(oos_score[i])))
        return out

    def predict_labels_with_oos(self, texts: Sequence[str], *, oos_label: str = OUT_OF_SCOPE) -> np.ndarray:
        """Like `predict`, but out-of-scope texts get `oos_label`."""
        proba, oos_score = self._proba_and_oos_score(texts)
        labels = self.classes_[proba.argmax(axis=1)].astype(object)
        labels[oos_score < self.oos_threshold_] = oos_label
        return labels
