"""flows.training.prepare_tickets / prepare_texts: a ticket table and bare texts reach training as the service
treats a ticket at the door (routing.redaction): the same tokens for person fields, the same redacted text."""

from __future__ import annotations

import pandas as pd

from flows.training import prepare_texts, prepare_tickets
from insight.eventlog.privacy import RedactionCounts
from routing.models import TicketIn
from routing.redaction import redact_ticket

KEY = "prepare-test-key"


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "case_id": ["C1", "C2"], "subject": ["Refund for anna.berg@example.com", "Router down"],
        "body": ["Hello, my name is Anna Berg.", "No light on the box"], "channel": ["email", "phone"],
        "segment": ["smb", "consumer"], "intent": ["refund", "outage report"], "resolving_team": ["Billing L2", None],
        "customer_name": ["Anna Berg", None], "customer_email": ["anna.berg@example.com", "tom@example.net"],
        "requester_id": [7, 8], "location": ["call +44 20 7946 0958", "Leeds"],
        "created_at": pd.to_datetime(["2026-01-05 09:00", "2026-01-05 10:00"], utc=True),
    })


def test_person_columns_get_the_tokens_serving_gives() -> None:
    raw = _table()
    prepared = prepare_tickets(raw, pseudonym_key=KEY)
    t = prepared.table
    served = redact_ticket(TicketIn(ticket_id="C1", subject=raw.loc[0, "subject"], body=raw.loc[0, "body"],
                                    custom_fields={"customer_name": "Anna Berg",
                                                   "customer_email": "anna.berg@example.com",
                                                   "requester_id": "7", "location": "call +44 20 7946 0958"}),
                           pseudonym_key=KEY)
    row = t.iloc[0]
    assert (row["subject"], row["body"]) == (served.subject, served.body)
    for name, value in served.custom_fields.items():
        assert row[name] == value, name  # an id read as a number hashes like the text serving receives
    assert set(prepared.pseudonymized) == {"customer_name", "customer_email", "requester_id"}
    assert pd.isna(t.loc[1, "customer_name"])  # missing stays missing
    # the ticket's own fields and the labels are kept as they are; the caller's table is left alone
    kept = ["case_id", "channel", "segment", "intent", "resolving_team", "created_at"]
    pd.testing.assert_frame_equal(t[kept], raw[kept])
    assert raw.loc[0, "customer_name"] == "Anna Berg"
    assert prepared.redacted.items["email"] == 1 and prepared.redacted.items["phone"] == 1


def test_without_a_key_person_fields_are_redacted_like_text() -> None:
    t = prepare_tickets(_table(), pseudonym_key=None)
    assert t.pseudonymized == ()
    assert t.table.loc[1, "customer_email"] == "[EMAIL]"
    assert t.table.loc[0, "requester_id"] == 7


def test_intent_texts_are_redacted_by_the_ticket_rule() -> None:
    texts = ["Please refund me, reach me at anna.berg@example.com", "Thanks, Anna Berg", "Router down again"]
    clean, counts = prepare_texts(texts)
    assert clean == [redact_ticket(TicketIn(ticket_id="x", body=t)).body for t in texts]
    assert "anna" not in " ".join(clean).lower() and clean[2] == texts[2]
    assert counts.values_changed == 2
    assert prepare_texts([]) == ([], RedactionCounts())
