"""Next-activity prediction over case prefixes (LightGBM multiclass, end-of-case included as a class)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from insight.eventlog.schema import CASE_ID
from insight.models._lgbm import PrefixBoostingModel, accuracy
from insight.models.ngram import NGramBackoff
from insight.models.prefix_features import END, PrefixSet


@dataclass
class NextActivityMetrics:
    """Accuracy over every prefix of every test case (fractions), next to baselines fitted on the same training
    prefixes and scored on the same test prefixes: bigram (last activity -> its most frequent follower, the
    majority class for an activity never seen), majority class, and n-gram back-off."""

    n_cases: int
    n_prefixes: int
    accuracy: float
    accuracy_without_end: float
    baseline_bigram_accuracy: float
    baseline_majority_accuracy: float
    baseline_ngram_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _most_frequent(values: list[str]) -> str:
    """The most frequent value (ties: alphabetically first, so runs are deterministic)."""
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


class BigramBaseline(BaseEstimator):
    """Previous activity -> the next activity that most often followed it in training; the majority class when
    the activity was never seen (or the prefix is empty)."""

    def fit(self, prefixes: Sequence[Sequence[str]], targets: Sequence[str]) -> BigramBaseline:
        """Count followers of each last activity over (prefix, next) pairs."""
        followers: dict[str, list[str]] = defaultdict(list)
        for seq, y in zip(prefixes, targets, strict=True):
            if len(seq):
                followers[str(seq[-1])].append(str(y))
        self.majority_ = _most_frequent([str(y) for y in targets]) if len(targets) else END
        self.table_ = {a: _most_frequent(ys) for a, ys in followers.items()}
        return self

    def predict(self, prefixes: Sequence[Sequence[str]]) -> np.ndarray:
        """Predicted next activity per prefix."""
        check_is_fitted(self, "table_", msg="%(name)s is not fitted; call fit first")
        return np.array([self.table_.get(str(seq[-1]), self.majority_) if len(seq) else self.majority_
                         for seq in prefixes], dtype=object)


class NextActivityPredictor(PrefixBoostingModel):
    """Predicts the next activity (or end of case) after each event of a case (a scikit-learn estimator).

    `time_trend` adds the case start as days since the training log began: trees then put future cases in the
    newest regime seen in training, which held on validation (the newest `validation_fraction` of training
    cases) on drifting logs (see docs/PERFORMANCE.md). `refit_full` then retrains on every training case with
    the early-stopped number of rounds; `refit(log)` does the same on any log (train + test once the test has
    been scored).
    `case_attributes` are trace-level columns declared known when a case is created (none by default).
    """

    _fitted_attribute = "booster_"

    def __init__(
        self,
        *,
        k: int = 5,
        n_estimators: int = 600,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        early_stopping_rounds: int = 20,
        validation_fraction: float = 0.15,
        case_attributes: list[str] | None = None,
        event_attributes: list[str] | None = None,
        refit_full: bool = True,
        timing: bool = True,
        time_trend: bool = True,
        seed: int = 7,
        num_threads: int = 2,
    ) -> None:
        self.refit_full = refit_full
        self.timing = timing
        self.time_trend = time_trend
        self.k = k
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.case_attributes = case_attributes
        self.event_attributes = event_attributes
        self.seed = seed
        self.num_threads = num_threads

    def _encoder_options(self) -> dict[str, Any]:
        return {"timing": self.timing, "time_trend": self.time_trend}

    def _classes_and_params(self, next_activity: np.ndarray) -> tuple[list[str], dict[str, int], dict[str, Any]]:
        classes = sorted(set(next_activity.tolist()) | {END})
        return classes, {c: i for i, c in enumerate(classes)}, self._lgb_params(objective="multiclass",
                                                                                   num_class=len(classes))

    def fit(self, log: Any, *, valid_log: Any = None) -> NextActivityPredictor:
        """Fit on every prefix of the log; early stopping on `valid_log` or on the newest cases carved from it."""
        fit_log, valid_log = self._fit_and_valid(log, valid_log)
        self.encoder_ = self._new_encoder().fit(log)
        tr = self.encoder_.transform(fit_log)
        classes, index, params = self._classes_and_params(tr.next_activity)
        self.classes_ = np.array(classes, dtype=object)
        y_tr = np.array([index[c] for c in tr.next_activity])
        if valid_log is not None:
            va = self.encoder_.transform(valid_log)
            keep = np.array([c in index for c in va.next_activity])
            booster, n_iter = self._boost(params, tr.X, y_tr,
                                          (va.X[keep], np.array([index[c] for c in va.next_activity[keep]])))
            self.validation_accuracy_ = accuracy(
                va.next_activity[keep], self.classes_[np.argmax(booster.predict(va.X[keep], num_iteration=n_iter), 1)]
            )
            if self.refit_full:
                # Refit on all training cases (validation included) with the chosen number of rounds: the
                # validation cases are the newest, and event logs drift (Helpdesk's follow-ups changed within
                # its training window), so the model that predicts the future should have seen them.
                full = self.encoder_.transform(log)
                keep_f = np.array([c in index for c in full.next_activity])
                self.booster_ = self._boost_rounds(
                    params, full.X[keep_f], np.array([index[c] for c in full.next_activity[keep_f]]), n_iter)
            else:
                self.booster_ = booster
        else:
            self.booster_, n_iter = self._boost(params, tr.X, y_tr)
        self.n_iter_ = n_iter
        self.feature_names_ = list(self.encoder_.feature_names_)
        self.n_cases_fit_ = int(_frame_of(log)[CASE_ID].nunique())
        return self

    def refit(self, log: Any) -> NextActivityPredictor:
        """Retrain on every prefix of `log` (e.g. train + test once scored) with the number of boosting rounds
        validated by `fit`: no test case chooses anything, the deployed model has seen the newest cases."""
        self._check_fitted()
        encoder = self._new_encoder().fit(log)
        full = encoder.transform(log)
        classes, index, params = self._classes_and_params(full.next_activity)
        y = np.array([index[c] for c in full.next_activity])
        self.booster_ = self._boost_rounds(params, full.X, y, self.n_iter_)
        self.encoder_ = encoder
        self.classes_ = np.array(classes, dtype=object)
        self.feature_names_ = list(encoder.feature_names_)
        self.n_cases_fit_ = int(_frame_of(log)[CASE_ID].nunique())
        return self

    def prefixes(self, log: Any, *, with_sequences: bool = False) -> PrefixSet:
        """Encode every prefix of a log with the fitted vocabularies."""
        self._check_fitted()
        return self.encoder_.transform(log, with_sequences=with_sequences)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities per prefix (columns in `classes_` order); `data` is a log or a PrefixSet."""
        self._check_fitted()
        ps = data if isinstance(data, PrefixSet) else self.prefixes(data)
        if len(ps) == 0:
            return np.zeros((0, len(self.classes_)))
        return np.asarray(self.booster_.predict(ps.X, num_iteration=self.n_iter_))

    def predict(self, data: Any) -> np.ndarray:
        """Most likely next activity (or `<END>`) per prefix."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(data), axis=1)]

    def evaluate(self, train_log: Any, test_log: Any, *, ngram_n: int = 4) -> NextActivityMetrics:
        """Accuracy on every prefix of the test log (the end-of-case class included), with bigram, majority and
        n-gram baselines fitted on every prefix of `train_log` and scored on the same test prefixes."""
        self._check_fitted()
        tr = self.encoder_.transform(train_log, with_sequences=True)
        te = self.encoder_.transform(test_log, with_sequences=True)
        pred = self.predict(te)
        y = te.next_activity
        targets = [str(a) for a in tr.next_activity]
        majority = _most_frequent(targets) if targets else END
        bigram = BigramBaseline().fit(tr.sequences, targets)
        ng = NGramBackoff(n=ngram_n).fit(tr.sequences, targets)
        not_end = y != END
        return NextActivityMetrics(
            n_cases=int(len(set(te.case_id.tolist()))),
            n_prefixes=int(len(y)),
            accuracy=accuracy(y, pred),
            accuracy_without_end=accuracy(y[not_end], pred[not_end]),
            baseline_bigram_accuracy=accuracy(y, bigram.predict(te.sequences)),
            baseline_majority_accuracy=accuracy(y, np.full(len(y), majority, dtype=object)),
            baseline_ngram_accuracy=accuracy(y, ng.predict(te.sequences)),
        )


def _frame_of(log: Any) -> Any:
    return log.df if hasattr(log, "df") else log
