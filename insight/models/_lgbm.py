"""Shared LightGBM settings for the prefix models: explicit hyper-parameters, 2 threads, deterministic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from insight.eventlog.schema import CASE_ID, TIMESTAMP


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


def carve_validation(log: Any, fraction: float) -> tuple[Any, Any]:
    """Split a training log by case start time: older cases fit, the newest `fraction` validate."""
    df = log.df if hasattr(log, "df") else log
    starts = df.groupby(df[CASE_ID].astype(str), sort=False)[TIMESTAMP].min().sort_values(kind="stable")
    n_val = max(1, int(round(len(starts) * fraction)))
    val_ids = set(starts.index[-n_val:])
    mask = df[CASE_ID].astype(str).isin(val_ids).to_numpy()
    fit_df = df.loc[~mask].reset_index(drop=True)
    val_df = df.loc[mask].reset_index(drop=True)
    if hasattr(log, "df"):
        from insight.eventlog.schema import EventLog

        return (
            EventLog(fit_df, name=f"{log.name}[fit]", case_attributes=list(log.case_attributes)),
            EventLog(val_df, name=f"{log.name}[val]", case_attributes=list(log.case_attributes)),
        )
    return fit_df, val_df


def as_frame(X: pd.DataFrame) -> pd.DataFrame:
    """LightGBM wants categoricals as pandas categories and the rest numeric; this is what PrefixEncoder emits."""
    return X


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of equal labels (0.0 for empty input)."""
    if len(y_true) == 0:
        return 0.0
    return float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)))
