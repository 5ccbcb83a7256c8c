"""Analyst pages: mined runs, upload with a column-mapping preview, mining progress, the interactive process map,
the variant explorer, drill-down to cases and a case timeline, findings (misrouting, bottlenecks, conformance,
alerts) and comparisons. Handlers parse, call `api.insight_runs` (which calls the miners) and render."""

from __future__ import annotations

import threading
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, File, Request, Response, UploadFile
from markupsafe import Markup

from api.auth import Principal, set_audit_object
from api.insight_runs import (
    CANONICAL_COLUMNS,
    CaseFilter,
    RunData,
    RunManager,
    RunStore,
    compare,
    live_store_reader,
    path_filter,
    preview_upload,
    upload_reader,
)
from api.settings import Settings
from api.views.insights import READERS
from api.web.analyst_map import process_map_svg, timeline_svg, trend_svg
from api.web.core import NavItem, redirect, render, web_require, web_router
from core.errors import InvalidInput
from insight.mining.report import fmt_duration

router = web_router(prefix="/analyst")
WRITERS = ("analyst",)  # upload and mine; reading is the insight API's READERS
NAV = [
    NavItem("Runs", "/analyst", READERS, "Analyst"),
    NavItem("Compare", "/analyst/compare", READERS, "Analyst"),
]
HOME = {"analyst": "/analyst"}
Reader = Annotated[Principal, Depends(web_require(*READERS))]
Writer = Annotated[Principal, Depends(web_require(*WRITERS))]
SORTS = {"excess": "excess_cost", "cost": "cost", "cases": "cases", "median": "median_s", "p90": "p90_s",
         "events": "events_per_case", "handoffs": "handoffs_per_case", "rework": "rework_per_case"}
PAGE = 50


_CREATE = threading.Lock()  # two first requests at once must not make two managers (one would lose its jobs)


def manager(request: Request) -> RunManager:
    """The app's run manager (created on first use from the settings' home)."""
    state = request.app.state
    m = getattr(state, "insight_runs", None)
    if m is None:
        with _CREATE:
            m = getattr(state, "insight_runs", None)
            if m is None:
                settings: Settings = state.settings
                m = RunManager(RunStore(settings.home / "analyst"))
                state.insight_runs = m
    return m


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        v = int(str(raw))
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {str(raw)[:20]!r}", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}", field=name)
    return v


def _qs(f: CaseFilter, **extra: Any) -> str:
    pairs = f.query() + [(k, str(v)) for k, v in extra.items() if v is not None and v != ""]
    return urlencode(pairs)


def _ctx(run: RunData, f: CaseFilter, request: Request) -> dict[str, Any]:
    """What every filtered page shows: the run, the filter, its options and KPIs."""
    return {"run": run, "meta": run.meta, "f": f, "opts": run.options(), "k": run.kpis(f), "qs": _qs(f),
            "dur": fmt_duration, "base": f"/analyst/runs/{run.meta.id}"}


# ---------------------------------------------------------------------------------------------- runs, upload


@router.get("")
def runs_page(request: Request, principal: Reader) -> Response:
    """Mined runs, the upload form and live-store mining."""
    m = manager(request)
    metas = [m.status(r.id) for r in m.store.runs()]
    return render(request, "analyst/runs.html", {"runs": metas, "can_write": principal.allowed(WRITERS)},
                  title="Analyst: runs")


@router.post("/upload")
async def upload(request: Request, principal: Writer, file: Annotated[UploadFile, File()]) -> Response:
    """Store an uploaded log and show its preview."""
    data = await file.read()
    up = manager(request).store.save_upload(file.filename or "log.csv", data)
    set_audit_object(request, f"upload:{up.id}")
    return redirect(request, f"/analyst/uploads/{up.id}")


def _mapping_from(params: Any) -> dict[str, str]:
    out = {}
    for canon in CANONICAL_COLUMNS:
        v = params.get(f"map_{canon}")
        if v:
            out[canon] = str(v)[:200]
    return out


