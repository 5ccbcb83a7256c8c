"""The LightGBM prefix-model skeleton: shared settings (explicit hyper-parameters, `num_threads` threads,
deterministic), the encoder of case prefixes, the validation carve-out and early-stopped boosting that every prefix
model repeats."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from insight.models.prefix_features import PrefixEncoder, PrefixSet
from insight.models.split import split_log


def base_params(*, seed: int, num_threads: int) -> dict[str, Any]:
    """Parameters every prefix model starts from (callers override objective and capacity)."""
    return {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_cat_to_onehot": 8,
        "max_cat_threshold": 16,
        "max_bin": 63,
        "cat_smooth": 10.0,
        "min_data_per_group": 20,
        "num_threads": num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }


# OpenMP threads cost more than they save on a few rows, and on a loaded machine waking them stalls a one-row
# prediction by orders of magnitude (docs/PERFORMANCE.md): small predictions run on the calling thread.
SMALL_PREDICT_ROWS = 512


def predict_threads(n_rows: int, num_threads: int) -> int:
    """Threads for a LightGBM prediction of n_rows rows (one for small inputs; the result is the same)."""
    return 1 if n_rows <= SMALL_PREDICT_ROWS else num_threads


# Training on few rows is dominated by per-tree thread synchronisation, which stalls badly when other processes
# hold the cores: below this many rows a model trains on one thread (deterministic=True: the same trees).
SMALL_TRAIN_ROWS = 10_000


def train_threads(n_rows: int, num_threads: int) -> int:
    """Threads for training a LightGBM model on n_rows rows."""
    return 1 if n_rows <= SMALL_TRAIN_ROWS else num_threads


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of equal labels (0.0 for empty input)."""
    if len(y_true) == 0:
        return 0.0
    return float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)))


class PrefixBoostingModel(BaseEstimator):
    """Base of the LightGBM models over case prefixes (next activity, remaining time).

    Subclasses declare their hyper-parameters in `__init__` (at least k, n_estimators, learning_rate, num_leaves,
    min_child_samples, early_stopping_rounds, validation_fraction, case_attributes, event_attributes, seed,
    num_threads) and name the attribute that marks them fitted in `_fitted_attribute`.
    """

    k: int
    n_estimators: int
    learning_rate: float
    num_leaves: int
    min_child_samples: int
    early_stopping_rounds: int
    validation_fraction: float
    case_attributes: list[str] | None
    event_attributes: list[str] | None
    seed: int
    num_threads: int
    encoder_: PrefixEncoder
    _fitted_attribute = "encoder_"

    def _lgb_params(self, **objective: Any) -> dict[str, Any]:
        """LightGBM parameters: the shared base, this model's capacity, then `objective` (and num_class)."""
        p = base_params(seed=self.seed, num_threads=self.num_threads)
        p.update(objective, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                 min_child_samples=self.min_child_samples)
        return p

    def _encoder_options(self) -> dict[str, Any]:
        """Encoder options beyond k and the attributes (subclasses add theirs)."""
        return {}

    def _new_encoder(self) -> PrefixEncoder:
        return PrefixEncoder(k=self.k, case_attributes=self.case_attributes, event_attributes=self.event_attributes,
                             **self._encoder_options())

    def _fit_and_valid(self, log: Any, valid_log: Any) -> tuple[Any, Any]:
        """(log to fit on, log to early-stop on): `valid_log` when given, else the newest cases carved from `log`."""
        if valid_log is None and self.validation_fraction > 0:
            return split_log(log, test_fraction=self.validation_fraction, names=("fit", "val"))
        return log, valid_log

    def _boost(self, params: dict[str, Any], X: Any, y: np.ndarray,
               valid: tuple[Any, np.ndarray] | None = None) -> tuple[lgb.Booster, int]:
        """Train on (X, y); with `valid`, stop early on it. Returns the booster and its number of rounds."""
        params = {**params, "num_threads": train_threads(len(X), self.num_threads)}
        if valid is None:
            return lgb.train(params, lgb.Dataset(X, y), num_boost_round=self.n_estimators), self.n_estimators
        dtrain = lgb.Dataset(X, y, free_raw_data=False)
        dvalid = lgb.Dataset(valid[0], valid[1], reference=dtrain)
        booster = lgb.train(params, dtrain, num_boost_round=self.n_estimators, valid_sets=[dvalid],
                            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
        return booster, max(1, booster.best_iteration or self.n_estimators)

    def _boost_rounds(self, params: dict[str, Any], X: Any, y: np.ndarray, rounds: int, *,
                      thread_rows: int | None = None) -> lgb.Booster:
        """Train on (X, y) for a fixed number of rounds (the ones validated before): refits on all rows."""
        threads = train_threads(len(X) if thread_rows is None else thread_rows, self.num_threads)
        return lgb.train({**params, "num_threads": threads}, lgb.Dataset(X, y), num_boost_round=rounds)

    def _check_fitted(self) -> None:
        check_is_fitted(self, self._fitted_attribute, msg="%(name)s is not fitted; call fit(log) first")

    def prefixes(self, log: Any) -> PrefixSet:
        """Encode every prefix of a log with the fitted vocabularies."""
        self._check_fitted()
        return self.encoder_.transform(log)
