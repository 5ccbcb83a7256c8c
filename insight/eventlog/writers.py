"""Write canonical event logs to Parquet (with deskpilot metadata) or CSV (ISO-8601 UTC timestamps)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

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



PARTS_MANIFEST = "_parts.json"


def _case_contiguous(df: pd.DataFrame) -> pd.DataFrame:
    """The rows grouped by case in order of the cases' first appearance (row order inside a case kept)."""
    from insight.eventlog.schema import CASE_ID

    codes, _ = pd.factorize(df[CASE_ID], use_na_sentinel=True)
    if len(codes) < 2 or bool((np.diff(codes) >= 0).all()):
        return df
    return df.iloc[np.argsort(codes, kind="stable")]


def write_partitioned(
    source: EventLog | Iterable[pd.DataFrame],
    out_dir: str | Path,
    *,
    events_per_part: int = 1_000_000,
    name: str | None = None,
    case_attributes: list[str] | None = None,
) -> list[Path]:
    """Write a log as case-partitioned Parquet parts plus a `_parts.json` manifest, streaming.

    Every case lands in exactly one part and parts follow the cases' order of first appearance, so reading the
    parts in manifest order gives the log's events in the same order. `source` is a whole EventLog (grouped by case
    first) or an iterable of frames already grouped by case (a case may continue into the next frame): then memory
    holds one part plus one incoming frame. A part closes at the first case boundary after `events_per_part` rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from insight.eventlog.schema import CASE_ID

    if events_per_part < 1:
        raise InvalidInput("events_per_part must be >= 1", field="events_per_part")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(source, EventLog):
        frames: Iterable[pd.DataFrame] = [_case_contiguous(source.df)]
        name = name or source.name
        case_attributes = list(source.case_attributes) if case_attributes is None else case_attributes
    else:
        frames = source
    meta = {"name": name or out.name, "case_attributes": list(case_attributes or [])}
    written: list[Path] = []
    seen_last: object = None
    schema: Any = None

    def flush(df: pd.DataFrame) -> None:
        nonlocal schema
        table = pa.Table.from_pandas(df, preserve_index=False)
        if schema is None:
            schema = table.schema.remove_metadata().with_metadata({PARQUET_META_KEY: json.dumps(meta).encode()})
        table = table.cast(schema) if table.schema.remove_metadata() != schema.remove_metadata() else table
        path = out / f"part-{len(written):05d}.parquet"
        pq.write_table(table.replace_schema_metadata(schema.metadata), path)
        written.append(path)

    buf: list[pd.DataFrame] = []
    held = 0
    for frame in frames:
        if not len(frame):
            continue
        if seen_last is not None and frame[CASE_ID].iloc[0] != seen_last and held >= events_per_part:
            flush(pd.concat(buf, ignore_index=True))
            buf, held = [], 0
        buf.append(frame)
        held += len(frame)
        seen_last = frame[CASE_ID].iloc[-1]
        if held < events_per_part:
            continue
        cur = pd.concat(buf, ignore_index=True)
        case = cur[CASE_ID].to_numpy()
        # cut before the last case (it may go on in the next frame) at case boundaries every events_per_part rows
        boundary = np.flatnonzero(case[1:] != case[:-1]) + 1
        start = 0
        for b in boundary.tolist():
            if b - start >= events_per_part:
                flush(cur.iloc[start:b])
                start = b
        buf, held = [cur.iloc[start:]], len(cur) - start
    if held:
        flush(pd.concat(buf, ignore_index=True))
    (out / PARTS_MANIFEST).write_text(
        json.dumps({**meta, "parts": [p.name for p in written]}, indent=1), encoding="utf-8")
    return written
