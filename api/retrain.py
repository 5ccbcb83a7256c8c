"""Retraining from the service's own data as a background job, gated by a champion / challenger comparison.

A job: (1) reads the live event log, ticket texts and agents' corrections from the database in one short session,
plus the history the live models learned from (stored in the registry by `deskpilot train`, or the configured
`retrain_history_log`), (2) trains challengers in a separate process (GIL and crashes stay out of the web server)
and (3) scores them against the live models — both steps are the flow `flows.retrain`; this module is the job
around it: (4) promotes the challengers only when the gate passes (or an admin forced it), records
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
from core.errors import Conflict, DeskpilotError, InvalidInput, NotFound
from flows import retrain as flows_retrain
from flows.retrain import RETRAIN_TASKS, TASK_STEP_OUTCOMES
from routing.models import utcnow

log = structlog.get_logger(__name__)

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


def read_training_data(settings: Settings, engine: Engine) -> tuple[Any, str]:
    """`flows.retrain.read_training_data` with the history the settings name (and the store's pseudonym key)."""
    return flows_retrain.read_training_data(
        engine=engine, registry=settings.registry_path, history_log=settings.retrain_history_log,
        history_tickets=settings.retrain_history_tickets, history_days=settings.retrain_history_days,
        pseudonym_key=settings.pseudonym_key.get_secret_value())


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
        "golden": flows_retrain.read_golden(settings.retrain_golden_tickets),
        "gate": {"tolerance": settings.retrain_gate_tolerance, "z": settings.retrain_gate_z,
                 "min_cases": settings.retrain_gate_min_cases},
        "gate_fraction": settings.retrain_gate_fraction,
    }


async def _train_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Run `flows.retrain.train_and_gate(payload)` in a fresh process; terminate it if the job is cancelled
    (shutdown)."""
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


def _undo_promotions(settings: Settings, job: RetrainJob) -> None:
    """Point every task this job promoted back at the version live before it (the new set failed to load)."""
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(settings.registry_path)
    for task, version in job.promoted.items():
        try:
            reg.rollback(task, who=job.requested_by, why=f"job {job.id}: {task}/{version} failed to load with the "
                         "live models; rolled back")
        except DeskpilotError as exc:  # nothing earlier to go back to: the job's error says what failed
            log.warning("retrain_undo_failed", job=job.id, task=task, error=exc.message)
    job.skipped.update({t: f"promoted, then rolled back: the new set failed to load (version {v} stays in the "
                           "registry)" for t, v in job.promoted.items()})
    job.promoted = {}


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
        # What this worker serves before the promotion: the registry watcher may follow the new pointers before
        # this job's own reload below, so `old` from that reload can already be the new set.
        serving_before = dict(app.state.models.versions)
        promoted = await anyio.to_thread.run_sync(apply_result, settings, job, result)
        if job.options.evaluate_only:
            outcome = "evaluated"
        elif job.status == "rejected":
            outcome = "rejected"
        else:
            if promoted:
                await stage("loading the new models")
                _, new = await reload(app)
                job.previous, job.serving, job.swapped = serving_before, dict(new.versions), new.ready
                if not new.ready:
                    # The old models still serve here; the registry points back at them too, so a restart or
                    # another worker following the registry does not pick up a set that cannot serve.
                    await anyio.to_thread.run_sync(_undo_promotions, settings, job)
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
        result = _plain(flows_retrain.train_and_gate(make_payload(settings, engine, data, job.options)))
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
        conn.send(("ok", _plain(flows_retrain.train_and_gate(payload))))
    except DeskpilotError as exc:
        conn.send(("error", (exc.code, exc.message)))
    except BaseException as exc:  # report anything, or the parent only sees an exit code
        conn.send(("crash", f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"))
    finally:
        conn.close()


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
