"""Time-ordered splits of an event log by case start: the oldest cases learn, the newest validate or test.

One rule for every split (train / test in training, fit / validation inside the prefix models): cases are ordered
by their first event (ties keep the log's order) and the newest `fraction` of them, at least one, go to the
second part.
"""

from __future__ import annotations

from typing import Any, overload

import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, TIMESTAMP, EventLog


def time_ordered_case_split(log: Any, *, test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """Case ids (as str) split by case start time: the oldest (1 - test_fraction) first, the newest second."""
    if not 0 < test_fraction < 1:
        raise InvalidInput(f"test_fraction must be in (0, 1), got {test_fraction}", field="test_fraction")
    df = log.df if hasattr(log, "df") else log
    starts = df.groupby(df[CASE_ID].astype(str), sort=False)[TIMESTAMP].min().sort_values(kind="stable")
    n_test = max(1, int(round(len(starts) * test_fraction)))
    if n_test >= len(starts):
        raise InvalidInput(f"log {getattr(log, 'name', '')} has too few cases ({len(starts)}) for a time-ordered "
                           f"split keeping the newest {test_fraction:.0%}")
    ids = starts.index.tolist()
    return ids[:-n_test], ids[-n_test:]


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


__all__ = ["split_log", "time_ordered_case_split"]
