"""Routing data: what a helpdesk sends (TicketIn, EventIn, FeedbackIn), what triage answers (TriageResult),
and the SQL tables that keep tickets, decisions, the live event log and feedback."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import JSON, Column, DateTime, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from core.ids import MAX_DB_INT
from core.jsonbody import JsonBody

Decision = Literal["auto_route", "suggest", "triage"]
DECISIONS: tuple[str, ...] = ("auto_route", "suggest", "triage")

# Bounds that keep one request cheap to store and to embed; bigger payloads are refused with 422.
MAX_SUBJECT = 1_000
MAX_BODY = 20_000
MAX_CUSTOM_FIELDS = 50
MAX_CUSTOM_KEY = 64
MAX_CUSTOM_VALUE = 1_000
MAX_ID = 128
MAX_LABEL = 128


def utcnow() -> datetime:
    """Current time, tz-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Treat naive datetimes (SQLite drops the zone) as UTC; convert aware ones to UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")


def iso_only(value: Any) -> Any:
    """Dates come as ISO 8601 text (or datetimes): a bare number is refused, not read as seconds since 1970."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("must be an ISO 8601 date-time such as 2026-12-06T10:00:00Z, not a number")
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 date-time such as 2026-12-06T10:00:00Z, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(iso_only)]


def _tz_column(*, nullable: bool = False, index: bool = False) -> Any:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


# ---------------------------------------------------------------- requests (validated at the edge)


# "Has text": a character that is whitespace for neither Python's str.strip() nor the schema's regex dialect
# (ECMA-262, where U+FEFF is whitespace but U+001C..U+001F and U+0085 are not). The same set in the Rust regex
# pydantic validates patterns with, so the schema and the server agree on every character.
TEXT_PATTERN = r"[^\s\x1c-\x1f\x85\ufeff]"
_TEXT = re.compile(TEXT_PATTERN)


def has_text(value: str | None) -> bool:
    """Does `value` hold a character that is not whitespace (the rule `TEXT_PATTERN` states in the schema)?"""
    return bool(value) and _TEXT.search(value or "") is not None


def strip_text(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A request's texts with surrounding whitespace removed, AFTER every constraint judged the text as sent (so
    a text over `max_length` is refused even when it is mostly spaces, as the schema says); a field that needs
    text (`min_length`) and held only whitespace is refused. Use as `_strip_text = field_validator("*")(strip_text)`
    on a request model; `api.responses` then states the `\\S` rule in the schema."""
    if isinstance(value, str):
        out = value.strip()
        field = cls.model_fields.get(info.field_name or "")
        need = next((m.min_length for m in (field.metadata if field else ()) if getattr(m, "min_length", None)), 0)
        if len(out) < need or (need and not has_text(out)):
            raise ValueError("must contain something besides whitespace")
        return out
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return value



