"""Server-side SVG for the analyst pages: the process map (a layered layout with clickable edges and activities) and
time charts on a continuous axis. Pure functions of mined results; no miner runs here."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from insight.mining import ProcessMap
from insight.mining.process_map import layers
from insight.mining.report import fmt_duration

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 178, 48, 36, 74, 40


@dataclass
class Placed:
    """Where an activity box sits."""

    name: str
    layer: int
    x: float
    y: float


def layout(pm: ProcessMap) -> tuple[dict[str, Placed], float, float]:
    """Layered positions of the map's activities (barycentre ordering to cut crossings), and the canvas size."""
    names = [a.name for a in pm.activities]
    edges = [(e.source, e.target, e.count) for e in pm.edges]
    layer = layers(pm)  # the miner's own layering, so the page and report.html agree
    rows: dict[int, list[str]] = {}
    for n in names:  # names come busiest first: the first sweep starts from frequency order
        rows.setdefault(layer[n], []).append(n)
    nbrs: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
    for s, t, c in edges:
        if s != t and s in nbrs and t in nbrs:
            nbrs[s].append((t, c))
            nbrs[t].append((s, c))
    for sweep in range(6):
        levels = sorted(rows) if sweep % 2 == 0 else sorted(rows, reverse=True)
        for lvl in levels:
            ref = lvl - 1 if sweep % 2 == 0 else lvl + 1
            if ref not in rows:
                continue
            pos = {n: i for i, n in enumerate(rows[ref])}
            cur = {n: i for i, n in enumerate(rows[lvl])}

            def bary(n: str, pos: dict[str, int] = pos, cur: dict[str, int] = cur) -> float:
                ws = [(pos[m], c) for m, c in nbrs[n] if m in pos]
                if not ws:
                    return float(cur[n])
                return sum(p * c for p, c in ws) / sum(c for _, c in ws)

            rows[lvl] = sorted(rows[lvl], key=lambda n: (bary(n), cur[n]))
    widest = max((len(v) for v in rows.values()), default=1)
    width = PAD * 2 + widest * (BOX_W + GAP_X) - GAP_X + 260  # room on both sides for edges that bow out
    placed: dict[str, Placed] = {}
    for lvl, members in rows.items():
        row_w = len(members) * (BOX_W + GAP_X) - GAP_X
        x0 = (width - row_w) / 2
        for i, n in enumerate(members):
            placed[n] = Placed(n, lvl, x0 + i * (BOX_W + GAP_X), PAD + 50 + lvl * (BOX_H + GAP_Y))
    height = PAD + 50 + (max(rows, default=0) + 1) * (BOX_H + GAP_Y) + 40
    return placed, width, height


def _heat(v: float) -> str:
    """Light yellow (0) to deep red (1)."""
    v = max(0.0, min(1.0, v))
    r, g, b = 255, int(236 - 190 * v), int(179 - 150 * v)
    return f"rgb({r},{g},{b})"


