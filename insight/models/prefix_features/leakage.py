"""Which columns a prefix may read: required columns present, and nothing that names the whole trace."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.schema import ACTIVITY, CASE_ID, TIMESTAMP


def event_frame(log: Any) -> pd.DataFrame:
    """The events of a log (an EventLog or a frame); InvalidEventLog naming a required column it lacks."""
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
    df = event_frame(log)
    for col in columns:
        if col in (CASE_ID, ACTIVITY, TIMESTAMP):
            raise InvalidInput(f"{kind} {col!r} cannot be a feature: it is a required log column", field=col)
        if col not in df.columns:
            raise InvalidInput(f"{kind} {col!r} is not a column of log {getattr(log, 'name', '')!r}; "
                               f"it has {[c for c in df.columns]}", field=col)
        why = trace_attribute_problem(df, col)
        if why is not None:
            raise InvalidInput(f"{kind} {col!r} is refused as a prefix feature: {why}", field=col)
