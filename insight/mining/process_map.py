"""Process map: directly-follows graph with frequency and waiting-time performance, plus noise control.

Counts are the same as `pm4py.discover_dfg` (every pair of consecutive events in a case); edge times are the
waiting time between the two events (target timestamp minus source timestamp), as in
`pm4py.discover_performance_dfg` for logs with one timestamp per event.
"""

from __future__ import annotations

import html
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining._core import (
    EncodedLog,
    GroupStats,
    distinct_per_key,
    ensure_encoded,
    follows,
    group_stats,
    grouping,
    service_pairs,
)


@dataclass(slots=True)
class EdgeStat:
    """One directly-follows edge: how often, in how many cases, and the waiting time on it (seconds)."""

    source: str
    target: str
    count: int
    cases: int
    mean_s: float
    median_s: float
    p90_s: float
    max_s: float
    total_s: float


@dataclass(slots=True)
class ActivityStat:
    """One activity: events, cases, sojourn time (since the previous event of the case) and service time.

    `service_*` is only known when the log has `start`/`complete` lifecycle pairs; otherwise it is None.
    """

    name: str
    count: int
    cases: int
    starts: int
    ends: int
    sojourn_mean_s: float | None
    sojourn_median_s: float | None
    sojourn_p90_s: float | None
    service_mean_s: float | None = None
    service_median_s: float | None = None


@dataclass
class ProcessMap:
    """A (possibly noise-filtered) directly-follows process map."""

    activities: list[ActivityStat]
    edges: list[EdgeStat]
    start_activities: dict[str, int]
    end_activities: dict[str, int]
    n_cases: int
    n_events: int
    activity_coverage: float = 1.0
    edge_threshold: float = 0.0
    hidden_activities: list[str] = field(default_factory=list)
    hidden_edges: int = 0

    def dfg(self) -> dict[tuple[str, str], int]:
        """Edge counts keyed like pm4py's DFG."""
        return {(e.source, e.target): e.count for e in self.edges}

    def edge(self, source: str, target: str) -> EdgeStat | None:
        """The edge between two activities, if present."""
        for e in self.edges:
            if e.source == source and e.target == target:
                return e
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "n_cases": self.n_cases,
            "n_events": self.n_events,
            "activity_coverage": self.activity_coverage,
            "edge_threshold": self.edge_threshold,
            "hidden_activities": list(self.hidden_activities),
            "hidden_edges": self.hidden_edges,
            "start_activities": dict(self.start_activities),
            "end_activities": dict(self.end_activities),
            "activities": [asdict(a) for a in self.activities],
            "edges": [asdict(e) for e in self.edges],
        }

    def to_dot(self, *, label: str = "count") -> str:
        """Graphviz DOT text; `label` is "count" or "median" (waiting time on edges)."""
        return to_dot(self, label=label)

    def to_svg(self, *, label: str = "count", engine: str = "auto") -> str:
        """An SVG picture of the map (Graphviz `dot` when installed, else a built-in layered layout)."""
        return render_svg(self, label=label, engine=engine)


def _opt(x: float) -> float | None:
    return None if (x is None or (isinstance(x, float) and math.isnan(x))) else float(x)


