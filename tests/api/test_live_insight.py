"""Live insight: the service mines its own event store incrementally, through the real HTTP stack."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

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


def _wait(predicate: Any, timeout: float = 20.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_scheduler_mines_new_events_on_its_own_and_skips_when_nothing_is_new(tmp_path: Path,
                                                                            tiny_bundle: TinyBundle) -> None:
    # A file database: the schedule runs only where the store outlives a request.
    settings = Settings(home=tmp_path / "home", live_insight_seconds=0.3, webhooks_enabled=False)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        schedulers = [t for t in threading.enumerate() if t.name == "deskpilot-live-insight"]
        assert len(schedulers) == 1 and schedulers[0].is_alive()
        t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
        n = sum(_case(client, keys, i, bounce=i == 0, t0=t0 + timedelta(hours=3 * i)) for i in range(3))

        def report() -> dict[str, Any]:
            r = client.get("/v1/insights/live", headers=_h(keys, "analyst"))
            assert r.status_code == 200, r.text
            return dict(r.json())

        # no POST .../refresh anywhere in this test: the schedule mines what was stored (a round may fall between
        # two events of one ticket; the next round mines the rest, so wait for every event, not for every case)
        rep = _wait(lambda: (lambda r: r if r["n_events"] == n else None)(report()))
        assert rep is not None and rep["n_cases"] == 3 and rep["live"]["events"] == n
        stamp = rep["live"]["refreshed_at"]
        live = app.state.live_insight
        # several rounds later, with nothing new stored, the report was not mined again
        assert _wait(lambda: live.last is not None and live.last.skipped and live.last.refreshed_at > stamp)
        assert report()["live"]["refreshed_at"] == stamp
        more = _case(client, keys, 3, bounce=False, t0=t0 + timedelta(days=1))
        rep = _wait(lambda: (lambda r: r if r["n_events"] == n + more else None)(report()))
        assert rep is not None and rep["n_cases"] == 4 and rep["live"]["events"] == n + more
        assert rep["misrouting"]["reassigned_cases"] == 1
    finally:
        client.__exit__(None, None, None)
    assert not [t for t in threading.enumerate() if t.name == "deskpilot-live-insight"]  # stopped with the app


def _history_csv(path: Path, n: int, end: datetime) -> int:
    """`n` closed cases H-0.. in the eight weeks before `end` minus a week and a bit; returns the event count."""
    rows = []
    for i in range(n):
        t0 = end - timedelta(days=9 + i * 0.35)
        for act, group, h in (("Ticket created", "L1", 0), ("Assign to team", "Billing", 1),
                              ("Resolved", "Billing", 8), ("Closed", "Billing", 9)):
            rows.append({"case_id": f"H-{i}", "activity": act, "group": group,
                         "timestamp": (t0 + timedelta(hours=h)).isoformat()})
    pd.DataFrame(rows).to_csv(path, index=False)
    return len(rows)


def test_live_store_is_joined_with_the_mined_history(tmp_path: Path, tiny_bundle: TinyBundle) -> None:
    end = datetime(2026, 11, 30, 9, tzinfo=UTC)
    history = tmp_path / "history.csv"
    hist_events = _history_csv(history, 40, end)
    settings = Settings(home=tmp_path / "home", live_insight_seconds=0, webhooks_enabled=False,
                        retrain_history_log=history)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        # before anything is stored the live report is empty (the history alone is not "live")
        assert client.get("/v1/insights/live", headers=_h(keys, "analyst")).json()["n_cases"] == 0
        live_events = sum(_case(client, keys, i, bounce=i == 1, t0=end - timedelta(days=2, hours=-4 * i))
                          for i in range(3))
        # H-0 is also in the store: the store's version of the case replaces the history's
        r = client.post("/v1/tickets/route", json={"ticket_id": "H-0", "subject": "Refund", "body": "charged twice"},
                        headers=_h(keys, "helpdesk"))
        assert r.status_code == 201, r.text
        for act, h in (("Ticket created", 0), ("Resolved", 2)):
            ev = {"activity": act, "group": "Billing", "timestamp": (end - timedelta(days=1, hours=-h)).isoformat()}
            assert client.post("/v1/tickets/H-0/events", json=ev, headers=_h(keys, "helpdesk")).status_code == 201
        live_events += 2
        out = client.post("/v1/insights/live/refresh", headers=_h(keys, "analyst"))
        assert out.status_code == 200, out.text
        res = out.json()
        assert res["history_cases"] == 39 and res["cases"] == 39 + 4 and res["new_events"] == live_events
        rep = client.get("/v1/insights/live", headers=_h(keys, "analyst")).json()
        assert rep["n_cases"] == 43 and rep["n_events"] == hist_events - 4 + live_events
        assert rep["live"]["history_cases"] == 39
        assert rep["misrouting"]["reassigned_cases"] == 1  # the one live bounce; the history has none
    finally:
        client.__exit__(None, None, None)
