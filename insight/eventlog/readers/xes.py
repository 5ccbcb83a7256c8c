"""XES sources, streamed into the frame pm4py's `read_xes` gives, with a mapping on top of pm4py's names.

Four readers, tried in order, all giving the same events:
- a vector scanner for the canonical layout the public logs use (OpenXES, Disco): decompressed bytes in chunks cut
  after a `</trace>`, tags found from the positions of '<', '>' and '"' with numpy and checked byte for byte, keys and
  values cut out as Arrow strings, dates parsed per fixed-width group; any other spelling moves the file on;
- a scanner for the wider plain layout (any whitespace inside tags): the same chunks, one regular expression each;
  when any '<' starts a token it does not read, the file moves on;
- lxml's `iterparse`, one trace at a time (each freed once read), for any other well-formed layout;
- pm4py itself for what neither reads (nested or list attributes, dates pandas cannot read as ISO 8601).
Event attributes are gathered as flat key/value lists and made into columns once; dates are parsed per column.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator, Mapping
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


def _trace_sections(path: Path) -> Iterator[bytes]:
    """The trace section of an XES(.gz) file in chunks each cut after a </trace>; raises _NotPlain when the file
    does not start its traces in the first chunk, is not UTF-8 or does not end with </trace> ... </log>."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
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
                yield buf[:cut]
                buf = buf[cut:]
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidEventLog(f"broken gzip file ({exc}); the file may be truncated", file=str(path)) from exc
    last = buf.rfind(b"</trace>")
    end = last + len(b"</trace>") if last >= 0 else 0
    if not re.fullmatch(rb"\s*</log\s*>\s*", buf[end:]):
        raise _NotPlain("the file does not end with </trace> ... </log>")
    if end:
        yield buf[:end]


