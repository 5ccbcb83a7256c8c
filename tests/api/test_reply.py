"""Replies to the customer (POST /v1/tickets/{id}/reply) through the real HTTP stack, delivered from the durable
outbox to a real local HTTP receiver standing in for a `reply` subscriber and for the Zendesk / Freshdesk APIs."""

from __future__ import annotations

import base64
import html
import time
from typing import Any

from api.webhooks import sign
from tests.api import test_webhooks as wh
from tests.api.test_webhooks import Receiver, Seen, _h, _subscribe, _wait_until

# The webhook tests' fixtures: a threaded local HTTP receiver, and the app (a file database, so the webhook worker
# runs) with Zendesk and Freshdesk write-back pointed at that receiver.
receiver = wh.receiver
service = wh.service

PII_REPLY = ("Hello, we refunded the second charge. Questions? Write to anna.devries@example.com or call "
             "+31 6 12345678.\nKind regards")


def _at(receiver: Receiver, path: str) -> list[Seen]:
    return [s for s in list(receiver.seen) if s.path == path]


def _route(client: Any, keys: dict[str, str], ticket_id: str) -> None:
    r = client.post("/v1/tickets/route", json={"ticket_id": ticket_id, "subject": "Refund for a double charge",
                                               "body": "I was charged twice."}, headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text


def _state(client: Any, keys: dict[str, str], ticket_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/tickets/{ticket_id}/replies", headers=_h(keys, "agent"))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_reply_reaches_reply_subscribers_signed_redacted_and_once(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    reply_sub, secret = _subscribe(client, keys, receiver.url + "/replies", ["reply"])
    _subscribe(client, keys, receiver.url + "/decisions", ["decision"])
    _route(client, keys, "R-1")
    r = client.post("/v1/tickets/R-1/reply", json={"text": PII_REPLY, "edited": True},
                    headers={**_h(keys, "agent"), "Idempotency-Key": "send-R-1-a"})
    assert r.status_code == 201, r.text
    out = r.json()
    # stored redacted: the answer, the subscriber and the stored row never hold the customer's address or phone
    assert "anna.devries@example.com" not in r.text and "12345678" not in r.text
    assert "[EMAIL]" in out["text"] and "[PHONE]" in out["text"] and out["text"].startswith("Hello, we refunded")
    assert out["helpdesk"] is None and out["external_id"] == "R-1" and out["by"].startswith("agent-")
    assert [(d["target"], d["kind"], d["status"]) for d in out["deliveries"]] == [(f"sub:{reply_sub}", "reply",
                                                                                  "pending")]
    assert out["state"] == "pending"

    assert _wait_until(lambda: _at(receiver, "/replies"))
    got = _at(receiver, "/replies")[0]
    assert got.method == "POST" and got.headers["x-deskpilot-event"] == "reply"
    assert got.headers["x-deskpilot-signature"] == sign(secret, got.headers["x-deskpilot-timestamp"], got.body)
    body = got.json()
    assert body["kind"] == "reply" and body["id"] == got.headers["idempotency-key"]
    data = body["data"]
    assert (data["ticket_id"], data["external_id"], data["reply_id"], data["by"]) == ("R-1", "R-1", out["id"],
                                                                                        out["by"])
    assert data["text"] == out["text"] and data["edited"] is True
    assert b"anna.devries@example.com" not in got.body and b"12345678" not in got.body

    # the same send again (a client retrying after a lost answer): the stored reply, nothing sent twice
    again = client.post("/v1/tickets/R-1/reply", json={"text": PII_REPLY, "edited": True},
                        headers={**_h(keys, "agent"), "Idempotency-Key": "send-R-1-a"})
    assert again.status_code == 200 and again.json()["replayed"] is True and again.json()["id"] == out["id"]
    reused = client.post("/v1/tickets/R-1/reply", json={"text": "Something else"},
                         headers={**_h(keys, "agent"), "Idempotency-Key": "send-R-1-a"})
    assert reused.status_code == 409, reused.text
    assert _wait_until(lambda: [x["state"] for x in _state(client, keys, "R-1")] == ["delivered"])
    time.sleep(0.5)  # room for a wrong second delivery to show up
    assert len(_at(receiver, "/replies")) == 1
    # a `decision` subscriber gets the decision, not the reply
    assert [s.headers["x-deskpilot-event"] for s in _at(receiver, "/decisions")] == ["decision"]
    listed = _state(client, keys, "R-1")
    assert len(listed) == 1 and listed[0]["deliveries"][0]["attempts"] == 1
    assert listed[0]["deliveries"][0]["last_status"] == 200


def test_reply_to_helpdesk_tickets_is_written_back_as_a_public_reply(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    zd = {"ticket": {"id": 35500, "subject": "Invoice charged twice", "description": "Please refund it."}}
    assert client.post("/v1/inbound/zendesk", json=zd, headers=_h(keys, "helpdesk")).status_code == 201
    fd = {"freshdesk_webhook": {"ticket_id": 78, "ticket_subject": "Cannot log in",
                                "ticket_description": "My reset link expired."}}
    assert client.post("/v1/inbound/freshdesk", json=fd, headers=_h(keys, "helpdesk")).status_code == 201
    assert _wait_until(lambda: len(receiver.seen) >= 3)  # the decisions' write-backs (Zendesk 1, Freshdesk 2)
    decisions = len(receiver.seen)

    r = client.post("/v1/tickets/zendesk-35500/reply", json={"text": PII_REPLY}, headers=_h(keys, "agent"))
    assert r.status_code == 201, r.text
    assert r.json()["helpdesk"] == "zendesk" and r.json()["external_id"] == "35500"
    assert [(d["target"], d["kind"]) for d in r.json()["deliveries"]] == [("zendesk", "reply_writeback")]
    f = client.post("/v1/tickets/freshdesk-78/reply", json={"text": "Use the new link <below>.\nThanks"},
                    headers=_h(keys, "agent"))
    assert f.status_code == 201, f.text
    assert _wait_until(lambda: len(receiver.seen) >= decisions + 2)
    time.sleep(0.5)
    replies = receiver.seen[decisions:]
    assert len(replies) == 2
    put = next(s for s in replies if s.path == "/api/v2/tickets/35500.json")
    assert put.method == "PUT"
    comment = put.json()["ticket"]["comment"]
    assert comment["public"] is True and comment["body"] == r.json()["text"] and "[EMAIL]" in comment["body"]
    assert set(put.json()["ticket"]) == {"comment"}  # the reply touches nothing else on the ticket
    user, _, token = base64.b64decode(put.headers["authorization"].split()[1]).decode().partition(":")
    assert (user, token) == ("bot@example.com/token", "zd-token-123")
    post = next(s for s in replies if s.path == "/api/v2/tickets/78/reply")
    assert post.method == "POST"
    assert post.json() == {"body": html.escape("Use the new link <below>.") + "<br>Thanks"}
    assert base64.b64decode(post.headers["authorization"].split()[1]).decode().split(":")[0] == "fd-key-456"
    def both_delivered() -> bool:
        return all([x["state"] for x in _state(client, keys, t)] == ["delivered"]
                   for t in ("zendesk-35500", "freshdesk-78"))

    assert _wait_until(both_delivered)


def test_reply_without_a_subscriber_or_write_back_is_stored_not_sent(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    _route(client, keys, "R-2")
    r = client.post("/v1/tickets/R-2/reply", json={"text": "Done."}, headers=_h(keys, "agent"))
    assert r.status_code == 201 and r.json()["state"] == "not_sent" and r.json()["deliveries"] == []
    nul = client.post("/v1/tickets/R-2/reply", json={"text": "\x00"}, headers=_h(keys, "agent"))
    assert nul.status_code == 201 and nul.json()["text"] == "\ufffd"  # text the schema accepts is stored
    time.sleep(0.5)
    assert receiver.seen == []


def test_reply_is_refused_without_the_agent_role_or_a_ticket(service: Any) -> None:
    _, client, keys = service
    _route(client, keys, "R-3")
    for role in ("helpdesk", "analyst", "knowledge_manager"):
        r = client.post("/v1/tickets/R-3/reply", json={"text": "Hello"}, headers=_h(keys, role))
        assert r.status_code == 403, (role, r.text)
    assert client.post("/v1/tickets/R-3/reply", json={"text": "Hello"}).status_code == 401
    assert client.post("/v1/tickets/NOPE/reply", json={"text": "Hello"}, headers=_h(keys, "agent")).status_code == 404
    for bad in ({"text": "   "}, {"text": ""}, {}, {"text": "Hi", "extra": 1}, {"text": "x" * 20_001}):
        r = client.post("/v1/tickets/R-3/reply", json=bad, headers=_h(keys, "agent"))
        assert r.status_code == 422, (bad, r.text)
    assert _state(client, keys, "R-3") == []
    # the refusals and the write are in the audit log, the write naming the reply
    ok = client.post("/v1/tickets/R-3/reply", json={"text": "Hello"}, headers=_h(keys, "agent"))
    assert ok.status_code == 201
    audit = client.get("/v1/audit", params={"path_prefix": "/v1/tickets/R-3/reply"}, headers=_h(keys, "admin"))
    assert audit.status_code == 200, audit.text
    rows = audit.json()["items"]
    statuses = sorted(row["status"] for row in rows)
    assert statuses.count(403) == 3 and statuses.count(201) == 1
    assert any(row["object_id"] == f"R-3/reply/{ok.json()['id']}" for row in rows)


def test_openapi_documents_the_reply_route(service: Any) -> None:
    _, client, _ = service
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/tickets/{ticket_id}/reply"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReplyIn")
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReplyPublic")
    assert "200" in post["responses"] and "403" in post["responses"]
    assert any(p["name"].lower() == "idempotency-key" and p["in"] == "header" for p in post["parameters"])
    assert set(spec["components"]["schemas"]["ReplyIn"]["properties"]) == {"text", "article_id", "edited"}
    replies = spec["paths"]["/v1/tickets/{ticket_id}/replies"]["get"]
    assert replies["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith(
        "/ReplyPublic")
    kinds = spec["components"]["schemas"]["SubscriptionIn"]["properties"]["kinds"]["items"]["enum"]
    assert "reply" in kinds
