"""Knowledge hub through the HTTP stack: embedded chroma, and a real `chroma run` server on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from knowledge_hub.index import open_index
from tests.api.conftest import Api, start_api

REFUND = {"title": "Refund a double charge", "body": "# Double charge\nIf a customer was charged twice, refund the "
          "duplicate payment from the billing console within 24 hours.", "intents": ["billing"], "tags": ["payments"]}
RESET = {"title": "Reset a password", "body": "# Password reset\nSend the reset link; if the login stays locked, "
         "clear the lockout in the admin panel.", "intents": ["password"], "tags": ["account"], "status": "published"}


def _titles(api: Api, q: str, **params: str) -> list[str]:
    r = api.client.get("/v1/kb/search", params={"q": q, **params}, headers=api.h("agent"))
    assert r.status_code == 200, r.text
    return [h["title"] for h in r.json()]


def run_kb_flow(api: Api) -> None:
    """Create, publish, edit, import, filter, restore, archive, delete, and check the very next search each time."""
    km = api.h("knowledge_manager")
    r = api.client.post("/v1/kb/articles", json=REFUND, headers=km)
    assert r.status_code == 201, r.text
    art = r.json()
    aid = art["id"]
    assert art["status"] == "draft" and art["version"] == 1 and art["author"].startswith("knowledge_manager-")
    assert "Refund a double charge" not in _titles(api, "I was charged twice, refund please")  # drafts not indexed
    assert api.client.post(f"/v1/kb/articles/{aid}/publish", headers=km).json()["status"] == "published"
    assert _titles(api, "I was charged twice, refund please")[0] == "Refund a double charge"

    edit = api.client.patch(f"/v1/kb/articles/{aid}", json={"body": "# Double charge\nEscalate duplicate payments "
                                                             "to the finance team."}, headers=km)
    assert edit.status_code == 200 and edit.json()["version"] == 2
    hit = api.client.get("/v1/kb/search", params={"q": "duplicate payment", "k": 1}, headers=api.h("agent")).json()[0]
    assert hit["article_id"] == aid and hit["version"] == 2 and "finance team" in hit["text"]
    stale = api.client.patch(f"/v1/kb/articles/{aid}", params={"expected_version": 1}, json={"title": "x"},
                             headers=km)
    assert stale.status_code == 409 and stale.json()["code"] == "conflict"

    imp = api.client.post("/v1/kb/import", json={"articles": [RESET]}, headers=km)
    assert imp.status_code == 201 and len(imp.json()["created"]) == 1 and imp.json()["index_stale"] == []
    assert _titles(api, "cannot login, locked out", intent="password") == ["Reset a password"]
    assert "Reset a password" not in _titles(api, "cannot login, locked out", intent="billing")

    versions = api.client.get(f"/v1/kb/articles/{aid}/versions", headers=api.h("agent")).json()
    assert [v["version"] for v in versions] == [1, 2]
    restored = api.client.post(f"/v1/kb/articles/{aid}/versions/1/restore", headers=km).json()
    assert restored["version"] == 3 and "24 hours" in restored["body"]

    assert api.client.post(f"/v1/kb/articles/{aid}/archive", headers=km).json()["status"] == "archived"
    assert "Refund a double charge" not in _titles(api, "I was charged twice, refund please")
    listed = api.client.get("/v1/kb/articles", params={"status": "archived"}, headers=api.h("analyst")).json()
    assert [a["id"] for a in listed] == [aid]
    cons = api.client.get("/v1/kb/consistency", headers=km).json()
    assert cons["ok"] is True and cons["published"] == 1

    assert api.client.delete(f"/v1/kb/articles/{aid}", headers=km).status_code == 204
    gone = api.client.get(f"/v1/kb/articles/{aid}", headers=api.h("agent"))
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"

    # roles and validation
    assert api.client.post("/v1/kb/articles", json=REFUND, headers=api.h("agent")).status_code == 403
    bad = api.client.post("/v1/kb/articles", json={**REFUND, "title": ""}, headers=km)
    assert bad.status_code == 422 and "title" in bad.json()["detail"]
    bad_imp = api.client.post("/v1/kb/import", json={"articles": [RESET, {"body": "no title"}]}, headers=km)
    assert bad_imp.status_code == 422 and "articles.1.title" in bad_imp.json()["detail"]
    assert len(api.client.get("/v1/kb/articles", headers=km).json()) == 1  # the refused import stored nothing


def test_kb_without_index_answers_503(api: Api):
    r = api.client.get("/v1/kb/search", params={"q": "refund"}, headers=api.h("agent"))
    assert r.status_code == 503 and r.json()["code"] == "index_unavailable"


def test_kb_embedded_chroma_publish_search_archive(tmp_path, tiny_bundle, embedder):
    # The full flow runs through the chroma server below; here the default embedded store, briefly.
    settings = Settings(home=tmp_path, database_url="sqlite://")
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle,
                                  open_kb_index=lambda s, e: open_index(settings=s, embedder=e), embedder=embedder)
    api = Api(app=app, client=client, keys=keys)
    try:
        km = api.h("knowledge_manager")
        aid = client.post("/v1/kb/articles", json={**REFUND, "status": "published"}, headers=km).json()["id"]
        assert _titles(api, "I was charged twice, refund please")[0] == "Refund a double charge"
        assert client.post(f"/v1/kb/articles/{aid}/archive", headers=km).status_code == 200
        assert _titles(api, "I was charged twice, refund please") == []
        assert (tmp_path / "chroma").is_dir()
    finally:
        client.__exit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def chroma_server(tmp_path: Path) -> Iterator[str]:
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "chroma"
    cli = str(exe) if exe.is_file() else shutil.which("chroma")
    if cli is None:
        pytest.skip("the `chroma` CLI is not installed (pip install chromadb); chroma-server mode not tested")
    port = _free_port()
    log = (tmp_path / "chroma.log").open("w")
    proc = subprocess.Popen([cli, "run", "--host", "127.0.0.1", "--port", str(port), "--path",
                             str(tmp_path / "chroma-server")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma server exited with {proc.returncode}: {(tmp_path / 'chroma.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma server did not answer its heartbeat within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_kb_flow_through_a_chroma_server(tmp_path, tiny_bundle, embedder, chroma_server):
    settings = Settings(home=tmp_path, database_url="sqlite://", chroma_url=chroma_server)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle,
                                  open_kb_index=lambda s, e: open_index(settings=s, embedder=e), embedder=embedder)
    try:
        assert app.state.kb_index.url == chroma_server
        run_kb_flow(Api(app=app, client=client, keys=keys))
        assert not (tmp_path / "chroma").exists()  # nothing went to an embedded store
        ready = client.get("/readyz").json()
        assert ready["checks"]["kb_index"] == "ok"
    finally:
        client.__exit__(None, None, None)


def _embedded_api(tmp_path, tiny_bundle, embedder, **settings_kw) -> Api:
    settings = Settings(home=tmp_path, database_url="sqlite://", **settings_kw)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle,
                                  open_kb_index=lambda s, e: open_index(settings=s, embedder=e, role="server"),
                                  embedder=embedder)
    return Api(app=app, client=client, keys=keys)


def test_readiness_fails_while_the_index_disagrees_with_sql(tmp_path, tiny_bundle, embedder):
    api = _embedded_api(tmp_path, tiny_bundle, embedder)
    try:
        km = api.h("knowledge_manager")
        aid = api.client.post("/v1/kb/articles", json={**REFUND, "status": "published"}, headers=km).json()["id"]
        api.client.post("/v1/kb/import", json={"articles": [RESET]}, headers=km)
        ready = api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["kb_index"] == "ok"
        # Another writer puts other text under the article's id and version (what a second database did).
        api.app.state.kb_index.upsert_article(article_id=aid, version=1, title="Refund a double charge",
                                              body="Refunds are never possible.", intents=[], tags=[])
        ready = api.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "unavailable"
        assert f"altered [{aid}]" in ready.json()["detail"] and "kb check --repair" in ready.json()["detail"]
        cons = api.client.get("/v1/kb/consistency", headers=km).json()
        assert cons["ok"] is False and cons["altered"] == [aid]
        fixed = api.client.post("/v1/kb/consistency/repair", headers=km).json()
        assert fixed["repaired"] == [aid]
        assert api.client.get("/readyz").status_code == 200
        assert "24 hours" in api.client.get("/v1/kb/search", params={"q": "charged twice", "k": 1},
                                            headers=api.h("agent")).json()[0]["text"]
        # A reindex through the API re-embeds everything and stays consistent.
        re = api.client.post("/v1/kb/reindex", headers=km).json()
        assert sorted(re["repaired"]) == sorted([aid, aid + 1]) and re["failed"] == []
        assert api.client.get("/readyz").status_code == 200
    finally:
        api.client.__exit__(None, None, None)


def test_readiness_allows_a_pending_write_until_its_grace_runs_out(tmp_path, tiny_bundle, embedder):
    from sqlalchemy import text

    api = _embedded_api(tmp_path, tiny_bundle, embedder, kb_stale_grace_seconds=3600)
    try:
        km = api.h("knowledge_manager")
        aid = api.client.post("/v1/kb/articles", json={**REFUND, "status": "published"}, headers=km).json()["id"]
        with api.app.state.engine.begin() as conn:  # the state between a committed edit and its index write
            conn.execute(text("UPDATE kb_article SET index_stale = :t, version = 2 WHERE id = :i"),
                         {"t": True, "i": aid})
        assert api.client.get("/readyz").status_code == 200
        api.app.state.settings.kb_stale_grace_seconds = 0
        late = api.client.get("/readyz")
        assert late.status_code == 503 and f"[{aid}]" in late.json()["detail"]
    finally:
        api.client.__exit__(None, None, None)


def test_an_article_body_over_the_limit_is_refused_naming_it(tmp_path, tiny_bundle, embedder):
    api = _embedded_api(tmp_path, tiny_bundle, embedder, kb_max_body_chars=1000)
    try:
        km = api.h("knowledge_manager")
        long = "Refund the duplicate payment. " * 40  # 1,200 characters
        r = api.client.post("/v1/kb/articles", json={**REFUND, "body": long, "status": "published"}, headers=km)
        assert r.status_code == 422 and "1,000" in r.json()["detail"] and "KB_MAX_BODY_CHARS" in r.json()["detail"]
        aid = api.client.post("/v1/kb/articles", json=REFUND, headers=km).json()["id"]
        r = api.client.patch(f"/v1/kb/articles/{aid}", json={"body": long}, headers=km)
        assert r.status_code == 422 and r.json()["detail"].startswith("body: 1,200 characters")
        r = api.client.post("/v1/kb/import", json={"articles": [RESET, {**RESET, "body": long}]}, headers=km)
        assert r.status_code == 422 and r.json()["detail"].startswith("articles.1.body")
        assert len(api.client.get("/v1/kb/articles", headers=km).json()) == 1  # nothing of the refused import
        imp = api.client.post("/v1/kb/import", json={"articles": [{**RESET, "author": "help-centre"}]}, headers=km)
        assert imp.status_code == 201
        got = api.client.get(f"/v1/kb/articles/{imp.json()['created'][0]}", headers=km).json()
        assert got["author"] == "help-centre"
    finally:
        api.client.__exit__(None, None, None)
