"""A batch of tickets is redacted in one pass (names read in batches) with exactly the result of one at a time."""

from __future__ import annotations

from routing.models import TicketIn
from routing.redaction import redact_ticket, redact_tickets


def test_a_batch_is_redacted_like_each_ticket_alone() -> None:
    tickets = [
        TicketIn(ticket_id="B1", subject="Refund for order 1182",
                 body="Hi, this is Maria Gonzalez, mail me at maria.g@example.com or call +31 6 12345678."),
        TicketIn(ticket_id="B2", subject="Card 4111 1111 1111 1111 charged twice", body="",
                 custom_fields={"requester": "Peter Jansen", "order": "A-17"}),
        TicketIn(ticket_id="B3", subject="Login fails", body="Since Monday John Smith from accounting cannot log in "
                 "from 10.0.0.12; IBAN NL91ABNA0417164300 is on file."),
        TicketIn(ticket_id="B4", subject="where is my parcel", body="no personal data here at all"),
    ]
    key = "k" * 32
    batch = redact_tickets(tickets, pseudonym_key=key)
    alone = [redact_ticket(t, pseudonym_key=key) for t in tickets]
    assert [t.model_dump() for t in batch] == [t.model_dump() for t in alone]
    text = " ".join(f"{t.subject} {t.body} {t.custom_fields}" for t in batch)
    for raw in ("maria.g@example.com", "12345678", "4111 1111 1111 1111", "10.0.0.12", "NL91ABNA0417164300",
                "Peter Jansen"):
        assert raw not in text, raw
    assert batch[3] is tickets[3]  # nothing to redact: the ticket itself
    assert redact_tickets([], pseudonym_key=key) == []
