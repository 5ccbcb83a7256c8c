"""API keys with roles (stored as sha256 hashes), the `require(...)` dependency, and the audit log of writes."""

from __future__ import annotations

import hashlib
import hmac
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from fastapi import HTTPException, Request
from sqlalchemy import Column, DateTime, Engine, Table, bindparam, insert
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from insight.errors import Conflict, InvalidInput, NotFound
from routing.models import as_utc, utcnow

log = structlog.get_logger(__name__)

ROLES: tuple[str, ...] = ("helpdesk", "agent", "knowledge_manager", "analyst", "admin")
KEY_PREFIX = "dpk_"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiKey(SQLModel, table=True):
    """An API key: only the sha256 of the secret is stored; `prefix` lets people tell keys apart."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    role: str = Field(max_length=32)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


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


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid API key."""

    name: str
    role: str

    def allowed(self, roles: tuple[str, ...]) -> bool:
        """Admin may do anything; everyone else only what their role is listed for."""
        return self.role == "admin" or self.role in roles


@dataclass
class CreatedKey:
    """A newly created key: `secret` is shown once and never stored."""

    name: str
    role: str
    prefix: str
    secret: str


def hash_key(secret: str) -> str:
    """sha256 hex of a key (keys are 256-bit random tokens, so a plain hash is enough; no salt/KDF needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is unknown; use one of {', '.join(ROLES)}", field="role")
    return role


def create_key(*, session: Session, name: str, role: str, secret: str | None = None) -> CreatedKey:
    """Create a key for `name` with `role`; returns the secret once (pass `secret` only for bootstrap keys)."""
    _check_role(role)
    if not name or len(name) > 128:
        raise InvalidInput("name must be 1..128 characters", field="name")
    if session.exec(select(ApiKey).where(ApiKey.name == name)).first() is not None:
        raise Conflict(f"an API key named {name!r} already exists; revoke it or pick another name", field="name")
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    if len(secret) < 24:
        raise InvalidInput("an API key must be at least 24 characters", field="secret")
    row = ApiKey(name=name, role=role, key_hash=hash_key(secret), prefix=secret[:8])
    session.add(row)
    session.commit()
    return CreatedKey(name=name, role=role, prefix=row.prefix, secret=secret)


def ensure_key(*, session: Session, name: str, role: str, secret: str) -> None:
    """Make sure a key with exactly this secret exists (idempotent; used for the demo's bootstrap admin key)."""
    _check_role(role)
    h = hash_key(secret)
    if session.exec(select(ApiKey).where(ApiKey.key_hash == h)).first() is not None:
        return
    existing = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if existing is not None:
        # The configured bootstrap secret changed: the old one must stop working.
        existing.key_hash, existing.prefix, existing.role, existing.revoked_at = h, secret[:8], role, None
        session.add(existing)
        session.commit()
        return
    create_key(session=session, name=name, role=role, secret=secret)


def revoke_key(*, session: Session, name: str) -> None:
    """Revoke a key by name (it stops working at once)."""
    row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if row is None:
        raise NotFound(f"no API key named {name!r}")
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()


def list_keys(*, session: Session) -> list[dict[str, Any]]:
    """All keys (never their secrets)."""
    rows = session.exec(select(ApiKey).order_by(col(ApiKey.id))).all()
    return [
        {"name": r.name, "role": r.role, "prefix": r.prefix, "created_at": as_utc(r.created_at),
         "revoked_at": as_utc(r.revoked_at)}
        for r in rows
    ]


def authenticate(*, session: Session, secret: str) -> Principal | None:
    """The principal of a valid, unrevoked key, else None."""
    h = hash_key(secret)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == h)).first()
    # compare_digest on the hash keeps the comparison constant-time even though the lookup was by index.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, h):
        return None
    return Principal(name=row.name, role=row.role)


