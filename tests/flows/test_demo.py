"""The demo's first steps (flows.demo): the simulated center is written where asked, and its tickets reach training
only through the one preparation rule (flows.training.prepare_tickets), which is the store's rule too."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}")


@pytest.mark.slow
def test_simulated_tickets_reach_training_redacted(tmp_path: Path) -> None:
    from flows import demo
    from routing.dataset import redact_ticket_table

    sim = demo.simulate_center(tmp_path / "sim", cases=200, seed=7)
    assert {p.name for p in (tmp_path / "sim").iterdir()} == {demo.EVENTS_FILE, demo.TICKETS_FILE, demo.TRUTH_FILE}
    raw = pd.read_csv(tmp_path / "sim" / demo.TICKETS_FILE)
    assert raw["body"].astype(str).str.contains(EMAIL).any()  # the simulator writes PII into its tickets

    log, tickets = demo.ingest_center(tmp_path / "sim", sim, pseudonym_key="test-key")
    assert log.n_cases == sim.log.n_cases
    assert len(tickets.table) == len(sim.tickets) and tickets.redacted.items["email"] > 0
    for column in ("subject", "body"):
        assert not tickets.table[column].str.contains(EMAIL).any()
    # the same rule the service's store meets when it becomes training data
    store_rule = redact_ticket_table(sim.tickets, pseudonym_key="test-key")
    pd.testing.assert_frame_equal(tickets.table, store_rule.table)
    assert store_rule.redacted == tickets.redacted
    assert sim.tickets["body"].astype(str).str.contains(EMAIL).any()  # the caller's table is left as it was
