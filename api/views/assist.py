"""Assist routes: next-best actions, supporting articles and a grounded draft for a ticket; feedback; knowledge gaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ConfigDict, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from api.auth import Principal, require, set_audit_object
from api.deps import ModelState, TicketId, get_kb_index, get_session, kb_retriever
from api.errors import ERROR_RESPONSES, ErrorBody
from api.limits import heavy
from api.settings import Settings
from assist import service
from assist.actions import TASK_STEP_OUTCOMES
from assist.gaps import knowledge_gaps
from assist.models import (
    MAX_LABEL,
    AssistFeedbackIn,
    AssistFeedbackPublic,
    AssistResult,
    DraftTemplateIn,
    DraftTemplatePublic,
    GapReport,
)
from core.jsonbody import JsonBody
from insight.eventlog.privacy import pseudonym_prefix, pseudonymize
from insight.eventlog.schema import RESOURCE
from routing import service as routing_service
from routing.models import MAX_BODY, TEXT_PATTERN, Ticket, TicketEvent, TicketPublic, as_utc
from routing.redaction import redact_fields

router = APIRouter(tags=["assist"], responses=ERROR_RESPONSES)

AGENTS = ("agent",)
GAP_READERS = ("analyst", "knowledge_manager")
TEMPLATE_READERS = ("agent", "knowledge_manager")
FIRST_ACTIVITY = "Ticket created"

SessionDep = Annotated[Session, Depends(get_session)]
# A blank scope is refused, not read as "*": one stray space must not make a template for every intent.
Scope = Annotated[str, Path(min_length=1, max_length=MAX_LABEL, pattern=TEXT_PATTERN,
                            description='An intent or channel; "*" = any')]


class AssistRequest(JsonBody):
    """Options for one assist call; `text` replaces the stored ticket text (e.g. a draft of the latest message)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_BODY, pattern=TEXT_PATTERN)
    top_k: int = Field(default=3, ge=1, le=10)
    top_n_actions: int = Field(default=3, ge=1, le=10)
    min_probability: float = Field(default=0.05, ge=0.0, le=1.0, strict=True)  # true/false are not numbers
    ranking: Literal["outcome", "likelihood"] = "outcome"


def _ticket_inputs(ticket: TicketPublic, pseudonym_key: str | None = None,
                   ) -> tuple[str, pd.DataFrame, dict[str, Any]]:
    """Text (subject, body and customer messages), events so far and case attributes of a stored ticket.

    Agents are pseudonymized with the same key as an ingested log, so the models see the tokens they were trained on.
    """
    parts = [ticket.subject, ticket.body] + [e.message for e in ticket.events
                                             if e.author_type == "customer" and e.message]
    text = ". ".join(p.strip() for p in parts if p and p.strip())
    rows = [{"case_id": ticket.ticket_id, "activity": e.activity, "timestamp": e.timestamp, "resource": e.resource,
             "group": e.group, "channel": e.channel} for e in ticket.events]
    if not rows:  # a routed ticket with no streamed events yet: it exists, so it was created
        rows = [{"case_id": ticket.ticket_id, "activity": FIRST_ACTIVITY,
                 "timestamp": ticket.created_at or ticket.received_at, "resource": None,
                 "group": ticket.assigned_group or ticket.current_team, "channel": ticket.channel}]
    events = pd.DataFrame(rows)
    if pseudonym_key and events["resource"].notna().any():
        events["resource"] = pseudonymize(events["resource"], key=pseudonym_key, prefix=pseudonym_prefix(RESOURCE))
    attrs: dict[str, Any] = {"channel": ticket.channel, "segment": ticket.segment, "priority": ticket.priority,
                             "intent": ticket.current_intent, **ticket.custom_fields}
    return text, events, {k: v for k, v in attrs.items() if v is not None}


@dataclass
class _Stored:
    """What assist reads from the database for one ticket."""

    ticket: TicketPublic
    catalog: Any
    feedback: service.FeedbackStats
    template: DraftTemplatePublic | None


def _read_for_assist(engine: Engine, ticket_id: str, with_catalog: bool) -> _Stored:
    """The stored ticket, the published-article catalog, agents' feedback so far and the draft template for the
    ticket's intent and channel, read in one short session that is closed on return."""
    with Session(engine, expire_on_commit=False) as session:
        ticket = routing_service.get_ticket(session=session, ticket_id=ticket_id)
        catalog = service.load_catalog(session=session) if with_catalog else None
        feedback = service.feedback_stats(session=session)
        template = service.get_template(session=session, intent=ticket.current_intent, channel=ticket.channel)
    return _Stored(ticket, catalog, feedback, template)


