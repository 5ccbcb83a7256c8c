"""What the prefix encoder produces: the row-aligned prefix sets and matrices, and the names of their features."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

END = "<END>"
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe_name(col: str) -> str:
    """A source column's name as it may appear in a feature name (LightGBM refuses JSON-special characters)."""
    return _UNSAFE.sub("_", str(col))


def unique_safe_names(cols: list[str]) -> dict[str, str]:
    """Each source column's feature-name stem: `safe_name`, with a counter where two columns would share one
    ("a b" and "a_b"), so every column keeps features of its own and both encoding paths agree on the width."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for col in cols:
        base = name = safe_name(col)
        n = 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        out[col] = name
        used.add(name)
    return out


# Relative timing and calendar columns; `timing=False` leaves them out (they drift when a process speeds up/slows).
TIMING_COLUMNS = ("elapsed_h", "since_last_h", "prev_gap_h", "weekday", "hour", "start_hour", "start_weekday")


def feature_matrix(X: pd.DataFrame) -> np.ndarray:
    """Prefix features the way LightGBM reads a frame: float64, category codes, NaN for a missing category."""
    out = np.empty(X.shape, dtype=np.float64)
    for j, (_, s) in enumerate(X.items()):
        if isinstance(s.dtype, pd.CategoricalDtype):
            codes = s.cat.codes.to_numpy()
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = s.to_numpy(dtype=np.float64)
    return out


@dataclass
class EncodedPrefixes:
    """Prefix features of a small input, categorical columns as codes (-1 when missing), plus the targets."""

    cols: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    case_id: list[str]
    pos: np.ndarray
    next_activity: list[str]
    elapsed_hours: np.ndarray
    remaining_hours: np.ndarray
    case_start: np.ndarray
    sequences: list[tuple[str, ...]]


@dataclass
class PrefixSet:
    """Prefix features with their case, length and targets, row-aligned."""

    X: pd.DataFrame
    case_id: np.ndarray
    prefix_len: np.ndarray
    next_activity: np.ndarray
    remaining_hours: np.ndarray
    elapsed_hours: np.ndarray
    case_start: np.ndarray
    sequences: list[tuple[str, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.X)

    def take(self, mask: np.ndarray) -> PrefixSet:
        """Rows where mask is true."""
        idx = np.flatnonzero(mask)
        return PrefixSet(
            X=self.X.iloc[idx].reset_index(drop=True),
            case_id=self.case_id[idx],
            prefix_len=self.prefix_len[idx],
            next_activity=self.next_activity[idx],
            remaining_hours=self.remaining_hours[idx],
            elapsed_hours=self.elapsed_hours[idx],
            case_start=self.case_start[idx],
            sequences=[self.sequences[i] for i in idx] if self.sequences else [],
        )


@dataclass
class PrefixMatrix:
    """Prefix features as LightGBM reads them (see `feature_matrix`), with each row's case, length and age."""

    values: np.ndarray
    case_id: np.ndarray
    prefix_len: np.ndarray
    elapsed_hours: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


class EncoderState:
    """What PrefixEncoder's two encoding paths read from it: hyper-parameters and the fitted vocabularies."""

    k: int
    time_trend: bool
    origin_: pd.Timestamp
    activities_: list[str]
    bag_activities_: list[str]
    case_attributes_: list[str]
    event_attributes_: list[str]
    categories_: dict[str, list[str]]
    numeric_: list[str]
    stems_: dict[str, str]  # source column -> its unique feature-name stem (unique_safe_names)
    feature_names_: list[str]
