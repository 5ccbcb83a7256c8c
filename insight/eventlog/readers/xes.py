"""XES sources, streamed into the frame pm4py's `read_xes` gives, with a mapping on top of pm4py's names.

Three readers, tried in order, all giving the same events:
- a scanner for the plain layout the public logs use (OpenXES, Disco): decompressed text in chunks cut after a
  `</trace>`, one regular expression per chunk; when any '<' starts a token it does not read, the file moves on;
- lxml's `iterparse`, one trace at a time (each freed once read), for any other well-formed layout;
- pm4py itself for what neither reads (nested or list attributes, dates pandas cannot read as ISO 8601).
Event attributes are gathered as flat key/value lists and made into columns once; dates are parsed per column.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lxml import etree

from core.errors import InvalidEventLog
from insight.eventlog.readers.presets import Preset
from insight.eventlog.readers.raw import log_name
from insight.eventlog.schema import ACTIVITY, PM4PY_COLUMNS, TIMESTAMP, DataQualityReport, EventLog


def read_xes(path: Path, *, mapping: Mapping[str, str] | None, how: str, preset: Preset | None) -> EventLog:
    """An XES(.gz) file onto the canonical columns (pm4py's frame, streamed), with the mapping on top of its names."""
    from insight.eventlog.pm4py_bridge import from_pm4py

    pm = read_xes_events(path)
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


class _NotFlat(Exception):
    """The file uses XES features the streaming parser leaves to pm4py (nested or list attributes, odd layouts)."""


_ATTRIBUTE_KINDS = frozenset({"string", "date", "int", "float", "boolean", "id", "list", "container"})


class _Kinds(dict[Any, str]):
    """Element tag -> local name ('string', 'event', ...), whatever namespace the file uses; '' for non-tags."""

    def __missing__(self, tag: Any) -> str:
        kind = tag.rpartition("}")[2] if isinstance(tag, str) else ""
        self[tag] = kind
        return kind


def _typed(kind: str, value: str | None) -> Any:
    """An attribute's value as pm4py's importer types it (dates stay strings here and are parsed per column)."""
    if kind in ("string", "id", "date"):
        return value
    if kind == "int":
        return int(value)  # type: ignore[arg-type]
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    if kind == "boolean":
        return str(value).lower() == "true"
    raise _NotFlat(kind)


@dataclass
class _Columns:
    """Event attributes as flat key/value lists (one run per event) and trace attributes per trace."""

    keys: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    per_event: list[int] = field(default_factory=list)
    date_keys: set[str] = field(default_factory=set)
    traces: list[dict[str, Any]] = field(default_factory=list)
    trace_events: list[int] = field(default_factory=list)
    case_dates: set[str] = field(default_factory=set)
    kinds: _Kinds = field(default_factory=_Kinds)


def _read_trace(trace: Any, out: _Columns) -> None:
    kinds, keys, values, date_keys = out.kinds, out.keys, out.values, out.date_keys
    events = 0
    case: dict[str, Any] = {}
    for child in trace:
        kind = kinds[child.tag]
        if kind == "event":
            n = 0
            for a in child:
                k = kinds[a.tag]
                if len(a):
                    raise _NotFlat("nested event attribute")
                if k == "string" or k == "id":
                    keys.append(a.get("key"))
                    values.append(a.get("value"))
                elif k == "date":
                    key = a.get("key")
                    keys.append(key)
                    values.append(a.get("value"))
                    date_keys.add(key)
                elif k in _ATTRIBUTE_KINDS:
                    try:
                        value = _typed(k, a.get("value"))
                    except ValueError:  # pm4py leaves out a value its type cannot read
                        continue
                    keys.append(a.get("key"))
                    values.append(value)
                else:
                    continue
                n += 1
            out.per_event.append(n)
            events += 1
        elif kind in _ATTRIBUTE_KINDS:
            if len(child):
                raise _NotFlat("nested trace attribute")
            key = "case:" + str(child.get("key"))
            try:
                case[key] = _typed(kind, child.get("value"))
            except ValueError:
                continue
            if kind == "date":
                out.case_dates.add(key)
    if events:  # pm4py makes rows from events only: a trace without any adds no columns
        out.traces.append(case)
        out.trace_events.append(events)


def _stream(path: Path) -> _Columns:
    """Walk the file trace by trace, freeing each one once read (memory stays bounded by the largest trace)."""
    out = _Columns()
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as fh:
            for _, trace in etree.iterparse(fh, events=("end",), tag="{*}trace", huge_tree=True,
                                            remove_comments=True):
                _read_trace(trace, out)
                trace.clear()
                while trace.getprevious() is not None:
                    del trace.getparent()[0]
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidEventLog(f"broken gzip file ({exc}); the file may be truncated", file=str(path)) from exc
    except etree.XMLSyntaxError as exc:
        raise InvalidEventLog(f"cannot parse XES: XMLSyntaxError: {exc}", file=str(path)) from exc
    return out


class _NotPlain(Exception):
    """The text is not the plain layout the scanner reads (the lxml stream reads it instead)."""


# The plain layout every public XES export uses: self-closing attributes with key before value in double quotes,
# <event>/<trace> tags without attributes. Every '<' of the trace section must start one of these tokens, so
# comments, CDATA, nested attributes or any other layout send the file to the lxml stream.
_TOKEN = re.compile(
    r'<(string|date|int|float|boolean|id)\s+key="([^"<&\t\n\r]*)"\s+value="([^"<]*)"\s*/>|<(/?)(event|trace)\s*>'
)
_ESCAPED = re.compile(r'value="[^"]*[&\t\n\r]')
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_CHUNK = 1 << 23  # bytes of decompressed XML scanned at a time


def _unescape(value: str) -> str:
    """An attribute value as an XML parser reports it: whitespace normalised, then references resolved."""
    if "\r" in value or "\n" in value or "\t" in value:
        value = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\t", " ")
    if "&" not in value:
        return value
    if _ENTITY.sub("", value).count("&"):
        raise _NotPlain("a bare '&' in a value")

    def ref(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
        return _NAMED[name]

    return _ENTITY.sub(ref, value)


class _Scanner:
    """Trace sections of plain XES text, scanned chunk by chunk with one regular expression."""

    def __init__(self) -> None:
        self.out = _Columns()
        self.in_trace = False
        self.in_event = False
        self.case: dict[str, Any] = {}
        self.events = 0

    def feed(self, text: str) -> None:
        out = self.out
        keys, values, date_keys, per_event = out.keys, out.values, out.date_keys, out.per_event
        in_event, in_trace, case, events, first = self.in_event, self.in_trace, self.case, self.events, 0
        tokens = _TOKEN.findall(text)
        if len(tokens) != text.count("<"):
            raise _NotPlain("markup the scanner does not read")
        escapes = _ESCAPED.search(text) is not None  # one pass over the chunk instead of four per value
        for kind, key, value, close, tag in tokens:
            if kind:
                if escapes and ("&" in value or "\n" in value or "\t" in value or "\r" in value):
                    value = _unescape(value)
                if in_event:
                    if kind == "string" or kind == "id":
                        keys.append(key)
                        values.append(value)
                    elif kind == "date":
                        keys.append(key)
                        values.append(value)
                        date_keys.add(key)
                    else:
                        try:
                            typed = _typed(kind, value)
                        except ValueError:  # pm4py leaves out a value its type cannot read
                            continue
                        keys.append(key)
                        values.append(typed)
                elif in_trace:
                    try:
                        case["case:" + key] = _typed(kind, value)
                    except ValueError:
                        continue
                    if kind == "date":
                        out.case_dates.add("case:" + key)
                else:
                    raise _NotPlain("an attribute between traces")
            elif tag == "event":
                if close:
                    if not in_event:
                        raise _NotPlain("</event> without <event>")
                    per_event.append(len(keys) - first)
                    events += 1
                    in_event = False
                else:
                    if in_event or not in_trace:
                        raise _NotPlain("an event outside a trace or inside an event")
                    in_event, first = True, len(keys)
            elif close:
                if not in_trace or in_event:
                    raise _NotPlain("</trace> out of place")
                if events:
                    out.traces.append(case)
                    out.trace_events.append(events)
                in_trace = False
            else:
                if in_trace:
                    raise _NotPlain("a trace inside a trace")
                in_trace, case, events = True, {}, 0
        self.in_event, self.in_trace, self.case, self.events = in_event, in_trace, case, events


def _scan(path: Path) -> _Columns:
    """Plain XES text read in chunks cut after a </trace>; raises _NotPlain for anything else."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    scanner = _Scanner()
    try:
        with opener(path, "rb") as fh:
            head = fh.read(_CHUNK)
            start = head.find(b"<trace")
            decl = head[: head.find(b"?>")] if head.startswith(b"<?xml") else b""
            if start < 0 or (b"encoding" in decl and not re.search(rb"encoding=[\"'](?i:utf-?8)[\"']", decl)):
                raise _NotPlain("no trace in the first chunk, or not UTF-8")
            if b"<!--" in head[start:] or b"<![CDATA[" in head[start:]:
                raise _NotPlain("markup inside the traces")
            buf = head[start:]
            while True:
                more = fh.read(_CHUNK)
                if not more:
                    break
                buf += more
                cut = buf.rfind(b"</trace>")
                if cut < 0:
                    continue
                cut += len(b"</trace>")
                scanner.feed(buf[:cut].decode("utf-8"))
                buf = buf[cut:]
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidEventLog(f"broken gzip file ({exc}); the file may be truncated", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise _NotPlain("not UTF-8") from exc
    last = buf.rfind(b"</trace>")
    end = last + len(b"</trace>") if last >= 0 else 0
    if not re.fullmatch(rb"\s*</log\s*>\s*", buf[end:]):
        raise _NotPlain("the file does not end with </trace> ... </log>")
    try:
        scanner.feed(buf[:end].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _NotPlain("not UTF-8") from exc
    if scanner.in_trace:
        raise _NotPlain("an unclosed trace")
    return scanner.out


def _dates(values: pd.Series, name: str) -> pd.Series:
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    if bool((parsed.isna() & values.notna()).any()):
        raise _NotFlat(f"a {name} value pandas does not read as ISO 8601")
    return parsed.astype("datetime64[us, UTC]")


def parse_xes(path: Path) -> pd.DataFrame:
    """An XES(.gz) file as the frame pm4py's `read_xes` gives (same rows, columns, order, types), streamed.

    Raises `_NotFlat` for files using XES features this parser leaves to pm4py.
    """
    try:
        cols = _scan(path)
    except _NotPlain:
        cols = _stream(path)
    n = len(cols.per_event)
    per_event = np.asarray(cols.per_event, dtype=np.int64)
    event_of = np.repeat(np.arange(n, dtype=np.int64), per_event)
    codes, uniques = pd.factorize(pd.Series(cols.keys, dtype=object), sort=False)
    values = np.asarray(cols.values, dtype=object)
    del cols.keys, cols.values
    # pm4py builds one dict per event (its attributes, then the trace's as `case:*`) and lets pandas take the
    # columns in order of first appearance; the same order comes from (first event, trace-attribute phase, position).
    event_start = np.concatenate([[0], np.cumsum(per_event)[:-1]]) if n else np.zeros(0, np.int64)
    order: list[tuple[int, int, int, str]] = []
    frame: dict[str, Any] = {}
    if len(uniques):
        first_pos = np.full(len(uniques), -1, dtype=np.int64)
        rev = np.arange(len(codes) - 1, -1, -1)
        first_pos[codes[rev]] = rev
        for c, key in enumerate(uniques):
            p = int(first_pos[c])
            ev = int(event_of[p])
            order.append((ev, 0, p - int(event_start[ev]), str(key)))
        sort = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[sort], np.arange(len(uniques) + 1))
        for c, key in enumerate(uniques):
            idx = sort[bounds[c]:bounds[c + 1]]
            rows = event_of[idx]
            if len(rows) > 1 and bool((np.diff(rows) == 0).any()):
                raise _NotFlat(f"event attribute {key!r} given twice in one event")
            col = np.full(n, None, dtype=object)
            col[rows] = values[idx]
            frame[str(key)] = col
    trace_counts = np.asarray(cols.trace_events, dtype=np.int64)
    trace_first = np.concatenate([[0], np.cumsum(trace_counts)[:-1]]) if len(trace_counts) else trace_counts
    seen: dict[str, int] = {}
    for t, case in enumerate(cols.traces):
        for pos, key in enumerate(case):
            if key not in seen:
                seen[key] = t
                order.append((int(trace_first[t]), 1, pos, key))
    for key in seen:
        per_trace = [case.get(key) for case in cols.traces]
        if key in frame:
            raise _NotFlat(f"event attribute named like trace attribute {key!r}")
        frame[key] = np.repeat(np.asarray(per_trace + [None], dtype=object)[:-1], trace_counts)
    df = pd.DataFrame({key: frame[key] for *_, key in sorted(order)}, index=pd.RangeIndex(n))
    for key in df.columns:
        if key in cols.date_keys or key in cols.case_dates:
            df[key] = _dates(df[key], key)
        elif df[key].dtype == object:
            # typed trace attributes: the types pandas infers from the per-event dicts pm4py hands it
            df[key] = pd.Series(df[key].tolist(), index=df.index)
    return df


def read_xes_events(path: Path) -> pd.DataFrame:
    """The events of an XES(.gz) file exactly as pm4py's `read_xes` frames them: streamed, or by pm4py itself."""
    try:
        return parse_xes(path)
    except (_NotFlat, ValueError):
        from insight.eventlog.pm4py_bridge import read_xes_frame

        return read_xes_frame(path)
