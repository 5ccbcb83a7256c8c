"""Inbound helpdesk adapters: Zendesk and Freshdesk "ticket created" webhooks, routed and written back.

Each adapter maps the payload its vendor documents onto a `TicketIn` (ticket id `zendesk-<id>` /
`freshdesk-<id>`), routes it with the same service call as `POST /v1/tickets/route`, and answers with the decision.
When the helpdesk's URL and credentials are set, the decision is also written back to the ticket (group, tags and a
private note with the reasons) by the webhook worker from the durable outbox (api.webhooks), retried until it lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlmodel import Session

from api.audit import set_audit_object
from api.auth import Principal, require
from api.deps import get_bundle, get_decide, get_metrics, get_session, get_thresholds
from api.errors import ERROR_RESPONSES
from api.limits import routing_slot
from api.metrics import Metrics
from api.webhooks import zendesk_signature_ok
from core.errors import InvalidInput
from core.jsonbody import JsonBody
from routing import service
from routing.models import TEXT_PATTERN, DecisionPublic, DecisionThresholds, IsoDateTime, TicketIn, has_text
from routing.service import DecideFn

if TYPE_CHECKING:
    from routing.triage import ModelBundle
else:
    # FastAPI reads the annotations of `route_deps` when the app is built; the triage module (and the model stack it
    # imports) loads with the model, not with the routes, so at run time the name only has to resolve.
    ModelBundle = Any

router = APIRouter(prefix="/v1/inbound", tags=["inbound"], responses=ERROR_RESPONSES)

# Freshdesk's numeric ticket sources (API v2).
FRESHDESK_SOURCES = {1: "email", 2: "portal", 3: "phone", 7: "chat", 9: "feedback_widget", 10: "outbound_email"}
FRESHDESK_PRIORITIES = {1: "low", 2: "medium", 3: "high", 4: "urgent"}


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


ExternalId = Annotated[int, Field(ge=0, le=2**53)] | Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")]
Label = Annotated[str, Field(max_length=100)]
When = IsoDateTime | None


class _Loose(JsonBody):
    # Vendors send many more fields than deskpilot reads; they are ignored, not refused.
    model_config = ConfigDict(extra="ignore")


def _text_rule(*fields: str) -> dict[str, Any]:
    """The schema of "at least one of these fields has text" (what `_has_text` checks)."""
    return {"anyOf": [{"required": [f], "properties": {f: {"pattern": TEXT_PATTERN}}} for f in fields]}


class Person(_Loose):
    """The requester as the vendors describe people."""

    name: str | None = Field(default=None, max_length=1000)
    email: str | None = Field(default=None, max_length=1000)


class Via(_Loose):
    """Zendesk's `via`: how the ticket came in."""

    channel: Label | None = None


def _require_text(model: BaseModel, fields: tuple[str, str]) -> None:
    if not any(has_text(getattr(model, f)) for f in fields):
        raise ValueError(f"{fields[0]} and {fields[1]} are both empty; a ticket needs text to be routed")


ZENDESK_TICKET_CREATED = "zen:event-type:ticket.created"
_ZENDESK_EVENT_PREFIX = "zen:event-type:"


def _not_an_event() -> dict[str, Any]:
    """The schema of `_refuse_events`: not a Zendesk event envelope."""
    return {"not": {"required": ["type", "detail"],
                    "properties": {"type": {"type": "string", "pattern": "^zen:event-type:"}}}}


class _ZendeskTicketFields(_Loose):
    """The ticket fields both Zendesk shapes carry (the ticket object and an event's `detail`)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_text_rule("subject", "description"))

    id: ExternalId
    subject: str = Field(default="", max_length=1000)
    description: str = Field(default="", max_length=100_000)
    priority: Label | None = None
    tags: list[Label] = Field(default_factory=list, max_length=50)
    via: Via | None = None
    created_at: When = None

    @model_validator(mode="after")
    def _has_text(self) -> Self:
        _require_text(self, ("subject", "description"))
        return self


class ZendeskTicket(_ZendeskTicketFields):
    """The ticket fields Zendesk sends (the ticket API's object, or a trigger's JSON body)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={**_text_rule("subject", "description"),
                                                                 **_not_an_event()})

    @model_validator(mode="before")
    @classmethod
    def _refuse_events(cls, data: Any) -> Any:
        # An event envelope also has an `id` (the event's) and a `subject` ("zen:ticket:<id>"): read as a ticket it
        # would route the wrong ticket id with a meaningless text, so any event type but ticket creation is refused.
        if isinstance(data, dict) and "detail" in data and str(data.get("type", "")).startswith(
                _ZENDESK_EVENT_PREFIX):
            raise ValueError(f"Zendesk event {str(data['type'])[:100]!r} is not routed; only "
                             f"{ZENDESK_TICKET_CREATED!r} is")
        return data

    requester: Person | None = None


