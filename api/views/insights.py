"""Insight routes: the latest report written by `deskpilot mine` (KPIs, misrouting, variants, alerts, gaps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam

from api.auth import Principal, require
from api.deps import get_settings
from api.errors import ERROR_RESPONSES
from api.settings import Settings
from core.errors import ModelArtifactError, NotFound

router = APIRouter(prefix="/v1/insights", tags=["insights"], responses=ERROR_RESPONSES)

READERS = ("analyst", "knowledge_manager")
MINE_HINT = "run `deskpilot mine` to write it"


def insight_file(settings: Settings) -> Path:
    """Where `deskpilot mine` writes the latest report."""
    return settings.home / "insights" / "insight.json"


def _load(settings: Settings) -> dict[str, Any]:
    path = insight_file(settings)
    if not path.is_file():
        raise NotFound(f"no insight report at {path}; {MINE_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelArtifactError(f"insight report {path} is not valid JSON: {exc}; {MINE_HINT} again") from exc
    if not isinstance(data, dict):
        raise ModelArtifactError(f"insight report {path} is not a JSON object; {MINE_HINT} again")
    return data


@router.get("")
def latest(
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> dict[str, Any]:
    """The whole latest report."""
    return _load(settings)


@router.get("/live")
async def live(
    request: Request,
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> dict[str, Any]:
    """The report mined from the service's own event store (refreshed on a schedule and by POST .../refresh);
    an empty report until events are stored."""
    from api.live_insight import empty_report

    live_insight = getattr(request.app.state, "live_insight", None)
    return live_insight.report() if live_insight is not None else empty_report()


@router.post("/live/refresh")
def refresh_live(
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> dict[str, Any]:
    """Mine the live event store now (only the events stored since the last refresh are read) and answer what
    the refresh did; the report is then at GET /v1/insights/live."""
    from dataclasses import asdict

    from api.live_insight import LiveInsight

    live_insight = getattr(request.app.state, "live_insight", None)
    if live_insight is None:
        live_insight = request.app.state.live_insight = LiveInsight(request.app.state.engine,
                                                                    request.app.state.settings)
    return asdict(live_insight.refresh(force=True))


@router.get("/sections")
def sections(
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> dict[str, list[str]]:
    """Names of the report's sections (e.g. kpis, misrouting, variants, alerts, gaps)."""
    return {"sections": sorted(_load(settings))}


@router.get("/{section}")
def section(
    section: Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")],
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> Any:
    """One section of the latest report (kpis, misrouting, variants, alerts, gaps, ...)."""
    data = _load(settings)
    key = section.replace("-", "_")
    if key not in data:
        raise NotFound(f"the insight report has no section {section!r}; it has: {', '.join(sorted(data))}")
    return data[key]
