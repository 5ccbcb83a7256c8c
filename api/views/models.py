"""Model routes: which versions are live (with their metrics), a hot reload that swaps atomically, and retraining
from the service's own data (live event log, ticket texts, agents' corrections) as a background job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.app import reload_models
from api.auth import Principal, require, set_audit_object
from api.deps import TRAIN_HINT, ModelState, get_model_state, get_settings
from api.errors import ERROR_RESPONSES
from api.retrain import RETRAIN_TASKS, RetrainJob, RetrainManager, RetrainOptions, run_job
from api.settings import Settings
from insight.errors import DeskpilotError

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)

RetrainTask = Literal["intent", "router", "next_activity", "remaining_time", "memory", "step_outcomes"]


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
    step_outcomes: str | None = None  # why assist ranks actions without the mined step outcomes (None when loaded)


class RetrainRequest(BaseModel):
    """What to retrain (default: every model) and how."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[RetrainTask] = Field(
        default_factory=lambda: list(get_args(RetrainTask)), min_length=1, max_length=len(RETRAIN_TASKS),
        description="Models to retrain; the others keep their live version.")
    use_embeddings: bool = Field(default=True, description="Intent model and ticket memory with the embedding model "
                                 "(false: TF-IDF intent model only, no memory; much faster).")
    evaluate_only: bool = Field(default=False, description="Train and report test metrics; save and swap nothing.")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value


class RetrainJobPublic(BaseModel):
    """A retrain job: its status and stage, the data it read, the labels it used, what it trained and swapped in."""

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    stage: str
    requested_by: str | None
    tasks: list[str]
    use_embeddings: bool
    evaluate_only: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    data: dict[str, int] = Field(description="Counts of what was read: live tickets / events / cases, history, "
                                 "intent labels (from agents' corrections and history), team corrections.")
    labels: dict[str, Any] = Field(description="Intent label counts; team corrections applied to unresolved cases, "
                                   "agreeing with / overruled by the team that resolved the case, or unknown.")
    models: list[dict[str, Any]] = Field(description="Each trained model: task, version, test metrics.")
    skipped: dict[str, str]
    failed_tasks: dict[str, str]
    swapped: bool
    previous: dict[str, str]
    serving: dict[str, str]
    error: str | None

    @classmethod
    def of(cls, job: RetrainJob) -> RetrainJobPublic:
        """Build from a job."""
        o = job.options
        return cls(job_id=job.id, status=job.status, stage=job.stage, requested_by=job.requested_by,
                   tasks=list(o.tasks), use_embeddings=o.use_embeddings, evaluate_only=o.evaluate_only,
                   created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, data=job.data,
                   labels=job.labels, models=job.models, skipped=job.skipped, failed_tasks=job.failed_tasks,
                   swapped=job.swapped, previous=job.previous, serving=job.serving, error=job.error)


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
        tasks=_registry_tasks(settings), step_outcomes=state.outcomes_error,
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


@router.post("/retrain", response_model=RetrainJobPublic, status_code=202, responses={
    202: {"description": "job started; poll the Location header"}, 409: {"description": "a job is already running"}})
async def retrain(
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(require())],
    body: RetrainRequest | None = None,
) -> RetrainJobPublic:
    """Retrain from the service's own data in the background and hot-swap the result in (admin only).

    The job reads the live event log, the ticket texts and the agents' corrections from the database (plus
    `retrain_history_log` / `retrain_history_tickets` when configured): intent labels are agents' `corrected_intent`
    (never the model's own predictions); agents' `corrected_team` labels the router's cases that are not resolved yet.
    It trains in a separate process, then swaps the new live versions in like `POST /v1/models/reload` (requests in
    flight finish on the old models). One job at a time: 409 while one is queued or running. Poll
    `GET /v1/models/retrain/{job_id}`; the start and the swap are both written to the audit log.
    """
    opts = body or RetrainRequest()
    manager: RetrainManager = request.app.state.retrain
    job = manager.create(options=RetrainOptions(tasks=tuple(opts.tasks), use_embeddings=opts.use_embeddings,
                                                evaluate_only=opts.evaluate_only), requested_by=principal.name)
    request.app.state.task_group.start_soon(run_job, request.app, job, reload_models)
    set_audit_object(request, job.id)
    response.headers["Location"] = f"/v1/models/retrain/{job.id}"
    return RetrainJobPublic.of(job)


@router.get("/retrain", response_model=list[RetrainJobPublic])
async def list_retrain_jobs(
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> list[RetrainJobPublic]:
    """Recent retrain jobs of this server process, newest first."""
    manager: RetrainManager = request.app.state.retrain
    return [RetrainJobPublic.of(j) for j in reversed(manager.jobs.values())]


@router.get("/retrain/{job_id}", response_model=RetrainJobPublic)
async def get_retrain_job(
    job_id: Annotated[str, PathParam(min_length=1, max_length=64)],
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> RetrainJobPublic:
    """One retrain job: status (queued, running, succeeded, failed), stage, data read, models trained, versions."""
    manager: RetrainManager = request.app.state.retrain
    return RetrainJobPublic.of(manager.get(job_id))
