"""Mining on a Dask cluster over case-partitioned Parquet, with the single-process miners' exact results.

The log lives as Parquet parts written by `insight.eventlog.writers.write_partitioned`: every case in exactly one
part, parts in the order of the cases' first appearance. The work splits where the cost is:

- **on the workers, per part** (per-case work stays local): a light first pass reads each part's team column
  (the support lines are a property of the whole log's teams); then one task per part reads it, sorts it by
  (case, time), factorises every column the miners use and computes the per-case labels (first and resolving
  team, reassignments, outcome). It sends back local codes (int16 where they fit) with their labels, case
  offsets and int64 timestamps, no strings per event; nothing stays on the worker, so a worker's memory is one
  part at a time, whatever the size of the log;
- **on the client, as the parts arrive**: each part's dictionaries are merged in part order into global codes,
  which equal the single-process codes because the single-process encoder numbers values by first appearance in
  the same (case, time) order, and its events are copied into preallocated global arrays;
- **on the client, over those integer arrays**: the unchanged miners (process map with performance, variants,
  bottlenecks, handovers, KPIs) run on that encoding, so medians and percentiles are exact (not sketches) and
  every float is summed in the same order as in one process.

The client holds the global arrays (int32 codes of the coded columns, int64 case and time) and the per-case
label table; the miners' working arrays come on top. What is not here:
misrouting, conformance, journeys and alerts, which read the full frame (`mine` runs them in one process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import ACTIVITY, CHANNEL, GROUP, RESOURCE, EventLog
from insight.mining._core import Codes, EncodedLog, encode
from insight.mining.bottlenecks import DEFAULT_WAIT_PATTERN, Bottlenecks, find_bottlenecks
from insight.mining.censoring import CensoringConfig, Extraction, detect_extraction
from insight.mining.handover import HandoverNetwork, team_handover_network
from insight.mining.kpis import DEFAULT_DIMENSIONS, KpiTable, compute_kpis
from insight.mining.labels import CaseLabels, LabelConfig, case_labels, support_lines, usable_teams
from insight.mining.process_map import ProcessMap, discover_process_map
from insight.mining.variants import CostModel, VariantTable, mine_variants

MANIFEST = "_parts.json"
TABLES_PER_GATHER = 4  # label tables fetched from the workers at a time
# columns the miners factorise besides the activity (absent ones are skipped)
CODED_COLUMNS = tuple(dict.fromkeys([GROUP, RESOURCE, CHANNEL, "lifecycle", *DEFAULT_DIMENSIONS.values()]))


@dataclass
class DistributedConfig:
    """The knobs `mine` uses for the same miners (see `insight.mining.report.MineConfig`)."""

    cost_model: CostModel = field(default_factory=CostModel)
    labels: LabelConfig = field(default_factory=LabelConfig)
    map_activity_coverage: float = 0.95
    map_edge_threshold: float = 0.02
    kpi_dimensions: dict[str, str] | None = None
    kpi_window: str = "W"
    wait_pattern: str = DEFAULT_WAIT_PATTERN
    line_mapping: dict[str, int] | None = None
    censoring: CensoringConfig = field(default_factory=CensoringConfig)


@dataclass
class DistributedResult:
    """What the cluster mined, typed as the single-process miners type it."""

    name: str
    n_parts: int
    n_cases: int
    n_events: int
    extraction: Extraction
    process_map: ProcessMap
    variants: VariantTable
    bottlenecks: Bottlenecks
    handovers: HandoverNetwork | None
    kpis: KpiTable
    labels: CaseLabels
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the same per-miner shapes as the InsightReport's."""
        from insight.mining.report import _jsonable

        return _jsonable({
            "name": self.name,
            "n_parts": self.n_parts,
            "n_cases": self.n_cases,
            "n_events": self.n_events,
            "extraction": self.extraction.to_dict(),
            "process_map": self.process_map.to_dict(),
            "variants": self.variants.to_dict(limit=50),
            "bottlenecks": self.bottlenecks.to_dict(),
            "handovers": self.handovers.to_dict(limit=100) if self.handovers else None,
            "kpis": self.kpis.to_dict(),
            "labels": self.labels.to_dict(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        })


def part_paths(source: str | Path) -> tuple[list[Path], dict[str, Any]]:
    """The parts of a partitioned log (a folder with `_parts.json`) in case order, and the log's metadata."""
    root = Path(source)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise InvalidInput(f"{root} is not a partitioned log (no {MANIFEST}; write one with write_partitioned)",
                           field="log")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        parts = [root / str(p) for p in meta["parts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read {manifest}: {exc}", field="log") from exc
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise InvalidInput(f"partitioned log {root} lacks part file(s) {missing[:3]}", field="log")
    if not parts:
        raise InvalidInput(f"partitioned log {root} has no parts", field="log")
    return parts, meta


# ---- worker side -------------------------------------------------------------------------------------------------


def _teams(path: str) -> tuple[int, list[str] | None]:
    """A part's event count (from the Parquet footer) and its distinct teams (the team column only)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    n = int(pf.metadata.num_rows)
    if GROUP not in pf.schema_arrow.names:
        return n, None
    col = pf.read(columns=[GROUP]).to_pandas()[GROUP]
    return n, [str(x) for x in pd.unique(col.dropna())]


def _compact(codes: np.ndarray, n_labels: int) -> np.ndarray:
    """Codes in int16 when they fit (half the bytes on the wire), else int32; -1 stays missing."""
    return codes.astype(np.int16 if n_labels < np.iinfo(np.int16).max else np.int32, copy=False)


def _part(path: str, name: str, case_attributes: list[str], config: LabelConfig) -> tuple[dict[str, Any], CaseLabels]:
    """One part, start to end on its worker: read, sort and factorise, label its cases; its events as local codes
    with the codes' labels (no strings per event), and its label table. The events go to the client at once; the
    label table waits on the worker until the miners are done, so the two never fill the client together."""
    import pyarrow.parquet as pq

    df = pq.read_table(path).to_pandas()
    log = EventLog(df, name=name, case_attributes=[c for c in case_attributes if c in df.columns])
    cols = [c for c in CODED_COLUMNS if c in df.columns]
    enc = encode(log, columns=tuple(cols))
    labels = case_labels(log, config=config, enc=enc)
    coded = {ACTIVITY: enc.activity, **{c: enc.column(c) for c in cols}}
    return {
        "n_events": enc.n_events,
        "ts_unit": enc.ts_unit,
        "case_len": enc.case_len.astype(np.int64),
        "case_labels": np.asarray(enc.case_labels, dtype=object),
        "ts": enc.ts,
        "labels": {c: v.labels for c, v in coded.items()},
        "codes": {c: _compact(v.codes, v.n) for c, v in coded.items()},
    }, labels


def _pick(pair: tuple[Any, Any], i: int) -> Any:
    return pair[i]


# ---- client side -------------------------------------------------------------------------------------------------


class _Assembler:
    """Builds the global encoding part by part, in part order, as the parts come back.

    Global codes number values by first appearance in part order, which is what the single-process encoder does
    over the same (case, time) order; so a part is folded in once every part before it is. Its events go straight
    into arrays sized from the parts' footers, and its payload is dropped: the client holds the global arrays
    (int32 codes, int64 times) plus the parts that came back ahead of their turn.
    """

    def __init__(self, n_events: int) -> None:
        self.n_events = n_events
        self.ts = np.empty(n_events, dtype=np.int64)
        self.codes: dict[str, np.ndarray] = {}
        self.index: dict[str, dict[Any, int]] = {}
        self.case_len: list[np.ndarray] = []
        self.case_labels: list[np.ndarray] = []
        self.part_events: list[int] = []
        self.unit: str | None = None
        self.at = 0

    def add(self, part: dict[str, Any], k: int) -> None:
        n = int(part["n_events"])
        if n and self.unit is not None and part["ts_unit"] != self.unit:
            raise InvalidInput(f"parts store timestamps in different units ({self.unit!r}, then "
                               f"{part['ts_unit']!r} in part {k})", field="log")
        if n:
            self.unit = self.unit or part["ts_unit"]
        if self.at + n > self.n_events:
            raise InvalidInput(f"part {k} holds more events than its Parquet footer says", field="log")
        sl = slice(self.at, self.at + n)
        self.ts[sl] = part["ts"]
        for col, local in part["labels"].items():
            index = self.index.setdefault(col, {})
            remap = np.asarray([index.setdefault(v, len(index)) for v in local.tolist()] + [-1], dtype=np.int32)
            if col not in self.codes:  # every event starts missing: parts without the column leave it so
                self.codes[col] = np.full(self.n_events, -1, dtype=np.int32)
            self.codes[col][sl] = remap[part["codes"][col]]  # code -1 picks the trailing -1
        self.case_len.append(part["case_len"])
        self.case_labels.append(part["case_labels"])
        self.part_events.append(n)
        self.at += n

    def encoding(self) -> EncodedLog:
        """The global EncodedLog (no frame behind it: every column the miners use is coded)."""
        if self.at != self.n_events:
            raise InvalidInput(f"the parts hold {self.at:,} events, their Parquet footers {self.n_events:,}",
                               field="log")
        case_len = np.concatenate(self.case_len) if self.case_len else np.zeros(0, np.int64)
        case_start = np.r_[0, np.cumsum(case_len)].astype(np.int64)
        case = np.repeat(np.arange(len(case_len), dtype=np.int64), case_len)
        glabels = {col: np.asarray(list(index), dtype=object) for col, index in self.index.items()}
        activity = self.codes.get(ACTIVITY, np.zeros(0, np.int32))
        enc = EncodedLog(
            case=case,
            case_labels=np.concatenate(self.case_labels) if self.case_labels else np.zeros(0, dtype=object),
            case_start=case_start,
            activity=Codes(activity, glabels.get(ACTIVITY, np.zeros(0, dtype=object))),
            ts=self.ts,
            ts_unit=self.unit or "us",
            order=None,
            df=pd.DataFrame(),
        )
        enc._has[ACTIVITY] = enc.n_events > 0
        for col, labels in glabels.items():
            if col == ACTIVITY:
                continue
            c = Codes(self.codes[col], labels)
            enc._columns[col] = c
            enc._has[col] = bool((c.codes >= 0).any())
        return enc


def _global_labels(parts: Sequence[CaseLabels], lines: dict[str, int] | None, case_base: np.ndarray,
                   event_base: np.ndarray) -> CaseLabels:
    df = pd.concat([p.df for p in parts])
    segments = None
    if all(p.segments is not None for p in parts):
        segs = []
        for p, cb, eb in zip(parts, case_base, event_base, strict=True):
            s = p.segments.copy()  # type: ignore[union-attr]
            s["case"] += int(cb)
            s["pos"] += int(eb)
            segs.append(s)
        segments = pd.concat(segs, ignore_index=True)
    resolve_pos = None
    if all(p.resolve_pos is not None for p in parts):
        resolve_pos = np.concatenate([np.where(p.resolve_pos >= 0, p.resolve_pos + eb, p.resolve_pos)  # type: ignore[operator]
                                      for p, eb in zip(parts, event_base, strict=True)])
    return CaseLabels(df=df, has_groups=parts[0].has_groups, lines=lines, segments=segments, resolve_pos=resolve_pos)


def connect(*, scheduler: str | None = None, workers: int | None = None, memory_limit: str | None = None,
            processes: bool = True) -> Any:
    """A dask.distributed Client: to the scheduler at `scheduler`, or to a new local cluster of `workers`."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    if not workers or workers < 1:
        raise InvalidInput("give --scheduler ADDRESS or --workers N (N >= 1)", field="workers")
    if memory_limit:
        from dask.utils import parse_bytes

        try:
            if parse_bytes(memory_limit) < 256 * 2**20:
                raise ValueError("below 256 MiB")
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"worker memory {memory_limit!r} is not a usable size such as 3GiB or 4000MB ({exc})",
                               field="worker_memory") from exc
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           memory_limit=memory_limit or "auto", dashboard_address=None)
    return Client(cluster)


