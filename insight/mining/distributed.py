"""Mining on a Dask cluster over case-partitioned Parquet, with the single-process miners' exact results.

The log lives as Parquet parts written by `insight.eventlog.writers.write_partitioned`: every case in exactly one
part, parts in the order of the cases' first appearance. The work splits where the cost is:

- **on the workers, per part** (per-case work stays local): read the part, sort it by (case, time), factorise
  every column the miners use, and compute the per-case labels (first and resolving team, reassignments,
  outcome); the parts stay in worker memory between the two rounds;
- **between the rounds, on the client**: the parts' dictionaries (distinct activities, teams, ...) are merged in
  part order into global codes, which equal the single-process codes because the single-process encoder numbers
  values by first appearance in the same (case, time) order;
- **on the client, over compact integer arrays**: the parts send their events as global codes (int32), case
  offsets and int64 timestamps, no strings; the unchanged miners (process map with performance, variants,
  bottlenecks, handovers, KPIs) run on that encoding, so medians and percentiles are exact (not sketches) and every
  float is summed in the same order as in one process.

The client holds ~50 bytes per event (int32 codes of the coded columns, int64 case and time), the workers hold
the pandas frames. What is not here:
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
from insight.mining.labels import CaseLabels, LabelConfig, _match_codes, case_labels, support_lines
from insight.mining.process_map import ProcessMap, discover_process_map
from insight.mining.variants import CostModel, VariantTable, mine_variants

MANIFEST = "_parts.json"
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


@dataclass
class _Part:
    """One part on its worker: the log, its encoding and which coded columns it has."""

    log: EventLog
    enc: EncodedLog
    columns: list[str]


def _load(path: str, name: str, case_attributes: list[str]) -> _Part:
    import pyarrow.parquet as pq

    df = pq.read_table(path).to_pandas()
    log = EventLog(df, name=name, case_attributes=[c for c in case_attributes if c in df.columns])
    cols = [c for c in CODED_COLUMNS if c in df.columns]
    return _Part(log=log, enc=encode(log, columns=tuple(cols)), columns=cols)


def _dictionaries(part: _Part) -> dict[str, Any]:
    enc = part.enc
    return {
        "n_events": enc.n_events,
        "n_cases": enc.n_cases,
        "ts_unit": enc.ts_unit,
        "labels": {ACTIVITY: enc.activity.labels, **{c: enc.column(c).labels for c in part.columns}},
    }


def _arrays(part: _Part, remap: dict[str, np.ndarray]) -> dict[str, Any]:
    """The part's events in global codes (int32), its case offsets and ids, and its int64 times."""
    enc = part.enc

    def glob(c: Codes, m: np.ndarray) -> np.ndarray:
        # int16 on the wire when the global codes fit (most columns): half the bytes to send
        small = len(m) == 0 or int(m.max()) < np.iinfo(np.int16).max
        return np.r_[m, -1].astype(np.int16 if small else np.int32)[c.codes]  # code -1 picks the trailing -1

    return {
        "case_len": enc.case_len.astype(np.int64),
        "case_labels": np.asarray(enc.case_labels, dtype=object),
        "ts": enc.ts,
        "codes": {ACTIVITY: glob(enc.activity, remap[ACTIVITY]),
                  **{c: glob(enc.column(c), remap[c]) for c in part.columns}},
    }


def _labels(part: _Part, config: LabelConfig) -> CaseLabels:
    return case_labels(part.log, config=config, enc=part.enc)


# ---- client side -------------------------------------------------------------------------------------------------


def _merge_dictionaries(dicts: Sequence[dict[str, Any]]) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Global labels per column (first appearance in part order) and each part's local->global code map."""
    columns = list(dict.fromkeys(c for d in dicts for c in d["labels"]))
    glabels: dict[str, np.ndarray] = {}
    remaps: list[dict[str, np.ndarray]] = [{} for _ in dicts]
    for col in columns:
        index: dict[Any, int] = {}
        for i, d in enumerate(dicts):
            local = d["labels"].get(col)
            if local is None:
                continue
            remaps[i][col] = np.asarray([index.setdefault(v, len(index)) for v in local.tolist()], dtype=np.int64)
        glabels[col] = np.asarray(list(index), dtype=object)
    for i in range(len(dicts)):  # a part without the column: every event missing
        for col in columns:
            remaps[i].setdefault(col, np.zeros(0, dtype=np.int64))
    return glabels, remaps


