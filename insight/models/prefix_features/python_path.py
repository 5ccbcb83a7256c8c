"""The small-input prefix encoder: plain Python over the events, numpy for the time arithmetic.

Live triage encodes one or a few events; pandas' fixed cost (groupby / shift / transform even on one event)
dominated it. This path gives the very features of the pandas path (`pandas_path.py`, the reference the tests
compare against) without that cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from insight.eventlog.schema import ACTIVITY, CASE_ID, TIMESTAMP
from insight.models.prefix_features.data import (
    END,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    EncodedPrefixes,
    EncoderState,
    PrefixMatrix,
    PrefixSet,
)
from insight.models.values import number_value, plain_str, text_value

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


class SmallInputEncoding(EncoderState):
    """PrefixEncoder's small-input path (a mixin: reads the encoder's fitted vocabularies)."""


    def _attr_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.event_attributes_, *self.case_attributes_]))

    def _encode_small_frame(self, df: pd.DataFrame, *, with_sequences: bool) -> EncodedPrefixes | None:
        ts_col = df[TIMESTAMP]
        if not isinstance(ts_col.dtype, pd.DatetimeTZDtype) or str(ts_col.dtype.tz) != "UTC":
            return None
        arr = ts_col.array
        if arr.isna().any():
            return None
        case = plain_str(df[CASE_ID].tolist())
        acts = plain_str(df[ACTIVITY].tolist())
        if case is None or acts is None:
            return None
        ts = np.asarray(arr.asi8).view(f"datetime64[{arr.unit}]")
        attrs = {col: df[col].tolist() for col in self._attr_columns()}
        return self._encode_small(case, acts, ts, attrs, with_sequences=with_sequences)

    def _encode_small_events(self, events: list[Mapping[str, Any]]) -> EncodedPrefixes | None:
        case = plain_str([e[CASE_ID] for e in events])
        acts = plain_str([e[ACTIVITY] for e in events])
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
                      with_sequences: bool) -> EncodedPrefixes:
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
        elapsed = _total_seconds(ts - t0) / SECONDS_PER_HOUR
        cols["elapsed_h"] = elapsed
        since = _total_seconds(ts - prev) / SECONDS_PER_HOUR
        cols["since_last_h"] = np.where(np.isnan(since), 0.0, since)
        cols["prev_gap_h"] = _total_seconds(prev - prev2) / SECONDS_PER_HOUR
        weekday, hour, minute = _calendar(ts)
        cols["weekday"] = weekday
        cols["hour"] = hour + minute / 60.0
        start_weekday, start_hour, _ = _calendar(t0)
        cols["start_hour"] = start_hour
        cols["start_weekday"] = start_weekday
        if self.time_trend:
            cols["case_start_days"] = _total_seconds(t0 - self.origin_.to_datetime64()) / SECONDS_PER_DAY

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
            safe = self.stems_[col]
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
            name = f"case_{self.stems_[col]}"
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
        return EncodedPrefixes(cols=cols, categories=categories, case_id=case, pos=pos, next_activity=nxt,
                        elapsed_hours=elapsed, remaining_hours=_total_seconds(tend - ts) / SECONDS_PER_HOUR,
                        case_start=t0, sequences=seqs)

    def _prefix_set(self, enc: EncodedPrefixes) -> PrefixSet:
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

    def _prefix_matrix(self, enc: EncodedPrefixes) -> PrefixMatrix:
        n = len(enc.case_id)
        values = np.empty((n, len(self.feature_names_)), dtype=np.float64)
        for j, name in enumerate(self.feature_names_):
            col = enc.cols[name]
            values[:, j] = np.where(col < 0, np.nan, col) if name in enc.categories else col
        return PrefixMatrix(values=values, case_id=np.asarray(enc.case_id, dtype=object), prefix_len=enc.pos + 1,
                            elapsed_hours=enc.elapsed_hours)
