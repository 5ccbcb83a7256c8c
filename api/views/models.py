"""Model routes: which versions are live (with their metrics), a hot reload that swaps atomically, retraining from
the service's own data as a background job gated by a champion / challenger comparison, every task's version
history with rollback and an admin's forced promotion, and the labels feedback may name."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.app import reload_models
from api.auth import Principal, require, set_audit_object
from api.deps import TRAIN_HINT, ModelState, get_model_state, get_settings
from api.errors import ERROR_RESPONSES
from api.retrain import (
    RETRAIN_TASKS,
    ModelLabel,
    RetrainJob,
    RetrainManager,
    RetrainOptions,
    known_labels,
    run_job,
)
from api.settings import Settings
from core.errors import Conflict, DeskpilotError, NotFound
from core.jsonbody import JsonBody
from routing.models import strip_text

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)

RetrainTask = Literal["intent", "router", "misroute", "next_activity", "remaining_time", "memory", "step_outcomes"]


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


class RetrainRequest(JsonBody):
    """What to retrain (default: every model) and how."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[RetrainTask] = Field(
        default_factory=lambda: list(get_args(RetrainTask)), min_length=1, max_length=len(RETRAIN_TASKS),
        description="Models to retrain; the others keep their live version.", json_schema_extra={"uniqueItems": True})
    use_embeddings: bool = Field(default=True, strict=True, description="Intent model and ticket memory with the embedding model "
                                 "(false: TF-IDF intent model only, no memory; much faster).")
    evaluate_only: bool = Field(default=False, strict=True, description="Train, gate and report; save and swap nothing.")
    force: bool = Field(default=False, strict=True, description="Promote the challengers even when the gate rejects them (an "
                        "admin's explicit choice; the job, the registry history and the audit log say so).")
    reason: str | None = Field(default=None, max_length=500, description="Why (kept in the registry history).")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value


class RetrainJobPublic(BaseModel):
    """A retrain job: its status and stage, the data it read, the labels it used, what it trained and swapped in."""

    job_id: str
    status: Literal["queued", "running", "succeeded", "rejected", "failed"]
    stage: str
    requested_by: str | None
    tasks: list[str]
    use_embeddings: bool
    evaluate_only: bool
    force: bool
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    data: dict[str, Any] = Field(description="Counts of what was read: live tickets / events / cases, history (and "
                                 "where it came from), intent labels (agents' corrections and history), team corrections.")
    labels: dict[str, Any] = Field(description="Intent label counts; team corrections applied to unresolved cases, "
                                   "agreeing with / overruled by the team that resolved the case, or unknown.")
    models: list[dict[str, Any]] = Field(description="Each trained model: task, version, test metrics.")
    skipped: dict[str, str]
    failed_tasks: dict[str, str]
    gate: dict[str, Any] = Field(description="Champion / challenger comparison: decision, reason, rule, cut-off, and "
                                 "per task the side-by-side gate metrics (n, live, challenger, difference, lower "
                                 "bound, verdict).")
    promoted: dict[str, str] = Field(description="Challenger versions made live by this job.")
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
                   force=o.force, reason=o.reason, created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, data=job.data,
                   labels=job.labels, models=job.models, skipped=job.skipped, failed_tasks=job.failed_tasks,
                   gate=job.gate, promoted=job.promoted, swapped=job.swapped, previous=job.previous, serving=job.serving, error=job.error)


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
    """Retrain from the service's own data in the background; promote only what passes the gate (admin only).

    The job reads the live event log, the ticket texts and the agents' corrections from the database, plus the
    history the live models learned from (stored in the registry by `deskpilot train`, or `retrain_history_log` /
    `retrain_history_tickets`). Intent labels are agents' `corrected_intent` (never the model's own predictions);
    `corrected_team` labels cases not resolved yet. The newest cases the live models never trained on are held out;
    the challengers learn from everything older, and each gated challenger (router: team accuracy and accuracy on
    reassigned tickets; intent: in-scope accuracy and out-of-scope recall; next activity: accuracy; plus the golden
    set `retrain_golden_tickets`) is scored side by side with the live model on the held-out cases. It is promoted
    only when it is not worse than the live model beyond `retrain_gate_tolerance` at a one-sided 95 % paired bound,
    on at least `retrain_gate_min_cases` cases; otherwise the job ends `rejected` with the numbers in `gate`.
    `force=true` promotes anyway (audited). Promoted versions are swapped in here and picked up by every other
    worker from the registry within seconds. One job at a time across workers: 409 while one is queued or running.
    """
    opts = body or RetrainRequest()
    manager: RetrainManager = request.app.state.retrain
    options = RetrainOptions(tasks=tuple(opts.tasks), use_embeddings=opts.use_embeddings,
                             evaluate_only=opts.evaluate_only, force=opts.force, reason=opts.reason)
    job = await anyio.to_thread.run_sync(lambda: manager.create(options=options, requested_by=principal.name))
    request.app.state.task_group.start_soon(run_job, request.app, job, reload_models)
    set_audit_object(request, f"{job.id}{':force' if opts.force else ''}")
    response.headers["Location"] = f"/v1/models/retrain/{job.id}"
    return RetrainJobPublic.of(job)