class TicketBase(SQLModel):
    """A ticket's fields as the helpdesk sends them, written once: the request (`TicketIn`, validated), the table
    (`Ticket`) and the response (`TicketPublic`) inherit them. `ticket_id` is the helpdesk's own id."""

    ticket_id: str = SQLField(min_length=1, max_length=MAX_ID, unique=True, index=True)
    subject: str = SQLField(default="", max_length=MAX_SUBJECT, sa_column=Column(Text, nullable=False, default=""))
    body: str = SQLField(default="", max_length=MAX_BODY, sa_column=Column(Text, nullable=False, default=""))
    channel: str | None = SQLField(default=None, max_length=MAX_LABEL)
    segment: str | None = SQLField(default=None, max_length=MAX_LABEL)
    priority: str | None = SQLField(default=None, max_length=MAX_LABEL)
    custom_fields: dict[str, str] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime | None = SQLField(default=None, sa_column=_tz_column(nullable=True))

    def ticket_fields(self, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """This ticket's `TicketBase` fields by name but those in `exclude`, to build another member of the family
        or a row from it (custom fields as a fresh dict, `created_at` in UTC: SQLite drops the zone)."""
        out = {name: getattr(self, name) for name in TICKET_FIELDS if name not in exclude}
        if "custom_fields" in out:
            out["custom_fields"] = dict(self.custom_fields or {})
        if "created_at" in out:
            out["created_at"] = as_utc(self.created_at)
        return out


# The fields every ticket model shares, in declaration order (the request, the table and the response).
TICKET_FIELDS: tuple[str, ...] = tuple(TicketBase.model_fields)


class TicketIn(TicketBase, JsonBody):
    """A new (or updated) ticket as the helpdesk sends it (the family's Create model)."""

    # The schema states the rule of `_has_text`: a subject or a body with something besides whitespace.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [  # type: ignore[assignment]  # SQLModel annotates a narrower dict type
        {"required": ["subject"], "properties": {"subject": {"pattern": TEXT_PATTERN}}},
        {"required": ["body"], "properties": {"body": {"pattern": TEXT_PATTERN}}}]})

    custom_fields: dict[str, str] = Field(default_factory=dict, json_schema_extra={
        "maxProperties": MAX_CUSTOM_FIELDS, "propertyNames": {"maxLength": MAX_CUSTOM_KEY, "pattern": TEXT_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": MAX_CUSTOM_VALUE}})

    _strip_text = field_validator("*")(strip_text)

    @field_validator("custom_fields")
    @classmethod
    def _bounded_fields(cls, value: dict[str, str]) -> dict[str, str]:
        """Lengths judged as sent (the schema's rules), then names and values stripped like every text."""
        if len(value) > MAX_CUSTOM_FIELDS:
            raise ValueError(f"at most {MAX_CUSTOM_FIELDS} custom fields, got {len(value)}")
        out: dict[str, str] = {}
        for key, val in value.items():
            if not has_text(key) or len(key) > MAX_CUSTOM_KEY:
                raise ValueError(f"custom field name {key[:80]!r} must be 1..{MAX_CUSTOM_KEY} characters with "
                                 "something besides whitespace")
            if len(val) > MAX_CUSTOM_VALUE:
                raise ValueError(f"custom field {key!r} is longer than {MAX_CUSTOM_VALUE} characters")
            out[key.strip()] = val.strip()
        return out

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @model_validator(mode="after")
    def _has_text(self) -> TicketIn:
        if not has_text(self.subject) and not has_text(self.body):
            raise ValueError("subject and body are both empty; a ticket needs text to be routed")
        return self

    @property
    def text(self) -> str:
        """Subject and body as one text, the way the models read a ticket."""
        return f"{self.subject}\n\n{self.body}".strip()

    def payload_hash(self) -> str:
        """Stable hash of the payload: the same ticket sent twice hashes the same (idempotent routing)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class TicketBatchIn(JsonBody):
    """Many tickets in one call (routed in one transaction)."""

    model_config = ConfigDict(extra="forbid")

    tickets: list[TicketIn] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique_ids(self) -> TicketBatchIn:
        seen: set[str] = set()
        for i, t in enumerate(self.tickets):
            if t.ticket_id in seen:
                raise ValueError(f"tickets[{i}].ticket_id {t.ticket_id!r} appears twice in the batch")
            seen.add(t.ticket_id)
        return self


class DecisionThresholds(BaseModel):
    """When triage may act alone: auto-route needs a confident, in-scope, low-risk prediction."""

    auto_route_confidence: float = Field(default=0.85, ge=0.0, le=1.0)
    suggest_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    max_auto_misroute_risk: float = Field(default=0.3, ge=0.0, le=1.0)


AuthorType = Literal["customer", "agent", "system"]


class EventIn(JsonBody):
    """One thing that happened on a ticket (assignment, message, status change) as the helpdesk streams it."""

    model_config = ConfigDict(extra="forbid")
    _strip_text = field_validator("*")(strip_text)

    activity: str = Field(min_length=1, max_length=MAX_LABEL)
    timestamp: IsoDateTime | None = None
    resource: str | None = Field(default=None, max_length=MAX_LABEL)
    group: str | None = Field(default=None, max_length=MAX_LABEL)
    channel: str | None = Field(default=None, max_length=MAX_LABEL)
    author_type: AuthorType | None = None
    message: str | None = Field(default=None, max_length=MAX_BODY)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @field_validator("payload")
    @classmethod
    def _small_payload(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 16_000:
            raise ValueError("payload is larger than 16000 characters of JSON")
        return value

    @property
    def is_customer_message(self) -> bool:
        """A message written by the customer: the only event that can change the intent."""
        return self.author_type == "customer" and bool(self.message)


class FeedbackIn(JsonBody):
    """What an agent corrected or did with the suggestions."""

    model_config = ConfigDict(extra="forbid")
    _strip_text = field_validator("*")(strip_text)

    decision_id: int | None = Field(default=None, ge=1, le=MAX_DB_INT)
    corrected_team: str | None = Field(default=None, min_length=1, max_length=MAX_LABEL)
    corrected_intent: str | None = Field(default=None, min_length=1, max_length=MAX_LABEL)
    accepted: list[str] = Field(default_factory=list, max_length=100)
    rejected: list[str] = Field(default_factory=list, max_length=100)
    comment: str | None = Field(default=None, max_length=4_000)

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackIn:
        if not (self.corrected_team or self.corrected_intent or self.accepted or self.rejected or self.comment):
            raise ValueError(
                "feedback is empty: give corrected_team, corrected_intent, accepted, rejected or comment"
            )
        return self


# ---------------------------------------------------------------- triage result (what decide() returns)


class TeamScore(BaseModel):
    """One candidate team and its probability."""

    team: str
    probability: float


class Risks(BaseModel):
    """Risks of the ticket: None when the model for that risk is not trained (never a stand-in figure)."""

    misroute: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Calibrated probability that the ticket is passed on by a team that does not resolve it (the "
        "mined `misrouted` label: transferred at least once, or resolved by another team than the first without an "
        "escalation explaining it), from the misroute model (insight.models.misroute) on the attributes and text "
        "known at creation. It describes how tickets like this one fared under the routing that produced the "
        "training log. None when no misroute model is loaded; then `max_auto_misroute_risk` is not applied.",
    )
    sla_breach: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Probability that the ticket takes longer than the SLA target from creation to its last event, "
        "from the remaining-time model's breach classifier on the ticket's creation event (target: the model's "
        "`sla_hours`, by default a quantile of the training cases' durations). At creation the model has only the "
        "ticket's attributes to go on; bench/misroute.py scores it there against the base rate. None without a "
        "remaining-time model.",
    )
    expected_hours_to_resolve: float | None = Field(
        default=None,
        description="Hours from creation to the ticket's last event predicted by the remaining-time model on its "
        "creation event (scored there against the training median by bench/misroute.py). None without a "
        "remaining-time model.",
    )


class SimilarTicket(BaseModel):
    """A past ticket close to this one, with how it was resolved."""

    ticket_id: str
    similarity: float
    intent: str | None = None
    team: str | None = None
    subject: str | None = None


class TriageResult(BaseModel):
    """Everything triage decided for one ticket and why."""

    intent: str | None
    intent_confidence: float = Field(ge=0.0, le=1.0)
    out_of_scope: bool = False
    team: str | None
    team_confidence: float = Field(ge=0.0, le=1.0)
    top_teams: list[TeamScore] = Field(default_factory=list)
    risks: Risks = Field(default_factory=Risks)
    decision: Decision
    reasons: list[str] = Field(default_factory=list)
    similar: list[SimilarTicket] = Field(default_factory=list)
    model_versions: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- tables


class Ticket(TicketBase, table=True):
    """A ticket known to deskpilot (`ticket_id` unique), with its current triage."""

    __tablename__ = "ticket"

    id: int | None = SQLField(default=None, primary_key=True)
    payload_hash: str = SQLField(max_length=64)
    current_intent: str | None = SQLField(default=None, max_length=MAX_LABEL)
    current_team: str | None = SQLField(default=None, max_length=MAX_LABEL)
    current_decision_id: int | None = SQLField(default=None)
    assigned_group: str | None = SQLField(default=None, max_length=MAX_LABEL)
    received_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())

    def to_ticket_in(self) -> TicketIn:
        """The stored payload as a TicketIn again (for re-triage)."""
        return TicketIn(**self.ticket_fields())


class TriageDecision(SQLModel, table=True):
    """One triage of a ticket (a new payload or an intent-changing message adds a row; history is kept)."""

    __tablename__ = "triage_decision"

    id: int | None = SQLField(default=None, primary_key=True)
    ticket_id: str = SQLField(max_length=MAX_ID, index=True, foreign_key="ticket.ticket_id")
    trigger: str = SQLField(max_length=16)  # "route" | "reroute" (new payload) | "event" (customer message)
    payload_hash: str = SQLField(max_length=64)
    intent: str | None = SQLField(default=None, max_length=MAX_LABEL)
    intent_confidence: float = 0.0
    out_of_scope: bool = False
    team: str | None = SQLField(default=None, max_length=MAX_LABEL)
    team_confidence: float = 0.0
    decision: str = SQLField(max_length=16, index=True)
    result: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    model_versions: dict[str, str] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())

    def triage_result(self) -> TriageResult:
        """The stored result as a TriageResult."""
        return TriageResult.model_validate(self.result)


class TicketEvent(SQLModel, table=True):
    """An event of the live log (canonical columns: case_id, activity, timestamp, resource, group, channel)."""

    __tablename__ = "ticket_event"

    id: int | None = SQLField(default=None, primary_key=True)
    case_id: str = SQLField(max_length=MAX_ID, index=True, foreign_key="ticket.ticket_id")
    activity: str = SQLField(max_length=MAX_LABEL)
    timestamp: datetime = SQLField(sa_column=_tz_column(index=True))
    resource: str | None = SQLField(default=None, max_length=MAX_LABEL)
    group: str | None = SQLField(default=None, max_length=MAX_LABEL)
    channel: str | None = SQLField(default=None, max_length=MAX_LABEL)
    author_type: str | None = SQLField(default=None, max_length=16)
    message: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    payload: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    retriaged: bool = False
    decision_id: int | None = SQLField(default=None, foreign_key="triage_decision.id")
    received_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())


class RouterResolution(SQLModel, table=True):
    """A ticket resolved (or closed) by a team, as the live log reported it: the router's memory of resolutions.

    `attributes` are the ticket's creation-time attributes as they were routed (channel, segment, priority, the
    current intent, custom fields). Rows are only added; every worker applies rows with an id above its own
    high-water mark to its in-memory router (routing.live_memory).
    """

    __tablename__ = "router_resolution"

    id: int | None = SQLField(default=None, primary_key=True)
    ticket_id: str = SQLField(max_length=MAX_ID, index=True, foreign_key="ticket.ticket_id")
    event_id: int | None = SQLField(default=None, foreign_key="ticket_event.id")
    team: str = SQLField(max_length=MAX_LABEL)
    attributes: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resolved_at: datetime = SQLField(sa_column=_tz_column(index=True))
    recorded_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())


class Feedback(SQLModel, table=True):
    """An agent's correction of a decision or verdict on suggestions."""

    __tablename__ = "feedback"

    id: int | None = SQLField(default=None, primary_key=True)
    ticket_id: str = SQLField(max_length=MAX_ID, index=True, foreign_key="ticket.ticket_id")
    decision_id: int | None = SQLField(default=None, foreign_key="triage_decision.id")
    corrected_team: str | None = SQLField(default=None, max_length=MAX_LABEL)
    corrected_intent: str | None = SQLField(default=None, max_length=MAX_LABEL)
    accepted: list[str] = SQLField(default_factory=list, sa_column=Column(JSON, nullable=False))
    rejected: list[str] = SQLField(default_factory=list, sa_column=Column(JSON, nullable=False))
    comment: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    by: str | None = SQLField(default=None, max_length=MAX_LABEL)
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())


class TicketClaim(SQLModel, table=True):
    """Who is working a ticket the router left to people (one claim per ticket; released claims are deleted)."""

    __tablename__ = "ticket_claim"

    ticket_id: str = SQLField(max_length=MAX_ID, primary_key=True, foreign_key="ticket.ticket_id")
    claimed_by: str = SQLField(max_length=MAX_LABEL, index=True)
    claimed_at: datetime = SQLField(default_factory=utcnow, sa_column=_tz_column())


# ---------------------------------------------------------------- public responses


class DecisionPublic(BaseModel):
    """A stored triage decision as the API returns it."""

    decision_id: int
    ticket_id: str
    trigger: str
    created_at: datetime
    replayed: bool = False
    result: TriageResult

    @classmethod
    def from_row(cls, row: TriageDecision, *, replayed: bool = False) -> DecisionPublic:
        """Build from a TriageDecision row."""
        assert row.id is not None
        return cls(
            decision_id=row.id, ticket_id=row.ticket_id, trigger=row.trigger,
            created_at=as_utc(row.created_at) or utcnow(), replayed=replayed, result=row.triage_result(),
        )


class BatchRoutePublic(BaseModel):
    """Answer to a batch route: one decision per ticket, in request order."""

    decisions: list[DecisionPublic]
    new: int
    replayed: int


class EventPublic(BaseModel):
    """A stored event."""

    id: int
    case_id: str
    activity: str
    timestamp: datetime
    resource: str | None
    group: str | None
    channel: str | None
    author_type: str | None
    message: str | None
    payload: dict[str, Any]
    retriaged: bool
    decision_id: int | None

    @classmethod
    def from_row(cls, row: TicketEvent) -> EventPublic:
        """Build from a TicketEvent row."""
        assert row.id is not None
        return cls(
            id=row.id, case_id=row.case_id, activity=row.activity,
            timestamp=as_utc(row.timestamp) or utcnow(), resource=row.resource, group=row.group,
            channel=row.channel, author_type=row.author_type, message=row.message, payload=dict(row.payload or {}),
            retriaged=row.retriaged, decision_id=row.decision_id,
        )


class EventResult(BaseModel):
    """Answer to a posted event: the stored event and, when the intent changed, the new decision."""

    event: EventPublic
    retriage_checked: bool
    intent_changed: bool
    previous_intent: str | None
    new_intent: str | None = None
    decision: DecisionPublic | None = None
    note: str = ""


class FeedbackPublic(BaseModel):
    """Stored feedback."""

    id: int
    ticket_id: str
    decision_id: int | None
    corrected_team: str | None
    corrected_intent: str | None
    accepted: list[str]
    rejected: list[str]
    comment: str | None
    by: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Feedback) -> FeedbackPublic:
        """Build from a Feedback row."""
        assert row.id is not None
        return cls(
            id=row.id, ticket_id=row.ticket_id, decision_id=row.decision_id, corrected_team=row.corrected_team,
            corrected_intent=row.corrected_intent, accepted=list(row.accepted or []),
            rejected=list(row.rejected or []), comment=row.comment, by=row.by,
            created_at=as_utc(row.created_at) or utcnow(),
        )


