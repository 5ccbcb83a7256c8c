"""Triage's misroute risk: the misroute model's probability when one is loaded (and the auto-route limit applies to
it); without one the risk is absent and the answer says the limit was not applied."""

from __future__ import annotations

from typing import Any

import numpy as np

from routing.models import DecisionThresholds, TicketIn
from routing.triage import ModelBundle, _router_rows, decide_batch
from tests.routing.conftest import SimRouting


def _tickets(sim: SimRouting, n: int = 60) -> list[TicketIn]:
    rows = sim.test.iloc[:n]
    return [TicketIn(ticket_id=str(cid), subject=text, channel=str(r["channel"]), segment=str(r["segment"]),
                     priority=str(r["priority"]), custom_fields={"product": str(r["product"])})
            for cid, r, text in zip(rows.index, rows.to_dict("records"), rows[sim.text], strict=True)]


def test_misroute_risk_is_the_model_and_gates_auto_routing(sim_routing: SimRouting) -> None:
    bundle = ModelBundle(router=sim_routing.router, misroute=sim_routing.misroute, versions={"router": "t"})
    tickets = _tickets(sim_routing)
    expected = sim_routing.misroute.predict_proba(_router_rows(bundle, tickets, [None] * len(tickets)))
    limit = float(np.median(expected))
    thresholds = DecisionThresholds(auto_route_confidence=0.0, suggest_confidence=0.0, max_auto_misroute_risk=limit)
    results = decide_batch(bundle=bundle, tickets=tickets, thresholds=thresholds)
    risks = np.array([r.risks.misroute for r in results])
    assert np.allclose(risks, np.round(expected, 4))
    assert len(set(risks)) > 10  # the risk differs per ticket (not 1 - p or a constant)
    # Every ticket is confident enough here; the misroute limit alone splits them.
    for r in results:
        assert r.decision == ("auto_route" if r.risks.misroute <= limit else "suggest")
        if r.decision == "suggest":
            assert "misroute risk" in r.reasons[0] and "above" in r.reasons[0]
    assert {r.decision for r in results} == {"auto_route", "suggest"}


def test_without_a_misroute_model_the_risk_is_absent_and_said(sim_routing: SimRouting) -> None:
    bundle = ModelBundle(router=sim_routing.router, versions={"router": "t"})
    thresholds = DecisionThresholds(auto_route_confidence=0.0, suggest_confidence=0.0, max_auto_misroute_risk=0.0)
    results = decide_batch(bundle=bundle, tickets=_tickets(sim_routing, 10), thresholds=thresholds)
    for r in results:
        assert r.risks.misroute is None
        assert r.decision == "auto_route"  # the limit was not applied, and the answer says so
        assert "misroute risk not assessed" in r.reasons[0]


def test_risk_fields_say_what_they_are() -> None:
    from routing.models import Risks

    fields: dict[str, Any] = Risks.model_fields
    assert "misrouted" in (fields["misroute"].description or "")
    assert "remaining-time model" in (fields["sla_breach"].description or "")
