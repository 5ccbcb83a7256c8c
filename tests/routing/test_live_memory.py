"""The router's memory fed by the live service, through the real HTTP stack: a resolution posted as a ticket event
is stored, changes the team ranking of the next ticket with the same attributes, and a second app instance on the
same database (another worker) sees it too. SQLite file and, when reachable, PostgreSQL."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session, select

from api.settings import Settings
from routing.live_memory import resolution_kind, sync_router_memory
from routing.models import RouterResolution
from routing.triage import ModelBundle
from tests.api.conftest import start_api
from tests.routing.conftest import SimRouting
from tests.routing.tiny_triage import train_tiny_bundle


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or a fresh schema on the test PostgreSQL (tests/conftest.py: pg_schema_url)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


def _bundle(sim: SimRouting) -> ModelBundle:
    # Each app instance (worker) holds its own copy of the router, as separate processes would.
    return ModelBundle(router=pickle.loads(pickle.dumps(sim.router)), versions={"router": "sim"},
                       router_trained_until=sim.train["created_at"].max().to_pydatetime().astimezone(UTC),
                       memory_refresh_seconds=0.0)


def test_resolutions_posted_as_events_reach_every_worker(sim_routing: SimRouting, db_url: str, tmp_path: Path) -> None:
    row = sim_routing.test.iloc[0]
    attrs = {"channel": str(row["channel"]), "segment": str(row["segment"]), "priority": str(row["priority"]),
             "custom_fields": {"product": str(row["product"])}, "subject": str(row[sim_routing.text])}
    apps = []
    try:
        for name in ("one", "two"):
            settings = Settings(home=tmp_path / name, database_url=db_url)
            b = _bundle(sim_routing)
            apps.append(start_api(settings, bundle_loader=lambda s, e, b=b: b, decide=None))
        (app1, c1, k1), (app2, c2, k2) = apps
        h1 = {"Authorization": f"Bearer {k1['helpdesk']}"}
        h2 = {"Authorization": f"Bearer {k2['helpdesk']}"}

        def route(client: Any, headers: dict[str, str]) -> dict[str, Any]:
            r = client.post("/v1/tickets/route", json={"ticket_id": f"L-{uuid.uuid4().hex[:8]}", **attrs},
                            headers=headers)
            assert r.status_code == 201, r.text
            return dict(r.json())

        before = route(c1, h1)
        team = before["result"]["top_teams"][-1]["team"]  # the least likely of the three shown
        # Three tickets with these attributes get resolved by that team (and one event that resolves nothing).
        for i in range(3):
            tid = route(c1, h1)["ticket_id"]
            ev = c1.post(f"/v1/tickets/{tid}/events", headers=h1, json={"activity": "Add note", "group": team})
            assert ev.status_code == 201, ev.text
            ev = c1.post(f"/v1/tickets/{tid}/events", headers=h1,
                         json={"activity": "Resolve" if i else "Resolved", "group": team})
            assert ev.status_code == 201, ev.text
        with Session(app1.state.engine) as s:
            stored = s.exec(select(RouterResolution).order_by(RouterResolution.id)).all()
        assert [r.team for r in stored] == [team] * 3
        after = route(c1, h1)["result"]
        assert after["top_teams"] != before["result"]["top_teams"]  # the ranking moved
        # Exactly the fitted memory plus the three resolutions: the same router updated by hand ranks alike.
        local = pickle.loads(pickle.dumps(sim_routing.router))
        cats = sim_routing.cats
        local.observe(pd.DataFrame([{c: r.attributes.get(c) for c in cats} for r in stored], columns=cats,
                                   dtype=object), [r.team for r in stored], [r.resolved_at for r in stored])
        query = {"channel": attrs["channel"], "segment": attrs["segment"], "priority": attrs["priority"],
                 "intent": None, **attrs["custom_fields"]}
        expected = [{"team": t.team, "probability": round(t.probability, 4)} for t in local.rank([query], k=3)[0][0]]
        assert after["top_teams"] == expected
        # The other worker handled none of those events; it reads them from the database before routing.
        other = route(c2, h2)["result"]
        assert other["top_teams"] == expected
        assert app2.state.models.bundle.memory_applied == 3
    finally:
        for _, client, _ in apps:
            client.__exit__(None, None, None)


def test_a_router_without_history_ignores_resolutions_without_breaking(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    tiny = train_tiny_bundle()
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny)
    try:
        h = {"Authorization": f"Bearer {keys['helpdesk']}"}
        r = client.post("/v1/tickets/route", json={"ticket_id": "N-1", "subject": "reset my password"}, headers=h)
        assert r.status_code == 201, r.text
        # No group on the event: the team holding the ticket (from an earlier assignment event) resolves it.
        assert client.post("/v1/tickets/N-1/events", headers=h, json={"activity": "Assign", "group": "IT"}).status_code == 201
        assert client.post("/v1/tickets/N-1/events", headers=h, json={"activity": "Closed"}).status_code == 201
        assert client.post("/v1/tickets/N-1/events", headers=h, json={"activity": "Closed"}).status_code == 201
        with Session(app.state.engine) as s:
            rows = s.exec(select(RouterResolution)).all()
            assert [(r.ticket_id, r.team) for r in rows] == [("N-1", "IT")]  # a second close adds nothing
        assert sync_router_memory(app.state.engine, tiny, force=True) == 0
    finally:
        client.__exit__(None, None, None)


def test_resolve_and_close_patterns_are_the_mining_labels() -> None:
    assert resolution_kind("Resolve") == "resolve" and resolution_kind("Solution accepted") == "resolve"
    assert resolution_kind("Closed") == "close" and resolution_kind("Add note") is None
