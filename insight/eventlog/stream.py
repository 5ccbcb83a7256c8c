"""Streaming ingest: a CSV larger than memory into case-partitioned Parquet parts, in bounded memory.

A helpdesk export is sorted by time, not by case, so the log goes through two stages:

1. *Chunks.* The CSV is read in blocks (pyarrow's streaming CSV reader). Each chunk gets the steps of
   `read_log` that only look at one row: column mapping (resolved once from the header), `activity_from`
   presets, timestamp parsing, dropping a preset's known cases and rows without case id or activity. Its rows
   are then spilled into one of B bucket files by a stable hash (CRC-32) of the case id, so every case lies in
   exactly one bucket.
2. *Buckets.* Each bucket is read back alone, cleaned with `clean` (duplicates, missing-time policy, the
   case/time sort, case attributes all need whole cases, and a bucket holds whole cases), redacted and
   pseudonymized, and spilled back sorted. The cleaned buckets are then merged by case id (one batch per
   bucket in memory) and written through `write_partitioned` with its manifest, so the parts hold the events in
   the order the in-memory `ingest` gives (case, time, file position) and the miners see the same log.

Memory holds one chunk (stage 1), one bucket (stage 2) or one batch per bucket plus the part being written
(the merge), never the file. The steps that read the whole file
in `ingest` are handled so the result is the same:

- timestamp format: inferred (same candidates, same ranking) on the first chunk holding a value, then fixed for
  every later chunk; the "no value parses" and "no values" checks are made on the file's totals;
- value types of extra columns (`infer_types`): each chunk records whether a column's values all cast to
  integers / floats, and the column's first non-missing values; the cast is decided on the file's totals and
  applied in stage 2 (an integer column with gaps becomes float there, as in the in-memory frame);
- redundant copies of canonical columns (`drop_canonical_copies`): equality is ANDed over chunks, the column is
  dropped in stage 2;
- the source review (`review_source`): layout, lifecycle and team-column notices come from the first chunk;
  placeholder activities are counted over the file;
- timestamp policy "error": unparseable values raise in their chunk with their file row; missing ones raise
  after stage 1 with the file's count;
- case attributes: a column is one when it is constant within every case of every bucket; the parts are
  written after all buckets are cleaned (the cleaned buckets are spilled once more) so the parts carry the
  final list;
- counts of the quality report are sums over chunks and buckets; only `rows_reordered` is a per-bucket measure
  (rows that moved inside their bucket), which differs from the whole-file sort's count.

The output is written into a hidden sibling folder and renamed onto `out_dir` only when complete, so a failure
leaves no folder that looks like a partitioned log.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.cleaning import (
    TimestampPolicy,
    _first_occurrence_mask,
    _normalise_label,
    clean,
    load_activity_map,
)
from insight.eventlog.privacy import apply_privacy, person_columns
from insight.eventlog.readers.columns import AUTO_NAMES, norm_name, resolve_mapping
from insight.eventlog.readers.csv_file import _dedupe_header, _sniff_delimiter
from insight.eventlog.readers.detect import (
    detect_format,
    detect_source,
    is_placeholder_activity,
    review_source,
)
from insight.eventlog.readers.presets import Preset
from insight.eventlog.readers.raw import log_name
from insight.eventlog.readers.read import read_options
from insight.eventlog.readers.timestamps import choose_format, parse_mixed, ranked_formats, timestamp_text
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    REQUIRED_COLUMNS,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)
from insight.eventlog.writers import PARTS_MANIFEST, write_partitioned

DEFAULT_CHUNK_BYTES = 16 << 20
DEFAULT_BUCKET_BYTES = 32 << 20
# how much larger than its gzip file a CSV is taken to be when choosing the number of buckets
_GZIP_RATIO = 5
# bucket files open at once during stage 1
MAX_BUCKETS = 4096
_KEEP_STR = {CASE_ID, ACTIVITY, RESOURCE, GROUP, CHANNEL, LIFECYCLE, TIMESTAMP}


@dataclass
class StreamResult:
    """What a streaming ingest wrote and what cleaning did, summed over the file."""

    out_dir: Path
    parts: list[Path]
    name: str
    quality: DataQualityReport
    case_attributes: list[str]
    activities: list[str]
    chunks: int
    buckets: int


# ---- timestamps: the format is chosen once, then fixed ------------------------------------------------------


@dataclass
class _TsColumn:
    """One timestamp column across chunks: its fixed format and running counts."""

    column: str
    fix_prefix: str
    fmt: str | None = None
    chosen: bool = False
    fallback: bool = False
    nonnull: int = 0
    bad: int = 0
    missing: int = 0
    first_bad: tuple[int, str] | None = None
    naive: bool = False


def _choose_format(tc: _TsColumn, s: pl.Series, dayfirst: bool | None, report: DataQualityReport) -> None:
    """The format `parse_timestamps` would pick, from this chunk's values (the same sample, ranking and ties)."""
    fmts = ranked_formats(s.drop_nulls(), column=tc.column, dayfirst=dayfirst, report=report)
    tc.fmt, best = choose_format(s, fmts, column=tc.column, report=report, fix_prefix=tc.fix_prefix)
    if best is None:
        tc.fallback = True
        report.add(f"{tc.fix_prefix}_format", 0, f"column {tc.column!r}: mixed formats (pandas fallback)")
    tc.chosen = True


