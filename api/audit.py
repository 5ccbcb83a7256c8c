"""The audit log of writes: its table, how rows are stored durably, and the query behind `GET /v1/audit`.

Every write an API client is told succeeded has its audit row stored before the response starts:

- a write made through the request's session (`api.deps.get_session` hands out an `AuditedSession`) stores the row
  in the same transaction as the write (a `before_commit` hook), so the two are committed or lost together;
- a refusal (401, 403, 404, 409, 422, 413, ...) or a write that committed nothing through that session gets its
  row from `AuditMiddleware` in its own transaction, awaited before the response start is sent;
- a request shed under overload (503 `overloaded` from api.limits, or a client that left while it waited) is the
  exception: its row is queued on the writer and stored by its next group commit (within `lazy_linger_seconds`,
  0.1 s, plus the commit), not awaited, so a refusal costs the event loop no database round trip. A kill -9 can thereby lose the rows of requests shed in
  the last moments before it; none of them wrote anything. While more than `AuditWriter.max_unawaited` rows are
  queued, a shed request waits for its row like any other refusal (the queue stays bounded);
- when the answer differs from what the committed row assumed (status, object id) the row is corrected, also
  before the response starts.

Writes outside a request (CLI, retrain jobs) use `audited_session(...)` or `write_audit(...)`.
"""

from __future__ import annotations

import asyncio
import getpass
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from pydantic import BaseModel
from sqlalchemy import Column, DateTime, Engine, Table, bindparam, event, insert, update
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi import ResponseStatus
from core.errors import InvalidInput
from core.ids import storable_id
from routing.models import as_utc, utcnow

log = structlog.get_logger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_PAGE = 1000


class AuditLog(SQLModel, table=True):
    """One write request: who (key name and role), what (method, path, object id), when, and its status."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    who: str | None = Field(default=None, max_length=128, index=True)
    role: str | None = Field(default=None, max_length=32)
    method: str = Field(max_length=8)
    path: str = Field(max_length=512)
    route: str | None = Field(default=None, max_length=256)
    object_id: str | None = Field(default=None, max_length=256)
    status: int


AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]
_INSERT_AUDIT = insert(AUDIT)
_FIX_AUDIT = update(AUDIT).where(AUDIT.c.id == bindparam("row_id")).values(
    status=bindparam("new_status"), object_id=bindparam("new_object_id"))
_LIMITS = {"who": 128, "role": 32, "method": 8, "path": 512, "route": 256, "object_id": 256}


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with NUL characters removed from its texts (PostgreSQL refuses them) and texts cut to their columns."""
    out = {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in row.items()}
    for k, n in _LIMITS.items():
        if isinstance(out.get(k), str):
            out[k] = out[k][:n]
    return out


def insert_audit(engine: Engine, row: dict[str, Any]) -> None:
    """Store one audit row (a dict of AuditLog's columns; `at` defaults to now) in its own transaction."""
    with engine.begin() as conn:
        conn.execute(_INSERT_AUDIT, _storable({"at": utcnow(), **row}))


def write_audit(engine: Engine, entry: AuditLog) -> None:
    """Store one audit row in its own transaction (for writes made outside a request, e.g. a retrain job)."""
    insert_audit(engine, entry.model_dump(exclude={"id"}))


# --- rows stored in the write's own transaction ---------------------------------------------------------------


class AuditContext:
    """What an `AuditedSession` records at its first commit; subclasses say who and what."""

    committed_id: int | None = None

    def row(self) -> dict[str, Any] | None:
        """The audit row for this unit of work, or None when it is not audited (a read)."""
        raise NotImplementedError

    def committed(self, row_id: int, row: dict[str, Any]) -> None:
        """Called once the row is committed with the write."""
        self.committed_id = row_id


def _object_id(state: dict[str, Any], path_params: dict[str, Any]) -> str | None:
    oid = state.get("audit_object_id")
    if oid is None and path_params:
        oid = ",".join(str(v) for v in path_params.values())
    return oid[:256] if oid else None


def _request_row(scope: Scope, status: int) -> dict[str, Any]:
    state = scope.get("state") or {}
    principal = state.get("principal")
    route = scope.get("route")
    return {
        "at": utcnow(), "who": getattr(principal, "name", None), "role": getattr(principal, "role", None),
        "method": str(scope.get("method")), "path": str(scope.get("path", "")),
        "route": getattr(route, "path", None), "object_id": _object_id(state, scope.get("path_params") or {}),
        "status": status,
    }


