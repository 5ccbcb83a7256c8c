"""Outbound webhooks and helpdesk write-back from a durable outbox.

Nothing is announced that was not committed, and nothing committed is lost:

- the **sources** are tables every change already writes in its own transaction: `triage_decision` (a new
  ticket's decision, or a re-triage), `feedback` (an agent's correction), `audit_log` (model promotions,
  rollbacks and retrain swaps) and `insight_alert` (alerts from mining the live store). A change and its event are
  therefore committed together, whatever the process does next. A reply an agent sends (`ticket_reply`, see
  `record_reply`) writes its deliveries itself, in the reply's own transaction;
- a **fan-out** step turns new source rows into `webhook_delivery` rows (one per matching subscription, unique
  per subscription and event) in one transaction with the per-source cursor. It rescans a window behind the cursor,
  so a row committed late (a long transaction that took an earlier id) is still picked up;
- **delivery** claims a due row with a lease (an atomic UPDATE, so several workers or replicas never send the same
  attempt twice), POSTs it signed, records the attempt, and on failure schedules a retry with exponential back-off
  and jitter, up to `webhook_max_attempts`. A kill -9 at any point leaves the row pending: it is sent again after
  the lease, with the same idempotency key, so a receiver that saw it already can tell.

Every request carries `X-Deskpilot-Event`, `X-Deskpilot-Delivery` / `Idempotency-Key` (stable across retries),
`X-Deskpilot-Timestamp` and `X-Deskpilot-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
See docs/WEBHOOKS.md for payloads and how a receiver verifies them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import json
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, Column, DateTime, Engine, Table, Text, UniqueConstraint, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from core.errors import Conflict, InvalidInput, NotFound
from core.ids import storable_id
from core.jsonbody import JsonBody
from routing.models import TEXT_PATTERN, as_utc, utcnow

log = structlog.get_logger(__name__)

EventKind = Literal["decision", "retriage", "correction", "alert", "model_swap", "reply"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
WRITEBACK_KINDS: tuple[str, ...] = ("writeback", "reply_writeback")
HELPDESKS: tuple[str, ...] = ("zendesk", "freshdesk")
_SWAP_PATH = re.compile(r"^/v1/models/[^/]+/(rollback|promote)$")


def _tz() -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=False, default=utcnow)


class WebhookSubscription(SQLModel, table=True):
    """Where to send which kinds of events, and the secret that signs them."""

    __tablename__ = "webhook_subscription"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048)
    kinds: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=256)
    active: bool = True
    created_by: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz())


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription (or one helpdesk write-back), until delivered or given up."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("target", "source_key", name="uq_webhook_delivery_target_source"),)

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int | None = Field(default=None, index=True)
    # "sub:<id>" for a subscription, "zendesk" / "freshdesk" for a write-back
    target: str = Field(max_length=64)
    kind: str = Field(max_length=32, index=True)
    source_key: str = Field(max_length=128)  # e.g. "triage_decision:42": the event this delivers
    idempotency_key: str = Field(max_length=64, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16, index=True)  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_tz())
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz())
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: every attempt with its outcome."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True)
    attempt: int
    at: datetime = Field(default_factory=utcnow, sa_column=_tz())
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_ms: float = 0.0


class WebhookCursor(SQLModel, table=True):
    """How far the fan-out has read each source table."""

    __tablename__ = "webhook_cursor"

    source: str = Field(primary_key=True, max_length=64)
    last_id: int = 0


class InsightAlert(SQLModel, table=True):
    """An alert from mining the live store, kept once per (kind, subject, window) and announced as `alert`."""

    __tablename__ = "insight_alert"
    __table_args__ = (UniqueConstraint("dedupe_key", name="uq_insight_alert_dedupe"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=128)
    kind: str = Field(max_length=32)
    severity: str = Field(max_length=8)
    title: str = Field(max_length=512)
    subject: str = Field(max_length=512)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz())


class TicketReply(SQLModel, table=True):
    """A reply an agent sent to a ticket's customer (redacted at the door), announced as `reply` and, for a ticket
    that came in through a helpdesk adapter, written back to it as a public comment / reply."""

    __tablename__ = "ticket_reply"
    __table_args__ = (UniqueConstraint("ticket_id", "request_key", name="uq_ticket_reply_request"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str = Field(max_length=128, index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    by: str | None = Field(default=None, max_length=128)
    article_id: int | None = None  # the article the draft quoted, when the reply started from a draft
    edited: bool | None = None  # whether the agent changed the draft (None: not from a draft)
    request_key: str | None = Field(default=None, max_length=128)  # the sender's idempotency key, if any
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz())


DELIVERY: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]


# --- subscriptions ---------------------------------------------------------------------------------------------




class SubscriptionIn(JsonBody):
    """A new subscription."""

    model_config = ConfigDict(extra="forbid")

    # an ASCII host name or address (an international name in its xn-- form), an optional port, then anything
    url: str = PydField(min_length=8, max_length=2048, pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?([/?#]\S*)?$")
    kinds: list[EventKind] = PydField(min_length=1, max_length=len(EVENT_KINDS))
    description: str | None = PydField(default=None, max_length=256)


class SubscriptionPublic(BaseModel):
    """A subscription as listed (never its secret)."""

    id: int
    url: str
    kinds: list[str]
    description: str | None
    active: bool
    created_by: str | None
    created_at: datetime


class SubscriptionCreated(SubscriptionPublic):
    """A new subscription with its signing secret: shown this once."""

    secret: str


def _public(row: WebhookSubscription) -> SubscriptionPublic:
    return SubscriptionPublic(id=int(row.id or 0), url=row.url, kinds=list(row.kinds), description=row.description,
                              active=row.active, created_by=row.created_by,
                              created_at=as_utc(row.created_at) or utcnow())


def check_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL with a host; private, loopback and link-local targets only when `allow_private`."""
    if len(url) > 2048:
        raise InvalidInput("url is longer than 2048 characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid address: {exc}", field="url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// address with a host", field="url")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise InvalidInput(f"url host {parts.hostname!r} does not resolve", field="url") from exc
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
                raise InvalidInput(
                    f"url host {parts.hostname!r} is a private or local address; set "
                    "DESKPILOT_WEBHOOK_ALLOW_PRIVATE=true to allow it", field="url")
    return url


