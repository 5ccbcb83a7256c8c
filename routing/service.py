"""Routing service: triage tickets idempotently, keep the live event log, re-triage on customer messages,
record feedback. Every write is one transaction: it commits at the end or leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.errors import Conflict, InvalidInput, ModelNotReady, NotFound
from routing.live_memory import record_resolution, sync_router_memory
from routing.models import (
    DecisionPublic,
    DecisionThresholds,
    EventIn,
    EventPublic,
    EventResult,
    Feedback,
    FeedbackIn,
    FeedbackPublic,
    Ticket,
    TicketEvent,
    TicketIn,
    TicketPublic,
    TriageDecision,
    TriageResult,
    as_utc,
    utcnow,
)
from routing.queries import DECISION, RETRIAGE, SET_CURRENT, STORED, TICKET
from routing.redaction import redact_event, redact_feedback, redact_tickets

# Tickets per chunk when redaction and the triage's preparation run side by side (_redact_preparing).
_PREPARE_CHUNK = 20

if TYPE_CHECKING:  # the triage module loads the model stack; the service needs only its types
    from routing.triage import ModelBundle


class DecideFn(Protocol):
    """`routing.triage.decide`: a pure function from a ticket to a TriageResult."""

    def __call__(self, *, bundle: ModelBundle, ticket: TicketIn, thresholds: DecisionThresholds) -> TriageResult:
        ...


class DecideBatchFn(Protocol):
    """Optional batched form of decide (one embedding call for many tickets)."""

    def __call__(
        self, *, bundle: ModelBundle, tickets: list[TicketIn], thresholds: DecisionThresholds
    ) -> list[TriageResult]: ...


@dataclass
class RouteOutcome:
    """One routed ticket: the decision and whether it was replayed from storage (same id, same payload)."""

    decision: DecisionPublic
    replayed: bool


def default_decide() -> DecideFn:
    """`routing.triage.decide`, or ModelNotReady when the triage module is not installed."""
    try:
        from routing.triage import decide
    except ImportError as exc:  # the triage module is the model side; without it nothing can be routed
        raise ModelNotReady(f"triage is not available ({exc}); run `deskpilot train` after installing it") from exc
    return decide  # type: ignore[no-any-return]


def _require_bundle(bundle: ModelBundle | None) -> ModelBundle:
    if bundle is None:
        raise ModelNotReady("no trained routing model is loaded; run `deskpilot train`, then POST /v1/models/reload")
    return bundle


@contextmanager
def _transaction(session: Session) -> Iterator[None]:
    # One write = one transaction: a failure anywhere leaves nothing half-written.
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _find_ticket(session: Session, ticket_id: str) -> Ticket | None:
    return session.exec(select(Ticket).where(Ticket.ticket_id == ticket_id)).first()


def _store_decision(
    session: Session, *, ticket: Ticket, result: TriageResult, trigger: str, payload_hash: str
) -> TriageDecision:
    row = TriageDecision(
        ticket_id=ticket.ticket_id, trigger=trigger, payload_hash=payload_hash, intent=result.intent,
        intent_confidence=result.intent_confidence, out_of_scope=result.out_of_scope, team=result.team,
        team_confidence=result.team_confidence, decision=result.decision, result=result.model_dump(mode="json"),
        model_versions=dict(result.model_versions),
    )
    session.add(row)
    session.flush()
    ticket.current_decision_id = row.id
    ticket.current_intent = result.intent
    ticket.current_team = result.team
    ticket.updated_at = utcnow()
    session.add(ticket)
    return row


@dataclass(frozen=True)
class _Stored:
    """What the database holds for a ticket id: its payload hash and current decision (None if it has none)."""

    payload_hash: str
    decision: DecisionPublic | None


def _stored_tickets(session: Session, ids: list[str]) -> dict[str, _Stored]:
    rows = session.connection().execute(STORED, {"ids": ids}).all()
    out: dict[str, _Stored] = {}
    for r in rows:
        decision = None
        if r.decision_id is not None:
            decision = DecisionPublic(
                decision_id=r.decision_id, ticket_id=r.ticket_id, trigger=r.trigger,
                created_at=as_utc(r.created_at) or utcnow(), replayed=True,
                result=TriageResult.model_validate(r.result),
            )
        out[r.ticket_id] = _Stored(payload_hash=r.payload_hash, decision=decision)
    return out


def _route_many(
    *,
    session: Session,
    bundle: ModelBundle | None,
    tickets: list[TicketIn],
    thresholds: DecisionThresholds,
    decide: DecideFn,
    decide_batch: DecideBatchFn | None,
    stored: Mapping[str, _Stored] | None = None,
) -> list[RouteOutcome]:
    hashes = [t.payload_hash() for t in tickets]
    if stored is None:
        stored = _stored_tickets(session, [t.ticket_id for t in tickets])
    outcomes: dict[int, RouteOutcome] = {}
    todo: list[int] = []
    for i, (t, h) in enumerate(zip(tickets, hashes, strict=True)):
        known = stored.get(t.ticket_id)
        if known is not None and known.payload_hash == h and known.decision is not None:
            outcomes[i] = RouteOutcome(known.decision, replayed=True)  # same id, same payload: the stored decision
        else:
            todo.append(i)
    if todo:
        bundle = _require_bundle(bundle)
        # Resolutions other workers stored since the last check (at most once per bundle.memory_refresh_seconds).
        sync_router_memory(session, bundle)
        pending = [tickets[i] for i in todo]
        if decide_batch is not None and len(pending) > 1:
            batch = decide_batch(bundle=bundle, tickets=pending, thresholds=thresholds)
            if len(batch) != len(pending):
                raise RuntimeError(f"decide_batch returned {len(batch)} results for {len(pending)} tickets")
            results = dict(zip(todo, batch, strict=True))
        else:
            results = {i: decide(bundle=bundle, ticket=tickets[i], thresholds=thresholds) for i in todo}
        with _transaction(session):
            outcomes.update(_write_decisions(session, tickets=tickets, hashes=hashes, todo=todo, results=results,
                                             known=set(stored)))
    return [outcomes[i] for i in range(len(tickets))]


def _write_decisions(
    session: Session,
    *,
    tickets: list[TicketIn],
    hashes: list[str],
    todo: list[int],
    results: dict[int, TriageResult],
    known: set[str],
) -> dict[int, RouteOutcome]:
    # Core multi-row statements instead of one ORM object + flush per row: a batch of 100 costs a few statements,
    # not a few hundred (ORM construction and per-row flushes dominated the API overhead).
    conn = session.connection()
    now = utcnow()
    new_tickets = [
        {
            **t.ticket_fields(), "payload_hash": hashes[i], "current_intent": results[i].intent,
            "current_team": results[i].team, "current_decision_id": None, "assigned_group": None,
            "received_at": now, "updated_at": now,
        }
        for i in todo if (t := tickets[i]).ticket_id not in known
    ]
    if new_tickets:
        conn.execute(insert(TICKET), new_tickets)
    decision_rows = [
        {
            "ticket_id": tickets[i].ticket_id, "trigger": "reroute" if tickets[i].ticket_id in known else "route",
            "payload_hash": hashes[i], "intent": results[i].intent, "intent_confidence": results[i].intent_confidence,
            "out_of_scope": results[i].out_of_scope, "team": results[i].team,
            "team_confidence": results[i].team_confidence, "decision": results[i].decision,
            "result": results[i].model_dump(mode="json"), "model_versions": dict(results[i].model_versions),
            "created_at": now,
        }
        for i in todo
    ]
    new_ids = [int(x) for x in conn.execute(
        insert(DECISION).returning(DECISION.c.id, sort_by_parameter_order=True), decision_rows
    ).scalars()]
    current = [{"tid": tickets[i].ticket_id, "did": did} for i, did in zip(todo, new_ids, strict=True)
               if tickets[i].ticket_id not in known]
    if current:
        conn.execute(SET_CURRENT, current)
    # Same id, new payload: re-triage in place (the history stays in triage_decision).
    retriaged = [
        {
            # The id is the row's key (`tid`), not a field to set.
            **t.ticket_fields(exclude=("ticket_id",)), "tid": t.ticket_id, "payload_hash": hashes[i],
            "current_intent": results[i].intent, "current_team": results[i].team, "did": did, "updated_at": now,
        }
        for i, did in zip(todo, new_ids, strict=True) if (t := tickets[i]).ticket_id in known
    ]
    if retriaged:
        conn.execute(RETRIAGE, retriaged)
    return {
        i: RouteOutcome(
            DecisionPublic(decision_id=did, ticket_id=tickets[i].ticket_id, trigger=str(d["trigger"]), created_at=now,
                           replayed=False, result=results[i]),
            replayed=False,
        )
        for i, did, d in zip(todo, new_ids, decision_rows, strict=True)
    }


def route_batch(
    *,
    session: Session,
    bundle: ModelBundle | None,
    tickets: list[TicketIn],
    thresholds: DecisionThresholds,
    decide: DecideFn | None = None,
    decide_batch: DecideBatchFn | None = None,
    store_raw: bool = False,
    pseudonym_key: str | None = None,
) -> list[RouteOutcome]:
    """Route many tickets in one transaction (idempotent per ticket id); results in request order.

    Texts are redacted and person fields pseudonymized with `pseudonym_key` before triage and storage
    (routing.redaction) unless `store_raw`."""
    ids = [t.ticket_id for t in tickets]
    if len(set(ids)) != len(ids):
        raise InvalidInput("tickets: the same ticket_id appears twice in one batch", field="tickets")
    fn = decide or default_decide()
    stored = _stored_tickets(session, ids)
    if not store_raw:
        tickets = _redact_preparing(tickets, pseudonym_key=pseudonym_key, bundle=bundle, stored=stored)
    try:
        return _route_many(
            session=session, bundle=bundle, tickets=tickets, thresholds=thresholds, decide=fn,
            decide_batch=decide_batch, stored=stored,
        )
    except IntegrityError:
        # Another request created one of these tickets between our read and our write: the database's unique
        # constraint caught it; one retry sees the stored rows and replays or re-triages them.
        session.rollback()
        try:
            return _route_many(
                session=session, bundle=bundle, tickets=tickets, thresholds=thresholds, decide=fn,
                decide_batch=decide_batch,
            )
        except IntegrityError as exc:
            session.rollback()
            raise Conflict("concurrent writes to the same ticket_id; retry the request") from exc


def _preparer(bundle: ModelBundle | None) -> Callable[..., None] | None:
    """`routing.triage.prepare_batch` bound to the bundle, or None when nothing can be prepared ahead (no bundle, no
    embedder, a triage without it)."""
    if bundle is None or getattr(bundle, "embedder", None) is None:
        return None
    try:
        from routing.triage import prepare_batch
    except ImportError:
        return None
    return partial(prepare_batch, bundle=bundle)


def _redact_preparing(tickets: list[TicketIn], *, pseudonym_key: str | None, bundle: ModelBundle | None,
                      stored: Mapping[str, _Stored]) -> list[TicketIn]:
    """The tickets redacted (routing.redaction.redact_tickets); with a triage that can prepare tickets ahead (embed
    their texts into its cache), in chunks, each redacted chunk prepared on a worker thread while this one redacts
    the next: the name model and the embedding model run at once instead of one after the other. Tickets that will
    be replayed (same payload as stored) are not prepared. The redacted tickets are those of one redact_tickets call
    (redaction is a function of each text alone), and preparing only fills the cache that decide_batch reads."""
    prepare = _preparer(bundle)
    if prepare is None or len(tickets) <= _PREPARE_CHUNK:
        return redact_tickets(tickets, pseudonym_key=pseudonym_key)
    # Chunks of tickets of similar length: the embedder pads each run to its longest text, so a chunk of mixed
    # lengths costs more than the same texts in one batch; sorted, a chunk pads about as little as the whole batch.
    order = sorted(range(len(tickets)), key=lambda i: len(tickets[i].subject) + len(tickets[i].body))
    out: list[TicketIn | None] = [None] * len(tickets)
    memo: dict[str, str] = {}  # texts redacted by earlier chunks (subjects and field values repeat in a batch)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="route-prepare") as pool:
        pending = []
        for start in range(0, len(order), _PREPARE_CHUNK):
            at = order[start:start + _PREPARE_CHUNK]
            chunk = redact_tickets([tickets[i] for i in at], pseudonym_key=pseudonym_key, memo=memo)
            for i, t in zip(at, chunk, strict=True):
                out[i] = t
            todo = [t for t in chunk if not _replays(t, stored.get(t.ticket_id))]
            if todo:
                pending.append(pool.submit(prepare, tickets=todo))
        for f in pending:
            f.result()
    return [t for t in out if t is not None]


def _replays(ticket: TicketIn, known: _Stored | None) -> bool:
    """True when routing the (redacted) ticket will answer its stored decision (same id, same payload)."""
    return known is not None and known.decision is not None and known.payload_hash == ticket.payload_hash()


def route(
    *,
    session: Session,
    bundle: ModelBundle | None,
    ticket_in: TicketIn,
    thresholds: DecisionThresholds,
    decide: DecideFn | None = None,
    store_raw: bool = False,
    pseudonym_key: str | None = None,
) -> RouteOutcome:
    """Triage one ticket: same id + same payload replays the stored decision; a changed payload re-triages."""
    return route_batch(session=session, bundle=bundle, tickets=[ticket_in], thresholds=thresholds, decide=decide,
                       store_raw=store_raw, pseudonym_key=pseudonym_key)[0]


def _get_ticket_row(session: Session, ticket_id: str) -> Ticket:
    ticket = _find_ticket(session, ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id!r} is unknown; route it first (POST /v1/tickets/route)", ticket_id=ticket_id)
    return ticket


def add_event(
    *,
    session: Session,
    bundle: ModelBundle | None,
    ticket_id: str,
    event_in: EventIn,
    thresholds: DecisionThresholds,
    decide: DecideFn | None = None,
    store_raw: bool = False,
    pseudonym_key: str | None = None,
) -> EventResult:
    """Store an event of the live log; a customer message re-triages and records a new decision if the intent changed.

    The message and payload are redacted and the agent (`resource`) pseudonymized with `pseudonym_key` before
    triage and storage unless `store_raw`."""
    if not store_raw:
        event_in = redact_event(event_in, pseudonym_key=pseudonym_key)
    ticket = _get_ticket_row(session, ticket_id)
    previous = ticket.current_intent
    result: TriageResult | None = None
    note = ""
    if event_in.is_customer_message:
        if bundle is None:
            # The event is part of the live log and must not be lost because no model is trained yet.
            note = "no trained model is loaded; the message was stored but not re-triaged (run `deskpilot train`)"
        else:
            fn = decide or default_decide()
            # The new message alone is classified: appended to the old text it would be drowned by it.
            probe = TicketIn(**{**ticket.ticket_fields(), "subject": "", "body": event_in.message or "",
                                "channel": event_in.channel or ticket.channel})
            result = fn(bundle=bundle, ticket=probe, thresholds=thresholds)
    changed = bool(
        result is not None
        and result.intent is not None
        and not result.out_of_scope
        and result.intent != previous
        and result.intent_confidence >= thresholds.suggest_confidence
    )
    if result is not None and not changed:
        note = (
            f"intent unchanged ({previous})" if result.intent == previous
            else f"message read as {result.intent!r} (confidence {result.intent_confidence:.2f}"
            f"{', out of scope' if result.out_of_scope else ''}): not sure enough to change the intent"
        )
    with _transaction(session):
        event = TicketEvent(
            case_id=ticket.ticket_id, activity=event_in.activity, timestamp=event_in.timestamp or utcnow(),
            resource=event_in.resource, group=event_in.group, channel=event_in.channel,
            author_type=event_in.author_type, message=event_in.message, payload=dict(event_in.payload),
        )
        if event_in.group:
            ticket.assigned_group = event_in.group
            ticket.updated_at = utcnow()
            session.add(ticket)
        decision_row: TriageDecision | None = None
        if changed and result is not None:
            result = result.model_copy(
                update={"reasons": [f"customer message changed the intent from {previous!r} to {result.intent!r}",
                                    *result.reasons]}
            )
            decision_row = _store_decision(
                session, ticket=ticket, result=result, trigger="event", payload_hash=ticket.payload_hash
            )
            event.retriaged = True
            event.decision_id = decision_row.id
            note = f"intent changed from {previous!r} to {result.intent!r}; re-triaged"
        session.add(event)
        session.flush()
        resolution = record_resolution(session, ticket=ticket, event_in=event_in, event_id=event.id,
                                       resolved_at=as_utc(event.timestamp) or utcnow())
        out = EventResult(
            event=EventPublic.from_row(event), retriage_checked=result is not None, intent_changed=changed,
            previous_intent=previous, new_intent=result.intent if result is not None else None,
            decision=DecisionPublic.from_row(decision_row) if decision_row is not None else None, note=note,
        )
    if resolution is not None and bundle is not None:
        # This worker's router learns the resolution at once; the others at their next check.
        sync_router_memory(session, bundle, force=True)
    return out


def check_labels(feedback_in: FeedbackIn, known: Mapping[str, Collection[str]] | None) -> None:
    """A corrected team / intent must be one the service knows (`known[kind]`); InvalidInput names the field and
    some of the known values. A kind with no known values (a cold service) is not checked."""
    for name, kind in (("corrected_team", "team"), ("corrected_intent", "intent")):
        value = getattr(feedback_in, name)
        allowed = (known or {}).get(kind) or ()
        if value is None or not allowed or value in allowed:
            continue
        shown = sorted(allowed)[:25]
        more = f" and {len(allowed) - len(shown)} more" if len(allowed) > len(shown) else ""
        raise InvalidInput(
            f"{name} {value!r} is not a known {kind}; known: {', '.join(repr(v) for v in shown)}{more}. A new "
            f"{kind} is declared by an admin or knowledge manager with POST /v1/models/labels", field=name)


def add_feedback(*, session: Session, ticket_id: str, feedback_in: FeedbackIn, by: str | None,
                 known: Mapping[str, Collection[str]] | None = None, store_raw: bool = False) -> FeedbackPublic:
    """Record an agent's correction (team / intent) or verdict on suggestions; corrections must name a known label.

    The comment is redacted before storage unless `store_raw`."""
    check_labels(feedback_in, known)
    if not store_raw:
        feedback_in = redact_feedback(feedback_in)
    ticket = _get_ticket_row(session, ticket_id)
    if feedback_in.decision_id is not None:
        decision = session.get(TriageDecision, feedback_in.decision_id)
        if decision is None or decision.ticket_id != ticket.ticket_id:
            raise InvalidInput(
                f"decision_id {feedback_in.decision_id} is not a decision of ticket {ticket_id!r}",
                field="decision_id",
            )
    with _transaction(session):
        row = Feedback(
            ticket_id=ticket.ticket_id, decision_id=feedback_in.decision_id or ticket.current_decision_id,
            corrected_team=feedback_in.corrected_team, corrected_intent=feedback_in.corrected_intent,
            accepted=list(feedback_in.accepted), rejected=list(feedback_in.rejected), comment=feedback_in.comment,
            by=by,
        )
        session.add(row)
        session.flush()
        out = FeedbackPublic.from_row(row)
    return out


def get_ticket(*, session: Session, ticket_id: str) -> TicketPublic:
    """A ticket with its current decision, decision history, events and feedback."""
    ticket = _get_ticket_row(session, ticket_id)
    decisions = session.exec(
        select(TriageDecision).where(TriageDecision.ticket_id == ticket_id).order_by(col(TriageDecision.id))
    ).all()
    events = session.exec(
        select(TicketEvent).where(TicketEvent.case_id == ticket_id)
        .order_by(col(TicketEvent.timestamp), col(TicketEvent.id))
    ).all()
    feedback = session.exec(select(Feedback).where(Feedback.ticket_id == ticket_id).order_by(col(Feedback.id))).all()
    pub = [DecisionPublic.from_row(d) for d in decisions]
    current = next((d for d in pub if d.decision_id == ticket.current_decision_id), None)
    return TicketPublic(
        **ticket.ticket_fields(), current_intent=ticket.current_intent, current_team=ticket.current_team,
        assigned_group=ticket.assigned_group,
        received_at=as_utc(ticket.received_at) or utcnow(), updated_at=as_utc(ticket.updated_at) or utcnow(),
        current_decision=current, decisions=pub, events=[EventPublic.from_row(e) for e in events],
        feedback=[FeedbackPublic.from_row(f) for f in feedback],
    )


def list_events(*, session: Session, ticket_id: str) -> list[EventPublic]:
    """The live log of one ticket in time order."""
    _get_ticket_row(session, ticket_id)
    rows = session.exec(
        select(TicketEvent).where(TicketEvent.case_id == ticket_id)
        .order_by(col(TicketEvent.timestamp), col(TicketEvent.id))
    ).all()
    return [EventPublic.from_row(e) for e in rows]

