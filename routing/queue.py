"""The triage queue: tickets whose current decision left them to people (triage / suggest), and who has claimed them.

A ticket is handled once feedback names its current decision or the ticket is resolved; a re-triage makes a new
current decision, so the ticket comes back. Claims are rows of `ticket_claim` (one per ticket).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from routing.models import (
    ClaimPublic,
    Feedback,
    QueueFilter,
    QueueItem,
    QueuePage,
    RouterResolution,
    Ticket,
    TicketClaim,
    TriageDecision,
    as_utc,
    utcnow,
)
from routing.queries import DECISION, TICKET

CLAIM = TicketClaim.__table__  # type: ignore[attr-defined]


def _check_ticket(session: Session, ticket_id: str) -> None:
    if session.exec(select(Ticket.id).where(Ticket.ticket_id == ticket_id)).first() is None:
        raise NotFound(f"ticket {ticket_id!r} is unknown; route it first (POST /v1/tickets/route)", ticket_id=ticket_id)


def list_queue(*, session: Session, queue_filter: QueueFilter, by: str | None = None) -> QueuePage:
    """Tickets left to people matching the filter, oldest received first, with their claims and the total count."""
    f = queue_filter
    now = utcnow()
    handled = exists().where(col(Feedback.ticket_id) == col(Ticket.ticket_id),
                             col(Feedback.decision_id) == col(Ticket.current_decision_id))
    resolved = exists().where(col(RouterResolution.ticket_id) == col(Ticket.ticket_id))
    conds: list[Any] = [col(TriageDecision.decision).in_(list(f.decisions))]
    if f.team:
        conds.append(TriageDecision.team == f.team)
    if f.intent:
        conds.append(Ticket.current_intent == f.intent)
    if f.max_age_hours is not None:
        conds.append(col(Ticket.received_at) >= now - timedelta(hours=f.max_age_hours))
    if f.claimed == "unclaimed":
        conds.append(col(TicketClaim.ticket_id).is_(None))
    elif f.claimed == "mine":
        conds.append(TicketClaim.claimed_by == (by or ""))
    if not f.include_handled:
        conds.extend([~handled, ~resolved])
    base = (core_select(TICKET.c.ticket_id).select_from(TICKET)
            .join(DECISION, DECISION.c.id == TICKET.c.current_decision_id)
            .outerjoin(CLAIM, CLAIM.c.ticket_id == TICKET.c.ticket_id)
            .where(*conds))
    total = int(session.execute(core_select(func.count()).select_from(base.subquery())).scalar_one())
    rows = session.exec(
        select(Ticket, TriageDecision, TicketClaim)
        .join(TriageDecision, col(TriageDecision.id) == col(Ticket.current_decision_id))
        .outerjoin(TicketClaim, col(TicketClaim.ticket_id) == col(Ticket.ticket_id))
        .where(*conds)
        .order_by(col(Ticket.received_at), col(Ticket.id))
        .offset(f.offset).limit(f.limit)
    ).all()
    done: set[str] = set()
    if f.include_handled and rows:
        ids = [t.ticket_id for t, _, _ in rows]
        done = set(session.exec(select(Ticket.ticket_id).where(col(Ticket.ticket_id).in_(ids),
                                                                 handled | resolved)).all())
    items = []
    for t, d, c in rows:
        received = as_utc(t.received_at) or now
        reasons = (d.result or {}).get("reasons") or []
        items.append(QueueItem(
            ticket_id=t.ticket_id, subject=t.subject, channel=t.channel, priority=t.priority, received_at=received,
            age_hours=max(0.0, (now - received).total_seconds() / 3600), decision_id=d.id or 0, decision=d.decision,
            trigger=d.trigger, intent=d.intent, intent_confidence=d.intent_confidence, team=d.team,
            team_confidence=d.team_confidence, reason=str(reasons[0]) if reasons else None,
            claimed_by=c.claimed_by if c else None, claimed_at=as_utc(c.claimed_at) if c else None,
            handled=t.ticket_id in done,
        ))
    return QueuePage(items=items, total=total)


def get_claim(*, session: Session, ticket_id: str) -> ClaimPublic:
    """Who has claimed a ticket (claimed_by None when nobody)."""
    _check_ticket(session, ticket_id)
    row = session.get(TicketClaim, ticket_id)
    return ClaimPublic(ticket_id=ticket_id, claimed_by=row.claimed_by if row else None,
                       claimed_at=as_utc(row.claimed_at) if row else None)


def claim_ticket(*, session: Session, ticket_id: str, by: str) -> ClaimPublic:
    """Claim a ticket for `by`; claiming one's own claim again is a no-op, someone else's is a Conflict."""
    _check_ticket(session, ticket_id)
    row = session.get(TicketClaim, ticket_id)
    if row is not None and row.claimed_by != by:
        raise Conflict(f"ticket {ticket_id!r} is already claimed by {row.claimed_by!r}", ticket_id=ticket_id)
    if row is None:
        row = TicketClaim(ticket_id=ticket_id, claimed_by=by)
        session.add(row)
        try:
            session.commit()
        except IntegrityError as exc:  # claimed by someone else in between
            session.rollback()
            other = session.get(TicketClaim, ticket_id)
            holder = other.claimed_by if other else "someone else"
            raise Conflict(f"ticket {ticket_id!r} is already claimed by {holder!r}", ticket_id=ticket_id) from exc
    return ClaimPublic(ticket_id=ticket_id, claimed_by=row.claimed_by, claimed_at=as_utc(row.claimed_at))


def release_ticket(*, session: Session, ticket_id: str, by: str, force: bool = False) -> ClaimPublic:
    """Release a claim: only its holder may, unless `force` (an admin); releasing an unclaimed ticket is a no-op."""
    _check_ticket(session, ticket_id)
    row = session.get(TicketClaim, ticket_id)
    if row is not None:
        if row.claimed_by != by and not force:
            raise Conflict(f"ticket {ticket_id!r} is claimed by {row.claimed_by!r}; only they can release it",
                           ticket_id=ticket_id)
        session.delete(row)
        session.commit()
    return ClaimPublic(ticket_id=ticket_id, claimed_by=None, claimed_at=None)
