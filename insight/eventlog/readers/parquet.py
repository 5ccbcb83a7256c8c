"""Parquet sources, with the log's name and case attributes from deskpilot's own metadata key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import InvalidEventLog
from insight.eventlog.readers.raw import RawTable
from insight.eventlog.schema import DataQualityReport

PARQUET_META_KEY = b"deskpilot"


def read_parquet(path: Path) -> tuple[RawTable, dict[str, Any]]:
    """A Parquet file as a table, and the metadata deskpilot wrote into it (name, case attributes)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for broken files
        raise InvalidEventLog(f"cannot read Parquet: {exc}", file=str(path)) from exc
    meta: dict[str, Any] = {}
    raw_meta = (table.schema.metadata or {}).get(PARQUET_META_KEY)
    if raw_meta:
        meta = json.loads(raw_meta)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    report = DataQualityReport(source=str(path), rows_in=frame.height)
    return RawTable(frame, report), meta
