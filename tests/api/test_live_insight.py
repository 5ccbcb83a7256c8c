"""Live insight: the service mines its own event store incrementally, through the real HTTP stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api.settings import Settings
from tests.api.conftest import start_api
from tests.routing.tiny_triage import TinyBundle


def _h(keys: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def _case(client: Any, keys: dict[str, str], i: int, *, bounce: bool, t0: datetime) -> int:
    tid = f"L-{i}"
    r = client.post("/v1/tickets/route", json={"ticket_id": tid, "subject": f"Refund {i}", "body": "charged twice"},
                    headers=_h(keys, "helpdesk"))
    assert r.status_code == 201, r.text
    steps = [("Ticket created", "L1", 0), ("Assign to team", "Tech" if bounce else "Billing", 1)]
    if bounce:
        steps += [("Reassign", "Billing", 5)]
    steps += [("Resolved", "Billing", 8), ("Closed", "Billing", 9)]
    for act, group, h in steps:
        ev = {"activity": act, "group": group, "timestamp": (t0 + timedelta(hours=h)).isoformat()}
        assert client.post(f"/v1/tickets/{tid}/events", json=ev, headers=_h(keys, "helpdesk")).status_code == 201
    return len(steps)


def test_live_store_is_mined_incrementally(tmp_path: Path, tiny_bundle: TinyBundle) -> None:
    settings = Settings(home=tmp_path / "home", live_insight_seconds=0, webhooks_enabled=False)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        empty = client.get("/v1/insights/live", headers=_h(keys, "analyst"))
        assert empty.status_code == 200 and empty.json()["n_cases"] == 0  # a fresh home: empty, not an error
        assert client.post("/v1/insights/live/refresh", headers=_h(keys, "helpdesk")).status_code == 403
        t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
        n = sum(_case(client, keys, i, bounce=i % 3 == 0, t0=t0 + timedelta(hours=3 * i)) for i in range(12))
        first = client.post("/v1/insights/live/refresh", headers=_h(keys, "analyst"))
        assert first.status_code == 200, first.text
        assert first.json()["new_events"] == n and first.json()["cases"] == 12
        rep = client.get("/v1/insights/live", headers=_h(keys, "analyst")).json()
        assert rep["n_cases"] == 12 and rep["n_events"] == n
        # the four planted misroutes (Tech first, Billing resolves) show up as avoidable routing
        assert rep["misrouting"]["reassigned_cases"] == 4
        assert any("Avoidable routing" in h for h in rep["headlines"])
        more = _case(client, keys, 99, bounce=False, t0=t0 + timedelta(days=3))
        second = client.post("/v1/insights/live/refresh", headers=_h(keys, "analyst")).json()
        assert second["new_events"] == more and second["events"] == n + more and second["cases"] == 13
    finally:
        client.__exit__(None, None, None)
