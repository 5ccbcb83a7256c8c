"""Assist over HTTP: roles, the assist answer for a stored ticket, feedback, and the gap report from the live store."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from sqlmodel import Session

from api.settings import Settings
from assist.actions import TASK_STEP_OUTCOMES, train_step_outcomes
from insight.models import NextActivityPredictor, RemainingTimePredictor
from insight.simulate.knowledge import knowledge_base
from knowledge_hub.index import open_index
from routing.models import Ticket, TicketEvent
from routing.triage import ModelBundle
from tests.api.conftest import Api, start_api

TINY = {"n_estimators": 25, "num_leaves": 15, "validation_fraction": 0.0, "min_child_samples": 10, "num_threads": 1}
INTENTS = ("refund request", "password reset", "data export")


def tiny_bundle(sim: Any) -> ModelBundle:
    """Routing's bundle with small but real next-activity and remaining-time models fitted on a simulated log (what
    assist reads); no intent or team model, so triage answers with the risks alone."""
    return ModelBundle(next_activity=NextActivityPredictor(**TINY).fit(sim.log),
                       remaining_time=RemainingTimePredictor(**TINY).fit(sim.log),
                       versions={"next_activity": "t1", "remaining_time": "t1"})


def start_assist_api(settings: Settings, sim: Any, embedder: Any, bundle: Any) -> tuple[Api, dict[str, str]]:
    """An app with the knowledge index, two published articles and 15 simulated tickets with their events stored.

    Returns the API and, per intent, the id of one stored ticket (the caller closes `api.client`).
    """
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: bundle, decide=None,
                                  open_kb_index=lambda s, e: open_index(settings=s, embedder=e), embedder=embedder)
    api = Api(app=app, client=client, keys=keys)
    titles = {"Processing a refund request", "Helping a customer reset their password"}
    for spec in knowledge_base():
        if spec.title in titles:
            r = client.post("/v1/kb/articles", json={**spec.to_dict(), "status": "published"},
                            headers=api.h("knowledge_manager"))
            assert r.status_code == 201, r.text
    tickets = sim.tickets[sim.tickets["intent"].isin(INTENTS)].groupby("intent").head(5)
    events = sim.log.df[sim.log.df["case_id"].isin(tickets["case_id"])]
    with Session(app.state.engine) as session:
        for t in tickets.itertuples():
            session.add(Ticket(ticket_id=t.case_id, subject=t.subject, body=t.body, channel=t.channel,
                               segment=t.segment, priority=t.priority, custom_fields={"product": t.product},
                               created_at=t.created_at, payload_hash="x" * 64, current_intent=t.intent))
        session.commit()
        for e in events.itertuples():
            session.add(TicketEvent(case_id=e.case_id, activity=e.activity, timestamp=e.timestamp,
                                    resource=None if e.resource != e.resource else e.resource, group=e.group,
                                    channel=e.channel))
        session.commit()
    return api, tickets.set_index("intent")["case_id"].groupby(level=0).first().to_dict()


@pytest.fixture(scope="module")
def assist_api(tmp_path_factory, sim_small, embedder):
    settings = Settings(home=tmp_path_factory.mktemp("home"), database_url="sqlite://")
    api, case_of = start_assist_api(settings, sim_small, embedder, tiny_bundle(sim_small))
    try:
        yield api, case_of
    finally:
        api.client.__exit__(None, None, None)


def test_assist_route_for_a_stored_ticket(assist_api):
    api, case_of = assist_api
    cid = case_of["refund request"]
    r = api.client.get(f"/v1/tickets/{cid}/assist", headers=api.h("agent"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ticket_id"] == cid and body["intent"] == "refund request" and body["prefix"][-1] in ("Closed",
                                                                                                       "Resolved")
    assert body["knowledge"][0]["title"] == "Processing a refund request"
    assert body["draft"]["grounded"] and body["draft"]["article_version"] == 1
    assert body["model_versions"] == {"next_activity": "t1", "remaining_time": "t1"}
    assert body["end_probability"] is not None
    # another text through POST: the password article answers it
    r = api.client.post(f"/v1/tickets/{cid}/assist", headers=api.h("agent"),
                        json={"text": "I forgot my password and the reset link expired", "ranking": "likelihood"})
    assert r.status_code == 200 and r.json()["draft"]["article_title"] == "Helping a customer reset their password"
    assert api.client.get(f"/v1/tickets/{cid}/assist", headers=api.h("analyst")).status_code == 403
    assert api.client.get("/v1/tickets/nope/assist", headers=api.h("agent")).status_code == 404
    r = api.client.post(f"/v1/tickets/{cid}/assist", headers=api.h("agent"), json={"top_k": 0})
    assert r.status_code == 422 and r.json()["code"]


def test_assist_feedback_route(assist_api):
    api, case_of = assist_api
    cid = case_of["refund request"]
    fb = {"kind": "draft", "suggestion": "draft", "verdict": "edited", "article_id": 1, "article_version": 1,
          "edited_text": "Hello, the refund needs approval first."}
    r = api.client.post(f"/v1/tickets/{cid}/assist/feedback", headers=api.h("agent"), json=fb)
    assert r.status_code == 201 and r.json()["verdict"] == "edited" and r.json()["by"].startswith("agent-")
    r = api.client.post(f"/v1/tickets/{cid}/assist/feedback", headers=api.h("agent"),
                        json={**fb, "edited_text": None})
    assert r.status_code == 422 and "edited_text" in r.json()["detail"]
    assert api.client.post(f"/v1/tickets/{cid}/assist/feedback", headers=api.h("helpdesk"), json=fb).status_code == 403


def test_gaps_route_ranks_the_topic_without_articles_first(assist_api):
    api, _ = assist_api
    r = api.client.get("/v1/insights/gaps", headers=api.h("analyst"), params={"sample_per_topic": 5})
    assert r.status_code == 200, r.text
    topics = r.json()["topics"]
    assert [t["topic"] for t in topics][0] == "data export" and topics[0]["coverage"] == 0.0
    assert {t["topic"] for t in topics} == set(INTENTS) and r.json()["cases"] == 15
    assert api.client.get("/v1/insights/gaps", headers=api.h("knowledge_manager")).status_code == 200
    assert api.client.get("/v1/insights/gaps", headers=api.h("agent")).status_code == 403


def test_assist_actions_carry_the_mined_step_outcomes_after_a_reload(assist_api, sim_small):
    api, _ = assist_api
    app = api.app
    # An open ticket three steps in (not one of the fixture's closed ones).
    cid = sim_small.tickets["case_id"].iloc[-1]
    t = sim_small.tickets.set_index("case_id").loc[cid]
    events = sim_small.log.df[sim_small.log.df["case_id"] == cid].iloc[:3]
    with Session(app.state.engine) as session:
        session.add(Ticket(ticket_id=cid, subject=t.subject, body=t.body, channel=t.channel, segment=t.segment,
                           priority=t.priority, created_at=t.created_at, payload_hash="y" * 64,
                           current_intent=t.intent))
        session.commit()
        for e in events.itertuples():
            session.add(TicketEvent(case_id=cid, activity=e.activity, timestamp=e.timestamp, group=e.group,
                                    channel=e.channel))
        session.commit()
    state = events["activity"].iloc[-1]

    before = api.client.get(f"/v1/tickets/{cid}/assist", headers=api.h("agent")).json()
    assert before["next_steps"] and all(a["similar_cases"] is None for a in before["next_steps"])
    assert any("without the mined step outcomes" in n for n in before["notes"])
    assert "step_outcomes" not in before["model_versions"]

    registry = app.state.settings.registry_path
    trained = train_step_outcomes(log=sim_small.log, registry=registry)
    old_state = app.state.models
    try:
        r = api.client.post("/v1/models/reload", headers=api.h("admin"))
        assert r.status_code == 200 and r.json()["serving"]["step_outcomes"] == trained.version
        after = api.client.get(f"/v1/tickets/{cid}/assist", headers=api.h("agent")).json()
        assert after["model_versions"]["step_outcomes"] == trained.version
        assert not any("step outcomes" in n for n in after["notes"])
        table = trained.model
        checked = 0
        for a in after["next_steps"]:
            stat = table.lookup(state, a["activity"])
            if stat is None:
                assert a["similar_cases"] is None
                continue
            checked += 1
            assert a["similar_cases"] == stat.cases
            assert a["similar_remaining_hours"] == pytest.approx(stat.mean_total_hours)
            assert a["expected_remaining_hours"] is not None and a["expected_change_hours"] is not None
            assert f"{stat.cases} past cases took this step here" in a["why"]
        assert checked >= 1
        hours = [a["expected_remaining_hours"] for a in after["next_steps"]]
        assert hours == sorted(hours)  # ranked by expected outcome
        models = api.client.get("/v1/models", headers=api.h("analyst")).json()
        assert models["step_outcomes"] is None and models["serving"]["step_outcomes"] == trained.version
    finally:
        app.state.models = old_state
        shutil.rmtree(registry / TASK_STEP_OUTCOMES)


def test_assist_inputs_pseudonymize_agents_like_an_ingested_log() -> None:
    """The models were trained on pseudonymized agents; assist must hand them the same tokens, not raw names."""
    from datetime import UTC, datetime

    from api.views.assist import _ticket_inputs
    from insight.eventlog.privacy import apply_privacy
    from insight.eventlog.schema import EventLog
    from routing.models import EventPublic, TicketPublic

    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    events = [EventPublic(id=i, case_id="T1", activity=a, timestamp=now, resource=r, group="L1", channel="email",
                          author_type="agent", message=None, payload={}, retriaged=False, decision_id=None)
              for i, (a, r) in enumerate([("Ticket created", None), ("Assign", "Alice Smith"), ("Reply", "Bob")])]
    ticket = TicketPublic(ticket_id="T1", subject="s", body="b", channel="email", segment=None, priority=None,
                          custom_fields={}, created_at=now, current_intent=None, current_team=None,
                          assigned_group=None, received_at=now, updated_at=now, current_decision=None,
                          decisions=[], events=events, feedback=[])
    _, frame, _ = _ticket_inputs(ticket, "secret-key")
    ingested = apply_privacy(EventLog(frame.assign(resource=[None, "Alice Smith", "Bob"])), key="secret-key")
    assert frame["resource"].tolist()[1:] == ingested.df["resource"].tolist()[1:]
    assert frame["resource"].iloc[1].startswith("res_") and "Alice" not in "".join(frame["resource"].dropna())
    assert frame["resource"].isna().iloc[0]
    _, raw, _ = _ticket_inputs(ticket, None)
    assert raw["resource"].tolist()[1:] == ["Alice Smith", "Bob"]


def test_gaps_on_a_fresh_home_is_an_empty_report(tmp_path, sim_small, embedder):
    """No tickets and no events yet: 200 with no topics, not a 422."""
    settings = Settings(home=tmp_path / "home", database_url="sqlite://")
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle(sim_small), decide=None,
                                  open_kb_index=lambda s, e: open_index(settings=s, embedder=e), embedder=embedder)
    try:
        api = Api(app=app, client=client, keys=keys)
        r = api.client.get("/v1/insights/gaps", headers=api.h("analyst"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["topics"] == [] and body["cases"] == 0 and body["tickets_sampled"] == 0
    finally:
        client.__exit__(None, None, None)


def test_draft_templates_over_http_are_admin_edited_audited_and_used(assist_api):
    api, case_of = assist_api
    cid = case_of["refund request"]
    text = "Dear customer,\nabout {product}:\n{answer}\nThe billing team"
    path = "/v1/assist/templates/refund%20request/*"
    assert api.client.put(path, headers=api.h("agent"), json={"text": text}).status_code == 403
    bad = api.client.put(path, headers=api.h("admin"), json={"text": "Hi {nmae},\n{answer}"})
    assert bad.status_code == 422 and "{nmae}" in bad.json()["detail"]
    assert api.client.put(path, headers=api.h("admin"), json={"text": text, "x": 1}).status_code == 422
    # a blank scope is refused, not read as "*" (a template for every intent)
    blank = api.client.put("/v1/assist/templates/%20/chat", headers=api.h("admin"), json={"text": text})
    assert blank.status_code == 422 and "intent" in blank.json()["detail"], blank.text
    r = api.client.put(path, headers=api.h("admin"), json={"text": text})
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["intent"] == "refund request"
    got = api.client.get("/v1/assist/templates/refund%20request/email", headers=api.h("agent"))
    assert got.status_code == 200 and got.json()["text"] == text and got.json()["channel"] == "*"
    assert api.client.get("/v1/assist/templates/password%20reset/chat", headers=api.h("agent")).status_code == 404
    # the ticket's draft now uses it, with the ticket's product field
    body = api.client.get(f"/v1/tickets/{cid}/assist", headers=api.h("agent")).json()
    d = body["draft"]
    assert d["grounded"] and d["template_scope"] == "refund request/*" and d["text"].startswith("Dear customer,")
    assert d["text"].endswith("The billing team") and any(p["field"] == "product" for p in d["parts"])
    audit = api.client.get("/v1/audit", headers=api.h("admin"),
                           params={"path_prefix": "/v1/assist/templates", "status": 200}).json()
    rows = audit["items"] if isinstance(audit, dict) else audit
    assert any(a["object_id"] == "assist/templates/refund request/*" and a["method"] == "PUT" for a in rows)
    assert api.client.delete(path, headers=api.h("admin")).status_code == 204
    assert api.client.delete(path, headers=api.h("admin")).status_code == 404
    listed = api.client.get("/v1/assist/templates", headers=api.h("knowledge_manager"))
    assert listed.status_code == 200 and listed.json() == []
