"""Retraining from the service's own data as a background job, gated by a champion / challenger comparison.

A job: (1) reads the live event log, ticket texts and agents' corrections from the database in one short session,
plus the history the live models learned from (stored in the registry by `deskpilot train`, or the configured
`retrain_history_log`), (2) trains challengers in a separate process (GIL and crashes stay out of the web server)
on every case before a cut-off, holding out the newest cases the live models never trained on, (3) scores the
live model (champion) and the challenger on those same held-out cases (and an admin's golden set) with the rule of
`insight.models.gate`, (4) promotes the challengers only when the gate passes (or an admin forced it), records
the gate in each challenger's metadata and the registry history, and swaps them in; every worker sees the new live
pointers within a second or so (`watch_live_models`), (5) writes the outcome to the audit log.

Job state lives in the database (`retrain_job`), so every worker answers for every job; a file lock in the
registry keeps two workers from training into it at the same time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from sqlalchemy import JSON, Column, DateTime, Engine
from sqlmodel import Field, Session, SQLModel, col, select

from api.auth import AuditLog, write_audit
from api.settings import Settings
from insight.errors import Conflict, DeskpilotError, InvalidInput, NotFound
from routing.models import utcnow

log = structlog.get_logger(__name__)

TASK_INTENT, TASK_ROUTER, TASK_NEXT, TASK_REMAINING, TASK_MEMORY = (
    "intent", "router", "next_activity", "remaining_time", "memory")
TASK_STEP_OUTCOMES = "step_outcomes"
TASK_MISROUTE = "misroute"  # insight.training.TASK_MISROUTE: the misroute risk model (follows the gate's decision)
RETRAIN_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_MISROUTE, TASK_NEXT, TASK_REMAINING, TASK_MEMORY,
                                  TASK_STEP_OUTCOMES)
# Tasks with a gate metric; the others (no per-case score to compare) follow the gate's decision.
GATED_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_NEXT)
JobStatus = Literal["queued", "running", "succeeded", "rejected", "failed"]
KEEP_JOBS = 20
LOCK_FILE = ".retrain.lock"
POLL_SECONDS = 0.2
QUEUED_STALE_SECONDS = 120.0  # a queued job no worker started in this long was lost with its worker


@dataclass
class RetrainOptions:
    """What to retrain and how."""

    tasks: tuple[str, ...] = RETRAIN_TASKS
    use_embeddings: bool = True
    evaluate_only: bool = False
    force: bool = False  # promote even when the gate rejects (an admin's explicit, audited choice)
    reason: str | None = None


@dataclass
class RetrainJob:
    """One retrain job and everything it did (a row of `retrain_job`)."""

    id: str
    options: RetrainOptions
    requested_by: str | None
    created_at: datetime = field(default_factory=utcnow)
    status: JobStatus = "queued"
    stage: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed_tasks: dict[str, str] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    promoted: dict[str, str] = field(default_factory=dict)
    swapped: bool = False
    previous: dict[str, str] = field(default_factory=dict)
    serving: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ("queued", "running")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (stored in the database)."""
        d = dataclasses.asdict(self)
        d["options"]["tasks"] = list(self.options.tasks)
        for k in ("created_at", "started_at", "finished_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RetrainJob:
        """Inverse of to_json (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        opts = dict(kw.pop("options", {}) or {})
        okeys = {f.name for f in dataclasses.fields(RetrainOptions)}
        kw["options"] = RetrainOptions(**{k: v for k, v in opts.items() if k in okeys})
        kw["options"].tasks = tuple(kw["options"].tasks)
        for k in ("created_at", "started_at", "finished_at"):
            if kw.get(k):
                kw[k] = datetime.fromisoformat(kw[k])
        return cls(**kw)


class RetrainJobRow(SQLModel, table=True):
    """A retrain job as stored: every worker reads and answers for every job."""

    __tablename__ = "retrain_job"

    id: str = Field(primary_key=True, max_length=32)
    status: str = Field(max_length=16, index=True)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ModelLabel(SQLModel, table=True):
    """A team or intent an admin / knowledge manager declared (feedback may name it before a model knows it)."""

    __tablename__ = "model_label"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)
    name: str = Field(max_length=128)
    added_by: str | None = Field(default=None, max_length=128)
    added_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    reason: str | None = Field(default=None, max_length=512)


def declared_labels(engine: Engine) -> dict[str, set[str]]:
    """Labels declared through `POST /v1/models/labels`, by kind (team, intent)."""
    out: dict[str, set[str]] = {"team": set(), "intent": set()}
    with Session(engine) as session:
        for kind, name in session.exec(select(ModelLabel.kind, ModelLabel.name)).all():
            out.setdefault(kind, set()).add(name)
    return out


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

    def held_elsewhere(self) -> bool:
        """True when some process (a running job) holds the lock right now."""
        if self.acquire():
            self.release()
            return False
        return True


class RetrainManager:
    """Retrain jobs in the database: at most one active across all workers; the newest KEEP_JOBS listed."""

    def __init__(self, engine: Engine | None = None, registry: Path | None = None) -> None:
        self.engine = engine
        self.registry = registry

    def bind(self, engine: Engine, registry: Path) -> None:
        """Attach the database and registry (done when the app starts)."""
        self.engine, self.registry = engine, registry

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("RetrainManager is not bound to a database")
        return self.engine

    def save(self, job: RetrainJob) -> None:
        """Write the job's current state."""
        with Session(self._engine()) as session:
            row = session.get(RetrainJobRow, job.id)
            now = utcnow()
            if row is None:
                row = RetrainJobRow(id=job.id, status=job.status, created_at=job.created_at, updated_at=now,
                                    body=job.to_json())
            else:
                row.status, row.updated_at, row.body = job.status, now, job.to_json()
            session.add(row)
            session.commit()

    def get(self, job_id: str) -> RetrainJob:
        """A job by id (NotFound when unknown)."""
        with Session(self._engine()) as session:
            row = session.get(RetrainJobRow, job_id)
        if row is None:
            raise NotFound(f"no retrain job {job_id!r}")
        return RetrainJob.from_json(dict(row.body))

    def recent(self, limit: int = KEEP_JOBS) -> list[RetrainJob]:
        """The newest jobs, newest first."""
        with Session(self._engine()) as session:
            rows = session.exec(select(RetrainJobRow).order_by(col(RetrainJobRow.created_at).desc())
                                .limit(limit)).all()
        return [RetrainJob.from_json(dict(r.body)) for r in rows]

    def active(self) -> RetrainJob | None:
        """The queued or running job, if any (a job whose worker died is marked failed on the way)."""
        with Session(self._engine()) as session:
            rows = session.exec(select(RetrainJobRow).where(col(RetrainJobRow.status).in_(["queued", "running"]))
                                .order_by(col(RetrainJobRow.created_at))).all()
        for row in rows:
            job = RetrainJob.from_json(dict(row.body))
            updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=utcnow().tzinfo)
            lost = (job.status == "running" and self.registry is not None
                    and not RegistryLock(self.registry).held_elsewhere()
                    and (utcnow() - updated).total_seconds() > 5)
            lost = lost or (job.status == "queued" and (utcnow() - updated).total_seconds() > QUEUED_STALE_SECONDS)
            if lost:
                job.status, job.error, job.finished_at = "failed", "abandoned: its worker stopped", utcnow()
                job.stage = "abandoned"
                self.save(job)
                continue
            return job
        return None

    def create(self, *, options: RetrainOptions, requested_by: str | None) -> RetrainJob:
        """A new queued job; Conflict when one is active (one at a time, across workers)."""
        running = self.active()
        if running is not None:
            raise Conflict(f"retrain job {running.id} is {running.status} (started by {running.requested_by} at "
                           f"{running.created_at:%Y-%m-%d %H:%M:%S} UTC); one job at a time: poll "
                           f"GET /v1/models/retrain/{running.id}")
        job = RetrainJob(id=uuid.uuid4().hex[:12], options=options, requested_by=requested_by)
        self.save(job)
        return job


