"""Inbound helpdesk adapters: Zendesk and Freshdesk "ticket created" webhooks, routed and written back.

Each adapter maps the payload its vendor documents onto a `TicketIn` (ticket id `zendesk-<id>` /
`freshdesk-<id>`), routes it with the same service call as `POST /v1/tickets/route`, and answers with the decision.
When the helpdesk's URL and credentials are set, the decision is also written back to the ticket (group, tags and a
private note with the reasons) by the webhook worker from the durable outbox (api.webhooks), retried until it lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from api.audit import set_audit_object
from api.auth import Principal, require
from api.deps import get_bundle, get_decide, get_metrics, get_session, get_thresholds
from api.errors import ERROR_RESPONSES
from api.limits import routing_slot
from api.webhooks import zendesk_signature_ok
from insight.errors import InvalidInput
from routing import service
from routing.models import DecisionPublic, TicketIn

router = APIRouter(prefix="/v1/inbound", tags=["inbound"], responses=ERROR_RESPONSES)

# Freshdesk's numeric ticket sources (API v2).
FRESHDESK_SOURCES = {1: "email", 2: "portal", 3: "phone", 7: "chat", 9: "feedback_widget", 10: "outbound_email"}
FRESHDESK_PRIORITIES = {1: "low", 2: "medium", 3: "high", 4: "urgent"}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ZendeskTicket(_Loose):
    """The ticket fields Zendesk sends (ticket object of the API, or a trigger's JSON body)."""

    id: int | str
    subject: str | None = ""
    description: str | None = ""
    priority: str | None = None
    tags: list[str] | str | None = None
    via: dict[str, Any] | None = None
    requester: dict[str, Any] | None = None
    created_at: datetime | None = None


class ZendeskPayload(_Loose):
    """`{"ticket": {...}}` as Zendesk's ticket API and most trigger bodies put it."""

    ticket: ZendeskTicket


class FreshdeskTicket(_Loose):
    """A Freshdesk ticket (API v2 shape)."""

    id: int | str
    subject: str | None = ""
    description_text: str | None = None
    description: str | None = None
    source: int | str | None = None
    priority: int | str | None = None
    tags: list[str] | None = None
    requester: dict[str, Any] | None = None
    created_at: datetime | None = None


class FreshdeskWebhook(_Loose):
    """The placeholders of a Freshdesk automation webhook (`{"freshdesk_webhook": {"ticket_id": ...}}`)."""

    ticket_id: int | str
    ticket_subject: str | None = ""
    ticket_description: str | None = ""
    ticket_source: str | None = None
    ticket_priority: str | None = None
    ticket_tags: str | None = None
    ticket_requester_name: str | None = None
    ticket_requester_email: str | None = None


class InboundPublic(BaseModel):
    """The decision for the helpdesk ticket, and whether it will be written back."""

    helpdesk: str
    external_id: str
    writeback: bool = Field(description="true when the decision is queued to be written back to the ticket")
    decision: DecisionPublic


def _text(value: str | None, limit: int) -> str:
    return (value or "").replace("\x00", "")[:limit]


def _parse(model: type[BaseModel], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(f"{what}: {where or 'body'}: {first.get('msg')}", field=where or "body") from exc


def zendesk_ticket(data: Any) -> TicketIn:
    """A Zendesk payload (`{"ticket": {...}}` or the ticket object itself) as a TicketIn."""
    raw = data.get("ticket", data) if isinstance(data, dict) else data
    t = _parse(ZendeskTicket, raw, "zendesk ticket")
    tags = t.tags if isinstance(t.tags, list) else (t.tags or "").split()
    custom = {"helpdesk": "zendesk"}
    if tags:
        custom["tags"] = " ".join(str(x) for x in tags)[:1000]
    if t.requester:
        for k in ("name", "email"):
            if t.requester.get(k):
                custom[f"requester_{k}"] = str(t.requester[k])[:1000]
    return _parse(TicketIn, {
        "ticket_id": f"zendesk-{t.id}", "subject": _text(t.subject, 1000), "body": _text(t.description, 100_000),
        "channel": (t.via or {}).get("channel"), "priority": t.priority, "custom_fields": custom,
        "created_at": t.created_at,
    }, "zendesk ticket")


def freshdesk_ticket(data: Any) -> TicketIn:
    """A Freshdesk payload (automation webhook placeholders, `{"ticket": {...}}` or the ticket) as a TicketIn."""
    if isinstance(data, dict) and "freshdesk_webhook" in data:
        w = _parse(FreshdeskWebhook, data["freshdesk_webhook"], "freshdesk webhook")
        custom = {"helpdesk": "freshdesk"}
        if w.ticket_tags:
            custom["tags"] = w.ticket_tags[:1000]
        if w.ticket_requester_name:
            custom["requester_name"] = w.ticket_requester_name[:1000]
        if w.ticket_requester_email:
            custom["requester_email"] = w.ticket_requester_email[:1000]
        return _parse(TicketIn, {
            "ticket_id": f"freshdesk-{w.ticket_id}", "subject": _text(w.ticket_subject, 1000),
            "body": _text(w.ticket_description, 100_000), "channel": (w.ticket_source or None) and w.ticket_source.lower(),
            "priority": (w.ticket_priority or None) and w.ticket_priority.lower(), "custom_fields": custom,
        }, "freshdesk webhook")
    raw = data.get("ticket", data) if isinstance(data, dict) else data
    t = _parse(FreshdeskTicket, raw, "freshdesk ticket")
    source = FRESHDESK_SOURCES.get(int(t.source)) if str(t.source or "").isdigit() else t.source
    priority = FRESHDESK_PRIORITIES.get(int(t.priority)) if str(t.priority or "").isdigit() else t.priority
    custom = {"helpdesk": "freshdesk"}
    if t.tags:
        custom["tags"] = " ".join(t.tags)[:1000]
    if t.requester:
        for k in ("name", "email"):
            if t.requester.get(k):
                custom[f"requester_{k}"] = str(t.requester[k])[:1000]
    return _parse(TicketIn, {
        "ticket_id": f"freshdesk-{t.id}", "subject": _text(t.subject, 1000),
        "body": _text(t.description_text if t.description_text is not None else t.description, 100_000),
        "channel": source, "priority": priority, "custom_fields": custom, "created_at": t.created_at,
    }, "freshdesk ticket")


async def _json_body(request: Request) -> tuple[bytes, Any]:
    raw = await request.body()
    try:
        return raw, json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body is not JSON: {exc}", field="body") from exc


@dataclass
class RouteDeps:
    """What routing an inbound ticket needs: the same dependencies as `POST /v1/tickets/route`."""

    request: Request
    session: Session
    thresholds: Any
    bundle: Any
    decide: Any
    metrics: Any


async def route_deps(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    principal: Annotated[Principal, Depends(require("helpdesk"))],
    _slot: Annotated[None, Depends(routing_slot("routing"))],
    thresholds: Annotated[Any, Depends(get_thresholds)],
    bundle: Annotated[Any, Depends(get_bundle)],
    decide: Annotated[Any, Depends(get_decide)],
    metrics: Annotated[Any, Depends(get_metrics)],
) -> RouteDeps:
    """The routing dependencies (key with the helpdesk role, a routing slot, the model) in one object."""
    return RouteDeps(request, session, thresholds, bundle, decide, metrics)


Deps = Annotated[RouteDeps, Depends(route_deps)]


def _route(d: RouteDeps, helpdesk: str, ticket: TicketIn) -> Response:
    request, session, metrics = d.request, d.session, d.metrics
    settings = request.app.state.settings
    set_audit_object(request, ticket.ticket_id)
    out = service.route(session=session, bundle=d.bundle, ticket_in=ticket, thresholds=d.thresholds,
                        decide=d.decide, store_raw=settings.store_raw_text,
                        pseudonym_key=settings.pseudonym_key.get_secret_value() or None)
    if not out.replayed:
        metrics.record_decisions([(out.decision.result.decision, out.decision.trigger)])
    worker = getattr(request.app.state, "webhooks", None)
    writeback = worker is not None and helpdesk in worker.writebacks
    if writeback and not out.replayed and worker is not None:
        worker.wake()
    body = InboundPublic(helpdesk=helpdesk, external_id=ticket.ticket_id.split("-", 1)[1], writeback=writeback,
                         decision=out.decision)
    return Response(body.model_dump_json(), status_code=200 if out.replayed else 201,
                    media_type="application/json")


@router.post("/zendesk", response_model=InboundPublic, status_code=201, responses={
    200: {"model": InboundPublic, "description": "the same ticket and payload again: the stored decision"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "Zendesk ticket (`{\"ticket\": {...}}` or the ticket object)"}}}}})