def discover_process_map(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    activity_coverage: float = 1.0,
    edge_threshold: float = 0.0,
    lifecycle_column: str = "lifecycle",
) -> ProcessMap:
    """Directly-follows map with frequency and waiting times; filter noise by activity coverage / edge share.

    `activity_coverage` keeps the most frequent activities that together cover that share of events (events of
    hidden activities are removed and the map reconnects around them, as Disco does). `edge_threshold` hides
    edges whose count is below that fraction of the strongest edge, but every kept activity keeps its
    strongest incoming and outgoing edge so the map stays connected.
    """
    if not 0.0 < activity_coverage <= 1.0:
        raise InvalidInput("activity_coverage must be in (0, 1]", field="activity_coverage")
    if not 0.0 <= edge_threshold <= 1.0:
        raise InvalidInput("edge_threshold must be in [0, 1]", field="edge_threshold")
    enc = ensure_encoded(log, enc)
    codes = enc.activity.codes
    labels = enc.activity.labels
    n_act = enc.activity.n
    ev_count = np.bincount(codes, minlength=n_act)

    keep_act = np.ones(n_act, dtype=bool)
    hidden: list[str] = []
    if activity_coverage < 1.0 and n_act:
        order = np.argsort(-ev_count, kind="stable")
        cum = np.cumsum(ev_count[order]) / max(1, ev_count.sum())
        n_keep = int(np.searchsorted(cum, activity_coverage - 1e-12) + 1)
        keep_act[:] = False
        keep_act[order[:n_keep]] = True
        hidden = [str(labels[i]) for i in order[n_keep:]]

    work = codes if keep_act.all() else np.where(keep_act[codes], codes, -1)
    skip = not keep_act.all()
    pairs = follows(enc, work, skip_missing=skip)
    next_event = pairs.dst_event
    ups = enc.units_per_second
    # unfiltered, every pair is two adjacent events: one difference of neighbours, then a single gather
    raw_wait = enc.ts[next_event] - enc.ts[pairs.src_event] if skip else np.diff(enc.ts)[pairs.src_event]
    # One grouping of the edges serves the wait statistics and the cases per edge (distinct (case, edge)
    # pairs). It groups them target first, so the edges into one activity lie side by side and the same
    # order also groups the sojourn times below; the results are then put back in source-major key order.
    tkey = pairs.dst.astype(np.int64) * n_act + pairs.src
    by_t = grouping(tkey)
    gs = group_stats(tkey, raw_wait, scale=ups, by=by_t)
    _, cases_per_edge = distinct_per_key(enc.case[pairs.src_event], tkey, by=by_t)
    src_major = (gs.group % n_act) * n_act + gs.group // n_act
    back = np.argsort(src_major)
    gs = GroupStats(src_major[back], *(getattr(gs, f)[back] for f in ("count", "total", "mean", "median", "p90", "max")))
    cases_per_edge = cases_per_edge[back]

    keep_edge = np.ones(len(gs.group), dtype=bool)
    if edge_threshold > 0 and len(gs.group):
        keep_edge = gs.count >= edge_threshold * gs.count.max()
        src = gs.group // n_act
        dst = gs.group % n_act
        for a in np.flatnonzero(keep_act):
            for sel in (src == a, dst == a):
                idx = np.flatnonzero(sel)
                if len(idx):
                    keep_edge[idx[np.argmax(gs.count[idx])]] = True

    edges = [
        EdgeStat(
            source=str(labels[g // n_act]),
            target=str(labels[g % n_act]),
            count=int(gs.count[i]),
            cases=int(cases_per_edge[i]),
            mean_s=float(gs.mean[i]),
            median_s=float(gs.median[i]),
            p90_s=float(gs.p90[i]),
            max_s=float(gs.max[i]),
            total_s=float(gs.total[i]),
        )
        for i, g in enumerate(gs.group)
        if keep_edge[i]
    ]
    edges.sort(key=lambda e: -e.count)

    # start / end activities on the filtered sequences
    if skip:
        valid = np.flatnonzero(work >= 0)
        vc = enc.case[valid]
        first_mask = np.r_[True, vc[1:] != vc[:-1]] if len(vc) else np.zeros(0, bool)
        last_mask = np.r_[vc[1:] != vc[:-1], True] if len(vc) else np.zeros(0, bool)
        starts = np.bincount(work[valid[first_mask]], minlength=n_act)
        ends = np.bincount(work[valid[last_mask]], minlength=n_act)
    else:
        starts = np.bincount(codes[enc.case_start[:-1]], minlength=n_act)
        ends = np.bincount(codes[enc.case_start[1:] - 1], minlength=n_act)

    # sojourn: time since the previous event of the case (unfiltered), attributed to the later activity
    if skip:
        later = np.flatnonzero(enc.case[1:] == enc.case[:-1]) + 1
        soj = group_stats(codes[later], enc.ts[later] - enc.ts[later - 1], scale=ups)
    else:
        soj = group_stats(pairs.dst.astype(np.int64), raw_wait, scale=ups, by=by_t.coarsen(n_act))
    soj_idx = {int(g): i for i, g in enumerate(soj.group)}
    svc_events, svc_raw = service_pairs(enc, lifecycle_column=lifecycle_column)
    svc_stats = group_stats(codes[svc_events], svc_raw, scale=ups)
    svc_idx = {int(g): i for i, g in enumerate(svc_stats.group)}
    cases_per_act = enc.cases_per_activity()

    acts = []
    for a in np.flatnonzero(keep_act):
        si = soj_idx.get(int(a))
        vi = svc_idx.get(int(a))
        acts.append(
            ActivityStat(
                name=str(labels[a]),
                count=int(ev_count[a]),
                cases=int(cases_per_act[a]),
                starts=int(starts[a]),
                ends=int(ends[a]),
                sojourn_mean_s=None if si is None else float(soj.mean[si]),
                sojourn_median_s=None if si is None else float(soj.median[si]),
                sojourn_p90_s=None if si is None else float(soj.p90[si]),
                service_mean_s=None if vi is None else float(svc_stats.mean[vi]),
                service_median_s=None if vi is None else float(svc_stats.median[vi]),
            )
        )
    acts.sort(key=lambda a: -a.count)
    return ProcessMap(
        activities=acts,
        edges=edges,
        start_activities={str(labels[i]): int(starts[i]) for i in np.flatnonzero(starts)},
        end_activities={str(labels[i]): int(ends[i]) for i in np.flatnonzero(ends)},
        n_cases=enc.n_cases,
        n_events=enc.n_events,
        activity_coverage=activity_coverage,
        edge_threshold=edge_threshold,
        hidden_activities=hidden,
        hidden_edges=int((~keep_edge).sum()),
    )


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _edge_label(e: EdgeStat, label: str) -> str:
    if label == "count":
        return str(e.count)
    if label == "median":
        return _fmt_duration(e.median_s)
    if label == "mean":
        return _fmt_duration(e.mean_s)
    raise InvalidInput("label must be 'count', 'median' or 'mean'", field="label")


def to_dot(pm: ProcessMap, *, label: str = "count") -> str:
    """Graphviz DOT text for a process map."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    maxc = max((e.count for e in pm.edges), default=1)
    lines = ["digraph process_map {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe", fontname="Helvetica"];']
    lines.append('  "__start__" [shape=circle, label="", width=0.25, fillcolor="#2e7d32"];')
    lines.append('  "__end__" [shape=doublecircle, label="", width=0.2, fillcolor="#c62828"];')
    for a in pm.activities:
        node_label = q(a.name + "\\n" + str(a.count))
        lines.append(f"  {q(a.name)} [label={node_label}];")
    for e in pm.edges:
        w = 1 + 4 * e.count / maxc
        lines.append(f"  {q(e.source)} -> {q(e.target)} [label={q(_edge_label(e, label))}, penwidth={w:.2f}];")
    for name, c in pm.start_activities.items():
        lines.append(f'  "__start__" -> {q(name)} [label="{c}", style=dashed];')
    for name, c in pm.end_activities.items():
        lines.append(f'  {q(name)} -> "__end__" [label="{c}", style=dashed];')
    lines.append("}")
    return "\n".join(lines)


def render_svg(pm: ProcessMap, *, label: str = "count", engine: str = "auto") -> str:
    """SVG of the map: Graphviz `dot` when `engine` is "dot" or "auto" and it is installed, else built-in."""
    if engine not in ("auto", "dot", "builtin"):
        raise InvalidInput("engine must be 'auto', 'dot' or 'builtin'", field="engine")
    dot_bin = shutil.which("dot")
    if engine == "dot" and dot_bin is None:
        raise InvalidInput("engine='dot' asked for but the Graphviz `dot` binary is not installed", field="engine")
    if engine != "builtin" and dot_bin is not None:
        out = subprocess.run([dot_bin, "-Tsvg"], input=to_dot(pm, label=label).encode(), capture_output=True, check=True)
        return out.stdout.decode()
    return _builtin_svg(pm, label=label)


def layers(pm: ProcessMap) -> dict[str, int]:
    """Longest-path layering on the map with back edges (found by DFS from the start activities) removed."""
    names = [a.name for a in pm.activities]
    out_edges: dict[str, list[str]] = {n: [] for n in names}
    for e in sorted(pm.edges, key=lambda e: -e.count):
        if e.source in out_edges and e.target in out_edges and e.source != e.target:
            out_edges[e.source].append(e.target)
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    roots = sorted(pm.start_activities, key=lambda n: -pm.start_activities[n]) + names
    for root in roots:
        if root not in out_edges or root in state:
            continue
        stack = [(root, iter(out_edges[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(out_edges[nxt])))
    layer = {n: 0 for n in names}
    for _ in range(len(names)):
        changed = False
        for s, ts in out_edges.items():
            for t in ts:
                if (s, t) not in back and layer[t] < layer[s] + 1:
                    layer[t] = layer[s] + 1
                    changed = True
        if not changed:
            break
    return layer


def _builtin_svg(pm: ProcessMap, *, label: str) -> str:
    layer = layers(pm)
    by_layer: dict[int, list[str]] = {}
    for a in pm.activities:
        by_layer.setdefault(layer[a.name], []).append(a.name)
    box_w, box_h, gap_x, gap_y = 190, 44, 40, 80
    width = max((len(v) for v in by_layer.values()), default=1) * (box_w + gap_x) + gap_x + 260
    pos: dict[str, tuple[float, float]] = {}
    for lvl, members in sorted(by_layer.items()):
        row_w = len(members) * (box_w + gap_x) - gap_x
        x0 = (width - row_w) / 2
        for i, n in enumerate(members):
            pos[n] = (x0 + i * (box_w + gap_x), 60 + lvl * (box_h + gap_y))
    height = 60 + (max(by_layer, default=0) + 1) * (box_h + gap_y) + 40
    counts = {a.name: a.count for a in pm.activities}
    maxa = max(counts.values(), default=1)
    maxc = max((e.count for e in pm.edges), default=1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica,Arial,sans-serif" font-size="12">',
        # userSpaceOnUse keeps arrowheads the same size whatever the edge's stroke width
        '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/>'
        "</marker></defs>",
    ]
    for e in pm.edges:
        if e.source not in pos or e.target not in pos:
            continue
        sx, sy = pos[e.source]
        tx, ty = pos[e.target]
        w = 0.8 + 5 * e.count / maxc
        txt = html.escape(_edge_label(e, label))
        if e.source == e.target:
            x, y = sx + box_w, sy + box_h / 2
            d = f"M{x:.1f},{y - 8:.1f} C{x + 45:.1f},{y - 30:.1f} {x + 45:.1f},{y + 30:.1f} {x:.1f},{y + 8:.1f}"
            lx, ly = x + 38, y + 4
        elif ty > sy + box_h + gap_y:
            # forward edge skipping layers: route along the left side so it does not run over the boxes between
            x1, y1 = sx, sy + box_h * 0.7
            x2, y2 = tx, ty + box_h * 0.3
            bend = 60 + 0.15 * abs(y2 - y1)
            d = f"M{x1:.1f},{y1:.1f} C{x1 - bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            lx, ly = min(x1, x2) - bend * 0.75 - 4, (y1 + y2) / 2
        elif ty > sy:
            x1, y1 = sx + box_w / 2, sy + box_h
            x2, y2 = tx + box_w / 2, ty
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 40:.1f} {x2:.1f},{y2 - 40:.1f} {x2:.1f},{y2:.1f}"
            lx, ly = (x1 + x2) / 2 + 4, (y1 + y2) / 2
        else:
            # backward or same-layer edge: route along the right side so it does not cross the boxes
            x1, y1 = sx + box_w, sy + box_h * 0.7
            x2, y2 = tx + box_w, ty + box_h * 0.3
            bend = 60 + 0.15 * abs(y1 - y2)
            d = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 + bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            lx, ly = max(x1, x2) + bend * 0.75, (y1 + y2) / 2
        color = "#1a73e8" if ty > sy else "#9c27b0"
        parts.append(
            f'<path d="{d}" fill="none" stroke="{color}" stroke-opacity="0.75" stroke-width="{w:.2f}" '
            f'marker-end="url(#arr)"><title>{html.escape(e.source)} → {html.escape(e.target)}: {e.count}, '
            f"median wait {_fmt_duration(e.median_s)}</title></path>"
        )
        anchor = "end" if lx < sx else "start"
        parts.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" fill="#333" font-size="10" text-anchor="{anchor}">{txt}</text>'
        )
    for name, (x, y) in pos.items():
        shade = int(235 - 120 * counts[name] / maxa)
        fill = f"rgb({shade},{shade + 10 if shade < 245 else 255},255)"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="8" fill="{fill}" stroke="#1a237e"/>'
        )
        short = name if len(name) <= 28 else name[:26] + "…"
        parts.append(
            f'<text x="{x + box_w / 2:.1f}" y="{y + 18:.1f}" text-anchor="middle" font-weight="bold">'
            f"{html.escape(short)}<title>{html.escape(name)}</title></text>"
        )
        parts.append(f'<text x="{x + box_w / 2:.1f}" y="{y + 34:.1f}" text-anchor="middle">{counts[name]}</text>')
    for name, c in pm.start_activities.items():
        if name in pos:
            x, y = pos[name]
            parts.append(
                f'<text x="{x + box_w - 4:.1f}" y="{y - 5:.1f}" text-anchor="end" fill="#2e7d32" '
                f'font-size="10">▶ start {c}</text>'
            )
    for name, c in pm.end_activities.items():
        if name in pos:
            x, y = pos[name]
            parts.append(
                f'<text x="{x + 4:.1f}" y="{y + box_h + 12:.1f}" fill="#c62828" font-size="10">■ end {c}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)
