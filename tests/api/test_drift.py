"""Drift watch through the HTTP stack: live traffic like the training data raises nothing; a shifted intent mix
raises an alert, proposes a (gated) retrain and sets the Prometheus gauge."""

from __future__ import annotations

from typing import Any

import pytest

from api.settings import Settings
from tests.api.conftest import Api, new_id, start_api

WINDOW = 60


@pytest.fixture(scope="module")
def drift_api(tmp_path_factory, sim_small):
    from flows.training import train_all
    from insight.models.registry import ModelRegistry

    home = tmp_path_factory.mktemp("drift")
    reg = ModelRegistry(home / "registry")
    train = sim_small.tickets.iloc[:300]
    log = sim_small.log.filter_cases(train["case_id"])
    train_all(log=log, tickets=train, registry=reg, embedder=None, tasks=("intent",))
    reg.save_training_data(log, train, source="test")
    settings = Settings(home=home, drift_window=WINDOW, drift_check_seconds=0)
    app, client, keys = start_api(settings, bundle_loader=None, decide=None)
    try:
        yield Api(app=app, client=client, keys=keys)
    finally:
        client.__exit__(None, None, None)


def _route(api: Api, tickets: Any) -> None:
    for _, t in tickets.iterrows():
        r = api.client.post("/v1/tickets/route", headers=api.h("helpdesk"), json={
            "ticket_id": new_id("D"), "subject": t.subject, "body": t.body, "channel": t.channel})
        assert r.status_code == 201, r.text


def test_a_shifted_intent_mix_alerts_and_proposes_a_gated_retrain(drift_api, sim_small):
    api = drift_api
    assert api.client.get("/v1/models/health", headers=api.h("agent")).status_code == 403
    _route(api, sim_small.tickets.iloc[300:300 + WINDOW])  # traffic like the training data
    calm = api.client.get("/v1/models/health", headers=api.h("analyst")).json()
    mix = calm["signals"]["intent_mix"]
    assert calm["n_decisions"] == WINDOW and mix["n"] == WINDOW and calm["training_data"]
    assert mix["alert"] is False and calm["retrain_proposed"] is False, mix
    assert calm["signals"]["team_mix"]["alert"] is False  # no router: nothing routed to a team

    # The world changes: nearly every new ticket is about one product problem.
    later = sim_small.tickets.iloc[360:]
    skewed = later[later["intent"].isin(["password reset", "login issue", "refund request"])].head(WINDOW)
    assert len(skewed) == WINDOW
    _route(api, skewed)
    report = api.client.get("/v1/models/health", headers=api.h("analyst")).json()
    mix = report["signals"]["intent_mix"]
    assert mix["alert"] is True and mix["p_value"] < report["rule"]["alpha"], mix
    assert mix["effect"] >= report["rule"]["min_effect"]
    assert "password reset" in mix["largest_changes"] or "login issue" in mix["largest_changes"]
    assert report["alerts"] and "intent_mix" in report["alerts"] and report["retrain_proposed"] is True
    assert "gate" in report["proposal"]
    # Compared with the window before, the intent model's confidence moved too (reported either way).
    assert report["signals"]["intent_confidence"]["n_before"] == WINDOW
    metrics = api.client.get("/metrics").text
    assert 'deskpilot_drift_alert{signal="intent_mix"} 1.0' in metrics
