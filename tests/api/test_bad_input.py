"""Inputs that once gave 500s get a clear 4xx on the default SQLite set-up, and nothing is stored for them."""

from __future__ import annotations

import pytest
from sqlmodel import Session, SQLModel, select

from api.app import make_engine
from api.auth import AuditLog, AuditWriter
from tests.api.conftest import Api, new_id


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/v1/tickets/route", '{"ticket_id": "NUL-1", "subject": "bad\\u0000byte", "body": "x"}', "body"),
    ("/v1/tickets/route", '{"ticket_id": "NUL-1b", "subject": "bad\\U0000byte", "body": "x"}', "body"),
    ("/v1/tickets/NUL%00x/events", '{"activity": "Reply", "message": "hi"}', "path"),
    ("/v1/tickets/route?x=%00", '{"ticket_id": "NUL-2", "subject": "s", "body": "b"}', "query"),
])
def test_nul_is_refused_with_422(api: Api, path: str, body: str, where: str) -> None:
    r = api.client.post(path, headers={**api.h("helpdesk"), "Content-Type": "application/json"}, content=body)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input" and where in r.json()["detail"]
    assert api.client.get("/v1/tickets/NUL-1", headers=api.h("agent")).status_code == 404


def test_an_escaped_backslash_before_u0000_is_ordinary_text(api: Api) -> None:
    tid = new_id()
    body = '{"ticket_id": "' + tid + '", "subject": "path C:\\\\u0000 literal", "body": "b"}'
    r = api.client.post("/v1/tickets/route", headers={**api.h("helpdesk"), "Content-Type": "application/json"},
                        content=body)
    assert r.status_code in (200, 201), r.text


def test_nul_in_a_get_path_is_refused(api: Api) -> None:
    r = api.client.get("/v1/tickets/a%00b", headers=api.h("agent"))
    assert r.status_code == 422 and "path" in r.json()["detail"]


def test_one_bad_audit_row_never_drops_the_others(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=[AuditLog.__table__])  # type: ignore[attr-defined]
    writer = AuditWriter(engine, linger_seconds=0.5)
    ok = {"who": "a", "role": "agent", "method": "POST", "path": "/v1/x", "status": 201}
    writer.submit({**ok, "object_id": "before"})
    writer.submit({**ok, "method": None, "object_id": "bad"})  # NOT NULL violated: this row cannot be stored
    writer.submit({**ok, "object_id": "after\x00nul"})  # NUL is stripped, the row is kept
    assert writer.flush()
    writer.close()
    with Session(engine) as s:
        kept = sorted(str(a.object_id) for a in s.exec(select(AuditLog)).all())
    assert kept == ["afternul", "before"]