def create_subscription(*, session: Session, sub_in: SubscriptionIn, by: str | None,
                        allow_private: bool) -> SubscriptionCreated:
    """Store a subscription and return it with its new signing secret (the only time the secret is shown)."""
    kinds: list[str] = sorted(set(sub_in.kinds))
    bad = [k for k in kinds if k not in EVENT_KINDS]
    if not kinds or bad:
        raise InvalidInput(f"kinds must be a non-empty list of {', '.join(EVENT_KINDS)}; got {bad or kinds}",
                           field="kinds")
    url = check_url(sub_in.url, allow_private=allow_private)
    row = WebhookSubscription(url=url, kinds=kinds, secret=secrets.token_hex(32), description=sub_in.description,
                              created_by=by)
    session.add(row)
    ensure_cursors(session)  # the fan-out reads from here on: nothing after this commit is missed
    session.commit()
    session.refresh(row)
    return SubscriptionCreated(**_public(row).model_dump(), secret=row.secret)


def list_subscriptions(*, session: Session) -> list[SubscriptionPublic]:
    """Every subscription, newest first."""
    rows = session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.id).desc())).all()  # type: ignore[union-attr]
    return [_public(r) for r in rows]


def delete_subscription(*, session: Session, subscription_id: int) -> None:
    """Stop a subscription: pending deliveries to it are given up, the log stays."""
    row = session.get(WebhookSubscription, subscription_id) if storable_id(subscription_id) else None
    if row is None:
        raise NotFound(f"webhook subscription {subscription_id} does not exist")
    session.delete(row)
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.status == "pending")  # type: ignore[arg-type]
        .values(status="failed", last_error="subscription deleted")
    )
    session.commit()


# --- deliveries (the log) ----------------------------------------------------------------------------------------


class AttemptPublic(BaseModel):
    """One attempt of a delivery."""

    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryPublic(BaseModel):
    """One delivery with its attempts."""

    id: int
    subscription_id: int | None
    target: str
    kind: str
    source_key: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    log: list[AttemptPublic] = []


def list_deliveries(*, session: Session, status: str | None = None, kind: str | None = None,
                    subscription_id: int | None = None, limit: int = 100) -> list[DeliveryPublic]:
    """Deliveries, newest first, with their attempts."""
    q = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(max(1, min(limit, 1000)))  # type: ignore[union-attr]
    if status:
        q = q.where(WebhookDelivery.status == status)
    if kind:
        q = q.where(WebhookDelivery.kind == kind)
    if subscription_id is not None:
        q = q.where(WebhookDelivery.subscription_id == subscription_id)
    rows = session.exec(q).all()
    ids = [r.id for r in rows]
    attempts: dict[int, list[AttemptPublic]] = {}
    if ids:
        for a in session.exec(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids))  # type: ignore[attr-defined]
                              .order_by(col(WebhookAttempt.id))).all():
            attempts.setdefault(a.delivery_id, []).append(AttemptPublic(
                attempt=a.attempt, at=as_utc(a.at) or utcnow(), status_code=a.status_code, error=a.error,
                duration_ms=a.duration_ms))
    return [
        DeliveryPublic(
            id=int(r.id or 0), subscription_id=r.subscription_id, target=r.target, kind=r.kind,
            source_key=r.source_key, idempotency_key=r.idempotency_key, status=r.status, attempts=r.attempts,
            next_attempt_at=as_utc(r.next_attempt_at) if r.status == "pending" else None,
            last_status=r.last_status, last_error=r.last_error, created_at=as_utc(r.created_at) or utcnow(),
            delivered_at=as_utc(r.delivered_at), payload=r.payload, log=attempts.get(int(r.id or 0), []),
        )
        for r in rows
    ]