def _parse_chunk(tc: _TsColumn, values: pl.Series, *, row0: int, source_tz: str, dayfirst: bool | None,
                 report: DataQualityReport) -> pl.Series:
    s = timestamp_text(values)
    if not tc.chosen and s.drop_nulls().len():
        _choose_format(tc, s, dayfirst, report)
    if not tc.chosen:
        parsed = pl.Series(tc.column, [None] * s.len(), dtype=pl.Datetime("us"))
    elif tc.fallback:
        parsed = parse_mixed(s, dayfirst=dayfirst)
    else:
        assert tc.fmt is not None
        parsed = s.str.to_datetime(tc.fmt, strict=False, time_unit="us")
    missing = values.null_count()
    bad_mask = parsed.is_null() & values.is_not_null()
    n_bad = int(bad_mask.sum())
    tc.missing += missing
    tc.nonnull += values.len() - missing
    tc.bad += n_bad
    if n_bad and tc.first_bad is None:
        first = int(bad_mask.arg_true()[0])
        tc.first_bad = (row0 + first + 1, str(values[first]))
    dtype = parsed.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is None:
        parsed = parsed.dt.replace_time_zone(source_tz, ambiguous="earliest", non_existent="null")
        tc.naive = True
    return parsed.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(tc.column)


def _close_timestamps(tc: _TsColumn, report: DataQualityReport, source_tz: str, path: Path) -> None:
    if tc.nonnull == 0:
        raise InvalidEventLog(f"column {tc.column!r} holds no timestamp values", file=str(path), column=tc.column)
    if tc.bad == tc.nonnull:
        row, value = tc.first_bad or (None, "")
        raise InvalidEventLog(
            f"no value of the timestamp column could be parsed as a date/time (first: {value!r})",
            file=str(path), row=row, column=tc.column,
        )
    detail = f"column {tc.column!r}, first at data row {tc.first_bad[0]}: {tc.first_bad[1]!r}" if tc.first_bad else ""
    report.add(f"{tc.fix_prefix}_unparseable", tc.bad, detail)
    report.add(f"{tc.fix_prefix}_missing", tc.missing, f"column {tc.column!r}" if tc.missing else "")
    if tc.naive:
        report.add(f"{tc.fix_prefix}_timezone", 0, f"naive times read as {source_tz}, stored as UTC")


# ---- value types and redundant columns, decided on the whole file ------------------------------------------


_NUMBER = r"^\s*-?\d+(\.\d+)?\s*$"


@dataclass
class _TypeStats:
    head: list[str] = field(default_factory=list)
    nulls: int = 0
    rows: int = 0
    int_ok: bool = True
    float_ok: bool = True

    def update(self, col: pl.Series) -> None:
        nn = col.null_count()
        self.nulls += nn
        self.rows += col.len()
        if nn == col.len():
            return
        if len(self.head) < 200:
            self.head.extend(col.drop_nulls().head(200 - len(self.head)).to_list())
        stripped = col.str.strip_chars()
        if self.int_ok:
            self.int_ok = stripped.cast(pl.Int64, strict=False).null_count() == nn
        if self.float_ok and not self.int_ok:
            self.float_ok = stripped.cast(pl.Float64, strict=False).null_count() == nn

    def dtype(self) -> Any:
        """The polars type `infer_types` would give the whole column (None: stays a string)."""
        if not self.head or self.nulls == self.rows:
            return None
        head = pl.Series(self.head, dtype=pl.String)
        if not (head.str.contains(_NUMBER).all() and not head.str.contains(r"^\s*0\d").any()):
            return None
        if self.int_ok:
            # pandas holds an integer column with gaps as float, as the in-memory frame does
            return pl.Float64 if self.nulls else pl.Int64
        return pl.Float64 if self.float_ok else None


