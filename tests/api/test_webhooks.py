"""Outbound webhooks and helpdesk write-back through the real HTTP stack, to a real local HTTP receiver.

The receiver is a threaded `http.server` on loopback standing in for a subscriber and for the Zendesk / Freshdesk
REST APIs; the service delivers from its durable outbox (api.webhooks) on its worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.settings import Settings
from api.webhooks import sign
from tests.api.conftest import start_api
from tests.routing.tiny_triage import TinyBundle


@dataclass
class Seen:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server that records requests and fails the first `fail_first` of them with 500.

    A request is answered after `delay` seconds (or what `delay_for` says for it); `in_flight` counts the requests
    received in full and not answered yet. A request counts as seen once its wait is over, whether or not the
    sender is still there to read the answer (a receiver acts on what it got).
    """

    fail_first: int = 0
    delay: float = 0.0
    delay_for: Callable[[Seen], float] | None = None
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                got = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer.lock:
                    outer.in_flight += 1
                wait = outer.delay_for(got) if outer.delay_for is not None else outer.delay
                if wait:
                    time.sleep(wait)
                with outer.lock:
                    outer.seen.append(got)
                    outer.in_flight -= 1
                    code = 500 if len(outer.seen) <= outer.fail_first else 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the sender is gone (killed): what it sent was still received

            do_POST = do_PUT = _any  # noqa: N815 - http.server's handler names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait(self, n: int, timeout: float = 20.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.seen) < n:
            time.sleep(0.05)
        return list(self.seen)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, webhook_allow_private=True, webhook_poll_seconds=0.1, webhook_backoff_base_seconds=0.1,
                    webhook_backoff_cap_seconds=0.5, webhook_lease_seconds=5, **kw)


@pytest.fixture()
def service(tmp_path: Path, tiny_bundle: TinyBundle, receiver: Receiver) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    # A file database: the worker needs a store that outlives a request (in-memory SQLite starts no worker).
    settings = _settings(tmp_path / "home", zendesk_url=receiver.url, zendesk_email="bot@example.com",
                         zendesk_api_token="zd-token-123", zendesk_group_ids={"Billing L2": 901},
                         freshdesk_url=receiver.url, freshdesk_api_key="fd-key-456")
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        yield app, client, keys
    finally:
        client.__exit__(None, None, None)


def _h(keys: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def _deliveries(client: Any, keys: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/webhooks/deliveries", params=params, headers=_h(keys, "admin"))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_decisions_are_signed_retried_and_keep_their_idempotency_key(service: Any, receiver: Receiver) -> None:
    app, client, keys = service
    receiver.fail_first = 2  # the subscriber is down for the first two attempts
    r = client.post("/v1/webhooks", json={"url": receiver.url + "/hook", "kinds": ["decision", "retriage"]},
                    headers=_h(keys, "admin"))
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    listed = client.get("/v1/webhooks", headers=_h(keys, "admin")).json()
    assert "secret" not in listed[0] and secret not in json.dumps(listed)

    ticket = {"ticket_id": "T-100", "subject": "Refund for a double charge", "body": "I was charged twice."}
    assert client.post("/v1/tickets/route", json=ticket, headers=_h(keys, "helpdesk")).status_code == 201
    assert client.post("/v1/tickets/route", json={**ticket, "body": "Charged twice, please refund"},
                       headers=_h(keys, "helpdesk")).status_code == 201  # a new payload: a re-triage
    seen = receiver.wait(4)
    ok = [s for s in seen[2:]]
    kinds = sorted(s.headers["x-deskpilot-event"] for s in ok)
    assert kinds == ["decision", "retriage"], [s.headers for s in seen]
    for s in seen:
        ts, sig = s.headers["x-deskpilot-timestamp"], s.headers["x-deskpilot-signature"]
        assert sig == sign(secret, ts, s.body)
        assert s.headers["idempotency-key"] == s.headers["x-deskpilot-delivery"] == s.json()["id"]
    # the two failed attempts were retries of these same deliveries, with the same keys
    keys_seen = [s.headers["idempotency-key"] for s in seen]
    assert len(set(keys_seen)) == 2 and len(keys_seen) == 4
    body = next(s for s in ok if s.headers["x-deskpilot-event"] == "decision").json()
    assert body["data"]["ticket_id"] == "T-100" and body["data"]["result"]["decision"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = _deliveries(client, keys, status="delivered")
        if len(log) == 2:
            break
        time.sleep(0.1)
    assert len(log) == 2
    assert sum(d["attempts"] for d in log) == 4
    assert all(a["status_code"] in (500, 200) for d in log for a in d["log"])


def test_subscription_input_is_checked(service: Any) -> None:
    _, client, keys = service
    bad_kind = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "kinds": ["everything"]},
                           headers=_h(keys, "admin"))
    assert bad_kind.status_code == 422 and "kinds" in bad_kind.json()["detail"]
    bad_scheme = client.post("/v1/webhooks", json={"url": "file:///etc/passwd", "kinds": ["decision"]},
                             headers=_h(keys, "admin"))
    assert bad_scheme.status_code == 422
    not_admin = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "kinds": ["decision"]},
                            headers=_h(keys, "helpdesk"))
    assert not_admin.status_code == 403
    assert client.delete("/v1/webhooks/999999", headers=_h(keys, "admin")).status_code == 404