class RequestAudit(AuditContext):
    """The audit context of one HTTP request: reads who / route / object id from the ASGI scope at commit time."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def row(self) -> dict[str, Any] | None:
        """The request's row, assuming the route's declared success status (corrected later if it differs)."""
        if self.scope.get("method") not in WRITE_METHODS:
            return None
        route = self.scope.get("route")
        return _request_row(self.scope, int(getattr(route, "status_code", None) or 200))

    def committed(self, row_id: int, row: dict[str, Any]) -> None:
        """Tell the middleware the row exists (it corrects status / object id if the answer differs)."""
        self.committed_id = row_id
        self.scope.setdefault("state", {})["audit_row"] = (row_id, row["status"], row["object_id"])


class FixedAudit(AuditContext):
    """An audit context for writes outside a request (CLI commands): a fixed who / action / object."""

    def __init__(self, *, who: str | None, role: str | None, method: str, path: str,
                 object_id: str | None = None, status: int = 200) -> None:
        self.values = {"who": who, "role": role, "method": method, "path": path, "route": None,
                       "object_id": object_id, "status": status}

    def row(self) -> dict[str, Any] | None:
        """The fixed row, stamped now."""
        return {"at": utcnow(), **self.values}


class AuditedSession(Session):
    """A Session whose first commit also stores the audit row of its unit of work, in the same transaction."""


@event.listens_for(AuditedSession, "before_commit")
def _audit_before_commit(session: Session) -> None:
    ctx: AuditContext | None = session.info.get("audit")
    if ctx is None or ctx.committed_id is not None:
        return  # not audited, or this request's row is committed already (a second transaction)
    row = ctx.row()
    if row is None:
        return
    row = _storable(row)
    result = session.connection().execute(_INSERT_AUDIT, row)
    key = result.inserted_primary_key
    assert key is not None  # a single-row insert always reports its key
    session.info["audit_pending"] = (int(key[0]), row)


@event.listens_for(AuditedSession, "after_commit")
def _audit_after_commit(session: Session) -> None:
    pending = session.info.pop("audit_pending", None)
    if pending is not None:
        session.info["audit"].committed(*pending)


@event.listens_for(AuditedSession, "after_rollback")
def _audit_after_rollback(session: Session) -> None:
    session.info.pop("audit_pending", None)  # the row went with the failed transaction; the middleware writes one


def request_session(engine: Engine, scope: Scope) -> AuditedSession:
    """A session for one HTTP request: a write request's first commit carries its audit row."""
    session = AuditedSession(engine, expire_on_commit=False)
    session.info["audit"] = RequestAudit(scope)
    return session


def cli_actor() -> str:
    """Who runs a CLI command, for the audit log (`cli:<OS user>`)."""
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except Exception:  # no user name in a bare container: still say it came from the CLI
        return "cli"


def audited_session(engine: Engine, *, action: str, object_id: str | None = None, who: str | None = None,
                    role: str | None = None, method: str = "CLI") -> AuditedSession:
    """A session whose first commit stores an audit row for `action` (e.g. "keys create") in the same transaction.

    Creates the audit table if the database has none yet (a CLI command may be the first thing to touch it).
    """
    AUDIT.create(engine, checkfirst=True)
    session = AuditedSession(engine, expire_on_commit=False)
    session.info["audit"] = FixedAudit(who=who or cli_actor(), role=role, method=method, path=action,
                                       object_id=object_id)
    return session


def set_session_object(session: Session, object_id: Any) -> None:
    """Name the object a CLI write touches (before its commit) in the row `audited_session` stores."""
    ctx = session.info.get("audit")
    if isinstance(ctx, FixedAudit):
        ctx.values["object_id"] = str(object_id)[:256]


def set_audit_object(request: Any, object_id: Any) -> None:
    """Views call this to name the object a write touched (for the audit log)."""
    request.state.audit_object_id = str(object_id)


# --- rows stored in their own transaction (refusals, corrections) ---------------------------------------------


@dataclass
class _Op:
    row: dict[str, Any] | None = None  # an insert
    fix: dict[str, Any] | None = None  # or a correction of a committed row: row_id, new_status, new_object_id
    done: Callable[[bool], None] | None = None
    lazy: bool = False  # nobody waits for it (a shed request's row): the writer may gather more before committing


