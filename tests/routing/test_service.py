"""routing.service on in-memory SQLite with a tiny real model: idempotency, re-triage on events, feedback, rollback."""

from __future__ import annotations

import pytest
from sqlmodel import Session, func, select

from core.errors import InvalidInput, ModelNotReady, NotFound
from routing import service
from routing.models import (
    DecisionThresholds,
    EventIn,
    FeedbackIn,
    Ticket,
    TicketEvent,
    TicketIn,
    TriageDecision,
)
from tests.routing.tiny_triage import TinyBundle, tiny_decide, train_tiny_bundle

TH = DecisionThresholds()


@pytest.fixture(scope="module")
def bundle() -> TinyBundle:
    return train_tiny_bundle()


def _count(session: Session, table: type) -> int:
    return int(session.exec(select(func.count()).select_from(table)).one())


def test_route_is_idempotent_and_reroutes_on_changed_payload(session, bundle):
    t = TicketIn(ticket_id="T-1", subject="charged twice", body="please refund my payment", channel="email")
    first = service.route(session=session, bundle=bundle, ticket_in=t, thresholds=TH, decide=tiny_decide)
    assert not first.replayed
    assert first.decision.result.intent == "billing"
    assert first.decision.result.team == "Finance"
    again = service.route(session=session, bundle=bundle, ticket_in=t, thresholds=TH, decide=tiny_decide)
    assert again.replayed
    assert again.decision.decision_id == first.decision.decision_id
    assert _count(session, TriageDecision) == 1
    changed = t.model_copy(update={"subject": "cannot login", "body": "reset my password please"})
    third = service.route(session=session, bundle=bundle, ticket_in=changed, thresholds=TH, decide=tiny_decide)
    assert not third.replayed and third.decision.trigger == "reroute"
    assert third.decision.result.intent == "password"
    assert _count(session, TriageDecision) == 2
    assert _count(session, Ticket) == 1
    stored = service.get_ticket(session=session, ticket_id="T-1")
    assert stored.current_intent == "password" and stored.body == "reset my password please"
    assert [d.trigger for d in stored.decisions] == ["route", "reroute"]


def test_no_model_means_model_not_ready_and_nothing_written(session):
    t = TicketIn(ticket_id="T-2", subject="where is my parcel")
    with pytest.raises(ModelNotReady, match="deskpilot train"):
        service.route(session=session, bundle=None, ticket_in=t, thresholds=TH, decide=tiny_decide)
    assert _count(session, Ticket) == 0


def test_failing_decide_in_batch_leaves_no_half_written_batch(session, bundle):
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("model blew up on ticket 3")
        return tiny_decide(**kw)

    tickets = [TicketIn(ticket_id=f"B-{i}", subject="package never arrived") for i in range(5)]
    with pytest.raises(RuntimeError):
        service.route_batch(session=session, bundle=bundle, tickets=tickets, thresholds=TH, decide=flaky)
    assert _count(session, Ticket) == 0 and _count(session, TriageDecision) == 0
    outs = service.route_batch(session=session, bundle=bundle, tickets=tickets, thresholds=TH, decide=tiny_decide)
    assert [o.decision.ticket_id for o in outs] == [f"B-{i}" for i in range(5)]
    assert _count(session, Ticket) == 5


def test_batch_uses_decide_batch_and_replays_known(session, bundle):
    seen: list[int] = []

    def batch_fn(*, bundle, tickets, thresholds):
        seen.append(len(tickets))
        return [tiny_decide(bundle=bundle, ticket=t, thresholds=thresholds) for t in tickets]

    tickets = [TicketIn(ticket_id=f"C-{i}", subject=s) for i, s in
               enumerate(["invoice is wrong", "reset my password", "track my shipment"])]
    service.route(session=session, bundle=bundle, ticket_in=tickets[0], thresholds=TH, decide=tiny_decide)
    outs = service.route_batch(session=session, bundle=bundle, tickets=tickets, thresholds=TH, decide=tiny_decide,
                               decide_batch=batch_fn)
    assert seen == [2]  # the known ticket was replayed, not re-triaged
    assert [o.replayed for o in outs] == [True, False, False]
    assert [o.decision.result.team for o in outs] == ["Finance", "IT", "Logistics"]


def test_customer_message_retriages_only_when_intent_changes(session, bundle):
    service.route(session=session, bundle=bundle, thresholds=TH, decide=tiny_decide,
                  ticket_in=TicketIn(ticket_id="E-1", subject="package never arrived", body="tracking broken"))
    same = service.add_event(session=session, bundle=bundle, ticket_id="E-1", thresholds=TH, decide=tiny_decide,
                             event_in=EventIn(activity="Customer message", author_type="customer",
                                              message="the courier did not deliver my parcel"))
    assert same.retriage_checked and not same.intent_changed and same.decision is None
    assign = service.add_event(session=session, bundle=bundle, ticket_id="E-1", thresholds=TH, decide=tiny_decide,
                               event_in=EventIn(activity="Assign", group="Logistics", resource="agent-7"))
    assert not assign.retriage_checked
    changed = service.add_event(session=session, bundle=bundle, ticket_id="E-1", thresholds=TH, decide=tiny_decide,
                                event_in=EventIn(activity="Customer message", author_type="customer",
                                                 message="also I was charged twice, I need a refund of the payment"))
    assert changed.intent_changed and changed.previous_intent == "shipping" and changed.new_intent == "billing"
    assert changed.decision is not None and changed.decision.trigger == "event"
    assert changed.event.retriaged and changed.event.decision_id == changed.decision.decision_id
    t = service.get_ticket(session=session, ticket_id="E-1")
    assert t.current_intent == "billing" and t.current_team == "Finance" and t.assigned_group == "Logistics"
    assert [e.activity for e in t.events] == ["Customer message", "Assign", "Customer message"]
    assert len(t.decisions) == 2


