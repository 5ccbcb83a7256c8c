"""Time-ordered splits of an event log by case start: the oldest cases learn, the newest validate or test.

The one home of "split cases by start time":

* `case_starts`: when each case started (its first event; a ticket's `created_at` where a ticket table is given);
* `newest_count` / `split_newest`: the newest `fraction` of time-ordered cases, rounded, at least one, never
  all of them: the test part of every trainer and the validation cases of the prefix models
  (`time_ordered_case_split` / `split_log` cut an event log by it);
* `validation_count` / `cut_newest`: the validation rows carved from training rows already in creation order
  (the router's and the misroute model's hyper-parameter and calibration slices), rounded down, so a slice too
  small to validate is empty and the caller skips validation or refuses.

Training on logs too large to fit in memory: `sample_cases_by_window` keeps whole cases, a share of the cases
that start in each time window (so trends and seasonality keep their weight), chosen by a seeded hash of the case
id; the trainers apply it to the training part only, after the time split.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, TIMESTAMP, EventLog


def case_starts(log: Any, tickets: pd.DataFrame | None = None) -> pd.Series:
    """Case id (as str) -> when the case started: its first event, in the order cases first appear in the log.

    `log` is an EventLog, a plain event frame or None (no cases). With `tickets` (a table with the case id and
    `created_at`), a ticket's creation time stands for its case's start (the last row of a repeated ticket wins)
    and comes first, followed by the log's cases that have no ticket; a case whose creation time is unknown is
    then left out.
    """
    if tickets is None and log is not None:
        df = log.df if hasattr(log, "df") else log
        return df.groupby(df[CASE_ID].astype(str), sort=False)[TIMESTAMP].min()
    parts: list[pd.Series] = []
    if tickets is not None and "created_at" in tickets.columns and len(tickets):
        t = pd.Series(pd.to_datetime(tickets["created_at"], utc=True).to_numpy(), index=tickets[CASE_ID].astype(str))
        parts.append(t[~t.index.duplicated(keep="last")])
    if log is not None:
        s = case_starts(log)
        if parts:
            s = s[~s.index.isin(parts[0].index)]
        parts.append(s)
    if not parts:
        return pd.Series(dtype="datetime64[ns, UTC]")
    out = pd.concat(parts)
    return out[out.notna()]


def newest_count(n: int, fraction: float, *, too_few: str) -> int:
    """How many of `n` time-ordered cases the newest `fraction` is: rounded, at least one; InvalidInput(`too_few`)
    when that would leave nothing before it."""
    k = max(1, int(round(n * fraction)))
    if k >= n:
        raise InvalidInput(too_few)
    return k


def validation_count(n: int, fraction: float) -> int:
    """How many of `n` training rows in creation order the newest `fraction` validates: rounded down (zero when
    there are too few to validate)."""
    return int(n * fraction)


_Rows = TypeVar("_Rows", pd.DataFrame, pd.Series, np.ndarray, list)


def cut_newest(rows: _Rows, k: int) -> tuple[_Rows, _Rows]:
    """Rows in time order cut before the newest `k`: (the older rows, the newest k); frames and series by position."""
    at = len(rows) - k
    if isinstance(rows, (pd.DataFrame, pd.Series)):
        return rows.iloc[:at], rows.iloc[at:]
    return rows[:at], rows[at:]


def split_newest(table: pd.DataFrame, fraction: float, *, too_few: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A table with one row per case in creation order cut by `newest_count`: (older rows, newest rows)."""
    return cut_newest(table, newest_count(len(table), fraction, too_few=too_few))


def time_ordered_case_split(log: Any, *, test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """Case ids (as str) split by case start time: the oldest (1 - test_fraction) first, the newest second."""
    if not 0 < test_fraction < 1:
        raise InvalidInput(f"test_fraction must be in (0, 1), got {test_fraction}", field="test_fraction")
    ids = case_starts(log).sort_values(kind="stable").index.tolist()
    n_test = newest_count(len(ids), test_fraction,
                          too_few=f"log {getattr(log, 'name', '')} has too few cases ({len(ids)}) for a time-ordered "
                                  f"split keeping the newest {test_fraction:.0%}")
    return cut_newest(ids, n_test)


@overload
def split_log(log: EventLog, *, test_fraction: float = ..., names: tuple[str, str] = ...) -> tuple[EventLog, EventLog]:
    ...


@overload
def split_log(log: pd.DataFrame, *, test_fraction: float = ...,
              names: tuple[str, str] = ...) -> tuple[pd.DataFrame, pd.DataFrame]:
    ...


def split_log(log: EventLog | pd.DataFrame, *, test_fraction: float = 0.2,
              names: tuple[str, str] = ("train", "test")) -> tuple[EventLog, EventLog] | tuple[pd.DataFrame, pd.DataFrame]:
    """The log (an EventLog or a plain event frame) cut in two by `time_ordered_case_split`, same type back.

    An EventLog's parts are named `<name>[<names[0]>]` and `<name>[<names[1]>]` and keep its case attributes.
    """
    _, newest = time_ordered_case_split(log, test_fraction=test_fraction)
    df = log.df if isinstance(log, EventLog) else log
    mask = df[CASE_ID].astype(str).isin(set(newest)).to_numpy()
    old_df, new_df = df.loc[~mask].reset_index(drop=True), df.loc[mask].reset_index(drop=True)
    if isinstance(log, EventLog):
        return (EventLog(old_df, name=f"{log.name}[{names[0]}]", case_attributes=list(log.case_attributes)),
                EventLog(new_df, name=f"{log.name}[{names[1]}]", case_attributes=list(log.case_attributes)))
    return old_df, new_df


def _sample_size(n: int, fraction: float | None, max_cases: int | None) -> int:
    """How many of `n` cases the sample keeps, after checking the arguments."""
    if (fraction is None) == (max_cases is None):
        raise InvalidInput("give exactly one of fraction and max_cases for a case sample",
                           field="fraction" if fraction is None else "max_cases")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not np.isfinite(fraction) or not 0 < fraction <= 1:
            raise InvalidInput(f"sample fraction must be a number in (0, 1], got {fraction!r}", field="fraction")
        return min(n, max(1, int(round(n * float(fraction))))) if n else 0
    if isinstance(max_cases, bool) or not isinstance(max_cases, (int, np.integer)) or max_cases < 1:
        raise InvalidInput(f"max_cases must be a positive integer, got {max_cases!r}", field="max_cases")
    return min(n, int(max_cases))


def _window_length(window: str | pd.Timedelta) -> pd.Timedelta:
    try:
        length = pd.Timedelta(window)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"sample window must be a fixed duration such as '7D' or '1D', got {window!r}",
                           field="window") from exc
    if pd.isna(length) or length <= pd.Timedelta(0):
        raise InvalidInput(f"sample window must be a positive duration, got {window!r}", field="window")
    return length


