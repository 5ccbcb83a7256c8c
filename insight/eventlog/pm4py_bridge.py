"""The one place that converts between deskpilot's canonical frame and pm4py's column names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import InvalidEventLog
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    PM4PY_COLUMNS,
    TIMESTAMP,
    EventLog,
)

_FROM_PM4PY = {v: k for k, v in PM4PY_COLUMNS.items()}
_CASE_PREFIX = "case:"


def to_pm4py(log: EventLog) -> pd.DataFrame:
    """The log as a pm4py-ready DataFrame (pm4py column names, case attributes prefixed `case:`)."""
    df = log.df.copy()
    rename = {c: PM4PY_COLUMNS[c] for c in df.columns if c in PM4PY_COLUMNS}
    for col in log.case_attributes:
        if col in df.columns and col not in rename:
            rename[col] = f"{_CASE_PREFIX}{col}"
    df = df.rename(columns=rename)
    df[PM4PY_COLUMNS[CASE_ID]] = df[PM4PY_COLUMNS[CASE_ID]].astype(str)
    df[PM4PY_COLUMNS[ACTIVITY]] = df[PM4PY_COLUMNS[ACTIVITY]].astype(str)
    return df


def from_pm4py(df: pd.DataFrame, name: str) -> EventLog:
    """A canonical EventLog from a pm4py DataFrame (renames columns, strips `case:` from trace attributes)."""
    missing = [PM4PY_COLUMNS[c] for c in (CASE_ID, ACTIVITY, TIMESTAMP) if PM4PY_COLUMNS[c] not in df.columns]
    if missing:
        raise InvalidEventLog(
            f"pm4py frame lacks {missing}; has {list(df.columns)}", file=name, column=missing[0]
        )
    rename: dict[str, str] = {}
    case_attrs: list[str] = []
    # An event attribute already named like a canonical column (e.g. `timestamp` beside XES `time:timestamp`) keeps
    # its values under `<name>_attribute`; the XES standard attribute takes the canonical name.
    targets = {_FROM_PM4PY[c] for c in df.columns if c in _FROM_PM4PY}
    for col in df.columns:
        if col in targets and col not in _FROM_PM4PY:
            new = f"{col}_attribute"
            while new in df.columns:
                new += "_"
            rename[col] = new
    taken = set(df.columns) | set(rename.values())
    for col in df.columns:
        if col in rename:
            continue
        if col in _FROM_PM4PY:
            rename[col] = _FROM_PM4PY[col]
        elif col.startswith(_CASE_PREFIX):
            short = col[len(_CASE_PREFIX):]
            # a trace attribute whose short name clashes with an event attribute keeps its prefix
            target = short if short not in taken and short not in CANONICAL_COLUMNS else col
            rename[col] = target
            case_attrs.append(target)
    out = df.rename(columns=rename).reset_index(drop=True)
    out[CASE_ID] = out[CASE_ID].astype(str)
    out[ACTIVITY] = out[ACTIVITY].astype(str)
    ts = pd.to_datetime(out[TIMESTAMP], utc=True, errors="coerce")
    out[TIMESTAMP] = ts
    return EventLog(out, name=name, case_attributes=case_attrs)


def _count_events(path: Path) -> int:
    import gzip
    import zlib

    with path.open("rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidEventLog(f"broken gzip file ({exc}); the file may be truncated", file=str(path)) from exc
    return data.count(b"<event")


def read_xes_frame(path: Path) -> pd.DataFrame:
    """Parse an XES / XES.gz file with pm4py into its own DataFrame (pm4py column names).

    pm4py's line-by-line parser is the faster of its two but only understands files with one XML element per
    line; its result is checked against the number of <event> tags and, when it disagrees, the file is parsed
    again with the general iterparse parser.
    """
    import warnings

    import pm4py
    from pm4py.util import constants

    # pm4py's progress bars would flood CLI output and test logs.
    constants.SHOW_PROGRESS_BAR = False
    expected = _count_events(path)
    df = None
    for variant in ("line_by_line", "iterparse"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                df = pm4py.read_xes(str(path), variant=variant)
        except Exception as exc:  # pm4py raises bare lxml / KeyError / ValueError on broken files
            if variant == "iterparse":
                raise InvalidEventLog(f"cannot parse XES: {type(exc).__name__}: {exc}", file=str(path)) from exc
            continue
        if isinstance(df, pd.DataFrame) and len(df) == expected:
            break
    if not isinstance(df, pd.DataFrame):
        raise InvalidEventLog("pm4py did not return a DataFrame for this XES file", file=str(path))
    if len(df) != expected:
        raise InvalidEventLog(f"XES holds {expected} <event> tags but pm4py parsed {len(df)} events",
                              file=str(path))
    return df