def _global_encoding(arrays: Sequence[dict[str, Any]], glabels: dict[str, np.ndarray], unit: str) -> EncodedLog:
    """One EncodedLog from the parts' arrays (no frame behind it: every column the miners use is coded)."""
    case_len = np.concatenate([a["case_len"] for a in arrays])
    n_cases = len(case_len)
    case_start = np.r_[0, np.cumsum(case_len)].astype(np.int64)
    case = np.repeat(np.arange(n_cases, dtype=np.int64), case_len)
    ts = np.concatenate([a["ts"] for a in arrays]).astype(np.int64)

    def codes_of(col: str) -> np.ndarray:
        out = np.empty(len(ts), dtype=np.int32)  # the encoder's dtype, whatever each part sent
        at = 0
        for a in arrays:
            n = len(a["ts"])
            out[at:at + n] = a["codes"].get(col, -1)
            at += n
        return out

    enc = EncodedLog(
        case=case,
        case_labels=np.concatenate([a["case_labels"] for a in arrays]),
        case_start=case_start,
        activity=Codes(codes_of(ACTIVITY), glabels[ACTIVITY]),
        ts=ts,
        ts_unit=unit,
        order=None,
        df=pd.DataFrame(),
    )
    enc._has[ACTIVITY] = enc.n_events > 0
    for col, labels in glabels.items():
        if col == ACTIVITY:
            continue
        c = Codes(codes_of(col), labels)
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
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           memory_limit=memory_limit or "auto", dashboard_address=None)
    return Client(cluster)


def mine_partitioned(source: str | Path, client: Any, *, config: DistributedConfig | None = None) -> DistributedResult:
    """Mine a partitioned log on the cluster behind `client` (results equal `mine` on the whole log)."""
    cfg = config or DistributedConfig()
    paths, meta = part_paths(source)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    name = str(meta.get("name", Path(source).name))
    case_attrs = list(meta.get("case_attributes", []))
    parts = client.map(_load, [str(p) for p in paths], name=name, case_attributes=case_attrs,
                       key=[f"deskpilot-part-{i}-{time.time_ns()}" for i in range(len(paths))])
    dicts = client.gather(client.map(_dictionaries, parts))
    timings["read+encode (workers)"] = time.perf_counter() - t0
    units = {d["ts_unit"] for d in dicts if d["n_events"]}
    if len(units) > 1:
        raise InvalidInput(f"parts store timestamps in different units {sorted(units)}", field="log")
    t0 = time.perf_counter()
    glabels, remaps = _merge_dictionaries(dicts)
    labels_cfg = cfg.labels
    if cfg.line_mapping and labels_cfg.line_mapping is None:
        labels_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": cfg.line_mapping})
    lines = None
    if GROUP in glabels:
        # lines are a property of the whole log's teams: each part gets them as its mapping
        teams = np.asarray([str(x) for x in glabels[GROUP]], dtype=object)
        usable = np.asarray([len(t.strip()) > 0 for t in teams], dtype=bool)
        if labels_cfg.consult_group_pattern:
            usable &= ~_match_codes(np.arange(len(teams)), teams, labels_cfg.consult_group_pattern)
        lines = support_lines(teams[usable], mapping=labels_cfg.line_mapping)
    part_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": lines}) if lines else labels_cfg
    arrays_f = client.map(_arrays, parts, remaps, priority=1)
    # the labels run on the workers while the arrays travel and the client combines them; they are in before the
    # client's miners start, so the workers' and the client's heavy steps do not compete for the same cores
    labels_f = client.map(_labels, parts, config=part_cfg)
    arrays = client.gather(arrays_f)
    timings["global codes (workers)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    unit = units.pop() if units else "us"
    enc = _global_encoding(arrays, glabels, unit)
    del arrays, arrays_f
    timings["combine (client)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    label_parts = client.gather(labels_f)
    client.cancel(parts)
    timings["labels (workers)"] = time.perf_counter() - t0

    mined = _run_miners(enc, cfg, timings)
    case_base = np.r_[0, np.cumsum([d["n_cases"] for d in dicts])[:-1]]
    event_base = np.r_[0, np.cumsum([d["n_events"] for d in dicts])[:-1]]
    labels = _global_labels(label_parts, lines if GROUP in glabels else None, case_base, event_base)
    return DistributedResult(name=name, n_parts=len(paths), n_cases=enc.n_cases, n_events=enc.n_events,
                             labels=labels, timings=timings, **mined)


def _run_miners(enc: EncodedLog, cfg: DistributedConfig, timings: dict[str, float]) -> dict[str, Any]:
    """The miners `mine` runs on the encoding (same calls, same arguments)."""

    def step(label: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[label] = time.perf_counter() - t
        return out

    ext = step("extraction", lambda: detect_extraction(enc, config=cfg.censoring))
    return {
        "extraction": ext,
        "process_map": step("process map", lambda: discover_process_map(
            enc=enc, activity_coverage=cfg.map_activity_coverage, edge_threshold=cfg.map_edge_threshold)),
        # as in `mine`: path times, costs and the happy path on finished cases
        "variants": step("variants", lambda: mine_variants(
            enc=enc, cost_model=cfg.cost_model,
            finished=ext.finished if ext.open_cases and len(ext.finished) == enc.n_cases else None)),
        "bottlenecks": step("bottlenecks", lambda: find_bottlenecks(enc=enc, wait_pattern=cfg.wait_pattern)),
        "handovers": step("handovers", lambda: team_handover_network(enc=enc) if enc.has(GROUP) else None),
        "kpis": step("KPIs", lambda: compute_kpis(enc=enc, dimensions=cfg.kpi_dimensions, lines=cfg.line_mapping,
                                                  window=cfg.kpi_window, extraction=ext)),  # type: ignore[arg-type]
    }


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
