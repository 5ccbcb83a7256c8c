"""Redaction at the door: every text the service stores is redacted first, with the rules ingest uses.

Emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs and IP addresses in a ticket's subject, body and
custom fields, an event's message and payload, and a feedback comment become `[EMAIL]`, `[PHONE]`, `[CARD]`,
`[IBAN]`, `[IP]` before triage and before anything is written, so the models read what they were trained on (the
training history is redacted the same way at ingest) and the database never holds the raw values. Raw text is kept
only when `DESKPILOT_STORE_RAW_TEXT` asks for it.

Left alone here, and why: `resource` (an agent's id) and `group` (a team) are identifiers, not free text: agents are
pseudonymized with the install's key when the live log is read for assist and training (routing.dataset,
api.views.assist), and teams are the labels the router predicts.
"""

from __future__ import annotations

from typing import Any

from insight.eventlog.privacy import redact_text
from routing.models import EventIn, FeedbackIn, TicketIn


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth < 8 and isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, list):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def redact_ticket(ticket: TicketIn) -> TicketIn:
    """The ticket with its subject, body and custom field values redacted (ids and categories kept)."""
    update: dict[str, Any] = {}
    for name in ("subject", "body"):
        text = getattr(ticket, name)
        clean = redact_text(text)
        if clean != text:
            update[name] = clean
    fields = {k: redact_text(v) for k, v in ticket.custom_fields.items()}
    if fields != ticket.custom_fields:
        update["custom_fields"] = fields
    return ticket.model_copy(update=update) if update else ticket


def redact_event(event: EventIn) -> EventIn:
    """The event with its message and the string values of its payload redacted."""
    update: dict[str, Any] = {}
    if event.message:
        clean = redact_text(event.message)
        if clean != event.message:
            update["message"] = clean
    payload = _redact_value(event.payload)
    if payload != event.payload:
        update["payload"] = payload
    return event.model_copy(update=update) if update else event


def redact_feedback(feedback: FeedbackIn) -> FeedbackIn:
    """The feedback with its free-text comment redacted (labels and suggestion ids kept)."""
    if not feedback.comment:
        return feedback
    clean = redact_text(feedback.comment)
    return feedback.model_copy(update={"comment": clean}) if clean != feedback.comment else feedback
