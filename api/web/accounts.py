"""People's accounts for the web app: the `users` table, argon2 password hashes, lock-out after failed sign-ins.

Roles are the API's roles (api.auth.ROLES) and are checked with the same `Principal.allowed` rule. Machines keep
API keys; people sign in with a username and password.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, DateTime
from sqlmodel import Field, Session, SQLModel, col, select

from api.auth import ROLES, Principal
from core.errors import Conflict, InvalidInput, NotFound
from routing.models import as_utc, utcnow

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256


class User(SQLModel, table=True):
    """A person who signs in to the web app; only the argon2 hash of the password is stored."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=32)
    disabled: bool = False
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # Bumped when the password, role or disabled flag changes: sessions signed with an older value end.
    session_version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    last_login_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


@dataclass(frozen=True)
class UserPublic:
    """A user as shown to admins (never the hash)."""

    id: int
    username: str
    role: str
    disabled: bool
    locked_until: datetime | None
    failed_logins: int
    created_at: datetime | None
    last_login_at: datetime | None

    @classmethod
    def of(cls, u: User) -> UserPublic:
        """Build from a row."""
        assert u.id is not None
        return cls(id=u.id, username=u.username, role=u.role, disabled=u.disabled, locked_until=as_utc(u.locked_until),
                   failed_logins=u.failed_logins, created_at=as_utc(u.created_at),
                   last_login_at=as_utc(u.last_login_at))

    @property
    def locked(self) -> bool:
        """True while a lock-out lasts."""
        return self.locked_until is not None and self.locked_until > utcnow()


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: the user, or why not (`reason` is safe to show)."""

    user: UserPublic | None
    reason: str | None = None
    session_version: int = 0

    @property
    def principal(self) -> Principal | None:
        """The principal of a successful sign-in."""
        return Principal(name=self.user.username, role=self.user.role) if self.user else None


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    """argon2id with the library's (RFC 9106 low-memory) parameters."""
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against for unknown usernames, so a wrong name costs as long as a wrong password.
    return hasher().hash("deskpilot-no-such-user")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is unknown; use one of {', '.join(ROLES)}", field="role")
    return role


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD} characters", field="password")
    return password


def _get(session: Session, username: str) -> User:
    row = session.exec(select(User).where(User.username == username)).first()
    if row is None:
        raise NotFound(f"no user named {username!r}")
    return row


def create_user(*, session: Session, username: str, password: str, role: str) -> UserPublic:
    """Create a user (username unique; password hashed with argon2id)."""
    username = username.strip()
    if not USERNAME.match(username):
        raise InvalidInput("username must be 1..64 characters: letters, digits and . _ @ - (starting with a letter "
                           "or digit)", field="username")
    _check_role(role)
    _check_password(password)
    if session.exec(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"a user named {username!r} already exists", field="username")
    row = User(username=username, password_hash=hasher().hash(password), role=role)
    session.add(row)
    session.commit()
    session.refresh(row)
    return UserPublic.of(row)


def list_users(*, session: Session) -> list[UserPublic]:
    """All users, oldest first."""
    return [UserPublic.of(u) for u in session.exec(select(User).order_by(col(User.id))).all()]


def get_user(*, session: Session, username: str) -> UserPublic:
    """One user by name (NotFound otherwise)."""
    return UserPublic.of(_get(session, username))


def set_disabled(*, session: Session, username: str, disabled: bool) -> UserPublic:
    """Disable (their sessions end at once) or enable a user."""
    row = _get(session, username)
    row.disabled = disabled
    row.session_version += 1
    session.add(row)
    session.commit()
    return UserPublic.of(row)


def set_role(*, session: Session, username: str, role: str) -> UserPublic:
    """Change a user's role (their sessions end, so the new role applies from the next sign-in)."""
    _check_role(role)
    row = _get(session, username)
    row.role = role
    row.session_version += 1
    session.add(row)
    session.commit()
    return UserPublic.of(row)


def set_password(*, session: Session, username: str, password: str) -> UserPublic:
    """Set a new password; ends the user's sessions and lifts a lock-out."""
    _check_password(password)
    row = _get(session, username)
    row.password_hash = hasher().hash(password)
    row.failed_logins, row.locked_until = 0, None
    row.session_version += 1
    session.add(row)
    session.commit()
    return UserPublic.of(row)


def sign_in(*, session: Session, username: str, password: str, max_failed: int,
            lockout: timedelta) -> SignIn:
    """Check a username and password; counts failures and locks the account after `max_failed` in a row.

    The reason given for a refusal never tells a wrong username from a wrong password.
    """
    wrong = "wrong username or password"
    row = session.exec(select(User).where(User.username == username.strip())).first()
    if row is None:
        with contextlib.suppress(VerificationError):
            hasher().verify(_dummy_hash(), password)
        return SignIn(user=None, reason=wrong)
    now = utcnow()
    locked_until = as_utc(row.locked_until)
    if locked_until is not None and locked_until > now:
        return SignIn(user=None, reason=f"this account is locked after repeated failed sign-ins until "
                                        f"{locked_until:%H:%M} UTC; an admin can reset the password")
    ok: bool
    try:
        ok = bool(hasher().verify(row.password_hash, password))
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        row.failed_logins += 1
        if row.failed_logins >= max_failed:
            row.locked_until, row.failed_logins = now + lockout, 0
        session.add(row)
        session.commit()
        return SignIn(user=None, reason=wrong)
    if row.disabled:
        return SignIn(user=None, reason="this account is disabled; ask an admin")
    if hasher().check_needs_rehash(row.password_hash):
        row.password_hash = hasher().hash(password)
    row.failed_logins, row.locked_until, row.last_login_at = 0, None, now
    session.add(row)
    session.commit()
    return SignIn(user=UserPublic.of(row), session_version=row.session_version)


def session_user(*, session: Session, user_id: int, session_version: int) -> UserPublic | None:
    """The user behind a session cookie, if the session is still valid (enabled, same session version)."""
    row = session.get(User, user_id)
    if row is None or row.disabled or row.session_version != session_version:
        return None
    return UserPublic.of(row)


def as_dict(u: UserPublic) -> dict[str, Any]:
    """A user as plain values (CLI tables)."""
    return {"username": u.username, "role": u.role, "disabled": u.disabled, "locked": u.locked,
            "created_at": u.created_at, "last_login_at": u.last_login_at}
