"""API keys: hashed storage, 401/403 per role, admin sees all, audit log of every write, the `keys` CLI."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import event, func
from sqlmodel import Session, SQLModel, select
from typer.testing import CliRunner

from api.app import make_engine
from api.auth import ApiKey, AuditLog, AuditWriter, hash_key, revoke_key
from tests.api.conftest import Api, new_id

# (method, path, body, roles allowed besides admin)
ENDPOINTS = [
    ("POST", "/v1/tickets/route", {"ticket_id": "AUTHZ-1", "subject": "invoice is wrong"}, {"helpdesk"}),
    ("POST", "/v1/tickets/AUTHZ-1/events", {"activity": "Assign", "group": "Finance"}, {"helpdesk"}),
    ("POST", "/v1/tickets/AUTHZ-1/feedback", {"comment": "fine"}, {"agent", "helpdesk"}),
    ("GET", "/v1/tickets/AUTHZ-1", None, {"helpdesk", "agent", "analyst"}),
    ("GET", "/v1/models", None, {"analyst"}),
    ("POST", "/v1/models/reload", None, set()),
]


def test_each_role_sees_only_its_endpoints(api: Api):
    for method, path, body, allowed in ENDPOINTS:
        for role in ("helpdesk", "agent", "knowledge_manager", "analyst", "admin"):
            r = api.client.request(method, path, json=body, headers=api.h(role))
            if role == "admin" or role in allowed:
                assert r.status_code < 400, (method, path, role, r.status_code, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert r.json()["code"] == "forbidden" and role in r.json()["detail"]


def test_missing_invalid_and_revoked_keys_are_401(api: Api):
    body = {"ticket_id": new_id(), "subject": "reset my password"}
    r = api.client.post("/v1/tickets/route", json=body)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    r = api.client.post("/v1/tickets/route", json=body, headers={"Authorization": "Bearer dpk_not-a-real-key"})
    assert r.status_code == 401 and "invalid" in r.json()["detail"]
    from api.auth import create_key

    with Session(api.app.state.engine) as s:
        k = create_key(session=s, name=new_id("temp"), role="helpdesk")
    assert api.client.post("/v1/tickets/route", json=body, headers={"X-API-Key": k.secret}).status_code == 201
    with Session(api.app.state.engine) as s:
        revoke_key(session=s, name=k.name)
    # at once: no cache between the revocation and the next request
    r = api.client.post("/v1/tickets/route", json=body, headers={"X-API-Key": k.secret})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_keys_are_stored_only_as_hashes(api: Api):
    with Session(api.app.state.engine) as s:
        rows = s.exec(select(ApiKey)).all()
    stored = json.dumps([r.model_dump(mode="json") for r in rows])
    for secret in api.keys.values():
        assert secret not in stored
        assert hash_key(secret) in stored


def test_every_write_is_audited_with_who_what_status(api: Api):
    tid = new_id("AUD")
    api.client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": "track my shipment"},
                    headers=api.h("helpdesk"))
    api.client.post(f"/v1/tickets/{tid}/feedback", json={"corrected_team": "IT"}, headers=api.h("agent"))
    api.client.post(f"/v1/tickets/{tid}/feedback", json={"corrected_team": "IT"}, headers=api.h("analyst"))
    api.client.post(f"/v1/tickets/{tid}/feedback", json={"corrected_team": "x" * 500}, headers=api.h("agent"))
    api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent"))  # reads are not audited
    assert api.app.state.audit_writer.flush()  # rows are written in the background
    with Session(api.app.state.engine) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.path.contains(tid))).all()  # type: ignore[attr-defined]
        route_rows = s.exec(select(AuditLog).where(AuditLog.object_id == tid)).all()
    every = {r.id: r for r in [*rows, *route_rows]}.values()
    got = sorted((r.method, r.role, r.status) for r in every)
    assert got == sorted([("POST", "helpdesk", 201), ("POST", "agent", 201), ("POST", "analyst", 403),
                          ("POST", "agent", 422)])
    assert all(r.who and r.at is not None for r in every)
    fb = next(r for r in rows if r.status == 201)
    assert fb.route == "/v1/tickets/{ticket_id}/feedback" and fb.object_id.startswith(f"{tid}/feedback/")


def test_keys_cli_prints_the_key_once_and_it_works(tmp_path, monkeypatch):
    monkeypatch.setenv("DESKPILOT_HOME", str(tmp_path))
    from api.settings import get_settings

    get_settings.cache_clear()
    try:
        import typer

        from api.commands import keys

        app = typer.Typer()
        keys.register(app)
        runner = CliRunner()
        out = runner.invoke(app, ["keys", "create", "--role", "agent", "--name", "ann"])
        assert out.exit_code == 0, out.output
        secret = out.stdout.strip().splitlines()[0]
        assert secret.startswith("dpk_") and len(secret) > 40
        dup = runner.invoke(app, ["keys", "create", "--role", "agent", "--name", "ann"])
        assert dup.exit_code == 2 and "already exists" in dup.output
        bad = runner.invoke(app, ["keys", "create", "--role", "boss", "--name", "bob"])
        assert bad.exit_code == 2 and "role 'boss'" in bad.output
        listed = runner.invoke(app, ["keys", "list"])
        assert "ann" in listed.stdout and secret not in listed.stdout
        from api.app import make_engine
        from api.auth import authenticate

        engine = make_engine(f"sqlite:///{tmp_path / 'deskpilot.db'}")
        with Session(engine) as s:
            p = authenticate(session=s, secret=secret)
        engine.dispose()
        assert p is not None and p.name == "ann" and p.role == "agent"
    finally:
        get_settings.cache_clear()


def _audit_count(engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(AuditLog)).one())


def test_audit_writer_batches_rows_and_survives_a_failed_insert(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    writer = AuditWriter(engine, max_batch=100, linger_seconds=0.0)
    row = {"who": "agent-1", "role": "agent", "method": "POST", "path": "/v1/x", "status": 201}
    # No table yet: the insert fails, is logged with the rows it lost, and the writer goes on.
    writer.submit(row)
    assert writer.flush() and _audit_count_or_none(engine) is None
    SQLModel.metadata.create_all(engine, tables=[AuditLog.__table__])  # type: ignore[attr-defined]
    # Hold the writer inside its first transaction while 250 more rows queue up: they go in 100-row batches.
    entered, release = threading.Event(), threading.Event()

    def hold(*_args):
        if not entered.is_set():
            entered.set()
            release.wait(10)

    event.listen(engine, "before_cursor_execute", hold)
    commits.clear()
    writer.submit({**row, "object_id": "first"})
    assert entered.wait(10)
    def produce(k: int) -> None:
        for i in range(50):
            writer.submit({**row, "object_id": f"{k}-{i}"})

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(5)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    release.set()
    assert writer.flush()
    assert _audit_count(engine) == 251 and len(commits) == 4  # 1 + 100 + 100 + 50
    # Rows that come one by one within the linger time share one commit.
    lingering = AuditWriter(engine, linger_seconds=1.0)
    commits.clear()
    for i in range(5):
        lingering.submit({**row, "object_id": f"one by one {i}"})
        time.sleep(0.01)
    assert lingering.flush() and len(commits) == 1
    lingering.close()
    writer.submit({**row, "object_id": "queued at close"})
    writer.close()  # stores what is queued, then stops
    writer.submit({**row, "object_id": "after close"})  # written at once in the caller's thread
    with Session(engine) as s:
        ids = set(s.exec(select(AuditLog.object_id)).all())
    assert {"first", "0-0", "4-49", "one by one 4", "queued at close", "after close"} <= ids
    assert _audit_count(engine) == 258


def _audit_count_or_none(engine) -> int | None:
    try:
        return _audit_count(engine)
    except Exception:
        return None


def test_revocation_reaches_every_worker_at_once(tmp_path, tiny_bundle):
    """Two app instances (workers) on one database: a key revoked through one is refused by the other at once."""
    from api.settings import Settings
    from tests.api.conftest import start_api

    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'shared.db'}")
    workers = [start_api(settings, bundle_loader=lambda s, e: tiny_bundle) for _ in range(2)]
    try:
        (app_a, client_a, keys_a), (_, client_b, _) = workers
        from api.auth import create_key

        with Session(app_a.state.engine) as s:
            k = create_key(session=s, name=new_id("w"), role="agent")
        assert client_a.get("/v1/tickets/none", headers={"X-API-Key": k.secret}).status_code == 404
        assert client_b.get("/v1/tickets/none", headers={"X-API-Key": k.secret}).status_code == 404
        with Session(app_a.state.engine) as s:
            revoke_key(session=s, name=k.name)
        for client in (client_a, client_b):
            r = client.get("/v1/tickets/none", headers={"X-API-Key": k.secret})
            assert r.status_code == 401 and "revoked" in r.json()["detail"]
    finally:
        for _, client, _ in workers:
            client.__exit__(None, None, None)