def redeliver(*, session: Session, delivery_id: int) -> None:
    """Send a delivery again (same idempotency key), whatever its state."""
    row = session.get(WebhookDelivery, delivery_id) if storable_id(delivery_id) else None
    if row is None:
        raise NotFound(f"webhook delivery {delivery_id} does not exist")
    row.status, row.next_attempt_at, row.lease_until = "pending", utcnow(), None
    session.add(row)
    session.commit()


# --- alerts from live mining --------------------------------------------------------------------------------------


def publish_alerts(*, session: Session, alerts: Iterable[Any], window_end: datetime | None,
                   min_severity: str = "medium") -> int:
    """Store alerts (insight.mining.alerts.Alert) of at least `min_severity` once per (kind, subject, window).

    Storing is what announces them: subscriptions to `alert` get each new row. Returns how many were new.
    """
    order = {"high": 0, "medium": 1, "low": 2}
    window = window_end.isoformat()[:10] if window_end is not None else ""
    new = 0
    for a in alerts:
        if order.get(a.severity, 3) > order[min_severity]:
            continue
        key = hashlib.sha256(f"{a.kind}|{a.subject}|{window}".encode()).hexdigest()[:64]
        if session.exec(select(InsightAlert.id).where(InsightAlert.dedupe_key == key)).first() is not None:
            continue
        payload = {k: v for k, v in vars(a).items() if k != "example_cases"}
        payload["example_cases"] = list(a.example_cases[:10])
        payload["window_end"] = window or None
        session.add(InsightAlert(dedupe_key=key, kind=a.kind, severity=a.severity, title=a.title[:512],
                                 subject=a.subject[:512], payload=json.loads(json.dumps(payload, default=str))))
        new += 1
    session.commit()
    return new


# --- replies to the customer --------------------------------------------------------------------------------------

REPLY_MAX_CHARS = 20_000


class ReplyIn(JsonBody):
    """A reply to the ticket's customer: the draft as sent, or any text."""

    model_config = ConfigDict(extra="forbid")

    text: str = PydField(min_length=1, max_length=REPLY_MAX_CHARS, pattern=TEXT_PATTERN,
                         description="the reply as the customer should read it (redacted before it is stored, "
                                     "unless DESKPILOT_STORE_RAW_TEXT is set)")
    article_id: int | None = PydField(default=None, ge=1, le=2**53,
                                      description="the knowledge article the draft quoted, if it came from one")
    edited: bool | None = PydField(default=None, description="whether the agent changed the suggested draft")


class ReplyDeliveryPublic(BaseModel):
    """Where a reply goes and how far it got."""

    target: str = PydField(description='"sub:<id>" for a webhook subscription, "zendesk" / "freshdesk" for the '
                                       "ticket's helpdesk")
    kind: str = PydField(description="`reply` to a subscription, `reply_writeback` to the helpdesk")
    status: str = PydField(description="pending | delivered | failed")
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class ReplyPublic(BaseModel):
    """A stored reply and the state of its deliveries."""

    id: int
    ticket_id: str
    helpdesk: str | None = PydField(description="zendesk / freshdesk for a ticket that came in through an adapter")
    external_id: str = PydField(description="the ticket's id in its helpdesk (the ticket id otherwise)")
    text: str
    by: str | None
    article_id: int | None
    edited: bool | None
    created_at: datetime
    replayed: bool = PydField(default=False, description="true when the same Idempotency-Key was sent before: "
                                                         "the stored reply, nothing sent again")
    state: str = PydField(description="delivered (every target has it) | pending | failed (a target gave up) | "
                                      "not_sent (no subscription to `reply` and no helpdesk write-back)")
    deliveries: list[ReplyDeliveryPublic] = []


def helpdesk_of(ticket_id: str) -> str | None:
    """The adapter a ticket came in through (`zendesk-<id>` / `freshdesk-<id>`), else None."""
    prefix, sep, rest = ticket_id.partition("-")
    return prefix if sep and rest and prefix in HELPDESKS else None


def reply_state(deliveries: Iterable[ReplyDeliveryPublic]) -> str:
    """One word for a reply's deliveries: failed beats pending beats delivered; none at all is not_sent."""
    states = {d.status for d in deliveries}
    if not states:
        return "not_sent"
    return "failed" if "failed" in states else "pending" if "pending" in states else "delivered"


