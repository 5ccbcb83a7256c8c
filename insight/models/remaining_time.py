"""Remaining time to resolution and SLA-breach probability per case prefix (LightGBM)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.models._lgbm import PrefixBoostingModel, predict_threads
from insight.models.prefix_features import PrefixMatrix, PrefixSet


@dataclass
class RemainingTimeMetrics:
    """MAE in hours over every prefix of the test cases, against baselines fitted on the training prefixes: the
    median (the MAE-optimal constant) and the mean remaining time of training prefixes of the same length."""

    n_cases: int
    n_prefixes: int
    mae_hours: float
    baseline_median_per_prefix_length_mae_hours: float
    baseline_mean_per_prefix_length_mae_hours: float
    sla_hours: float
    breach_rate: float
    breach_auc: float | None
    breach_brier: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class RemainingTimePredictor(PrefixBoostingModel):
    """Expected hours to case end after each event, and the probability the case misses an SLA target."""

    _fitted_attribute = "regressor_"

    def __init__(
        self,
        *,
        k: int = 5,
        sla_hours: float | None = None,
        sla_quantile: float = 0.8,
        objective: str = "l1",
        n_estimators: int = 800,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        early_stopping_rounds: int = 20,
        validation_fraction: float = 0.15,
        case_attributes: list[str] | None = None,
        event_attributes: list[str] | None = None,
        seed: int = 7,
        num_threads: int = 2,
    ) -> None:
        self.k = k
        self.sla_hours = sla_hours
        self.sla_quantile = sla_quantile
        self.objective = objective
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

    def _train(self, params: dict[str, Any], fit: PrefixSet, y_fit: np.ndarray, val: PrefixSet | None,
               y_val: np.ndarray | None, full: PrefixSet, y_full: np.ndarray) -> tuple[lgb.Booster, int]:
        if val is not None and y_val is not None and len(val):
            # The early-stopped booster is kept: refitting on all rows would train the model a second time.
            return self._boost(params, fit.X, y_fit, (val.X, y_val))
        return self._boost(params, full.X, y_full)

    def fit(self, log: Any, *, valid_log: Any = None) -> RemainingTimePredictor:
        """Fit the regression and the breach classifier on every prefix (early stopping on validation cases)."""
        fit_log, valid_log = self._fit_and_valid(log, valid_log)
        self.encoder_ = self._new_encoder().fit(log)
        fit = self.encoder_.transform(fit_log)
        val = self.encoder_.transform(valid_log) if valid_log is not None else None
        full = self.encoder_.transform(log) if valid_log is not None else fit
        durations = pd.Series(full.elapsed_hours + full.remaining_hours).groupby(full.case_id).first()
        self.sla_hours_ = float(self.sla_hours if self.sla_hours is not None
                                else np.quantile(durations.to_numpy(), self.sla_quantile))
        self.regressor_, self.n_iter_ = self._train(
            self._lgb_params(objective=self.objective), fit, fit.remaining_hours, val,
            None if val is None else val.remaining_hours, full, full.remaining_hours)

        def breach(ps: PrefixSet) -> np.ndarray:
            return ((ps.elapsed_hours + ps.remaining_hours) > self.sla_hours_).astype(int)

        # Prefixes already past the target are certain breaches; the classifier learns the open ones only.
        def open_(ps: PrefixSet) -> PrefixSet:
            return ps.take(ps.elapsed_hours <= self.sla_hours_)

        fo, fu = open_(fit), open_(full)
        vo = open_(val) if val is not None else None
        self.breach_rate_ = float(breach(fu).mean()) if len(fu) else 0.0
        if len(np.unique(breach(fu))) < 2:
            self.classifier_ = None
            self.breach_n_iter_ = 0
        else:
            self.classifier_, self.breach_n_iter_ = self._train(
                self._lgb_params(objective="binary"), fo, breach(fo), vo, None if vo is None else breach(vo), fu,
                breach(fu))
        self._fit_baselines(full)
        self.feature_names_ = list(self.encoder_.feature_names_)
        self.n_cases_fit_ = int(len(set(full.case_id.tolist())))
        return self

    def _fit_baselines(self, ps: PrefixSet) -> None:
        # Per-prefix-length mean and median remaining hours of the training prefixes (the baselines to beat).
        by_len = pd.Series(ps.remaining_hours).groupby(ps.prefix_len)
        self.baseline_by_len_ = by_len.mean().to_dict()
        self.baseline_default_ = float(np.mean(ps.remaining_hours)) if len(ps) else 0.0
        self.median_by_len_ = by_len.median().to_dict()
        self.median_default_ = float(np.median(ps.remaining_hours)) if len(ps) else 0.0

    def refit(self, log: Any) -> RemainingTimePredictor:
        """Retrain both models on every prefix of `log` (e.g. train + test once scored) with the numbers of
        boosting rounds validated by `fit`; the SLA target stays the one fitted (and evaluated) before."""
        self._check_fitted()
        encoder = self._new_encoder().fit(log)
        full = encoder.transform(log)
        regressor = self._boost_rounds(self._lgb_params(objective=self.objective), full.X, full.remaining_hours,
                                       self.n_iter_)
        fu = full.take(full.elapsed_hours <= self.sla_hours_)
        breach = ((fu.elapsed_hours + fu.remaining_hours) > self.sla_hours_).astype(int)
        classifier = None
        if len(np.unique(breach)) == 2:
            rounds = self.breach_n_iter_ or self.n_estimators
            classifier = self._boost_rounds(self._lgb_params(objective="binary"), fu.X, breach, rounds,
                                            thread_rows=len(full))
            self.breach_n_iter_ = rounds
        else:
            self.breach_n_iter_ = 0
        self.breach_rate_ = float(breach.mean()) if len(fu) else 0.0
        self.encoder_, self.regressor_, self.classifier_ = encoder, regressor, classifier
        self._fit_baselines(full)
        self.feature_names_ = list(encoder.feature_names_)
        self.n_cases_fit_ = int(len(set(full.case_id.tolist())))
        return self

    def prefix_matrix(self, events: Any) -> PrefixMatrix:
        """Encode every prefix of the cases in `events` (event dicts) as LightGBM reads it, without pandas when small."""
        self._check_fitted()
        return self.encoder_.encode_events(events)

    def _rows(self, data: Any) -> tuple[PrefixSet | PrefixMatrix, Any]:
        ps = data if isinstance(data, PrefixSet | PrefixMatrix) else self.prefixes(data)
        # A PrefixMatrix holds exactly the array LightGBM makes of the frame: same predictions, no conversion.
        return ps, ps.values if isinstance(ps, PrefixMatrix) else ps.X

    def predict(self, data: Any) -> np.ndarray:
        """Expected remaining hours per prefix (never negative); `data` is a log, a PrefixSet or a PrefixMatrix."""
        self._check_fitted()
        ps, X = self._rows(data)
        if len(ps) == 0:
            return np.zeros(0)
        threads = predict_threads(len(ps), self.num_threads)
        return np.clip(self.regressor_.predict(X, num_iteration=self.n_iter_, num_threads=threads), 0.0, None)

    def predict_breach_proba(self, data: Any) -> np.ndarray:
        """Probability per prefix that the case ends after `sla_hours_` from its start."""
        self._check_fitted()
        ps, X = self._rows(data)
        if len(ps) == 0:
            return np.zeros(0)
        past = ps.elapsed_hours > self.sla_hours_
        if self.classifier_ is None:
            p = np.full(len(ps), self.breach_rate_)
        else:
            threads = predict_threads(len(ps), self.num_threads)
            p = np.asarray(self.classifier_.predict(X, num_iteration=self.breach_n_iter_, num_threads=threads),
                           dtype=float)
        return np.where(past, 1.0, p)

    def baseline_predict(self, data: Any, *, statistic: str = "median") -> np.ndarray:
        """Median (or mean) remaining hours of training prefixes of the same length; for a length never seen in
        training, that statistic over every training prefix."""
        self._check_fitted()
        ps = data if isinstance(data, PrefixSet) else self.prefixes(data)
        if statistic == "median":
            table, default = self.median_by_len_, self.median_default_
        elif statistic == "mean":
            table, default = self.baseline_by_len_, self.baseline_default_
        else:
            raise InvalidInput(f"statistic must be 'median' or 'mean', got {statistic!r}", field="statistic")
        return np.array([table.get(int(n), default) for n in ps.prefix_len], dtype=float)

    def evaluate(self, test_log: Any) -> RemainingTimeMetrics:
        """MAE on every prefix of the test log, the baseline's MAE, and breach AUC / Brier score."""
        from sklearn.metrics import roc_auc_score

        te = self.prefixes(test_log)
        y = te.remaining_hours
        pred = self.predict(te)
        med = self.baseline_predict(te, statistic="median")
        mean = self.baseline_predict(te, statistic="mean")
        breach = ((te.elapsed_hours + te.remaining_hours) > self.sla_hours_).astype(int)
        p = self.predict_breach_proba(te)
        auc = float(roc_auc_score(breach, p)) if len(np.unique(breach)) == 2 else None
        return RemainingTimeMetrics(
            n_cases=int(len(set(te.case_id.tolist()))),
            n_prefixes=int(len(y)),
            mae_hours=float(np.mean(np.abs(pred - y))) if len(y) else 0.0,
            baseline_median_per_prefix_length_mae_hours=float(np.mean(np.abs(med - y))) if len(y) else 0.0,
            baseline_mean_per_prefix_length_mae_hours=float(np.mean(np.abs(mean - y))) if len(y) else 0.0,
            sla_hours=self.sla_hours_,
            breach_rate=float(breach.mean()) if len(y) else 0.0,
            breach_auc=auc,
            breach_brier=float(np.mean((p - breach) ** 2)) if len(y) else 0.0,
        )