class AuditWriter:
    """Stores audit rows (and corrections) on one thread, as many per transaction as are waiting: group commit.

    A caller that must not answer before its row is stored awaits `write()` / `fix()`: rows queued while one
    transaction commits share the next one, so a burst of refusals costs a few commits, not one each. Nothing waits
    for more rows (`linger_seconds` 0); a failed batch is retried row by row, so one bad row never drops another.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 500, linger_seconds: float = 0.0,
                 max_unawaited: int = 10_000, lazy_linger_seconds: float = 0.1) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_unawaited = max_unawaited
        # A batch of rows nobody waits for waits this long for more (one commit for a burst of refusals, not one
        # per refusal: under overload the writer would otherwise compete with the routing threads for the database
        # and the CPU); a row somebody waits for ends the wait.
        self.lazy_linger_seconds = lazy_linger_seconds
        self.linger_seconds = linger_seconds
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._pending = 0
        self._closed = False
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="deskpilot-audit", daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any], done: Callable[[bool], None] | None = None) -> None:
        """Queue one row (`at` defaults to now); `done(stored)` is called from the writer thread when it is stored
        or failed. After `close()` the row is written at once, in the caller's thread."""
        self._put(_Op(row={"at": utcnow(), **row}, done=done))

    def _enqueue(self, op: _Op) -> bool:
        # Under the lock: every op queued before close() precedes its stop marker, so none is left behind.
        with self._done:
            if self._closed or not self._thread.is_alive():
                return False
            self._pending += 1
            self._queue.put(op)
            return True

    def _put(self, op: _Op) -> None:
        if not self._enqueue(op):
            self._store([op])

    async def _await(self, op: _Op) -> bool:
        if self._closed or not self._thread.is_alive():  # shutting down: store it in a worker thread
            stored: list[bool] = []
            op.done = stored.append
            await anyio.to_thread.run_sync(self._store, [op])
            return bool(stored and stored[0])
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def resolve(ok: bool) -> None:
            if not fut.done():
                fut.set_result(ok)

        def done(ok: bool) -> None:
            loop.call_soon_threadsafe(resolve, ok)

        op.done = done
        self._put(op)  # stored at once (done called) if the writer closed in the meantime
        # shield: a cancelled request (client gone) still gets its row; it just stops waiting for it.
        return await asyncio.shield(fut)

    @property
    def pending(self) -> int:
        """Rows and corrections queued and not yet stored (or failed)."""
        return self._pending

    async def queue(self, row: dict[str, Any]) -> None:
        """Queue one row without waiting for it (a shed request's row); waits like `write` when the queue holds more
        than `max_unawaited`, so a writer that falls behind slows refusals down instead of growing memory."""
        if self._pending >= self.max_unawaited:
            await self.write(row)
        else:
            self._put(_Op(row={"at": utcnow(), **row}, lazy=True))

    async def write(self, row: dict[str, Any]) -> bool:
        """Store one row and wait until it is committed (False if it could not be stored; that is logged)."""
        return await self._await(_Op(row={"at": utcnow(), **row}))

    async def fix(self, row_id: int, *, status: int, object_id: str | None) -> bool:
        """Correct the status / object id of a committed row and wait until that is committed."""
        return await self._await(_Op(fix={"row_id": row_id, "new_status": status,
                                          "new_object_id": object_id[:256] if object_id else None}))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is stored (or failed and was logged); False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the thread; rows submitted afterwards are stored in the caller's thread."""
        with self._done:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            ops: list[_Op] = []
            if first is None:
                stop = True
            else:
                ops.append(first)
            until = None
            all_lazy = bool(ops) and ops[0].lazy
            while len(ops) < self.max_batch and not stop:
                linger = self.linger_seconds or (self.lazy_linger_seconds if all_lazy else 0.0)
                try:
                    if linger > 0:
                        until = until or (time.monotonic() + linger)
                        nxt = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                    else:
                        nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    continue
                ops.append(nxt)
                all_lazy = all_lazy and nxt.lazy
            if ops:
                self._store(ops)
                with self._done:
                    self._pending -= len(ops)
                    self._done.notify_all()

    def _execute(self, ops: list[_Op]) -> None:
        rows = [_storable(op.row) for op in ops if op.row is not None]
        fixes = [_storable(op.fix) for op in ops if op.fix is not None]
        with self.engine.begin() as conn:
            if rows:
                conn.execute(_INSERT_AUDIT, rows)
            if fixes:
                conn.execute(_FIX_AUDIT, fixes)

    def _store(self, ops: list[_Op]) -> None:
        """One transaction for the batch; if it fails, each op alone, so one bad row never drops the others."""
        try:
            self._execute(ops)
            results = [(op, True) for op in ops]
        except Exception as exc:
            if len(ops) == 1:
                _log_failed(ops[0], exc)
                results = [(ops[0], False)]
            else:
                results = []
                for op in ops:
                    try:
                        self._execute([op])
                        results.append((op, True))
                    except Exception as one_exc:  # loud in the log; the other rows are kept
                        _log_failed(op, one_exc)
                        results.append((op, False))
        for op, ok in results:
            if op.done is not None:
                op.done(ok)