def _reply_public(row: TicketReply, deliveries: list[WebhookDelivery], *, replayed: bool = False) -> ReplyPublic:
    helpdesk = helpdesk_of(row.ticket_id)
    out = [ReplyDeliveryPublic(target=d.target, kind=d.kind, status=d.status, attempts=d.attempts,
                               last_status=d.last_status, last_error=d.last_error,
                               delivered_at=as_utc(d.delivered_at))
           for d in sorted(deliveries, key=lambda d: int(d.id or 0))]
    return ReplyPublic(id=int(row.id or 0), ticket_id=row.ticket_id, helpdesk=helpdesk,
                       external_id=row.ticket_id.split("-", 1)[1] if helpdesk else row.ticket_id, text=row.text,
                       by=row.by, article_id=row.article_id, edited=row.edited,
                       created_at=as_utc(row.created_at) or utcnow(), replayed=replayed, state=reply_state(out),
                       deliveries=out)


def _reply_deliveries(session: Session, reply_ids: list[int]) -> dict[int, list[WebhookDelivery]]:
    if not reply_ids:
        return {}
    keys = {f"ticket_reply:{i}": i for i in reply_ids}
    out: dict[int, list[WebhookDelivery]] = {}
    for d in session.exec(select(WebhookDelivery).where(col(WebhookDelivery.source_key).in_(keys))).all():
        out.setdefault(keys[d.source_key], []).append(d)
    return out


def _replay(session: Session, ticket_id: str, request_key: str, text: str) -> ReplyPublic | None:
    row = session.exec(select(TicketReply).where(TicketReply.ticket_id == ticket_id,
                                                 TicketReply.request_key == request_key)).first()
    if row is None:
        return None
    if row.text != text:
        raise Conflict(f"Idempotency-Key {request_key!r} was used for a different reply to {ticket_id}")
    return _reply_public(row, _reply_deliveries(session, [int(row.id or 0)]).get(int(row.id or 0), []),
                         replayed=True)


def record_reply(*, session: Session, ticket_id: str, reply_in: ReplyIn, by: str | None, writebacks: Iterable[str],
                 store_raw: bool = False, request_key: str | None = None,
                 also: Callable[[TicketReply], Iterable[SQLModel]] | None = None) -> ReplyPublic:
    """Store a reply and its outbox rows in one transaction: a `reply` delivery for every active subscription to
    `reply`, and a `reply_writeback` to the ticket's helpdesk when it came in through an adapter whose write-back
    is configured (`writebacks`: the configured helpdesks). `also(reply)`: rows committed with it (the draft's
    assist feedback, given the stored, redacted reply). The text is redacted first unless `store_raw`. With `request_key` (the sender's Idempotency-Key),
    sending the same reply again answers the stored one and sends nothing more."""
    text = reply_in.text.replace("\x00", "\ufffd")  # a database text column cannot hold NUL
    if not store_raw:
        from insight.eventlog.privacy import redact_text

        text = redact_text(text)
    if request_key is not None:
        replayed = _replay(session, ticket_id, request_key, text)
        if replayed is not None:
            return replayed
    row = TicketReply(ticket_id=ticket_id, text=text, by=by, article_id=reply_in.article_id, edited=reply_in.edited,
                      request_key=request_key)
    session.add(row)
    if also is not None:
        session.add_all(list(also(row)))
    try:
        session.flush()
    except IntegrityError:  # the same key sent twice at once: the other request stored it
        session.rollback()
        if request_key is not None and (replayed := _replay(session, ticket_id, request_key, text)) is not None:
            return replayed
        raise
    source_key = f"ticket_reply:{row.id}"
    helpdesk = helpdesk_of(ticket_id)
    data = {"ticket_id": ticket_id, "helpdesk": helpdesk,
            "external_id": ticket_id.split("-", 1)[1] if helpdesk else ticket_id, "reply_id": row.id, "text": text,
            "by": by, "article_id": row.article_id, "edited": row.edited,
            "created_at": (as_utc(row.created_at) or utcnow()).isoformat()}
    targets: list[tuple[str, int | None, str]] = [
        (f"sub:{sub.id}", sub.id, "reply")
        for sub in session.exec(select(WebhookSubscription).where(WebhookSubscription.active == True)  # noqa: E712
                                .order_by(col(WebhookSubscription.id))).all()
        if "reply" in sub.kinds]
    if helpdesk is not None and helpdesk in set(writebacks):
        targets.append((helpdesk, None, "reply_writeback"))
    deliveries = [WebhookDelivery(subscription_id=sub_id, target=target, kind=kind, source_key=source_key,
                                  idempotency_key=_idempotency_key(target, source_key), payload=data)
                  for target, sub_id, kind in targets]
    session.add_all(deliveries)
    session.commit()
    for d in deliveries:
        session.refresh(d)
    return _reply_public(row, deliveries)