def _copy_candidates(columns: Sequence[str]) -> dict[str, str]:
    """Source columns that may repeat a canonical column ({column: canonical}), as `drop_canonical_copies` sees."""
    out = {}
    for col in columns:
        if col in CANONICAL_COLUMNS:
            continue
        canon = next((c for c, names in AUTO_NAMES.items() if norm_name(col) in names), None)
        if canon is None or canon not in columns or col == canon or canon == TIMESTAMP:
            continue
        out[col] = canon
    return out


# ---- reading the CSV in chunks ------------------------------------------------------------------------------


def _open_bytes(path: Path) -> Any:
    import pyarrow as pa

    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    stream = pa.OSFile(str(path), "rb")
    return pa.CompressedInputStream(stream, "gzip") if gz else stream


def _head(path: Path, n: int = 1 << 20) -> bytes:
    src = _open_bytes(path)
    try:
        return bytes(src.read(n))
    except OSError as exc:
        raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    finally:
        src.close()


def _dialect(path: Path, delimiter: str | None, warnings: list[str]) -> tuple[str, str, list[str]]:
    """(encoding, delimiter, header names) from the file's first bytes."""
    head = _head(path)
    if head.startswith(b"\xef\xbb\xbf"):
        enc, text = "utf-8", head[3:].decode("utf-8", errors="replace")
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
        warnings.append("source encoded as UTF-16; re-encoded to UTF-8")
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    else:
        try:
            head.decode("utf-8")
            enc = "utf-8"
        except UnicodeDecodeError as exc:
            # a cut multi-byte character at the end of the sample is not a decoding error
            enc = "utf-8" if exc.start >= len(head) - 3 else "cp1252"
        if enc == "cp1252":
            warnings.append("source is not UTF-8; decoded as cp1252/latin-1")
        text = head.decode(enc, errors="replace")
    sample = text[:65536]
    if not sample.strip():
        raise InvalidEventLog("file holds no header line", file=str(path))
    sep = delimiter or _sniff_delimiter(sample, path)
    header = next(csv.reader([sample.splitlines()[0]], delimiter=sep))
    names = _dedupe_header(header, warnings)
    if len(names) < 2:
        raise InvalidEventLog(f"only one column {names} found; not an event log (delimiter {sep!r})",
                              file=str(path))
    return enc, sep, names


# pyarrow's streaming reader queues blocks read ahead in the background (several dozen of them), so blocks stay
# small and are gathered into chunks here: the read-ahead then holds a bounded few MiB, not a large part of the file
_BLOCK_BYTES = 1 << 20


def _chunks(path: Path, *, enc: str, sep: str, names: list[str], nas: Sequence[str],
            chunk_bytes: int) -> Iterator[pl.DataFrame]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(
        _open_bytes(path),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=min(chunk_bytes, _BLOCK_BYTES),
                                       encoding=enc, use_threads=True),
        parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[*nas, ""], strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    rows = 0
    held: list[Any] = []
    size = 0

    def flush() -> pl.DataFrame:
        frame = pl.from_arrow(pa.Table.from_batches(held).combine_chunks())
        assert isinstance(frame, pl.DataFrame)
        held.clear()
        return frame

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
            msg = str(exc).splitlines()[0]
            raise InvalidEventLog(f"cannot parse CSV (delimiter {sep!r}, {len(names)} header columns) after data "
                                  f"row {rows + sum(b.num_rows for b in held)}: {msg}", file=str(path),
                                  row=rows + sum(b.num_rows for b in held) + 1) from exc
        held.append(batch)
        size += batch.nbytes
        if size >= chunk_bytes:
            frame = flush()
            rows += frame.height
            size = 0
            yield frame
    if held:
        yield flush()


# ---- the two stages -----------------------------------------------------------------------------------------


def _bucket_count(path: Path, bucket_bytes: int, buckets: int | None) -> int:
    if buckets is not None:
        if buckets < 1:
            raise InvalidInput("buckets must be >= 1", field="buckets")
        return min(buckets, MAX_BUCKETS)
    if bucket_bytes < 1:
        raise InvalidInput("bucket_bytes must be >= 1", field="bucket_bytes")
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    size = path.stat().st_size * (_GZIP_RATIO if gz else 1)
    return max(1, min(MAX_BUCKETS, math.ceil(size / bucket_bytes)))


