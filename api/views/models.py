"""Model routes: which versions are live (with their metrics) and a hot reload that swaps atomically."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.app import reload_models
from api.auth import Principal, require, set_audit_object
from api.deps import TRAIN_HINT, ModelState, get_model_state, get_settings
from api.errors import ERROR_RESPONSES
from api.settings import Settings
from insight.errors import DeskpilotError

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


class TaskModels(BaseModel):
    """One task in the registry: its live version, all versions and the live version's metrics."""

    task: str
    live: str | None
    versions: list[str]
    created_at: str | None = None
    metrics: dict[str, Any] = {}
    error: str | None = None


class ModelsPublic(BaseModel):
    """What is serving now and what the registry holds."""

    ready: bool
    loaded_at: datetime | None
    serving: dict[str, str]
    detail: str | None
    registry_path: str
    tasks: list[TaskModels]


class ReloadPublic(BaseModel):
    """Outcome of a reload."""

    swapped: bool
    previous: dict[str, str]
    serving: dict[str, str]
    loaded_at: datetime | None


def _registry_tasks(settings: Settings) -> list[TaskModels]:
    try:
        from insight.models.registry import ModelRegistry
    except ImportError:
        return []
    reg = ModelRegistry(settings.registry_path)
    out: list[TaskModels] = []
    for task in reg.tasks():
        try:
            live = reg.live_version(task)
            meta = reg.read_metadata(task, live) if live else None
            out.append(TaskModels(task=task, live=live, versions=reg.list_versions(task),
                                  created_at=meta.created_at if meta else None,
                                  metrics=dict(meta.metrics) if meta else {}))
        except DeskpilotError as exc:  # one broken artifact must not hide the others
            out.append(TaskModels(task=task, live=None, versions=reg.list_versions(task), error=exc.message))
    return out


@router.get("", response_model=ModelsPublic)
def list_models(
    state: Annotated[ModelState, Depends(get_model_state)],
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> ModelsPublic:
    """Live versions being served, and every task's versions and metrics in the registry."""
    return ModelsPublic(
        ready=state.ready, loaded_at=state.loaded_at, serving=state.versions,
        detail=None if state.ready else f"{state.error}; {TRAIN_HINT}", registry_path=str(settings.registry_path),
        tasks=_registry_tasks(settings),
    )


@router.post("/reload", response_model=ReloadPublic)
async def reload(
    request: Request,
    principal: Annotated[Principal, Depends(require())],
) -> ReloadPublic:
    """Load the registry's live versions and swap them in without dropping in-flight requests (admin only)."""
    old, new = await reload_models(request.app)
    set_audit_object(request, ",".join(f"{k}={v}" for k, v in sorted(new.versions.items())) or "none")
    if not new.ready:
        assert new.error is not None
        # Keep serving what was loaded; say why the new load failed (503 not trained / 500 broken artifact).
        new.error.message = f"{new.error.message} (still serving: {old.versions or 'nothing'})"
        raise new.error
    return ReloadPublic(swapped=True, previous=old.versions, serving=new.versions, loaded_at=new.loaded_at)