class ZendeskPayload(_Loose):
    """`{"ticket": {...}}` as Zendesk's ticket API and most trigger bodies put it."""

    ticket: ZendeskTicket


class ZendeskEventDetail(_ZendeskTicketFields):
    """The ticket in a Zendesk event's `detail` (ids come as strings; people only as ids, which are not read)."""


class ZendeskEvent(_Loose):
    """A webhook subscribed to Zendesk's `zen:event-type:ticket.created` event: the shared event envelope
    (`type`, `account_id`, `id`, `time`, `zendesk_event_version`, `subject` = "zen:ticket:<id>") with the ticket in
    `detail` and the event's own fields in `event`."""

    type: Literal["zen:event-type:ticket.created"] = Field(
        description="only ticket creation is routed; subscribe the webhook to this event type alone")
    id: str | None = Field(default=None, max_length=200, description="Zendesk's id of the event")
    account_id: int | None = None
    time: When = None
    zendesk_event_version: str | None = Field(default=None, max_length=50)
    subject: str | None = Field(default=None, max_length=200, description='"zen:ticket:<ticket id>"')
    detail: ZendeskEventDetail
    event: dict[str, Any] = Field(default_factory=dict)


class FreshdeskTicket(_Loose):
    """A Freshdesk ticket (API v2 shape; `source` and `priority` are Freshdesk's numeric codes)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_text_rule("subject", "description_text"))

    id: ExternalId
    subject: str = Field(default="", max_length=1000)
    description_text: str = Field(default="", max_length=100_000)
    source: int | None = Field(default=None, ge=1, le=99)
    priority: int | None = Field(default=None, ge=1, le=4)
    tags: list[Label] = Field(default_factory=list, max_length=50)
    requester: Person | None = None
    created_at: When = None

    @model_validator(mode="after")
    def _has_text(self) -> FreshdeskTicket:
        _require_text(self, ("subject", "description_text"))
        return self


class FreshdeskPayload(_Loose):
    """`{"ticket": {...}}`."""

    ticket: FreshdeskTicket


class FreshdeskWebhook(_Loose):
    """The placeholders of a Freshdesk automation webhook."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_text_rule("ticket_subject", "ticket_description"))

    ticket_id: ExternalId
    ticket_subject: str = Field(default="", max_length=1000)
    ticket_description: str = Field(default="", max_length=100_000)
    ticket_source: Label | None = None
    ticket_priority: Label | None = None
    ticket_tags: str | None = Field(default=None, max_length=1000)
    ticket_requester_name: str | None = Field(default=None, max_length=1000)
    ticket_requester_email: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _has_text(self) -> FreshdeskWebhook:
        _require_text(self, ("ticket_subject", "ticket_description"))
        return self


class FreshdeskHook(_Loose):
    """`{"freshdesk_webhook": {...}}` as a Freshdesk automation sends it."""

    freshdesk_webhook: FreshdeskWebhook


def _person_fields(person: Person | None) -> dict[str, str]:
    out = {}
    if person is not None:
        for k in ("name", "email"):
            v = getattr(person, k)
            if v:
                out[f"requester_{k}"] = v
    return out


def zendesk_ticket(body: ZendeskEvent | ZendeskPayload | ZendeskTicket) -> TicketIn:
    """A Zendesk payload (a `ticket.created` event, `{"ticket": {...}}` or the ticket object itself) as a TicketIn."""
    t = body.detail if isinstance(body, ZendeskEvent) else body.ticket if isinstance(body, ZendeskPayload) else body
    custom = {"helpdesk": "zendesk", **_person_fields(getattr(t, "requester", None))}
    if t.tags:
        custom["tags"] = " ".join(t.tags)[:1000]
    return _parse(TicketIn, {
        "ticket_id": f"zendesk-{t.id}", "subject": _text(t.subject, 1000), "body": _text(t.description, 100_000),
        "channel": t.via.channel if t.via else None, "priority": t.priority, "custom_fields": custom,
        "created_at": t.created_at,
    }, "zendesk ticket")


