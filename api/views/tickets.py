"""Ticket routes: route (single / batch), the live event stream, feedback, replies to the customer, and reading a
ticket back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, TypeAdapter
from sqlmodel import Session

from api.auth import Principal, require, set_audit_object
from api.deps import (
    TicketId,
    get_bundle,
    get_decide,
    get_decide_batch,
    get_metrics,
    get_optional_bundle,
    get_session,
    get_thresholds,
)
from api.errors import ERROR_RESPONSES
from api.limits import routing_slot
from api.webhooks import (
    ReplyIn,
    ReplyPublic,
    TicketReply,
    list_replies,
    record_reply,
    writebacks_from_settings,
)
from routing import service
from routing.models import (
    BatchRoutePublic,
    DecisionPublic,
    DecisionThresholds,
    EventIn,
    EventPublic,
    EventResult,
    FeedbackIn,
    FeedbackPublic,
    TicketBatchIn,
    TicketIn,
    TicketPublic,
)

router = APIRouter(prefix="/v1/tickets", tags=["tickets"], responses=ERROR_RESPONSES)

SessionDep = Annotated[Session, Depends(get_session)]
ThresholdsDep = Annotated[DecisionThresholds, Depends(get_thresholds)]

ROUTERS = ("helpdesk",)
READERS = ("helpdesk", "agent", "analyst")
FEEDBACK = ("agent", "helpdesk")
REPLIERS = ("agent",)  # the roles that may answer the customer: assist's agents (api.views.assist.AGENTS)
_EVENT_LIST: TypeAdapter[list[EventPublic]] = TypeAdapter(list[EventPublic])
_REPLY_LIST: TypeAdapter[list[ReplyPublic]] = TypeAdapter(list[ReplyPublic])


def json_response(model: BaseModel, status_code: int) -> Response:
    """The model as a JSON response, serialised here (in the endpoint's worker thread).

    Returning the model instead makes FastAPI validate it again in a second thread hop and serialise it on the
    event loop; the route's `response_model` still documents the shape.
    """
    return Response(content=model.model_dump_json(), status_code=status_code, media_type="application/json")


def _pseudonym_key(request: Request) -> str | None:
    """The install's key for pseudonymizing people at the door (routing.redaction)."""
    return request.app.state.settings.pseudonym_key.get_secret_value() or None


@router.post("/route", response_model=DecisionPublic, status_code=201,
             responses={200: {"model": DecisionPublic, "description": "same ticket id and payload: stored decision"}})
def route_ticket(
    ticket: TicketIn,
    request: Request,
    session: SessionDep,
    thresholds: ThresholdsDep,
    principal: Annotated[Principal, Depends(require(*ROUTERS))],
    _slot: Annotated[None, Depends(routing_slot("routing"))],
    bundle: Annotated[Any, Depends(get_bundle)],
    decide: Annotated[Any, Depends(get_decide)],
    metrics: Annotated[Any, Depends(get_metrics)],
) -> Response:
    """Triage a new ticket: intent, team, risks, decision and reasons. Idempotent by `ticket_id`."""
    set_audit_object(request, ticket.ticket_id)
    out = service.route(session=session, bundle=bundle, ticket_in=ticket, thresholds=thresholds, decide=decide,
                        store_raw=request.app.state.settings.store_raw_text, pseudonym_key=_pseudonym_key(request))
    if not out.replayed:
        metrics.record_decisions([(out.decision.result.decision, out.decision.trigger)])
    return json_response(out.decision, 200 if out.replayed else 201)


@router.post("/route/batch", response_model=BatchRoutePublic)
def route_tickets(
    batch: TicketBatchIn,
    request: Request,
    session: SessionDep,
    thresholds: ThresholdsDep,
    principal: Annotated[Principal, Depends(require(*ROUTERS))],
    _slot: Annotated[None, Depends(routing_slot("batch routing"))],
    bundle: Annotated[Any, Depends(get_bundle)],
    decide: Annotated[Any, Depends(get_decide)],
    decide_batch: Annotated[Any, Depends(get_decide_batch)],
    metrics: Annotated[Any, Depends(get_metrics)],
) -> Response:
    """Triage up to 1000 tickets in one transaction (all stored or none); results in request order."""
    set_audit_object(request, f"batch of {len(batch.tickets)}")
    outs = service.route_batch(
        session=session, bundle=bundle, tickets=batch.tickets, thresholds=thresholds, decide=decide,
        decide_batch=decide_batch, store_raw=request.app.state.settings.store_raw_text,
        pseudonym_key=_pseudonym_key(request),
    )
    metrics.record_decisions((o.decision.result.decision, o.decision.trigger) for o in outs if not o.replayed)
    replayed = sum(o.replayed for o in outs)
    return json_response(
        BatchRoutePublic(decisions=[o.decision for o in outs], new=len(outs) - replayed, replayed=replayed), 200
    )


@router.get("/{ticket_id}", response_model=TicketPublic)
def read_ticket(
    ticket_id: TicketId,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> Response:
    """A ticket with its current decision, decision history, events and feedback."""
    return json_response(service.get_ticket(session=session, ticket_id=ticket_id), 200)


@router.post("/{ticket_id}/events", response_model=EventResult, status_code=201)
def post_event(
    ticket_id: TicketId,
    event: EventIn,
    request: Request,
    session: SessionDep,
    thresholds: ThresholdsDep,
    principal: Annotated[Principal, Depends(require(*ROUTERS))],
    _slot: Annotated[None, Depends(routing_slot("ticket events"))],
    bundle: Annotated[Any, Depends(get_optional_bundle)],
    decide: Annotated[Any, Depends(get_decide)],
    metrics: Annotated[Any, Depends(get_metrics)],
) -> Response:
    """Store an event of the live log; a customer message whose intent differs re-triages the ticket."""
    out = service.add_event(
        session=session, bundle=bundle, ticket_id=ticket_id, event_in=event, thresholds=thresholds, decide=decide,
        store_raw=request.app.state.settings.store_raw_text, pseudonym_key=_pseudonym_key(request),
    )
    if out.decision is not None:
        metrics.record_decisions([(out.decision.result.decision, out.decision.trigger)])
    return json_response(out, 201)


@router.get("/{ticket_id}/events", response_model=list[EventPublic])
def get_events(
    ticket_id: TicketId,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> Response:
    """The ticket's live event log in time order."""
    events = service.list_events(session=session, ticket_id=ticket_id)
    return Response(content=_EVENT_LIST.dump_json(events), media_type="application/json")


@router.post("/{ticket_id}/feedback", response_model=FeedbackPublic, status_code=201)
def post_feedback(
    ticket_id: TicketId,
    feedback: FeedbackIn,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*FEEDBACK))],
) -> Response:
    """Record the team / intent an agent corrected to, and accepted or rejected suggestions.

    A corrected team / intent must be one the live models know or one declared with POST /v1/models/labels
    (422 naming the field and listing known values otherwise)."""
    from api.retrain import known_labels

    known = known_labels(request.app) if feedback.corrected_team or feedback.corrected_intent else None
    out = service.add_feedback(session=session, ticket_id=ticket_id, feedback_in=feedback, by=principal.name,
                               known=known, store_raw=request.app.state.settings.store_raw_text)
    set_audit_object(request, f"{ticket_id}/feedback/{out.id}")
    return json_response(out, 201)


