"""Liveness, readiness and Prometheus metrics (no API key needed: probes and scrapers run without one)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import TRAIN_HINT, ModelState, get_metrics
from api.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready; detail says which check failed"}})
def readyz(request: Request) -> Any:
    """Ready to route: the database answers and a trained model is loaded (the KB index is reported, not required)."""
    checks: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"failed: {type(exc).__name__}: {exc}"
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
def metrics(m: Any = Depends(get_metrics)) -> Response:
    """Prometheus exposition."""
    body, content_type = m.render()
    return Response(content=body, media_type=content_type)