def test_private_targets_refused_unless_allowed(tmp_path: Path, tiny_bundle: TinyBundle) -> None:
    settings = Settings(home=tmp_path / "h2")  # default: no private targets
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        r = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:8080/x", "kinds": ["decision"]},
                        headers=_h(keys, "admin"))
        assert r.status_code == 422 and "private" in r.json()["detail"]
    finally:
        client.__exit__(None, None, None)


def test_zendesk_ticket_is_routed_and_written_back(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    payload = {"ticket": {"id": 35436, "subject": "Invoice charged twice", "description": "Please refund the "
               "second charge on my card.", "priority": "high", "via": {"channel": "email"},
               "requester": {"name": "Anna de Vries", "email": "anna@example.com"}, "tags": ["vip"]}}
    r = client.post("/v1/inbound/zendesk", json=payload, headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["helpdesk"] == "zendesk" and out["external_id"] == "35436" and out["writeback"] is True
    assert out["decision"]["ticket_id"] == "zendesk-35436"
    seen = receiver.wait(1)
    put = seen[0]
    assert put.method == "PUT" and put.path == "/api/v2/tickets/35436.json"
    user, _, token = base64.b64decode(put.headers["authorization"].split()[1]).decode().partition(":")
    assert (user, token) == ("bot@example.com/token", "zd-token-123")
    ticket = put.json()["ticket"]
    assert "deskpilot" in ticket["additional_tags"]
    assert ticket["comment"]["public"] is False and out["decision"]["result"]["decision"] in ticket["comment"]["body"]
    # the same webhook again (Zendesk retries): the stored decision, and no second write-back
    again = client.post("/v1/inbound/zendesk", json=payload, headers=_h(keys, "helpdesk"))
    assert again.status_code == 200
    time.sleep(0.5)
    assert len(receiver.seen) == 1
    # nothing personal is stored in clear: the requester came in as a person field
    stored = client.get("/v1/tickets/zendesk-35436", headers=_h(keys, "helpdesk")).json()
    assert "anna@example.com" not in json.dumps(stored) and "Anna de Vries" not in json.dumps(stored)


def _zendesk_event(event_type: str, ticket_id: str) -> dict[str, Any]:
    """A Zendesk event-subscription webhook body as Zendesk documents it (developer.zendesk.com, webhooks, ticket
    events): the event envelope with the ticket in `detail` (its id a string) and the event's own fields in `event`."""
    return {
        "type": event_type, "account_id": 12514403, "id": "2b24ef10-19d4-4740-93cf-8f98ec4776c0",
        "time": "2026-12-06T10:00:00Z", "zendesk_event_version": "2022-11-06", "subject": f"zen:ticket:{ticket_id}",
        "detail": {"actor_id": "20978392", "assignee_id": None, "brand_id": "123", "created_at": "2026-12-06T10:00:00Z",
                   "description": "Please refund the second charge on my card.", "external_id": None,
                   "form_id": "6876543", "group_id": None, "id": ticket_id, "is_public": True,
                   "organization_id": None, "priority": "high", "requester_id": "20978392", "status": "NEW",
                   "subject": "Invoice charged twice", "submitter_id": "20978392", "tags": ["vip"],
                   "type": "QUESTION", "updated_at": "2026-12-06T10:00:00Z", "via": {"channel": "web_form"}},
        "event": {"meta": {"sequence": {"id": "CE4A698AF24F35B3208649C6951E000E", "position": 1, "total": 1}}},
    }


def test_zendesk_event_subscription_webhook_is_routed_and_written_back(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    r = client.post("/v1/inbound/zendesk", json=_zendesk_event("zen:event-type:ticket.created", "35437"),
                    headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text
    out = r.json()
    # the ticket's id from `detail`, not the event's id nor its "zen:ticket:..." subject
    assert out["external_id"] == "35437" and out["decision"]["ticket_id"] == "zendesk-35437"
    stored = client.get("/v1/tickets/zendesk-35437", headers=_h(keys, "helpdesk")).json()
    assert stored["subject"] == "Invoice charged twice" and stored["channel"] == "web_form"
    assert stored["priority"] == "high" and "refund" in stored["body"] and "vip" in stored["custom_fields"]["tags"]
    put = receiver.wait(1)[0]
    assert put.method == "PUT" and put.path == "/api/v2/tickets/35437.json"
    assert put.json()["ticket"]["comment"]["public"] is False
    # the same ticket in the trigger shape is the same ticket with the same payload: the stored decision
    d = _zendesk_event("zen:event-type:ticket.created", "35437")["detail"]
    trigger = {"ticket": {"id": 35437, "subject": d["subject"], "description": d["description"],
                          "priority": d["priority"], "tags": d["tags"], "via": d["via"],
                          "created_at": d["created_at"]}}
    again = client.post("/v1/inbound/zendesk", json=trigger, headers=_h(keys, "helpdesk"))
    assert again.status_code == 200, again.text
    assert again.json()["decision"]["decision_id"] == out["decision"]["decision_id"]
    assert again.json()["decision"]["replayed"] is True


def test_zendesk_events_other_than_ticket_created_are_refused(service: Any) -> None:
    _, client, keys = service
    r = client.post("/v1/inbound/zendesk", json=_zendesk_event("zen:event-type:ticket.status_changed", "35438"),
                    headers=_h(keys, "helpdesk"))
    assert r.status_code == 422 and "zen:event-type:ticket.created" in r.json()["detail"], r.text
    # nothing was routed under the ticket's id, nor under the event's
    assert client.get("/v1/tickets/zendesk-35438", headers=_h(keys, "helpdesk")).status_code == 404
    event_id = _zendesk_event("x", "1")["id"]
    assert client.get(f"/v1/tickets/zendesk-{event_id}", headers=_h(keys, "helpdesk")).status_code == 404


def test_freshdesk_automation_webhook_is_routed_and_written_back(service: Any, receiver: Receiver) -> None:
    _, client, keys = service
    payload = {"freshdesk_webhook": {"ticket_id": 77, "ticket_subject": "Cannot log in",
                                     "ticket_description": "My password reset link expired.",
                                     "ticket_source": "Portal", "ticket_priority": "Medium"}}
    r = client.post("/v1/inbound/freshdesk", json=payload, headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text
    seen = receiver.wait(2)
    by_path = {s.path: s for s in seen}
    assert set(by_path) == {"/api/v2/tickets/77", "/api/v2/tickets/77/notes"}
    assert by_path["/api/v2/tickets/77"].method == "PUT" and "deskpilot" in by_path["/api/v2/tickets/77"].json()["tags"]
    note = by_path["/api/v2/tickets/77/notes"].json()
    assert note["private"] is True and "deskpilot" in note["body"]
    user = base64.b64decode(seen[0].headers["authorization"].split()[1]).decode().split(":")[0]
    assert user == "fd-key-456"


def test_inbound_needs_a_key_and_json(service: Any) -> None:
    _, client, keys = service
    assert client.post("/v1/inbound/zendesk", json={"ticket": {"id": 1, "subject": "x"}}).status_code == 401
    r = client.post("/v1/inbound/zendesk", content=b"not json", headers={**_h(keys, "helpdesk"),
                                                                        "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/v1/inbound/freshdesk", json={"ticket": {"subject": "no id"}}, headers=_h(keys, "helpdesk"))
    assert r.status_code == 422 and "id" in r.json()["detail"]


def test_zendesk_signature_is_checked_when_a_secret_is_set(tmp_path: Path, tiny_bundle: TinyBundle) -> None:
    settings = _settings(tmp_path / "h3", zendesk_webhook_secret="whsec")
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        body = json.dumps({"ticket": {"id": 5, "subject": "Refund please", "description": "charged twice"}}).encode()
        h = {**_h(keys, "helpdesk"), "Content-Type": "application/json"}
        assert client.post("/v1/inbound/zendesk", content=body, headers=h).status_code == 401
        ts = "2026-12-06T10:00:00Z"
        sig = base64.b64encode(hmac.new(b"whsec", ts.encode() + body, hashlib.sha256).digest()).decode()
        ok = client.post("/v1/inbound/zendesk", content=body, headers={
            **h, "X-Zendesk-Webhook-Signature": sig, "X-Zendesk-Webhook-Signature-Timestamp": ts})
        assert ok.status_code == 201, ok.text
    finally:
        client.__exit__(None, None, None)


def _wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def _subscribe(client: Any, keys: dict[str, str], url: str, kinds: list[str]) -> tuple[int, str]:
    r = client.post("/v1/webhooks", json={"url": url, "kinds": kinds}, headers=_h(keys, "admin"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"]), str(r.json()["secret"])


def _kinds_logged(client: Any, keys: dict[str, str], subscription_id: int) -> list[str]:
    return sorted(d["kind"] for d in _deliveries(client, keys, subscription_id=subscription_id))


def _vendor_case(client: Any, keys: dict[str, str], i: int, t0: Any) -> None:
    from datetime import timedelta

    tid = f"V-{i}"
    r = client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": f"Refund {i}", "body": "charged twice"},
                    headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text
    for act, group, h in (("Ticket created", "L1", 0), ("Assign to team", "Billing", 1),
                          ("Escalate to vendor", "Vendor", 3), ("Resolved", "Billing", 8), ("Closed", "Billing", 9)):
        ev = {"activity": act, "group": group, "timestamp": (t0 + timedelta(hours=h)).isoformat()}
        assert client.post(f"/v1/tickets/{tid}/events", json=ev, headers=_h(keys, "helpdesk")).status_code == 201


def test_live_alerts_reach_alert_subscribers_only_once(tmp_path: Path, tiny_bundle: TinyBundle,
                                                       receiver: Receiver) -> None:
    """Mining the live store (joined with the history) raises alerts; `alert` subscribers get each once, signed, and
    a `decision` subscriber gets none of them (nor the alert subscriber a decision)."""
    from datetime import UTC, datetime, timedelta

    from tests.api.test_live_insight import _history_csv

    end = datetime(2026, 11, 30, 9, tzinfo=UTC)
    history = tmp_path / "history.csv"
    _history_csv(history, 160, end)  # a quiet baseline: the eight weeks before the recent window
    settings = _settings(tmp_path / "home", retrain_history_log=history, live_insight_seconds=0)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        alert_sub, alert_secret = _subscribe(client, keys, receiver.url + "/alerts", ["alert"])
        decision_sub, _ = _subscribe(client, keys, receiver.url + "/decisions", ["decision"])
        for i in range(25):  # the recent week: every case now takes a step the baseline never showed
            _vendor_case(client, keys, i, end - timedelta(days=6) + timedelta(hours=5 * i))
        res = client.post("/v1/insights/live/refresh", headers=_h(keys, "analyst"))
        assert res.status_code == 200, res.text
        published = res.json()["alerts_published"]
        assert published >= 1 and res.json()["history_cases"] == 160

        def at(path: str) -> list[Seen]:
            return [s for s in list(receiver.seen) if s.path == path]

        assert _wait_until(lambda: len(at("/alerts")) >= published and len(at("/decisions")) >= 25)
        alerts = at("/alerts")
        assert len(alerts) == published
        for s in alerts:
            assert s.headers["x-deskpilot-event"] == "alert"
            assert s.headers["x-deskpilot-signature"] == sign(alert_secret, s.headers["x-deskpilot-timestamp"], s.body)
            assert s.json()["data"]["severity"] in ("medium", "high")
        assert any(s.json()["data"]["kind"] == "new_activity" and "Escalate to vendor" in s.json()["data"]["title"]
                   for s in alerts)
        assert {s.headers["x-deskpilot-event"] for s in at("/decisions")} == {"decision"}
        # mined again (same window): the alerts are already stored, nothing is announced twice
        again = client.post("/v1/insights/live/refresh", headers=_h(keys, "analyst"))
        assert again.status_code == 200 and again.json()["alerts_published"] == 0
        # a later decision reaching its subscriber means the fan-out has read everything stored before it
        _vendor_case(client, keys, 99, end - timedelta(days=1))
        assert _wait_until(lambda: len(at("/decisions")) == 26)
        assert len(at("/alerts")) == published
        assert _kinds_logged(client, keys, alert_sub) == ["alert"] * published
        assert _kinds_logged(client, keys, decision_sub) == ["decision"] * 26
    finally:
        client.__exit__(None, None, None)


@pytest.mark.slow
def test_model_swaps_reach_model_swap_subscribers_only(tmp_path: Path, sim_small: Any,
                                                       receiver: Receiver) -> None:
    """A forced promotion and a rollback through the API are announced as `model_swap`, signed, to the
    subscription that asked for them, and not to a `decision` subscriber (which gets the decision only)."""
    from flows.training import train_all
    from insight.models.registry import ModelRegistry

    home = tmp_path / "home"
    reg = ModelRegistry(home / "registry")
    tickets = sim_small.tickets.iloc[:300]
    first = train_all(log=sim_small.log.filter_cases(tickets["case_id"]), tickets=tickets, registry=reg,
                      embedder=None, tasks=("intent",)).models[0]
    v1 = first.version
    v2 = reg.save(first.model, task="intent", metadata=reg.read_metadata("intent", v1).to_dict()).version
    app, client, keys = start_api(_settings(home), bundle_loader=None, decide=None)  # the registry's live models
    try:
        swap_sub, swap_secret = _subscribe(client, keys, receiver.url + "/swaps", ["model_swap"])
        decision_sub, _ = _subscribe(client, keys, receiver.url + "/decisions", ["decision"])
        r = client.post("/v1/tickets/route", json={"ticket_id": "S-1", "subject": "Refund", "body": "charged twice"},
                        headers=_h(keys, "helpdesk"))
        assert r.status_code == 201, r.text
        r = client.post("/v1/models/intent/promote", json={"version": v2, "reason": "swap test"},
                        headers=_h(keys, "admin"))
        assert r.status_code == 200, r.text
        r = client.post("/v1/models/intent/rollback", json={"reason": "back"}, headers=_h(keys, "admin"))
        assert r.status_code == 200 and r.json()["live"] == v1, r.text
        assert _wait_until(lambda: len(receiver.seen) >= 3)
        time.sleep(0.5)  # room for a wrong extra delivery to show up
        by_path: dict[str, list[Seen]] = {}
        for s in receiver.seen:
            by_path.setdefault(s.path, []).append(s)
        assert sorted(by_path) == ["/decisions", "/swaps"] and len(by_path["/decisions"]) == 1
        swaps = sorted(by_path["/swaps"], key=lambda s: s.json()["data"]["at"])
        assert [s.headers["x-deskpilot-event"] for s in swaps] == ["model_swap", "model_swap"]
        assert [(s.json()["data"]["action"], s.json()["data"]["object"]) for s in swaps] == [
            ("/v1/models/intent/promote", f"intent:{v1}->{v2}"), ("/v1/models/intent/rollback", f"intent:{v2}->{v1}")]
        for s in swaps:
            assert s.headers["x-deskpilot-signature"] == sign(swap_secret, s.headers["x-deskpilot-timestamp"], s.body)
        assert by_path["/decisions"][0].json()["data"]["ticket_id"] == "S-1"
        assert _kinds_logged(client, keys, swap_sub) == ["model_swap", "model_swap"]
        assert _kinds_logged(client, keys, decision_sub) == ["decision"]
    finally:
        client.__exit__(None, None, None)


def _event_identity(s: Seen) -> tuple[str, int]:
    """The stored event a delivery announces: (kind, id of its source row), whatever the delivery's own key."""
    body = s.json()
    data = body["data"]
    return body["kind"], int(data["feedback_id"] if body["kind"] == "correction" else data["decision_id"])


@pytest.mark.slow
def test_kill9_mid_delivery_loses_no_event_and_repeats_keep_their_key(tmp_path: Path, sim_small: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL `deskpilot serve` while tickets are being routed and a delivery is in flight at a live receiver
    (some answer slowly): after a restart every acknowledged event (decisions, re-triages, corrections) arrives,
    and an event that arrives twice carries the same idempotency key both times."""
    from bench.durability import ADMIN_KEY, Server, free_port, train_registry

    registry = tmp_path / "registry"
    train_registry(registry, sim=sim_small)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(registry, home / "registry")
    for k, v in {"DESKPILOT_WEBHOOK_ALLOW_PRIVATE": "true", "DESKPILOT_WEBHOOK_POLL_SECONDS": "0.1",
                 "DESKPILOT_WEBHOOK_LEASE_SECONDS": "2", "DESKPILOT_WEBHOOK_MAX_ATTEMPTS": "100000",
                 "DESKPILOT_LIVE_INSIGHT_SECONDS": "0"}.items():
        monkeypatch.setenv(k, v)
    # a quarter of the deliveries (chosen by key, so a repeat is as slow) take a while to be answered
    receiver = Receiver(delay_for=lambda s: 0.6 if int(s.headers["idempotency-key"][:2], 16) % 4 == 0 else 0.0)
    receiver.start()
    server = Server(home, None, home / "serve.log")
    server.start()
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    acked: set[tuple[str, int]] = set()
    lock = threading.Lock()
    done, stop = threading.Event(), threading.Event()
    n_tickets = 60

    def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One write, retried on the restarted server until answered (a route is idempotent by ticket id)."""
        while not stop.is_set():
            try:
                r = httpx.request(method, server.url + path, json=body, headers=h, timeout=30)
                assert r.status_code in (200, 201), r.text
                return dict(r.json())
            except httpx.HTTPError:
                time.sleep(0.2)  # killed: wait for the restart
        raise RuntimeError("the test ended")

    def writer() -> None:
        intent = None
        for i in range(n_tickets):
            t = {"ticket_id": f"K-{i}", "subject": f"Refund request {i}", "body": "I was charged twice, refund."}
            out = call("POST", "/v1/tickets/route", t)
            intent = intent or out["result"]["intent"]
            with lock:
                acked.add(("decision", int(out["decision_id"])))
            if i % 3 == 0:  # a new payload: a re-triage
                out = call("POST", "/v1/tickets/route", {**t, "body": "Charged twice again, please refund now."})
                assert out["trigger"] != "route", out
                with lock:
                    acked.add(("retriage", int(out["decision_id"])))
            if i % 4 == 1 and intent:  # an agent's correction
                fb = call("POST", f"/v1/tickets/K-{i}/feedback", {"corrected_intent": intent})
                with lock:
                    acked.add(("correction", int(fb["id"])))
            time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    try:
        r = httpx.post(f"{server.url}/v1/webhooks", json={"url": receiver.url + "/hook",
                                                          "kinds": ["decision", "retriage", "correction"]},
                       headers=h, timeout=30)
        assert r.status_code == 201, r.text
        thread.start()
        # kill once deliveries have succeeded and one is inside the receiver, while tickets are still coming in
        assert _wait_until(lambda: len(receiver.seen) >= 5 and receiver.in_flight >= 1, timeout=120)
        in_flight_at_kill = receiver.in_flight
        with lock:
            acked_before_kill = len(acked)
        assert not done.is_set(), "the writes ended before the kill: nothing was mid-stream"
        server.kill()
        with receiver.lock:  # nothing arrives until the restart
            arrived_before_kill = len(receiver.seen) + receiver.in_flight
        server.port = free_port()
        server.url = f"http://127.0.0.1:{server.port}"
        server.start()
        thread.join(300)
        assert done.is_set()

        def drained() -> bool:
            seen = {_event_identity(s) for s in list(receiver.seen)}
            if not acked <= seen:
                return False
            pending = httpx.get(f"{server.url}/v1/webhooks/deliveries", params={"status": "pending"}, headers=h,
                                timeout=30)
            return pending.status_code == 200 and pending.json() == []

        assert _wait_until(drained, timeout=180), sorted(acked - {_event_identity(s) for s in receiver.seen})
        keys_by_event: dict[tuple[str, int], list[str]] = {}
        for s in list(receiver.seen):
            keys_by_event.setdefault(_event_identity(s), []).append(s.headers["idempotency-key"])
        missing = acked - set(keys_by_event)
        repeated = {e: k for e, k in keys_by_event.items() if len(k) > 1}
        duplicates = sum(len(k) - 1 for k in keys_by_event.values())
        kinds = sorted({e[0] for e in keys_by_event})
        print(f"\nkill -9 webhooks: {len(acked)} events acknowledged ({acked_before_kill} before the kill), "
              f"{len(receiver.seen)} deliveries received ({arrived_before_kill} before the kill, "
              f"{in_flight_at_kill} in flight at it), {len(missing)} lost, {duplicates} duplicates, kinds {kinds}")
        assert not missing, sorted(missing)
        assert kinds == ["correction", "decision", "retriage"]
        assert all(len(set(k)) == 1 for k in repeated.values()), repeated  # a repeat is the same delivery
        assert len({k[0] for k in keys_by_event.values()}) == len(keys_by_event)  # one key per event
        # One worker sends one delivery at a time: only the attempt the kill interrupted is sent again. The receiver
        # got it in full (it was in flight), the server never learnt the outcome, so it is repeated exactly once.
        assert duplicates == in_flight_at_kill == 1, repeated
        failed = httpx.get(f"{server.url}/v1/webhooks/deliveries", params={"status": "failed"}, headers=h,
                           timeout=30)
        assert failed.status_code == 200 and failed.json() == []
    finally:
        stop.set()
        server.stop()
        receiver.stop()