def test_event_without_model_is_stored_not_retriaged(session, bundle):
    service.route(session=session, bundle=bundle, thresholds=TH, decide=tiny_decide,
                  ticket_in=TicketIn(ticket_id="E-2", subject="reset my password"))
    out = service.add_event(session=session, bundle=None, ticket_id="E-2", thresholds=TH, decide=tiny_decide,
                            event_in=EventIn(activity="Customer message", author_type="customer", message="refund"))
    assert not out.retriage_checked and "not re-triaged" in out.note
    assert _count(session, TicketEvent) == 1


def test_event_and_feedback_for_unknown_ticket(session, bundle):
    with pytest.raises(NotFound, match="T-404"):
        service.add_event(session=session, bundle=bundle, ticket_id="T-404", thresholds=TH, decide=tiny_decide,
                          event_in=EventIn(activity="Assign"))
    with pytest.raises(NotFound):
        service.add_feedback(session=session, ticket_id="T-404", by="x", feedback_in=FeedbackIn(comment="hi"))


def test_feedback_links_decision_and_checks_ownership(session, bundle):
    a = service.route(session=session, bundle=bundle, thresholds=TH, decide=tiny_decide,
                      ticket_in=TicketIn(ticket_id="F-1", subject="invoice is wrong"))
    b = service.route(session=session, bundle=bundle, thresholds=TH, decide=tiny_decide,
                      ticket_in=TicketIn(ticket_id="F-2", subject="reset my password"))
    fb = service.add_feedback(session=session, ticket_id="F-1", by="agent-ann",
                              feedback_in=FeedbackIn(corrected_team="Collections", accepted=["kb-12"]))
    assert fb.decision_id == a.decision.decision_id and fb.by == "agent-ann" and fb.accepted == ["kb-12"]
    with pytest.raises(InvalidInput, match="decision_id"):
        service.add_feedback(session=session, ticket_id="F-1", by="x",
                             feedback_in=FeedbackIn(decision_id=b.decision.decision_id, comment="wrong"))


def test_mixed_batch_replays_retriages_and_creates_with_consistent_rows(session, bundle):
    kept = TicketIn(ticket_id="M-1", subject="invoice is wrong", body="charged twice")
    moved = TicketIn(ticket_id="M-2", subject="track my shipment", body="where is my parcel")
    first = service.route_batch(session=session, bundle=bundle, tickets=[kept, moved], thresholds=TH,
                                decide=tiny_decide)
    changed = moved.model_copy(update={"subject": "cannot login", "body": "reset my password please"})
    fresh = TicketIn(ticket_id="M-3", subject="package never arrived", channel="chat")
    outs = service.route_batch(session=session, bundle=bundle, tickets=[changed, kept, fresh], thresholds=TH,
                               decide=tiny_decide)
    assert [(o.replayed, o.decision.trigger) for o in outs] == [(False, "reroute"), (True, "route"), (False, "route")]
    # A replay answers exactly what the first call answered (id, time, result), flagged as replayed.
    assert outs[1].decision == first[0].decision.model_copy(update={"replayed": True})
    rows = {t.ticket_id: t for t in session.exec(select(Ticket)).all()}
    decisions = {d.id: d for d in session.exec(select(TriageDecision)).all()}
    assert len(rows) == 3 and len(decisions) == 4
    for out, sent in zip(outs, [changed, kept, fresh], strict=True):
        row = rows[sent.ticket_id]
        session.refresh(row)
        assert row.current_decision_id == out.decision.decision_id
        assert row.payload_hash == sent.payload_hash() == decisions[out.decision.decision_id].payload_hash
        assert (row.subject, row.body, row.channel) == (sent.subject, sent.body, sent.channel)
        assert row.current_intent == out.decision.result.intent and row.current_team == out.decision.result.team
        assert decisions[out.decision.decision_id].triage_result() == out.decision.result
    assert rows["M-2"].current_intent == "password"
    # Replaying the re-triaged payload now returns the reroute decision, not the first one.
    again = service.route(session=session, bundle=bundle, ticket_in=changed, thresholds=TH, decide=tiny_decide)
    assert again.replayed and again.decision.decision_id == outs[0].decision.decision_id


def test_ticket_without_a_current_decision_is_triaged_again(session, bundle):
    t = TicketIn(ticket_id="N-1", subject="reset my password")
    first = service.route(session=session, bundle=bundle, ticket_in=t, thresholds=TH, decide=tiny_decide)
    row = session.exec(select(Ticket).where(Ticket.ticket_id == "N-1")).one()
    row.current_decision_id = None  # e.g. a row written by an older version or by hand
    session.add(row)
    session.commit()
    again = service.route(session=session, bundle=bundle, ticket_in=t, thresholds=TH, decide=tiny_decide)
    assert not again.replayed and again.decision.trigger == "reroute"
    assert again.decision.decision_id != first.decision.decision_id
    session.refresh(row)
    assert row.current_decision_id == again.decision.decision_id
