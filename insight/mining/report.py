"""The InsightReport: every analysis of one log in one typed object, and `mine` which builds it.

`mine(log, config=..., progress=...)` encodes the log once and runs the process map, variants with cost,
bottlenecks, team handovers, KPIs, training labels, misrouting, conformance and alerts, then writes the
headline findings an operations lead reads first.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from insight.eventlog.schema import GROUP, DataQualityReport, EventLog
from insight.mining._core import encode
from insight.mining.alerts import AlertConfig, AlertReport, detect_alerts
from insight.mining.bottlenecks import DEFAULT_WAIT_PATTERN, Bottlenecks, find_bottlenecks
from insight.mining.censoring import CensoringConfig, Extraction, detect_extraction
from insight.mining.conformance import (
    ConformanceResult,
    IntendedJourney,
    JourneyComparison,
    check_conformance,
    compare_journeys,
)
from insight.mining.handover import HandoverNetwork, team_handover_network
from insight.mining.kpis import KpiTable, compute_kpis
from insight.mining.labels import CaseLabels, LabelConfig, case_labels
from insight.mining.misrouting import MisroutingConfig, MisroutingResult, analyze_misrouting
from insight.mining.process_map import ProcessMap, discover_process_map, render_svg
from insight.mining.variants import CostModel, VariantTable, mine_variants

# (step name, steps done, steps total) -> None; called before each step and once at the end.
ProgressCallback = Callable[[str, int, int], None]

STEPS = (
    "encode",
    "extraction",
    "process map",
    "variants",
    "bottlenecks",
    "handovers",
    "KPIs",
    "labels",
    "misrouting",
    "conformance",
    "journeys",
    "alerts",
)


@dataclass
class MineConfig:
    """What `mine` computes and with which knobs."""

    cost_model: CostModel = field(default_factory=CostModel)
    labels: LabelConfig = field(default_factory=LabelConfig)
    misrouting: MisroutingConfig | None = None
    alerts: AlertConfig | None = None
    journey: IntendedJourney | None = None
    model_path: str | None = None
    conformance: bool = True
    map_activity_coverage: float = 0.95
    map_edge_threshold: float = 0.02
    map_label: str = "count"
    kpi_dimensions: dict[str, str] | None = None
    kpi_window: str = "W"
    wait_pattern: str = DEFAULT_WAIT_PATTERN
    line_mapping: dict[str, int] | None = None
    render_map: bool = True
    censoring: CensoringConfig = field(default_factory=CensoringConfig)
    # repeat contact: the same customer opens another case within this many days (when no CSAT / survey column)
    repeat_days: float = 7.0


@dataclass
class InsightReport:
    """Everything mined from one log (typed results) plus the headline findings."""

    name: str
    n_cases: int
    n_events: int
    n_activities: int
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    columns: list[str]
    process_map: ProcessMap
    variants: VariantTable
    bottlenecks: Bottlenecks
    handovers: HandoverNetwork | None
    kpis: KpiTable
    labels: CaseLabels
    misrouting: MisroutingResult
    conformance: ConformanceResult | None
    alerts: AlertReport
    headlines: list[str] = field(default_factory=list)
    process_map_svg: str = ""
    quality: DataQualityReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extraction: Extraction | None = None
    journeys: JourneyComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole report (per-case tables left out)."""
        return _jsonable(
            {
                "name": self.name,
                "n_cases": self.n_cases,
                "n_events": self.n_events,
                "n_activities": self.n_activities,
                "start": self.start.isoformat() if self.start is not None else None,
                "end": self.end.isoformat() if self.end is not None else None,
                "columns": self.columns,
                "extraction": self.extraction.to_dict() if self.extraction else None,
                "headlines": self.headlines,
                "process_map": self.process_map.to_dict(),
                "variants": self.variants.to_dict(limit=50),
                "bottlenecks": self.bottlenecks.to_dict(),
                "handovers": self.handovers.to_dict(limit=100) if self.handovers else None,
                "kpis": self.kpis.to_dict(),
                "labels": self.labels.to_dict(),
                "misrouting": self.misrouting.to_dict(),
                "conformance": self.conformance.to_dict() if self.conformance else None,
                "journeys": self.journeys.to_dict() if self.journeys else None,
                "alerts": self.alerts.to_dict(),
                "quality": self.quality.to_dict() if self.quality else None,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            }
        )

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as pretty JSON."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return p


