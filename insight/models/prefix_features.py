"""Turn an event log into one row per case prefix: features known after each event, plus the targets.

Every prefix of every case is produced (lengths 1..n); the target of the full-length prefix is the end-of-case
class, so "will the case end now?" is learned and scored like any other next step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from insight.errors import InvalidEventLog, InvalidInput
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
# Inputs of at most this many events are encoded row by row in Python: the same features as the pandas path
# without its fixed cost (groupby / shift / transform even on one event), which dominated live triage. On
# simulated logs the Python path stays faster well beyond this size (docs/PERFORMANCE.md); training keeps the
# pandas path, the reference the tests compare against.
SMALL_INPUT_ROWS = 5000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _total_seconds(delta: np.ndarray) -> np.ndarray:
    """Seconds of a timedelta64 array (NaT -> NaN), computed as pandas' TimedeltaArray.total_seconds does."""
    pps = _TICKS_PER_SECOND[np.datetime_data(delta.dtype)[0]]
    ticks = delta.view(np.int64)
    floor_s, residual = np.divmod(ticks, pps)
    result = floor_s + residual / pps
    if (ticks > 2**53).any() or (ticks < -(2**53)).any():
        # pandas nudges values that rounded onto a whole second back inside it; the same here, bit for bit.
        fixable = (residual != 0) & (np.abs(floor_s) < 2**52)
        floor_f = floor_s.astype(np.float64)
        on_floor = fixable & (result == floor_f)
        on_ceil = fixable & (result == floor_f + 1.0)
        result = np.where(on_floor, np.nextafter(result, result + 1.0), result)
        result = np.where(on_ceil, np.nextafter(result, result - 1.0), result)
    return np.where(np.isnat(delta), np.nan, result)


