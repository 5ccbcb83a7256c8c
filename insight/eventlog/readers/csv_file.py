"""CSV sources: decoding (BOM, UTF-16, cp1252), delimiter sniffing, header clean-up, parsing to strings."""

from __future__ import annotations

import csv
import gzip
import io
import mmap
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from core.errors import InvalidEventLog
from insight.eventlog.readers.raw import RawTable
from insight.eventlog.schema import DataQualityReport


def _decode(data: bytes | mmap.mmap, path: Path, warnings: list[str]) -> bytes | mmap.mmap:
    """UTF-8 bytes without BOM (UTF-16 and cp1252 sources are re-encoded, with a warning); a mapped file that
    needs no change is returned as it is."""
    if data[:3] == b"\xef\xbb\xbf":
        return data[3:]
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        warnings.append("source encoded as UTF-16; re-encoded to UTF-8")
        return bytes(data).decode("utf-16").encode("utf-8")
    try:
        data[:1_000_000].decode("utf-8")
        return data
    except UnicodeDecodeError:
        pass
    data = bytes(data)
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        warnings.append("source is not UTF-8; decoded as cp1252/latin-1")
        try:
            return data.decode("cp1252").encode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1").encode("utf-8")


def _sniff_delimiter(sample: str, path: Path) -> str:
    lines = [ln for ln in sample.splitlines()[:50] if ln.strip()]
    if not lines:
        raise InvalidEventLog("file holds no header line", file=str(path))
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        if counts[best] == 0:
            raise InvalidEventLog(
                "cannot find a column delimiter (tried , ; tab |) in the header line", file=str(path),
            ) from None
        return best


def _dedupe_header(names: list[str], warnings: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for raw in names:
        name = raw.strip() or "unnamed"
        if name in seen:
            seen[name] += 1
            new = f"{name}_{seen[name]}"
            warnings.append(f"duplicate column name {name!r} renamed to {new!r}")
            out.append(new)
        else:
            seen[name] = 1
            out.append(name)
    return out


def read_csv(path: Path, *, na_values: Sequence[str], delimiter: str | None) -> RawTable:
    """A CSV(.gz) file as a table of strings, with its dialect in the quality report."""
    warnings: list[str] = []
    raw = _file_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    data = _decode(raw, path, warnings)
    sample = data[:65536].decode("utf-8", errors="replace")
    sep = delimiter or _sniff_delimiter(sample, path)
    header_line = sample.splitlines()[0] if sample else ""
    header = next(csv.reader([header_line], delimiter=sep))
    names = _dedupe_header(header, warnings)
    nulls = list(na_values) + [""] if na_values else [""]
    table = _read_plain_arrow(data, sep, len(header), nulls)
    if table is not None:
        if len(names) < 2:
            raise InvalidEventLog(
                f"only one column {names} found; not an event log (delimiter {sep!r})", file=str(path),
            )
        table = table.rename_columns(names)
        report = DataQualityReport(source=str(path), rows_in=table.num_rows)
        report.add("csv_dialect", 0, f"delimiter {sep!r}, {len(names)} columns")
        return RawTable(pl.DataFrame(schema=dict.fromkeys(names, pl.String)), report, warnings, arrow=table)
    data = bytes(data)
    try:
        frame = pl.read_csv(
            io.BytesIO(data),
            separator=sep,
            infer_schema=False,
            null_values=nulls,
        )
    except pl.exceptions.PolarsError as exc:
        row = _first_ragged_row(data, sep, len(names))
        where = f"; data row {row} has a different number of fields than the {len(names)} header columns" if row else ""
        raise InvalidEventLog(f"cannot parse CSV (delimiter {sep!r}): {str(exc).splitlines()[0]}{where}",
                              file=str(path), row=row) from exc
    if len(frame.columns) != len(names):
        raise InvalidEventLog(
            f"header has {len(names)} fields but rows have {len(frame.columns)}", file=str(path),
        )
    frame.columns = names
    if len(names) < 2:
        raise InvalidEventLog(
            f"only one column {names} found; not an event log (delimiter {sep!r})", file=str(path),
        )
    report = DataQualityReport(source=str(path), rows_in=frame.height)
    report.add("csv_dialect", 0, f"delimiter {sep!r}, {len(names)} columns")
    return RawTable(frame, report, warnings)


def _file_bytes(path: Path) -> bytes | mmap.mmap:
    """The file's bytes, mapped into memory rather than copied when it can be (Arrow then reads the mapping)."""
    with path.open("rb") as fh:
        try:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, or one that cannot be mapped
            return fh.read()


def _read_plain_arrow(data: bytes | mmap.mmap, sep: str, n_fields: int, nulls: list[str]) -> pa.Table | None:
    """The file as Arrow string columns when it has no quoting and plain line ends, else None (polars reads it).

    Without quote characters and bare carriage returns a CSV row is its fields split on the delimiter, so
    Arrow's multi-threaded reader yields the same strings and nulls as the polars reader (blank lines become
    all-null rows in both); its columns (large strings, what pandas' str dtype holds) then reach pandas without a
    copy. Any row whose field count differs
    from the header's makes Arrow fail, and the polars reader then gives its usual answer or error.
    """
    # Only the head is checked for quotes before reading: the whole file is checked after it, once Arrow's
    # threads have brought a mapped file's pages into memory (a scan of a fresh mapping mostly waits on them).
    if not len(data) or data[:1] in (b"\n", b"\r") or data[:_HEAD_BYTES].find(b'"') != -1:
        return None
    cols = [f"f{i}" for i in range(n_fields)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=pacsv.ReadOptions(column_names=cols, skip_rows=1, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter=sep, quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(cols, pa.large_string()), null_values=nulls,
                                                 strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if _unquoted_plain_lines(data) else None


# bytes at the start of a file checked for quotes before Arrow reads it
_HEAD_BYTES = 1 << 16


def _unquoted_plain_lines(data: bytes | mmap.mmap) -> bool:
    """No quote character anywhere, and every carriage return part of a CRLF line end."""
    if data.find(b'"') != -1:
        return False
    if data.find(b"\r") == -1:
        return True
    whole = bytes(data)
    return whole.count(b"\r") == whole.count(b"\r\n")


def _first_ragged_row(data: bytes, sep: str, n_fields: int) -> int | None:
    """1-based data row whose field count differs from the header's (only run when parsing failed)."""
    # newline="" lets the csv module see bare carriage returns as line ends instead of failing on them
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""), delimiter=sep)
    try:
        next(reader, None)
        for i, fields in enumerate(reader, start=1):
            if fields and len(fields) != n_fields:
                return i
    except csv.Error:
        return None
    return None