class TicketPublic(TicketBase):
    """A ticket with its current decision, decision history, events and feedback."""

    current_intent: str | None
    current_team: str | None
    assigned_group: str | None
    received_at: datetime
    updated_at: datetime
    current_decision: DecisionPublic | None
    decisions: list[DecisionPublic]
    events: list[EventPublic]
    feedback: list[FeedbackPublic]


QueueDecision = Literal["suggest", "triage"]
QUEUE_DECISIONS: tuple[QueueDecision, ...] = ("triage", "suggest")  # decisions that leave a ticket to people


class QueueFilter(BaseModel):
    """Which tickets the triage queue lists: decisions left to people, by team / intent / age / claim."""

    model_config = ConfigDict(extra="forbid")

    decisions: list[QueueDecision] = Field(default_factory=lambda: list(QUEUE_DECISIONS))
    team: str | None = Field(default=None, max_length=MAX_LABEL)  # the suggested team
    intent: str | None = Field(default=None, max_length=MAX_LABEL)
    max_age_hours: float | None = Field(default=None, gt=0, le=24 * 366 * 100)  # received within this many hours
    claimed: Literal["any", "unclaimed", "mine"] = "any"
    include_handled: bool = False  # also tickets whose current decision has feedback or that are resolved
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10**9)


class QueueItem(BaseModel):
    """One ticket in the triage queue with its current decision and claim."""

    ticket_id: str
    subject: str
    channel: str | None
    priority: str | None
    received_at: datetime
    age_hours: float
    decision_id: int
    decision: str
    trigger: str  # "route" | "reroute" | "event" (a customer message re-triaged it)
    intent: str | None
    intent_confidence: float
    team: str | None
    team_confidence: float
    reason: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    handled: bool


class QueuePage(BaseModel):
    """A page of the triage queue and how many tickets match in all."""

    items: list[QueueItem]
    total: int


class ClaimPublic(BaseModel):
    """A ticket's claim, or none."""

    ticket_id: str
    claimed_by: str | None
    claimed_at: datetime | None
