"""Turn an event log into one row per case prefix: features known after each event, plus the targets.

Every prefix of every case is produced (lengths 1..n); the target of the full-length prefix is the end-of-case
class, so "will the case end now?" is learned and scored like any other next step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from insight.errors import InvalidEventLog
from insight.eventlog.schema import ACTIVITY, CASE_ID, GROUP, RESOURCE, TIMESTAMP

END = "<END>"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _safe(col: str) -> str:
    # LightGBM refuses JSON-special characters in feature names; source columns may hold any.
    return _UNSAFE.sub("_", str(col))


_SECONDS_PER_HOUR = 3600.0
_SECONDS_PER_DAY = 86400.0
# Relative timing and calendar columns; `timing=False` leaves them out (they drift when a process speeds up/slows).
_TIMING_COLUMNS = ("elapsed_h", "since_last_h", "prev_gap_h", "weekday", "hour", "start_hour", "start_weekday")


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


def _frame(log: Any) -> pd.DataFrame:
    df = log.df if hasattr(log, "df") else log
    for col in (CASE_ID, ACTIVITY, TIMESTAMP):
        if col not in df.columns:
            raise InvalidEventLog(f"prefix features need column {col!r}", file=getattr(log, "name", None), column=col)
    return df


class PrefixEncoder:
    """Learns the vocabularies of a training log and encodes prefixes of any log with them (sklearn-style)."""

    def __init__(
        self,
        *,
        k: int = 5,
        case_attributes: list[str] | None = None,
        event_attributes: list[str] | None = None,
        max_bag_activities: int = 60,
        max_categories: int = 200,
        timing: bool = True,
        time_trend: bool = False,
    ) -> None:
        self.timing = timing
        self.time_trend = time_trend
        self.k = k
        self.case_attributes = case_attributes
        self.event_attributes = event_attributes
        self.max_bag_activities = max_bag_activities
        self.max_categories = max_categories

    def fit(self, log: Any) -> PrefixEncoder:
        """Learn activity and attribute vocabularies from the training log."""
        df = _frame(log)
        acts = df[ACTIVITY].astype(str)
        counts = acts.value_counts()
        self.activities_ = sorted(counts.index.tolist())
        # Absolute time is measured from the training log's first event, so the trend column means the same later.
        self.origin_ = pd.Timestamp(df[TIMESTAMP].min())
        self.bag_activities_ = sorted(counts.index[: self.max_bag_activities].tolist())
        case_attrs = self.case_attributes
        if case_attrs is None:
            case_attrs = list(getattr(log, "case_attributes", []) or [])
        self.case_attributes_ = [c for c in case_attrs if c in df.columns and c not in (CASE_ID, ACTIVITY, TIMESTAMP)]
        ev_attrs = self.event_attributes
        if ev_attrs is None:
            ev_attrs = [c for c in (RESOURCE, GROUP) if c in df.columns]
        self.event_attributes_ = [c for c in ev_attrs if c in df.columns]
        # Categories kept per attribute: the most frequent ones; rarer values share one "other" level.
        self.categories_: dict[str, list[str]] = {}
        self.numeric_: list[str] = []
        for col in self.case_attributes_ + self.event_attributes_:
            s = df[col]
            if col in self.case_attributes_ and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                self.numeric_.append(col)
                continue
            vc = s.dropna().astype(str).value_counts()
            self.categories_[col] = sorted(vc.index[: self.max_categories].tolist()) + ["__other__"]
        self.feature_names_ = list(self._empty_columns())
        return self

    def _check(self) -> None:
        if not hasattr(self, "activities_"):
            raise NotFittedError("PrefixEncoder is not fitted; call fit(log) first")

    def _empty_columns(self) -> list[str]:
        cols = [f"act_lag{i}" for i in range(self.k)]
        cols.append("prefix_len")
        if self.timing:
            cols += list(_TIMING_COLUMNS)
        if self.time_trend:
            cols.append("case_start_days")
        cols.append("n_repeats_last")
        cols += [f"cnt_{i}" for i in range(len(self.bag_activities_))]
        for col in self.event_attributes_:
            cols += [f"last_{_safe(col)}", f"first_{_safe(col)}", f"nchg_{_safe(col)}"]
        for col in self.case_attributes_:
            cols.append(f"case_{_safe(col)}")
        return cols

    def _cat(self, s: pd.Series, cats: list[str]) -> pd.Series:
        v = s.astype("string")
        known = v.isin(cats[:-1])
        v = v.where(known | v.isna(), "__other__")
        return pd.Series(pd.Categorical(v.astype(object), categories=cats), index=s.index)

    def transform(self, log: Any, *, with_sequences: bool = False) -> PrefixSet:
        """One row per prefix (every event of every case) with features and targets."""
        self._check()
        df = _frame(log).reset_index(drop=True)
        # Rows must be in case/time order for the running features; EventLog guarantees it, plain frames may not.
        order = np.lexsort((np.arange(len(df)), df[TIMESTAMP].to_numpy(), df[CASE_ID].astype(str).to_numpy()))
        if not np.array_equal(order, np.arange(len(df))):
            df = df.iloc[order].reset_index(drop=True)
        case = df[CASE_ID].astype(str)
        g = case.groupby(case, sort=False)
        acts = df[ACTIVITY].astype(str)
        act_cats = list(self.activities_) + ["__other__"]
        act_cat = self._cat(acts, act_cats)
        codes = pd.Series(act_cat.cat.codes.astype(np.int16), index=df.index)
        out: dict[str, Any] = {}
        for i in range(self.k):
            lag = codes.groupby(case, sort=False).shift(i)
            out[f"act_lag{i}"] = pd.Categorical.from_codes(
                lag.fillna(-1).astype(int).to_numpy(), categories=act_cats
            )
        pos = g.cumcount().to_numpy()
        out["prefix_len"] = pos + 1
        ts = df[TIMESTAMP]
        t0 = ts.groupby(case, sort=False).transform("min")
        tend = ts.groupby(case, sort=False).transform("max")
        prev = ts.groupby(case, sort=False).shift(1)
        prev2 = ts.groupby(case, sort=False).shift(2)
        elapsed = (ts - t0).dt.total_seconds().to_numpy() / _SECONDS_PER_HOUR
        out["elapsed_h"] = elapsed
        out["since_last_h"] = ((ts - prev).dt.total_seconds() / _SECONDS_PER_HOUR).fillna(0.0).to_numpy()
        out["prev_gap_h"] = ((prev - prev2).dt.total_seconds() / _SECONDS_PER_HOUR).to_numpy()
        out["weekday"] = ts.dt.weekday.to_numpy()
        out["hour"] = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy()
        out["start_hour"] = t0.dt.hour.to_numpy()
        out["start_weekday"] = t0.dt.weekday.to_numpy()
        if getattr(self, "time_trend", False):  # encoders pickled before this option lack the attribute
            out["case_start_days"] = (t0 - self.origin_).dt.total_seconds().to_numpy() / _SECONDS_PER_DAY
        # How often the current activity already occurred in this case: loops are a strong next-step signal.
        out["n_repeats_last"] = df.assign(_c=case, _a=acts).groupby(["_c", "_a"], sort=False).cumcount().to_numpy() + 1
        for j, a in enumerate(self.bag_activities_):
            out[f"cnt_{j}"] = (acts == a).astype(np.int16).groupby(case, sort=False).cumsum().to_numpy()
        for col in self.event_attributes_:
            cats = self.categories_[col]
            s = df[col]
            filled = s.groupby(case, sort=False).ffill()
            out[f"last_{_safe(col)}"] = self._cat(filled, cats).array
            first = s.groupby(case, sort=False).transform("first")
            out[f"first_{_safe(col)}"] = self._cat(first, cats).array
            sv = filled.astype("string").fillna("")
            changed = (sv != sv.groupby(case, sort=False).shift(1).fillna(sv)).astype(np.int16)
            out[f"nchg_{_safe(col)}"] = changed.groupby(case, sort=False).cumsum().to_numpy()
        for col in self.case_attributes_:
            first = df[col].groupby(case, sort=False).transform("first")
            if col in self.numeric_:
                out[f"case_{_safe(col)}"] = pd.to_numeric(first, errors="coerce").to_numpy(dtype=float)
            else:
                out[f"case_{_safe(col)}"] = self._cat(first, self.categories_[col]).array
        X = pd.DataFrame(out)[self.feature_names_]
        nxt = acts.groupby(case, sort=False).shift(-1).fillna(END).to_numpy(dtype=object)
        remaining = (tend - ts).dt.total_seconds().to_numpy() / _SECONDS_PER_HOUR
        seqs: list[tuple[str, ...]] = []
        if with_sequences:
            cur: list[str] = []
            last_case = None
            for c, a in zip(case.to_numpy(), acts.to_numpy(), strict=True):
                if c != last_case:
                    cur = []
                    last_case = c
                cur.append(a)
                seqs.append(tuple(cur))
        return PrefixSet(
            X=X,
            case_id=case.to_numpy(dtype=object),
            prefix_len=pos + 1,
            next_activity=nxt,
            remaining_hours=remaining,
            elapsed_hours=elapsed,
            case_start=t0.to_numpy(),
            sequences=seqs,
        )


def time_ordered_case_split(log: Any, *, test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """Split case ids by case start time: the oldest (1 - test_fraction) train, the newest test."""
    df = _frame(log)
    starts = df.groupby(df[CASE_ID].astype(str), sort=False)[TIMESTAMP].min().sort_values(kind="stable")
    n_test = max(1, int(round(len(starts) * test_fraction)))
    ids = starts.index.tolist()
    return ids[:-n_test], ids[-n_test:]