def _bucket_of(case: pl.Series, n: int) -> np.ndarray:
    """Bucket per row: CRC-32 of the case id (stable across runs, versions and machines) modulo n."""
    codes, uniques = pd.factorize(case.to_pandas(), use_na_sentinel=True)
    per_case = np.fromiter((zlib.crc32(str(u).encode("utf-8")) % n for u in uniques), dtype=np.int64,
                           count=len(uniques))
    return per_case[codes]


class _Spill:
    """B Arrow IPC stream files that rows are appended to."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.n = n
        self.writers: dict[int, Any] = {}
        self.schemas: dict[int, Any] = {}
        self.rows = [0] * n
        root.mkdir(parents=True)

    def path(self, b: int) -> Path:
        return self.root / f"bucket-{b:05d}.arrow"

    def add(self, frame: pl.DataFrame, bucket: np.ndarray, *, batch_rows: int | None = None) -> None:
        import pyarrow as pa

        table = frame.to_arrow()
        order = np.argsort(bucket, kind="stable")
        sb = bucket[order]
        cuts = np.flatnonzero(np.diff(sb)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(sb)]])
        taken = table.take(pa.array(order))
        for a, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e <= a:
                continue
            b = int(sb[a])
            w = self.writers.get(b)
            if w is None:
                w = pa.ipc.new_stream(str(self.path(b)), taken.schema,
                                      options=pa.ipc.IpcWriteOptions(compression="lz4"))
                self.writers[b] = w
                self.schemas[b] = taken.schema
            piece = taken.slice(a, e - a)
            w.write_table(piece if piece.schema == self.schemas[b] else piece.cast(self.schemas[b]),
                          max_chunksize=batch_rows)
            self.rows[b] += e - a

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
        self.schemas.clear()

    def batches(self, b: int) -> Iterator[pl.DataFrame]:
        """Bucket b's rows batch by batch, as written (the file is removed once read)."""
        import pyarrow as pa

        if not self.rows[b]:
            return
        with pa.OSFile(str(self.path(b))) as src:  # read, not mapped: mapped pages would stay resident
            for batch in pa.ipc.open_stream(src):
                out = pl.from_arrow(pa.Table.from_batches([batch]))
                assert isinstance(out, pl.DataFrame)
                yield out
        self.path(b).unlink()

    def read(self, b: int) -> pl.DataFrame | None:
        import pyarrow as pa

        if not self.rows[b]:
            return None
        with pa.OSFile(str(self.path(b))) as src:  # read, not mapped: mapped pages would stay resident
            table = pa.ipc.open_stream(src).read_all()
        self.path(b).unlink()
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out


# rows the merge holds over all buckets together (each bucket's spill is written in batches of its share)
_MERGE_ROWS = 262_144


def _merge_by_case(spill: _Spill, n: int, dtypes: Mapping[str, Any]) -> Iterator[pd.DataFrame]:
    """The buckets' rows (each bucket sorted by case) merged into one stream sorted by case id, as `clean` orders
    a whole log; memory holds one batch per bucket. A case never straddles two yielded frames. A column holding
    no value in a frame gets the type it has elsewhere (`dtypes`), so every part has the same schema."""
    sources = {b: spill.batches(b) for b in range(n) if spill.rows[b]}
    held: dict[int, pl.DataFrame] = {}

    def pull(b: int) -> None:
        nxt = next(sources[b], None)
        if nxt is None:
            del sources[b]
        elif b in held:
            held[b] = pl.concat([held[b], nxt], how="vertical_relaxed")
        else:
            held[b] = nxt

    for b in list(sources):
        pull(b)
    while held:
        # every case below the smallest last case of a bucket still being read is complete everywhere
        open_ends = [held[b][CASE_ID][-1] for b in held if b in sources]
        bound = min(open_ends) if open_ends else None
        out: list[pl.DataFrame] = []
        for b in list(held):
            frame = held[b]
            if bound is None:
                ready, rest = frame, frame.clear()
            else:
                below = frame[CASE_ID] < bound
                ready, rest = frame.filter(below), frame.filter(~below)
            if ready.height:
                out.append(ready)
            if rest.height:
                held[b] = rest
            else:
                del held[b]
        if out:
            merged = pl.concat(out, how="vertical_relaxed").sort(CASE_ID, maintain_order=True)
            untyped = [c for c, t in merged.schema.items() if t == pl.Null and c in dtypes]
            if untyped:
                merged = merged.with_columns([pl.col(c).cast(dtypes[c]) for c in untyped])
            yield merged.to_pandas()
        for b in [b for b in list(sources) if b not in held or held[b][CASE_ID][-1] == bound]:
            pull(b)


