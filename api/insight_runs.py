"""Mined runs for the analyst pages: upload preview, mining in the background, per-run aggregates, filters, drill-down.

A run is one mined log kept in `home/analyst/runs/<id>/`: `meta.json` (status, progress, source, quality),
`events.parquet` (the canonical, cleaned, pseudonymized log in case/time order), `cases.parquet` (one row per case:
times, variant, teams, channel, intent, segment, misrouting and KPI inputs, all taken from the miners' own results)
and `insight.json` (the InsightReport). Filters select cases on the per-case frame (polars); the miners
(`discover_process_map`, `mine_variants`) then run on an encoded subset built by slicing the run's encoding, so a
filtered map costs one miner call, not a re-read. Results are cached by (run, filter).

Nothing here re-implements a miner: maps, variants, misrouting, bottlenecks, conformance and alerts come from
`insight.mining`; what is computed here is selection (which cases), summary statistics of the miners' per-case
outputs over a time axis, and lookups for drill-down.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from core.errors import DeskpilotError, InvalidEventLog, InvalidInput, NotFound
from insight.eventlog import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    RESOURCE,
    TIMESTAMP,
    EventLog,
    clean,
    detect_format,
    ingest,
    read_log,
)
from insight.mining import (
    CostModel,
    EncodedLog,
    ProcessMap,
    VariantTable,
    case_kpis,
    discover_process_map,
    encode,
    mine_variants,
)
from insight.mining._core import Codes, case_variant_ids

DIMENSIONS = ("intent", "segment")  # case attributes filtered by their (first) value
MASK_COLUMNS = {"team": GROUP, "channel": CHANNEL}  # filtered by "the case touched one of these"
MAX_MASK_VALUES = 63  # one bit per value in an int64
SAMPLE_ROWS = 2000
STALE_JOB_S = 15 * 60  # a mining job silent this long (no step finished) is taken for dead
RUN_ID = re.compile(r"^[a-z0-9]{6,32}$")
MINE_STEPS = ("reading log", "encode", "process map", "variants", "bottlenecks", "handovers", "KPIs", "labels",
              "misrouting", "conformance", "alerts", "aggregates", "saving")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------- run metadata


@dataclass
class RunMeta:
    """What a run is and how far its mining got (stored as meta.json)."""

    id: str
    name: str
    source: str
    created_at: str
    created_by: str
    status: str = "queued"  # queued | running | done | failed
    step: str = ""
    done: int = 0
    total: int = len(MINE_STEPS)
    error: str | None = None
    n_cases: int = 0
    n_events: int = 0
    start: str | None = None
    end: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    headlines: list[str] = field(default_factory=list)
    took_s: float | None = None

    @property
    def percent(self) -> int:
        """Progress as a whole percentage."""
        return 100 if self.status == "done" else int(100 * self.done / max(1, self.total))


@dataclass
class Upload:
    """An uploaded log waiting to be previewed and mined."""

    id: str
    path: Path
    name: str
    format: str


@dataclass
class Preview:
    """What the reader makes of the first rows of an upload: columns, mapping, sample and data quality."""

    upload: Upload
    columns: list[str]
    sample: list[list[str]]
    mapping: dict[str, str]  # canonical column -> source column it is read from
    quality: dict[str, Any] | None
    sample_rows: int
    cases: int = 0
    events: int = 0
    activities: list[str] = field(default_factory=list)
    error: str | None = None
    editable: bool = True


class RunStore:
    """Runs and uploads under `home/analyst`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs_dir = root / "runs"
        self.uploads_dir = root / "uploads"

    def run_dir(self, run_id: str) -> Path:
        """Folder of one run (NotFound for an id that names no run)."""
        if not RUN_ID.match(run_id or ""):
            raise NotFound(f"no mined run {run_id!r}")
        d = self.runs_dir / run_id
        if not (d / "meta.json").is_file():
            raise NotFound(f"no mined run {run_id!r}")
        return d

    def meta(self, run_id: str) -> RunMeta:
        """The run's metadata."""
        data = json.loads((self.run_dir(run_id) / "meta.json").read_text(encoding="utf-8"))
        return RunMeta(**data)

    def save_meta(self, meta: RunMeta) -> None:
        """Write meta.json atomically (readers poll it while the job runs)."""
        d = self.runs_dir / meta.id
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(asdict(meta), ensure_ascii=False), encoding="utf-8")
        tmp.replace(d / "meta.json")

    def runs(self) -> list[RunMeta]:
        """Every run, newest first."""
        out = []
        if self.runs_dir.is_dir():
            for d in self.runs_dir.iterdir():
                if (d / "meta.json").is_file() and RUN_ID.match(d.name):
                    try:
                        out.append(self.meta(d.name))
                    except (ValueError, TypeError):
                        continue
        return sorted(out, key=lambda m: m.created_at, reverse=True)

    def new_run(self, *, name: str, source: str, created_by: str, mapping: dict[str, str] | None = None) -> RunMeta:
        """Create a queued run."""
        meta = RunMeta(id=secrets.token_hex(6), name=name, source=source, created_at=_now(), created_by=created_by,
                       mapping=dict(mapping or {}))
        self.save_meta(meta)
        return meta

    def save_upload(self, filename: str, data: bytes) -> Upload:
        """Store an uploaded file; the format is checked from its name and first bytes."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "log.csv").name)[-120:] or "log.csv"
        if not data:
            raise InvalidInput("the uploaded file is empty", field="file")
        up_id = secrets.token_hex(6)
        d = self.uploads_dir / up_id
        d.mkdir(parents=True, exist_ok=True)
        path = d / safe
        path.write_bytes(data)
        try:
            fmt = detect_format(path)
        except InvalidEventLog as exc:
            raise InvalidInput(f"{safe}: {exc.message}", field="file") from exc
        return Upload(id=up_id, path=path, name=safe, format=str(fmt))

    def upload(self, upload_id: str) -> Upload:
        """A stored upload by id."""
        if not RUN_ID.match(upload_id or ""):
            raise NotFound(f"no upload {upload_id!r}")
        d = self.uploads_dir / upload_id
        files = [p for p in d.iterdir() if p.is_file() and not p.name.startswith("_")] if d.is_dir() else []
        if not files:
            raise NotFound(f"no upload {upload_id!r}")
        path = files[0]
        return Upload(id=upload_id, path=path, name=path.name, format=str(detect_format(path)))


# ------------------------------------------------------------------------------------------------ preview


_MAP_PAIR = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")->(\w+)""")


