"""A source file read into a table before it is mapped onto the canonical schema, and the log's name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from insight.eventlog.schema import DataQualityReport


@dataclass
class RawTable:
    """A source read into a frame of strings (or typed values) before canonical mapping.

    When `arrow` is set it holds the values (string columns under the frame's names) and `frame` only the
    schema: the columns stay in Arrow until something needs them as polars Series.
    """

    frame: pl.DataFrame
    report: DataQualityReport
    warnings: list[str] = field(default_factory=list)
    arrow: pa.Table | None = None


def log_name(p: Path) -> str:
    """The log name a file gives (its name without log and compression suffixes)."""
    name = p.name
    for suf in (".gz", ".csv", ".tsv", ".txt", ".xes", ".parquet", ".pq"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return name