def _merge_fixes(into: DataQualityReport, parts: list[DataQualityReport], skip: set[str]) -> None:
    """Fixes of the bucket reports summed by name (first non-empty detail kept), in first-seen order."""
    order: list[str] = []
    rows: Counter[str] = Counter()
    detail: dict[str, str] = {}
    for rep in parts:
        for f in rep.fixes:
            if f.name in skip:
                continue
            if f.name not in rows and f.name not in order:
                order.append(f.name)
            rows[f.name] += f.rows
            if f.detail and not detail.get(f.name):
                detail[f.name] = f.detail
    for name in order:
        into.add(name, rows[name], detail.get(name, ""))
    for rep in parts:
        for w in rep.warnings:
            if w not in into.warnings:
                into.warnings.append(w)


def ingest_partitioned(
    path: str | Path,
    out_dir: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    preset: str | None = None,
    source_tz: str | None = None,
    dayfirst: bool | None = None,
    na_values: Sequence[str] | None = None,
    delimiter: str | None = None,
    activity_map: Mapping[str, str] | str | Path | None = None,
    timestamp_policy: TimestampPolicy = "drop",
    drop_duplicates: bool = True,
    pseudonym_key: str | bytes | None = None,
    pseudonymize_columns: Sequence[str] | None = None,
    redact_columns: Sequence[str] | None = None,
    privacy: bool = True,
    events_per_part: int = 1_000_000,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    buckets: int | None = None,
) -> StreamResult:
    """`ingest` of a CSV(.gz) streamed into case-partitioned Parquet under `out_dir` (see the module docstring).

    The events equal `ingest(path, ...)`'s with the same options; `out_dir` must not exist or be empty.
    """
    p = Path(path)
    out = Path(out_dir)
    if not p.is_file():
        raise InvalidEventLog("log file does not exist", file=str(p))
    if detect_format(p) != "csv":
        raise InvalidInput(f"streaming ingest reads CSV(.gz) files; {p.name} is {detect_format(p)}: "
                           "ingest it without --partitioned", field="log")
    if timestamp_policy not in ("drop", "impute", "error"):
        raise InvalidEventLog(f"timestamp policy must be drop, impute or error, got {timestamp_policy!r}",
                              file=str(p), column=TIMESTAMP)
    if chunk_bytes < 1:
        raise InvalidInput("chunk_bytes must be >= 1", field="chunk_bytes")
    if events_per_part < 1:
        raise InvalidInput("events_per_part must be >= 1", field="events_per_part")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"output folder {out} exists and is not empty; choose a new folder", field="out")
    pre, mapping, how, tz, dayf, nas = read_options(p, preset=preset, mapping=mapping, source_tz=source_tz,
                                                    dayfirst=dayfirst, na_values=na_values)
    amap = load_activity_map(activity_map) if isinstance(activity_map, (str, Path)) else activity_map

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        result = _run(p, out, staging, mapping=mapping, how=how, pre=pre, preset=preset, tz=tz, dayfirst=dayf,
                      nas=nas, delimiter=delimiter, amap=amap, timestamp_policy=timestamp_policy,
                      drop_duplicates=drop_duplicates, pseudonym_key=pseudonym_key,
                      pseudonymize_columns=pseudonymize_columns, redact_columns=redact_columns, privacy=privacy,
                      events_per_part=events_per_part, chunk_bytes=chunk_bytes,
                      n_buckets=_bucket_count(p, bucket_bytes, buckets))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out_dir = out
    result.parts = [out / q.name for q in result.parts]
    return result