def _ticket_fields(ticket: TicketPublic) -> dict[str, Any]:
    """The helpdesk form's fields a draft may quote: subject, body, and customer / order / product custom fields."""
    custom = {k.strip().lower(): v for k, v in ticket.custom_fields.items()}
    return {"subject": ticket.subject, "body": ticket.body,
            "customer_name": custom.get("customer_name") or custom.get("name"),
            "order_id": custom.get("order_id") or custom.get("order"), "product": custom.get("product")}


def _assist(request: Request, ticket_id: str, opts: AssistRequest, *, stored: _Stored | None = None,
            state: ModelState | None = None) -> AssistResult:
    """Assist for a stored ticket; `stored` and `state`, when the caller has read them already (the web panel keys
    its cache on them), are used as they are, so the result is computed from exactly those inputs."""
    # Read, release the connection, then compute: retrieval and the models take far longer than the reads, and a
    # connection held through them is one the rest of the service cannot use (pool exhaustion under load).
    if state is None:
        state = request.app.state.models  # one snapshot: bundle and step outcomes swap together
    index = request.app.state.kb_index
    if stored is None:
        stored = _read_for_assist(request.app.state.engine, ticket_id, index is not None)
    ticket = stored.ticket
    settings: Settings = request.app.state.settings
    text, events, attrs = _ticket_inputs(ticket, settings.pseudonym_key.get_secret_value() or None)
    retriever = kb_retriever(request, index) if index is not None else None
    result = service.assist(
        ticket_text=opts.text or text, events=events, case_attributes=attrs, ticket_id=ticket_id,
        models=service.AssistModels.from_bundle(state.bundle, outcomes=state.outcomes,
                                                outcomes_version=state.versions.get(TASK_STEP_OUTCOMES)),
        retriever=retriever, catalog=stored.catalog, top_k=opts.top_k, top_n_actions=opts.top_n_actions,
        min_probability=opts.min_probability, ranking=opts.ranking, feedback=stored.feedback,
        template=stored.template, ticket_fields=_ticket_fields(ticket), text_is_the_tickets=not opts.text,
    )
    if state.outcomes is None and state.outcomes_error and result.next_steps:
        result.notes.append(f"next steps are ranked without the mined step outcomes ({state.outcomes_error})")
    return result


@router.get("/v1/tickets/{ticket_id}/assist", response_model=AssistResult, responses={
    503: {"model": ErrorBody, "description": "assist is at capacity (`overloaded`, with Retry-After)"}})
def get_assist(
    ticket_id: TicketId,
    request: Request,
    principal: Annotated[Principal, Depends(require(*AGENTS))],
    _slot: Annotated[None, Depends(heavy("assist"))],
    top_k: Annotated[int, Query(ge=1, le=10)] = 3,
    ranking: Literal["outcome", "likelihood"] = "outcome",
) -> AssistResult:
    """Agent actions, supporting articles, guideline steps and a templated grounded draft for a stored ticket.

    `actions` are things an agent can do (guideline steps of the matching article and steps agents took on similar
    tickets), ranked by their mined effect on hours to resolution and on reopening, each with its support and
    interval, and only where the evidence meets `evidence_rule`. `next_steps` is the forecast of the next events
    (process states included) from the next-activity and remaining-time models (`ranking=outcome` orders them by
    expected hours, `ranking=likelihood` by probability). The draft uses the admin's template for the ticket's
    intent and channel.
    Assist is a heavy endpoint: beyond `heavy_max_concurrency` running and `heavy_max_waiting` waiting requests it
    answers 503 `overloaded` with a Retry-After header.
    """
    return _assist(request, ticket_id, AssistRequest(top_k=top_k, ranking=ranking))


@router.post("/v1/tickets/{ticket_id}/assist", response_model=AssistResult, responses={
    503: {"model": ErrorBody, "description": "assist is at capacity (`overloaded`, with Retry-After)"}})
def post_assist(
    ticket_id: TicketId,
    opts: AssistRequest,
    request: Request,
    principal: Annotated[Principal, Depends(require(*AGENTS))],
    _slot: Annotated[None, Depends(heavy("assist"))],
) -> AssistResult:
    """Like GET, with options (and optionally the text to assist on instead of the stored one); nothing is stored."""
    return _assist(request, ticket_id, opts)


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
    if not request.app.state.settings.store_raw_text:
        feedback = redact_fields(feedback, ("edited_text", "comment"))
    out = service.record_feedback(session=session, ticket_id=ticket_id, feedback_in=feedback, by=principal.name)
    set_audit_object(request, f"{ticket_id}/assist/feedback/{out.id}")
    return out


