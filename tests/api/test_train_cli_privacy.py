"""`deskpilot train --log --tickets` keeps no raw PII: the ticket table's text is redacted (flows.training.
prepare_tickets) before the models, the ticket memory or the registry's stored training data see it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import run_cli

EMAIL = "maria.keller@example.org"
PHONE = "+44 20 7946 0958"
NAME = "Maria Keller"
RAW = (EMAIL, PHONE, NAME, "keller")


@pytest.mark.slow
def test_train_with_a_ticket_file_stores_no_raw_pii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    from insight.eventlog import write_log
    from insight.models.registry import ModelRegistry
    from insight.simulate import simulate

    sim = simulate(n_cases=300, seed=11)
    write_log(sim.log, events := tmp_path / "events.csv")
    tickets = sim.tickets.copy()
    rows = tickets.index[:8]
    tickets.loc[rows, "subject"] = f"Invoice question from {EMAIL}"
    tickets.loc[rows, "body"] = f"Hello, my name is {NAME}. Please call me on {PHONE} about the second charge."
    tickets.to_csv(ticket_csv := tmp_path / "tickets.csv", index=False)
    assert all(v.encode() in ticket_csv.read_bytes() for v in (EMAIL, PHONE, NAME))

    registry = tmp_path / "registry"
    code, out, err = run_cli(["train", "--log", str(events), "--tickets", str(ticket_csv), "--registry",
                              str(registry)], monkeypatch, capfd, env={"DESKPILOT_HOME": str(tmp_path / "home")})
    assert code == 0, out + err
    assert "skipped memory" not in out, out  # the ticket memory, which keeps ticket texts, was trained

    files = [p for p in registry.rglob("*") if p.is_file()]
    assert any(p.name == "tickets.parquet" for p in files), files
    for path in files:
        data = path.read_bytes().lower()
        for value in RAW:
            assert value.lower().encode() not in data, f"{value!r} stored raw in {path.relative_to(registry)}"
    # Parquet pages may be compressed: the stored tickets read back hold the placeholders, not the values.
    stored = ModelRegistry(registry).load_training_data()
    assert stored is not None and stored[1] is not None
    text = " ".join(stored[1]["subject"].astype(str) + " " + stored[1]["body"].astype(str))
    assert not [v for v in RAW if v.lower() in text.lower()]
    assert all(p in text for p in ("[EMAIL]", "[PHONE]", "[NAME]")), text[:500]