def process_map_svg(pm: ProcessMap, *, view: str, edge_href: Callable[[str, str], str],
                    activity_href: Callable[[str], str]) -> str:
    """The map as SVG: boxes for activities, curves for directly-follows edges; every edge and box is a link
    (keyboard focusable) to its cases. `view` is "frequency" (labels = how often) or "performance" (median wait)."""
    placed, width, height = layout(pm)
    perf = view == "performance"
    maxc = max((e.count for e in pm.edges), default=1) or 1
    med = [e.median_s for e in pm.edges if e.median_s == e.median_s]
    max_med = max(med, default=1.0) or 1.0
    acts = {a.name: a for a in pm.activities}
    max_act = max((a.count for a in pm.activities), default=1) or 1
    soj = [a.sojourn_median_s or 0.0 for a in pm.activities]
    max_soj = max(soj, default=1.0) or 1.0
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" class="pmap" viewBox="0 0 {width:.0f} {height:.0f}" '
         f'width="{width:.0f}" height="{height:.0f}" role="group" aria-label="Process map, {view} view: '
         f'{len(pm.activities)} activities, {len(pm.edges)} paths">',
         '<defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" markerHeight="10" '
         'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#37474f"/>'
         '</marker></defs>']
    cx_start, cy_start = width / 2, PAD
    end_y = height - 28
    # start / end markers and their dashed edges
    p.append(f'<circle cx="{cx_start:.1f}" cy="{cy_start:.1f}" r="11" fill="#2e7d32"><title>Start</title></circle>')
    p.append(f'<rect x="{cx_start - 10:.1f}" y="{end_y - 10:.1f}" width="20" height="20" fill="#c62828">'
             '<title>End</title></rect>')
    for name, c in pm.start_activities.items():
        if name in placed:
            b = placed[name]
            x2, y2 = b.x + BOX_W / 2, b.y
            p.append(f'<path d="M{cx_start:.1f},{cy_start + 11:.1f} C{cx_start:.1f},{cy_start + 40:.1f} {x2:.1f},'
                     f'{y2 - 40:.1f} {x2:.1f},{y2:.1f}" class="se-edge" marker-end="url(#arr)">'
                     f'<title>start → {escape(name)}: {c:,} cases</title></path>')
    for name, c in pm.end_activities.items():
        if name in placed:
            b = placed[name]
            x1, y1 = b.x + BOX_W / 2, b.y + BOX_H
            p.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 60:.1f} {cx_start:.1f},{end_y - 60:.1f} '
                     f'{cx_start:.1f},{end_y - 10:.1f}" class="se-edge" marker-end="url(#arr)">'
                     f'<title>{escape(name)} → end: {c:,} cases</title></path>')
    for e in sorted(pm.edges, key=lambda e: e.count):
        if e.source not in placed or e.target not in placed:
            continue
        s, t = placed[e.source], placed[e.target]
        if perf:
            share = (e.median_s / max_med) if e.median_s == e.median_s else 0.0
            w, color = 1.2 + 7 * share, _heat(share)
            stroke = "#b71c1c" if share > 0.5 else "#e65100"
            label = fmt_duration(e.median_s)
        else:
            share = e.count / maxc
            w, color, stroke = 1.0 + 8 * share, "#1565c0", "#1565c0"
            label = f"{e.count:,}"
        if e.source == e.target:
            x, y = s.x + BOX_W, s.y + BOX_H / 2
            d = f"M{x:.1f},{y - 10:.1f} C{x + 48:.1f},{y - 34:.1f} {x + 48:.1f},{y + 34:.1f} {x:.1f},{y + 10:.1f}"
            lx, ly, anchor = x + 40, y + 4, "start"
        elif t.layer > s.layer + 1:
            # a forward edge that skips layers: bow out on the left so it does not run under the boxes between
            x1, y1 = s.x, s.y + BOX_H * 0.65
            x2, y2 = t.x, t.y + BOX_H * 0.35
            bend = 40 + 14 * (t.layer - s.layer) + 0.1 * abs(x1 - x2)
            d = f"M{x1:.1f},{y1:.1f} C{x1 - bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            lx, ly, anchor = min(x1, x2) - bend * 0.75 - 4, (y1 + y2) / 2 + 4, "end"
        elif t.layer > s.layer:
            x1, y1 = s.x + BOX_W / 2 + (t.x - s.x) * 0.08, s.y + BOX_H
            x2, y2 = t.x + BOX_W / 2 - (t.x - s.x) * 0.08, t.y
            dy = max(40.0, (y2 - y1) / 2)
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + dy:.1f} {x2:.1f},{y2 - dy:.1f} {x2:.1f},{y2:.1f}"
            lx, ly, anchor = (x1 + x2) / 2 + 6, (y1 + y2) / 2 + 4, "start"
        else:
            # back (or same-layer) edge: bow out on the right so it does not run through the boxes
            x1, y1 = s.x + BOX_W, s.y + BOX_H * 0.35
            x2, y2 = t.x + BOX_W, t.y + BOX_H * 0.65
            bend = 50 + 0.25 * abs(y1 - y2)
            d = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 + bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            lx, ly, anchor = max(x1, x2) + bend * 0.75 + 4, (y1 + y2) / 2 + 4, "start"
        desc = (f"{e.source} to {e.target}: {e.count:,} times in {e.cases:,} cases, median wait "
                f"{fmt_duration(e.median_s)}, mean {fmt_duration(e.mean_s)}")
        p.append(
            f'<a href="{escape(edge_href(e.source, e.target))}" class="edge" aria-label="{escape(desc)}" '
            f'data-source="{escape(e.source)}" data-target="{escape(e.target)}">'
            f'<title>{escape(desc)}</title>'
            f'<path d="{d}" class="edge-hit" stroke-width="14"/>'
            f'<path d="{d}" class="edge-line" stroke="{stroke if perf else color}" stroke-width="{w:.2f}" '
            f'marker-end="url(#arr)"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" class="edge-label">{escape(label)}</text></a>')
    for name, b in placed.items():
        a = acts[name]
        if perf:
            v = (a.sojourn_median_s or 0.0) / max_soj
            fill, sub = _heat(v), f"waited {fmt_duration(a.sojourn_median_s)}"
        else:
            v = a.count / max_act
            shade = int(236 - 120 * v)
            fill, sub = f"rgb({shade},{min(255, shade + 14)},255)", f"{a.count:,}"
        short = name if len(name) <= 24 else name[:22] + "…"
        desc = (f"{name}: {a.count:,} events in {a.cases:,} cases, median wait before it "
                f"{fmt_duration(a.sojourn_median_s)}")
        p.append(
            f'<a href="{escape(activity_href(name))}" class="node" aria-label="{escape(desc)}" '
            f'data-activity="{escape(name)}"><title>{escape(desc)}</title>'
            f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="9" fill="{fill}"/>'
            f'<text x="{b.x + BOX_W / 2:.1f}" y="{b.y + 20:.1f}" text-anchor="middle" class="node-name">'
            f'{escape(short)}</text>'
            f'<text x="{b.x + BOX_W / 2:.1f}" y="{b.y + 37:.1f}" text-anchor="middle" class="node-sub">'
            f'{escape(sub)}</text></a>')
    p.append("</svg>")
    return "".join(p)