def case_sample_keys(case_ids: pd.Index | pd.Series | list[str], *, seed: int) -> np.ndarray:
    """One pseudo-random uint64 per case id, a keyed hash of the id: the same case gets the same key for a seed
    whatever else is in the log, so samples are deterministic and a smaller fraction is a subset of a larger one."""
    ids = np.asarray([str(c) for c in case_ids], dtype=object)
    return np.asarray(pd.util.hash_array(ids, hash_key=f"{int(seed) % 10**16:016d}", categorize=False),
                      dtype=np.uint64)


def sample_case_ids(starts: pd.Series, *, fraction: float | None = None, max_cases: int | None = None,
                    window: str | pd.Timedelta | None = "7D", seed: int = 7) -> pd.Index:
    """Ids of the sampled cases, from `starts` (case id -> start time, one row per case).

    The cases are binned by the `window` (counted from the first start) in which they start; each window keeps
    its share of the sample (largest-remainder rounding, so the total is exact), and within a window the cases
    with the smallest `case_sample_keys` are kept. `window=None` is a plain uniform sample of the cases (no
    strata). Returned in the order of `starts`.
    """
    starts = starts[~starts.index.duplicated(keep="first")]
    k = _sample_size(len(starts), fraction, max_cases)
    if k >= len(starts):
        return pd.Index(starts.index)
    keys = case_sample_keys(starts.index, seed=seed)
    if window is None:
        bins = np.zeros(len(starts), dtype=np.int64)
    else:
        length = _window_length(window)
        t = pd.to_datetime(starts)
        if t.isna().any():
            raise InvalidInput(f"{int(t.isna().sum())} case(s) have no start time; a sample by window needs one",
                               field="window")
        bins = ((t - t.min()) // length).to_numpy(dtype=np.int64)
    uniq, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    quota = counts * (k / len(starts))
    take = np.floor(quota).astype(np.int64)
    # Largest remainders get the cases left over (ties: the earlier window), so the sizes add up to k.
    left = k - int(take.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(uniq)), -(quota - take)))
        take[order[:left]] += 1
    # Rank of each case's key within its window; keep the ranks below the window's quota.
    order = np.lexsort((keys, inverse))
    rank = np.empty(len(order), dtype=np.int64)
    first_of_bin = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(order)) - np.repeat(first_of_bin, counts)
    keep = rank < take[inverse]
    return pd.Index(starts.index[keep])


@overload
def sample_cases_by_window(log: EventLog, *, fraction: float | None = ..., max_cases: int | None = ...,
                           window: str | pd.Timedelta | None = ..., seed: int = ...) -> EventLog:
    ...


@overload
def sample_cases_by_window(log: pd.DataFrame, *, fraction: float | None = ..., max_cases: int | None = ...,
                           window: str | pd.Timedelta | None = ..., seed: int = ...) -> pd.DataFrame:
    ...


def sample_cases_by_window(log: EventLog | pd.DataFrame, *, fraction: float | None = None,
                           max_cases: int | None = None, window: str | pd.Timedelta | None = "7D",
                           seed: int = 7) -> EventLog | pd.DataFrame:
    """Whole cases sampled per start window (see `sample_case_ids`): every event of a kept case, none of the
    others, in the log's row order; same type back (an EventLog keeps its case attributes, its name says
    `[sample]`). Give `fraction` in (0, 1] or `max_cases`; a sample as large as the log is the log itself.
    """
    starts = case_starts(log)
    ids = sample_case_ids(starts, fraction=fraction, max_cases=max_cases, window=window, seed=seed)
    if len(ids) == len(starts):
        return log
    df = log.df if isinstance(log, EventLog) else log
    mask = df[CASE_ID].astype(str).isin(set(ids)).to_numpy()
    out = df.loc[mask].reset_index(drop=True)
    if isinstance(log, EventLog):
        return EventLog(out, name=f"{log.name}[sample]", case_attributes=list(log.case_attributes))
    return out


__all__ = ["case_sample_keys", "case_starts", "cut_newest", "newest_count", "sample_case_ids",
           "sample_cases_by_window", "split_log", "split_newest", "time_ordered_case_split", "validation_count"]