def send_reply(request: Request, session: Session, ticket_id: str, reply_in: ReplyIn, by: str,
               request_key: str | None = None, also: Callable[[TicketReply], Iterable[Any]] | None = None,
               ) -> ReplyPublic:
    """Store the reply with its outbox rows (api.webhooks.record_reply) and wake the webhook worker."""
    service.get_ticket(session=session, ticket_id=ticket_id)  # 404 for an unknown ticket
    settings = request.app.state.settings
    out = record_reply(session=session, ticket_id=ticket_id, reply_in=reply_in, by=by,
                       writebacks=writebacks_from_settings(settings), store_raw=settings.store_raw_text,
                       request_key=request_key, also=also)
    set_audit_object(request, f"{ticket_id}/reply/{out.id}")
    worker = getattr(request.app.state, "webhooks", None)
    if worker is not None and out.deliveries and not out.replayed:
        worker.wake()
    return out


@router.post("/{ticket_id}/reply", response_model=ReplyPublic, status_code=201, responses={
    200: {"model": ReplyPublic, "description": "the same Idempotency-Key again: the stored reply, nothing sent twice"}})
def post_reply(
    ticket_id: TicketId,
    reply: ReplyIn,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*REPLIERS))],
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                                                  description="sending the same reply again with the same key "
                                                              "answers the stored one and sends nothing more")] = None,
) -> Response:
    """Send a reply to the ticket's customer: stored (redacted), announced to subscribers of `reply` with the
    ticket's external id, the text and the agent, and written back to Zendesk / Freshdesk as a public comment /
    reply when the ticket came in through that adapter and its write-back is configured. The answer lists the
    deliveries (pending until the webhook worker has sent them; GET .../replies reads their state later)."""
    out = send_reply(request, session, ticket_id, reply, principal.name, idempotency_key)
    return json_response(out, 200 if out.replayed else 201)


@router.get("/{ticket_id}/replies", response_model=list[ReplyPublic])
def get_replies(
    ticket_id: TicketId,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
) -> Response:
    """The replies sent to the ticket's customer, newest first, each with the state of its deliveries."""
    service.get_ticket(session=session, ticket_id=ticket_id)  # 404 for an unknown ticket
    replies = list_replies(session=session, ticket_id=ticket_id)
    return Response(content=_REPLY_LIST.dump_json(replies), media_type="application/json")