def _scan(path: Path) -> _Columns:
    """Plain XES text read in chunks cut after a </trace>; raises _NotPlain for anything else."""
    scanner = _Scanner()
    try:
        for piece in _trace_sections(path):
            scanner.feed(piece.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _NotPlain("not UTF-8") from exc
    if scanner.in_trace:
        raise _NotPlain("an unclosed trace")
    return scanner.out


# ---- the vector scanner: the canonical layout read with numpy over the bytes, values cut out by pyarrow ----------
# Every XES export seen in the public logs writes each attribute as exactly `<kind key="K" value="V"/>` and events and
# traces as bare `<event>`/`<trace>` tags. For that layout the tags are found by the positions of '<', '>' and '"'
# alone, checked byte for byte, and keys and values become Arrow strings without a Python object per value. Any
# other spelling (extra spaces, single quotes, attributes between traces, markup in values) raises _NotPlain and
# the file goes to the regex scanner.

_VKINDS = ("string", "date", "int", "float", "boolean", "id")
_VPREFIX = [np.frombuffer(f'<{k} key="'.encode(), dtype=np.uint8) for k in _VKINDS]
_VMID = np.frombuffer(b'" value="', dtype=np.uint8)
_VTAGS = {b"<event>": 1, b"</event>": 2, b"<trace>": 3, b"</trace>": 4}
_STRING, _DATE, _ID = 0, 1, 5


@dataclass
class _VChunk:
    """One chunk's attributes: event attributes (key, value, kind, event) and trace attributes (key, value, kind,
    trace), with the number of events of each trace; event and trace numbers count from the chunk's first."""

    e_keys: Any
    e_vals: Any
    e_kind: np.ndarray
    e_event: np.ndarray
    t_keys: Any
    t_vals: Any
    t_kind: np.ndarray
    t_trace: np.ndarray
    trace_events: np.ndarray


def _gather(pad: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    return pad[starts[:, None] + np.arange(width)]


def _vchunk(buf: bytes) -> _VChunk:
    """Attributes of a run of whole traces of canonical XES bytes; raises _NotPlain for anything else."""
    import pyarrow as pa

    a = np.frombuffer(buf, dtype=np.uint8)
    lt, gt, q = np.flatnonzero(a == 60), np.flatnonzero(a == 62), np.flatnonzero(a == 34)
    if len(lt) != len(gt) or not len(lt) or bool((gt < lt).any()) or bool((lt[1:] < gt[:-1]).any()):
        raise _NotPlain("'<' and '>' do not pair up")
    first_q = np.searchsorted(q, lt)
    n_q = np.searchsorted(q, gt) - first_q
    if int(n_q.sum()) != len(q):
        raise _NotPlain("a quote outside the tags")
    pad = np.concatenate([a, np.zeros(16, dtype=np.uint8)])
    code = np.zeros(len(lt), dtype=np.int8)  # 0 attribute, 1 <event>, 2 </event>, 3 <trace>, 4 </trace>
    bare = np.flatnonzero(n_q == 0)
    if len(bare):
        width = gt[bare] - lt[bare] + 1
        heads = _gather(pad, lt[bare], 8)
        for tag, c in _VTAGS.items():
            tmpl = np.frombuffer(tag.ljust(8, b"\0"), dtype=np.uint8)[: len(tag)]
            hit = (width == len(tag)) & (heads[:, : len(tag)] == tmpl).all(axis=1)
            code[bare[hit]] = c
        if bool((code[bare] == 0).any()):
            raise _NotPlain("a tag other than <event>, <trace> or an attribute")
    att = np.flatnonzero(n_q != 0)
    if bool((n_q[att] != 4).any()):
        raise _NotPlain("an attribute tag with other than two quoted values")
    la, ga, fq = lt[att], gt[att], first_q[att]
    q0, q1, q2, q3 = q[fq], q[fq + 1], q[fq + 2], q[fq + 3]
    kind = np.full(len(att), -1, dtype=np.int8)
    c1, c2 = pad[la + 1], pad[la + 2]
    guess = np.select([c1 == ord("s"), c1 == ord("d"), (c1 == ord("i")) & (c2 == ord("n")), c1 == ord("f"),
                       c1 == ord("b"), (c1 == ord("i")) & (c2 == ord("d"))], list(range(6)), -1)
    for k, tmpl in enumerate(_VPREFIX):
        sel = np.flatnonzero(guess == k)
        if len(sel):
            ok = (q0[sel] - la[sel] + 1 == len(tmpl)) & (_gather(pad, la[sel], len(tmpl)) == tmpl).all(axis=1)
            kind[sel[ok]] = k
    if bool((kind < 0).any()):
        raise _NotPlain("an attribute tag not spelled <kind key=\"..\" value=\"..\"/>")
    if not bool(((q2 - q1 == len(_VMID) - 1) & (_gather(pad, q1, len(_VMID)) == _VMID).all(axis=1)).all()):
        raise _NotPlain("an attribute tag not spelled <kind key=\"..\" value=\"..\"/>")
    if not bool(((ga == q3 + 2) & (pad[q3 + 1] == ord("/"))).all()):
        raise _NotPlain("an attribute tag not closed by '\"/>'")
    is_t, is_e = code == 3, code == 1
    t_depth = np.cumsum(is_t, dtype=np.int64) - np.cumsum(code == 4, dtype=np.int64)
    e_depth = np.cumsum(is_e, dtype=np.int64) - np.cumsum(code == 2, dtype=np.int64)
    if (int(t_depth.min()) < 0 or int(t_depth.max()) > 1 or int(e_depth.min()) < 0 or int(e_depth.max()) > 1
            or t_depth[-1] != 0 or e_depth[-1] != 0 or bool((t_depth[is_e] != 1).any())
            or bool((e_depth[code == 4] != 0).any()) or bool((t_depth[att] != 1).any())):
        raise _NotPlain("events and traces do not nest as XES nests them")
    trace_no = np.cumsum(is_t, dtype=np.int64) - 1
    event_no = np.cumsum(is_e, dtype=np.int64) - 1
    in_event = e_depth[att] == 1
    offsets = np.stack([q0 + 1, q1, q2 + 1, q3], axis=1).ravel()
    if len(buf) >= 2**31:
        raise _NotPlain("a chunk too large for 32-bit offsets")
    strings = (pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buf))
               if len(att) else pa.array([], pa.string()))
    ev, tr = np.flatnonzero(in_event), np.flatnonzero(~in_event)
    out = _VChunk(
        e_keys=strings.take(pa.array(4 * ev)), e_vals=strings.take(pa.array(4 * ev + 2)), e_kind=kind[ev],
        e_event=event_no[att[ev]],
        t_keys=strings.take(pa.array(4 * tr)), t_vals=strings.take(pa.array(4 * tr + 2)), t_kind=kind[tr],
        t_trace=trace_no[att[tr]],
        trace_events=np.bincount(trace_no[is_e], minlength=int(is_t.sum())),
    )
    try:
        for arr in (out.e_keys, out.e_vals, out.t_keys, out.t_vals):
            arr.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise _NotPlain("not UTF-8") from exc
    return out


