"""Retraining from the service's own data as a background job, one at a time, hot-swapped in when it succeeds.

A job: (1) reads the live event log, ticket texts and agents' corrections from the database in one short session
(plus the configured history), (2) trains in a separate process (`insight.training.train_all` task by task, and the
step outcomes), so training neither holds the GIL the web server needs nor takes the server down if it crashes,
(3) loads the new live versions and swaps them in like `POST /v1/models/reload` (in-flight requests keep the
snapshot they started with), (4) records the outcome in the audit log. A file lock in the registry keeps a second job
(from another worker process) from training into the same registry at the same time.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from api.auth import AuditLog, write_audit
from api.settings import Settings
from insight.errors import Conflict, DeskpilotError, InvalidInput, NotFound
from routing.models import utcnow

log = structlog.get_logger(__name__)

TASK_INTENT, TASK_ROUTER, TASK_NEXT, TASK_REMAINING, TASK_MEMORY = (
    "intent", "router", "next_activity", "remaining_time", "memory")
TASK_STEP_OUTCOMES = "step_outcomes"
RETRAIN_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_NEXT, TASK_REMAINING, TASK_MEMORY, TASK_STEP_OUTCOMES)
JobStatus = Literal["queued", "running", "succeeded", "failed"]
KEEP_JOBS = 20
LOCK_FILE = ".retrain.lock"
POLL_SECONDS = 0.2


@dataclass
class RetrainOptions:
    """What to retrain and how."""

    tasks: tuple[str, ...] = RETRAIN_TASKS
    use_embeddings: bool = True
    evaluate_only: bool = False


@dataclass
class RetrainJob:
    """One retrain job and everything it did (kept in memory, the last KEEP_JOBS per server process)."""

    id: str
    options: RetrainOptions
    requested_by: str | None
    created_at: datetime = field(default_factory=utcnow)
    status: JobStatus = "queued"
    stage: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    data: dict[str, int] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed_tasks: dict[str, str] = field(default_factory=dict)
    swapped: bool = False
    previous: dict[str, str] = field(default_factory=dict)
    serving: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ("queued", "running")


class RegistryLock:
    """An exclusive, non-blocking flock on `<registry>/.retrain.lock` (released when the holder closes or dies)."""

    def __init__(self, registry: Path) -> None:
        self.path = registry / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RetrainManager:
    """The app's retrain jobs: at most one active; the last KEEP_JOBS kept for status queries."""

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, RetrainJob] = OrderedDict()

    def active(self) -> RetrainJob | None:
        """The queued or running job, if any."""
        return next((j for j in self.jobs.values() if j.active), None)

    def get(self, job_id: str) -> RetrainJob:
        """A job by id (NotFound when unknown here)."""
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no retrain job {job_id!r} in this server process (the last {KEEP_JOBS} jobs are kept "
                           "in memory; the audit log records every job)")
        return job

    def create(self, *, options: RetrainOptions, requested_by: str | None) -> RetrainJob:
        """A new queued job; Conflict when one is active (one at a time)."""
        running = self.active()
        if running is not None:
            raise Conflict(f"retrain job {running.id} is {running.status} (started by {running.requested_by} at "
                           f"{running.created_at:%Y-%m-%d %H:%M:%S} UTC); one job at a time: poll "
                           f"GET /v1/models/retrain/{running.id}")
        job = RetrainJob(id=uuid.uuid4().hex[:12], options=options, requested_by=requested_by)
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP_JOBS:
            oldest = next(iter(self.jobs))
            if self.jobs[oldest].active:
                break
            self.jobs.pop(oldest)
        return job


# ---------------------------------------------------------------- the job (event loop side)