def trend_svg(points: Sequence[tuple[str, float | None]], *, label: str, fmt: Callable[[float], str],
              width: int = 720, height: int = 170, bars: bool = True) -> str:
    """A chart over a continuous time axis: one slot per window (empty windows are slots too, drawn as gaps)."""
    n = len(points)
    if n == 0:
        return ""
    vals = [v for _, v in points if v is not None and not (isinstance(v, float) and math.isnan(v))]
    vmax = max(vals, default=0.0) or 1.0
    left, right, top, bottom = 56, 12, 14, 34
    pw, ph = width - left - right, height - top - bottom
    slot = pw / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}: {n} windows from '
             f'{escape(points[0][0])} to {escape(points[-1][0])}">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>',
             f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="tick">{escape(fmt(vmax))}</text>',
             f'<text x="{left - 6}" y="{top + ph}" text-anchor="end" class="tick">0</text>']
    line: list[str] = []
    for i, (lab, v) in enumerate(points):
        x = left + i * slot
        if v is None or (isinstance(v, float) and math.isnan(v)):
            line.append("")
            continue
        h = ph * v / vmax
        tip = f"{lab}: {fmt(v)}"
        if bars:
            parts.append(f'<rect x="{x + slot * 0.12:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, slot * 0.76):.1f}" '
                         f'height="{h:.1f}" class="bar"><title>{escape(tip)}</title></rect>')
        else:
            line.append(f"{x + slot / 2:.1f},{top + ph - h:.1f}")
            parts.append(f'<circle cx="{x + slot / 2:.1f}" cy="{top + ph - h:.1f}" r="2.6" class="dot">'
                         f'<title>{escape(tip)}</title></circle>')
    if not bars:
        segs, cur = [], []
        for pt in line + [""]:
            if pt:
                cur.append(pt)
            elif cur:
                segs.append(cur)
                cur = []
        for seg in segs:
            if len(seg) > 1:
                parts.append(f'<polyline points="{" ".join(seg)}" class="line"/>')
    step = max(1, math.ceil(n / 8))
    for i in range(0, n, step):
        x = left + i * slot + slot / 2
        parts.append(f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle" class="tick">'
                     f'{escape(points[i][0])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(events: Sequence[tuple[str, float]], *, width: int = 720) -> str:
    """One case's events on a time line (seconds since the case started), one row per event."""
    if not events:
        return ""
    total = max(t for _, t in events) or 1.0
    row, left, right = 22, 190, 70
    height = 20 + row * len(events)
    pw = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="case-timeline" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="Case timeline, {len(events)} events over '
             f'{escape(fmt_duration(total))}">']
    prev_x = float(left)
    for i, (name, t) in enumerate(events):
        y = 10 + i * row
        x = left + pw * t / total
        parts.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end" class="tick">'
                     f'{escape(name if len(name) <= 28 else name[:26] + "…")}</text>')
        if i > 0:
            parts.append(f'<rect x="{prev_x:.1f}" y="{y + 4}" width="{max(1.0, x - prev_x):.1f}" height="10" '
                         f'class="wait"><title>{escape(name)}: waited {escape(fmt_duration(t - events[i - 1][1]))}'
                         '</title></rect>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y + 9}" r="5" class="dot"><title>{escape(name)} at +'
                     f'{escape(fmt_duration(t))}</title></circle>')
        parts.append(f'<text x="{x + 9:.1f}" y="{y + 13}" class="tick">+{escape(fmt_duration(t))}</text>')
        prev_x = x
    parts.append("</svg>")
    return "".join(parts)