def list_replies(*, session: Session, ticket_id: str, reply_id: int | None = None) -> list[ReplyPublic]:
    """A ticket's replies (or the one `reply_id`), newest first, each with its deliveries' state."""
    q = select(TicketReply).where(TicketReply.ticket_id == ticket_id).order_by(col(TicketReply.id).desc())
    if reply_id is not None:
        q = q.where(TicketReply.id == reply_id)
    rows = session.exec(q).all()
    by_reply = _reply_deliveries(session, [int(r.id or 0) for r in rows])
    return [_reply_public(r, by_reply.get(int(r.id or 0), [])) for r in rows]


# --- fan-out: source rows -> deliveries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One announceable change read from a source table."""

    kind: str
    source_key: str
    created_at: datetime
    data: dict[str, Any]
    ticket_id: str | None = None


def _decision_events(session: Session, after: int, limit: int) -> tuple[list[Event], int]:
    from routing.models import TriageDecision

    rows = session.exec(select(TriageDecision).where(col(TriageDecision.id) > after)  # type: ignore[operator]
                        .order_by(col(TriageDecision.id)).limit(limit)).all()
    out = [
        Event("decision" if r.trigger == "route" else "retriage", f"triage_decision:{r.id}",
              as_utc(r.created_at) or utcnow(),
              {"ticket_id": r.ticket_id, "decision_id": r.id, "trigger": r.trigger, "result": r.result,
               "created_at": (as_utc(r.created_at) or utcnow()).isoformat()},
              ticket_id=r.ticket_id)
        for r in rows
    ]
    return out, max((int(r.id or 0) for r in rows), default=after)


def _feedback_events(session: Session, after: int, limit: int) -> tuple[list[Event], int]:
    from routing.models import Feedback

    rows = session.exec(select(Feedback).where(col(Feedback.id) > after).order_by(col(Feedback.id)).limit(limit)).all()  # type: ignore[operator]
    out = [
        Event("correction", f"feedback:{r.id}", as_utc(r.created_at) or utcnow(),
              {"ticket_id": r.ticket_id, "feedback_id": r.id, "decision_id": r.decision_id,
               "corrected_team": r.corrected_team, "corrected_intent": r.corrected_intent,
               "accepted": list(r.accepted), "rejected": list(r.rejected), "by": r.by,
               "created_at": (as_utc(r.created_at) or utcnow()).isoformat()},
              ticket_id=r.ticket_id)
        for r in rows if r.corrected_team or r.corrected_intent
    ]
    return out, max((int(r.id or 0) for r in rows), default=after)


def _swap_events(session: Session, after: int, limit: int) -> tuple[list[Event], int]:
    from api.audit import AuditLog

    rows = session.exec(select(AuditLog).where(col(AuditLog.id) > after).order_by(col(AuditLog.id)).limit(limit)).all()  # type: ignore[operator]
    out = []
    for r in rows:
        swapped = False
        if r.status < 300 and r.method == "POST" and _SWAP_PATH.match(r.path):
            swapped = True
        elif r.method == "JOB" and r.status < 300 and r.object_id and not r.object_id.endswith(":none"):
            swapped = ":done:" in r.object_id or r.object_id.split(":")[1:2] == ["done"]
        if swapped:
            out.append(Event("model_swap", f"audit_log:{r.id}", as_utc(r.at) or utcnow(),
                             {"action": r.path, "object": r.object_id, "by": r.who,
                              "at": (as_utc(r.at) or utcnow()).isoformat()}))
    return out, max((int(r.id or 0) for r in rows), default=after)


def _alert_events(session: Session, after: int, limit: int) -> tuple[list[Event], int]:
    rows = session.exec(select(InsightAlert).where(col(InsightAlert.id) > after)  # type: ignore[operator]
                        .order_by(col(InsightAlert.id)).limit(limit)).all()
    out = [Event("alert", f"insight_alert:{r.id}", as_utc(r.created_at) or utcnow(),
                 {"alert_id": r.id, "kind": r.kind, "severity": r.severity, "title": r.title, "subject": r.subject,
                  **r.payload}) for r in rows]
    return out, max((int(r.id or 0) for r in rows), default=after)


SOURCES: dict[str, Callable[[Session, int, int], tuple[list[Event], int]]] = {
    "triage_decision": _decision_events,
    "feedback": _feedback_events,
    "audit_log": _swap_events,
    "insight_alert": _alert_events,
}


@dataclass(frozen=True)
class Writeback:
    """Where decisions on tickets that came in through a helpdesk adapter are written back."""

    helpdesk: str
    base_url: str
    auth: tuple[str, str] | None
    group_ids: dict[str, int]


