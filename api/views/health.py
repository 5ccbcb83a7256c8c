"""Liveness, readiness and Prometheus metrics (no API key needed: probes and scrapers run without one)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import TRAIN_HINT, ModelState, get_metrics
from api.errors import error_response

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


@router.get("/readyz", responses={503: {"description": "not ready; detail says which check failed"}})
async def readyz(request: Request) -> Any:
    """Ready to route: the database answers and a trained model is loaded (the KB index is reported, not required)."""
    checks: dict[str, str] = {}
    checks["database"] = await anyio.to_thread.run_sync(_database_check, request.app.state.engine,
                                                        limiter=_PROBE_THREADS)
    state: ModelState = request.app.state.models
    checks["models"] = "ok" if state.ready else f"not loaded ({state.error}); {TRAIN_HINT}"
    checks["kb_index"] = "ok" if request.app.state.kb_index is not None else (
        f"unavailable ({request.app.state.kb_index_error})"
    )
    failed = [k for k in ("database", "models") if checks[k] != "ok"]
    if failed:
        code = "model_not_ready" if failed == ["models"] else "unavailable"
        return error_response(503, "; ".join(f"{k}: {checks[k]}" for k in failed), code)
    return JSONResponse({"status": "ready", "checks": checks, "versions": state.versions})


@router.get("/metrics", response_class=Response)
async def metrics(m: Any = Depends(get_metrics)) -> Response:
    """Prometheus exposition."""
    body, content_type = m.render()
    return Response(content=body, media_type=content_type)
