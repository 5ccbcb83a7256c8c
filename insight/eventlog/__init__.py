"""Event-log ingestion: read CSV/XES/Parquet onto the canonical schema, clean, redact PII, pseudonymize ids."""

from insight.eventlog.cleaning import clean, detect_case_attributes, load_activity_map, merge_sources
from insight.eventlog.ingest import ingest
from insight.eventlog.pm4py_bridge import from_pm4py, to_pm4py
from insight.eventlog.privacy import apply_privacy, pseudonymize, redact_series, redact_text
from insight.eventlog.readers import PRESETS, Preset, detect_format, read_log
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    OPTIONAL_COLUMNS,
    PM4PY_COLUMNS,
    REQUIRED_COLUMNS,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
    QualityFix,
)
from insight.eventlog.writers import write_log

__all__ = [
    "ACTIVITY", "CANONICAL_COLUMNS", "CASE_ID", "CHANNEL", "GROUP", "LIFECYCLE", "OPTIONAL_COLUMNS",
    "PM4PY_COLUMNS", "PRESETS", "REQUIRED_COLUMNS", "RESOURCE", "TIMESTAMP",
    "DataQualityReport", "EventLog", "Preset", "QualityFix",
    "apply_privacy", "clean", "detect_case_attributes", "detect_format", "from_pm4py", "ingest",
    "load_activity_map", "merge_sources", "pseudonymize", "read_log", "redact_series", "redact_text",
    "to_pm4py", "write_log",
]