def freshdesk_ticket(body: FreshdeskHook | FreshdeskPayload | FreshdeskTicket) -> TicketIn:
    """A Freshdesk payload (automation webhook placeholders, `{"ticket": {...}}` or the ticket) as a TicketIn."""
    if isinstance(body, FreshdeskHook):
        w = body.freshdesk_webhook
        custom = {"helpdesk": "freshdesk"}
        for key, value in (("tags", w.ticket_tags), ("requester_name", w.ticket_requester_name),
                           ("requester_email", w.ticket_requester_email)):
            if value:
                custom[key] = value
        return _parse(TicketIn, {
            "ticket_id": f"freshdesk-{w.ticket_id}", "subject": _text(w.ticket_subject, 1000),
            "body": _text(w.ticket_description, 100_000),
            "channel": w.ticket_source.lower() if w.ticket_source else None,
            "priority": w.ticket_priority.lower() if w.ticket_priority else None, "custom_fields": custom,
        }, "freshdesk webhook")
    t = body.ticket if isinstance(body, FreshdeskPayload) else body
    custom = {"helpdesk": "freshdesk", **_person_fields(t.requester)}
    if t.tags:
        custom["tags"] = " ".join(t.tags)[:1000]
    return _parse(TicketIn, {
        "ticket_id": f"freshdesk-{t.id}", "subject": _text(t.subject, 1000),
        "body": _text(t.description_text, 100_000),
        "channel": FRESHDESK_SOURCES.get(t.source) if t.source is not None else None,
        "priority": FRESHDESK_PRIORITIES.get(t.priority) if t.priority is not None else None,
        "custom_fields": custom, "created_at": t.created_at,
    }, "freshdesk ticket")


@dataclass
class RouteDeps:
    """What routing an inbound ticket needs: the same dependencies as `POST /v1/tickets/route`."""

    request: Request
    session: Session
    thresholds: DecisionThresholds
    bundle: ModelBundle
    decide: DecideFn
    metrics: Metrics


async def route_deps(
    request: Request,
    session: Annotated[Session, Depends(get_session)],
    principal: Annotated[Principal, Depends(require("helpdesk"))],
    _slot: Annotated[None, Depends(routing_slot("routing"))],
    thresholds: Annotated[DecisionThresholds, Depends(get_thresholds)],
    bundle: Annotated[ModelBundle, Depends(get_bundle)],
    decide: Annotated[DecideFn, Depends(get_decide)],
    metrics: Annotated[Metrics, Depends(get_metrics)],
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
    200: {"model": InboundPublic, "description": "the same ticket and payload again: the stored decision"}})
async def zendesk(
    body: ZendeskEvent | ZendeskPayload | ZendeskTicket,
    deps: Deps,
    x_zendesk_webhook_signature: Annotated[str | None, Header()] = None,
    x_zendesk_webhook_signature_timestamp: Annotated[str | None, Header()] = None,
) -> Response:
    """Route a ticket Zendesk just created; the decision is written back when Zendesk write-back is configured."""
    raw = await deps.request.body()  # the bytes Zendesk signed (FastAPI has read and kept them)
    secret = deps.request.app.state.settings.zendesk_webhook_secret
    if secret is not None and not (
        x_zendesk_webhook_signature and x_zendesk_webhook_signature_timestamp
        and zendesk_signature_ok(secret.get_secret_value(), x_zendesk_webhook_signature_timestamp, raw,
                                 x_zendesk_webhook_signature)
    ):
        raise HTTPException(401, "X-Zendesk-Webhook-Signature is missing or does not match the webhook secret")
    return await anyio.to_thread.run_sync(_route, deps, "zendesk", zendesk_ticket(body))


@router.post("/freshdesk", response_model=InboundPublic, status_code=201, responses={
    200: {"model": InboundPublic, "description": "the same ticket and payload again: the stored decision"}})
async def freshdesk(body: FreshdeskHook | FreshdeskPayload | FreshdeskTicket, deps: Deps) -> Response:
    """Route a ticket Freshdesk just created; the decision is written back when Freshdesk write-back is configured."""
    return await anyio.to_thread.run_sync(_route, deps, "freshdesk", freshdesk_ticket(body))