def read_training_data(settings: Settings, engine: Engine) -> Any:
    """The store's live log, ticket texts and corrections (one short read session) plus the configured history."""
    import pandas as pd

    from insight.eventlog import ingest
    from routing.dataset import training_data

    key = settings.pseudonym_key.get_secret_value()
    history_log = history_tickets = None
    if settings.retrain_history_log is not None:
        history_log = ingest(settings.retrain_history_log, pseudonym_key=key)
    if settings.retrain_history_tickets is not None:
        try:
            history_tickets = pd.read_csv(settings.retrain_history_tickets)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read retrain_history_tickets {settings.retrain_history_tickets}: {exc}",
                               field="retrain_history_tickets") from exc
    with Session(engine) as session:
        return training_data(session=session, history_log=history_log, history_tickets=history_tickets,
                             pseudonym_key=key)


async def _train_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Run `train_in_process(payload)` in a fresh process; terminate it if the job is cancelled (shutdown)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, payload), name="deskpilot-retrain", daemon=True)
    await anyio.to_thread.run_sync(proc.start)  # spawn pickles the data set: off the event loop
    child.close()
    try:
        while not parent.poll():
            if not proc.is_alive() and not parent.poll():
                raise RuntimeError(f"the training process exited with code {proc.exitcode} without a result")
            await anyio.sleep(POLL_SECONDS)
        kind, value = parent.recv()
    finally:
        if proc.is_alive():
            proc.terminate()  # cancelled (shutdown) or the result is in: nothing left for the child to do
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(proc.join, 10)
        parent.close()
    if kind == "error":
        code, message = value
        err = DeskpilotError(message)
        err.code = code
        raise err
    if kind == "crash":
        raise RuntimeError(value)
    return dict(value)


def _audit(engine: Engine, job: RetrainJob, status: int) -> None:
    versions = ",".join(f"{m['task']}={m['version']}" for m in job.models if m.get("version")) or "none"
    entry = AuditLog(who=job.requested_by, role="admin", method="JOB", path=f"/v1/models/retrain/{job.id}",
                     route="/v1/models/retrain/{job_id}", object_id=f"{job.id}:{versions}"[:256], status=status)
    try:
        write_audit(engine, entry)
    except Exception as exc:  # the audit must be loud, but a stored model swap is not undone by it
        log.error("audit_write_failed", path=entry.path, who=entry.who, error=f"{type(exc).__name__}: {exc}")


