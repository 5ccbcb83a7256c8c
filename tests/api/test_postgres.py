"""The storage path on the real PostgreSQL through the real HTTP stack; each run uses (and drops) its own schema."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlmodel import Session, func, select

from api.auth import AuditLog
from api.settings import Settings
from routing.models import Ticket, TicketEvent, TriageDecision
from tests.api.conftest import Api, new_id, start_api

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_api(pg_schema_url, tmp_path_factory, tiny_bundle) -> Iterator[Api]:
    # Concurrent routes here test the database (one ticket stored per race), not load shedding: on a busy box the
    # routing queue's default wait bound would answer some of them 503 `overloaded`.
    settings = Settings(home=tmp_path_factory.mktemp("pg"), database_url=pg_schema_url, route_max_wait_seconds=30.0)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        assert app.state.engine.dialect.name == "postgresql"
        yield Api(app=app, client=client, keys=keys)
    finally:
        client.__exit__(None, None, None)
        app.dependency_overrides.clear()


def _count(api: Api, table: type, **where: str) -> int:
    with Session(api.app.state.engine) as s:
        q = select(func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(getattr(table, k) == v)
        return int(s.exec(q).one())


def test_tables_live_in_the_run_schema_only(pg_api: Api, pg_schema_url: str):
    schema = pg_schema_url.rsplit("search_path%3D", 1)[1]
    with pg_api.app.state.engine.connect() as conn:
        tables = {r[0] for r in conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema})}
    assert {"ticket", "triage_decision", "ticket_event", "feedback", "api_key", "audit_log"} <= tables


def test_route_replay_reroute_events_feedback_on_postgres(pg_api: Api):
    api, h = pg_api, pg_api.h("helpdesk")
    tid = new_id("PG")
    body = {"ticket_id": tid, "subject": "charged twice", "body": "refund the double charge",
            "custom_fields": {"plan": "pro"}, "created_at": "2026-02-01T08:30:00Z"}
    r1 = api.client.post("/v1/tickets/route", json=body, headers=h)
    r2 = api.client.post("/v1/tickets/route", json=body, headers=h)
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r2.json()["decision_id"] == r1.json()["decision_id"]
    r3 = api.client.post("/v1/tickets/route", json={**body, "subject": "cannot login"}, headers=h)
    assert r3.status_code == 201 and r3.json()["trigger"] == "reroute"
    ev = api.client.post(f"/v1/tickets/{tid}/events", headers=h, json={
        "activity": "Customer message", "author_type": "customer", "message": "where is my parcel, tracking broken",
        "payload": {"lang": "en"}})
    assert ev.status_code == 201 and ev.json()["intent_changed"] is True and ev.json()["new_intent"] == "shipping"
    fb = api.client.post(f"/v1/tickets/{tid}/feedback", headers=api.h("agent"), json={"corrected_intent": "shipping"})
    assert fb.status_code == 201
    t = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent")).json()
    assert [d["trigger"] for d in t["decisions"]] == ["route", "reroute", "event"]
    assert t["created_at"].startswith("2026-02-01T08:30:00") and t["custom_fields"] == {"plan": "pro"}
    assert t["events"][0]["payload"] == {"lang": "en"} and t["feedback"][0]["corrected_intent"] == "shipping"
    assert _count(api, TriageDecision, ticket_id=tid) == 3


def test_failed_batch_and_bad_input_leave_nothing_on_postgres(pg_api: Api):
    api = pg_api
    original = api.app.state.decide
    calls = {"n": 0}

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(**kw)

    ids = [new_id("PGB") for _ in range(4)]
    api.app.state.decide = flaky
    try:
        r = api.client.post("/v1/tickets/route/batch", headers=api.h("helpdesk"),
                            json={"tickets": [{"ticket_id": i, "subject": "reset my password"} for i in ids]})
    finally:
        api.app.state.decide = original
    assert r.status_code == 500
    bad = api.client.post(f"/v1/tickets/{ids[0]}/events", headers=api.h("helpdesk"),
                          json={"activity": "Assign", "timestamp": "not a time"})
    assert bad.status_code == 422 and "timestamp" in bad.json()["detail"]
    assert sum(_count(api, Ticket, ticket_id=i) for i in ids) == 0
    assert sum(_count(api, TicketEvent, case_id=i) for i in ids) == 0
    assert api.app.state.audit_writer.flush()  # rows are written in the background
    with Session(api.app.state.engine) as s:
        audited = s.exec(select(AuditLog).where(AuditLog.status == 500)).all()
    assert any(a.route == "/v1/tickets/route/batch" for a in audited)


def test_concurrent_first_routes_of_one_ticket_store_one_ticket(pg_api: Api):
    api = pg_api
    tid = new_id("RACE")
    body = {"ticket_id": tid, "subject": "package never arrived"}

    def go(_: int) -> int:
        return api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk")).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(go, range(12)))
    assert set(statuses) <= {200, 201} and statuses.count(201) == 1, statuses
    assert _count(api, Ticket, ticket_id=tid) == 1
    # every response after the first stored decision replays it; no duplicate decision rows for the same payload
    assert _count(api, TriageDecision, ticket_id=tid) == statuses.count(201)


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/v1/tickets/route", '{"ticket_id": "NUL-1", "subject": "bad\\u0000byte", "body": "x"}', "body"),
    ("/v1/tickets/route?x=%00", '{"ticket_id": "NUL-2", "subject": "s", "body": "b"}', "query"),
])
def test_nul_characters_are_replaced_and_lose_no_audit_row(pg_api: Api, path: str, body: str, where: str) -> None:
    """PostgreSQL cannot store NUL in text: it is replaced by U+FFFD at the door the same way on every database
    (SQLite is tested in test_bad_input), the write is stored, and the audit rows of it and of a good request before
    it too."""
    good = pg_api.client.post("/v1/tickets/route", headers=pg_api.h("helpdesk"),
                              json={"ticket_id": new_id(), "subject": "Refund", "body": "please refund"})
    assert good.status_code in (200, 201)
    r = pg_api.client.post(path, headers={**pg_api.h("helpdesk"), "Content-Type": "application/json"}, content=body)
    assert r.status_code in (200, 201), (where, r.text)
    stored = pg_api.client.get(f"/v1/tickets/{r.json()['ticket_id']}", headers=pg_api.h("agent")).json()
    assert "\x00" not in stored["subject"] and stored["subject"] in ("bad\ufffdbyte", "s")
    with Session(pg_api.app.state.engine) as s:
        rows = s.exec(select(AuditLog).order_by(AuditLog.id.desc()).limit(2)).all()  # type: ignore[union-attr]
    assert [a.status for a in rows] == [r.status_code, good.status_code]
    assert "\x00" not in (rows[0].path or "")


def test_nul_in_a_path_id_on_postgres_is_a_clear_404_not_a_500(pg_api: Api) -> None:
    tid = new_id("PN")
    assert pg_api.client.post("/v1/tickets/route", headers=pg_api.h("helpdesk"),
                              json={"ticket_id": tid, "subject": "s", "body": "b"}).status_code == 201
    r = pg_api.client.post(f"/v1/tickets/{tid[:2]}%00{tid[2:]}/events", headers=pg_api.h("helpdesk"),
                           json={"activity": "Reply", "message": "hi"})
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text


def test_a_number_past_64_bits_in_a_query_is_a_422_on_postgres(pg_api: Api) -> None:
    r = pg_api.client.get(f"/v1/kb/reviews?article_id={2**64 + 5}", headers=pg_api.h("admin"))
    assert r.status_code == 422 and "article_id" in r.json()["detail"], r.text
