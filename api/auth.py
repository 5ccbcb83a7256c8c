"""API keys with roles (stored as sha256 hashes) and the `require(...)` dependency (the audit log: api.audit)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import structlog
from fastapi import HTTPException, Request
from sqlalchemy import Column, DateTime, Engine, Table, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

# The audit log lives in api.audit; these names stay importable from here.
from api.audit import WRITE_METHODS as WRITE_METHODS
from api.audit import AuditLog as AuditLog
from api.audit import AuditMiddleware as AuditMiddleware
from api.audit import AuditWriter as AuditWriter
from api.audit import insert_audit as insert_audit
from api.audit import set_audit_object as set_audit_object
from api.audit import write_audit as write_audit
from core.errors import Conflict, InvalidInput, NotFound
from routing.models import as_utc, utcnow

log = structlog.get_logger(__name__)

ROLES: tuple[str, ...] = ("helpdesk", "agent", "knowledge_manager", "analyst", "admin")
KEY_PREFIX = "dpk_"


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

    No per-process cache: a revoked key stops working at once in every worker and on every host (replicas share
    only the database, so a cache would need a signal every host sees at once, which is this very read). A Core
    select by the indexed hash (no ORM object) keeps this cheap; `require` runs it on a worker thread.
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
        # On a worker thread, not the event loop: a blocking database call there stalls every other request (and,
        # while other threads compute, waits for the GIL each time the driver releases it).
        principal = await anyio.to_thread.run_sync(_lookup_principal, request.app.state.engine, secret)
        if principal is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        if not principal.allowed(allowed):
            who = f"{', '.join(allowed)} or admin" if allowed else "admin only"
            raise HTTPException(403, f"role {principal.role!r} may not use this endpoint (allowed: {who})")
        return principal

    return _dep
