"""Ticket routes through the real HTTP stack (TestClient) on in-memory SQLite with a tiny real model."""

from __future__ import annotations

import json

from sqlmodel import Session, func, select

from api.deps import get_thresholds
from routing.models import (
    BatchRoutePublic,
    DecisionPublic,
    DecisionThresholds,
    EventPublic,
    EventResult,
    FeedbackPublic,
    Ticket,
    TicketEvent,
    TicketPublic,
    TriageDecision,
)
from tests.api.conftest import Api, new_id


def _count(api: Api, table: type, **where: str) -> int:
    with Session(api.app.state.engine) as s:
        q = select(func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(getattr(table, k) == v)
        return int(s.exec(q).one())


def test_route_returns_intent_team_decision_and_is_idempotent(api: Api):
    tid = new_id()
    body = {"ticket_id": tid, "subject": "I was charged twice", "body": "please refund the double charge",
            "channel": "email", "segment": "smb", "priority": "high", "custom_fields": {"product": "pro"}}
    r = api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk"))
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["ticket_id"] == tid and d["replayed"] is False and d["trigger"] == "route"
    res = d["result"]
    assert res["intent"] == "billing" and res["team"] == "Finance"
    assert res["decision"] in ("auto_route", "suggest", "triage")
    assert res["top_teams"][0]["team"] == "Finance" and res["model_versions"]["intent"] == "tiny-1"
    assert set(res["risks"]) == {"misroute", "sla_breach", "expected_hours_to_resolve"}
    again = api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk"))
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["decision_id"] == d["decision_id"]
    changed = api.client.post("/v1/tickets/route", json={**body, "subject": "cannot login", "body": "reset password"},
                              headers=api.h("helpdesk"))
    assert changed.status_code == 201 and changed.json()["trigger"] == "reroute"
    assert changed.json()["result"]["team"] == "IT"
    assert _count(api, TriageDecision, ticket_id=tid) == 2 and _count(api, Ticket, ticket_id=tid) == 1


def test_thresholds_come_from_a_dependency_that_tests_can_override(api: Api):
    api.app.dependency_overrides[get_thresholds] = lambda: DecisionThresholds(
        auto_route_confidence=1.0, suggest_confidence=0.999, max_auto_misroute_risk=0.0
    )
    r = api.client.post("/v1/tickets/route", json={"ticket_id": new_id(), "subject": "reset my password"},
                        headers=api.h("helpdesk"))
    assert r.status_code == 201 and r.json()["result"]["decision"] == "triage"


def test_bad_input_is_422_naming_the_field_and_writes_nothing(api: Api):
    tid = new_id("BAD")
    cases = {
        "subject": {"ticket_id": tid, "subject": "x" * 1001},
        "channel": {"ticket_id": tid, "subject": "hi", "channel": 42},
        "custom_fields": {"ticket_id": tid, "subject": "hi", "custom_fields": {f"k{i}": "v" for i in range(51)}},
        "ticket_id": {"subject": "hi"},
        "created_at": {"ticket_id": tid, "subject": "hi", "created_at": "yesterday-ish"},
        "colour": {"ticket_id": tid, "subject": "hi", "colour": "red"},
        "subject and body": {"ticket_id": tid, "subject": "", "body": ""},
    }
    for field, payload in cases.items():
        r = api.client.post("/v1/tickets/route", json=payload, headers=api.h("helpdesk"))
        assert r.status_code == 422, (field, r.text)
        assert r.json()["code"] == "invalid_input" and field in r.json()["detail"], (field, r.json())
        assert set(r.json()) == {"detail", "code"}
    bad_json = api.client.post("/v1/tickets/route", content=b'{"ticket_id": ', headers={
        **api.h("helpdesk"), "content-type": "application/json"})
    assert bad_json.status_code == 422 and "invalid JSON" in bad_json.json()["detail"]
    assert _count(api, Ticket, ticket_id=tid) == 0


def test_batch_with_one_bad_ticket_is_refused_whole(api: Api):
    ids = [new_id("BATCH") for _ in range(3)]
    tickets = [{"ticket_id": i, "subject": "package never arrived"} for i in ids]
    tickets[2]["priority"] = "p" * 500
    r = api.client.post("/v1/tickets/route/batch", json={"tickets": tickets}, headers=api.h("helpdesk"))
    assert r.status_code == 422 and "tickets.2.priority" in r.json()["detail"]
    assert sum(_count(api, Ticket, ticket_id=i) for i in ids) == 0
    dup = api.client.post("/v1/tickets/route/batch", json={"tickets": [tickets[0], tickets[0]]},
                          headers=api.h("helpdesk"))
    assert dup.status_code == 422 and "appears twice" in dup.json()["detail"]
    tickets[2]["priority"] = "low"
    ok = api.client.post("/v1/tickets/route/batch", json={"tickets": tickets}, headers=api.h("helpdesk"))
    assert ok.status_code == 200, ok.text
    out = ok.json()
    assert out["new"] == 3 and out["replayed"] == 0
    assert [d["ticket_id"] for d in out["decisions"]] == ids
    assert all(d["result"]["team"] == "Logistics" for d in out["decisions"])


def test_model_failure_mid_batch_leaves_nothing_behind(api: Api):
    state = api.app.state
    original = state.decide
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("inference failed")
        return original(**kw)

    state.decide = flaky
    try:
        ids = [new_id("FLAKY") for _ in range(3)]
        r = api.client.post("/v1/tickets/route/batch", headers=api.h("helpdesk"),
                            json={"tickets": [{"ticket_id": i, "subject": "invoice is wrong"} for i in ids]})
    finally:
        state.decide = original
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert sum(_count(api, Ticket, ticket_id=i) for i in ids) == 0


def test_oversize_bodies_are_refused_with_413(api: Api):
    limit = api.app.state.settings.max_body_bytes
    big = {"tickets": [{"ticket_id": new_id("BIG"), "subject": "s", "body": "b" * 19_000} for _ in range(5)]}
    raw = json.dumps(big).encode()
    assert len(raw) > limit
    r = api.client.post("/v1/tickets/route/batch", content=raw,
                        headers={**api.h("helpdesk"), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large" and str(limit) in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold on streamed bodies too
        for i in range(0, len(raw), 8192):
            yield raw[i:i + 8192]

    r2 = api.client.post("/v1/tickets/route/batch", content=chunks(),
                         headers={**api.h("helpdesk"), "content-type": "application/json"})
    assert r2.status_code == 413
    assert _count(api, Ticket, ticket_id=big["tickets"][0]["ticket_id"]) == 0


def test_events_build_the_live_log_and_retriage_on_intent_change(api: Api):
    tid = new_id("EV")
    h = api.h("helpdesk")
    api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "where is my delivery"}, headers=h)
    r1 = api.client.post(f"/v1/tickets/{tid}/events", headers=h, json={
        "activity": "Assign", "group": "Logistics", "resource": "agent-3", "timestamp": "2026-01-05T10:00:00+01:00"})
    assert r1.status_code == 201 and r1.json()["retriage_checked"] is False
    assert r1.json()["event"]["timestamp"].startswith("2026-01-05T09:00:00")
    r2 = api.client.post(f"/v1/tickets/{tid}/events", headers=h, json={
        "activity": "Customer message", "author_type": "customer",
        "message": "I also cannot login, password reset link broken"})
    body = r2.json()
    assert r2.status_code == 201 and body["intent_changed"] is True
    assert body["previous_intent"] == "shipping" and body["new_intent"] == "password"
    assert body["decision"]["trigger"] == "event" and body["decision"]["result"]["team"] == "IT"
    bad = api.client.post(f"/v1/tickets/{tid}/events", headers=h, json={"activity": "", "author_type": "robot"})
    assert bad.status_code == 422 and "activity" in bad.json()["detail"] and "author_type" in bad.json()["detail"]
    missing = api.client.post("/v1/tickets/NOPE-1/events", headers=h, json={"activity": "Assign"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    log = api.client.get(f"/v1/tickets/{tid}/events", headers=api.h("agent")).json()
    assert [e["activity"] for e in log] == ["Assign", "Customer message"]
    assert _count(api, TicketEvent, case_id=tid) == 2
    t = api.client.get(f"/v1/tickets/{tid}", headers=api.h("analyst")).json()
    assert t["current_intent"] == "password" and t["assigned_group"] == "Logistics"
    assert [d["trigger"] for d in t["decisions"]] == ["route", "event"]


def test_feedback_is_stored_with_who_gave_it(api: Api):
    tid = new_id("FB")
    api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "invoice is wrong"},
                    headers=api.h("helpdesk"))
    r = api.client.post(f"/v1/tickets/{tid}/feedback", headers=api.h("agent"),
                        json={"corrected_team": "Collections", "rejected": ["draft-1"]})
    assert r.status_code == 201, r.text
    assert r.json()["by"].startswith("agent-") and r.json()["corrected_team"] == "Collections"
    empty = api.client.post(f"/v1/tickets/{tid}/feedback", headers=api.h("agent"), json={})
    assert empty.status_code == 422 and "corrected_team" in empty.json()["detail"]
    t = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent")).json()
    assert len(t["feedback"]) == 1 and t["feedback"][0]["rejected"] == ["draft-1"]


def test_metrics_count_decisions_and_latency_by_route(api: Api):
    api.client.post("/v1/tickets/route", json={"ticket_id": new_id("M"), "subject": "track my shipment"},
                    headers=api.h("helpdesk"))
    text = api.client.get("/metrics").text
    assert 'deskpilot_request_duration_seconds_count{method="POST",route="/v1/tickets/route",status="201"}' in text
    assert "deskpilot_decisions_total{" in text
    assert 'deskpilot_model_version_info{task="intent",version="tiny-1"} 1.0' in text
    # route templates, not raw paths, label the histogram
    api.client.get("/v1/tickets/SOME-ID", headers=api.h("agent"))
    assert 'route="/v1/tickets/{ticket_id}"' in api.client.get("/metrics").text


def test_openapi_documents_every_area_with_the_error_shape(api: Api):
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("/v1/tickets/route", "/v1/tickets/route/batch", "/v1/tickets/{ticket_id}/events",
              "/v1/tickets/{ticket_id}/feedback", "/v1/kb/articles", "/v1/kb/search", "/v1/insights/{section}",
              "/v1/models", "/v1/models/reload", "/healthz", "/readyz", "/metrics"):
        assert p in paths, p
    route = paths["/v1/tickets/route"]["post"]
    assert route["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"detail", "code"}


def test_route_answers_are_the_documented_models_and_match_the_stored_decision(api: Api):
    tid = new_id("SHAPE")
    body = {"ticket_id": tid, "subject": "track my shipment", "body": "where is my parcel", "channel": "chat"}
    first = api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk"))
    assert first.status_code == 201 and first.headers["content-type"] == "application/json"
    again = api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk"))
    assert again.status_code == 200
    # Every field of the documented model, and the replay is the first answer with replayed=true.
    assert DecisionPublic.model_validate(first.json()).model_dump(mode="json") == first.json()
    assert again.json() == {**first.json(), "replayed": True}
    stored = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent")).json()["current_decision"]
    assert stored == first.json()
    batch = api.client.post("/v1/tickets/route/batch", headers=api.h("helpdesk"),
                            json={"tickets": [body, {"ticket_id": new_id("SHAPE"), "subject": "reset my password"}]})
    assert batch.status_code == 200 and batch.headers["content-type"] == "application/json"
    out = batch.json()
    assert BatchRoutePublic.model_validate(out).model_dump(mode="json") == out
    assert (out["new"], out["replayed"]) == (1, 1) and out["decisions"][0] == again.json()
    spec = api.client.get("/openapi.json").json()
    route = spec["paths"]["/v1/tickets/route"]["post"]["responses"]
    for status in ("200", "201"):
        assert route[status]["content"]["application/json"]["schema"]["$ref"].endswith("/DecisionPublic")
    batch_doc = spec["paths"]["/v1/tickets/route/batch"]["post"]["responses"]["200"]
    assert batch_doc["content"]["application/json"]["schema"]["$ref"].endswith("/BatchRoutePublic")


def test_event_feedback_and_read_answers_are_the_documented_models(api: Api):
    """These endpoints serialise in the worker thread too: the JSON is exactly the documented model's."""
    tid = new_id("DOC")
    api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "where is my delivery"},
                    headers=api.h("helpdesk"))
    ev = api.client.post(f"/v1/tickets/{tid}/events", headers=api.h("helpdesk"), json={
        "activity": "Customer message", "author_type": "customer", "message": "password reset link broken"})
    assert ev.status_code == 201 and ev.headers["content-type"] == "application/json"
    assert EventResult.model_validate(ev.json()).model_dump(mode="json") == ev.json()
    fb = api.client.post(f"/v1/tickets/{tid}/feedback", headers=api.h("agent"), json={"corrected_team": "IT"})
    assert fb.status_code == 201
    assert FeedbackPublic.model_validate(fb.json()).model_dump(mode="json") == fb.json()
    log = api.client.get(f"/v1/tickets/{tid}/events", headers=api.h("agent"))
    assert log.status_code == 200 and len(log.json()) == 1
    assert [EventPublic.model_validate(e).model_dump(mode="json") for e in log.json()] == log.json()
    assert log.json()[0] == ev.json()["event"]
    t = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent"))
    assert t.status_code == 200 and TicketPublic.model_validate(t.json()).model_dump(mode="json") == t.json()
    assert t.json()["feedback"][0] == fb.json() and t.json()["events"] == log.json()
    paths = api.client.get("/openapi.json").json()["paths"]
    for path, method, status, model in [
        ("/v1/tickets/{ticket_id}/events", "post", "201", "EventResult"),
        ("/v1/tickets/{ticket_id}/feedback", "post", "201", "FeedbackPublic"),
        ("/v1/tickets/{ticket_id}", "get", "200", "TicketPublic"),
    ]:
        assert paths[path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith(model)
