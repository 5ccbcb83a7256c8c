"""Liveness, readiness and Prometheus metrics (no API key needed: probes and scrapers run without one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import TRAIN_HINT, ModelState, get_metrics
from api.errors import error_response
from routing.models import as_utc

router = APIRouter(tags=["health"])


# Probes run outside the worker thread pool that requests share: /healthz and /metrics on the event loop, the
# readiness query on threads of its own, so a saturated pool never makes a healthy service look dead.
_PROBE_THREADS = anyio.CapacityLimiter(2)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _database_check(engine: Any) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # any driver error means not ready
        return f"failed: {type(exc).__name__}: {exc}"


def _kb_fingerprint(engine: Any, index: Any) -> tuple[Any, ...]:
    """Changes whenever the index or the articles in SQL change (the cached verdict is reused until then)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT count(*), max(updated_at), sum(version), "
                                "sum(CASE WHEN index_stale THEN 1 ELSE 0 END) FROM kb_article")).first()
    return (id(index), index.revision, *(tuple(row) if row is not None else ()))


def _kb_check(app: Any) -> str:
    """'ok', or how the index and SQL disagree: differences no pending write explains, writes left stale for longer
    than the grace period, or another embedding model."""
    from sqlmodel import Session

    from knowledge_hub.consistency import check
    from knowledge_hub.models import Article

    index, engine = app.state.kb_index, app.state.engine
    try:
        fingerprint = _kb_fingerprint(engine, index)
        cached = getattr(app.state, "kb_ready_cache", None)
        if cached is not None and cached[0] == fingerprint:
            return str(cached[1])
        with Session(engine) as session:
            report = check(session=session, index=index)
            grace = float(app.state.settings.kb_stale_grace_seconds)
            now = datetime.now(UTC)
            late = sorted(a.id for aid in report.flagged if (a := session.get(Article, aid)) is not None
                          and a.id is not None and (now - (as_utc(a.updated_at) or now)).total_seconds() > grace)
    except Exception as exc:  # a failing read is itself "not ready"
        return f"check failed: {type(exc).__name__}: {exc}"
    hint = "; run `deskpilot kb check --repair`"
    if report.model_mismatch:
        verdict = f"embedded with {report.stored_model}, current model {report.current_model}; run `deskpilot kb reindex`"
    elif report.unexplained:
        verdict = f"index and SQL disagree ({report.summary()}){hint}"
    elif late:
        verdict = f"index writes pending for more than {grace:g} s for article(s) {late[:10]}{hint}"
    else:
        verdict = "ok"
    if not report.flagged:  # pending writes make the verdict depend on time: checked again next time
        app.state.kb_ready_cache = (fingerprint, verdict)
    return verdict


@router.get("/readyz", responses={503: {"description": "not ready; detail says which check failed"}})
async def readyz(request: Request) -> Any:
    """Ready: the database answers, a trained model is loaded, and an open KB index agrees with SQL (an index that
    could not be opened is reported, not required)."""
    checks: dict[str, str] = {}
    checks["database"] = await anyio.to_thread.run_sync(_database_check, request.app.state.engine,
                                                        limiter=_PROBE_THREADS)
    state: ModelState = request.app.state.models
    checks["models"] = "ok" if state.ready else f"not loaded ({state.error}); {TRAIN_HINT}"
    if request.app.state.kb_index is not None and checks["database"] == "ok":
        # An index that disagrees with SQL serves wrong articles: not ready. One that is absent is reported only.
        checks["kb_index"] = await anyio.to_thread.run_sync(_kb_check, request.app, limiter=_PROBE_THREADS)
    else:
        checks["kb_index"] = f"unavailable ({request.app.state.kb_index_error or 'not opened'})"
    failed = [k for k in ("database", "models") if checks[k] != "ok"]
    if request.app.state.kb_index is not None and checks["kb_index"] != "ok":
        failed.append("kb_index")
    if failed:
        code = "model_not_ready" if failed == ["models"] else "unavailable"
        return error_response(503, "; ".join(f"{k}: {checks[k]}" for k in failed), code)
    return JSONResponse({"status": "ready", "checks": checks, "versions": state.versions})


@router.get("/metrics", response_class=Response)
async def metrics(m: Any = Depends(get_metrics)) -> Response:
    """Prometheus exposition."""
    body, content_type = m.render()
    return Response(content=body, media_type=content_type)
