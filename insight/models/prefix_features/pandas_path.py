"""The pandas prefix encoder, for inputs of any size (training): group-wise shifts and running counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from insight.eventlog.schema import ACTIVITY, CASE_ID, TIMESTAMP
from insight.models.prefix_features.data import (
    END,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    EncoderState,
    PrefixSet,
)


def _first_so_far(s: pd.Series, case: pd.Series) -> pd.Series:
    """Per row, the first non-missing value among its case's rows up to and including it (rows in case order)."""
    present = s.notna()
    first_present = present & (present.astype(np.int64).groupby(case, sort=False).cumsum() == 1)
    return s.where(first_present).groupby(case, sort=False).ffill()


class PandasEncoding(EncoderState):
    """PrefixEncoder's pandas path (a mixin: reads the encoder's fitted vocabularies)."""


    def _cat(self, s: pd.Series, cats: list[str]) -> pd.Series:
        v = s.astype("string")
        known = v.isin(cats[:-1])
        v = v.where(known | v.isna(), "__other__")
        return pd.Series(pd.Categorical(v.astype(object), categories=cats), index=s.index)

    def _transform_pandas(self, df: pd.DataFrame, *, with_sequences: bool) -> PrefixSet:
        df = df.reset_index(drop=True)
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
        elapsed = (ts - t0).dt.total_seconds().to_numpy() / SECONDS_PER_HOUR
        out["elapsed_h"] = elapsed
        out["since_last_h"] = ((ts - prev).dt.total_seconds() / SECONDS_PER_HOUR).fillna(0.0).to_numpy()
        out["prev_gap_h"] = ((prev - prev2).dt.total_seconds() / SECONDS_PER_HOUR).to_numpy()
        out["weekday"] = ts.dt.weekday.to_numpy()
        out["hour"] = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy()
        out["start_hour"] = t0.dt.hour.to_numpy()
        out["start_weekday"] = t0.dt.weekday.to_numpy()
        if self.time_trend:
            out["case_start_days"] = (t0 - self.origin_).dt.total_seconds().to_numpy() / SECONDS_PER_DAY
        # How often the current activity already occurred in this case: loops are a strong next-step signal.
        out["n_repeats_last"] = df.assign(_c=case, _a=acts).groupby(["_c", "_a"], sort=False).cumcount().to_numpy() + 1
        for j, a in enumerate(self.bag_activities_):
            out[f"cnt_{j}"] = (acts == a).astype(np.int16).groupby(case, sort=False).cumsum().to_numpy()
        for col in self.event_attributes_:
            cats = self.categories_[col]
            s = df[col]
            filled = s.groupby(case, sort=False).ffill()
            out[f"last_{self.stems_[col]}"] = self._cat(filled, cats).array
            out[f"first_{self.stems_[col]}"] = self._cat(_first_so_far(s, case), cats).array
            sv = filled.astype("string").fillna("")
            changed = (sv != sv.groupby(case, sort=False).shift(1).fillna(sv)).astype(np.int16)
            out[f"nchg_{self.stems_[col]}"] = changed.groupby(case, sort=False).cumsum().to_numpy()
        for col in self.case_attributes_:
            first = _first_so_far(df[col], case)
            if col in self.numeric_:
                out[f"case_{self.stems_[col]}"] = pd.to_numeric(first, errors="coerce").to_numpy(dtype=float)
            else:
                out[f"case_{self.stems_[col]}"] = self._cat(first, self.categories_[col]).array
        X = pd.DataFrame(out)[self.feature_names_]
        nxt = acts.groupby(case, sort=False).shift(-1).fillna(END).to_numpy(dtype=object)
        remaining = (tend - ts).dt.total_seconds().to_numpy() / SECONDS_PER_HOUR
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
