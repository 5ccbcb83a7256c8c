"""Training data from the store: the live log, ticket texts, and agents' corrections as the only new labels."""

from __future__ import annotations

import pandas as pd
from sqlmodel import Session

from flows.training import train_all
from insight.eventlog.schema import EventLog
from insight.training import router_table
from routing import service
from routing.dataset import training_data
from routing.models import FeedbackIn, Ticket, TicketEvent

KEY = "test-pseudonym-key"


def store_sim(session: Session, sim, case_ids, *, keep_events: dict[str, int] | None = None,
              predicted: str | None = "model guess") -> None:
    """Store simulated tickets and their events as the service would hold them (intent = the model's guess)."""
    tickets = sim.tickets.set_index("case_id").loc[list(case_ids)]
    for cid, t in tickets.iterrows():
        session.add(Ticket(ticket_id=cid, subject=t.subject, body=t.body, channel=t.channel, segment=t.segment,
                           priority=t.priority, custom_fields={"product": t["product"]}, created_at=t.created_at,
                           payload_hash="x" * 64, current_intent=predicted, current_team="Service Desk L1"))
    session.commit()
    events = sim.log.df[sim.log.df["case_id"].isin(list(case_ids))]
    for cid, ev in events.groupby("case_id", sort=False):
        n = (keep_events or {}).get(cid, len(ev))
        for e in ev.iloc[:n].itertuples():
            session.add(TicketEvent(case_id=cid, activity=e.activity, timestamp=e.timestamp, group=e.group,
                                    resource=None if pd.isna(e.resource) else e.resource, channel=e.channel))
    session.commit()


def test_store_log_texts_and_corrections(session, sim_small):
    ids = sim_small.tickets["case_id"].iloc[:80].tolist()
    open_case, resolved_case = ids[0], ids[1]
    store_sim(session, sim_small, ids, keep_events={open_case: 3})  # created, triage, assigned: not resolved yet
    truth = sim_small.tickets.set_index("case_id")
    for cid in ids[10:20]:
        service.add_feedback(session=session, ticket_id=cid, by="agent-a",
                             feedback_in=FeedbackIn(corrected_intent="wrong first"))
        service.add_feedback(session=session, ticket_id=cid, by="agent-b",
                             feedback_in=FeedbackIn(corrected_intent=truth.loc[cid, "intent"]))  # the later one wins
    service.add_feedback(session=session, ticket_id=open_case, by="agent-a",
                         feedback_in=FeedbackIn(corrected_team="Billing L2"))
    service.add_feedback(session=session, ticket_id=resolved_case, by="agent-a",
                         feedback_in=FeedbackIn(corrected_team="Logistics L2"))
    session.exec(Ticket.__table__.update().where(Ticket.ticket_id == ids[5]).values(  # type: ignore[attr-defined]
        body="Please call me on jane.doe@example.com about it"))
    session.commit()

    data = training_data(session=session, pseudonym_key=KEY)
    t = data.tickets.set_index("case_id")
    # intent labels are the agents' latest corrections only; the model's own guesses are never labels
    assert t["intent"].notna().sum() == 10 and "model guess" not in set(t["intent"].dropna())
    assert (t.loc[ids[10:20], "intent"] == truth.loc[ids[10:20], "intent"]).all()
    assert "jane.doe@example.com" not in t.loc[ids[5], "body"]
    assert data.summary.redacted_values >= 1
    assert data.team_labels == {open_case: "Billing L2", resolved_case: "Logistics L2"}
    s = data.summary
    assert (s.live_tickets, s.live_cases, s.intent_labels, s.intent_from_feedback, s.team_corrections) == (
        80, 80, 10, 10, 2)
    # the live log: events with the ticket's attributes, agents pseudonymized like an ingested log
    log = data.log
    assert log.n_cases == 80 and {"segment", "priority", "product", "intent"} <= set(log.case_attributes)
    res = log.df["resource"].dropna()
    assert len(res) and res.str.startswith("res_").all() and not res.str.startswith("agent_").any()
    assert log.df.loc[log.df["case_id"] == ids[10], "intent"].iloc[0] == truth.loc[ids[10], "intent"]

    # router labels: the correction labels the unresolved case; the resolved case keeps the team that resolved it
    plain, _, _ = router_table(log=log, tickets=data.tickets)
    table, _, _ = router_table(log=log, tickets=data.tickets, team_labels=data.team_labels)
    assert plain.loc[open_case, "resolving_team"] != "Billing L2"
    assert table.loc[open_case, "resolving_team"] == "Billing L2"
    assert table.loc[resolved_case, "resolving_team"] == truth.loc[resolved_case, "resolving_team"] != "Logistics L2"
    assert (table.drop(index=open_case)["resolving_team"] == plain.drop(index=open_case)["resolving_team"]).all()


def test_history_is_added_and_the_store_wins_for_shared_cases(session, sim_small):
    store_ids = sim_small.tickets["case_id"].iloc[100:130].tolist()
    store_sim(session, sim_small, store_ids)
    service.add_feedback(session=session, ticket_id=store_ids[0], by="agent-a",
                         feedback_in=FeedbackIn(corrected_intent="security concern"))
    hist_ids = sim_small.tickets["case_id"].iloc[:110].tolist()  # overlaps the store on 10 cases
    hist_log = sim_small.log.filter_cases(hist_ids)
    hist_tickets = sim_small.tickets[sim_small.tickets["case_id"].isin(hist_ids)]
    data = training_data(session=session, history_log=hist_log, history_tickets=hist_tickets, pseudonym_key=KEY)
    s = data.summary
    assert (s.history_cases, s.history_cases_replaced, s.history_tickets, s.live_cases) == (100, 10, 100, 30)
    assert data.log.n_cases == 130 and len(data.tickets) == 130
    t = data.tickets.set_index("case_id")
    truth = sim_small.tickets.set_index("case_id")
    # history labels count, also for shared cases; an agent's correction overrides the history label
    assert t.loc[store_ids[0], "intent"] == "security concern"
    assert t.loc[store_ids[1], "intent"] == truth.loc[store_ids[1], "intent"]
    assert t.loc[hist_ids, "intent"].notna().all() and "model guess" not in set(t["intent"].dropna())
    assert t.loc[store_ids[10:], "intent"].isna().all()  # store-only tickets nobody corrected have no label
    assert "resolving_team" not in data.tickets.columns  # re-derived from the (live) log, not copied


def test_train_all_learns_intent_only_from_labelled_tickets(sim_small):
    tickets = sim_small.tickets.iloc[:120].copy()
    keep = tickets["intent"].isin(["password reset", "invoice copy", "order status"])
    tickets.loc[~keep, "intent"] = None
    report = train_all(log=EventLog(sim_small.log.df.iloc[:0].copy()), tickets=tickets, registry=None,
                       tasks=("intent",))
    (model,) = report.models
    assert sorted(model.model.classes_) == ["invoice copy", "order status", "password reset"]
    assert model.metrics["n_train"] + model.metrics["n_test"] == int(keep.sum())