def _jsonable(x: Any) -> Any:
    """Replace NaN/inf by None and numpy / pandas scalars by plain Python values, recursively."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(x, (pd.Timestamp,)):
        return x.isoformat()
    if x is pd.NA or x is pd.NaT:
        return None
    return x


def fmt_duration(seconds: float | None) -> str:
    """Human duration: 45 s, 12 min, 3.4 h, 2.1 d."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    s = float(seconds)
    if abs(s) < 90:
        return f"{s:.0f} s"
    if abs(s) < 90 * 60:
        return f"{s / 60:.0f} min"
    if abs(s) < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def mine(
    log: EventLog, *, config: MineConfig | None = None, progress: ProgressCallback | None = None
) -> InsightReport:
    """Run every analysis on the log and assemble the InsightReport (progress callback per step)."""
    cfg = config or MineConfig()
    labels_cfg = cfg.labels
    if cfg.line_mapping and labels_cfg.line_mapping is None:
        labels_cfg = LabelConfig(**{**labels_cfg.__dict__, "line_mapping": cfg.line_mapping})
    mis_cfg = cfg.misrouting or MisroutingConfig(labels=labels_cfg)
    alert_cfg = cfg.alerts or AlertConfig(labels=labels_cfg)
    timings: dict[str, float] = {}
    total = len(STEPS)
    state = {"i": 0}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if progress:
            progress(name, state["i"], total)
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        state["i"] += 1
        return out

    enc = step("encode", lambda: encode(log))
    ext = step("extraction", lambda: detect_extraction(enc, config=cfg.censoring))
    pm = step(
        "process map",
        lambda: discover_process_map(
            enc=enc, activity_coverage=cfg.map_activity_coverage, edge_threshold=cfg.map_edge_threshold
        ),
    )
    svg = ""
    if cfg.render_map:
        t0 = time.perf_counter()
        svg = render_svg(pm, label=cfg.map_label)
        timings["process map render"] = time.perf_counter() - t0
    # Times of unfinished cases are lower bounds: paths, their costs and the happy path use finished cases.
    finished = ext.finished if ext.open_cases and len(ext.finished) == enc.n_cases else None
    variants = step("variants", lambda: mine_variants(enc=enc, cost_model=cfg.cost_model, finished=finished))
    bottlenecks = step("bottlenecks", lambda: find_bottlenecks(enc=enc, wait_pattern=cfg.wait_pattern))
    handovers = step("handovers", lambda: team_handover_network(enc=enc) if log.has(GROUP) else None)
    kpis = step(
        "KPIs",
        lambda: compute_kpis(
            enc=enc, dimensions=cfg.kpi_dimensions, lines=cfg.line_mapping,
            window=cfg.kpi_window, extraction=ext,  # type: ignore[arg-type]
        ),
    )
    labels = step("labels", lambda: case_labels(log, config=labels_cfg, enc=enc))
    mis = step("misrouting", lambda: analyze_misrouting(log, config=mis_cfg, labels=labels, enc=enc,
                                                        finished=finished))
    conf = step(
        "conformance",
        lambda: check_conformance(log, journey=cfg.journey, model_path=cfg.model_path, enc=enc,
                                  finished=finished)
        # Only a journey someone designed is a reference: the most frequent path is not a norm.
        if cfg.conformance and (cfg.journey is not None or cfg.model_path is not None)
        else None,
    )
    journeys = step(
        "journeys",
        lambda: compare_journeys(
            log, enc=enc, journey=cfg.journey, finished=ext.finished if len(ext.finished) == enc.n_cases else None,
            case_fitness=conf.case_fitness if conf is not None else None, repeat_days=cfg.repeat_days,
        ),
    )
    alerts = step("alerts", lambda: detect_alerts(log, config=alert_cfg, labels=labels, enc=enc, extraction=ext,
                                                  misrouting=mis))
    if progress:
        progress("done", total, total)
    start, end = (log.time_window() if log.n_events else (None, None))
    report = InsightReport(
        name=log.name,
        n_cases=enc.n_cases,
        n_events=enc.n_events,
        n_activities=enc.activity.n,
        start=start,
        end=end,
        columns=[str(c) for c in log.df.columns],
        process_map=pm,
        variants=variants,
        bottlenecks=bottlenecks,
        handovers=handovers,
        kpis=kpis,
        labels=labels,
        misrouting=mis,
        conformance=conf,
        alerts=alerts,
        process_map_svg=svg,
        quality=log.quality,
        timings=timings,
        extraction=ext,
        journeys=journeys,
    )
    report.headlines = headlines(report)
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def costly_intent(report: InsightReport, *, min_cases: int = 10) -> tuple[str, str, float, int] | None:
    """(dimension, value, median throughput vs overall, cases) of the slowest intent/category, if any."""
    overall = report.kpis.overall.throughput_median_s
    if not overall or math.isnan(overall) or overall <= 0:
        return None
    for dim in ("intent", "category"):
        rows = [r for r in report.kpis.by_dimension.get(dim, []) if r.cases >= min_cases]
        if rows:
            worst = max(rows, key=lambda r: r.throughput_median_s)
            return dim, worst.value, worst.throughput_median_s / overall, worst.cases
    return None