def _calendar(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekday (Monday 0), hour and minute of UTC datetime64 values, as int32 like pandas' `.dt` accessors."""
    pps = _TICKS_PER_SECOND[np.datetime_data(ts.dtype)[0]]
    ticks = ts.view(np.int64)
    days = ticks // (86400 * pps)
    in_day = ticks - days * (86400 * pps)
    weekday = ((days + 3) % 7).astype(np.int32)  # 1970-01-01 was a Thursday
    hour = (in_day // (3600 * pps)).astype(np.int32)
    minute = ((in_day % (3600 * pps)) // (60 * pps)).astype(np.int32)
    return weekday, hour, minute


def text_value(value: Any) -> str | None:
    """The value as pandas' astype("string") spells it; None when it is missing."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if type(value) in (int, float, bool):
        return None if value != value else str(value)
    out = pd.Series([value], dtype=object).astype("string").iloc[0]
    return None if out is pd.NA else str(out)


def number_value(value: Any) -> float:
    """The value as pd.to_numeric(errors="coerce") reads it (NaN when missing or not a number)."""
    if value is None:
        return float("nan")
    if type(value) in (int, float):
        return float(value)
    return float(pd.to_numeric(pd.Series([value], dtype=object), errors="coerce").to_numpy(dtype=float)[0])


def _plain_str(values: list[Any]) -> list[str] | None:
    """Values as astype(str) spells them when they are all str or int (else None: the pandas path decides)."""
    if all(type(v) is str for v in values):
        return values
    if all(type(v) in (str, int) for v in values):
        return [str(v) for v in values]
    return None


def _first_so_far(s: pd.Series, case: pd.Series) -> pd.Series:
    """Per row, the first non-missing value among its case's rows up to and including it (rows in case order)."""
    present = s.notna()
    first_present = present & (present.astype(np.int64).groupby(case, sort=False).cumsum() == 1)
    return s.where(first_present).groupby(case, sort=False).ffill()


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
class _Encoded:
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


def _frame(log: Any) -> pd.DataFrame:
    df = log.df if hasattr(log, "df") else log
    for col in (CASE_ID, ACTIVITY, TIMESTAMP):
        if col not in df.columns:
            raise InvalidEventLog(f"prefix features need column {col!r}", file=getattr(log, "name", None), column=col)
    return df


# Column names (lower case, letters and digits only) that name the whole trace, whatever their values.
_TRACE_ID_NAMES = frozenset({"caseid", "case", "caseconceptname", "conceptname", "trace", "traceid", "tracename",
                             "traceconceptname", "caseindex", "traceindex", "sourcecaseid"})
_TRACE_COUNT_NAMES = frozenset({"events", "nevents", "numevents", "eventcount", "eventscount", "nofevents",
                                "numberofevents", "tracelength", "caselength", "caselen", "tracelen"})
# A value-to-variant correspondence is only evidence when variants repeat and there are a few of them.
_MIN_VARIANT_VALUES = 3


def trace_attribute_problem(df: pd.DataFrame, col: str) -> str | None:
    """Why `col` names the whole trace (so no prefix may read it), or None when it does not.

    Refused: variant labels / indices (a Disco or pm4py export repeats them on every event), case ids and
    XES trace names, and event counts, recognised by name; and any column constant within every case whose
    per-case value is the case id, equals the case's number of events, or corresponds one to one to the case's
    complete activity sequence (a variant under another name).
    """
    key = re.sub(r"[^a-z0-9]", "", str(col).lower())
    if "variant" in key:
        return "it names the case's variant, i.e. its complete sequence of activities, known only when it ends"
    if key in _TRACE_ID_NAMES or key.removeprefix("case") in _TRACE_ID_NAMES - {"case"}:
        return "it identifies the whole case (a case id or trace name), which predicts nothing about new cases"
    if key in _TRACE_COUNT_NAMES or key.removeprefix("case") in _TRACE_COUNT_NAMES:
        return "it counts the case's events, known only when the case ends"
    if col not in df.columns or CASE_ID not in df.columns or ACTIVITY not in df.columns or df.empty:
        return None
    case = df[CASE_ID].astype(str)
    values = df[col]
    codes = pd.Series(pd.factorize(values, use_na_sentinel=False)[0], index=df.index)
    if bool((codes.groupby(case, sort=False).nunique() > 1).any()):
        return None  # changes within a case: an event attribute, read causally
    per_case = values.groupby(case, sort=False).first()
    n_cases = len(per_case)
    if per_case.notna().all() and bool((per_case.astype(str) == per_case.index.to_series()).all()):
        return "it repeats the case id on every event"
    sizes = case.groupby(case, sort=False).size()
    numeric = pd.to_numeric(per_case, errors="coerce")
    if numeric.notna().all() and sizes.nunique() > 1 and bool((numeric.to_numpy() == sizes.to_numpy()).all()):
        return "it equals the case's number of events, known only when the case ends"
    per_case = per_case.dropna()
    if len(per_case) < 2 * _MIN_VARIANT_VALUES:
        return None
    seqs = df[ACTIVITY].astype(str).groupby(case, sort=False).agg(tuple).reindex(per_case.index)
    pairs = pd.DataFrame({"v": per_case.astype(str).to_numpy(), "s": seqs.to_numpy()})
    n_values = pairs["v"].nunique()
    one_to_one = (pairs.groupby("v")["s"].nunique().max() == 1) and (pairs.groupby("s")["v"].nunique().max() == 1)
    if one_to_one and _MIN_VARIANT_VALUES <= n_values < len(pairs):
        return ("its value corresponds one to one to the case's complete sequence of activities (a variant "
                "label under another name), known only when the case ends")
    if n_values == n_cases >= 20 and not pd.api.types.is_numeric_dtype(values):
        return "it takes a different value in every case (an identifier), which predicts nothing about new cases"
    return None


def check_prefix_columns(log: Any, columns: Sequence[str], *, kind: str) -> None:
    """Raise InvalidInput naming the first column that is absent or names the whole trace."""
    df = _frame(log)
    for col in columns:
        if col in (CASE_ID, ACTIVITY, TIMESTAMP):
            raise InvalidInput(f"{kind} {col!r} cannot be a feature: it is a required log column", field=col)
        if col not in df.columns:
            raise InvalidInput(f"{kind} {col!r} is not a column of log {getattr(log, 'name', '')!r}; "
                               f"it has {[c for c in df.columns]}", field=col)
        why = trace_attribute_problem(df, col)
        if why is not None:
            raise InvalidInput(f"{kind} {col!r} is refused as a prefix feature: {why}", field=col)


class PrefixEncoder(BaseEstimator):
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
        df = _frame(log)
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
        self.feature_names_ = list(self._empty_columns())
        return self

    def _check(self) -> None:
        check_is_fitted(self, "activities_", msg="%(name)s is not fitted; call fit(log) first")

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

    def transform(
        self, log: Any, *, with_sequences: bool = False, method: Literal["auto", "pandas", "python"] = "auto"
    ) -> PrefixSet:
        """One row per prefix (every event of every case) with features and targets.

        `method="auto"` encodes inputs of at most SMALL_INPUT_ROWS events row by row in Python (identical
        output, no pandas groupby cost) and larger ones with pandas; "pandas" / "python" force one path.
        """
        self._check()
        df = self._with_attr_columns(_frame(log))
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

    # ---- the small-input path: plain Python over the events, numpy for the time arithmetic

    def _attr_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.event_attributes_, *self.case_attributes_]))

    def _with_attr_columns(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` with every learned attribute column; one the input lacks (a custom field a helpdesk did not send) is
        all missing, which is what the encoder was trained to see for "unknown"."""
        absent = [c for c in self._attr_columns() if c not in df.columns]
        return df.assign(**{c: None for c in absent}) if absent else df

    def _encode_small_frame(self, df: pd.DataFrame, *, with_sequences: bool) -> _Encoded | None:
        ts_col = df[TIMESTAMP]
        if not isinstance(ts_col.dtype, pd.DatetimeTZDtype) or str(ts_col.dtype.tz) != "UTC":
            return None
        arr = ts_col.array
        if arr.isna().any():
            return None
        case = _plain_str(df[CASE_ID].tolist())
        acts = _plain_str(df[ACTIVITY].tolist())
        if case is None or acts is None:
            return None
        ts = np.asarray(arr.asi8).view(f"datetime64[{arr.unit}]")
        attrs = {col: df[col].tolist() for col in self._attr_columns()}
        return self._encode_small(case, acts, ts, attrs, with_sequences=with_sequences)

    def _encode_small_events(self, events: list[Mapping[str, Any]]) -> _Encoded | None:
        case = _plain_str([e[CASE_ID] for e in events])
        acts = _plain_str([e[ACTIVITY] for e in events])
        if case is None or acts is None:
            return None
        stamps = [e[TIMESTAMP] for e in events]
        if all(isinstance(t, datetime) and not isinstance(t, pd.Timestamp) for t in stamps):
            # What pd.to_datetime(utc=True) makes of datetimes: microseconds, naive read as UTC.
            ticks = [((t if t.tzinfo is not None else t.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND
                     for t in stamps]
            ts = np.asarray(ticks, dtype=np.int64).view("datetime64[us]")
        else:
            conv = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True).array
            if conv.isna().any():
                return None
            ts = np.asarray(conv.asi8).view(f"datetime64[{conv.unit}]")
        attrs = {col: [e.get(col) for e in events] for col in self._attr_columns()}
        return self._encode_small(case, acts, ts, attrs, with_sequences=False)

    def _encode_small(self, case: list[str], acts: list[str], ts: np.ndarray, attrs: dict[str, list[Any]], *,
                      with_sequences: bool) -> _Encoded:
        n = len(case)
        # The pandas path's row order: case id (as str), then time, then position.
        ticks = ts.view(np.int64).tolist()
        order = sorted(range(n), key=lambda i: (case[i], ticks[i]))
        if order != list(range(n)):
            case = [case[i] for i in order]
            acts = [acts[i] for i in order]
            ts = ts[np.asarray(order, dtype=np.int64)]
            attrs = {c: [v[i] for i in order] for c, v in attrs.items()}
        # Case boundaries: rows start[r]..end[r] belong to the case of row r.
        pos_l = [0] * n
        start_l = [0] * n
        end_l = [0] * n
        segments: list[tuple[int, int]] = []
        i = 0
        while i < n:
            j = i
            while j + 1 < n and case[j + 1] == case[i]:
                j += 1
            segments.append((i, j))
            for r in range(i, j + 1):
                pos_l[r], start_l[r], end_l[r] = r - i, i, j
            i = j + 1
        pos = np.asarray(pos_l, dtype=np.int64)
        start = np.asarray(start_l, dtype=np.int64)
        end = np.asarray(end_l, dtype=np.int64)
        idx = np.arange(n, dtype=np.int64)
        cols: dict[str, np.ndarray] = {}
        categories: dict[str, list[str]] = {}

        act_cats = [*self.activities_, "__other__"]
        act_index = {a: c for c, a in enumerate(self.activities_)}
        codes = np.asarray([act_index.get(a, len(self.activities_)) for a in acts], dtype=np.int64)
        for lag in range(self.k):
            name = f"act_lag{lag}"
            cols[name] = np.where(pos >= lag, codes[np.maximum(idx - lag, 0)], -1)
            categories[name] = act_cats
        cols["prefix_len"] = pos + 1

        nat = np.array("NaT", dtype=ts.dtype)
        t0, tend = ts[start], ts[end]
        prev = np.where(pos >= 1, ts[np.maximum(idx - 1, 0)], nat)
        prev2 = np.where(pos >= 2, ts[np.maximum(idx - 2, 0)], nat)
        elapsed = _total_seconds(ts - t0) / _SECONDS_PER_HOUR
        cols["elapsed_h"] = elapsed
        since = _total_seconds(ts - prev) / _SECONDS_PER_HOUR
        cols["since_last_h"] = np.where(np.isnan(since), 0.0, since)
        cols["prev_gap_h"] = _total_seconds(prev - prev2) / _SECONDS_PER_HOUR
        weekday, hour, minute = _calendar(ts)
        cols["weekday"] = weekday
        cols["hour"] = hour + minute / 60.0
        start_weekday, start_hour, _ = _calendar(t0)
        cols["start_hour"] = start_hour
        cols["start_weekday"] = start_weekday
        if self.time_trend:
            cols["case_start_days"] = _total_seconds(t0 - self.origin_.to_datetime64()) / _SECONDS_PER_DAY

        bag = {a: j for j, a in enumerate(self.bag_activities_)}
        counts = np.zeros((n, len(bag)), dtype=np.int16)
        repeats = np.empty(n, dtype=np.int64)
        for i, j in segments:
            running = np.zeros(len(bag), dtype=np.int16)
            seen: dict[str, int] = {}
            for r in range(i, j + 1):
                a = acts[r]
                seen[a] = seen.get(a, 0) + 1
                repeats[r] = seen[a]
                b = bag.get(a)
                if b is not None:
                    running[b] += 1
                counts[r] = running
        cols["n_repeats_last"] = repeats
        for b in range(len(bag)):
            cols[f"cnt_{b}"] = counts[:, b]

        for col in self.event_attributes_:
            cats = self.categories_[col]
            index = {c: k for k, c in enumerate(cats[:-1])}
            other = len(cats) - 1
            raw = [text_value(v) for v in attrs[col]]
            last = np.empty(n, dtype=np.int64)
            first = np.empty(n, dtype=np.int64)
            changes = np.empty(n, dtype=np.int16)
            for i, j in segments:
                # The first value seen so far in this prefix (never one of a later event).
                first_code = -1
                current: str | None = None
                shown = ""
                n_changes = 0
                for r in range(i, j + 1):
                    value = raw[r]
                    if value is not None:
                        if current is None:
                            first_code = index.get(value, other)
                        current = value
                    now_shown = current if current is not None else ""
                    if r > i and now_shown != shown:
                        n_changes += 1
                    shown = now_shown
                    last[r] = -1 if current is None else index.get(current, other)
                    first[r] = first_code
                    changes[r] = n_changes
            safe = _safe(col)
            cols[f"last_{safe}"], cols[f"first_{safe}"], cols[f"nchg_{safe}"] = last, first, changes
            categories[f"last_{safe}"] = categories[f"first_{safe}"] = cats

        for col in self.case_attributes_:
            # A declared case attribute as first seen in the prefix: missing until an event of the prefix has it.
            values = attrs[col]
            firsts: list[Any] = [None] * n
            for i, j in segments:
                known: Any = None
                for r in range(i, j + 1):
                    if known is None and text_value(values[r]) is not None:
                        known = values[r]
                    firsts[r] = known
            name = f"case_{_safe(col)}"
            if col in self.numeric_:
                cols[name] = np.asarray([number_value(v) for v in firsts], dtype=np.float64)
            else:
                cats = self.categories_[col]
                index = {c: k for k, c in enumerate(cats[:-1])}
                texts = [text_value(v) for v in firsts]
                cols[name] = np.asarray([-1 if t is None else index.get(t, len(cats) - 1) for t in texts],
                                        dtype=np.int64)
                categories[name] = cats

        nxt = [acts[r + 1] if r < end_l[r] else END for r in range(n)]
        seqs: list[tuple[str, ...]] = []
        if with_sequences:
            seqs = [tuple(acts[start_l[r]:r + 1]) for r in range(n)]
        return _Encoded(cols=cols, categories=categories, case_id=case, pos=pos, next_activity=nxt,
                        elapsed_hours=elapsed, remaining_hours=_total_seconds(tend - ts) / _SECONDS_PER_HOUR,
                        case_start=t0, sequences=seqs)

    def _prefix_set(self, enc: _Encoded) -> PrefixSet:
        data: dict[str, Any] = {}
        for name in self.feature_names_:
            values = enc.cols[name]
            cats = enc.categories.get(name)
            data[name] = values if cats is None else pd.Categorical.from_codes(values, categories=cats)
        unit = np.datetime_data(enc.case_start.dtype)[0]
        starts = pd.to_datetime(enc.case_start.view(np.int64), unit=unit, utc=True)  # type: ignore[call-overload]
        return PrefixSet(
            X=pd.DataFrame(data),
            case_id=np.asarray(enc.case_id, dtype=object),
            prefix_len=enc.pos + 1,
            next_activity=np.asarray(enc.next_activity, dtype=object),
            remaining_hours=enc.remaining_hours,
            elapsed_hours=enc.elapsed_hours,
            case_start=np.asarray(starts.to_numpy(dtype=object)),
            sequences=enc.sequences,
        )

    def _prefix_matrix(self, enc: _Encoded) -> PrefixMatrix:
        n = len(enc.case_id)
        values = np.empty((n, len(self.feature_names_)), dtype=np.float64)
        for j, name in enumerate(self.feature_names_):
            col = enc.cols[name]
            values[:, j] = np.where(col < 0, np.nan, col) if name in enc.categories else col
        return PrefixMatrix(values=values, case_id=np.asarray(enc.case_id, dtype=object), prefix_len=enc.pos + 1,
                            elapsed_hours=enc.elapsed_hours)

    # ---- the pandas path (any size)

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
        elapsed = (ts - t0).dt.total_seconds().to_numpy() / _SECONDS_PER_HOUR
        out["elapsed_h"] = elapsed
        out["since_last_h"] = ((ts - prev).dt.total_seconds() / _SECONDS_PER_HOUR).fillna(0.0).to_numpy()
        out["prev_gap_h"] = ((prev - prev2).dt.total_seconds() / _SECONDS_PER_HOUR).to_numpy()
        out["weekday"] = ts.dt.weekday.to_numpy()
        out["hour"] = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy()
        out["start_hour"] = t0.dt.hour.to_numpy()
        out["start_weekday"] = t0.dt.weekday.to_numpy()
        if self.time_trend:
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
            out[f"first_{_safe(col)}"] = self._cat(_first_so_far(s, case), cats).array
            sv = filled.astype("string").fillna("")
            changed = (sv != sv.groupby(case, sort=False).shift(1).fillna(sv)).astype(np.int16)
            out[f"nchg_{_safe(col)}"] = changed.groupby(case, sort=False).cumsum().to_numpy()
        for col in self.case_attributes_:
            first = _first_so_far(df[col], case)
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