@router.get("/uploads/{upload_id}")
def upload_preview(request: Request, upload_id: str, principal: Writer) -> Response:
    """The upload read with the chosen (or detected) mapping: columns, sample rows and the data-quality table."""
    up = manager(request).store.upload(upload_id)
    mapping = _mapping_from(request.query_params)
    dayfirst = {"yes": True, "no": False}.get(request.query_params.get("dayfirst", ""))
    prev = preview_upload(up, mapping=mapping or None, dayfirst=dayfirst)
    return render(request, "analyst/preview.html", {"p": prev, "canonical": CANONICAL_COLUMNS,
                                                     "dayfirst": request.query_params.get("dayfirst", "")},
                  title=f"Preview {up.name}")


@router.post("/uploads/{upload_id}/mine")
async def upload_mine(request: Request, upload_id: str, principal: Writer) -> Response:
    """Start mining the upload with the mapping from the form (a background job); go to its progress page."""
    m = manager(request)
    up = m.store.upload(upload_id)
    form = await request.form()
    mapping = _mapping_from(form)
    dayfirst = {"yes": True, "no": False}.get(str(form.get("dayfirst", "")))
    settings: Settings = request.app.state.settings
    meta = m.store.new_run(name=str(form.get("name") or up.name)[:120], source=f"upload {up.name}",
                           created_by=principal.name, mapping=mapping)
    m.start(meta, upload_reader(up, mapping, pseudonym_key=settings.pseudonym_key.get_secret_value() or None,
                                dayfirst=dayfirst))
    set_audit_object(request, f"run:{meta.id}")
    return redirect(request, f"/analyst/runs/{meta.id}")


@router.post("/live")
def mine_live(request: Request, principal: Writer) -> Response:
    """Mine the service's live event store now (a background job)."""
    m = manager(request)
    settings: Settings = request.app.state.settings
    meta = m.store.new_run(name="live event store", source="live event store", created_by=principal.name)
    m.start(meta, live_store_reader(request.app.state.engine,
                                    pseudonym_key=settings.pseudonym_key.get_secret_value() or None))
    set_audit_object(request, f"run:{meta.id}")
    return redirect(request, f"/analyst/runs/{meta.id}")


@router.get("/runs/{run_id}/progress")
def progress(request: Request, run_id: str, principal: Reader) -> Response:
    """The job's progress (polled by htmx); when mining is done the browser goes to the run."""
    meta = manager(request).status(run_id)
    resp = render(request, "analyst/_progress.html", {"meta": meta})
    if meta.status == "done" and request.headers.get("hx-request"):
        resp.headers["HX-Redirect"] = f"/analyst/runs/{run_id}"
    return resp


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str, principal: Reader) -> Response:
    """A run: progress while mining, then its overview (headlines, KPIs over time, data quality)."""
    m = manager(request)
    meta = m.status(run_id)
    if meta.status != "done":
        return render(request, "analyst/progress.html", {"meta": meta}, title=f"Mining {meta.name}")
    run = m.data(run_id)
    f = CaseFilter.parse(request.query_params)
    ctx = _ctx(run, f, request)
    window = request.query_params.get("window", "week")
    points = run.trend(f, window)
    ctx.update(
        window=window,
        trend_cases=Markup(trend_svg([(p.start.isoformat(), float(p.cases)) for p in points],
                                     label=f"Cases started per {window}", fmt=lambda v: f"{v:,.0f}")),
        trend_time=Markup(trend_svg([(p.start.isoformat(), p.throughput_median_s) for p in points],
                                    label=f"Median case time per {window}", fmt=fmt_duration, bars=False)),
        points=points, empty_windows=sum(1 for p in points if p.cases == 0),
    )
    return render(request, "analyst/run.html", ctx, title=f"Run {meta.name}")


# ------------------------------------------------------------------------------------------- map, variants