def _secret_from(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


_KEYS: Table = ApiKey.__table__  # type: ignore[attr-defined]
_KEY_BY_HASH = sa_select(_KEYS.c.key_hash, _KEYS.c.name, _KEYS.c.role, _KEYS.c.revoked_at).where(
    _KEYS.c.key_hash == bindparam("h"))


def _lookup_principal(engine: Engine, secret: str) -> Principal | None:
    """The principal of a valid, unrevoked key, asked of the database on every request.

    No per-process cache: a revoked key stops working at once in every worker and on every host. A Core select by
    the indexed hash (no ORM object) keeps this cheap.
    """
    h = hash_key(secret)
    with engine.connect() as conn:
        row = conn.execute(_KEY_BY_HASH, {"h": h}).first()
    # compare_digest on the hash keeps the comparison constant-time even though the lookup was by index.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, h):
        return None
    return Principal(name=row.name, role=row.role)


def require(*roles: str) -> Any:
    """Dependency: the caller must hold a valid key of one of `roles` (admin always passes); 401 / 403 otherwise."""
    for r in roles:
        _check_role(r)
    allowed = tuple(roles)

    async def _dep(request: Request) -> Principal:
        secret = _secret_from(request)
        if not secret:
            raise HTTPException(401, "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = _lookup_principal(request.app.state.engine, secret)
        if principal is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        if not principal.allowed(allowed):
            who = f"{', '.join(allowed)} or admin" if allowed else "admin only"
            raise HTTPException(403, f"role {principal.role!r} may not use this endpoint (allowed: {who})")
        return principal

    return _dep


def set_audit_object(request: Request, object_id: Any) -> None:
    """Views call this to name the object a write touched (for the audit log)."""
    request.state.audit_object_id = str(object_id)


AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]
_INSERT_AUDIT = insert(AUDIT)


def insert_audit(engine: Engine, row: dict[str, Any]) -> None:
    """Store one audit row (a dict of AuditLog's columns; `at` defaults to now) in its own transaction.

    A Core insert: building an AuditLog SQLModel object (validation) and flushing it through a Session cost
    several times as much, on every write request (docs/PERFORMANCE.md, "Service and API").
    """
    with engine.begin() as conn:
        conn.execute(_INSERT_AUDIT, {"at": utcnow(), **row})


def write_audit(engine: Engine, entry: AuditLog) -> None:
    """Store one audit row in its own transaction (separate from the request's own)."""
    insert_audit(engine, entry.model_dump(exclude={"id"}))


class AuditWriter:
    """Audit rows written by one background thread, as many per transaction as are waiting (at most `max_batch`).

    A write request only queues its row. Writing each row in its own transaction on a worker thread after the
    response slowed every sequential route request (the thread hop and the commit ran next to the following
    request); drained in batches the commit is shared. `flush()` waits until every queued row is stored (readers of
    the audit log call it first); `close()` flushes and stops the thread (the app's shutdown calls it before the
    engine goes). Rows still queued when the process is killed are lost, as a row not yet written after its response
    was before; a failed insert is logged with the rows it lost and the writer goes on.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 500, linger_seconds: float = 0.1) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="deskpilot-audit", daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one row (a dict of AuditLog's columns; `at` defaults to now). After `close()` (a request finishing
        during shutdown) the row is written at once, in the caller's thread."""
        if not self._thread.is_alive():
            self._store([{"at": utcnow(), **row}])
            return
        with self._done:
            self._pending += 1
        self._queue.put({"at": utcnow(), **row})

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is stored (or failed and was logged); False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            rows: list[dict[str, Any]] = []
            if first is None:
                stop = True
            else:
                rows.append(first)
            # Linger a little for more rows: one commit then serves many requests, also when they come one by one.
            until = time.monotonic() + self.linger_seconds
            while len(rows) < self.max_batch and not stop:
                try:
                    nxt = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    continue
                rows.append(nxt)
            if rows:
                self._store(rows)
                with self._done:
                    self._pending -= len(rows)
                    self._done.notify_all()


    def _store(self, rows: list[dict[str, Any]]) -> None:
        """One transaction for the batch; if it fails, each row alone, so one bad row never drops the others."""
        rows = [_storable(r) for r in rows]
        try:
            with self.engine.begin() as conn:
                conn.execute(_INSERT_AUDIT, rows)
            return
        except Exception as exc:
            if len(rows) == 1:
                log.error("audit_write_failed", rows=1, paths=[str(rows[0].get("path"))],
                          error=f"{type(exc).__name__}: {exc}")
                return
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(_INSERT_AUDIT, row)
            except Exception as exc:  # loud in the log; the request it records has been answered already
                log.error("audit_write_failed", rows=1, paths=[str(row.get("path"))],
                          error=f"{type(exc).__name__}: {exc}")


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with NUL characters removed from its texts (PostgreSQL refuses them in text columns)."""
    return {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in row.items()}


class AuditMiddleware:
    """ASGI middleware recording every write request (POST/PUT/PATCH/DELETE) with its final status."""

    def __init__(self, app: ASGIApp, *, get_writer: Any) -> None:
        self.app = app
        self.get_writer = get_writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state = scope.get("state") or {}
            principal = state.get("principal")
            route = scope.get("route")
            path_params = scope.get("path_params") or {}
            object_id = state.get("audit_object_id") or (
                ",".join(str(v) for v in path_params.values()) if path_params else None
            )
            row = {
                "at": utcnow(), "who": getattr(principal, "name", None), "role": getattr(principal, "role", None),
                "method": str(scope.get("method")), "path": str(scope.get("path", ""))[:512],
                "route": getattr(route, "path", None), "object_id": object_id[:256] if object_id else None,
                "status": status,
            }
            writer = self.get_writer()
            if writer is not None:  # None before the app's lifespan has started: nothing to write to
                writer.submit(row)