def _idempotency_key(target: str, source_key: str) -> str:
    return hashlib.sha256(f"{target}|{source_key}".encode()).hexdigest()[:32]


def fan_out(engine: Engine, *, writebacks: dict[str, Writeback] | None = None, lookback: int = 200,
            batch: int = 500) -> int:
    """Turn new source rows into deliveries (one transaction with the cursors); returns how many were added."""
    writebacks = writebacks or {}
    with Session(engine) as session:
        subs = session.exec(select(WebhookSubscription).where(WebhookSubscription.active == True)).all()  # noqa: E712
        if not subs and not writebacks:
            return 0
        existing_cursors = {c.source: c for c in session.exec(select(WebhookCursor)).all()}
        added = 0
        for source, read in SOURCES.items():
            cur = existing_cursors.get(source)
            if cur is None:
                # A new installation of webhooks starts at the present: subscriptions get events from now on.
                cur = WebhookCursor(source=source, last_id=_max_id(session, source))
                session.add(cur)
                continue
            events, last = read(session, max(cur.last_id - lookback, 0), batch + lookback)
            candidates: list[tuple[str, int | None, Event]] = []
            for ev in events:
                for sub in subs:
                    if ev.kind in sub.kinds and ev.created_at >= (as_utc(sub.created_at) or utcnow()):
                        candidates.append((f"sub:{sub.id}", sub.id, ev))
                if ev.kind in ("decision", "retriage") and ev.ticket_id:
                    helpdesk = ev.ticket_id.split("-", 1)[0]
                    if helpdesk in writebacks:
                        targets = [helpdesk] + (["freshdesk_note"] if helpdesk == "freshdesk" else [])
                        candidates.extend((t, None, Event("writeback", ev.source_key, ev.created_at, ev.data,
                                                          ev.ticket_id)) for t in targets)
            if candidates:
                keys = {c[2].source_key for c in candidates}
                have = set(session.exec(select(WebhookDelivery.target, WebhookDelivery.source_key)
                                        .where(WebhookDelivery.source_key.in_(keys))).all())  # type: ignore[attr-defined]
                for target, sub_id, ev in candidates:
                    if (target, ev.source_key) in have:
                        continue
                    have.add((target, ev.source_key))
                    session.add(WebhookDelivery(subscription_id=sub_id, target=target, kind=ev.kind,
                                                source_key=ev.source_key,
                                                idempotency_key=_idempotency_key(target, ev.source_key),
                                                payload=ev.data))
                    added += 1
            cur.last_id = max(cur.last_id, last)
            session.add(cur)
        session.commit()
        return added


def ensure_cursors(session: Session) -> None:
    """Start the fan-out's cursors at the present for sources that have none yet (in the caller's transaction)."""
    have = {c.source for c in session.exec(select(WebhookCursor)).all()}
    for source in SOURCES:
        if source not in have:
            session.add(WebhookCursor(source=source, last_id=_max_id(session, source)))


def _max_id(session: Session, source: str) -> int:
    from api.audit import AuditLog
    from routing.models import Feedback, TriageDecision

    table = {"triage_decision": TriageDecision, "feedback": Feedback, "audit_log": AuditLog,
             "insight_alert": InsightAlert}[source]
    return int(session.exec(select(func.max(table.id))).one() or 0)  # type: ignore[attr-defined]


# --- delivery --------------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body): what `X-Deskpilot-Signature` carries."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential back-off with full jitter: a random wait in [base, min(cap, base * 2^attempt)]."""
    return random.uniform(base, max(base, min(cap, base * 2 ** max(attempt, 0))))