# ---------------------------------------------------------------- the job (event loop side)


def read_history(settings: Settings) -> tuple[Any, Any, str]:
    """The history retraining adds to the store's data: (log, tickets, where from).

    `retrain_history_log` / `retrain_history_tickets` when set; else what `deskpilot train` stored with the
    registry (the data the first live models learned from); else none.
    """
    import pandas as pd

    from insight.eventlog import ingest
    from insight.models.registry import ModelRegistry

    key = settings.pseudonym_key.get_secret_value()
    history_log = history_tickets = None
    source = "none"
    if settings.retrain_history_log is not None:
        history_log = ingest(settings.retrain_history_log, pseudonym_key=key)
        source = str(settings.retrain_history_log)
    if settings.retrain_history_tickets is not None:
        try:
            history_tickets = pd.read_csv(settings.retrain_history_tickets)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read retrain_history_tickets {settings.retrain_history_tickets}: {exc}",
                               field="retrain_history_tickets") from exc
    if history_log is None and history_tickets is None:
        stored = ModelRegistry(settings.registry_path).load_training_data()
        if stored is not None:
            history_log, history_tickets, info = stored
            source = f"registry training data {info.get('hash')} ({info.get('n_cases')} cases)"
    return history_log, history_tickets, source


def _recent_history(engine: Engine, log: Any, tickets: Any, source: str, days: float) -> tuple[Any, Any, str]:
    """Only the history cases created within `days` before the newest live event (or now, without live events)."""
    import pandas as pd
    from sqlalchemy import func

    from insight.eventlog.schema import CASE_ID, TIMESTAMP
    from routing.models import TicketEvent

    with Session(engine) as session:
        newest = session.exec(select(func.max(TicketEvent.timestamp))).one()
    end = pd.Timestamp(newest if newest is not None else utcnow())
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    since = end - pd.Timedelta(days=days)
    starts = log.df.groupby(log.df[CASE_ID].astype(str))[TIMESTAMP].min()
    keep = set(starts.index[starts >= since])
    log = log.filter_cases(log.df.loc[log.df[CASE_ID].astype(str).isin(keep), CASE_ID].unique())
    if tickets is not None and CASE_ID in tickets.columns:
        tickets = tickets[tickets[CASE_ID].astype(str).isin(keep)].reset_index(drop=True)
    return log, tickets, f"{source}; cases created since {since:%Y-%m-%d %H:%M} (retrain_history_days={days:g})"


