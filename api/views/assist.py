"""Assist routes: next-best actions, supporting articles and a grounded draft for a ticket; feedback; knowledge gaps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from api.auth import Principal, require, set_audit_object
from api.deps import get_kb_index, get_optional_bundle, get_session, kb_retriever
from api.errors import ERROR_RESPONSES
from assist import service
from assist.gaps import knowledge_gaps
from assist.models import AssistFeedbackIn, AssistFeedbackPublic, AssistResult, GapReport
from routing import service as routing_service
from routing.models import MAX_BODY, MAX_ID, Ticket, TicketEvent, TicketPublic, as_utc

router = APIRouter(tags=["assist"], responses=ERROR_RESPONSES)

AGENTS = ("agent",)
GAP_READERS = ("analyst", "knowledge_manager")
FIRST_ACTIVITY = "Ticket created"

TicketId = Annotated[str, Path(min_length=1, max_length=MAX_ID, description="The helpdesk's ticket id")]
SessionDep = Annotated[Session, Depends(get_session)]
BundleDep = Annotated[Any, Depends(get_optional_bundle)]


class AssistRequest(BaseModel):
    """Options for one assist call; `text` replaces the stored ticket text (e.g. a draft of the latest message)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_BODY)
    top_k: int = Field(default=3, ge=1, le=10)
    top_n_actions: int = Field(default=3, ge=1, le=10)
    min_probability: float = Field(default=0.05, ge=0.0, le=1.0)
    ranking: Literal["outcome", "likelihood"] = "outcome"


def _ticket_inputs(ticket: TicketPublic) -> tuple[str, pd.DataFrame, dict[str, Any]]:
    """Text (subject, body and customer messages), events so far and case attributes of a stored ticket."""
    parts = [ticket.subject, ticket.body] + [e.message for e in ticket.events
                                             if e.author_type == "customer" and e.message]
    text = ". ".join(p.strip() for p in parts if p and p.strip())
    rows = [{"case_id": ticket.ticket_id, "activity": e.activity, "timestamp": e.timestamp, "resource": e.resource,
             "group": e.group, "channel": e.channel} for e in ticket.events]
    if not rows:  # a routed ticket with no streamed events yet: it exists, so it was created
        rows = [{"case_id": ticket.ticket_id, "activity": FIRST_ACTIVITY,
                 "timestamp": ticket.created_at or ticket.received_at, "resource": None,
                 "group": ticket.assigned_group or ticket.current_team, "channel": ticket.channel}]
    attrs: dict[str, Any] = {"channel": ticket.channel, "segment": ticket.segment, "priority": ticket.priority,
                             "intent": ticket.current_intent, **ticket.custom_fields}
    return text, pd.DataFrame(rows), {k: v for k, v in attrs.items() if v is not None}


def _assist(request: Request, session: Session, bundle: Any, ticket_id: str, opts: AssistRequest) -> AssistResult:
    ticket = routing_service.get_ticket(session=session, ticket_id=ticket_id)
    text, events, attrs = _ticket_inputs(ticket)
    index = request.app.state.kb_index
    retriever = kb_retriever(request, index) if index is not None else None
    catalog = service.load_catalog(session=session) if index is not None else None
    return service.assist(
        ticket_text=opts.text or text, events=events, case_attributes=attrs, ticket_id=ticket_id,
        models=service.AssistModels.from_bundle(bundle, outcomes=getattr(request.app.state, "assist_outcomes", None)),
        retriever=retriever, catalog=catalog, top_k=opts.top_k, top_n_actions=opts.top_n_actions,
        min_probability=opts.min_probability, ranking=opts.ranking,
    )


@router.get("/v1/tickets/{ticket_id}/assist", response_model=AssistResult)
def get_assist(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    bundle: BundleDep,
    principal: Annotated[Principal, Depends(require(*AGENTS))],
    top_k: Annotated[int, Query(ge=1, le=10)] = 3,
    ranking: Literal["outcome", "likelihood"] = "outcome",
) -> AssistResult:
    """Next-best actions, supporting articles and a grounded draft for a stored ticket as it stands."""
    return _assist(request, session, bundle, ticket_id, AssistRequest(top_k=top_k, ranking=ranking))


@router.post("/v1/tickets/{ticket_id}/assist", response_model=AssistResult)
def post_assist(
    ticket_id: TicketId,
    opts: AssistRequest,
    request: Request,
    session: SessionDep,
    bundle: BundleDep,
    principal: Annotated[Principal, Depends(require(*AGENTS))],
) -> AssistResult:
    """Like GET, with options (and optionally the text to assist on instead of the stored one)."""
    return _assist(request, session, bundle, ticket_id, opts)


@router.post("/v1/tickets/{ticket_id}/assist/feedback", response_model=AssistFeedbackPublic, status_code=201)
def post_assist_feedback(
    ticket_id: TicketId,
    feedback: AssistFeedbackIn,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*AGENTS))],
) -> AssistFeedbackPublic:
    """Record that the agent accepted, edited or rejected one suggestion (action, article or draft)."""
    routing_service.get_ticket(session=session, ticket_id=ticket_id)  # 404 for an unknown ticket
    out = service.record_feedback(session=session, ticket_id=ticket_id, feedback_in=feedback, by=principal.name)
    set_audit_object(request, f"{ticket_id}/assist/feedback/{out.id}")
    return out


@router.get("/v1/insights/gaps", response_model=GapReport)
def get_gaps(
    request: Request,
    session: SessionDep,
    index: Annotated[Any, Depends(get_kb_index)],
    principal: Annotated[Principal, Depends(require(*GAP_READERS))],
    sample_per_topic: Annotated[int, Query(ge=1, le=200)] = 20,
    top_k: Annotated[int, Query(ge=1, le=20)] = 5,
) -> GapReport:
    """Knowledge gaps over the stored tickets (topic = current intent): what to write next, articles not earning use."""
    tickets = session.exec(select(Ticket).where(col(Ticket.current_intent).is_not(None))).all()
    events = session.exec(select(TicketEvent).order_by(col(TicketEvent.case_id), col(TicketEvent.timestamp))).all()
    log = pd.DataFrame([{"case_id": e.case_id, "activity": e.activity, "timestamp": as_utc(e.timestamp)}
                        for e in events], columns=["case_id", "activity", "timestamp"])
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    frame = pd.DataFrame([{"case_id": t.ticket_id, "subject": t.subject, "body": t.body, "intent": t.current_intent}
                          for t in tickets], columns=["case_id", "subject", "body", "intent"])
    return knowledge_gaps(
        log=log, tickets=frame, retriever=kb_retriever(request, index), catalog=service.load_catalog(session=session),
        sample_per_topic=sample_per_topic, top_k=top_k, used=service.articles_used(session=session),
    )