@dataclass(frozen=True)
class Request:
    """What one delivery sends."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    auth: tuple[str, str] | None = None


def _subscription_request(row: WebhookDelivery, sub: WebhookSubscription) -> Request:
    body = json.dumps({"id": row.idempotency_key, "kind": row.kind, "created_at": (as_utc(row.created_at) or utcnow())
                       .isoformat(), "data": row.payload}, sort_keys=True, separators=(",", ":"),
                      default=str).encode()
    ts = str(int(time.time()))
    return Request("POST", sub.url, body, {
        "Content-Type": "application/json", "User-Agent": "deskpilot-webhooks/1",
        "X-Deskpilot-Event": row.kind, "X-Deskpilot-Delivery": row.idempotency_key,
        "Idempotency-Key": row.idempotency_key, "X-Deskpilot-Timestamp": ts,
        "X-Deskpilot-Signature": sign(sub.secret, ts, body),
    })


def _reasons(result: dict[str, Any]) -> str:
    lines = [f"deskpilot: {result.get('decision', '?')} -> team {result.get('team') or '?'} "
             f"(confidence {float(result.get('team_confidence') or 0):.2f}), intent {result.get('intent') or '?'}"]
    for r in result.get("reasons") or []:
        lines.append(f"- {r.get('text', r) if isinstance(r, dict) else r}")
    return "\n".join(lines)


def _reply_writeback(data: dict[str, Any], wb: Writeback, base: str, headers: dict[str, str]) -> Request:
    """An agent's reply as the helpdesk's own public reply: Zendesk takes a comment in a ticket update, Freshdesk
    has a reply endpoint whose body is HTML."""
    external = str(data.get("external_id") or "")
    text = str(data.get("text") or "")
    if wb.helpdesk == "zendesk":
        body = json.dumps({"ticket": {"comment": {"body": text, "public": True}}}).encode()
        return Request("PUT", f"{base}/api/v2/tickets/{external}.json", body, headers, wb.auth)
    body = json.dumps({"body": html.escape(text).replace("\n", "<br>")}).encode()
    return Request("POST", f"{base}/api/v2/tickets/{external}/reply", body, headers, wb.auth)


def writeback_request(row: WebhookDelivery, wb: Writeback) -> Request:
    """The helpdesk API call that writes a decision back (Zendesk: one ticket update with a private comment), or
    an agent's reply (kind `reply_writeback`: a public comment / reply)."""
    data = row.payload
    result = data.get("result") or {}
    external = str(data.get("ticket_id", "")).split("-", 1)[-1]
    tags = ["deskpilot", f"deskpilot_{result.get('decision', 'unknown')}"]
    if result.get("intent"):
        tags.append("intent_" + re.sub(r"[^a-z0-9]+", "_", str(result["intent"]).lower()).strip("_"))
    group = wb.group_ids.get(str(result.get("team"))) if result.get("decision") == "auto_route" else None
    headers = {"Content-Type": "application/json", "Idempotency-Key": row.idempotency_key,
               "User-Agent": "deskpilot-writeback/1"}
    base = wb.base_url.rstrip("/")
    if row.kind == "reply_writeback":
        return _reply_writeback(data, wb, base, headers)
    if wb.helpdesk == "zendesk":
        ticket: dict[str, Any] = {"additional_tags": tags, "comment": {"body": _reasons(result), "public": False}}
        if group is not None:
            ticket["group_id"] = group
        body = json.dumps({"ticket": ticket}).encode()
        return Request("PUT", f"{base}/api/v2/tickets/{external}.json", body, headers, wb.auth)
    if row.target == "freshdesk_note":  # Freshdesk keeps notes apart from the ticket update
        body = json.dumps({"body": _reasons(result).replace("\n", "<br>"), "private": True}).encode()
        return Request("POST", f"{base}/api/v2/tickets/{external}/notes", body, headers, wb.auth)
    fields: dict[str, Any] = {"tags": tags}
    if group is not None:
        fields["group_id"] = group
    body = json.dumps(fields).encode()
    return Request("PUT", f"{base}/api/v2/tickets/{external}", body, headers, wb.auth)


@dataclass
class DeliveryConfig:
    """How deliveries are sent and retried."""

    timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 3600.0
    lease_seconds: float = 60.0
    batch: int = 50


def _claim(engine: Engine, delivery_id: int, lease: float) -> bool:
    now = utcnow()
    t = DELIVERY
    with engine.begin() as conn:
        res = conn.execute(
            update(t).where(t.c.id == delivery_id, t.c.status == "pending",
                            or_(t.c.lease_until.is_(None), t.c.lease_until < now))
            .values(lease_until=now + timedelta(seconds=lease))
        )
        return res.rowcount == 1


def deliver_due(engine: Engine, client: httpx.Client, *, config: DeliveryConfig,
                writebacks: dict[str, Writeback] | None = None) -> int:
    """Send every due delivery this worker can claim; returns how many attempts were made."""
    writebacks = writebacks or {}
    now = utcnow()
    with Session(engine) as session:
        due = session.exec(
            select(WebhookDelivery.id).where(WebhookDelivery.status == "pending",
                                             WebhookDelivery.next_attempt_at <= now,  # type: ignore[arg-type]
                                             or_(WebhookDelivery.lease_until.is_(None),  # type: ignore[union-attr]
                                                 WebhookDelivery.lease_until < now))  # type: ignore[arg-type, operator]
            .order_by(col(WebhookDelivery.id)).limit(config.batch)
        ).all()
    sent = 0
    for delivery_id in due:
        if delivery_id is None or not _claim(engine, int(delivery_id), config.lease_seconds):
            continue  # another worker has it
        _attempt(engine, client, int(delivery_id), config=config, writebacks=writebacks)
        sent += 1
    return sent