def _vscan(path: Path) -> list[_VChunk]:
    """Canonical XES bytes in chunks cut after a </trace>; raises _NotPlain for anything else."""
    chunks: list[_VChunk] = []
    for piece in _trace_sections(path):
        chunks.append(_vchunk(piece))
    return chunks


def _unescaped(values: Any) -> Any:
    """Values with references or whitespace characters as an XML parser reports them (a few, so one by one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.match_substring_regex(values, "[&\t\n\r]")
    if not pc.any(mask).as_py():
        return values
    idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    fixed = pa.array([_unescape(v) for v in values.take(pa.array(idx)).to_pylist()], pa.string())
    return pc.replace_with_mask(values, mask, fixed)


_DIGITS = {4: (0, 4), 5: (5, 7), 6: (8, 10), 7: (11, 13), 8: (14, 16), 9: (17, 19)}


def _iso_fixed(m: np.ndarray) -> np.ndarray | None:
    """Microseconds since the epoch (UTC) of same-length ISO 8601 timestamps as a byte matrix, or None when a row
    has another layout than `YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM]` or a field out of range."""
    width = m.shape[1]
    if width < 19:
        return None
    tz = 0
    if m[0, width - 1] == ord("Z"):
        tz = 1
    elif width >= 25 and m[0, width - 6] in (ord("+"), ord("-")) and m[0, width - 3] == ord(":"):
        tz = 6
    frac = width - 19 - tz
    if frac == 1 or frac > 7:
        return None
    seps = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":"}
    if frac:
        seps[19] = "."
    if tz == 1:
        seps[width - 1] = "Z"
    elif tz == 6:
        seps[width - 3] = ":"
    for pos, ch in seps.items():
        if not bool((m[:, pos] == ord(ch)).all()):
            return None
    digit_cols = [c for c in range(width) if c not in seps and not (tz == 6 and c == width - 6)]
    d = m[:, digit_cols].astype(np.int64) - 48
    if bool(((d < 0) | (d > 9)).any()):
        return None
    cols = {c: i for i, c in enumerate(digit_cols)}

    def num(lo: int, hi: int) -> np.ndarray:
        out = np.zeros(len(m), dtype=np.int64)
        for c in range(lo, hi):
            out = out * 10 + d[:, cols[c]]
        return out

    year, month, day = num(0, 4), num(5, 7), num(8, 10)
    hour, minute, second = num(11, 13), num(14, 16), num(17, 19)
    micro = num(20, 20 + frac - 1) * 10 ** (7 - frac) if frac else np.zeros(len(m), dtype=np.int64)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)] + (leap & (month == 2))
    if not bool(((year >= 1678) & (year <= 2261) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim)
                 & (hour <= 23) & (minute <= 59) & (second <= 59)).all()):
        return None
    offset = np.zeros(len(m), dtype=np.int64)
    if tz == 6:
        sign = np.where(m[:, width - 6] == ord("-"), -1, 1)
        oh, om = num(width - 5, width - 3), num(width - 2, width)
        if not bool(((oh <= 23) & (om <= 59)).all()):
            return None
        offset = sign * (oh * 60 + om) * 60
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    secs = ((days * 24 + hour) * 60 + minute) * 60 + second - offset
    return secs * 1_000_000 + micro


def _vdates(values: Any, name: str) -> pd.Series:
    """An Arrow string column of XES dates as pandas reads them (ISO 8601, UTC, microseconds); NaT where null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(values)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    present = np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False))
    vals = values.take(pa.array(present))
    lengths = pc.binary_length(vals).to_numpy(zero_copy_only=False)
    for width in np.unique(lengths):
        sel = np.flatnonzero(lengths == width)
        part = vals.take(pa.array(sel))
        _, offsets, data = part.buffers()
        start = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=part.offset * 4)[0])
        m = np.frombuffer(data, dtype=np.uint8, count=len(sel) * int(width), offset=start).reshape(len(sel), int(width))
        us = _iso_fixed(m)
        if us is None:
            return _dates(pd.Series(values.to_pandas()), name)
        out[present[sel]] = us
    return pd.Series(out.view("datetime64[us]")).dt.tz_localize("UTC")


