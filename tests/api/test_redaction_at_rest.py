"""Personal data is redacted before it is stored: the database file never holds the raw values (default settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings
from tests.api.conftest import Api, new_id, start_api

EMAIL, PHONE, CARD = "jane.doe@example.com", "+31 6 12345678", "4111 1111 1111 1111"
IBAN, IP = "DE89370400440532013000", "192.168.10.254"
# Whole values and their digit runs (short fragments like "4111" also turn up in hex hashes and timestamps).
RAW = (EMAIL, PHONE, CARD, IBAN, IP, "jane.doe@", "6 12345678", "4111111111111111", "4111 1111 1111")


def _exercise(api: Api) -> str:
    tid = new_id("PII")
    r = api.client.post("/v1/tickets/route", headers=api.h("helpdesk"), json={
        "ticket_id": tid, "subject": f"Refund to {IBAN} please",
        "body": f"Charged twice, card {CARD}. Reach me at {EMAIL} or {PHONE}; my router is {IP}.",
        "custom_fields": {"contact": EMAIL, "order": "55120"}})
    assert r.status_code == 201, r.text
    r = api.client.post(f"/v1/tickets/{tid}/events", headers=api.h("helpdesk"), json={
        "activity": "Customer reply", "author_type": "customer", "message": f"call me on {PHONE}",
        "payload": {"from": EMAIL, "nested": [{"ip": IP}]}})
    assert r.status_code == 201, r.text
    r = api.client.post(f"/v1/tickets/{tid}/feedback", headers=api.h("agent"),
                        json={"comment": f"customer {EMAIL} confirmed", "accepted": ["draft"]})
    assert r.status_code == 201, r.text
    return tid


@pytest.fixture()
def file_api(tmp_path: Path, tiny_bundle):  # type: ignore[no-untyped-def]
    def make(**kw):  # type: ignore[no-untyped-def]
        settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **kw)
        app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
        made.append(client)
        return Api(app=app, client=client, keys=keys), tmp_path / "db.sqlite"

    made: list = []
    yield make
    for c in made:
        c.__exit__(None, None, None)


def test_nothing_raw_reaches_the_database(file_api) -> None:  # type: ignore[no-untyped-def]
    api, db = file_api()
    tid = _exercise(api)
    ticket = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent")).json()
    assert ticket["subject"] == "Refund to [IBAN] please"
    assert ticket["body"] == "Charged twice, card [CARD]. Reach me at [EMAIL] or [PHONE]; my router is [IP]."
    # a field named for a person holds the install's keyed token, other fields their redacted text
    assert ticket["custom_fields"]["contact"].startswith("con_") and ticket["custom_fields"]["order"] == "55120"
    events = api.client.get(f"/v1/tickets/{tid}/events", headers=api.h("agent")).json()
    assert events[-1]["message"] == "call me on [PHONE]"
    assert events[-1]["payload"] == {"from": "[EMAIL]", "nested": [{"ip": "[IP]"}]}
    assert api.app.state.audit_writer.flush()
    api.client.__exit__(None, None, None)  # flush everything to the file
    data = db.read_bytes()
    for wal in db.parent.glob("db.sqlite-*"):
        data += wal.read_bytes()
    leaked = [v for v in RAW if v.encode() in data]
    assert not leaked, leaked


def test_raw_text_is_kept_only_when_asked(file_api) -> None:  # type: ignore[no-untyped-def]
    api, _ = file_api(store_raw_text=True)
    tid = _exercise(api)
    ticket = api.client.get(f"/v1/tickets/{tid}", headers=api.h("agent")).json()
    assert EMAIL in ticket["body"] and CARD in ticket["body"]
