"""Stateless API replicas: two `deskpilot serve` processes, each with its own home, on two ports, sharing one
PostgreSQL database, one `chroma run` server and one model registry folder (docs/DEPLOYMENT.md).

What one replica writes, the other serves: a ticket routed on A is read (and replayed, not re-triaged) on B; a model
promoted or rolled back through A is served by B within its watch interval, without a reload call; a key revoked
through A's admin page is refused by B on the very next request; an article published through A is found by search
on B. PostgreSQL is required (DESKPILOT_REQUIRE_POSTGRES=1 turns its absence into a failure, as everywhere).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, SQLModel

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
WATCH_SECONDS = 0.5
# A replica notices a new live pointer within WATCH_SECONDS, then loads the model; the slack covers the load on a
# busy 2-core machine.
SWAP_DEADLINE = WATCH_SECONDS + 10.0
ROLES = ("admin", "helpdesk", "analyst", "knowledge_manager")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, path: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url}{path} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).parent / "chroma"
    cli = str(exe) if exe.is_file() else shutil.which("chroma")
    if cli is None:
        pytest.skip("the `chroma` CLI is not installed (pip install chromadb)")
    where = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = where / "chroma.log"
    with log.open("w") as out:
        proc = subprocess.Popen([cli, "run", "--host", "127.0.0.1", "--port", str(port), "--path",
                                 str(where / "data")], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log, "/api/v2/heartbeat", timeout=60)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory: pytest.TempPathFactory, sim_small: Any) -> tuple[Path, str, str]:
    """A registry folder (the shared storage) with a live intent model v1 and a second stored version v2."""
    from flows.training import train_all
    from insight.models.registry import ModelRegistry

    path = tmp_path_factory.mktemp("shared-storage") / "registry"
    reg = ModelRegistry(path)
    tickets = sim_small.tickets.iloc[:300]
    report = train_all(log=sim_small.log.filter_cases(tickets["case_id"]), tickets=tickets, registry=reg,
                       embedder=None, tasks=("intent",))
    first = report.models[0]
    assert first.version is not None
    second = reg.save(first.model, task="intent", metadata=reg.read_metadata("intent", first.version).to_dict())
    return path, first.version, second.version


@dataclass
class Replica:
    """One `deskpilot serve` process."""

    name: str
    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    keys: dict[str, str] = field(default_factory=dict)

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def get(self, path: str, role: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.h(role), timeout=60, **kw)

    def post(self, path: str, role: str, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=self.h(role), timeout=120, **kw)

    def serving(self) -> str | None:
        r = self.get("/v1/models", "analyst")
        assert r.status_code == 200, r.text
        return dict(r.json()["serving"]).get("intent")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, pg_schema_url: str, chroma_url: str,
             shared_registry: tuple[Path, str, str]) -> Iterator[tuple[Replica, Replica, str]]:
    from api.app import _import_tables
    from api.auth import create_key
    from api.settings import bundled_model_path
    from api.web.accounts import create_user

    registry, _, _ = shared_registry
    # Tables and keys first (the servers create the same tables if missing); the keys are test set-up, not what
    # is tested.
    engine = create_engine(pg_schema_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        keys = {role: create_key(session=session, name=f"replicas-{role}", role=role).secret for role in ROLES}
        create_user(session=session, username="replica-admin", password="replica-admin-password-1", role="admin")
    engine.dispose()

    # What every replica must share besides the stores: the pseudonym key (the same customer gets the same token,
    # so a payload hashes alike on every replica) and the web session key (a sign-in holds on every replica).
    common = {
        "DESKPILOT_DATABASE_URL": pg_schema_url, "DESKPILOT_CHROMA_URL": chroma_url,
        "DESKPILOT_REGISTRY": str(registry), "DESKPILOT_MODELS_WATCH_SECONDS": str(WATCH_SECONDS),
        "DESKPILOT_PSEUDONYM_KEY": "replica-test-" + uuid.uuid4().hex,
        "DESKPILOT_WEB_SECRET_KEY": uuid.uuid4().hex, "DESKPILOT_LOG_LEVEL": "WARNING",
        "DESKPILOT_DRIFT_CHECK_SECONDS": "0", "DESKPILOT_LIVE_INSIGHT_SECONDS": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
        # The bundled MiniLM for the knowledge hub too, as in every test not about the hub's own model.
        "DESKPILOT_KB_EMBEDDING_MODEL": str(bundled_model_path()),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESKPILOT_")}
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            home = tmp_path_factory.mktemp(f"replica-{name}")
            port = _free_port()
            env = {**base, **common, "DESKPILOT_HOME": str(home)}
            log = home / "serve.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port)],
                    env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            started.append(Replica(name=name, url=f"http://127.0.0.1:{port}", home=home, env=env, proc=proc,
                                   keys=dict(keys)))
        for rep in started:
            _wait(rep.url, rep.proc, rep.home / "serve.log", "/readyz")
        yield started[0], started[1], pg_schema_url
    finally:
        for rep in started:
            _stop(rep.proc)


def _ticket(tid: str) -> dict[str, Any]:
    return {"ticket_id": tid, "subject": "Charged twice for my order",
            "body": "Hi, I am Maria Lopez (maria.lopez@example.com) and my card was billed two times yesterday.",
            "channel": "email", "segment": "consumer", "priority": "normal"}


def _until(rep: Replica, version: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < SWAP_DEADLINE:
        if rep.serving() == version:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"replica {rep.name} still serves {rep.serving()} after {SWAP_DEADLINE} s, not {version}")


def test_a_ticket_routed_on_one_replica_is_read_and_replayed_on_the_other(replicas) -> None:
    a, b, _ = replicas
    assert a.home != b.home
    tid = f"R-{uuid.uuid4().hex[:8]}"
    routed = a.post("/v1/tickets/route", "helpdesk", json=_ticket(tid))
    assert routed.status_code == 201, routed.text
    seen = b.get(f"/v1/tickets/{tid}", "helpdesk")
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["current_decision"]["decision_id"] == routed.json()["decision_id"]
    assert "maria.lopez@example.com" not in body["body"]  # redacted at A's door, stored redacted
    # The same payload on B: the stored decision, not a second triage (same pseudonym key, same payload hash).
    again = b.post("/v1/tickets/route", "helpdesk", json=_ticket(tid))
    assert again.status_code == 200, again.text
    assert again.json()["decision_id"] == routed.json()["decision_id"] and again.json()["replayed"] is True
    # A batch on B that holds A's ticket and a new one: one replayed, one triaged on B, both readable on A.
    new = f"R-{uuid.uuid4().hex[:8]}"
    batch = b.post("/v1/tickets/route/batch", "helpdesk", json={"tickets": [_ticket(tid), _ticket(new)]})
    assert batch.status_code == 200, batch.text
    assert a.get(f"/v1/tickets/{new}", "helpdesk").status_code == 200


def test_promotion_and_rollback_through_one_replica_reach_the_other(replicas, shared_registry) -> None:
    a, b, _ = replicas
    _, v1, v2 = shared_registry
    assert a.serving() == b.serving() == v1
    r = a.post("/v1/models/intent/promote", "admin", json={"version": v2, "reason": "replica test"})
    assert r.status_code == 200, r.text
    assert r.json()["serving"]["intent"] == v2  # the replica that swapped serves it at once
    waited = _until(b, v2)  # the other one follows the shared registry's live pointer, no reload call
    print(f"B served the promoted version after {waited:.2f} s")
    routed = b.post("/v1/tickets/route", "helpdesk", json=_ticket(f"P-{uuid.uuid4().hex[:8]}"))
    assert routed.status_code == 201 and routed.json()["result"]["model_versions"]["intent"] == v2

    r = a.post("/v1/models/intent/rollback", "admin", json={"reason": "replica test rollback"})
    assert r.status_code == 200, r.text
    assert r.json()["live"] == v1
    _until(b, v1)
    history = b.get("/v1/models/intent/versions", "analyst").json()["history"]
    assert [(h["action"], h["version"]) for h in history[:2]] == [("rollback", v1), ("force", v2)]


def test_a_key_revoked_through_one_replica_is_refused_by_the_other_at_once(replicas) -> None:
    a, b, url = replicas
    from api.auth import create_key

    engine = create_engine(url)
    with Session(engine) as session:
        secret = create_key(session=session, name=f"to-revoke-{uuid.uuid4().hex[:6]}", role="analyst")
    engine.dispose()
    h = {"Authorization": f"Bearer {secret.secret}"}
    assert httpx.get(f"{b.url}/v1/models", headers=h, timeout=30).status_code == 200

    # An admin signs in to A's web app and revokes the key there.
    with httpx.Client(base_url=a.url, timeout=60, follow_redirects=False) as web:
        page = web.get("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None, page.text[:500]
        signed = web.post("/login", data={"username": "replica-admin", "password": "replica-admin-password-1",
                                          "csrf_token": token.group(1)})
        assert signed.status_code == 303, signed.text[:500]
        keys_page = web.get("/admin/keys")
        assert keys_page.status_code == 200 and secret.name in keys_page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', keys_page.text)
        assert token is not None
        revoked = web.post(f"/admin/keys/{secret.name}/revoke", data={"csrf_token": token.group(1)})
        assert revoked.status_code == 303, revoked.text[:500]

    # The very next request on B (and on A) is refused: no replica caches keys.
    refused = httpx.get(f"{b.url}/v1/models", headers=h, timeout=30)
    assert refused.status_code == 401, refused.text
    assert httpx.get(f"{a.url}/v1/models", headers=h, timeout=30).status_code == 401


def test_an_article_written_through_one_replica_is_found_on_the_other(replicas) -> None:
    a, b, _ = replicas
    word = f"zorblax{uuid.uuid4().hex[:6]}"
    made = a.post("/v1/kb/articles", "knowledge_manager", json={
        "title": f"Resetting the {word} token", "status": "published",
        "body": f"To reset a {word} token, open Settings, choose Security and press Reset. The old token stops "
                "working at once.",
    })
    assert made.status_code == 201, made.text
    article_id = made.json()["id"]
    hits = b.get("/v1/kb/search", "helpdesk", params={"q": f"how do I reset my {word} token"})
    assert hits.status_code == 200, hits.text
    found = hits.json()
    assert found, "B found nothing"
    first = found[0]
    assert word in first["title"] and first["article_id"] == article_id

    # And the other way round, after B has cached its view of the index: B writes, A finds it.
    word2 = f"quuxle{uuid.uuid4().hex[:6]}"
    made = b.post("/v1/kb/articles", "knowledge_manager", json={
        "title": f"Exporting a {word2} report", "status": "published",
        "body": f"A {word2} report is exported from Reports, then Export, as CSV or PDF.",
    })
    assert made.status_code == 201, made.text
    hits = a.get("/v1/kb/search", "helpdesk", params={"q": f"export {word2} report"})
    assert hits.status_code == 200 and hits.json() and word2 in hits.json()[0]["title"]
    # Both replicas' indexes agree with the shared SQL tables.
    for rep in (a, b):
        ready = httpx.get(f"{rep.url}/readyz", timeout=60)
        assert ready.status_code == 200 and ready.json()["checks"]["kb_index"] == "ok", ready.text