async def zendesk(
    deps: Deps,
    x_zendesk_webhook_signature: Annotated[str | None, Header()] = None,
    x_zendesk_webhook_signature_timestamp: Annotated[str | None, Header()] = None,
) -> Response:
    """Route a ticket Zendesk just created; the decision is written back when Zendesk write-back is configured."""
    raw, data = await _json_body(deps.request)
    secret = deps.request.app.state.settings.zendesk_webhook_secret
    if secret is not None and not (
        x_zendesk_webhook_signature and x_zendesk_webhook_signature_timestamp
        and zendesk_signature_ok(secret.get_secret_value(), x_zendesk_webhook_signature_timestamp, raw,
                                 x_zendesk_webhook_signature)
    ):
        raise HTTPException(401, "X-Zendesk-Webhook-Signature is missing or does not match the webhook secret")
    ticket = zendesk_ticket(data)
    return await anyio.to_thread.run_sync(_route, deps, "zendesk", ticket)


@router.post("/freshdesk", response_model=InboundPublic, status_code=201, responses={
    200: {"model": InboundPublic, "description": "the same ticket and payload again: the stored decision"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "Freshdesk ticket or automation webhook (`{\"freshdesk_webhook\": {...}}`)"}}}}})
async def freshdesk(deps: Deps) -> Response:
    """Route a ticket Freshdesk just created; the decision is written back when Freshdesk write-back is configured."""
    _, data = await _json_body(deps.request)
    return await anyio.to_thread.run_sync(_route, deps, "freshdesk", freshdesk_ticket(data))