def _run(
    p: Path, out: Path, staging: Path, *, mapping: Mapping[str, str] | None, how: str, pre: Preset | None,
    preset: str | None, tz: str, dayfirst: bool | None, nas: Sequence[str], delimiter: str | None,
    amap: Mapping[str, str] | None, timestamp_policy: TimestampPolicy, drop_duplicates: bool,
    pseudonym_key: str | bytes | None, pseudonymize_columns: Sequence[str] | None,
    redact_columns: Sequence[str] | None, privacy: bool, events_per_part: int, chunk_bytes: int, n_buckets: int,
) -> StreamResult:
    name = log_name(p)
    warnings: list[str] = []
    enc, sep, names = _dialect(p, delimiter, warnings)
    report = DataQualityReport(source=str(p), rows_in=0)
    report.warnings.extend(warnings)
    report.add("csv_dialect", 0, f"delimiter {sep!r}, {len(names)} columns")

    # the column mapping needs only the header: a wrong column fails before anything is written
    used = resolve_mapping(names, mapping, p, report, how)
    clash = [t for s, t in used.items() if t in names and t not in used]
    renamed = [f"{c}_source" if c in clash else c for c in names]
    if clash:
        report.warnings.append(f"source column(s) {clash} renamed to *_source to make room for the mapping")
    final = [used.get(orig, r if orig in clash else orig) for orig, r in zip(names, renamed, strict=True)]
    missing = [c for c in REQUIRED_COLUMNS if c not in final]
    if missing:
        guess = detect_source(list(names))
        hint = f"; it looks like a {guess.kind} source: use --preset {guess.preset}" if guess.preset else ""
        raise InvalidEventLog(
            f"missing required column(s) {missing}; the file has {names} "
            "(pass a mapping like {'Ticket': 'case_id'} or a preset)" + hint,
            file=str(p), column=missing[0],
        )
    rename = {orig: new for orig, new in zip(names, final, strict=True) if orig != new}
    src_ts = next((s for s, t in used.items() if t == TIMESTAMP), TIMESTAMP)
    ts_cols = [_TsColumn(TIMESTAMP, "timestamp")]
    for extra_ts in pre.extra_timestamps if pre else ():
        if extra_ts in final:
            ts_cols.append(_TsColumn(extra_ts, extra_ts))

    spill = _Spill(staging / "_spill", n_buckets)
    types: dict[str, _TypeStats] = {}
    copies: dict[str, bool] = {}
    cand: dict[str, str] = {}
    act_counts: Counter[str] = Counter()
    junk_cases: dict[str, set[str]] = {}
    first_review: DataQualityReport | None = None
    n_known = n_no_case = n_no_act = n_activity_from = 0
    nat_first: int | None = None
    nat_count = 0
    chunks = 0
    row0 = 0
    for raw in _chunks(p, enc=enc, sep=sep, names=names, nas=nas, chunk_bytes=chunk_bytes):
        chunks += 1
        frame = raw.rename(rename)
        if pre and pre.activity_from:
            joined = [c for c in pre.activity_from if c in frame.columns]
            frame = frame.with_columns(pl.concat_str([pl.col(c).cast(pl.String) for c in joined], separator="-",
                                                     ignore_nulls=True).alias(ACTIVITY))
            n_activity_from += frame.height
        parsed = []
        for tc in ts_cols:
            col = _parse_chunk(tc, frame[tc.column], row0=row0, source_tz=tz, dayfirst=dayfirst, report=report)
            if timestamp_policy == "error" and tc.column == TIMESTAMP and tc.first_bad is not None:
                raise InvalidEventLog(f"unparseable timestamp {tc.first_bad[1]!r} (timestamp policy 'error')",
                                      file=str(p), row=tc.first_bad[0], column=src_ts)
            parsed.append(col)
        frame = frame.with_columns(parsed)
        if chunks == 1:
            types = {c: _TypeStats() for c, t in frame.schema.items() if c not in _KEEP_STR and t == pl.String}
            cand = _copy_candidates(frame.columns)
            copies = dict.fromkeys(cand, True)
        for c, st in types.items():
            st.update(frame[c])
        for c, still in copies.items():
            if still:
                copies[c] = bool(frame[c].eq_missing(frame[cand[c]]).all())
        row_no = pl.Series("_row", np.arange(row0 + 1, row0 + 1 + frame.height, dtype=np.int64))
        row0 += frame.height
        if first_review is None:
            first_review = _review_first(frame, name, p, preset)
        if pre and pre.drop_cases:
            known = frame[CASE_ID].is_in(list(pre.drop_cases))
            n_known += int(known.sum())
            frame, row_no = frame.filter(~known), row_no.filter(~known)
        acts = frame[ACTIVITY].drop_nulls().value_counts()
        act_counts.update(dict(zip(acts[ACTIVITY].to_list(), acts["count"].to_list(), strict=True)))
        junk = [a for a in acts[ACTIVITY].to_list() if is_placeholder_activity(str(a))]
        if junk:
            sel = frame.filter(pl.col(ACTIVITY).is_in(junk))
            for a, c in zip(sel[ACTIVITY].to_list(), sel[CASE_ID].to_list(), strict=True):
                junk_cases.setdefault(a, set()).add(str(c))
        # rows without case id or activity cannot be bucketed; `clean` drops them the same way
        miss_case = frame[CASE_ID].is_null() | (frame[CASE_ID].str.strip_chars() == "")
        n_no_case += int(miss_case.sum())
        frame, row_no = frame.filter(~miss_case), row_no.filter(~miss_case)
        miss_act = frame[ACTIVITY].is_null() | (frame[ACTIVITY].str.strip_chars() == "")
        n_no_act += int(miss_act.sum())
        frame, row_no = frame.filter(~miss_act), row_no.filter(~miss_act)
        if timestamp_policy == "error":
            nat = frame[TIMESTAMP].is_null()
            if nat.any():
                nat_count += int(nat.sum())
                if nat_first is None:
                    nat_first = int(row_no.filter(nat)[0])
        if frame.height:
            spill.add(frame, _bucket_of(frame[CASE_ID], n_buckets))
    spill.close()
    report.rows_in = row0
    if row0 == 0:
        raise InvalidEventLog("the log has a header but no events", file=str(p))
    assert first_review is not None
    if n_activity_from:
        joined = [c for c in (pre.activity_from if pre else ()) if c in final]
        report.add("activity_from_columns", n_activity_from, "activity = " + "-".join(joined))
    for tc in ts_cols:
        _close_timestamps(tc, report, tz, p)
    if nat_count:
        raise InvalidEventLog(f"{nat_count} event(s) without a usable timestamp (timestamp policy 'error')",
                              file=str(p), row=nat_first, column=TIMESTAMP)
    casts = {c: t for c, st in types.items() if (t := st.dtype()) is not None}
    dropped = [c for c, same in copies.items() if same and c not in casts]
    if dropped:
        report.add("redundant_columns_dropped", 0, f"{dropped} repeat canonical columns")
    if pre and pre.drop_cases:
        report.add("known_incomplete_case_dropped", n_known, f"cases {list(pre.drop_cases)}: {pre.drop_cases_reason}")
    _review(first_review, report, act_counts, junk_cases)

    # stage 2a: clean and protect each bucket, spill it back cleaned
    cleaned = _Spill(staging / "_clean", n_buckets)
    bucket_reports: list[DataQualityReport] = []
    attrs: list[str] | None = None
    activities: set[str] = set()
    rows_out = cases_out = 0
    pcols: list[str] | None = None
    dtypes: dict[str, Any] = {}
    for b in range(n_buckets):
        got = spill.read(b)
        if got is None:
            continue
        frame = got
        if casts:
            frame = frame.with_columns([pl.col(c).str.strip_chars().cast(t, strict=False) for c, t in casts.items()])
        if dropped:
            frame = frame.drop(dropped)
        brep = DataQualityReport(source=str(p), rows_in=frame.height)
        log = EventLog(frame.to_pandas(), name=name, quality=brep)
        del frame
        if not log.df[TIMESTAMP].notna().any():
            # a bucket whose events all lack a time: cleaning drops it whole (counted as `clean` would)
            keep = _first_occurrence_mask(log.df) if drop_duplicates else np.ones(len(log.df), dtype=bool)
            brep.add("exact_duplicates_dropped", int((~keep).sum()))
            gone = "timestamp_unimputable_dropped" if timestamp_policy == "impute" else "timestamp_missing_dropped"
            brep.add(gone, int(keep.sum()))
            bucket_reports.append(brep)
            continue
        log = clean(log, activity_map=amap, timestamp_policy=timestamp_policy, drop_duplicates=drop_duplicates)
        battrs = log.case_attributes
        if privacy:
            if pcols is None:
                if pseudonymize_columns is None:
                    extra = pre.identifier_columns if pre else ()
                    named = [c for c in person_columns(log.df) if c not in extra]
                    pcols = [RESOURCE, *[c for c in extra if c in log.df.columns], *named]
                else:
                    pcols = list(pseudonymize_columns)
            log = apply_privacy(log, key=pseudonym_key, pseudonymize_columns=pcols, redact_columns=redact_columns)
        assert log.quality is not None
        bucket_reports.append(log.quality)
        attrs = list(battrs) if attrs is None else [c for c in attrs if c in battrs]
        activities.update(log.df[ACTIVITY].astype(str).unique().tolist())
        rows_out += len(log.df)
        cases_out += int(log.df[CASE_ID].nunique())
        done = pl.from_pandas(log.df)
        for c, t in done.schema.items():
            if t != pl.Null:
                dtypes.setdefault(c, t)
        cleaned.add(done, np.full(len(log.df), b, dtype=np.int64), batch_rows=max(1024, _MERGE_ROWS // n_buckets))
        cleaned.close()  # one bucket at a time: the writer is not needed again
    if rows_out == 0:
        raise InvalidEventLog("no events left after cleaning (see the quality report)", file=str(p))
    _merge_fixes(report, bucket_reports, skip={"activity_relabelled"})
    _fix_relabel(report, bucket_reports, amap, {_normalise_label(str(a)) for a in act_counts})
    _add_to(report, "missing_case_id_dropped", n_no_case)
    _add_to(report, "missing_activity_dropped", n_no_act)
    report.rows_out = rows_out
    report.cases_out = cases_out

    # stage 2b: the cleaned buckets merged by case id into case-partitioned Parquet with the final case attributes
    frames = _merge_by_case(cleaned, n_buckets, dtypes)
    parts = write_partitioned(frames, staging, events_per_part=events_per_part, name=name,
                              case_attributes=attrs or [])
    shutil.rmtree(staging / "_spill", ignore_errors=True)
    shutil.rmtree(staging / "_clean", ignore_errors=True)
    assert (staging / PARTS_MANIFEST).is_file()
    return StreamResult(out_dir=out, parts=parts, name=name, quality=report, case_attributes=attrs or [],
                        activities=sorted(activities), chunks=chunks, buckets=n_buckets)


def _add_to(report: DataQualityReport, name: str, rows: int) -> None:
    for f in report.fixes:
        if f.name == name:
            f.rows += rows
            return
    report.add(name, rows)


def _fix_relabel(report: DataQualityReport, parts: list[DataQualityReport], amap: Mapping[str, str] | None,
                 labels: set[str]) -> None:
    """The relabelling fix over the file: rows summed, unused rules against every (normalised) label seen."""
    changed = sum(f.rows for rep in parts for f in rep.fixes if f.name == "activity_relabelled")
    if not amap:
        report.add("activity_relabelled", 0, "no activity map given")
        return
    unused = sorted(set(amap) - labels)
    detail = f"{len(amap)} rules"
    if unused:
        detail += f"; {len(unused)} never matched: {unused[:5]}"
    report.add("activity_relabelled", changed, detail)


def _review_first(frame: pl.DataFrame, name: str, p: Path, preset: str | None) -> DataQualityReport:
    """`review_source` on the first chunk (only its report is kept, not the chunk)."""
    first = EventLog(frame.to_pandas(), name=name, quality=DataQualityReport(source=str(p), rows_in=0))
    review_source(first, path=p, fmt="csv", preset=preset)
    assert first.quality is not None
    return first.quality


def _review(q: DataQualityReport, report: DataQualityReport, act_counts: Counter[str],
            junk_cases: dict[str, set[str]]) -> None:
    """The first chunk's source review, with placeholder activities counted over the whole file."""
    report.source_kind = q.source_kind
    report.suggestions.update(q.suggestions)
    for f in q.fixes:
        if f.name != "placeholder_activity":
            report.fixes.append(f)
    report.notices.extend(n for n in q.notices if not n.startswith("placeholder activit"))
    report.warnings.extend(w for w in q.warnings if w not in report.warnings)
    acts = pd.Series(act_counts).sort_values(ascending=False, kind="stable")
    junk = [a for a in acts.index if is_placeholder_activity(str(a))]
    if junk and len(junk) < len(acts):
        rows = int(acts[junk].sum())
        cases = len(set().union(*(junk_cases.get(a, set()) for a in junk)))
        names = ", ".join(repr(a) for a in junk[:5])
        report.add("placeholder_activity", rows, f"activities {names} stand for a missing value ({cases} cases)")
        report.notices.append(f"placeholder activit{'y' if len(junk) == 1 else 'ies'} {names} in {rows} events "
                              f"({cases} cases): a source's filler for a missing status, not a step; "
                              "filter or map it before reading its paths")
