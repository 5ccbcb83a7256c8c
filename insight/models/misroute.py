"""Misroute risk: a calibrated probability that a new ticket will be passed on by a team that does not resolve it.

Label (mined by insight.mining.labels.case_labels, column `misrouted`): the case was transferred at least once, or
it was resolved by a team other than the first one without an escalation explaining the change. A planned
escalation (L1 -> L2 through an escalate step) is not a misroute; in logs without escalate steps (BPIC 2013)
misrouted = reassigned at least once. The label describes what happened under the routing that produced the log
(people, or an earlier system), so the model answers "how often do tickets like this one get passed on".

Features are what is known when the ticket is created, the same the router reads: one-hot categorical attributes
(values seen fewer than `min_frequency` times share one column per attribute) and TF-IDF of the text. A logistic
regression is fitted on the oldest rows of the training data; its `C` is chosen on the newest
`calibration_fraction` of the rows (log loss), where the calibration map (Platt scaling, or isotonic regression
when it wins a time-ordered two-fold comparison there and the slice is large enough) is then fitted. Rows must
be passed in creation order. `predict_proba` accepts a frame or, cheaper for a few rows, a list of records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidInput
from insight.models.split import cut_newest, validation_count
from insight.models.values import key_values, texts_of, ticket_tfidf

MISSING = "__missing__"
Rows: TypeAlias = pd.DataFrame | Sequence[Mapping[str, Any]]


@dataclass
class ProbabilityScores:
    """How good probabilities of a yes/no outcome are: Brier score, ROC AUC, log loss, calibration error."""

    n: int
    positive_rate: float
    brier: float
    auc: float | None
    log_loss: float
    # Expected calibration error: mean |observed rate - mean prediction| over 10 equal-count bins, weighted.
    ece: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def probability_scores(y: Any, p: Any, *, bins: int = 10) -> ProbabilityScores:
    """Brier, AUC (None with one class), log loss and expected calibration error of probabilities `p` for `y`."""
    from sklearn.metrics import roc_auc_score

    yy = np.asarray(y, dtype=float)
    pp = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if len(yy) != len(pp):
        raise InvalidInput(f"probability_scores: {len(yy)} labels but {len(pp)} probabilities")
    if len(yy) == 0:
        raise InvalidInput("probability_scores: no rows to score")
    eps = 1e-12
    ll = -float(np.mean(yy * np.log(np.clip(pp, eps, 1)) + (1 - yy) * np.log(np.clip(1 - pp, eps, 1))))
    order = np.argsort(pp, kind="stable")
    ece = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            ece += len(chunk) / len(yy) * abs(float(yy[chunk].mean()) - float(pp[chunk].mean()))
    auc = float(roc_auc_score(yy, pp)) if len(np.unique(yy)) == 2 else None
    return ProbabilityScores(n=len(yy), positive_rate=float(yy.mean()), brier=float(np.mean((pp - yy) ** 2)),
                             auc=auc, log_loss=ll, ece=float(ece))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)))


class _Platt:
    """p -> sigmoid(a * logit(p) + b), fitted by logistic regression on one feature."""

    def fit(self, p: np.ndarray, y: np.ndarray) -> _Platt:
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(p).reshape(-1, 1), y)
        self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(self.a_ * _logit(p) + self.b_))))


class _Isotonic:
    """Monotone step map fitted on the calibration slice (clipped to the observed range)."""

    def fit(self, p: np.ndarray, y: np.ndarray) -> _Isotonic:
        self.iso_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(self.iso_.predict(p), dtype=float)


class MisrouteModel(BaseEstimator):
    """Calibrated P(misrouted) from creation-time attributes and text (see the module docstring)."""

    def __init__(
        self,
        *,
        categorical: list[str] | None = None,
        text: str | None = None,
        C: float | None = None,
        C_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0),
        calibration: str = "auto",
        calibration_fraction: float = 0.2,
        min_frequency: int = 2,
        max_text_features: int = 20000,
        max_iter: int = 500,
        seed: int = 7,
    ) -> None:
        self.categorical = categorical
        self.text = text
        self.C = C
        self.C_grid = C_grid
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.min_frequency = min_frequency
        self.max_text_features = max_text_features
        self.max_iter = max_iter
        self.seed = seed

    # ---- design matrix: one code path for frames and records, so training and serving read values alike

    def _values(self, X: Rows, col: str) -> list[str]:
        if isinstance(X, pd.DataFrame) and col not in X.columns:
            return [MISSING] * len(X)
        return [MISSING if v is None else v for v in key_values(X, [col])[0]]

    def _texts(self, X: Rows) -> list[str]:
        assert self.text is not None
        return texts_of(X, self.text)

    def _fit_encoder(self, X: Rows) -> None:
        self.vocab_: list[dict[str, int]] = []
        self.other_: list[int] = []
        width = 0
        for col in self.cat_:
            counts = pd.Series(self._values(X, col)).value_counts()
            kept = sorted(str(v) for v, c in counts.items() if c >= self.min_frequency)
            self.vocab_.append({v: width + i for i, v in enumerate(kept)})
            width += len(kept)
            self.other_.append(width)  # rare and unseen values of this attribute
            width += 1
        self.cat_width_ = width

    def _design(self, X: Rows, *, fit: bool = False) -> sparse.csr_matrix:
        n = len(X)
        cols = [self._values(X, c) for c in self.cat_]
        rows_idx = np.repeat(np.arange(n), len(self.cat_))
        col_idx = np.asarray([self.vocab_[f].get(cols[f][i], self.other_[f])
                              for i in range(n) for f in range(len(self.cat_))], dtype=np.int64)
        parts = [sparse.csr_matrix((np.ones(len(col_idx)), (rows_idx, col_idx)), shape=(n, self.cat_width_))]
        if self.text:
            vectorizer, words = ticket_tfidf(self._texts(X), fitted=None if fit else self.tfidf_,
                                             max_features=self.max_text_features)
            if fit:
                self.tfidf_: TfidfVectorizer = vectorizer
            parts.append(words)
        return sparse.hstack(parts).tocsr()

    def _model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter, random_state=self.seed)

    # ---- fitting

    def fit(self, X: pd.DataFrame, y: Any) -> MisrouteModel:
        """Fit on creation-time attributes `X` (rows in creation order) and the misrouted label `y` (0/1)."""
        yy = np.asarray(pd.Series(y).astype(float), dtype=float)
        if len(yy) != len(X):
            raise InvalidInput(f"misroute fit: {len(X)} rows of features but {len(yy)} labels")
        if np.isnan(yy).any():
            raise InvalidInput("misroute fit: some labels are missing; drop the cases without a misrouted label")
        self.cat_ = list(self.categorical) if self.categorical is not None else [
            c for c in X.columns if c != self.text]
        if self.text and self.text not in X.columns:
            raise InvalidInput(f"misroute input lacks the text column {self.text!r}; has {list(X.columns)}")
        missing = [c for c in self.cat_ if c not in X.columns]
        if missing:
            raise InvalidInput(f"misroute input lacks column(s) {missing}; has {list(X.columns)}")
        n_cal = validation_count(len(X), self.calibration_fraction)
        y_fit, y_cal = cut_newest(yy, n_cal)
        if n_cal < 50 or y_cal.sum() < 5 or (1 - y_cal).sum() < 5 or len(np.unique(y_fit)) < 2:
            raise InvalidInput(
                f"misroute: too few cases to fit and calibrate ({len(X)} cases, {int(yy.sum())} misrouted; the newest "
                f"{n_cal} calibrate and need at least 5 of each kind)")
        X = X.reset_index(drop=True)
        fit_X, cal_X = cut_newest(X, n_cal)
        self._fit_encoder(fit_X)
        A = self._design(fit_X, fit=True)
        B = self._design(cal_X)
        grid = [self.C] if self.C is not None else list(self.C_grid)
        self.validation_scores_: dict[str, float] = {}
        best: tuple[float, LogisticRegression, np.ndarray] | None = None
        for c in grid:
            m = self._model(c).fit(A, y_fit)
            raw = np.asarray(m.predict_proba(B)[:, 1])
            ll = probability_scores(y_cal, raw).log_loss
            self.validation_scores_[f"C={c} log loss (raw)"] = ll
            if best is None or ll < best[0] - 1e-9:
                best = (ll, m, raw)
        assert best is not None
        _, self.model_, raw = best
        self.C_ = float(self.model_.C)
        self.calibrator_, self.calibration_ = self._choose_calibrator(raw, y_cal)
        cal = self.calibrator_.predict(raw)
        self.validation_ = {
            "n": int(n_cal), "positive_rate": float(y_cal.mean()),
            "raw": probability_scores(y_cal, raw).to_dict(),
            # In-sample for the calibrator (it is fitted on these rows); the honest figures are the test's.
            "calibrated_in_sample": probability_scores(y_cal, cal).to_dict(),
        }
        self.base_rate_ = float(yy.mean())
        self.n_train_ = len(yy)
        return self

    def _choose_calibrator(self, raw: np.ndarray, y: np.ndarray) -> tuple[Any, str]:
        kind = self.calibration
        if kind not in ("auto", "platt", "isotonic"):
            raise InvalidInput(f"calibration must be 'auto', 'platt' or 'isotonic', got {kind!r}",
                               field="calibration")
        if kind == "auto":
            kind = "platt"
            half = len(y) // 2
            if len(y) >= 1000 and min(y[:half].sum(), y[half:].sum()) >= 50:
                # Time-ordered two folds within the calibration slice: fit on one half, Brier on the other.
                a, b = slice(0, half), slice(half, len(y))
                score = {}
                for name, cls in (("platt", _Platt), ("isotonic", _Isotonic)):
                    s = 0.0
                    for tr, te in ((a, b), (b, a)):
                        p = cls().fit(raw[tr], y[tr]).predict(raw[te])
                        s += float(np.mean((p - y[te]) ** 2))
                    score[name] = s / 2
                self.validation_scores_.update({f"{k} Brier (2 folds)": v for k, v in score.items()})
                kind = min(score, key=lambda k: score[k])
        cal = _Platt() if kind == "platt" else _Isotonic()
        return cal.fit(raw, y), kind

    # ---- prediction

    def _check(self) -> None:
        check_is_fitted(self, "model_", msg="%(name)s is not fitted; call fit(X, y) first")

    def raw_proba(self, X: Rows) -> np.ndarray:
        """The logistic regression's probability before calibration.

        Computed as intercept + the coefficients of each row's one-hot columns + text TF-IDF @ text coefficients:
        the same number as predict_proba of the design matrix, without building it (a live ticket is one row).
        """
        self._check()
        n = len(X)
        if n == 0:
            return np.zeros(0)
        coef = np.asarray(self.model_.coef_[0], dtype=float)
        z = np.full(n, float(self.model_.intercept_[0]))
        for f, col in enumerate(self.cat_):
            idx = [self.vocab_[f].get(v, self.other_[f]) for v in self._values(X, col)]
            z += coef[idx]
        if self.text:
            z += np.asarray(self.tfidf_.transform(self._texts(X)) @ coef[self.cat_width_:]).ravel()
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def predict_proba(self, X: Rows) -> np.ndarray:
        """Calibrated probability per row that the ticket will be misrouted (passed on by a non-resolving team)."""
        raw = self.raw_proba(X)
        return np.clip(self.calibrator_.predict(raw), 0.0, 1.0) if len(raw) else raw

    def evaluate(self, X: Rows, y: Any) -> ProbabilityScores:
        """Brier, AUC, log loss and calibration error on labelled rows."""
        return probability_scores(np.asarray(pd.Series(y).astype(float)), self.predict_proba(X))


__all__ = ["MisrouteModel", "ProbabilityScores", "probability_scores"]
