"""The router's memory of resolutions, fed by the live service and shared by every worker through the database.

A ticket event that resolves or closes a ticket with a team (the activity patterns of
insight.mining.labels.LabelConfig, the same that label training data) adds a `router_resolution` row: the ticket's
creation-time attributes as routed, the team, and when it was resolved (`record_resolution`). Each process applies
new rows to its own in-memory router with `TeamRouter.observe()` (`sync_router_memory`): rows above a high-water
mark, checked at most every `ModelBundle.memory_refresh_seconds` before routing (and at once after an event of
this process). A freshly loaded bundle starts at mark 0, so a model swap rebuilds the memory as the new model's
fitted memory plus the stored rows resolved after its training window. Ids that commit out of order (PostgreSQL
sequences are handed out before commit) are retried for `GAP_RETRY_SECONDS` before being given up as rolled back.
Routers fitted without history have no memory: rows are still stored, nothing is applied.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import structlog
from sqlalchemy import Connection, Engine, Table, bindparam, or_, select
from sqlmodel import Session

from routing.models import EventIn, RouterResolution, Ticket, as_utc, utcnow

if TYPE_CHECKING:  # routing.triage imports this module (its ReadWriteLock); the bundle is only a type here
    from routing.triage import ModelBundle

log = structlog.get_logger(__name__)

RESOLUTION: Table = RouterResolution.__table__  # type: ignore[attr-defined]
GAP_RETRY_SECONDS = 60.0


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    from insight.mining.labels import LabelConfig

    cfg = LabelConfig()
    return re.compile(cfg.resolve_pattern, re.IGNORECASE), re.compile(cfg.close_pattern, re.IGNORECASE)


_RESOLVE, _CLOSE = _patterns()


class ReadWriteLock:
    """Many readers (routing threads ranking teams) or one writer (observe() changing the memory)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        """Shared access."""
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Exclusive access (waits for the readers in flight)."""
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def resolution_kind(activity: str) -> str | None:
    """'resolve' or 'close' when the activity resolves or closes a ticket (LabelConfig patterns), else None."""
    if _RESOLVE.search(activity):
        return "resolve"
    if _CLOSE.search(activity):
        return "close"
    return None


def routed_attributes(ticket: Ticket) -> dict[str, Any]:
    """The ticket's creation-time attributes the way triage hands them to the router (text left out)."""
    return {"channel": ticket.channel, "segment": ticket.segment, "priority": ticket.priority,
            "intent": ticket.current_intent, **dict(ticket.custom_fields or {})}


def record_resolution(session: Session, *, ticket: Ticket, event_in: EventIn, event_id: int | None,
                      resolved_at: datetime) -> RouterResolution | None:
    """Add a resolution row when the event resolves or closes the ticket with a team (inside the caller's
    transaction). The team is the event's group, else the team holding the ticket. As in the mined labels, a
    resolve counts over a close: a close adds a row only when the ticket has none; a repeated resolve by the same
    team adds nothing."""
    kind = resolution_kind(event_in.activity)
    team = event_in.group or ticket.assigned_group
    if kind is None or not team:
        return None
    prior = session.connection().execute(
        select(RESOLUTION.c.team).where(RESOLUTION.c.ticket_id == ticket.ticket_id)).scalars().all()
    if (kind == "close" and prior) or (kind == "resolve" and team in prior):
        return None
    row = RouterResolution(ticket_id=ticket.ticket_id, event_id=event_id, team=team,
                           attributes=routed_attributes(ticket), resolved_at=resolved_at)
    session.add(row)
    return row


def has_memory(bundle: ModelBundle) -> bool:
    """True for a triage bundle whose router keeps a memory of resolutions (fitted with history)."""
    router = getattr(bundle, "router", None)
    return router is not None and bool(getattr(router, "history", False)) and hasattr(bundle, "memory_lock")


_NEW_ROWS = select(RESOLUTION.c.id, RESOLUTION.c.team, RESOLUTION.c.attributes, RESOLUTION.c.resolved_at).where(
    or_(RESOLUTION.c.id > bindparam("hwm"), RESOLUTION.c.id.in_(bindparam("gaps", expanding=True)))
).order_by(RESOLUTION.c.id)


def sync_router_memory(conn: Connection | Session | Engine, bundle: ModelBundle, *, force: bool = False) -> int:
    """Apply stored resolutions this process has not seen to the bundle's router; returns how many were applied.

    `conn`: an SQLAlchemy Connection, Session or Engine. Without `force`, at most one check per
    `bundle.memory_refresh_seconds`; a thread arriving while another checks waits for that check.
    """
    if not has_memory(bundle):
        return 0
    now = time.monotonic()
    if not force and now - bundle.memory_checked < bundle.memory_refresh_seconds:
        return 0
    with bundle.memory_sync_lock:  # a thread that finds another one checking waits for its result
        if not force and time.monotonic() - bundle.memory_checked < bundle.memory_refresh_seconds:
            return 0
        return _apply_new_rows(conn, bundle, time.monotonic())


def _apply_new_rows(conn: Connection | Session | Engine, bundle: ModelBundle, now: float) -> int:
    bundle.memory_checked = now
    gaps = [i for i, seen in bundle.memory_gaps.items() if now - seen < GAP_RETRY_SECONDS]
    bundle.memory_gaps = {i: bundle.memory_gaps[i] for i in gaps}
    params = {"hwm": bundle.memory_hwm, "gaps": gaps or [-1]}
    if isinstance(conn, Session):
        rows = conn.connection().execute(_NEW_ROWS, params).all()
    elif isinstance(conn, Engine):
        with conn.connect() as c:
            rows = c.execute(_NEW_ROWS, params).all()
    else:
        rows = conn.execute(_NEW_ROWS, params).all()
    if not rows:
        return 0
    for r in rows:
        bundle.memory_gaps.pop(r.id, None)
    top = max(r.id for r in rows)
    missing = set(range(bundle.memory_hwm + 1, top + 1)) - {r.id for r in rows}
    for i in missing:
        bundle.memory_gaps.setdefault(i, now)
    bundle.memory_hwm = max(bundle.memory_hwm, top)
    until = bundle.router_trained_until
    keep = [r for r in rows if until is None or (as_utc(r.resolved_at) or utcnow()) > until]
    if keep:
        cats = list(getattr(bundle.router, "cat_", None) or bundle.router.categorical or [])
        frame = pd.DataFrame([{c: (r.attributes or {}).get(c) for c in cats} for r in keep], columns=cats,
                             dtype=object)
        with bundle.memory_lock.write():
            bundle.router.observe(frame, [r.team for r in keep], [as_utc(r.resolved_at) for r in keep])
        bundle.memory_applied += len(keep)
    return len(keep)


__all__ = ["ReadWriteLock", "has_memory", "record_resolution", "resolution_kind", "routed_attributes",
           "sync_router_memory"]