def _lines(teams: Sequence[list[str] | None], cfg: LabelConfig) -> dict[str, int] | None:
    """The support line of every team in the log, as the single-process labels read them off all its teams."""
    if all(t is None for t in teams):
        return None
    names = np.asarray(list(dict.fromkeys(x for t in teams if t for x in t)), dtype=object)
    return support_lines(names[usable_teams(names, cfg)], mapping=cfg.line_mapping)


def mine_partitioned(source: str | Path, client: Any, *, config: DistributedConfig | None = None) -> DistributedResult:
    """Mine a partitioned log on the cluster behind `client` (results equal `mine` on the whole log).

    Two passes over the parts: a light one for what the labels need from the whole log (its teams, which decide
    the support lines) and the event counts from the Parquet footers; then one task per part that reads, encodes
    and labels it and sends back integer arrays, folded into the global encoding as they arrive.
    """
    from distributed import as_completed

    cfg = config or DistributedConfig()
    paths, meta = part_paths(source)
    timings: dict[str, float] = {}
    name = str(meta.get("name", Path(source).name))
    case_attrs = list(meta.get("case_attributes", []))
    stamp = time.time_ns()
    t0 = time.perf_counter()
    heads = client.gather(client.map(_teams, [str(p) for p in paths],
                                     key=[f"deskpilot-teams-{i}-{stamp}" for i in range(len(paths))]))
    labels_cfg = cfg.labels
    if cfg.line_mapping and labels_cfg.line_mapping is None:
        labels_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": cfg.line_mapping})
    lines = _lines([t for _, t in heads], labels_cfg)
    # lines are a property of the whole log's teams: each part gets them as its mapping
    part_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": lines}) if lines else labels_cfg
    timings["teams (workers)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keys = [f"deskpilot-part-{i}-{stamp}" for i in range(len(paths))]
    pairs = client.map(_part, [str(p) for p in paths], name=name, case_attributes=case_attrs, config=part_cfg,
                       key=keys)
    futures = client.map(_pick, pairs, [0] * len(pairs), key=[f"{k}-events" for k in keys])
    tables = client.map(_pick, pairs, [1] * len(pairs), key=[f"{k}-labels" for k in keys])
    del pairs  # each part's pair lives on until both halves are taken
    order = {f.key: i for i, f in enumerate(futures)}
    asm = _Assembler(sum(n for n, _ in heads))
    waiting: dict[int, dict[str, Any]] = {}
    combine = 0.0
    try:
        try:
            for fut, part in as_completed(futures, with_results=True):
                waiting[order[fut.key]] = part
                fut.release()
                while len(asm.part_events) in waiting:
                    t = time.perf_counter()
                    k = len(asm.part_events)
                    asm.add(waiting.pop(k), k)
                    combine += time.perf_counter() - t
        finally:
            client.cancel(futures)
        del futures
        t = time.perf_counter()
        enc = asm.encoding()
        combine += time.perf_counter() - t
        timings["parts: read+encode+labels (workers)"] = time.perf_counter() - t0 - combine
        timings["combine (client, while the parts arrive)"] = combine
        n_cases, n_events = enc.n_cases, enc.n_events
        mined = _run_miners(enc, cfg, timings)
        del enc  # the encoding goes before the label tables come in
        t0 = time.perf_counter()
        case_base = np.r_[0, np.cumsum([len(c) for c in asm.case_len])[:-1]]
        event_base = np.r_[0, np.cumsum(asm.part_events)[:-1]]
        has_groups = GROUP in asm.index
        del asm
        # a few parts at a time: a worker that spilled its waiting tables to disk reads back only what it sends
        got: list[CaseLabels] = []
        for i in range(0, len(tables), TABLES_PER_GATHER):
            batch = tables[i:i + TABLES_PER_GATHER]
            got.extend(client.gather(batch))
            client.cancel(batch)
        labels = _global_labels(got, lines if has_groups else None, case_base, event_base)
        timings["labels (gather + combine)"] = time.perf_counter() - t0
    finally:
        client.cancel(tables)
    return DistributedResult(name=name, n_parts=len(paths), n_cases=n_cases, n_events=n_events,
                             labels=labels, timings=timings, **mined)


def _run_miners(enc: EncodedLog, cfg: DistributedConfig, timings: dict[str, float]) -> dict[str, Any]:
    """The miners `mine` runs on the encoding (same calls, same arguments)."""

    def step(label: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[label] = time.perf_counter() - t
        return out

    ext = step("extraction", lambda: detect_extraction(enc, config=cfg.censoring))
    out = {
        "extraction": ext,
        "process_map": step("process map", lambda: discover_process_map(
            enc=enc, activity_coverage=cfg.map_activity_coverage, edge_threshold=cfg.map_edge_threshold)),
        # as in `mine`: path times, costs and the happy path on finished cases
        "variants": step("variants", lambda: mine_variants(
            enc=enc, cost_model=cfg.cost_model,
            finished=ext.finished if ext.open_cases and len(ext.finished) == enc.n_cases else None)),
        "handovers": step("handovers", lambda: team_handover_network(enc=enc) if enc.has(GROUP) else None),
    }
    # the team pairs the variants and the handovers shared are not needed by the rest: on a big log they would
    # sit beside the bottlenecks' working arrays
    enc._follows.clear()
    out["bottlenecks"] = step("bottlenecks", lambda: find_bottlenecks(enc=enc, wait_pattern=cfg.wait_pattern))
    out["kpis"] = step("KPIs", lambda: compute_kpis(enc=enc, dimensions=cfg.kpi_dimensions, lines=cfg.line_mapping,
                                                    window=cfg.kpi_window, extraction=ext))  # type: ignore[arg-type]
    return out


def read_partitioned(source: str | Path) -> EventLog:
    """A partitioned log (a folder with `_parts.json`) as one in-memory EventLog, its events in manifest order."""
    import pyarrow.parquet as pq

    paths, meta = part_paths(source)
    df = pd.concat([pq.read_table(p).to_pandas() for p in paths], ignore_index=True)
    name = str(meta.get("name", Path(source).name))
    return EventLog(df, name=name, case_attributes=[c for c in meta.get("case_attributes", []) if c in df.columns])


def mine_single(source: str | Path, *, config: DistributedConfig | None = None) -> DistributedResult:
    """The same miners on the same partitioned log in this one process (the reference `mine_partitioned` equals)."""
    cfg = config or DistributedConfig()
    paths, _ = part_paths(source)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    log = read_partitioned(source)
    name = log.name
    timings["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encode(log)
    timings["encode"] = time.perf_counter() - t0
    mined = _run_miners(enc, cfg, timings)
    labels_cfg = cfg.labels
    if cfg.line_mapping and labels_cfg.line_mapping is None:
        labels_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": cfg.line_mapping})
    t0 = time.perf_counter()
    labels = case_labels(log, config=labels_cfg, enc=enc)
    timings["labels"] = time.perf_counter() - t0
    return DistributedResult(name=name, n_parts=len(paths), n_cases=enc.n_cases, n_events=enc.n_events,
                             labels=labels, timings=timings, **mined)
