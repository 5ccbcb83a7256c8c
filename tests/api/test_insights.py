"""Insight routes serve the latest report written by `deskpilot mine` (or say how to create it)."""

from __future__ import annotations

import json

from tests.api.conftest import Api


def test_insights_missing_then_served_by_section(api: Api):
    path = api.app.state.settings.home / "insights" / "insight.json"
    if path.exists():
        path.unlink()
    r = api.client.get("/v1/insights", headers=api.h("analyst"))
    assert r.status_code == 404 and "deskpilot mine" in r.json()["detail"]
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"kpis": {"cases": 600, "median_hours": 5.5}, "misrouting": {"share": 0.18},
              "variants": [{"variant": "A>B", "cases": 400}], "alerts": []}
    path.write_text(json.dumps(report))
    assert api.client.get("/v1/insights", headers=api.h("analyst")).json() == report
    assert api.client.get("/v1/insights/kpis", headers=api.h("knowledge_manager")).json()["cases"] == 600
    assert api.client.get("/v1/insights/sections", headers=api.h("analyst")).json()["sections"] == sorted(report)
    # (gaps are computed live by the assist routes; any section the file lacks is a 404 naming what exists)
    gone = api.client.get("/v1/insights/bottlenecks", headers=api.h("analyst"))
    assert gone.status_code == 404 and "kpis" in gone.json()["detail"]
    assert api.client.get("/v1/insights/kpis", headers=api.h("helpdesk")).status_code == 403
    path.write_text("{broken")
    broken = api.client.get("/v1/insights", headers=api.h("analyst"))
    assert broken.status_code == 500 and broken.json()["code"] == "model_artifact_error"
    path.unlink()