@router.get("/retrain", response_model=list[RetrainJobPublic])
async def list_retrain_jobs(
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> list[RetrainJobPublic]:
    """Recent retrain jobs (every worker's), newest first."""
    manager: RetrainManager = request.app.state.retrain
    jobs = await anyio.to_thread.run_sync(manager.recent)
    return [RetrainJobPublic.of(j) for j in jobs]


@router.get("/retrain/{job_id}", response_model=RetrainJobPublic)
async def get_retrain_job(
    job_id: Annotated[str, PathParam(min_length=1, max_length=64)],
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> RetrainJobPublic:
    """One retrain job: status (queued, running, succeeded, rejected, failed), stage, data, gate, versions."""
    manager: RetrainManager = request.app.state.retrain
    return RetrainJobPublic.of(await anyio.to_thread.run_sync(manager.get, job_id))


@router.get("/health")
async def models_health(
    request: Request,
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> dict[str, Any]:
    """Drift watch: the newest `drift_window` decisions against the training data (intent and team mix) and
    against the window before them (decision mix, out-of-scope rate, confidences, correction rate); each signal
    with its test, p-value, effect and alert, and whether a retrain (still gated) is proposed. Also sets the
    Prometheus gauges `deskpilot_drift_effect` / `deskpilot_drift_alert`."""
    from api.drift import drift_report, publish

    report = await anyio.to_thread.run_sync(drift_report, request.app.state.settings, request.app.state.engine)
    publish(request.app.state.metrics, report)
    state: ModelState = request.app.state.models
    return {"ready": state.ready, "serving": state.versions, **report}


# ---------------------------------------------------------------- labels feedback may name


class LabelIn(JsonBody):
    """A team or intent to accept in feedback before a live model knows it."""

    model_config = ConfigDict(extra="forbid")
    _strip_text = field_validator("*")(strip_text)

    kind: Literal["team", "intent"]
    name: str = Field(min_length=1, max_length=128)
    reason: str | None = Field(default=None, max_length=500)


class LabelsPublic(BaseModel):
    """Labels feedback may name, by kind: the live models' classes and the declared ones."""

    known: dict[str, list[str]]
    declared: list[dict[str, Any]]


def _labels(request: Request) -> LabelsPublic:
    from sqlmodel import Session, col, select

    known = known_labels(request.app)
    with Session(request.app.state.engine) as session:
        rows = session.exec(select(ModelLabel).order_by(col(ModelLabel.id))).all()
    declared = [{"kind": r.kind, "name": r.name, "added_by": r.added_by, "added_at": r.added_at.isoformat(),
                 "reason": r.reason} for r in rows]
    return LabelsPublic(known={k: sorted(v) for k, v in known.items()}, declared=declared)


@router.get("/labels", response_model=LabelsPublic)
def list_labels(request: Request, principal: Annotated[Principal, Depends(require("analyst", "agent",
                                                                                      "knowledge_manager"))]
                ) -> LabelsPublic:
    """Teams and intents feedback may name (live models' classes + declared labels)."""
    return _labels(request)


@router.post("/labels", response_model=LabelsPublic, status_code=201)
def add_label(body: LabelIn, request: Request,
              principal: Annotated[Principal, Depends(require("knowledge_manager"))]) -> LabelsPublic:
    """Declare a new team / intent (knowledge manager or admin): feedback may name it from now on; it enters
    training as a new class once `retrain_min_class_examples` corrections name it."""
    from sqlmodel import Session, select

    with Session(request.app.state.engine) as session:
        exists = session.exec(select(ModelLabel).where(ModelLabel.kind == body.kind, ModelLabel.name == body.name)
                              ).first()
        if exists is not None:
            raise Conflict(f"{body.kind} {body.name!r} was declared already (by {exists.added_by})")
        session.add(ModelLabel(kind=body.kind, name=body.name, added_by=principal.name, reason=body.reason))
        session.commit()
    set_audit_object(request, f"{body.kind}:{body.name}"[:256])
    return _labels(request)


# ---------------------------------------------------------------- version history, rollback, forced promotion


VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # the registry's rule for task and version names
TaskName = Annotated[str, PathParam(min_length=1, max_length=64, pattern=VERSION_PATTERN)]


class VersionPublic(BaseModel):
    """One version of a task: when, its metrics and gate results, whether it is live."""

    version: str
    created_at: str | None
    live: bool
    training_cutoff: str | None = None
    metrics: dict[str, Any] = {}
    gate: dict[str, Any] | None = None
    error: str | None = None


class VersionsPublic(BaseModel):
    """A task's versions (newest first) and its history: every promotion, rollback, forced swap and rejection."""

    task: str
    live: str | None
    versions: list[VersionPublic]
    history: list[dict[str, Any]]


class RollbackIn(JsonBody):
    """Where to roll back to (default: the version live before the current one) and why."""

    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(default=None, min_length=1, max_length=64, pattern=VERSION_PATTERN)
    reason: str | None = Field(default=None, max_length=500)


class PromoteIn(JsonBody):
    """A version to make live over the gate (an admin's explicit choice) and why."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)
    reason: str = Field(min_length=1, max_length=500)


class SwapPublic(BaseModel):
    """Outcome of a rollback / promotion: the task's old and new live version and what this worker serves now."""

    task: str
    previous: str | None
    live: str
    serving: dict[str, str]


def _registry(settings: Settings, task: str) -> Any:
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(settings.registry_path)
    if task not in reg.tasks():
        raise NotFound(f"no task {task!r} in the registry; tasks: {', '.join(reg.tasks()) or 'none'}")
    return reg


@router.get("/{task}/versions", response_model=VersionsPublic)
def list_versions(
    task: TaskName,
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require("analyst"))],
) -> VersionsPublic:
    """Every version of a task, newest first, with metrics and gate results, and who / when / why it went live."""
    reg = _registry(settings, task)
    live = reg.live_version(task)
    out: list[VersionPublic] = []
    for v in reversed(reg.list_versions(task)):
        try:
            meta = reg.read_metadata(task, v)
            out.append(VersionPublic(version=v, created_at=meta.created_at, live=v == live, metrics=meta.metrics,
                                     gate=meta.extra.get("gate"), training_cutoff=meta.extra.get("training_cutoff")))
        except DeskpilotError as exc:
            out.append(VersionPublic(version=v, created_at=None, live=v == live, error=exc.message))
    return VersionsPublic(task=task, live=live, versions=out, history=list(reversed(reg.history(task))))


async def _swap(request: Request, task: str, previous: str | None, live: str) -> SwapPublic:
    old, new = await reload_models(request.app)
    set_audit_object(request, f"{task}:{previous}->{live}")
    if not new.ready:
        assert new.error is not None
        new.error.message = f"{new.error.message} (still serving: {old.versions or 'nothing'})"
        raise new.error
    return SwapPublic(task=task, previous=previous, live=live, serving=new.versions)


@router.post("/{task}/rollback", response_model=SwapPublic)
async def rollback(
    task: TaskName,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require())],
    body: RollbackIn | None = None,
) -> SwapPublic:
    """Make the version live before the current one (or `to`) live again and swap it in (admin only); recorded in
    the registry history and the audit log; other workers follow within seconds."""
    b = body or RollbackIn()
    reg = _registry(settings, task)
    previous, ref = await anyio.to_thread.run_sync(
        lambda: reg.rollback(task, to=b.to, who=principal.name, why=b.reason or "rollback through the API"))
    return await _swap(request, task, previous, ref.version)


@router.post("/{task}/promote", response_model=SwapPublic)
async def promote(
    task: TaskName,
    body: PromoteIn,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, Depends(require())],
) -> SwapPublic:
    """Make a stored version live without the gate (admin only; e.g. a challenger the gate rejected); recorded as a
    forced swap in the registry history and the audit log."""
    reg = _registry(settings, task)
    previous = reg.live_version(task)
    ref = await anyio.to_thread.run_sync(
        lambda: reg.promote(task, body.version, who=principal.name, why=body.reason, action="force"))
    return await _swap(request, task, previous, ref.version)
