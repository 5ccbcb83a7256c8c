"""One call from a log file to a clean, privacy-safe canonical EventLog with its quality report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from insight.eventlog.cleaning import TimestampPolicy, clean, load_activity_map
from insight.eventlog.privacy import apply_privacy, person_columns
from insight.eventlog.readers import PRESETS, read_log
from insight.eventlog.schema import RESOURCE, EventLog


def ingest(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    preset: str | None = None,
    source_tz: str | None = None,
    dayfirst: bool | None = None,
    na_values: Sequence[str] | None = None,
    activity_map: Mapping[str, str] | str | Path | None = None,
    timestamp_policy: TimestampPolicy = "drop",
    drop_duplicates: bool = True,
    pseudonym_key: str | bytes | None = None,
    pseudonymize_columns: Sequence[str] | None = None,
    redact_columns: Sequence[str] | None = None,
    privacy: bool = True,
) -> EventLog:
    """Read, clean and (unless privacy=False) redact and pseudonymize a log; the result carries `.quality`.

    `pseudonymize_columns` defaults to `resource`, the preset's identifier columns (e.g. caller_id) and the
    columns whose name says they hold people (`privacy.person_columns`: "Owner First Name", "requester", …).
    """
    log = read_log(path, mapping=mapping, preset=preset, source_tz=source_tz, dayfirst=dayfirst,
                   na_values=na_values, timestamp_policy=timestamp_policy)
    amap = load_activity_map(activity_map) if isinstance(activity_map, (str, Path)) else activity_map
    log = clean(log, activity_map=amap, timestamp_policy=timestamp_policy, drop_duplicates=drop_duplicates)
    if privacy:
        attrs = list(log.case_attributes)
        if pseudonymize_columns is None:
            extra = PRESETS[preset].identifier_columns if preset in PRESETS else ()
            named = [c for c in person_columns(log.df) if c not in extra]
            pseudonymize_columns = (RESOURCE, *[c for c in extra if c in log.df.columns], *named)
        log = apply_privacy(log, key=pseudonym_key, pseudonymize_columns=pseudonymize_columns,
                            redact_columns=redact_columns)
        log.case_attributes = attrs
    return log