def _path(acts: tuple[str, ...] | list[str], n: int = 8) -> str:
    return " > ".join(acts[:n]) + (" > ..." if len(acts) > n else "")


def _hours_text(h: float) -> str:
    return f"{h:,.0f} case-hours more" if h >= 0 else f"{-h:,.0f} case-hours less"


def _routing_headlines(report: InsightReport) -> list[str]:
    """Transfers by kind, leading with what routing could have avoided and what it cost."""
    m = report.misrouting
    n = max(m.n_cases, 1)
    by = {t.kind: t for t in m.taxonomy}
    out: list[str] = []
    avoidable = m.avoidable
    if avoidable:
        parts = ", ".join(f"{t.cases:,} {t.kind.replace('_', '-')} ({t.meaning})" for t in avoidable)
        hours = sum(t.extra_hours_total for t in avoidable)
        examples = [c for t in avoidable for c in t.example_cases[:1]]
        basis = f", timed on {m.duration_basis.split(' (')[0]}" if m.duration_basis != "all cases" else ""
        out.append(
            f"Avoidable routing: {m.avoidable_cases:,} cases ({_pct(m.avoidable_cases / n)}): {parts}; together "
            f"{_hours_text(hours)} than similar cases that stayed with their first team{basis} "
            f"(costliest: {', '.join(examples)})."
        )
    else:
        out.append(f"Avoidable routing: none found among {m.reassigned_cases:,} reassigned cases.")
    fine = [t for t in m.taxonomy if not t.avoidable and t.cases]
    if fine:
        out.append("Not avoidable by routing: " + "; ".join(
            f"{t.cases:,} {t.kind.replace('_', ' ')} ({t.meaning})" for t in fine) + ".")
    if "misroute" in by and by["misroute"].extra_hours_mean is not None and by["misroute"].extra_hours_mean < 0:
        out.append("Misrouted cases were on average faster than similar cases that stayed with their first team: "
                   "the first team's queue, not the transfer, is where their time goes.")
    return out


