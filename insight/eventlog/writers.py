"""Write canonical event logs to Parquet (with deskpilot metadata) or CSV (ISO-8601 UTC timestamps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from core.errors import InvalidInput
from insight.eventlog.readers import PARQUET_META_KEY
from insight.eventlog.schema import EventLog

WriteFormat = Literal["parquet", "csv"]


def _format_for(path: Path, fmt: WriteFormat | None) -> WriteFormat:
    if fmt is not None:
        return fmt
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise InvalidInput(f"cannot tell the output format from {path.name!r}; use .parquet or .csv", field="out")


def write_log(log: EventLog, path: str | Path, *, fmt: WriteFormat | None = None) -> Path:
    """Write the log; Parquet keeps dtypes, the log name and its case attributes for `read_log`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    kind = _format_for(p, fmt)
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        table = pa.Table.from_pandas(log.df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[PARQUET_META_KEY] = json.dumps(
            {"name": log.name, "case_attributes": list(log.case_attributes)}
        ).encode()
        pq.write_table(table.replace_schema_metadata(meta), p)
    else:
        df = log.df.copy()
        for col in df.columns:
            if df[col].dtype.kind == "M":
                # ISO-8601 with explicit offset so a reader never has to guess the zone
                df[col] = df[col].dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z").str.replace(
                    r"(\+|-)(\d\d)(\d\d)$", r"\1\2:\3", regex=True
                )
        df.to_csv(p, index=False, compression="gzip" if p.name.lower().endswith(".gz") else None)
    return p

