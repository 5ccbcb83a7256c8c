"""Redaction at the door: every text the service stores is redacted first, with the rules ingest uses.

Emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs, IP addresses and person names in a ticket's
subject, body and custom fields, an event's message and payload, and a feedback comment become `[EMAIL]`,
`[PHONE]`, `[CARD]`, `[IBAN]`, `[IP]`, `[NAME]` before triage and before anything is written, so the models read
what they were trained on (the training history is redacted the same way at ingest) and the database never holds
the raw values. Raw text is kept only when `DESKPILOT_STORE_RAW_TEXT` asks for it.

Identifiers of people are pseudonymized here with the install's key (keyed HMAC, the tokens ingest gives the same
columns, so mining and the models still see one agent as one value): an event's `resource` (the agent), and a
custom field or payload entry whose name says it holds a person (`requester`, `customer_email`, `assignee` …,
insight.eventlog.privacy.is_person_field). Teams (`group`, corrected teams) are the labels the router predicts and
are not people; they are kept. docs/PRIVACY.md lists every column and what happens to it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

from insight.eventlog.privacy import (
    is_person_field,
    pseudonym_prefix,
    pseudonymize_value,
    redact_text,
    redact_texts,
)
from insight.eventlog.schema import RESOURCE
from routing.models import EventIn, FeedbackIn, TicketIn

M = TypeVar("M", bound=BaseModel)

# Texts seen at the door in which redaction found nothing (their redaction is the text itself), most recent last: a
# ticket's subject ("Password reset", "Refund request") or field value that comes again is not read again. Only such
# texts are kept, so the store holds nothing the database does not hold too (a text with anything to redact is never
# kept); redaction is a function of the text alone, so a text found here gets what reading it would give. Bounded
# in count and in each text's length (texts that repeat are short).
_CLEAN_MAX = 20_000
_CLEAN_MAX_CHARS = 1_000
_clean: OrderedDict[str, None] = OrderedDict()
_clean_lock = threading.Lock()


def _known_clean(texts: Iterable[str]) -> set[str]:
    """The texts among `texts` known to have nothing to redact (refreshed as recently used)."""
    with _clean_lock:
        found = {t for t in texts if t in _clean}
        for t in found:
            _clean.move_to_end(t)
    return found


def _remember_clean(pairs: Iterable[tuple[str, str]]) -> None:
    """Keep the texts whose redaction changed nothing (bounded: the least recently used go first)."""
    with _clean_lock:
        for text, clean in pairs:
            if clean == text and len(text) <= _CLEAN_MAX_CHARS:
                _clean[text] = None
                _clean.move_to_end(text)
        while len(_clean) > _CLEAN_MAX:
            _clean.popitem(last=False)


def _redact_value(value: Any, key: str | None, name: str = "", depth: int = 0,
                  redact: Callable[[str], str] = redact_text) -> Any:
    """The value with its texts redacted by `redact` and the values of person fields pseudonymized (walked the
    same way by `_texts_of`)."""
    if isinstance(value, str):
        if name and is_person_field(name):
            return pseudonymize_value(value, key=key, prefix=pseudonym_prefix(name)) if key and value.strip() \
                else redact(value)
        return redact(value)
    if depth < 8 and isinstance(value, dict):
        return {k: _redact_value(v, key, str(k), depth + 1, redact) for k, v in value.items()}
    if depth < 8 and isinstance(value, list):
        return [_redact_value(v, key, name, depth + 1, redact) for v in value]
    return value


def _texts_of(value: Any, key: str | None, out: list[str], name: str = "", depth: int = 0) -> None:
    """Append the texts `_redact_value` redacts in the value (not those it pseudonymizes) to `out`."""
    if isinstance(value, str):
        if not (name and is_person_field(name) and key and value.strip()):
            out.append(value)
    elif depth < 8 and isinstance(value, dict):
        for k, v in value.items():
            _texts_of(v, key, out, str(k), depth + 1)
    elif depth < 8 and isinstance(value, list):
        for v in value:
            _texts_of(v, key, out, name, depth + 1)


def redact_ticket(ticket: TicketIn, *, pseudonym_key: str | None = None) -> TicketIn:
    """The ticket with its subject, body and custom field values redacted; person fields pseudonymized."""
    update: dict[str, Any] = {}
    for name in ("subject", "body"):
        text = getattr(ticket, name)
        clean = redact_text(text)
        if clean != text:
            update[name] = clean
    fields = {k: _redact_value(v, pseudonym_key, k) for k, v in ticket.custom_fields.items()}
    if fields != ticket.custom_fields:
        update["custom_fields"] = fields
    return ticket.model_copy(update=update) if update else ticket


def redact_tickets(tickets: list[TicketIn], *, pseudonym_key: str | None = None,
                   memo: dict[str, str] | None = None) -> list[TicketIn]:
    """`redact_ticket` of each ticket, every text of all of them (subjects, bodies, custom field values) redacted in
    one batch, each distinct text once (the name model reads a batch several times faster than one text at a time,
    and a batch repeats subjects and field values). `memo` maps texts to their redaction: texts found in it are not
    read again, and the texts read here are added to it (for tickets redacted in several calls)."""
    clean = memo if memo is not None else {}
    texts: list[str] = []
    for ticket in tickets:
        texts += (ticket.subject, ticket.body)
        _texts_of(ticket.custom_fields, pseudonym_key, texts)
    distinct = [t for t in dict.fromkeys(texts) if t not in clean]
    known = _known_clean(distinct)
    clean.update((t, t) for t in known)
    distinct = [t for t in distinct if t not in known]
    read = list(zip(distinct, redact_texts(distinct), strict=True))
    clean.update(read)
    _remember_clean(read)
    out: list[TicketIn] = []
    for ticket in tickets:
        update: dict[str, Any] = {}
        for name in ("subject", "body"):
            text = getattr(ticket, name)
            if clean[text] != text:
                update[name] = clean[text]
        fields = {k: _redact_value(v, pseudonym_key, k, redact=clean.__getitem__)
                  for k, v in ticket.custom_fields.items()}
        if fields != ticket.custom_fields:
            update["custom_fields"] = fields
        out.append(ticket.model_copy(update=update) if update else ticket)
    return out


def redact_event(event: EventIn, *, pseudonym_key: str | None = None) -> EventIn:
    """The event with its message and payload redacted and its `resource` (agent) pseudonymized."""
    update: dict[str, Any] = {}
    if event.message:
        clean = redact_text(event.message)
        if clean != event.message:
            update["message"] = clean
    payload = _redact_value(event.payload, pseudonym_key)
    if payload != event.payload:
        update["payload"] = payload
    if event.resource and pseudonym_key:
        update["resource"] = pseudonymize_value(event.resource, key=pseudonym_key, prefix=pseudonym_prefix(RESOURCE))
    return event.model_copy(update=update) if update else event


def redact_feedback(feedback: FeedbackIn) -> FeedbackIn:
    """The feedback with its free-text comment redacted (labels and suggestion ids kept)."""
    return redact_fields(feedback, ("comment",))


def redact_fields(model: M, names: tuple[str, ...]) -> M:
    """The model with the named free-text fields redacted (None and empty kept), e.g. assist feedback's
    `edited_text` and `comment`."""
    update: dict[str, Any] = {}
    for name in names:
        text = getattr(model, name)
        if text:
            clean = redact_text(text)
            if clean != text:
                update[name] = clean
    return model.model_copy(update=update) if update else model
