"""XES sources through pm4py (the one place that reads them), with a mapping on top of pm4py's names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from insight.errors import InvalidEventLog
from insight.eventlog.readers.presets import Preset
from insight.eventlog.readers.raw import log_name
from insight.eventlog.schema import ACTIVITY, PM4PY_COLUMNS, TIMESTAMP, DataQualityReport, EventLog


def read_xes(path: Path, *, mapping: Mapping[str, str] | None, how: str, preset: Preset | None) -> EventLog:
    """An XES(.gz) file onto the canonical columns through pm4py, with the mapping applied on top of its names."""
    from insight.eventlog.pm4py_bridge import from_pm4py, read_xes_frame

    pm = read_xes_frame(path)
    if pm.empty:
        raise InvalidEventLog("the XES log holds no events", file=str(path))
    report = DataQualityReport(source=str(path), rows_in=len(pm))
    inverse = {v: k for k, v in PM4PY_COLUMNS.items()}
    try:
        log = from_pm4py(pm, log_name(path))
    except InvalidEventLog as exc:
        raise InvalidEventLog(exc.message.split(" (file")[0], file=str(path), column=exc.column) from exc
    df = log.df
    if mapping:
        translated = {inverse.get(k, k): v for k, v in mapping.items()}
        bad = [k for k in translated if k not in df.columns]
        if bad:
            raise InvalidEventLog(
                f"column mapping names column(s) {bad} that the file does not have; it has {list(df.columns)}",
                file=str(path), column=bad[0],
            )
        df = df.rename(columns=translated)
        report.add("column_mapping", 0, f"{how}: pm4py names + " + ", ".join(f"{k!r}->{v}" for k, v in mapping.items()))
    else:
        report.add("column_mapping", 0, f"{how}: pm4py standard XES names")
    if preset and preset.activity_from:
        parts = [c for c in preset.activity_from if c in df.columns]
        joined = df[parts[0]].astype("str")
        for c in parts[1:]:
            joined = joined.str.cat(df[c].astype("str"), sep="-", na_rep="")
        df[ACTIVITY] = joined.str.rstrip("-")
        report.add("activity_from_columns", len(df), "activity = " + "-".join(parts))
    n_bad_ts = int(df[TIMESTAMP].isna().sum())
    report.add("timestamp_unparseable", n_bad_ts, "XES time:timestamp" if n_bad_ts else "")
    report.add("timestamp_missing", 0)
    case_attrs = [c for c in log.case_attributes if c in df.columns]
    return EventLog(df.reset_index(drop=True), name=log.name, case_attributes=case_attrs, quality=report)
