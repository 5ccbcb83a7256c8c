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


def test_texts_with_nothing_to_redact_are_read_once_and_only_they_are_kept() -> None:
    import routing.redaction as redaction

    clean_text, pii_text = "Nothing personal in this Nimbus ticket at all", "Please call Maria Gonzalez on +31 6 12345678"
    tickets = [TicketIn(ticket_id="C1", subject=clean_text, body=pii_text)]
    first = redact_tickets(tickets)
    assert clean_text in redaction._clean and pii_text not in redaction._clean
    assert first[0].body != pii_text  # the name and the number were redacted ...
    assert not any("Gonzalez" in t or "12345678" in t for t in redaction._clean)  # ... and no raw PII is kept
    seen: list[str] = []
    real = redaction.redact_texts

    def spy(texts):
        seen.extend(texts)
        return real(texts)

    try:
        redaction.redact_texts = spy
        again = redact_tickets([TicketIn(ticket_id="C2", subject=clean_text, body=pii_text)])
    finally:
        redaction.redact_texts = real
    assert seen == [pii_text]  # the text with a name and a number is read again, the clean one is not
    assert again[0].model_dump(exclude={"ticket_id"}) == first[0].model_dump(exclude={"ticket_id"})
    assert redact_ticket(tickets[0]).model_dump() == first[0].model_dump()