def mapping_from_quality(quality: dict[str, Any] | None) -> dict[str, str]:
    """The {canonical: source} mapping the reader recorded in the quality report's `column_mapping` fix."""
    import ast

    out: dict[str, str] = {}
    for fix in (quality or {}).get("fixes", []):
        if fix.get("name") != "column_mapping":
            continue
        for src, canon in _MAP_PAIR.findall(str(fix.get("detail", ""))):
            try:
                out[canon] = str(ast.literal_eval(src))
            except (ValueError, SyntaxError):
                continue
    return out


def _source_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """{canonical: source} as the reader's {source: canonical}; one source column may feed one canonical column."""
    out: dict[str, str] = {}
    for canon, src in mapping.items():
        if not src:
            continue
        if src in out:
            raise InvalidInput(f"column {src!r} is mapped to both {out[src]} and {canon}; pick one column for each",
                               field=f"map_{canon}")
        out[src] = canon
    return out


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115 - closed by caller


def _csv_head(path: Path, n_lines: int) -> tuple[list[str], list[list[str]], str, str]:
    """Header, the first rows, the delimiter and the raw text of the first `n_lines` data lines of a CSV."""
    with _open_text(path) as fh:
        lines = []
        for i, line in enumerate(fh):
            lines.append(line)
            if i >= n_lines:
                break
    text = "".join(lines)
    if not text.strip():
        raise InvalidInput("the uploaded CSV holds no header", field="file")
    try:
        delim = csv.Sniffer().sniff(lines[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delim = ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    return rows[0], rows[1:], delim, text


def preview_upload(upload: Upload, *, mapping: dict[str, str] | None = None, sample_rows: int = SAMPLE_ROWS,
                   dayfirst: bool | None = None) -> Preview:
    """Read the first `sample_rows` events with the project's reader and cleaner: mapping, sample, quality table.

    `mapping` is {canonical: source}; empty means auto-detect (what the reader records is shown back).
    """
    map_error = None
    try:
        src_map = _source_mapping(mapping or {})
    except InvalidInput as exc:
        src_map, map_error = {}, exc.message
    path = upload.path
    columns: list[str] = []
    sample: list[list[str]] = []
    editable = True
    sample_path = path
    if upload.format == "csv":
        columns, rows, delim, text = _csv_head(path, sample_rows)
        sample = [r[: len(columns)] for r in rows[:8]]
        sample_path = path.parent / "_sample.csv"
        sample_path.write_text(text, encoding="utf-8")
    elif upload.format == "parquet":
        frame = pl.read_parquet(path, n_rows=sample_rows)
        columns = list(frame.columns)
        sample = [[("" if v is None else str(v)) for v in row] for row in frame.head(8).iter_rows()]
        sample_path = path.parent / "_sample.parquet"
        frame.write_parquet(sample_path)
    else:
        editable = False  # XES carries its own standard names (pm4py's)
    prev = Preview(upload=upload, columns=columns, sample=sample, mapping={}, quality=None,
                   sample_rows=sample_rows, editable=editable)
    if map_error is not None:
        if sample_path != path:
            sample_path.unlink(missing_ok=True)
        prev.error, prev.mapping = map_error, dict(mapping or {})
        return prev
    try:
        log = read_log(sample_path, mapping=src_map or None, dayfirst=dayfirst)
        quality = log.quality.to_dict() if log.quality else None
        log = clean(log)
        quality = log.quality.to_dict() if log.quality else quality
    except DeskpilotError as exc:
        prev.error = exc.message if hasattr(exc, "message") else str(exc)
        prev.mapping = dict(mapping or {})
        return prev
    finally:
        if sample_path != path:
            sample_path.unlink(missing_ok=True)
    found = mapping_from_quality(quality)
    for canon in CANONICAL_COLUMNS:
        if canon not in found and canon in columns:
            found[canon] = canon
    if not editable:
        prev.columns = [str(c) for c in log.df.columns]
        prev.sample = [[str(v) for v in row] for row in log.df.head(8).itertuples(index=False)]
        found = {c: c for c in CANONICAL_COLUMNS if c in log.df.columns}
    prev.mapping = found
    prev.quality = quality
    prev.cases = log.n_cases
    prev.events = log.n_events
    prev.activities = log.activities[:40]
    return prev


# ------------------------------------------------------------------------------------------- per-run frames


def _mask_per_case(enc: EncodedLog, codes: Codes) -> tuple[np.ndarray, list[str]]:
    """Per case, a bitmask of the values (most frequent first, up to 63) its events touch."""
    n = codes.n
    freq = np.bincount(codes.codes[codes.codes >= 0], minlength=n)
    order = np.argsort(-freq, kind="stable")[:MAX_MASK_VALUES]
    bit = np.full(n + 1, 0, dtype=np.int64)
    bit[order] = np.left_shift(np.int64(1), np.arange(len(order), dtype=np.int64))
    ev_bits = bit[codes.codes]  # code -1 picks the trailing 0
    mask = np.bitwise_or.reduceat(ev_bits, enc.case_start[:-1]) if enc.n_events else np.zeros(0, np.int64)
    return mask, [str(codes.labels[i]) for i in order]


def variant_ranks(enc: EncodedLog, table: VariantTable) -> np.ndarray:
    """Per case, the rank (1 = highest cost) of its variant in `table` (mined on the same encoding)."""
    vid, first_case = case_variant_ids(enc)
    rank_of_example = {v.example_case: v.rank for v in table.variants}
    ranks = np.array([rank_of_example.get(str(enc.case_labels[c]), 0) for c in first_case], dtype=np.int32)
    return ranks[vid]


def case_frame(report: Any, enc: EncodedLog) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """One row per case (in encoding order) from the miners' per-case results; and the labels of each mask bit."""
    ck = case_kpis(enc=enc)
    ids = enc.case_labels.astype(str)
    cols: dict[str, Any] = {
        "case_id": ids,
        "start": pd.DatetimeIndex(ck.start).tz_convert("UTC"),
        "throughput_s": ck.throughput_s,
        "n_events": ck.events.astype(np.int64),
        "handling_s": ck.handling_s,
        "transfers": ck.transfers if ck.transfers is not None else np.full(len(ids), np.nan),
        "rework": ck.rework.astype(bool),
        "variant": variant_ranks(enc, report.variants),
    }
    lab = report.labels.df.reindex(ids)
    cols["end"] = pd.DatetimeIndex(lab["end"]).tz_convert("UTC")
    mis = report.misrouting.cases.reindex(ids) if report.misrouting.has_groups else None
    for name in ("first_team", "resolving_team", "teams"):
        cols[name] = lab[name].astype(object).where(lab[name].notna(), None).to_numpy() if name in lab else None
    ext = getattr(report, "extraction", None)
    if ext is not None and len(ext.finished) == len(ids):
        cols["finished"] = np.asarray(ext.finished, dtype=bool)  # reached an end activity (the report's basis)
    if mis is not None:
        # `misrouted` is the misroute model's training label (every transfer); `avoidable` is what routing could
        # have avoided (misroute, ping-pong, needless push-to-front): the figure the pages show.
        cols["misrouted"] = mis["misrouted"].fillna(False).astype(bool).to_numpy()
        if "avoidable" in mis:
            cols["avoidable"] = mis["avoidable"].fillna(False).astype(bool).to_numpy()
        if "transfer_kind" in mis:
            kind = mis["transfer_kind"]
            cols["transfer_kind"] = kind.astype(object).where(kind.notna(), None).to_numpy()
        cols["ping_pong"] = mis["ping_pong"].fillna(False).astype(bool).to_numpy() if "ping_pong" in mis else False
        for c in ("ping_pong_a", "ping_pong_b"):
            cols[c] = mis[c].astype(object).where(mis[c].notna(), None).to_numpy() if c in mis else None
    if report.conformance is not None:
        cols["fitness"] = report.conformance.case_fitness.reindex(ids).to_numpy(dtype=np.float64)
    for dim in (CHANNEL, *DIMENSIONS):
        if enc.has(dim):
            dc = enc.column(dim)
            first = enc.case_first(dc.codes)
            labels = np.array([str(x) for x in dc.labels] + [None], dtype=object)
            cols[dim] = labels[first]
    bits: dict[str, list[str]] = {}
    for key, column in MASK_COLUMNS.items():
        if enc.has(column):
            cols[f"{key}_mask"], bits[key] = _mask_per_case(enc, enc.column(column))
    series = []
    for k, v in cols.items():
        if v is None:
            continue
        arr = np.asarray(v) if not isinstance(v, pd.DatetimeIndex) else v
        if isinstance(arr, np.ndarray) and arr.dtype == object:
            series.append(pl.Series(k, [None if x is None else str(x) for x in arr.tolist()], dtype=pl.String))
        else:
            series.append(pl.Series(k, arr))
    frame = pl.DataFrame(series)
    if "start" in frame.columns:
        frame = frame.with_columns(pl.col("start").dt.convert_time_zone("UTC"), pl.col("end").dt.convert_time_zone("UTC"))
    return frame, bits


def subset_encoded(enc: EncodedLog, case_mask: np.ndarray) -> EncodedLog:
    """The encoding of only the selected cases, sliced from `enc` (no re-read, no re-factorisation).

    Activities are re-numbered to the ones the subset uses; other columns keep their labels. Equivalent to
    `encode(log.filter_cases(...))` for every miner (tested), at a fraction of the cost.
    """
    keep = np.flatnonzero(case_mask)
    lens = enc.case_len[keep]
    starts = enc.case_start[keep]
    offs = np.r_[0, np.cumsum(lens)].astype(np.int64)
    total = int(offs[-1])
    ev = np.repeat(starts - offs[:-1], lens) + np.arange(total, dtype=np.int64)
    act = enc.activity.codes[ev]
    used = np.unique(act)
    remap = np.full(max(enc.activity.n, 1), -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    # The miners read columns through `column()` / `has()`, answered below from the full encoding; the frame itself
    # is left empty (slicing it was most of a filter's cost). A miner asking for another column fails loudly.
    df = enc.df.iloc[:0]
    sub = EncodedLog(
        case=np.repeat(np.arange(len(keep), dtype=np.int64), lens),
        case_labels=enc.case_labels[keep],
        case_start=offs,
        activity=Codes(remap[act], enc.activity.labels[used]),
        ts=enc.ts[ev],
        ts_unit=enc.ts_unit,
        order=None,
        df=df,
    )
    for name in enc.df.columns:
        sub._has[name] = False
    for name in (RESOURCE, GROUP, CHANNEL, LIFECYCLE):
        if name in enc.df.columns:
            full = enc.column(name)
            sub._columns[name] = Codes(full.codes[ev], full.labels)
            sub._has[name] = bool((sub._columns[name].codes >= 0).any())
    return sub


# --------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class CaseFilter:
    """Which cases a view shows: started in [start, end], touched a team / channel, intent, segment, variant."""

    start: date | None = None
    end: date | None = None
    team: tuple[str, ...] = ()
    channel: tuple[str, ...] = ()
    intent: tuple[str, ...] = ()
    segment: tuple[str, ...] = ()
    variant: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return self == CaseFilter()

    def key(self) -> Hashable:
        """Hashable cache key."""
        return (self.start, self.end, self.team, self.channel, self.intent, self.segment, self.variant)

    def query(self) -> list[tuple[str, str]]:
        """The filter as query-string pairs (for links that keep it)."""
        out: list[tuple[str, str]] = []
        if self.start:
            out.append(("from", self.start.isoformat()))
        if self.end:
            out.append(("to", self.end.isoformat()))
        for name in ("team", "channel", "intent", "segment", "variant"):
            out.extend((name, str(v)) for v in getattr(self, name))
        return out

    @classmethod
    def parse(cls, params: Any) -> CaseFilter:
        """From query parameters (a Starlette QueryParams / MultiDict / dict of lists); bad values are named."""
        def many(name: str) -> tuple[str, ...]:
            vals = params.getlist(name) if hasattr(params, "getlist") else list(params.get(name) or [])
            return tuple(sorted({str(v).strip()[:200] for v in vals if str(v).strip()}))[:50]

        def day(name: str) -> date | None:
            v = params.get(name) if hasattr(params, "get") else None
            if isinstance(v, list):
                v = v[0] if v else None
            if not v:
                return None
            try:
                return date.fromisoformat(str(v)[:10])
            except ValueError:
                raise InvalidInput(f"{name} must be a date like 2026-01-31, got {str(v)[:40]!r}", field=name) from None

        variants: list[int] = []
        for v in many("variant"):
            if not v.isdigit() or int(v) < 1:
                raise InvalidInput(f"variant must be a positive rank, got {v[:20]!r}", field="variant")
            variants.append(int(v))
        f = cls(start=day("from"), end=day("to"), team=many("team"), channel=many("channel"),
                intent=many("intent"), segment=many("segment"), variant=tuple(sorted(variants)))
        if f.start and f.end and f.end < f.start:
            raise InvalidInput("the 'to' date is before the 'from' date", field="to")
        return f


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Kpis:
    """Summary of a set of cases (from the miners' per-case values)."""

    cases: int
    events: int
    throughput_median_s: float | None
    throughput_p90_s: float | None
    throughput_mean_s: float | None
    handling_mean_s: float | None
    fcr_rate: float | None
    rework_rate: float | None
    # share of cases with an avoidable transfer (misroute, ping-pong, needless push-to-front), not every transfer
    avoidable_rate: float | None
    events_per_case: float | None


@dataclass
class TrendPoint:
    """One window of the time axis (every window between the first and the last case, empty ones too)."""

    start: date
    cases: int
    throughput_median_s: float | None
    avoidable_rate: float | None  # share of the window's cases with an avoidable transfer


@dataclass
class CaseRow:
    """One case in a drill-down list."""

    case_id: str
    start: datetime
    throughput_s: float
    n_events: int
    variant: int
    first_team: str | None
    resolving_team: str | None
    channel: str | None
    intent: str | None
    detail: float | None = None  # e.g. the wait on the clicked edge (seconds)


@dataclass
class CasePage:
    """A page of drill-down cases."""

    title: str
    total: int
    rows: list[CaseRow]
    offset: int
    limit: int
    detail_label: str | None = None
    note: str | None = None


@dataclass
class TimelineEvent:
    """One event of a case timeline."""

    activity: str
    timestamp: datetime
    resource: str | None
    group: str | None
    channel: str | None
    since_previous_s: float | None
    since_start_s: float


@dataclass
class CaseTimeline:
    """One case: its attributes and its events in order."""

    case_id: str
    attributes: dict[str, Any]
    events: list[TimelineEvent]
    variant: int
    throughput_s: float


@dataclass
class FilterOptions:
    """Values each filter can take, with case counts."""

    teams: list[tuple[str, int]]
    channels: list[tuple[str, int]]
    intents: list[tuple[str, int]]
    segments: list[tuple[str, int]]
    first_day: date | None
    last_day: date | None
    n_variants: int


class _Lru:
    """A small least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


class RunData:
    """A finished run loaded for browsing: the log's encoding, the per-case frame and the stored report."""

    def __init__(self, run_dir: Path, meta: RunMeta) -> None:
        self.dir = run_dir
        self.meta = meta
        log_df = pd.read_parquet(run_dir / "events.parquet")
        self.enc = encode(EventLog(log_df, name=meta.name))
        for name in (RESOURCE, GROUP, CHANNEL, LIFECYCLE):
            if name in log_df.columns:
                self.enc.column(name)
        self.cases = pl.read_parquet(run_dir / "cases.parquet")
        self.report: dict[str, Any] = json.loads((run_dir / "insight.json").read_text(encoding="utf-8"))
        self.bits: dict[str, list[str]] = json.loads((run_dir / "bits.json").read_text(encoding="utf-8"))
        self.variants: VariantTable | None = None
        self._index: dict[str, int] | None = None
        self.cache = _Lru(256)  # small results: maps, variant tables, KPIs, masks
        self.heavy = _Lru(6)  # encoded subsets and per-case frames hold a slice of the whole log each

    # -- selection

    def index_of(self, case_id: str) -> int:
        """Position of a case in the encoding (NotFound when the run has no such case)."""
        if self._index is None:
            self._index = {str(c): i for i, c in enumerate(self.enc.case_labels)}
        i = self._index.get(case_id)
        if i is None:
            raise NotFound(f"run {self.meta.id} has no case {case_id!r}")
        return i

    def mask(self, f: CaseFilter) -> np.ndarray:
        """Boolean mask over cases (encoding order) for a filter."""
        def make() -> np.ndarray:
            expr = pl.lit(True)
            if f.start:
                expr &= pl.col("start") >= datetime(f.start.year, f.start.month, f.start.day, tzinfo=UTC)
            if f.end:
                nxt = f.end + timedelta(days=1)
                expr &= pl.col("start") < datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)
            for key in MASK_COLUMNS:
                chosen = getattr(f, key)
                if chosen:
                    labels = self.bits.get(key, [])
                    bits = sum(1 << labels.index(v) for v in chosen if v in labels)
                    expr &= (pl.col(f"{key}_mask") & bits) != 0 if f"{key}_mask" in self.cases.columns else pl.lit(False)
            for dim in DIMENSIONS:
                chosen = getattr(f, dim)
                if chosen:
                    expr &= pl.col(dim).is_in(list(chosen)) if dim in self.cases.columns else pl.lit(False)
            if f.variant:
                expr &= pl.col("variant").is_in(list(f.variant))
            return self.cases.select(expr.alias("m"))["m"].to_numpy().astype(bool)

        if f.empty:
            return self.cache.get(("mask", None), lambda: np.ones(self.enc.n_cases, dtype=bool))
        return self.cache.get(("mask", f.key()), make)

    def canonical(self, f: CaseFilter) -> CaseFilter:
        """The filter itself, or no filter when it keeps every case (then the whole run's cached results serve)."""
        if f.empty or not bool(self.mask(f).all()):
            return f
        return CaseFilter()

    def encoded(self, f: CaseFilter) -> EncodedLog:
        """The encoding of the filtered cases (the whole run's when unfiltered)."""
        f = self.canonical(f)
        if f.empty:
            return self.enc
        return self.heavy.get(("enc", f.key()), lambda: subset_encoded(self.enc, self.mask(f)))

    # -- mined views

    def process_map(self, f: CaseFilter, *, activity_coverage: float) -> ProcessMap:
        """The directly-follows map of the filtered cases with the activity slider applied (all edges kept)."""
        cov = min(1.0, max(0.01, round(activity_coverage, 2)))
        f = self.canonical(f)
        return self.cache.get(("map", f.key(), cov), lambda: discover_process_map(
            enc=self.encoded(f), activity_coverage=cov, edge_threshold=0.0))

    def finished(self) -> np.ndarray | None:
        """Per case (encoding order), whether it reached an end activity; None when every case did.

        Read from the per-case frame; a run saved before the frame kept it is re-derived from the report's end
        activities (the same rule as `detect_extraction`)."""
        def make() -> np.ndarray | None:
            if "finished" in self.cases.columns:
                fin = self.cases["finished"].to_numpy().astype(bool)
            else:
                ext = self.report.get("extraction") or {}
                ends = set(ext.get("end_activities") or [])
                if not ext.get("open_cases") or not ends:
                    return None
                last = self.enc.activity.codes[self.enc.case_start[1:] - 1]
                is_end = np.array([str(a) in ends for a in self.enc.activity.labels] + [False], dtype=bool)
                fin = is_end[last]
            return None if fin.all() else fin
        result: np.ndarray | None = self.cache.get(("finished",), make)
        return result

    def cost_model(self) -> CostModel:
        """The cost model the run was mined with (the report's), so the explorer prices paths as the report does."""
        stored = (self.report.get("variants") or {}).get("cost_model")
        if not isinstance(stored, dict):
            return CostModel()
        known = {k: v for k, v in stored.items() if k in CostModel.__dataclass_fields__}
        return CostModel(**known)

    def variant_table(self, f: CaseFilter) -> VariantTable:
        """Every variant of the filtered cases with cost (the run's cost model), high cost first.

        On a log with unfinished cases, times, costs and the happy path use the finished cases, as the report's
        table does (an open case's duration is only a lower bound)."""
        f = self.canonical(f)

        def make() -> VariantTable:
            fin = self.finished()
            if fin is not None and not f.empty:
                fin = fin[self.mask(f)]
            return mine_variants(enc=self.encoded(f), cost_model=self.cost_model(), finished=fin)
        if f.empty and self.variants is not None:
            return self.variants
        vt: VariantTable = self.cache.get(("variants", f.key()), make)
        if f.empty:
            self.variants = vt
        return vt

    def frame(self, f: CaseFilter) -> pl.DataFrame:
        """The per-case frame of the filtered cases."""
        if f.empty:
            return self.cases
        return self.heavy.get(("frame", f.key()), lambda: self.cases.filter(pl.Series(self.mask(f))))

    def kpis(self, f: CaseFilter) -> Kpis:
        """Summary KPIs of the filtered cases."""
        return self.cache.get(("kpis", f.key()), lambda: summarize(self.frame(f)))

    def trend(self, f: CaseFilter, window: str = "week") -> list[TrendPoint]:
        """Cases and median time per window over a real time axis (empty windows included)."""
        return self.cache.get(("trend", f.key(), window), lambda: trend(self.frame(f), window=window))

    def options(self) -> FilterOptions:
        """What each filter can take."""
        def make() -> FilterOptions:
            def counts(col: str) -> list[tuple[str, int]]:
                if col not in self.cases.columns:
                    return []
                vc = self.cases.group_by(col).len().drop_nulls().sort(["len", col], descending=[True, False])
                return [(str(a), int(b)) for a, b in vc.iter_rows()]

            def mask_counts(key: str) -> list[tuple[str, int]]:
                col = f"{key}_mask"
                if col not in self.cases.columns:
                    return []
                m = self.cases[col].to_numpy()
                labels = self.bits.get(key, [])
                out = [(lab, int(((m >> i) & 1).sum())) for i, lab in enumerate(labels)]
                return sorted(out, key=lambda t: (-t[1], t[0]))

            s = self.cases["start"]
            return FilterOptions(
                teams=mask_counts("team"), channels=mask_counts("channel"), intents=counts("intent"),
                segments=counts("segment"), first_day=s.min().date() if len(s) else None,  # type: ignore[union-attr]
                last_day=s.max().date() if len(s) else None,  # type: ignore[union-attr]
                n_variants=int(self.cases["variant"].max() or 0) if len(s) else 0,  # type: ignore[arg-type]
            )
        return self.cache.get(("options",), make)

    # -- drill-down

    def _rows(self, frame: pl.DataFrame, detail: np.ndarray | None = None) -> list[CaseRow]:
        cols = frame.columns
        out = []
        for i, r in enumerate(frame.iter_rows(named=True)):
            out.append(CaseRow(
                case_id=r["case_id"], start=r["start"], throughput_s=float(r["throughput_s"]),
                n_events=int(r["n_events"]), variant=int(r["variant"]),
                first_team=r.get("first_team") if "first_team" in cols else None,
                resolving_team=r.get("resolving_team") if "resolving_team" in cols else None,
                channel=r.get(CHANNEL) if CHANNEL in cols else None,
                intent=r.get("intent") if "intent" in cols else None,
                detail=None if detail is None else float(detail[i]),
            ))
        return out

    def _page(self, title: str, frame: pl.DataFrame, *, offset: int, limit: int, sort: str,
              detail_col: str | None = None, detail_label: str | None = None, note: str | None = None) -> CasePage:
        keys = {"duration": ("throughput_s", True), "start": ("start", False), "events": ("n_events", True),
                "detail": (detail_col or "throughput_s", True)}
        col, desc = keys.get(sort, keys["duration"])
        # order only the key (a stable numpy sort: ties keep the encoding order), then gather one page of rows
        key = frame[col].to_physical().cast(pl.Float64).fill_null(float("nan")).to_numpy()
        key = np.where(np.isnan(key), np.inf, -key if desc else key)
        order = np.argsort(key, kind="stable")[offset: offset + limit]
        part = frame[order] if len(order) else frame.head(0)
        detail = part[detail_col].to_numpy() if detail_col else None
        return CasePage(title=title, total=frame.height, rows=self._rows(part, detail), offset=offset, limit=limit,
                        detail_label=detail_label, note=note)

    def cases_for(self, f: CaseFilter, *, kind: str, a: str = "", b: str = "", offset: int = 0, limit: int = 50,
                  sort: str = "duration") -> CasePage:
        """Cases behind a map edge / activity / variant / misrouting pair / ping-pong pair / team / avoidable transfer /
        example list."""
        frame = self.frame(f)
        if kind == "all":
            return self._page("All cases in the filter", frame, offset=offset, limit=limit, sort=sort)
        if kind == "variant":
            if not a.isdigit():
                raise InvalidInput("variant must be a rank number", field="a")
            sel = frame.filter(pl.col("variant") == int(a))
            return self._page(f"Variant #{a}", sel, offset=offset, limit=limit, sort=sort)
        if kind in ("edge", "activity"):
            enc = self.encoded(f)
            labels = [str(x) for x in enc.activity.labels]
            if a not in labels or (kind == "edge" and b not in labels):
                missing = a if a not in labels else b
                raise NotFound(f"no activity {missing!r} in the cases of this filter")
            ca = labels.index(a)
            codes = enc.activity.codes
            if kind == "activity":
                hit = np.bincount(enc.case[codes == ca], minlength=enc.n_cases) > 0
                sel = frame.filter(pl.Series(hit))
                return self._page(f"Cases with activity '{a}'", sel, offset=offset, limit=limit, sort=sort)
            cb = labels.index(b)
            same = enc.case[1:] == enc.case[:-1]
            pair = np.flatnonzero(same & (codes[:-1] == ca) & (codes[1:] == cb))
            wait = enc.seconds(enc.ts[pair + 1] - enc.ts[pair])
            per_case = np.full(enc.n_cases, np.nan)
            np.fmax.at(per_case, enc.case[pair], wait)
            hit = ~np.isnan(per_case)
            sel = frame.with_columns(pl.Series("edge_wait_s", per_case)).filter(pl.Series(hit))
            return self._page(f"Cases where '{a}' is directly followed by '{b}'", sel, offset=offset, limit=limit,
                              sort=sort, detail_col="edge_wait_s", detail_label="longest wait on this edge")
        if kind == "pair":
            if "teams" not in frame.columns:
                raise NotFound("this log has no teams")
            pat = f"(^| > ){re.escape(a)} > {re.escape(b)}( > |$)"
            sel = frame.filter(pl.col("teams").fill_null("").str.contains(pat))
            return self._page(f"Cases passed from {a} to {b}", sel, offset=offset, limit=limit, sort=sort)
        if kind == "pingpong":
            if "ping_pong_a" not in frame.columns:
                raise NotFound("this log has no teams")
            sel = frame.filter(pl.col("ping_pong")
                               & (((pl.col("ping_pong_a") == a) & (pl.col("ping_pong_b") == b))
                                  | ((pl.col("ping_pong_a") == b) & (pl.col("ping_pong_b") == a))))
            return self._page(f"Cases bouncing between {a} and {b}", sel, offset=offset, limit=limit, sort=sort)
        if kind == "team":
            if "misrouted" not in frame.columns:
                raise NotFound("this log has no teams")
            sel = frame.filter((pl.col("first_team") == a) & pl.col("misrouted"))
            return self._page(f"Cases {a} received first and passed on", sel, offset=offset, limit=limit, sort=sort)
        if kind == "avoidable":
            if "avoidable" not in frame.columns:
                raise NotFound("this run has no transfer kinds (mined before they were told apart, or no teams)")
            sel = frame.filter(pl.col("avoidable"))
            return self._page("Cases with an avoidable transfer (misroute, ping-pong or needless push to a higher "
                              "line)", sel, offset=offset, limit=limit, sort=sort)
        if kind == "unfit":
            if "fitness" not in frame.columns:
                raise NotFound("this run has no conformance result")
            sel = frame.filter(pl.col("fitness") < 1.0).with_columns((1.0 - pl.col("fitness")).alias("misfit"))
            return self._page("Cases that do not follow the reference journey exactly", sel, offset=offset,
                              limit=limit, sort=sort, detail_col="misfit", detail_label="1 - fitness")
        if kind == "examples":
            ids = self.example_cases(a, b)
            sel = frame.filter(pl.col("case_id").is_in(ids))
            return self._page(f"Example cases: {self.example_title(a, b)}", sel, offset=offset, limit=limit,
                              sort=sort, note="the miner keeps up to 20 example cases per finding; the whole "
                                              "run's examples are listed, then the filter is applied")
        raise InvalidInput(f"unknown drill-down kind {kind!r}", field="kind")

    def example_cases(self, section: str, index: str) -> list[str]:
        """Example case ids the report keeps for alert / deviation number `index`."""
        item = self._finding(section, index)
        return [str(x) for x in item.get("example_cases", [])]

    def example_title(self, section: str, index: str) -> str:
        """A short title of a finding."""
        item = self._finding(section, index)
        if section == "alert":
            return f"{item.get('title', '')} - {str(item.get('subject', ''))[:80]}"
        return f"{item.get('kind', '')} '{item.get('activity', '')}'"

    def _finding(self, section: str, index: str) -> dict[str, Any]:
        if not index.isdigit():
            raise InvalidInput("finding index must be a number", field="b")
        i = int(index)
        if section == "alert":
            items = (self.report.get("alerts") or {}).get("alerts", [])
        elif section == "deviation":
            items = (self.report.get("conformance") or {}).get("deviations", [])
        else:
            raise InvalidInput("examples are kept for 'alert' and 'deviation' findings", field="a")
        if i >= len(items):
            raise NotFound(f"the report has no {section} number {i}")
        return dict(items[i])

    def timeline(self, case_id: str) -> CaseTimeline:
        """One case's events in order, with the waits between them and its attributes."""
        c = self.index_of(case_id)
        enc = self.enc
        lo, hi = int(enc.case_start[c]), int(enc.case_start[c + 1])
        # a run's events are stored in encoding order, so a case is a contiguous slice (a take is far slower)
        part = enc.df.iloc[lo:hi] if enc.order is None else enc.df.iloc[enc.order[lo:hi]]
        ts = part[TIMESTAMP].tolist()
        events = []
        for j in range(hi - lo):
            r = part.iloc[j]
            events.append(TimelineEvent(
                activity=str(r[ACTIVITY]), timestamp=ts[j].to_pydatetime(),
                resource=_s(r.get(RESOURCE)), group=_s(r.get(GROUP)), channel=_s(r.get(CHANNEL)),
                since_previous_s=None if j == 0 else (ts[j] - ts[j - 1]).total_seconds(),
                since_start_s=(ts[j] - ts[0]).total_seconds(),
            ))
        row = self.cases.row(c, named=True)
        attrs = {k: v for k, v in row.items() if not k.endswith("_mask") and v is not None
                 and k not in ("case_id", "start", "end")}
        for col in part.columns:
            if col not in CANONICAL_COLUMNS and col not in attrs:
                v = part[col].iloc[0]
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    attrs[col] = v
        return CaseTimeline(case_id=case_id, attributes=attrs, events=events, variant=int(row["variant"]),
                            throughput_s=float(row["throughput_s"]))


def _s(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return str(v)


def _f(v: Any) -> float | None:
    if v is None:
        return None
    x = float(v)
    return None if math.isnan(x) else x


def summarize(frame: pl.DataFrame) -> Kpis:
    """Summary KPIs of a per-case frame (definitions as in `insight.mining.kpis`: FCR = no transfer)."""
    n = frame.height
    if n == 0:
        return Kpis(0, 0, None, None, None, None, None, None, None, None)
    aggs = [
        pl.col("n_events").sum().alias("events"),
        pl.col("throughput_s").median().alias("tmed"),
        pl.col("throughput_s").quantile(0.9, interpolation="linear").alias("tp90"),
        pl.col("throughput_s").mean().alias("tmean"),
        pl.col("handling_s").fill_nan(None).mean().alias("aht"),
        (pl.col("transfers").fill_nan(None) == 0).cast(pl.Float64).mean().alias("fcr"),
        pl.col("rework").cast(pl.Float64).mean().alias("rework"),
        pl.col("n_events").mean().alias("epc"),
    ]
    if "avoidable" in frame.columns:
        aggs.append(pl.col("avoidable").cast(pl.Float64).mean().alias("avoid"))
    r = frame.select(aggs).row(0, named=True)
    return Kpis(cases=n, events=int(r["events"]), throughput_median_s=_f(r["tmed"]), throughput_p90_s=_f(r["tp90"]),
                throughput_mean_s=_f(r["tmean"]), handling_mean_s=_f(r["aht"]), fcr_rate=_f(r["fcr"]),
                rework_rate=_f(r["rework"]), avoidable_rate=_f(r.get("avoid")), events_per_case=_f(r["epc"]))


_WINDOWS = {"day": "1d", "week": "1w", "month": "1mo"}


def trend(frame: pl.DataFrame, *, window: str = "week") -> list[TrendPoint]:
    """Cases started per window and their median time, on a continuous axis (weeks start on Monday)."""
    if window not in _WINDOWS:
        raise InvalidInput(f"window must be one of {sorted(_WINDOWS)}", field="window")
    if frame.height == 0:
        return []
    every = _WINDOWS[window]
    w = frame.select(pl.col("start").dt.replace_time_zone(None).dt.cast_time_unit("us").dt.truncate(every).alias("w"),
                     "throughput_s", *(["avoidable"] if "avoidable" in frame.columns else []))
    agg = [pl.len().alias("cases"), pl.col("throughput_s").median().alias("tmed")]
    if "avoidable" in w.columns:
        agg.append(pl.col("avoidable").cast(pl.Float64).mean().alias("avoid"))
    g = w.group_by("w").agg(agg)
    lo, hi = g["w"].min(), g["w"].max()
    axis = pl.DataFrame({"w": pl.datetime_range(lo, hi, every, eager=True)})  # type: ignore[arg-type]
    full = axis.join(g, on="w", how="left").sort("w")
    out = []
    for r in full.iter_rows(named=True):
        out.append(TrendPoint(start=r["w"].date(), cases=int(r["cases"] or 0), throughput_median_s=_f(r["tmed"]),
                              avoidable_rate=_f(r.get("avoid"))))
    return out


def path_filter(pm: ProcessMap, percent: float) -> ProcessMap:
    """The map with the path slider applied: the strongest `percent`% of edges (by count) are kept, plus each
    activity's strongest incoming and outgoing edge so the map stays connected (the rule of
    `discover_process_map(edge_threshold=...)`, applied to an already mined map so the slider costs no re-mining)."""
    if percent >= 100 or not pm.edges:
        return pm
    counts = sorted((e.count for e in pm.edges), reverse=True)
    n_keep = max(1, math.ceil(len(counts) * max(0.0, percent) / 100.0))
    cut = counts[n_keep - 1]
    keep = {id(e) for e in pm.edges if e.count >= cut}
    for a in pm.activities:
        for side in ("source", "target"):
            cand = [e for e in pm.edges if getattr(e, side) == a.name]
            if cand:
                keep.add(id(max(cand, key=lambda e: e.count)))
    edges = [e for e in pm.edges if id(e) in keep]
    return replace(pm, edges=edges, hidden_edges=pm.hidden_edges + len(pm.edges) - len(edges))


def edge_threshold_for(pm: ProcessMap, percent: float) -> float:
    """The `edge_threshold` of `discover_process_map` that `path_filter(pm, percent)` corresponds to."""
    if percent >= 100 or not pm.edges:
        return 0.0
    counts = sorted((e.count for e in pm.edges), reverse=True)
    n_keep = max(1, math.ceil(len(counts) * max(0.0, percent) / 100.0))
    return counts[n_keep - 1] / counts[0]


# ------------------------------------------------------------------------------------------------- mining


def _save_run(store: RunStore, meta: RunMeta, log: EventLog, report: Any, progress: Callable[[str], None]) -> None:
    """Write the run's files: the log, the per-case frame and the report."""
    d = store.runs_dir / meta.id
    progress("aggregates")
    enc = encode(log)
    cases, bits = case_frame(report, enc)
    progress("saving")
    sorted_df = log.df if enc.order is None else log.df.iloc[enc.order].reset_index(drop=True)
    sorted_df.to_parquet(d / "events.parquet", index=False)
    cases.write_parquet(d / "cases.parquet")
    (d / "bits.json").write_text(json.dumps(bits), encoding="utf-8")
    report.write_json(d / "insight.json")


def mine_run(store: RunStore, meta: RunMeta, read: Callable[[], EventLog | None], *, config: Any = None) -> RunMeta:
    """Read a log, mine it with every miner and store the run; progress and errors go to meta.json."""
    from insight.mining import mine

    t0 = time.perf_counter()
    step_index = {s: i for i, s in enumerate(MINE_STEPS)}

    def progress(step: str, *_: Any) -> None:
        meta.step = step
        meta.done = step_index.get(step, meta.done)
        store.save_meta(meta)

    meta.status = "running"
    try:
        progress("reading log")
        log = read()
        if log is None or log.n_events == 0:
            raise InvalidInput("there are no events to mine", field="log")
        meta.mapping = meta.mapping or mapping_from_quality(log.quality.to_dict() if log.quality else None)
        report = mine(log, config=config, progress=lambda s, d, t: progress(s) if s in step_index else None)
        _save_run(store, meta, log, report, progress)
        meta.n_cases, meta.n_events = report.n_cases, report.n_events
        meta.start = report.start.isoformat() if report.start is not None else None
        meta.end = report.end.isoformat() if report.end is not None else None
        meta.quality = log.quality.to_dict() if log.quality else None
        meta.headlines = list(report.headlines)
        meta.status, meta.step, meta.done = "done", "done", len(MINE_STEPS)
    except DeskpilotError as exc:
        meta.status, meta.error = "failed", exc.message if hasattr(exc, "message") else str(exc)
    except Exception as exc:  # a background job: the page must show why it stopped, not hang
        meta.status, meta.error = "failed", f"{type(exc).__name__}: {exc}"
    meta.took_s = round(time.perf_counter() - t0, 2)
    store.save_meta(meta)
    return meta


class RunManager:
    """Starts mining jobs on background threads and keeps a few loaded runs in memory (one per app)."""

    def __init__(self, store: RunStore, *, loaded: int = 2) -> None:
        self.store = store
        self.threads: dict[str, threading.Thread] = {}
        self.loaded = _Lru(loaded)

    def start(self, meta: RunMeta, read: Callable[[], EventLog | None], *, config: Any = None,
              background: bool = True) -> RunMeta:
        """Mine in a background thread (or inline with background=False)."""
        if not background:
            return mine_run(self.store, meta, read, config=config)
        t = threading.Thread(target=mine_run, args=(self.store, meta, read), kwargs={"config": config},
                             name=f"deskpilot-mine-{meta.id}", daemon=True)
        self.threads[meta.id] = t
        t.start()
        return meta

    def status(self, run_id: str) -> RunMeta:
        """The run's metadata; a run left 'running' that no thread here runs and that has not reported progress for
        `STALE_JOB_S` (another worker would have) is reported failed."""
        meta = self.store.meta(run_id)
        if meta.status in ("queued", "running"):
            t = self.threads.get(run_id)
            if t is None or not t.is_alive():
                again = self.store.meta(run_id)  # the thread may have finished between the two reads
                quiet = time.time() - (self.store.run_dir(run_id) / "meta.json").stat().st_mtime
                if again.status in ("queued", "running") and (t is not None or quiet > STALE_JOB_S):
                    again.status, again.error = "failed", "the mining job stopped (the service was restarted)"
                return again
        return meta

    def data(self, run_id: str) -> RunData:
        """A finished run, loaded once and kept (least recently used runs are dropped)."""
        meta = self.status(run_id)
        if meta.status != "done":
            raise NotFound(f"run {run_id} is {meta.status}, not mined yet")
        run: RunData = self.loaded.get(run_id, lambda: RunData(self.store.run_dir(run_id), meta))
        return run


def upload_reader(upload: Upload, mapping: dict[str, str], *, pseudonym_key: str | None,
                  dayfirst: bool | None = None) -> Callable[[], EventLog]:
    """A reader for a mining job: ingest (read, clean, redact, pseudonymize) the upload with the chosen mapping."""
    src_map = _source_mapping(mapping)

    def read() -> EventLog:
        return ingest(upload.path, mapping=src_map or None, dayfirst=dayfirst, pseudonym_key=pseudonym_key,
                      privacy=True)
    return read


def live_store_reader(engine: Any, *, pseudonym_key: str | None) -> Callable[[], EventLog | None]:
    """A reader for a mining job: the service's live event store (the same log retraining learns from)."""
    def read() -> EventLog | None:
        from sqlmodel import Session

        from routing.dataset import training_data

        with Session(engine) as session:
            data = training_data(session=session, pseudonym_key=pseudonym_key)
        return data.log
    return read


# ------------------------------------------------------------------------------------------------ compare


@dataclass
class EdgeChange:
    """One edge in two views: cases per 100 and median wait."""

    source: str
    target: str
    a_per_100: float
    b_per_100: float
    a_median_s: float | None
    b_median_s: float | None


@dataclass
class VariantChange:
    """One variant's share of cases in two views."""

    activities: tuple[str, ...]
    a_share: float
    b_share: float


@dataclass
class Comparison:
    """Two views side by side."""

    a_label: str
    b_label: str
    a: Kpis
    b: Kpis
    edges: list[EdgeChange]
    variants: list[VariantChange]


def compare(a: tuple[RunData, CaseFilter, str], b: tuple[RunData, CaseFilter, str], *, top: int = 15) -> Comparison:
    """KPIs, edge frequencies / waits and variant shares of two (run, filter) views."""
    (ra, fa, la), (rb, fb, lb) = a, b
    ma, mb = ra.process_map(fa, activity_coverage=1.0), rb.process_map(fb, activity_coverage=1.0)
    na, nb = max(1, ma.n_cases), max(1, mb.n_cases)
    ea = {(e.source, e.target): e for e in ma.edges}
    eb = {(e.source, e.target): e for e in mb.edges}
    edges = []
    for key in set(ea) | set(eb):
        x, y = ea.get(key), eb.get(key)
        edges.append(EdgeChange(source=key[0], target=key[1], a_per_100=100 * (x.cases if x else 0) / na,
                                b_per_100=100 * (y.cases if y else 0) / nb, a_median_s=x.median_s if x else None,
                                b_median_s=y.median_s if y else None))
    edges.sort(key=lambda e: (-abs(e.b_per_100 - e.a_per_100), e.source, e.target))
    va, vb = ra.variant_table(fa), rb.variant_table(fb)
    sa = {v.activities: v.share for v in va.variants}
    sb = {v.activities: v.share for v in vb.variants}
    variants = [VariantChange(activities=k, a_share=sa.get(k, 0.0), b_share=sb.get(k, 0.0)) for k in set(sa) | set(sb)]
    variants.sort(key=lambda v: (-abs(v.b_share - v.a_share), v.activities))
    return Comparison(a_label=la, b_label=lb, a=ra.kpis(fa), b=rb.kpis(fb), edges=edges[:top], variants=variants[:top])