def read_training_data(settings: Settings, engine: Engine) -> tuple[Any, str]:
    """The store's live log, ticket texts and corrections (one short read session) plus the history; and where the
    history came from."""
    from routing.dataset import training_data

    history_log, history_tickets, source = read_history(settings)
    if settings.retrain_history_days is not None and history_log is not None:
        history_log, history_tickets, source = _recent_history(engine, history_log, history_tickets, source,
                                                                settings.retrain_history_days)
    with Session(engine) as session:
        data = training_data(session=session, history_log=history_log, history_tickets=history_tickets,
                             pseudonym_key=settings.pseudonym_key.get_secret_value())
    return data, source


def read_golden(settings: Settings) -> Any:
    """The admin's golden set (`retrain_golden_tickets`), or None."""
    import pandas as pd

    path = settings.retrain_golden_tickets
    if path is None:
        return None
    try:
        golden = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read retrain_golden_tickets {path}: {exc}", field="retrain_golden_tickets") from exc
    if not ({"subject", "body"} & set(golden.columns)) or not ({"intent", "team"} & set(golden.columns)):
        raise InvalidInput(f"retrain_golden_tickets {path} needs subject and/or body, and intent and/or team "
                           f"columns; has {list(golden.columns)}", field="retrain_golden_tickets")
    return golden


def make_payload(settings: Settings, engine: Engine, data: Any, options: RetrainOptions) -> dict[str, Any]:
    """Everything the training process needs (plain picklable values)."""
    return {
        "log": data.log, "tickets": data.tickets, "team_labels": data.team_labels, "tasks": list(options.tasks),
        "registry": str(settings.registry_path), "evaluate_only": options.evaluate_only, "seed": settings.seed,
        "embedding_model": str(settings.embedding_model_path) if options.use_embeddings else None,
        "embedder_kwargs": settings.embedder_kwargs,
        "min_intent_labels": settings.retrain_min_intent_labels,
        "min_class_examples": settings.retrain_min_class_examples,
        "declared": {k: sorted(v) for k, v in declared_labels(engine).items()},
        "golden": read_golden(settings),
        "gate": {"tolerance": settings.retrain_gate_tolerance, "z": settings.retrain_gate_z,
                 "min_cases": settings.retrain_gate_min_cases},
        "gate_fraction": settings.retrain_gate_fraction,
    }


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
    versions = ",".join(f"{t}={v}" for t, v in sorted(job.promoted.items())) or "none"
    tag = "forced:" if job.options.force and job.promoted else ""
    entry = AuditLog(who=job.requested_by, role="admin", method="JOB", path=f"/v1/models/retrain/{job.id}",
                     route="/v1/models/retrain/{job_id}", object_id=f"{job.id}:{job.status}:{tag}{versions}"[:256],
                     status=status)
    try:
        write_audit(engine, entry)
    except Exception as exc:  # the audit must be loud, but a stored model swap is not undone by it
        log.error("audit_write_failed", path=entry.path, who=entry.who, error=f"{type(exc).__name__}: {exc}")


def apply_result(settings: Settings, job: RetrainJob, result: dict[str, Any]) -> bool:
    """Record what the training process produced and promote the challengers the gate (or a force) allows.

    Returns True when something was promoted (the caller swaps it in). The registry history records who, when
    and why; a rejected challenger is recorded there too.
    """
    from insight.models.registry import ModelRegistry

    job.models, job.skipped = result["models"], result["skipped"]
    job.failed_tasks, job.labels, job.gate = result["failed"], result["labels"], result["gate"]
    if not job.models:
        raise InvalidInput("nothing was trained: " + "; ".join(
            f"{t}: {why}" for t, why in {**job.skipped, **job.failed_tasks}.items()))
    if job.options.evaluate_only:
        job.status, job.stage = "succeeded", "done (evaluated only: nothing saved or swapped)"
        return False
    reg = ModelRegistry(settings.registry_path)
    decision = job.gate.get("decision")
    verdicts = {t: g.get("verdict") for t, g in job.gate.get("tasks", {}).items()}
    accepted = decision == "accepted"
    why = f"retrain job {job.id}: " + (f"{job.options.reason}; " if job.options.reason else "")
    if not accepted and not job.options.force:
        for m in job.models:
            if m.get("version"):
                reg.record(m["task"], "reject", version=m["version"], who=job.requested_by,
                           why=f"{why}gate rejected: {job.gate.get('reason')}", job=job.id)
        job.status, job.stage = "rejected", f"rejected by the gate: {job.gate.get('reason')}"
        return False
    for m in job.models:
        task, version = m["task"], m.get("version")
        if not version:
            continue
        if not job.options.force and verdicts.get(task) == "too_few_cases":
            job.skipped[task] = ("challenger kept out: too few evaluation cases to tell it is not worse "
                                 f"(version {version} stays in the registry)")
            reg.record(task, "reject", version=version, who=job.requested_by, why=f"{why}too few cases", job=job.id)
            continue
        forced = job.options.force and not accepted
        reg.promote(task, version, who=job.requested_by, action="force" if forced else "promote", extra={"job": job.id},
                    why=why + ("forced by an admin over the gate: " + str(job.gate.get("reason")) if forced
                               else f"gate {decision}: {job.gate.get('reason')}"))
        job.promoted[task] = version
    return bool(job.promoted)


