"""The routing hot path's SQL statements, built once from the tables (Core, not ORM).

The hot path reads and writes through the session's connection with these statements (no ORM objects, no
unit-of-work flush): for one ticket the ORM select alone was a large share of the service's own work.
"""

from __future__ import annotations

from sqlalchemy import Table, bindparam, select, update

from routing.models import TICKET_FIELDS, Ticket, TriageDecision

TICKET: Table = Ticket.__table__  # type: ignore[attr-defined]
DECISION: Table = TriageDecision.__table__  # type: ignore[attr-defined]

# Per ticket id (`ids`, expanding): its payload hash and its current decision, if any.
STORED = (
    select(
        TICKET.c.ticket_id, TICKET.c.payload_hash, TICKET.c.current_decision_id, DECISION.c.id.label("decision_id"),
        DECISION.c.trigger, DECISION.c.result, DECISION.c.created_at,
    )
    .select_from(TICKET.outerjoin(DECISION, DECISION.c.id == TICKET.c.current_decision_id))
    .where(TICKET.c.ticket_id.in_(bindparam("ids", expanding=True)))
)
# Point ticket `tid` at its new current decision `did`.
SET_CURRENT = (
    update(TICKET).where(TICKET.c.ticket_id == bindparam("tid")).values(current_decision_id=bindparam("did"))
)
# A changed payload of ticket `tid`: the new ticket fields (each bound by its own name), hash and current decision.
RETRIAGE = (
    update(TICKET).where(TICKET.c.ticket_id == bindparam("tid")).values(
        **{name: bindparam(name) for name in TICKET_FIELDS if name != "ticket_id"},
        payload_hash=bindparam("payload_hash"), current_intent=bindparam("current_intent"),
        current_team=bindparam("current_team"), current_decision_id=bindparam("did"),
        updated_at=bindparam("updated_at"),
    )
)
