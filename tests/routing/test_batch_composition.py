"""A ticket's answer does not depend on which other tickets share its batch (float embeddings).

The ONNX embedder sorts a batch's texts by token count and runs them in groups padded to the longest text of each
group, so the same text is computed with different neighbours, paddings and matrix shapes depending on the batch.
The models are real (trained on the simulator with the bundled MiniLM); every ticket is routed through
`routing.service.route_batch` alone, in one batch with all the others, shuffled into small batches, and next to a
long ticket that pads it. Decisions, intents, teams and the out-of-scope flag must be identical; the reported scores
may differ only in their last rounded digit; the embeddings themselves within 1e-6 (a decision could flip only for a
confidence within that distance of a threshold, and the test checks none of these tickets sits that close).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session

from api.settings import bundled_model_path
from core.embedding import Embedder
from flows.training import train_all
from insight.training import split_log
from routing.models import DecisionThresholds, TicketIn, TriageResult
from routing.service import route_batch
from routing.triage import decide_batch, intent_text, load_bundle

pytestmark = pytest.mark.slow  # trains the intent model on embeddings

THRESHOLDS = DecisionThresholds()
N_TICKETS = 60
EMBEDDING_TOLERANCE = 1e-6
SCORE_TOLERANCE = 1.5e-4  # scores are reported rounded to 4 decimals: one last-digit step, no more
CREATED = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def onnx_embedder() -> Embedder:
    """The service's embedder: the bundled MiniLM on the ONNX backend (the default setting), float."""
    return Embedder(bundled_model_path(), backend="onnx")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, sim_small: Any, onnx_embedder: Embedder) -> Any:
    embedder = onnx_embedder
    home: Path = tmp_path_factory.mktemp("batch-composition")
    train, _ = split_log(sim_small.log, test_fraction=0.2)
    ids = set(train.df["case_id"].astype(str))
    tickets = sim_small.tickets[sim_small.tickets["case_id"].astype(str).isin(ids)]
    train_all(log=train, tickets=tickets, registry=home / "registry", embedder=embedder, seed=7,
              tasks=("intent", "router", "misroute", "memory"))
    return load_bundle(home / "registry", embedder)


@pytest.fixture(scope="module")
def tickets(sim_small: Any) -> list[TicketIn]:
    _, test = split_log(sim_small.log, test_fraction=0.2)
    ids = set(test.df["case_id"].astype(str))
    t = sim_small.tickets[sim_small.tickets["case_id"].astype(str).isin(ids)].reset_index(drop=True)
    return [TicketIn(ticket_id=str(r.case_id), subject=str(r.subject), body=str(r.body), channel=str(r.channel),
                     segment=str(r.segment), priority=str(r.priority), custom_fields={"product": str(r.product)},
                     created_at=CREATED)
            for r in t.iloc[:N_TICKETS].itertuples()]


def _long_ticket(i: int) -> TicketIn:
    body = " ".join(["My invoice shows a charge I do not recognise and the portal keeps logging me out whenever I "
                     "open the billing page, so I cannot download the statement my accountant needs."] * 4)
    return TicketIn(ticket_id=f"long-{i}", subject="Billing portal problems and an unknown charge", body=body,
                    channel="email", segment="smb", priority="high", custom_fields={"product": "billing"},
                    created_at=CREATED)


def _route(session: Session, bundle: Any, batch: list[TicketIn]) -> dict[str, TriageResult]:
    """Route one batch under fresh ticket ids (so nothing is replayed), with nothing in the embedding cache."""
    bundle.embedder.clear()
    run = uuid.uuid4().hex[:6]
    renamed = [t.model_copy(update={"ticket_id": f"{run}-{t.ticket_id}"}) for t in batch]
    out = route_batch(session=session, bundle=bundle, tickets=renamed, thresholds=THRESHOLDS,
                      decide_batch=decide_batch)
    return {t.ticket_id: o.decision.result for t, o in zip(batch, out, strict=True)}


