"""PrefixEncoder: learns a training log's vocabularies and encodes every prefix of any log with them.

Inputs of at most SMALL_INPUT_ROWS events go through the small-input path (python_path.py), larger ones through
pandas (pandas_path.py); both give the same features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.schema import ACTIVITY, CASE_ID, GROUP, RESOURCE, TIMESTAMP
from insight.models.prefix_features.data import (
    TIMING_COLUMNS,
    PrefixMatrix,
    PrefixSet,
    feature_matrix,
    unique_safe_names,
)
from insight.models.prefix_features.leakage import check_prefix_columns, event_frame, trace_attribute_problem
from insight.models.prefix_features.pandas_path import PandasEncoding
from insight.models.prefix_features.python_path import SMALL_INPUT_ROWS, SmallInputEncoding


class PrefixEncoder(SmallInputEncoding, PandasEncoding, BaseEstimator):
    """Learns the vocabularies of a training log and encodes prefixes of any log with them (a scikit-learn transformer).

    Every feature of a prefix reads only that prefix's events. Trace-level (case) attributes are features only
    when declared in `case_attributes` (known when a case is created); by default none is used, whatever
    `log.case_attributes` lists: an XES trace attribute or a column constant within every case may have been
    recorded after the case ended. Declared and explicitly listed event attributes that name the whole trace
    (see `trace_attribute_problem`) are refused with InvalidInput.
    """

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
        df = event_frame(log)
        acts = df[ACTIVITY].astype(str)
        counts = acts.value_counts()
        self.activities_ = sorted(counts.index.tolist())
        # Absolute time is measured from the training log's first event, so the trend column means the same later.
        self.origin_ = pd.Timestamp(df[TIMESTAMP].min())
        self.bag_activities_ = sorted(counts.index[: self.max_bag_activities].tolist())
        # Case attributes only when declared known at creation; never taken from the log's trace attributes.
        self.case_attributes_ = list(dict.fromkeys(self.case_attributes or []))
        check_prefix_columns(log, self.case_attributes_, kind="case feature")
        trace_level = set(getattr(log, "case_attributes", []) or [])
        if self.event_attributes is None:
            # Automatic choice: the canonical per-event columns, never a trace-level one.
            ev_attrs = [c for c in (RESOURCE, GROUP) if c in df.columns and c not in trace_level
                        and trace_attribute_problem(df, c) is None]
        else:
            ev_attrs = list(dict.fromkeys(self.event_attributes))
            check_prefix_columns(log, ev_attrs, kind="event attribute")
            leaked = [c for c in ev_attrs if c in trace_level and c not in (RESOURCE, GROUP)]
            if leaked:
                raise InvalidInput(
                    f"event attribute {leaked[0]!r} is a trace-level attribute of log {getattr(log, 'name', '')!r} "
                    "(an XES trace attribute or a value that never changes within a case), which may have been "
                    "recorded after the case ended; declare it as a case feature if it is known when a case "
                    "is created", field=leaked[0])
        self.event_attributes_ = [c for c in ev_attrs if c not in self.case_attributes_]
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
        self.stems_ = unique_safe_names([*self.event_attributes_, *self.case_attributes_])
        self.feature_names_ = list(self._empty_columns())
        return self

    def _check(self) -> None:
        check_is_fitted(self, "activities_", msg="%(name)s is not fitted; call fit(log) first")

    def _empty_columns(self) -> list[str]:
        cols = [f"act_lag{i}" for i in range(self.k)]
        cols.append("prefix_len")
        if self.timing:
            cols += list(TIMING_COLUMNS)
        if self.time_trend:
            cols.append("case_start_days")
        cols.append("n_repeats_last")
        cols += [f"cnt_{i}" for i in range(len(self.bag_activities_))]
        for col in self.event_attributes_:
            stem = self.stems_[col]
            cols += [f"last_{stem}", f"first_{stem}", f"nchg_{stem}"]
        for col in self.case_attributes_:
            cols.append(f"case_{self.stems_[col]}")
        return cols

    def transform(
        self, log: Any, *, with_sequences: bool = False, method: Literal["auto", "pandas", "python"] = "auto"
    ) -> PrefixSet:
        """One row per prefix (every event of every case) with features and targets.

        `method="auto"` encodes inputs of at most SMALL_INPUT_ROWS events row by row in Python (identical
        output, no pandas groupby cost) and larger ones with pandas; "pandas" / "python" force one path.
        """
        self._check()
        df = self._with_attr_columns(event_frame(log))
        if method == "python" or (method == "auto" and len(df) <= SMALL_INPUT_ROWS):
            enc = self._encode_small_frame(df, with_sequences=with_sequences)
            if enc is not None:
                return self._prefix_set(enc)
            if method == "python":
                raise InvalidInput("this log cannot be encoded without pandas (case ids or activities that are "
                                   "not str / int, or timestamps that are not tz-aware UTC without gaps); "
                                   "use method='auto'")
        return self._transform_pandas(df, with_sequences=with_sequences)

    def encode_events(self, events: Sequence[Mapping[str, Any]]) -> PrefixMatrix:
        """Every prefix of the cases in `events` as LightGBM reads it: the rows transform() gives for their log.

        Each event is a mapping with case_id, activity, timestamp (datetime; naive means UTC) and any attributes
        the encoder reads (absent = missing). Small inputs skip pandas entirely (live triage encodes one event).
        """
        self._check()
        events = list(events)
        for i, e in enumerate(events):
            for col in (CASE_ID, ACTIVITY, TIMESTAMP):
                if e.get(col) is None:
                    raise InvalidEventLog(f"event {i} lacks {col!r}", column=col)
        if len(events) <= SMALL_INPUT_ROWS:
            enc = self._encode_small_events(events)
            if enc is not None:
                return self._prefix_matrix(enc)
        df = self._with_attr_columns(pd.DataFrame(events))
        df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP], utc=True)
        ps = self._transform_pandas(df, with_sequences=False)
        return PrefixMatrix(values=feature_matrix(ps.X), case_id=ps.case_id, prefix_len=ps.prefix_len,
                            elapsed_hours=ps.elapsed_hours)

    def _with_attr_columns(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` with every learned attribute column; one the input lacks (a custom field a helpdesk did not send) is
        all missing, which is what the encoder was trained to see for "unknown"."""
        absent = [c for c in self._attr_columns() if c not in df.columns]
        return df.assign(**{c: None for c in absent}) if absent else df