async def run_job(app: Any, job: RetrainJob, reload: Any) -> None:
    """Read, train (child process), swap in (via `reload(app)`), audit; the job records every outcome."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    lock = RegistryLock(settings.registry_path)
    job.status, job.started_at, job.stage = "running", utcnow(), "waiting for the registry lock"
    outcome = "failed"
    try:
        if not lock.acquire():
            raise Conflict(f"another process is retraining registry {settings.registry_path} (lock {lock.path})")
        job.stage = "reading data"
        data = await anyio.to_thread.run_sync(read_training_data, settings, engine)
        job.data = data.summary.to_dict()
        job.stage = "training"
        opts = job.options
        result = await _train_in_child({
            "log": data.log, "tickets": data.tickets, "team_labels": data.team_labels, "tasks": list(opts.tasks),
            "registry": None if opts.evaluate_only else str(settings.registry_path), "seed": settings.seed,
            "embedding_model": str(settings.embedding_model_path) if opts.use_embeddings else None,
            "embedder_kwargs": settings.embedder_kwargs,
            "min_intent_labels": settings.retrain_min_intent_labels,
        })
        job.models, job.skipped = result["models"], result["skipped"]
        job.failed_tasks, job.labels = result["failed"], result["labels"]
        if not job.models:
            raise InvalidInput("nothing was trained: " + "; ".join(
                f"{t}: {why}" for t, why in {**job.skipped, **job.failed_tasks}.items()))
        if opts.evaluate_only:
            job.stage, outcome = "done (evaluated only: nothing saved or swapped)", "evaluated"
        else:
            job.stage = "loading the new models"
            old, new = await reload(app)
            job.previous, job.serving, job.swapped = dict(old.versions), dict(new.versions), new.ready
            if not new.ready:
                raise new.error or DeskpilotError("the new models did not load")
            job.stage, outcome = "done", "swapped"
        job.status = "succeeded"
    except DeskpilotError as exc:
        job.status, job.error = "failed", f"{exc.code}: {exc.message}"
    except Exception as exc:  # the job must always end with a status; the log keeps the traceback
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("retrain_failed", job=job.id, error=job.error, traceback="".join(traceback.format_exception(exc)))
    finally:
        lock.release()
        job.finished_at = utcnow()
        app.state.metrics.retrains.labels(outcome=outcome).inc()
        log.info("retrain_finished", job=job.id, status=job.status, outcome=outcome, error=job.error,
                 models={m["task"]: m.get("version") for m in job.models})
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_audit, engine, job, 200 if job.status == "succeeded" else 500)


# ---------------------------------------------------------------- the training process


def _plain(value: Any) -> Any:
    """numpy scalars and other leaves as plain JSON types (metrics travel to the API's response)."""
    import json

    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        return str(o)

    return json.loads(json.dumps(value, default=default))


def _child_main(conn: Any, payload: dict[str, Any]) -> None:
    try:
        conn.send(("ok", _plain(train_in_process(payload))))
    except DeskpilotError as exc:
        conn.send(("error", (exc.code, exc.message)))
    except BaseException as exc:  # report anything, or the parent only sees an exit code
        conn.send(("crash", f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"))
    finally:
        conn.close()


def _intent_guard(tickets: Any, minimum: int) -> str | None:
    """Why the intent model must not be retrained on these labels (None when it may)."""
    if tickets is None or "intent" not in tickets.columns:
        return "no ticket has a known intent (agents' corrected_intent or a history ticket table)"
    labels = tickets["intent"].dropna()
    if len(labels) < minimum:
        return (f"only {len(labels)} labelled ticket(s) (agents' corrections + history); at least {minimum} needed "
                "(retrain_min_intent_labels); the live intent model is kept")
    if labels.nunique() < 2:
        return f"all {len(labels)} labelled tickets have one intent ({labels.iloc[0]!r}); a classifier needs two"
    return None


def train_in_process(payload: dict[str, Any]) -> dict[str, Any]:
    """Train each requested task (a failing task does not stop the others); JSON-ready results."""
    from assist.actions import train_step_outcomes
    from insight.eventlog.schema import GROUP
    from insight.mining.labels import case_labels
    from insight.models.registry import ModelRegistry
    from insight.training import apply_team_corrections, train_all

    data_log, tickets = payload["log"], payload["tickets"]
    team_labels: dict[str, str] = payload["team_labels"]
    reg = ModelRegistry(payload["registry"]) if payload["registry"] else None
    embedder = None
    if payload["embedding_model"]:
        from insight.embedding import Embedder

        embedder = Embedder(payload["embedding_model"], **payload.get("embedder_kwargs", {}))
    models: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    labels: dict[str, Any] = {}
    if tickets is not None and "intent" in tickets.columns:
        labels["intent"] = {str(k): int(v) for k, v in tickets["intent"].value_counts().items()}
    if team_labels and data_log is not None and data_log.has(GROUP):
        lab = case_labels(data_log).df
        labels["team_corrections"] = apply_team_corrections(lab.set_axis(lab.index.astype(str)), data_log,
                                                            team_labels)
    for task in payload["tasks"]:
        try:
            if task == TASK_INTENT:
                why = _intent_guard(tickets, int(payload["min_intent_labels"]))
                if why is not None:
                    skipped[task] = why
                    continue
            elif data_log is None:
                skipped[task] = "the store holds no ticket events (and no history log is configured)"
                continue
            if task == TASK_STEP_OUTCOMES:
                models.append(train_step_outcomes(log=data_log, registry=reg).to_dict())
                continue
            report = train_all(log=data_log, tickets=tickets, registry=reg, embedder=embedder,
                               seed=int(payload["seed"]), tasks=(task,), team_labels=team_labels)
            models += [m.to_dict() for m in report.models]
            skipped.update(report.skipped)
        except DeskpilotError as exc:
            failed[task] = f"{exc.code}: {exc.message}"
    return {"models": models, "skipped": skipped, "failed": failed, "labels": labels}
