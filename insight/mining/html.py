"""Self-contained HTML of an InsightReport: inline CSS, inline SVG process map, no network, no scripts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from insight.mining.report import InsightReport, costly_intent, fmt_duration


def _pct(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * float(x):.{nd}f}%"


def _num(x: Any, nd: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{float(x):,.{nd}f}"


def _hours(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt_duration(float(x) * 3600.0)


def _bar(x: Any, scale: float = 1.0) -> Markup:
    """A tiny inline bar (share of `scale`)."""
    try:
        v = max(0.0, min(1.0, float(x) / scale)) if scale else 0.0
    except (TypeError, ValueError):
        v = 0.0
    return Markup(f'<span class="bar"><span style="width:{100 * v:.1f}%"></span></span>')


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("insight.mining", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dur=fmt_duration, pct=_pct, num=_num, hours=_hours, bar=_bar)
    return env


def _trend_svg(values: list[float], labels: list[str], *, width: int = 560, height: int = 120) -> Markup:
    """A small line chart of weekly values (inline SVG)."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if len(pts) < 2:
        return Markup("")
    vmax = max(v for _, v in pts) or 1.0
    n = len(values)
    x = lambda i: 30 + i * (width - 40) / max(n - 1, 1)  # noqa: E731 - tiny local scale
    y = lambda v: height - 20 - (v / vmax) * (height - 35)  # noqa: E731
    path = " ".join(f"{'M' if k == 0 else 'L'}{x(i):.1f},{y(v):.1f}" for k, (i, v) in enumerate(pts))
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5"><title>{labels[i]}: {v:,.0f}</title></circle>'
                   for i, v in pts)
    first, last = labels[0], labels[-1]
    return Markup(
        f'<svg class="trend" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#ccd"/>'
        f'<path d="{path}" fill="none" stroke="#2f6fdd" stroke-width="2"/>{dots}'
        f'<text x="30" y="{height - 5}" font-size="10" fill="#667">{first}</text>'
        f'<text x="{width - 10}" y="{height - 5}" font-size="10" fill="#667" text-anchor="end">{last}</text>'
        f'<text x="30" y="12" font-size="10" fill="#667">max {vmax:,.0f}</text></svg>'
    )


def _fixed_size_arrows(svg: str) -> str:
    """Arrow heads in user units, so thick (frequent) edges do not get giant heads in the browser."""
    if "<marker" in svg and "markerUnits" not in svg:
        svg = svg.replace("<marker ", '<marker markerUnits="userSpaceOnUse" ', 1)
        svg = svg.replace('markerWidth="7" markerHeight="7"', 'markerWidth="11" markerHeight="11"', 1)
    return svg


def render_html(report: InsightReport) -> str:
    """The report as one self-contained HTML page."""
    trend = report.kpis.trend
    trend_labels = [str(r.value)[:10] for r in trend]
    trend_cases = _trend_svg([float(r.cases) for r in trend], trend_labels)
    # windows the extraction biases (mostly open cases, or only older cases) are left off the time line
    trend_time = _trend_svg([math.nan if r.biased else r.throughput_median_s / 3600.0 for r in trend], trend_labels)
    # Paths ranked by excess cost over the happy path, among those with enough finished cases (as the headline).
    variants = report.variants.costly(10)
    max_excess = max((v.excess_cost for v in variants), default=1.0) or 1.0
    m = report.misrouting
    teams_by_avoidable = sorted((t for t in m.teams if t.avoidable_out),
                                key=lambda t: (-t.avoidable_hours, -t.avoidable_out, t.team))[:12]
    ctx = {
        "r": report,
        "vt": report.variants,
        "happy": report.variants.happy,
        "variants": variants,
        "max_excess": max_excess,
        "total_cost": report.variants.total_cost or 1.0,
        "m": m,
        "teams_by_avoidable": teams_by_avoidable,
        "max_team_avoidable": max((t.avoidable_hours for t in teams_by_avoidable), default=1.0) or 1.0,
        "pairs": m.pairs[:12],
        "pp_pairs": m.ping_pong_pairs[:10],
        "b": report.bottlenecks,
        "k": report.kpis,
        "dims": {name: rows[:10] for name, rows in report.kpis.by_dimension.items()},
        "c": report.conformance,
        "a": report.alerts,
        "alerts": report.alerts.alerts[:25],
        "trend_cases": trend_cases,
        "trend_time": trend_time,
        "svg": Markup(_fixed_size_arrows(report.process_map_svg)),
        "costly": costly_intent(report),
        "handovers": report.handovers.edges[:12] if report.handovers else [],
    }
    return _env().get_template("report.html.j2").render(**ctx)


def write_html(report: InsightReport, path: str | Path) -> Path:
    """Write `render_html(report)` to a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report), encoding="utf-8")
    return p