@router.get("/runs/{run_id}/map")
def map_page(request: Request, run_id: str, principal: Reader) -> Response:
    """The process map with the frequency / performance view, activity and path sliders and the filters."""
    run = manager(request).data(run_id)
    f = CaseFilter.parse(request.query_params)
    view = request.query_params.get("view", "frequency")
    if view not in ("frequency", "performance"):
        raise InvalidInput("view must be 'frequency' or 'performance'", field="view")
    act = _int(request, "activities", 100, 1, 100)
    paths = _int(request, "paths", 100, 0, 100)
    ctx = _ctx(run, f, request)
    n = ctx["k"].cases
    svg = ""
    pm = None
    if n:
        full = run.process_map(f, activity_coverage=act / 100)
        pm = path_filter(full, paths)
        base = f"/analyst/runs/{run_id}/cases"
        svg = process_map_svg(
            pm, view=view,
            edge_href=lambda a, b: f"{base}?{_qs(f, kind='edge', a=a, b=b, sort='detail')}",
            activity_href=lambda a: f"{base}?{_qs(f, kind='activity', a=a)}")
    ctx.update(view=view, activities=act, paths=paths, svg=Markup(svg), pm=pm,
               state_qs=_qs(f, view=view, activities=act, paths=paths))
    fragment = request.headers.get("hx-target") == "map-area"
    ctx["fragment"] = fragment
    template = "analyst/_map_area.html" if fragment else "analyst/map.html"
    return render(request, template, ctx, title=f"Process map · {run.meta.name}")