def headlines(report: InsightReport) -> list[str]:
    """The findings an operations lead should read first, as plain sentences."""
    out: list[str] = []
    span = ""
    if report.start is not None and report.end is not None:
        span = f", {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}"
    med = report.kpis.overall.throughput_median_s
    med_text = "not yet known (too many cases still open)" if med is None or math.isnan(med) else fmt_duration(med)
    out.append(
        f"{report.n_cases:,} cases, {report.n_events:,} events, {report.n_activities} activities{span}; "
        f"median time to close {med_text} ({report.kpis.throughput_basis})."
    )
    if report.extraction is not None:
        out.extend(f"Extraction: {w}" for w in report.extraction.warnings)
    if report.quality is not None:
        out.extend(f"Input: {n}" for n in report.quality.notices[:4])
    if report.kpis.handling_basis.startswith("not measurable"):
        out.append(f"Handling time (AHT): {report.kpis.handling_basis}.")
    vt = report.variants
    happy = vt.happy
    if happy is not None:
        med_h = (f"median {fmt_duration(happy.median_s)} over its {happy.finished_cases:,} finished cases"
                 if vt.unfinished_cases else f"median {fmt_duration(happy.median_s)}")
        out.append(f"Happy path ({happy.cases:,} cases, {_pct(happy.share)}, {med_h}): {_path(happy.activities)}")
        costly = vt.costly(1)
        if costly:
            top = costly[0]
            share = top.excess_cost / vt.total_cost if vt.total_cost else 0.0
            fin = f" ({top.finished_cases:,} finished)" if top.finished_cases != top.cases else ""
            out.append(
                f"Costliest path beside it ({top.cases:,} cases{fin}, median {fmt_duration(top.median_s)}, "
                f"{top.handoffs_per_case:.1f} handoffs per case): each case costs "
                f"{top.cost_per_case - happy.cost_per_case:,.1f} cost units more than the happy path, "
                f"{_pct(share)} of all cost in excess; {_path(top.activities)} (e.g. case {top.example_case})."
            )
    ci = costly_intent(report)
    if ci is not None:
        dim, value, factor, n = ci
        out.append(f"Slowest {dim}: '{value}' ({n:,} cases) takes {factor:.1f}x the overall median time.")
    m = report.misrouting
    if m.has_groups:
        out.extend(_routing_headlines(report))
        worst = m.worst_first_team
        if worst is not None:
            out.append(
                f"Worst first team: {worst.team}, {worst.avoidable_out:,} avoidable transfers of its "
                f"{worst.first_team_cases:,} cases ({_pct(worst.avoidable_out_share)}), "
                f"{_hours_text(worst.avoidable_hours)} than similar cases that stayed "
                f"({worst.team} passed on {worst.misrouted_out:,} of {worst.first_team_cases:,} in all, "
                "escalations included)."
            )
        if m.ping_pong_cases:
            pp = m.ping_pong_pairs[0] if m.ping_pong_pairs else None
            pair = f"; top pair {pp.team_a} <-> {pp.team_b} ({pp.cases:,} cases)" if pp else ""
            out.append(f"Ping-pong: {m.ping_pong_cases:,} cases ({_pct(m.ping_pong_share)}) bounced back{pair}.")
        ptf = m.push_to_front
        if ptf is not None and ptf.pushed_cases:
            out.append(
                f"Push-to-front: {ptf.pushed_cases:,} of {ptf.first_line_cases:,} first-line cases "
                f"({_pct(ptf.pushed_share)}) went to 2nd/3rd line; {ptf.could_have_stayed:,} of them "
                f"({_pct(ptf.could_have_stayed_share)}) could have stayed."
            )
    b = report.bottlenecks
    if b.edges:
        e = b.edges[0]
        out.append(
            f"Biggest wait: {e.name} (median {fmt_duration(e.median_s)}, {_pct(e.share_of_wait)} of all waiting time)."
        )
    if b.activities:
        a = max(b.activities, key=lambda s: s.median_s if s.count >= 10 else -1)
        out.append(f"Slowest step: waiting before '{a.name}' takes {fmt_duration(a.median_s)} (median).")
    c = report.conformance
    if c is None:
        out.append("Conformance not checked: no designed journey or process model was given (mine --journey FILE "
                   "or --model FILE).")
    else:
        dev = c.deviations[0] if c.deviations else None
        d = f"; most common deviation: {dev.kind} '{dev.activity}' in {dev.cases:,} cases" if dev else ""
        left = f" ({c.unfinished_excluded:,} unfinished cases not checked)" if c.unfinished_excluded else ""
        out.append(
            f"Conformance to {c.reference}: {_pct(c.fitting_share)} of cases follow it exactly, "
            f"mean fitness {c.mean_fitness:.2f}{d}{left}."
        )
    if report.journeys is not None:
        out.append(_journeys_headline(report.journeys))
    al = report.alerts
    if al.alerts:
        first = al.alerts[0]
        by_sev = ", ".join(f"{n} {sev}" for sev in ("high", "medium", "low")
                           if (n := sum(a.severity == sev for a in al.alerts)))
        why = f" ({first.explanation})" if first.explanation else ""
        out.append(
            f"Alerts: {len(al.alerts)} of {al.tested:,} comparisons of the last window with the "
            f"{al.baseline_cases:,} baseline cases passed the false-discovery control ({by_sev}); "
            f"top: {first.title} - {first.subject[:120]}{why}."
        )
    elif al.note:
        out.append(f"Alerts: {al.note}.")
    elif al.tested:
        out.append(f"Alerts: none; {al.tested:,} comparisons of the last window with the baseline found no change "
                   "beyond chance.")
    return out


def _experience_text(p: Any, kind: str) -> str:
    if kind == "score" and p.score_mean is not None:
        return f"mean score {p.score_mean:.2f} over {p.score_cases:,} cases"
    if kind == "repeat_contact" and p.repeat_rate is not None:
        return f"{_pct(p.repeat_rate)} repeat contacts"
    if kind == "sentiment" and p.sentiment_mean is not None:
        return f"mean sentiment {p.sentiment_mean:+.2f} (derived from text) over {p.sentiment_cases:,} cases"
    return "experience not measured"


def _journeys_headline(j: JourneyComparison) -> str:
    """Designed, in-the-data and experienced journeys in one sentence."""
    parts = []
    if j.designed is not None:
        parts.append(f"designed ({j.designed_source}): followed exactly by {j.designed.cases:,} finished cases "
                     f"({_pct(j.designed.share)}), {_experience_text(j.designed, j.experience)}")
    else:
        parts.append("designed: none given")
    if j.in_data is not None:
        parts.append(f"in the data: {_path(j.in_data.activities)} ({j.in_data.cases:,} finished cases, "
                     f"{_pct(j.in_data.share)}), {_experience_text(j.in_data, j.experience)}")
    if j.experience != "none" and len(j.paths) > 1:
        attr = {"score": "score_mean", "sentiment": "sentiment_mean"}.get(j.experience, "repeat_rate")
        rated = [p for p in j.paths if getattr(p, attr) is not None]
        if rated:
            # a low score or sentiment is worst; a high repeat-contact rate is
            worst = (max if attr == "repeat_rate" else min)(rated, key=lambda p: getattr(p, attr))
            parts.append(f"worst experienced path: {_path(worst.activities)} ({worst.cases:,} cases, "
                         f"{_experience_text(worst, j.experience)})")
    return f"Journeys ({j.experience_basis}): " + "; ".join(parts) + "."
