"""The audit log: a write's row is committed in the write's own transaction, refusals are stored before the answer,
and admins read it through `GET /v1/audit` and `deskpilot audit` (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from api.audit import AuditLog, audited_session, query_audit
from api.settings import Settings
from core.errors import Conflict
from routing.models import Ticket
from tests.api.conftest import Api, new_id, run_cli, start_api


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_api(request, tmp_path_factory, tiny_bundle) -> Iterator[Api]:
    """The app on a SQLite file (the default set-up) or on the test PostgreSQL."""
    home = tmp_path_factory.mktemp("audit")
    if request.param == "postgres":
        url = request.getfixturevalue("pg_schema_url")
    else:
        url = f"sqlite:///{home / 'deskpilot.db'}"
    app, client, keys = start_api(Settings(home=home, database_url=url), bundle_loader=lambda s, e: tiny_bundle)
    try:
        yield Api(app=app, client=client, keys=keys)
    finally:
        client.__exit__(None, None, None)
        app.dependency_overrides.clear()


def _rows(api: Api, **where: object) -> list[AuditLog]:
    # No flush of any writer: a row must be in the database by the time its request is answered.
    with Session(api.app.state.engine) as s:
        q = select(AuditLog)
        for k, v in where.items():
            q = q.where(getattr(AuditLog, k) == v)
        return list(s.exec(q.order_by(AuditLog.id)).all())  # type: ignore[arg-type]


def test_a_write_and_its_audit_row_commit_in_one_transaction(db_api: Api) -> None:
    api, tid = db_api, new_id("TX")
    log: list[str] = []
    engine = api.app.state.engine

    def on_exec(conn, _cursor, statement, *_):  # type: ignore[no-untyped-def]
        log.append(f"{id(conn)} {statement.split('(')[0].strip()}")

    def on_commit(conn):  # type: ignore[no-untyped-def]
        log.append(f"{id(conn)} COMMIT")

    event.listen(engine, "before_cursor_execute", on_exec)
    event.listen(engine, "commit", on_commit)
    try:
        r = api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "refund my order"},
                            headers=api.h("helpdesk"))
    finally:
        event.remove(engine, "before_cursor_execute", on_exec)
        event.remove(engine, "commit", on_commit)
    assert r.status_code == 201, r.text
    ticket_at = next(i for i, s in enumerate(log) if "INSERT INTO ticket " in s + " ")
    conn = log[ticket_at].split()[0]
    mine = [s.split(" ", 1)[1] for s in log[ticket_at:] if s.split()[0] == conn]
    commit_at = mine.index("COMMIT")
    assert any(s.startswith("INSERT INTO audit_log") for s in mine[:commit_at]), mine
    assert sum(s.endswith(" COMMIT") for s in log) == 1, log  # nothing else committed: no separate audit transaction
    [row] = _rows(api, object_id=tid)
    assert (row.method, row.status, row.route, row.role) == ("POST", 201, "/v1/tickets/route", "helpdesk")


def test_refusals_are_stored_before_the_answer(db_api: Api) -> None:
    api, tid = db_api, new_id("REF")
    body = {"ticket_id": tid, "subject": "where is my parcel"}
    before = max((r.id or 0 for r in _rows(api)), default=0)
    answers = [
        api.client.post("/v1/tickets/route", json=body),  # 401
        api.client.post("/v1/tickets/route", json=body, headers=api.h("agent")),  # 403
        api.client.post(f"/v1/tickets/{tid}/feedback", json={"comment": "x"}, headers=api.h("agent")),  # 404
        api.client.post("/v1/tickets/route", json={"ticket_id": tid}, headers=api.h("helpdesk")),  # 422
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 422]
    rows = [r for r in _rows(api) if (r.id or 0) > before]
    assert sorted((r.status, r.who is None, r.role) for r in rows) == [
        (401, True, None), (403, False, "agent"), (404, False, "agent"), (422, False, "helpdesk")]


def test_concurrent_refusals_each_have_their_row_when_answered(db_api: Api) -> None:
    """Rows of refusals arriving together share commits on the writer thread; each is stored before its answer."""
    from concurrent.futures import ThreadPoolExecutor

    api, marker = db_api, new_id("BURST")

    def refuse(i: int) -> int:
        return api.client.post(f"/v1/tickets/{marker}-{i}/events", json={"activity": "Assign"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(refuse, range(60))) == {401}
    with Session(api.app.state.engine) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.path.startswith(f"/v1/tickets/{marker}-"))).all()  # type: ignore[attr-defined]
    assert len(rows) == 60 and {r.status for r in rows} == {401}
    assert {r.object_id for r in rows} == {f"{marker}-{i}" for i in range(60)}


def test_a_committed_row_is_corrected_when_the_answer_differs(db_api: Api) -> None:
    api, tid = db_api, new_id("FIX")
    body = {"ticket_id": tid, "subject": "cancel my subscription"}
    assert api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk")).status_code == 201
    assert api.client.post("/v1/tickets/route", json=body, headers=api.h("helpdesk")).status_code == 200  # replay
    fb = api.client.post(f"/v1/tickets/{tid}/feedback", json={"comment": "ok"}, headers=api.h("agent"))
    assert fb.status_code == 201
    assert [r.status for r in _rows(api, object_id=tid)] == [201, 200]
    [row] = _rows(api, object_id=f"{tid}/feedback/{fb.json()['id']}")  # named by the view after its commit
    assert row.status == 201 and row.who is not None


def test_a_failed_write_leaves_its_refusal_row_only(db_api: Api) -> None:
    """An error after the write's commit began rolls back the write and the row it carried; the answer's row stays."""
    api, tid = db_api, new_id("ERR")
    original = api.app.state.decide

    def broken(**_: object) -> object:
        raise RuntimeError("model exploded")

    api.app.state.decide = broken
    try:
        r = api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "x"}, headers=api.h("helpdesk"))
    finally:
        api.app.state.decide = original
    assert r.status_code == 500
    with Session(api.app.state.engine) as s:
        assert s.exec(select(Ticket).where(Ticket.ticket_id == tid)).first() is None
    assert [r.status for r in _rows(api, object_id=tid)] == [500]


def _seed(api: Api) -> tuple[str, list[str]]:
    marker = new_id("Q")
    ids = [f"{marker}-{i}" for i in range(7)]
    for tid in ids:
        assert api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "refund"},
                               headers=api.h("helpdesk")).status_code == 201
    api.client.post(f"/v1/tickets/{ids[0]}/events", json={"activity": "Assign", "group": "Billing"},
                    headers=api.h("agent"))  # 403
    return marker, ids


def test_get_audit_filters_and_pages_newest_first(db_api: Api) -> None:
    api = db_api
    marker, ids = _seed(api)
    admin = api.h("admin")
    for role in ("helpdesk", "agent", "knowledge_manager", "analyst"):
        assert api.client.get("/v1/audit", headers=api.h(role)).status_code == 403
    assert api.client.get("/v1/audit").status_code == 401

    seen: list[str] = []
    cursor = None
    while True:
        params = {"path_prefix": "/v1/tickets/route", "status": 201, "limit": 3, "role": "helpdesk"}
        r = api.client.get("/v1/audit", params={**params, **({"cursor": cursor} if cursor else {})}, headers=admin)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3 and page["limit"] == 3
        seen += [i["object_id"] for i in page["items"]]
        assert [i["id"] for i in page["items"]] == sorted((i["id"] for i in page["items"]), reverse=True)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = [s for s in seen if s and s.startswith(marker)]
    assert mine == list(reversed(ids))  # newest first, each once across pages

    r = api.client.get("/v1/audit", params={"object_id": ids[0], "method": "post"}, headers=admin)
    assert [(i["status"], i["role"]) for i in r.json()["items"]] == [(403, "agent"), (201, "helpdesk")]
    who = r.json()["items"][0]["who"]
    r = api.client.get("/v1/audit", params={"who": who, "status": 403, "path_prefix": f"/v1/tickets/{ids[0]}"},
                       headers=admin)
    assert [i["object_id"] for i in r.json()["items"]] == [ids[0]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = api.client.get("/v1/audit", params={"since": future}, headers=admin)
    assert r.status_code == 200 and r.json()["items"] == []
    r = api.client.get("/v1/audit", params={"until": future, "object_id": ids[1]}, headers=admin)
    assert len(r.json()["items"]) == 1
    # Another zone is converted: the row written a moment ago is after "now - 1 h" told in UTC+05:00 ...
    east = timezone(timedelta(hours=5))
    recent = (datetime.now(east) - timedelta(hours=1)).isoformat()
    r = api.client.get("/v1/audit", params={"since": recent, "object_id": ids[1]}, headers=admin)
    assert len(r.json()["items"]) == 1, recent
    # ... and before "now + 1 h" told in UTC-05:00, whose wall-clock text is hours earlier than UTC's.
    west = timezone(timedelta(hours=-5))
    soon = (datetime.now(west) + timedelta(hours=1)).isoformat()
    r = api.client.get("/v1/audit", params={"until": soon, "object_id": ids[1]}, headers=admin)
    assert len(r.json()["items"]) == 1, soon
    # A LIKE wildcard in the prefix is literal text.
    r = api.client.get("/v1/audit", params={"path_prefix": "/v1/tickets/%"}, headers=admin)
    assert r.json()["items"] == []


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"cursor": "abc"}, "cursor"),
    ({"status": 99}, "status"), ({"since": "yesterday"}, "since"),
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
])
def test_bad_audit_queries_are_422_naming_the_field(db_api: Api, params: dict[str, object], field: str) -> None:
    r = db_api.client.get("/v1/audit", params=params, headers=db_api.h("admin"))
    assert r.status_code == 422 and r.json()["code"] == "invalid_input" and field in r.json()["detail"], r.text


def test_cli_writes_are_audited_in_their_transaction(db_api: Api) -> None:
    from api.auth import create_key

    engine, name = db_api.app.state.engine, new_id("cli-key")
    with audited_session(engine, action="keys create", object_id=name) as s:
        create_key(session=s, name=name, role="agent")
    with audited_session(engine, action="keys create", object_id=name + "x") as s, pytest.raises(Conflict):
        create_key(session=s, name=name, role="agent")  # refused before any commit: no row
    [row] = _rows(db_api, path="keys create", object_id=name)
    assert row.method == "CLI" and row.who and row.who.startswith("cli") and row.status == 200
    assert _rows(db_api, object_id=name + "x") == []
    with Session(engine) as s:
        page = query_audit(session=s, method="CLI", object_id=name)
    assert [i.path for i in page.items] == ["keys create"] and page.next_cursor is None


def test_deskpilot_audit_cli(tmp_path, monkeypatch, capfd, tiny_bundle) -> None:
    env = {"DESKPILOT_HOME": str(tmp_path)}
    code, out, err = run_cli(["audit"], monkeypatch, capfd, env=env)
    assert code == 2 and "no database" in err
    code, out, err = run_cli(["keys", "create", "--role", "agent", "--name", "ann"], monkeypatch, capfd, env=env)
    assert code == 0, err
    code, out, err = run_cli(["keys", "revoke", "ann"], monkeypatch, capfd, env=env)
    assert code == 0, err
    code, out, err = run_cli(["audit", "--json", "--method", "CLI"], monkeypatch, capfd, env=env)
    assert code == 0, err
    page = json.loads(out)
    assert [(i["path"], i["object_id"]) for i in page["items"]] == [("keys revoke", "ann"), ("keys create", "ann")]
    code, out, err = run_cli(["audit", "--json", "--limit", "1"], monkeypatch, capfd, env=env)
    first = json.loads(out)
    assert len(first["items"]) == 1 and first["next_cursor"]
    code, out, err = run_cli(["audit", "--json", "--cursor", first["next_cursor"]], monkeypatch, capfd, env=env)
    assert [i["path"] for i in json.loads(out)["items"]] == ["keys create"]
    code, out, err = run_cli(["audit", "--object-id", "ann"], monkeypatch, capfd, env=env)
    assert code == 0 and "keys revoke" in out and "keys create" in out
    code, out, err = run_cli(["audit", "--since", "last week"], monkeypatch, capfd, env=env)
    assert code == 2 and "--since" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["audit", "--limit", "5000"], monkeypatch, capfd, env=env)
    assert code == 2 and "limit" in err


def test_kb_import_cli_is_audited_with_its_articles(tmp_path, monkeypatch, capfd) -> None:
    src = tmp_path / "articles.json"
    src.write_text(json.dumps([{"title": "Reset a password", "body": "Open settings, then security."},
                               {"title": "Refunds", "body": "Open billing, then refunds."}]))
    env = {"DESKPILOT_HOME": str(tmp_path / "home")}
    code, out, err = run_cli(["kb", "import", str(src), "--quiet"], monkeypatch, capfd, env=env)
    assert code == 0, err
    code, out, err = run_cli(["audit", "--json", "--path-prefix", "kb import"], monkeypatch, capfd, env=env)
    assert code == 0, err
    [row] = json.loads(out)["items"]
    assert row["object_id"] == str(src) and row["method"] == "CLI" and row["status"] == 200