def _read_for_gaps(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame, Any, dict[str, set[int]]]:
    """Event log, ticket texts with intents, the published catalog and article use, read in one short session."""
    log, frame, catalog, used, _ = _read_for_gaps_with_feedback(engine)
    return log, frame, catalog, used


def _read_for_gaps_with_feedback(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame, Any, dict[str, set[int]],
                                                          list[AssistFeedbackPublic]]:
    """As `_read_for_gaps`, plus the stored assist feedback (rejections and agents' own replies)."""
    with Session(engine, expire_on_commit=False) as session:
        tickets = session.exec(select(Ticket).where(col(Ticket.current_intent).is_not(None))).all()
        events = session.exec(select(TicketEvent).order_by(col(TicketEvent.case_id),
                                                           col(TicketEvent.timestamp))).all()
        catalog = service.load_catalog(session=session)
        used = service.articles_used(session=session)
        feedback = service.list_feedback(session=session)
        log = pd.DataFrame([{"case_id": e.case_id, "activity": e.activity, "timestamp": as_utc(e.timestamp)}
                            for e in events], columns=["case_id", "activity", "timestamp"])
        frame = pd.DataFrame([{"case_id": t.ticket_id, "subject": t.subject, "body": t.body,
                               "intent": t.current_intent} for t in tickets],
                             columns=["case_id", "subject", "body", "intent"])
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    return log, frame, catalog, used, feedback


@router.get("/v1/insights/gaps", response_model=GapReport, responses={
    503: {"model": ErrorBody, "description": "at capacity (`overloaded`, with Retry-After) or no index"}})
def get_gaps(
    request: Request,
    index: Annotated[Any, Depends(get_kb_index)],
    principal: Annotated[Principal, Depends(require(*GAP_READERS))],
    _slot: Annotated[None, Depends(heavy("knowledge gaps"))],
    sample_per_topic: Annotated[int, Query(ge=1, le=200)] = 20,
    top_k: Annotated[int, Query(ge=1, le=20)] = 5,
) -> GapReport:
    """Knowledge gaps over the stored tickets (topic = current intent): what to write next, articles not earning use.

    A heavy endpoint (one retrieval per sampled ticket): shed with 503 `overloaded` + Retry-After when at capacity.
    """
    log, frame, catalog, used, feedback = _read_for_gaps_with_feedback(request.app.state.engine)
    return knowledge_gaps(log=log, tickets=frame, retriever=kb_retriever(request, index), catalog=catalog,
                          sample_per_topic=sample_per_topic, top_k=top_k, used=used, feedback=feedback)


@router.get("/v1/assist/templates", response_model=list[DraftTemplatePublic])
def list_draft_templates(
    session: SessionDep, principal: Annotated[Principal, Depends(require(*TEMPLATE_READERS))],
) -> list[DraftTemplatePublic]:
    """Every stored draft template (intent and channel "*" = any); drafts without one use the built-in default."""
    return service.list_templates(session=session)


@router.get("/v1/assist/templates/{intent}/{channel}", response_model=DraftTemplatePublic)
def get_draft_template(
    intent: Scope, channel: Scope, session: SessionDep,
    principal: Annotated[Principal, Depends(require(*TEMPLATE_READERS))],
) -> DraftTemplatePublic:
    """The template a draft for this intent and channel uses (the most specific stored; 404 = built-in default)."""
    out = service.get_template(session=session, intent=intent, channel=channel)
    if out is None:
        from core.errors import NotFound

        raise NotFound(f"no stored draft template applies to intent {intent!r} and channel {channel!r}; "
                       "drafts use the built-in default")
    return out


@router.put("/v1/assist/templates/{intent}/{channel}", response_model=DraftTemplatePublic)
def put_draft_template(
    intent: Scope, channel: Scope, body: DraftTemplateIn, request: Request, session: SessionDep,
    principal: Annotated[Principal, Depends(require())],
) -> DraftTemplatePublic:
    """Create or replace the draft template of one intent and channel (admins; audited, the version goes up)."""
    out = service.put_template(session=session, intent=intent, channel=channel, template_in=body, by=principal.name)
    set_audit_object(request, f"assist/templates/{out.intent}/{out.channel}")
    return out


@router.delete("/v1/assist/templates/{intent}/{channel}", status_code=204)
def delete_draft_template(
    intent: Scope, channel: Scope, request: Request, session: SessionDep,
    principal: Annotated[Principal, Depends(require())],
) -> Response:
    """Remove a stored template (admins; audited): drafts fall back to a wider one, then the built-in default."""
    set_audit_object(request, f"assist/templates/{intent}/{channel}")
    service.delete_template(session=session, intent=intent, channel=channel)
    return Response(status_code=204)