def _attempt(engine: Engine, client: httpx.Client, delivery_id: int, *, config: DeliveryConfig,
             writebacks: dict[str, Writeback]) -> None:
    with Session(engine) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return
        req: Request | None = None
        error: str | None = None
        if row.target.startswith("sub:"):
            sub = session.get(WebhookSubscription, row.subscription_id) if row.subscription_id else None
            if sub is None or not sub.active:
                error = "subscription deleted or inactive"
            else:
                req = _subscription_request(row, sub)
        elif row.target.split("_")[0] in writebacks:
            req = writeback_request(row, writebacks[row.target.split("_")[0]])
        else:
            error = f"no write-back configured for {row.target}"
        code: int | None = None
        t0 = time.perf_counter()
        if req is not None:
            try:
                resp = client.request(req.method, req.url, content=req.body, headers=req.headers, auth=req.auth,
                                      timeout=config.timeout_seconds)
                code = resp.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
        ms = (time.perf_counter() - t0) * 1000.0
        row.attempts += 1
        row.last_status, row.last_error, row.lease_until = code, error, None
        if error is None:
            row.status, row.delivered_at = "delivered", utcnow()
        elif req is None or row.attempts >= config.max_attempts:
            row.status = "failed"
        else:
            wait = backoff_seconds(row.attempts, base=config.backoff_base_seconds, cap=config.backoff_cap_seconds)
            row.next_attempt_at = utcnow() + timedelta(seconds=wait)
        session.add(row)
        session.add(WebhookAttempt(delivery_id=delivery_id, attempt=row.attempts, status_code=code, error=error,
                                   duration_ms=round(ms, 2)))
        session.commit()
        if error is not None:
            log.warning("webhook_attempt_failed", delivery=delivery_id, target=row.target, kind=row.kind,
                        attempt=row.attempts, status=row.status, error=error)


class WebhookWorker:
    """A background thread: fan out new events, send what is due, sleep `poll_seconds`; stops with `close()`."""

    def __init__(self, engine: Engine, *, poll_seconds: float, config: DeliveryConfig,
                 writebacks: dict[str, Writeback] | None = None) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self.config = config
        self.writebacks = writebacks or {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deskpilot-webhooks", daemon=True)
        self._client = httpx.Client(follow_redirects=False)

    def start(self) -> WebhookWorker:
        """Start the thread."""
        self._thread.start()
        return self

    def wake(self) -> None:
        """Run a round now (after a write that may have events)."""
        self._wake.set()

    def run_once(self) -> int:
        """One round: fan out, then deliver; returns attempts made."""
        fan_out(self.engine, writebacks=self.writebacks)
        return deliver_due(self.engine, self._client, config=self.config, writebacks=self.writebacks)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a database hiccup must not kill the worker; the next round retries
                log.warning("webhook_round_failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def close(self) -> None:
        """Stop the thread (pending deliveries stay pending for the next start)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.config.timeout_seconds + 5)
        self._client.close()


def zendesk_signature_ok(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Zendesk's webhook signature: base64(HMAC-SHA256(secret, timestamp + body))."""
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), signature.strip())


def writebacks_from_settings(settings: Any) -> dict[str, Writeback]:
    """The helpdesks configured for write-back (Zendesk: e-mail + API token; Freshdesk: API key)."""
    out: dict[str, Writeback] = {}
    if settings.zendesk_url and settings.zendesk_api_token is not None:
        auth = (f"{settings.zendesk_email or ''}/token", settings.zendesk_api_token.get_secret_value())
        out["zendesk"] = Writeback("zendesk", settings.zendesk_url, auth, dict(settings.zendesk_group_ids))
    if settings.freshdesk_url and settings.freshdesk_api_key is not None:
        # Freshdesk takes the API key as the user name of basic auth, with any password.
        out["freshdesk"] = Writeback("freshdesk", settings.freshdesk_url,
                                     (settings.freshdesk_api_key.get_secret_value(), "X"),
                                     dict(settings.freshdesk_group_ids))
    return out


def start_worker(engine: Engine, settings: Any) -> WebhookWorker | None:
    """The app's webhook worker, started (None when `webhooks_enabled` is off)."""
    if not settings.webhooks_enabled or engine.url.database in (None, "", ":memory:"):
        return None  # an in-memory database (tests) keeps nothing to deliver after a restart anyway
    config = DeliveryConfig(timeout_seconds=settings.webhook_timeout_seconds,
                            max_attempts=settings.webhook_max_attempts,
                            backoff_base_seconds=settings.webhook_backoff_base_seconds,
                            backoff_cap_seconds=settings.webhook_backoff_cap_seconds,
                            lease_seconds=settings.webhook_lease_seconds)
    return WebhookWorker(engine, poll_seconds=settings.webhook_poll_seconds, config=config,
                         writebacks=writebacks_from_settings(settings)).start()
