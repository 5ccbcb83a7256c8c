"""Batch routing redacts each distinct text once and prepares redacted chunks while it redacts the next ones, with
exactly the texts, tokens and answers of one ticket at a time."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session

from insight.eventlog.privacy import pseudonymize, pseudonymize_value, redact_text, redact_texts
from routing import service
from routing.models import DecisionThresholds, TicketIn, TriageResult
from routing.redaction import redact_ticket, redact_tickets
from tests.routing.tiny_triage import tiny_decide, train_tiny_bundle

KEY = "k" * 32
TH = DecisionThresholds()
DATA = Path("/work/shared/data/text")


def _tickets() -> list[TicketIn]:
    out = []
    for i in range(45):
        out.append(TicketIn(
            ticket_id=f"P{i}", subject=["Refund please", "Login fails for Maria Gonzalez", "Where is my parcel"][i % 3],
            body=f"Hi, this is Peter Jansen, call +31 6 1234567{i % 10} or mail p{i}@example.com. Order {1000 + i}."
            if i % 2 else "no personal data here at all",
            custom_fields={"product": ["Nimbus Cloud API Gateway", "Billing", "Contact John Smith today"][i % 3],
                           "requester": "Peter Jansen" if i % 4 else "",
                           "note": "Dear Anna Meyer, see above", "assignee": "Tom de Vries"},
        ))
    return out


@pytest.mark.parametrize("key", [KEY, None])
def test_batch_redaction_reads_each_text_once_and_equals_one_at_a_time(key: str | None) -> None:
    tickets = _tickets()
    alone = [redact_ticket(t, pseudonym_key=key).model_dump() for t in tickets]
    assert [t.model_dump() for t in redact_tickets(tickets, pseudonym_key=key)] == alone
    memo: dict[str, str] = {}
    chunked = [t for s in range(0, len(tickets), 7)
               for t in redact_tickets(tickets[s:s + 7], pseudonym_key=key, memo=memo)]
    assert [t.model_dump() for t in chunked] == alone
    assert "Peter Jansen" not in json.dumps([(t["subject"], t["body"]) for t in alone])
    if key:  # with a key the person fields are tokens
        assert "Peter Jansen" not in json.dumps(alone)
    # a text already in the memo is not read again
    seen: list[str] = []
    import routing.redaction as redaction
    real = redaction.redact_texts

    def spy(texts: Sequence[str]) -> list[str]:
        seen.extend(texts)
        return real(texts)

    try:
        redaction.redact_texts = spy
        redact_tickets(tickets, pseudonym_key=key, memo=memo)
    finally:
        redaction.redact_texts = real
    assert seen == []


def test_one_value_is_pseudonymized_like_its_column() -> None:
    for key in (KEY, b"bytes-key"):
        for prefix in ("req", "res", "id"):
            for v in ("Peter Jansen", " padded ", "", "req_0123456789", "req_01234", "res_abcdefabcd", "7", "名前"):
                assert pseudonymize_value(v, key=key, prefix=prefix) == \
                    str(pseudonymize(pd.Series([v]), key=key, prefix=prefix).iloc[0])


def _real_texts() -> list[str]:
    texts: list[str] = []
    lines = (DATA / "banking77/test.csv").read_text().splitlines()
    texts += [r["text"] for r in csv.DictReader(lines)][:400]
    for f in sorted((DATA / "hint3").glob("*/test/*.csv")):
        texts += [r["sentence"] for r in csv.DictReader(f.read_text().splitlines())][:80]
    with gzip.open(DATA / "endava_tickets/all_tickets_subset5431.csv.gz", "rt") as fh:
        for i, r in enumerate(csv.DictReader(fh)):
            if i >= 150:
                break
            texts += [r["title"], r["body"]]
    for convo in json.loads((DATA / "abcd/abcd_sample.json").read_text()):
        texts += [turn[1] for turn in convo["original"]]
    return texts


@pytest.mark.skipif(not DATA.is_dir(), reason="the shared text data sets are not on this machine")
def test_real_texts_redact_alike_alone_in_a_batch_and_repeated() -> None:
    texts = _real_texts()
    alone = [redact_text(t) for t in texts]
    assert sum(a != t for a, t in zip(alone, texts, strict=True)) > 20  # names and numbers are in play
    assert redact_texts(texts) == alone
    assert redact_texts(texts + texts[::3]) == alone + alone[::3]


@dataclass
class _Bundle:
    """The tiny triage with an embedder slot, so that the service prepares tickets ahead."""

    inner: Any
    embedder: Any = "cache"


def test_route_batch_prepares_redacted_chunks_and_answers_as_alone(session: Session,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import routing.triage as triage

    prepared: list[TicketIn] = []
    monkeypatch.setattr(triage, "prepare_batch",
                        lambda *, bundle, tickets: prepared.extend(tickets))
    bundle = _Bundle(train_tiny_bundle())
    decided: list[TicketIn] = []

    def decide_batch(*, bundle: Any, tickets: list[TicketIn], thresholds: DecisionThresholds,
                     ) -> list[TriageResult]:
        decided.extend(tickets)
        return [tiny_decide(bundle=bundle.inner, ticket=t, thresholds=thresholds) for t in tickets]

    def decide(*, bundle: Any, ticket: TicketIn, thresholds: DecisionThresholds) -> TriageResult:
        return tiny_decide(bundle=bundle.inner, ticket=ticket, thresholds=thresholds)

    tickets = _tickets()
    service.route(session=session, bundle=bundle, ticket_in=tickets[0], thresholds=TH,  # type: ignore[arg-type]
                  decide=decide, pseudonym_key=KEY)
    prepared.clear()
    outs = service.route_batch(session=session, bundle=bundle, tickets=tickets, thresholds=TH,  # type: ignore[arg-type]
                               decide=decide, decide_batch=decide_batch, pseudonym_key=KEY)
    redacted = [redact_ticket(t, pseudonym_key=KEY) for t in tickets]
    # every ticket that is decided was prepared first, as decide_batch reads it (redacted); the replay was not
    # (prepared in chunks of similar length, so in another order)
    assert sorted((t.model_dump() for t in prepared), key=lambda d: d["ticket_id"]) == \
        sorted((t.model_dump() for t in redacted[1:]), key=lambda d: d["ticket_id"])
    assert [t.model_dump() for t in decided] == [t.model_dump() for t in redacted[1:]]
    assert [o.replayed for o in outs] == [True] + [False] * (len(tickets) - 1)
    for t, o in zip(redacted, outs, strict=True):
        alone = tiny_decide(bundle=bundle.inner, ticket=t, thresholds=TH)
        assert o.decision.result.model_dump() == alone.model_dump()