@router.get("/runs/{run_id}/variants")
def variants_page(request: Request, run_id: str, principal: Reader) -> Response:
    """Every variant of the filtered cases, sortable by excess cost (the default), cost, frequency, time, events,
    handoffs and rework."""
    run = manager(request).data(run_id)
    f = CaseFilter.parse(request.query_params)
    sort = request.query_params.get("sort", "excess")
    if sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be 'asc' or 'desc'", field="order")
    page = _int(request, "page", 1, 1, 100_000)
    vt = run.variant_table(f)
    if sort == "excess":
        # The happy path (the reference) first, then the paths with enough cases to rank by their excess cost over
        # it, then the rest: a one-case outlier never tops the list.
        sign = -1.0 if order == "desc" else 1.0
        ms = vt.cost_model.min_support
        rows = sorted(vt.variants, key=lambda v: (0 if v.happy_path else 1 if v.finished_cases >= ms else 2,
                                                  sign * v.excess_cost, v.rank))
    else:
        rows = sorted(vt.variants, key=lambda v: (getattr(v, SORTS[sort]), -v.rank), reverse=order == "desc")
    start = (page - 1) * PAGE
    ctx = _ctx(run, f, request)
    ctx.update(vt=vt, rows=rows[start:start + PAGE], sort=sort, order=order, page=page,
               pages=max(1, -(-len(rows) // PAGE)), total=len(rows), start=start)
    template = "analyst/_variants_table.html" if request.headers.get("hx-target") == "variants" else \
        "analyst/variants.html"
    return render(request, template, ctx, title=f"Variants · {run.meta.name}")


# ---------------------------------------------------------------------------------------- drill-down


@router.get("/runs/{run_id}/cases")
def cases_page(request: Request, run_id: str, principal: Reader) -> Response:
    """The cases behind a map edge, an activity, a variant, a misrouting pair, a team or a finding."""
    run = manager(request).data(run_id)
    f = CaseFilter.parse(request.query_params)
    q = request.query_params
    kind = q.get("kind", "all")
    a, b = q.get("a", "")[:300], q.get("b", "")[:300]
    sort = q.get("sort", "duration")
    if sort not in ("duration", "start", "events", "detail"):
        raise InvalidInput("sort must be duration, start, events or detail", field="sort")
    offset = _int(request, "offset", 0, 0, 10_000_000)
    page = run.cases_for(f, kind=kind, a=a, b=b, offset=offset, limit=PAGE, sort=sort)
    ctx = _ctx(run, f, request)
    ctx.update(page=page, kind=kind, a=a, b=b, sort=sort,
               nav_qs=lambda **kw: _qs(f, kind=kind, a=a, b=b, **{"sort": sort, **kw}))
    return render(request, "analyst/cases.html", ctx, title=f"Cases · {page.title}")


@router.get("/runs/{run_id}/cases/{case_id}")
def case_page(request: Request, run_id: str, case_id: str, principal: Reader) -> Response:
    """One case's timeline: every event with who, which team, channel and the wait before it."""
    run = manager(request).data(run_id)
    tl = run.timeline(case_id[:300])
    svg = timeline_svg([(e.activity, e.since_start_s) for e in tl.events])
    return render(request, "analyst/case.html", {"run": run, "meta": run.meta, "tl": tl, "svg": Markup(svg),
                                                  "dur": fmt_duration, "back": request.headers.get("referer")},
                  title=f"Case {case_id}")


@router.get("/runs/{run_id}/findings")
def findings_page(request: Request, run_id: str, principal: Reader) -> Response:
    """Misrouting, bottlenecks, conformance and alerts of the whole run, each linked to its cases."""
    run = manager(request).data(run_id)
    r = run.report
    m = r.get("misrouting") or {}
    return render(request, "analyst/findings.html", {
        "run": run, "meta": run.meta, "r": r, "m": m, "mis": _avoidable(m), "b": r.get("bottlenecks") or {},
        "c": r.get("conformance"), "al": r.get("alerts") or {}, "dur": fmt_duration,
        "base": f"/analyst/runs/{run_id}", "enc": urlencode,
    }, title=f"Findings · {run.meta.name}")


def _avoidable(m: dict[str, Any]) -> dict[str, Any]:
    """What the findings lead with: avoidable transfers by kind, and the first teams they cost most hours."""
    kinds = [t for t in m.get("taxonomy") or [] if isinstance(t, dict)]
    avoid = [t for t in kinds if t.get("avoidable") and t.get("cases")]
    n = m.get("n_cases") or 0
    cases = sum(int(t["cases"]) for t in avoid)
    teams = [t for t in m.get("teams") or [] if t.get("avoidable_out")]
    teams.sort(key=lambda t: (-(t.get("avoidable_hours") or 0.0), -t["avoidable_out"], str(t.get("team"))))
    return {
        "taxonomy": kinds,
        "avoidable_cases": cases,
        "avoidable_share": cases / n if n else 0.0,
        "avoidable_hours": float(sum(t.get("extra_hours_total") or 0.0 for t in avoid)),
        "teams": teams[:12],
    }


# ------------------------------------------------------------------------------------------------ compare


def _side(request: Request, m: RunManager, prefix: str, default_run: str | None) -> tuple[RunData, CaseFilter, str]:
    q = request.query_params
    run_id = q.get(f"{prefix}run") or default_run
    if not run_id:
        raise InvalidInput(f"choose a run for side {prefix.upper()}", field=f"{prefix}run")
    run = m.data(run_id)
    sub = {k[len(prefix) + 1:]: v for k, v in q.multi_items() if k.startswith(prefix + "_")}
    f = CaseFilter.parse(_Multi(sub, q, prefix))
    label = run.meta.name + (f" ({f.start or '…'} to {f.end or '…'})" if f.start or f.end else "")
    return run, f, label


class _Multi:
    """Query parameters of one comparison side (`a_from`, `a_team` ...) seen without the prefix."""

    def __init__(self, first: dict[str, str], q: Any, prefix: str) -> None:
        self.first, self.q, self.prefix = first, q, prefix

    def get(self, name: str, default: Any = None) -> Any:
        return self.first.get(name, default)

    def getlist(self, name: str) -> list[str]:
        return list(self.q.getlist(f"{self.prefix}_{name}"))


@router.get("/compare")
def compare_page(request: Request, principal: Reader) -> Response:
    """Two runs, or two periods of one run, side by side: KPIs, paths and variants that changed most."""
    m = manager(request)
    done = [r for r in m.store.runs() if m.status(r.id).status == "done"]
    ctx: dict[str, Any] = {"runs": done, "q": request.query_params, "dur": fmt_duration, "cmp": None}
    if done and (request.query_params.get("arun") or request.query_params.get("brun")):
        a = _side(request, m, "a", done[0].id)
        b = _side(request, m, "b", done[0].id)
        ctx["cmp"] = compare(a, b)
    return render(request, "analyst/compare.html", ctx, title="Compare")


def _date(d: date | None) -> str:
    return d.isoformat() if d else ""