def _log_failed(op: _Op, exc: Exception) -> None:
    what = op.row.get("path") if op.row is not None else f"fix of row {op.fix and op.fix.get('row_id')}"
    log.error("audit_write_failed", rows=1, paths=[str(what)], error=f"{type(exc).__name__}: {exc}")


class AuditMiddleware:
    """ASGI middleware: every write request (POST/PUT/PATCH/DELETE) has its audit row stored before it is answered.

    A write committed through the request's session carried its row in its own transaction; this middleware only
    corrects that row when the answer differs (status, object id). Anything else (refusals, errors, writes that
    committed nothing through the request's session) gets its row here, awaited before the response start is sent;
    a request shed under overload has its row queued instead (module docstring).
    """

    def __init__(self, app: ASGIApp, *, get_writer: Callable[[], AuditWriter | None]) -> None:
        self.app = app
        self.get_writer = get_writer

    async def _record(self, scope: Scope, status: int) -> None:
        writer = self.get_writer()
        if writer is None:  # before the app's lifespan has started: nothing to write to
            return
        state = scope.get("state") or {}
        committed = state.get("audit_row")
        if committed is None:
            if state.get("shed"):  # refused under overload: queued, stored by the writer's next commit
                await writer.queue(_request_row(scope, status))
            else:
                await writer.write(_request_row(scope, status))
            return
        row_id, stored_status, stored_object = committed
        object_id = _object_id(state, scope.get("path_params") or {})
        if (status, object_id) != (stored_status, stored_object):
            await writer.fix(row_id, status=status, object_id=object_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return

        async def record(status: int) -> None:
            await self._record(scope, status)

        response = ResponseStatus(send, on_start=record)
        try:
            await self.app(scope, receive, response.send)
        except BaseException:
            if not response.started:
                with anyio.CancelScope(shield=True):
                    await self._record(scope, 500)
            raise


# --- reading the log -----------------------------------------------------------------------------------------


class AuditPublic(BaseModel):
    """One audit row as the API and the CLI show it."""

    id: int
    at: datetime
    who: str | None
    role: str | None
    method: str
    path: str
    route: str | None
    object_id: str | None
    status: int


class AuditPage(BaseModel):
    """One page of the audit log, newest first; pass `next_cursor` back as `cursor` for the next (older) page."""

    items: list[AuditPublic]
    next_cursor: str | None
    limit: int


def _text_filter(value: str | None, field: str) -> str | None:
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters", field=field)
    return value


def _utc(value: datetime | None, field: str) -> datetime | None:
    """`value` in UTC (naive means UTC): SQLite compares the stored UTC text, so another zone must be converted."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{field} {value.isoformat()} is out of range in UTC", field=field) from None


def query_audit(
    *,
    session: Session,
    who: str | None = None,
    role: str | None = None,
    method: str | None = None,
    path_prefix: str | None = None,
    status: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    object_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> AuditPage:
    """Audit rows matching every given filter, newest first, at most `limit` (1..1000) after `cursor`.

    `since` is inclusive, `until` exclusive (naive times are UTC); `path_prefix` matches the start of the path
    literally; `cursor` is the `next_cursor` of the previous page.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}", field="limit")
    q = sa_select(AUDIT)
    for field, value in (("who", who), ("role", role), ("object_id", object_id)):
        text = _text_filter(value, field)
        if text is not None:
            q = q.where(AUDIT.c[field] == text)
    m = _text_filter(method, "method")
    if m is not None:
        q = q.where(AUDIT.c.method == m.upper())
    prefix = _text_filter(path_prefix, "path_prefix")
    if prefix is not None:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(AUDIT.c.path.like(escaped + "%", escape="\\"))
    if status is not None:
        if not 100 <= status <= 599:
            raise InvalidInput(f"status must be an HTTP status between 100 and 599, got {status}", field="status")
        q = q.where(AUDIT.c.status == status)
    since, until = _utc(since, "since"), _utc(until, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be before until", field="since")
    if since is not None:
        q = q.where(AUDIT.c.at >= since)
    if until is not None:
        q = q.where(AUDIT.c.at < until)
    if cursor is not None and cursor != "":
        if not cursor.isdigit() or not storable_id(int(cursor)):
            raise InvalidInput("cursor is not one this endpoint gave out (use next_cursor of the previous page)",
                               field="cursor")
        q = q.where(AUDIT.c.id < int(cursor))
    rows = session.connection().execute(q.order_by(AUDIT.c.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    items = [AuditPublic(id=r.id, at=as_utc(r.at) or r.at, who=r.who, role=r.role, method=r.method, path=r.path,
                         route=r.route, object_id=r.object_id, status=r.status) for r in rows[:limit]]
    return AuditPage(items=items, next_cursor=str(items[-1].id) if more else None, limit=limit)