def _vframe(chunks: list[_VChunk]) -> pd.DataFrame:
    """The frame pm4py's `read_xes` gives, from the vector scanner's chunks (the same rules as `parse_xes`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def cat(name: str) -> Any:
        return pa.chunked_array([getattr(c, name) for c in chunks], pa.string()).combine_chunks()

    ev_base = np.cumsum([0] + [int(c.trace_events.sum()) for c in chunks])
    tr_base = np.cumsum([0] + [len(c.trace_events) for c in chunks])
    n = int(ev_base[-1])
    e_event = np.concatenate([c.e_event + b for c, b in zip(chunks, ev_base, strict=False)])
    e_kind = np.concatenate([c.e_kind for c in chunks])
    t_trace = np.concatenate([c.t_trace + b for c, b in zip(chunks, tr_base, strict=False)])
    t_kind = np.concatenate([c.t_kind for c in chunks])
    trace_counts = np.concatenate([c.trace_events for c in chunks]).astype(np.int64)
    e_keys, e_vals, t_keys, t_vals = cat("e_keys"), cat("e_vals"), cat("t_keys"), cat("t_vals")
    chunks.clear()  # the combined arrays replace the per-chunk ones
    if pc.any(pc.match_substring_regex(e_keys, "[&\t\n\r]")).as_py() or \
            pc.any(pc.match_substring_regex(t_keys, "[&\t\n\r]")).as_py():
        raise _NotPlain("a reference or whitespace character in a key")
    e_vals, t_vals = _unescaped(e_vals), _unescaped(t_vals)

    # typed event attributes (int, float, boolean) become Python values; those pm4py cannot read are left out
    typed: dict[int, Any] = {}
    keep = np.ones(len(e_kind), dtype=bool)
    odd = np.flatnonzero((e_kind != _STRING) & (e_kind != _ID) & (e_kind != _DATE))
    if len(odd):
        for i, v in zip(odd.tolist(), e_vals.take(pa.array(odd)).to_pylist(), strict=True):
            try:
                typed[i] = _typed(_VKINDS[e_kind[i]], v)
            except ValueError:
                keep[i] = False
    if not bool(keep.all()):
        kept = np.flatnonzero(keep)
        remap = np.cumsum(keep) - 1
        typed = {int(remap[i]): v for i, v in typed.items()}
        e_keys, e_vals = e_keys.take(pa.array(kept)), e_vals.take(pa.array(kept))
        e_kind, e_event = e_kind[kept], e_event[kept]

    order: list[tuple[int, int, int, str]] = []
    frame: dict[str, Any] = {}
    parsed: set[str] = set()
    date_keys: set[str] = set()
    if len(e_keys):
        enc = e_keys.dictionary_encode()
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        uniques = [str(k) for k in enc.dictionary.to_pylist()]
        sort = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[sort], np.arange(len(uniques) + 1))
        for c, key in enumerate(uniques):
            idx = sort[bounds[c]:bounds[c + 1]]
            p = int(idx[0])
            ev = int(e_event[p])
            order.append((ev, 0, p - int(np.searchsorted(e_event, ev)), key))
            rows = e_event[idx]
            if len(rows) > 1 and bool((np.diff(rows) == 0).any()):
                raise _NotFlat(f"event attribute {key!r} given twice in one event")
            kinds = set(np.unique(e_kind[idx]).tolist())
            if _DATE in kinds:
                date_keys.add(key)
            if kinds <= {_STRING, _ID} or kinds == {_DATE}:
                take = np.full(n, -1, dtype=np.int64)
                take[rows] = idx
                col = e_vals.take(pa.array(take, mask=take < 0))
                if kinds == {_DATE}:
                    frame[key] = _vdates(col, key)
                    parsed.add(key)
                else:
                    frame[key] = col.to_pandas()
            else:
                obj = np.full(n, None, dtype=object)
                strings = e_vals.take(pa.array(idx)).to_pylist()
                obj[rows] = [typed.get(int(i), s) for i, s in zip(idx.tolist(), strings, strict=True)]
                frame[key] = obj

    # trace attributes: few, so as per-trace dicts exactly as the scanners build them
    cases: list[dict[str, Any]] = [{} for _ in range(len(trace_counts))]
    case_dates: set[str] = set()
    for t, key, v, k in zip(t_trace.tolist(), t_keys.to_pylist(), t_vals.to_pylist(), t_kind.tolist(), strict=True):
        try:
            cases[t]["case:" + key] = _typed(_VKINDS[k], v)
        except ValueError:
            continue
        if k == _DATE:
            case_dates.add("case:" + key)
    with_events = np.flatnonzero(trace_counts > 0)
    traces = [cases[t] for t in with_events.tolist()]
    counts = trace_counts[with_events]
    trace_first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
    seen: dict[str, int] = {}
    for t, case in enumerate(traces):
        for pos, key in enumerate(case):
            if key not in seen:
                seen[key] = t
                order.append((int(trace_first[t]), 1, pos, key))
    row_trace = np.repeat(np.arange(len(traces), dtype=np.int64), counts)
    for key in seen:
        if key in frame:
            raise _NotFlat(f"event attribute named like trace attribute {key!r}")
        per_trace = [case.get(key) for case in traces]
        if all(v is None or isinstance(v, str) for v in per_trace):
            col = pa.array(per_trace, pa.string())
            if key in case_dates:
                frame[key] = _vdates(col, key).take(row_trace).reset_index(drop=True)
                parsed.add(key)
            else:
                frame[key] = col.take(pa.array(row_trace)).to_pandas()
        else:
            frame[key] = np.repeat(np.asarray(per_trace + [None], dtype=object)[:-1], counts)
    df = pd.DataFrame({key: frame[key] for *_, key in sorted(order)}, index=pd.RangeIndex(n))
    if not len(df.columns):  # events without attributes: pandas labels the empty columns as pm4py's frame does
        df.columns = pd.Index([], dtype=object)
    for key in df.columns:
        if key in parsed:
            continue
        if key in date_keys or key in case_dates:
            df[key] = _dates(df[key], key)
        elif df[key].dtype == object:
            df[key] = pd.Series(df[key].tolist(), index=df.index)
    return df


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
        return _vframe(_vscan(path))
    except _NotPlain:
        pass
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