def _compositions(tickets: list[TicketIn]) -> dict[str, list[list[TicketIn]]]:
    rng = random.Random(3)
    shuffled = list(tickets)
    rng.shuffle(shuffled)
    return {
        "all in one batch": [list(tickets)],
        "shuffled batches of 7": [shuffled[i:i + 7] for i in range(0, len(shuffled), 7)],
        "each beside long tickets": [[t, _long_ticket(1), _long_ticket(2)] for t in tickets[:20]],
    }


def test_answers_do_not_depend_on_the_batch(session: Session, bundle: Any, tickets: list[TicketIn]) -> None:
    alone = {t.ticket_id: _route(session, bundle, [t])[t.ticket_id] for t in tickets}
    assert {r.decision for r in alone.values()} >= {"auto_route", "suggest"}  # the thresholds are in play
    for name, batches in _compositions(tickets).items():
        for batch in batches:
            got = _route(session, bundle, batch)
            for tid, r in got.items():
                if tid.startswith("long-"):
                    continue
                a = alone[tid]
                where = f"{tid} ({name})"
                assert (r.decision, r.intent, r.team, r.out_of_scope) == \
                    (a.decision, a.intent, a.team, a.out_of_scope), where
                assert [s.team for s in r.top_teams] == [s.team for s in a.top_teams], where
                assert abs(r.intent_confidence - a.intent_confidence) <= SCORE_TOLERANCE, where
                assert abs(r.team_confidence - a.team_confidence) <= SCORE_TOLERANCE, where
                assert r.risks.misroute is not None and a.risks.misroute is not None
                assert abs(r.risks.misroute - a.risks.misroute) <= SCORE_TOLERANCE, where
                assert [s.ticket_id for s in r.similar] == [s.ticket_id for s in a.similar], where
                for x, y in zip(r.similar, a.similar, strict=True):
                    assert abs(x.similarity - y.similarity) <= SCORE_TOLERANCE, where


def test_embeddings_do_not_depend_on_the_batch(bundle: Any, tickets: list[TicketIn]) -> None:
    inner = bundle.embedder.inner  # the embedder itself, not the per-process cache in front of it
    texts = [intent_text(t) for t in tickets]
    long_texts = [intent_text(_long_ticket(i)) for i in range(3)]
    alone = np.vstack([inner.encode([x]) for x in texts])
    together = inner.encode(texts)
    padded = np.vstack([inner.encode([x, *long_texts])[0] for x in texts[:20]])
    reversed_ = inner.encode(texts[::-1])[::-1]
    worst = max(float(np.abs(together - alone).max()), float(np.abs(padded - alone[:20]).max()),
                float(np.abs(reversed_ - alone).max()))
    print(f"largest embedding difference between batch compositions: {worst:.2e}")
    assert worst <= EMBEDDING_TOLERANCE
    # How close any ticket's decisive confidence comes to a threshold: far more than the embedding differences
    # could move it (the scores are smooth functions of unit vectors, with small constants).
    results = decide_batch(bundle=bundle, tickets=tickets, thresholds=THRESHOLDS)
    margins = []
    for r in results:
        if r.out_of_scope:
            continue
        confidence = min(r.intent_confidence, r.team_confidence)
        margins += [abs(confidence - THRESHOLDS.auto_route_confidence), abs(confidence - THRESHOLDS.suggest_confidence)]
    assert min(margins) > 100 * worst


def test_int8_vectors_are_the_same_in_any_batch(tickets: list[TicketIn]) -> None:
    # int8 quantizes activations with one scale per run; each text runs alone, so its vector is exactly the same
    # whatever else is in the batch (run in runs of many texts, they differed by up to ~0.03).
    int8 = Embedder(bundled_model_path(), backend="onnx", quantize="int8")
    texts = [intent_text(t) for t in tickets[:30]]
    long_texts = [intent_text(_long_ticket(i)) for i in range(3)]
    alone = np.vstack([int8.encode([x]) for x in texts])
    assert np.array_equal(int8.encode(texts), alone)
    assert np.array_equal(np.vstack([int8.encode([x, *long_texts])[0] for x in texts[:10]]), alone[:10])
    assert np.array_equal(int8.encode(texts[::-1])[::-1], alone)