async def run_job(app: Any, job: RetrainJob, reload: Any) -> None:
    """Read, train (child process), gate, promote, swap in (via `reload(app)`), audit; the job records it all."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    manager: RetrainManager = app.state.retrain
    lock = RegistryLock(settings.registry_path)

    async def stage(text: str) -> None:
        job.stage = text
        await anyio.to_thread.run_sync(manager.save, job)

    job.status, job.started_at = "running", utcnow()
    outcome = "failed"
    try:
        await stage("waiting for the registry lock")
        if not lock.acquire():
            raise Conflict(f"another process is retraining registry {settings.registry_path} (lock {lock.path})")
        await stage("reading data")
        data, source = await anyio.to_thread.run_sync(read_training_data, settings, engine)
        job.data = {**data.summary.to_dict(), "history_source": source}
        payload = await anyio.to_thread.run_sync(make_payload, settings, engine, data, job.options)
        await stage("training and gating")
        result = await _train_in_child(payload)
        promoted = await anyio.to_thread.run_sync(apply_result, settings, job, result)
        if job.options.evaluate_only:
            outcome = "evaluated"
        elif job.status == "rejected":
            outcome = "rejected"
        else:
            if promoted:
                await stage("loading the new models")
                old, new = await reload(app)
                job.previous, job.serving, job.swapped = dict(old.versions), dict(new.versions), new.ready
                if not new.ready:
                    raise new.error or DeskpilotError("the new models did not load")
            job.status, job.stage = "succeeded", "done" if promoted else "done (nothing new to promote)"
            outcome = "swapped" if promoted else "kept"
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
                 promoted=job.promoted, gate=job.gate.get("decision"))
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(manager.save, job)
            except Exception as exc:  # the database may be gone at shutdown; the audit below still tries
                log.error("retrain_job_not_saved", job=job.id, error=f"{type(exc).__name__}: {exc}")
            await anyio.to_thread.run_sync(_audit, engine, job, 200 if job.status in ("succeeded", "rejected")
                                           else 500)


def run_job_sync(settings: Settings, engine: Engine, job: RetrainJob, manager: RetrainManager) -> RetrainJob:
    """The same job in this process, synchronously (`deskpilot models retrain`); running servers pick the new
    live versions up from the registry by themselves."""
    lock = RegistryLock(settings.registry_path)
    job.status, job.started_at, job.stage = "running", utcnow(), "training and gating"
    manager.save(job)
    try:
        if not lock.acquire():
            raise Conflict(f"another process is retraining registry {settings.registry_path} (lock {lock.path})")
        data, source = read_training_data(settings, engine)
        job.data = {**data.summary.to_dict(), "history_source": source}
        result = _plain(train_in_process(make_payload(settings, engine, data, job.options)))
        promoted = apply_result(settings, job, result)
        if job.status != "rejected" and not job.options.evaluate_only:
            job.status, job.stage = "succeeded", "done" if promoted else "done (nothing new to promote)"
    except DeskpilotError as exc:
        job.status, job.error = "failed", f"{exc.code}: {exc.message}"
    finally:
        lock.release()
        job.finished_at = utcnow()
        manager.save(job)
        _audit(engine, job, 200 if job.status in ("succeeded", "rejected") else 500)
    return job


# ---------------------------------------------------------------- every worker follows the registry


def watched_tasks() -> tuple[str, ...]:
    """Registry tasks a server loads (routing.triage's bundle and the step outcomes)."""
    try:
        from routing.triage import TASKS
    except ImportError:
        return RETRAIN_TASKS
    return tuple(dict.fromkeys([*TASKS, TASK_STEP_OUTCOMES]))


def registry_live(registry: Path, tasks: tuple[str, ...]) -> dict[str, str]:
    """The registry's live versions of `tasks` (reads only the small pointer files)."""
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(registry)
    live: dict[str, str] = {}
    for task in tasks:
        try:
            v = reg.live_version(task)
        except DeskpilotError:
            continue
        if v:
            live[task] = v
    return live


async def watch_live_models(app: Any, reload: Any) -> None:
    """Every `models_watch_seconds`, read the registry's live pointers; when they changed since the last look and
    differ from what this worker serves (a swap or rollback by another worker or the CLI), reload. A pointer set
    that failed to load is not retried until it changes again; a worker whose models do not come from the registry
    (a custom bundle loader) is left alone until a pointer changes."""
    settings: Settings = app.state.settings
    period = settings.models_watch_seconds
    if period <= 0:
        return
    tasks = watched_tasks()
    # What the registry says now (the models just loaded): only a later change of a pointer triggers a reload.
    seen = await anyio.to_thread.run_sync(registry_live, settings.registry_path, tasks)
    drift_due = time.monotonic() + settings.drift_check_seconds
    while True:
        await anyio.sleep(period)
        if settings.drift_check_seconds > 0 and time.monotonic() >= drift_due:
            drift_due = time.monotonic() + settings.drift_check_seconds
            app.state.task_group.start_soon(check_drift, app)  # its own task: the pointer checks go on meanwhile
        try:
            live = await anyio.to_thread.run_sync(registry_live, settings.registry_path, tasks)
            served = {t: v for t, v in app.state.models.versions.items() if t in tasks}
            if live in (seen, served):
                seen = live
                continue
            seen = live
            _, new = await reload(app)
            log.info("models_followed_registry", live=live, loaded=new.ready)
        except Exception as exc:  # the watcher must survive a bad read; it tries again next tick
            log.warning("models_watch_failed", error=f"{type(exc).__name__}: {exc}")


async def check_drift(app: Any) -> dict[str, Any] | None:
    """Recompute the drift signals, publish the gauges, log the alerts; None when it could not be computed."""
    from api.drift import drift_report, publish

    try:
        report = await anyio.to_thread.run_sync(drift_report, app.state.settings, app.state.engine)
    except Exception as exc:  # a failed check must not stop the watcher; the next one tries again
        log.warning("drift_check_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    publish(app.state.metrics, report)
    if report["alerts"]:
        log.warning("drift_alert", alerts=report["alerts"], proposal=report["proposal"])
    return report


# ---------------------------------------------------------------- the training process


def _plain(value: Any) -> Any:
    """numpy scalars and other leaves as plain JSON types (metrics travel to the API's response)."""

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
def _cutoff_of(meta: Any) -> Any:
    """When a saved model's training data ends: `extra.training_cutoff`, else the end of its training window."""
    import pandas as pd

    raw = meta.extra.get("training_cutoff") or (meta.training_window[-1] if meta.training_window else None)
    if not raw:
        return None
    ts = pd.to_datetime(raw, utc=True, errors="coerce")
    return None if pd.isna(ts) else ts


def _load_champions(reg: Any, tasks: list[str], embedder: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The live model of each gated task ({task: LoadedArtifact}) and why a live one could not be loaded."""
    champions: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for task in GATED_TASKS:
        if task not in tasks:
            continue
        try:
            if reg.live_version(task) is None:
                continue
            art = reg.load(task)
        except DeskpilotError as exc:
            broken[task] = f"{exc.code}: {exc.message}"
            continue
        model = art.model
        if hasattr(model, "set_embedder") and (getattr(model, "embedder_name_", None) is not None
                                               or getattr(model, "embedder_fingerprint_", None) is not None):
            if embedder is None:
                broken[task] = "the live model needs the embedding model (retrain with use_embeddings=true)"
                continue
            model.set_embedder(embedder)
        champions[task] = art
    return champions, broken


def _live_classes(reg: Any, task: str) -> set[str] | None:
    """Classes of the task's live model from its metadata (None when there is no readable live model)."""
    try:
        live = reg.live_version(task)
        return {str(c) for c in reg.read_metadata(task, live).classes} if live else None
    except DeskpilotError:
        return None


def _admit_labels(tickets: Any, team_labels: dict[str, str], log: Any, live: dict[str, set[str] | None],
                  declared: dict[str, list[str]], min_examples: int) -> dict[str, Any]:
    """Keep the labels training may use (in place); returns what was held back or dropped, and why.

    An intent / team the live model knows is kept. A label an admin or knowledge manager declared
    (`POST /v1/models/labels`) starts a new class only with at least `min_examples` examples. Anything else (a
    label stored before feedback was validated) is dropped. Teams the event log itself names are known. A cold
    registry (no live model) has nothing to check against: every label counts, new classes need `min_examples`.
    """
    from insight.eventlog.schema import GROUP
    from insight.models.gate import OOS_LABELS

    report: dict[str, Any] = {"held_back": {}, "dropped": {}}

    def verdict(label: str, count: int, known: set[str], declared_: set[str], cold: bool) -> str | None:
        if label in known:
            return None
        if cold or label in declared_:
            return None if count >= min_examples else "held_back"
        return "dropped"

    if tickets is not None and "intent" in tickets.columns:
        classes = live.get(TASK_INTENT)
        known = (classes or set()) | set(OOS_LABELS)
        counts = tickets["intent"].dropna().astype(str).value_counts()
        for label, count in counts.items():
            v = verdict(str(label), int(count), known, set(declared.get("intent", [])), classes is None)
            if v is not None:
                report[v][f"intent:{label}"] = int(count)
                tickets.loc[tickets["intent"].astype(str) == label, "intent"] = None
    if team_labels:
        classes = live.get(TASK_ROUTER)
        known = set(classes or set())
        if log is not None and log.has(GROUP):
            known |= set(log.df[GROUP].dropna().astype(str).unique())
        team_counts: dict[str, int] = {}
        for team in team_labels.values():
            team_counts[team] = team_counts.get(team, 0) + 1
        for team, count in team_counts.items():
            v = verdict(team, count, known, set(declared.get("team", [])), classes is None and not known)
            if v is not None:
                report[v][f"team:{team}"] = count
                for case in [c for c, t in team_labels.items() if t == team]:
                    team_labels.pop(case)
    return report


def _split(log: Any, tickets: Any, team_labels: dict[str, str], eval_ids: set[str]) -> tuple[Any, Any, dict[str, str],
                                                                                              Any, Any, dict[str, str]]:
    """(train log, train tickets, train team labels, eval log, eval tickets, eval team labels)."""
    from insight.eventlog.schema import CASE_ID

    if not eval_ids:
        return log, tickets, team_labels, None, None, {}
    train_log = eval_log = None
    if log is not None:
        ids = log.df[CASE_ID].astype(str)
        train_log = log.filter_cases(log.df.loc[~ids.isin(eval_ids), CASE_ID].unique())
        eval_log = log.filter_cases(log.df.loc[ids.isin(eval_ids), CASE_ID].unique())
    train_t = eval_t = None
    if tickets is not None:
        held = tickets[CASE_ID].astype(str).isin(eval_ids)
        train_t, eval_t = tickets.loc[~held].reset_index(drop=True), tickets.loc[held].reset_index(drop=True)
    train_l = {k: v for k, v in team_labels.items() if str(k) not in eval_ids}
    eval_l = {k: v for k, v in team_labels.items() if str(k) in eval_ids}
    return train_log, train_t, train_l, eval_log, eval_t, eval_l


def _memory_tickets(tickets: Any, log: Any) -> Any:
    """Tickets for the ticket memory: those whose case the log shows resolved (history and live alike)."""
    from insight.eventlog.schema import CASE_ID
    from insight.training import unresolved_cases

    if tickets is None or log is None:
        return tickets
    ids = tickets[CASE_ID].astype(str)
    in_log = ids.isin(set(log.df[CASE_ID].astype(str)))
    return tickets.loc[in_log & ~ids.isin(unresolved_cases(log))].reset_index(drop=True)


def _gate_task(task: str, champion: Any, challenger: Any, *, eval_log: Any, eval_tickets: Any,
               router_eval: Any, at: Any, golden: Any, rule: Any) -> dict[str, Any]:
    """Side-by-side metrics of one task (evaluation cases, then the golden set)."""
    from insight.models import gate

    metrics: dict[str, dict[str, Any]] = {}
    if task == TASK_ROUTER and router_eval is not None and len(router_eval):
        metrics.update(gate.compare_router(champion, challenger, router_eval, at=at, rule=rule))
    if task == TASK_INTENT and eval_tickets is not None and "intent" in eval_tickets.columns:
        labelled = eval_tickets[eval_tickets["intent"].notna()]
        if len(labelled):
            metrics.update(gate.compare_intent(champion, challenger, labelled, rule=rule))
    if task == TASK_NEXT and eval_log is not None and eval_log.n_cases:
        metrics.update(gate.compare_next_activity(champion, challenger, eval_log, rule=rule))
    if golden is not None:
        if task == TASK_INTENT and "intent" in golden.columns:
            g = golden[golden["intent"].notna()]
            if len(g):
                metrics.update(gate.compare_intent(champion, challenger, g, rule=rule, prefix="golden_"))
        if task == TASK_ROUTER and "team" in golden.columns:
            g = golden[golden["team"].notna()].copy()
            if len(g):
                text = getattr(challenger, "text", None) or "__text__"
                parts = [c for c in ("subject", "body") if c in g.columns]
                g[text] = g[parts].fillna("").astype(str).agg(" \n ".join, axis=1)
                g["resolving_team"] = g["team"].astype(str)
                metrics.update(gate.compare_router(champion, challenger, g, at=None, rule=rule, prefix="golden_"))
    return metrics


def train_in_process(payload: dict[str, Any]) -> dict[str, Any]:
    """Train each requested task on the data before the gate's cut-off, score each gated challenger against the
    live model on the held-out newest cases, and report (JSON-ready). A failing task does not stop the others."""
    import pandas as pd

    from assist.actions import train_step_outcomes
    from insight.eventlog.schema import GROUP
    from insight.mining.labels import case_labels
    from insight.models import gate
    from insight.models.registry import ModelRegistry
    from insight.training import apply_team_corrections, router_table, train_all, unresolved_cases

    data_log, tickets = payload["log"], payload["tickets"]
    team_labels: dict[str, str] = dict(payload["team_labels"])
    tasks: list[str] = list(payload["tasks"])
    reg = ModelRegistry(payload["registry"])
    scratch = tempfile.mkdtemp(prefix="deskpilot-evaluate-") if payload["evaluate_only"] else None
    save_reg = ModelRegistry(scratch) if scratch else reg
    rule = gate.GateRule(**payload["gate"])
    embedder = None
    if payload["embedding_model"]:
        from insight.embedding import Embedder

        embedder = Embedder(payload["embedding_model"], **payload.get("embedder_kwargs", {}))
    t0 = time.perf_counter()
    models: list[dict[str, Any]] = []
    challengers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    labels: dict[str, Any] = {}
    champions, broken = _load_champions(reg, tasks, embedder)
    live_classes = {t: _live_classes(reg, t) for t in (TASK_INTENT, TASK_ROUTER)}
    labels["admission"] = _admit_labels(tickets, team_labels, data_log, live_classes, payload["declared"],
                                        int(payload["min_class_examples"]))
    if tickets is not None and "intent" in tickets.columns:
        labels["intent"] = {str(k): int(v) for k, v in tickets["intent"].value_counts().items()}
    if team_labels and data_log is not None and data_log.has(GROUP):
        lab = case_labels(data_log).df
        labels["team_corrections"] = apply_team_corrections(lab.set_axis(lab.index.astype(str)), data_log,
                                                            team_labels)
    # The evaluation cases: the newest cases none of the live gated models trained on.
    live_cutoffs = [c for c in (_cutoff_of(a.metadata) for a in champions.values()) if c is not None]
    stored = reg.training_data_info()
    if champions and not live_cutoffs and stored and stored.get("trained_until"):
        # No live gated model says when its data ended: the history stored with them does.
        until = pd.to_datetime(stored["trained_until"], utc=True, errors="coerce")
        live_cutoffs = [] if pd.isna(until) else [until]
    champion_cutoff = max(live_cutoffs) if live_cutoffs else None
    cutoff, n_new = (None, 0)
    if champions:
        cutoff, n_new = gate.split_by_time(data_log, tickets, after=champion_cutoff,
                                           fraction=float(payload["gate_fraction"]), min_cases=rule.min_cases)
    starts = gate.case_starts(data_log, tickets)
    eval_ids = set(starts.index[starts >= cutoff]) if cutoff is not None else set()
    if champion_cutoff is not None:
        eval_ids = {i for i in eval_ids if starts[i] > champion_cutoff}
    train_log, train_tickets, train_labels, eval_log, eval_tickets, _ = _split(data_log, tickets, team_labels,
                                                                               eval_ids)
    trained_until = cutoff if cutoff is not None else (starts.max() if len(starts) else None)
    for task in tasks:
        gated = task in GATED_TASKS
        t_log, t_tickets, t_labels = (train_log, train_tickets, train_labels) if gated else (
            data_log, tickets, team_labels)
        try:
            if task == TASK_INTENT:
                why = _intent_guard(t_tickets, int(payload["min_intent_labels"]))
                if why is not None:
                    skipped[task] = why
                    continue
            elif t_log is None:
                skipped[task] = "the store holds no ticket events (and no history is stored or configured)"
                continue
            if task == TASK_STEP_OUTCOMES:
                trained = [train_step_outcomes(log=t_log, registry=save_reg, promote=False)]
            else:
                if task == TASK_MEMORY:
                    t_tickets = _memory_tickets(t_tickets, t_log)
                report = train_all(log=t_log, tickets=t_tickets, registry=save_reg, embedder=embedder,
                                   seed=int(payload["seed"]), tasks=(task,), team_labels=t_labels, promote=False)
                trained = list(report.models)
                skipped.update(report.skipped)
            for m in trained:
                if m.version:
                    save_reg.update_extra(m.task, m.version, training_cutoff=str(trained_until) if gated and
                                          trained_until is not None else str(starts.max() if len(starts) else ""))
                challengers[m.task] = m
                models.append(m.to_dict())
        except DeskpilotError as exc:
            failed[task] = f"{exc.code}: {exc.message}"
    # Score champion and challenger side by side.
    router_eval = None
    if TASK_ROUTER in challengers and TASK_ROUTER in champions and eval_ids and tickets is not None:
        try:
            table, _, _ = router_table(log=data_log, tickets=tickets, team_labels=team_labels)
            # Judged on resolved cases only: the team that resolved a case does not depend on what the live router
            # said, while an agent corrects a ticket because it was misrouted (a label chosen by the champion's
            # errors would favour any challenger). Corrections still label the challenger's training cases.
            open_cases = unresolved_cases(data_log)
            router_eval = table[table.index.astype(str).isin(eval_ids - open_cases)]
            champ = champions[TASK_ROUTER].model
            if getattr(champ, "history", False) and champion_cutoff is not None:
                # As served: the live router's memory also holds the resolutions recorded since its training.
                seen = table[(table["created_at"] > champion_cutoff) & ~table.index.astype(str).isin(eval_ids)
                             & (table["resolved_at"] < cutoff)]
                if len(seen):
                    champ.observe(seen, seen["resolving_team"], seen["resolved_at"])
        except DeskpilotError as exc:
            failed[TASK_ROUTER] = f"gate: {exc.code}: {exc.message}"
    at = pd.Series([cutoff] * len(router_eval), index=router_eval.index) if router_eval is not None else None
    gate_tasks: dict[str, Any] = {}
    for task in GATED_TASKS:
        if task not in challengers:
            continue
        entry: dict[str, Any] = {"challenger_version": challengers[task].version}
        if task in broken:
            # A live model exists but cannot be read here: nothing to compare with, so no automatic swap.
            entry.update(verdict=gate.FAIL, metrics={}, reason=f"the live model could not be loaded for the "
                         f"comparison ({broken[task]}); an admin may promote the challenger (force)")
        elif task not in champions:
            entry.update(verdict="new", reason="no live model to compare with", metrics={})
        else:
            entry["champion_version"] = champions[task].metadata.version
            try:
                metrics = _gate_task(task, champions[task].model, challengers[task].model, eval_log=eval_log,
                                     eval_tickets=eval_tickets, router_eval=router_eval, at=at,
                                     golden=payload.get("golden"), rule=rule)
                entry.update(metrics=metrics, verdict=gate.task_verdict(task, metrics))
            except (DeskpilotError, ValueError) as exc:
                entry.update(metrics={}, verdict=gate.FAIL, reason=f"could not score: {exc}")
        gate_tasks[task] = entry
    verdicts = {t: e["verdict"] for t, e in gate_tasks.items()}
    if any(v == gate.FAIL for v in verdicts.values()):
        worse = [f"{t}: {m} {e['metrics'][m]['challenger']:.4f} vs live {e['metrics'][m]['champion']:.4f} "
                 f"(lower bound {e['metrics'][m]['lower_bound']:+.4f})"
                 for t, e in gate_tasks.items() for m in e.get("metrics", {})
                 if e["metrics"][m].get("verdict") == gate.FAIL]
        decision, reason = "rejected", ("challenger worse than the live model beyond the tolerance: " + "; ".join(
            worse) if worse else "; ".join(e.get("reason", "") for e in gate_tasks.values()
                                           if e["verdict"] == gate.FAIL))
    elif verdicts and all(v == gate.TOO_FEW for v in verdicts.values()):
        decision, reason = "rejected", (f"too few evaluation cases to tell ({n_new} case(s) newer than the live "
                                        f"models' training; at least {rule.min_cases} labelled needed per metric)")
    elif not verdicts and champions:
        decision, reason = "rejected", "no gated model was trained"
    else:
        decision = "accepted"
        reason = ("no live model to compare with" if verdicts and all(v == "new" for v in verdicts.values())
                  else "not worse than the live model on any gate metric" if verdicts
                  else "no gated task requested")
    gate_out = {"decision": decision, "reason": reason, "rule": rule.to_dict(),
                "champion_trained_until": str(champion_cutoff) if champion_cutoff is not None else None,
                "cutoff": str(cutoff) if cutoff is not None else None, "n_new_cases": int(n_new),
                "n_evaluation_cases": len(eval_ids), "golden_set": payload.get("golden") is not None,
                "tasks": gate_tasks, "seconds": round(time.perf_counter() - t0, 1)}
    if not scratch:
        for task, entry in gate_tasks.items():
            save_reg.update_extra(task, entry["challenger_version"],
                                  gate={**entry, **{k: v for k, v in gate_out.items() if k != "tasks"}})
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        for m in models:
            m["version"], m["path"] = None, None
    for m in models:
        m["gate"] = gate_tasks.get(m["task"], {}).get("verdict", "not gated")
    return {"models": models, "skipped": skipped, "failed": failed, "labels": labels, "gate": gate_out}


def known_labels(app: Any) -> dict[str, set[str]]:
    """Teams / intents feedback may name: the live models' classes plus the declared labels."""
    from insight.models.gate import OOS_LABELS

    out = declared_labels(app.state.engine)
    bundle = app.state.models.bundle
    router = getattr(bundle, "router", None)
    intent = getattr(bundle, "intent", None)
    if router is not None and hasattr(router, "classes_"):
        out["team"] |= {str(c) for c in router.classes_}
    if intent is not None and hasattr(intent, "classes_"):
        out["intent"] |= {str(c) for c in intent.classes_} | set(OOS_LABELS)
    return out
