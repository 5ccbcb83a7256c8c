"""`deskpilot train` keeps no raw PII: a `--tickets` table is prepared as the service prepares a ticket at the door
(flows.training.prepare_tickets: text redacted, person columns as the install's keyed tokens) before the models,
the ticket memory or the registry's stored training data see it, and `train intent` redacts its CSV texts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest

from tests.api.conftest import run_cli

EMAIL = "maria.keller@example.org"
PHONE = "+44 20 7946 0958"
NAME = "Maria Keller"
RAW = (EMAIL, PHONE, NAME, "keller")
# person columns of the ticket file (values nowhere in the text, so only the columns can leak them)
CUSTOMER = "Johanna Brandtner"
CUSTOMER_EMAIL = "j.brandtner@example.net"
REQUESTER = "Piet Vandersloot"
COLUMN_RAW = (CUSTOMER, CUSTOMER_EMAIL, REQUESTER, "brandtner", "vandersloot")
KEY = "train-cli-privacy-test-key"


def _readable_bytes(path: Path) -> bytes:
    """A registry file's bytes, plus its content uncompressed (models are zlib-compressed joblib, Parquet pages may
    be compressed): a raw value must show in neither."""
    data = path.read_bytes()
    if path.suffix == ".joblib":
        import joblib

        data += pickle.dumps(joblib.load(path))
    elif path.suffix == ".parquet":
        data += pd.read_parquet(path).to_csv(index=False).encode()
    return data.lower()


def _assert_nothing_raw(registry: Path, values: tuple[str, ...]) -> list[Path]:
    files = [p for p in registry.rglob("*") if p.is_file()]
    for path in files:
        data = _readable_bytes(path)
        for value in values:
            assert value.lower().encode() not in data, f"{value!r} stored raw in {path.relative_to(registry)}"
    return files


@pytest.mark.slow
def test_train_with_a_ticket_file_stores_no_raw_pii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    from insight.eventlog import write_log
    from insight.models.registry import ModelRegistry
    from insight.simulate import simulate
    from routing.models import TicketIn
    from routing.redaction import redact_ticket

    sim = simulate(n_cases=300, seed=11)
    write_log(sim.log, events := tmp_path / "events.csv")
    tickets = sim.tickets.copy()
    rows = tickets.index[:8]
    tickets.loc[rows, "subject"] = f"Invoice question from {EMAIL}"
    tickets.loc[rows, "body"] = f"Hello, my name is {NAME}. Please call me on {PHONE} about the second charge."
    people = tickets.index[::3]
    tickets.loc[people, "customer_name"] = CUSTOMER
    tickets.loc[people, "customer_email"] = CUSTOMER_EMAIL
    tickets.loc[people, "requester"] = REQUESTER
    tickets.loc[people, "notes"] = f"escalated by {CUSTOMER_EMAIL}"  # a custom field that is not a person column
    tickets.to_csv(ticket_csv := tmp_path / "tickets.csv", index=False)
    assert all(v.encode() in ticket_csv.read_bytes() for v in (EMAIL, PHONE, NAME, CUSTOMER, CUSTOMER_EMAIL, REQUESTER))

    registry = tmp_path / "registry"
    code, out, err = run_cli(["train", "--log", str(events), "--tickets", str(ticket_csv), "--registry",
                              str(registry)], monkeypatch, capfd,
                             env={"DESKPILOT_HOME": str(tmp_path / "home"), "DESKPILOT_PSEUDONYM_KEY": KEY})
    assert code == 0, out + err
    assert "skipped memory" not in out, out  # the ticket memory, which keeps ticket texts, was trained

    files = _assert_nothing_raw(registry, RAW + COLUMN_RAW)
    assert any(p.name == "tickets.parquet" for p in files), files
    stored = ModelRegistry(registry).load_training_data()
    assert stored is not None and stored[1] is not None
    table = stored[1]
    text = " ".join(table["subject"].astype(str) + " " + table["body"].astype(str))
    assert not [v for v in RAW if v.lower() in text.lower()]
    assert all(p in text for p in ("[EMAIL]", "[PHONE]", "[NAME]")), text[:500]
    # person columns hold the tokens the service gives the same custom fields at the door (same install key)
    served = redact_ticket(TicketIn(ticket_id="t-1", subject="s", custom_fields={
        "customer_name": CUSTOMER, "customer_email": CUSTOMER_EMAIL, "requester": REQUESTER}), pseudonym_key=KEY)
    kept = table.set_index("case_id").loc[tickets.loc[people, "case_id"].astype(str)]
    for column, token in served.custom_fields.items():
        assert token not in (CUSTOMER, CUSTOMER_EMAIL, REQUESTER) and token.startswith(column[:3] + "_")
        assert (kept[column] == token).all(), (column, kept[column].unique()[:3], token)
    assert set(kept["notes"]) == {"escalated by [EMAIL]"}


@pytest.mark.slow
def test_train_intent_redacts_the_csv_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    from insight.models.registry import ModelRegistry
    from insight.simulate import simulate

    t = simulate(n_cases=240, seed=5).tickets
    texts = (t["subject"].astype(str) + ". " + t["body"].astype(str)).tolist()
    # the name and the address in many rows of every intent: left in, TF-IDF would keep them as terms
    texts = [f"{x} Regards, {NAME} ({EMAIL})" if i % 2 else x for i, x in enumerate(texts)]
    pd.DataFrame({"text": texts, "label": t["intent"].astype(str)}).to_csv(csv := tmp_path / "intent.csv",
                                                                            index=False)
    registry = tmp_path / "registry"
    code, out, err = run_cli(["train", "intent", str(csv), "--no-embeddings", "--registry", str(registry)],
                             monkeypatch, capfd,
                             env={"DESKPILOT_HOME": str(tmp_path / "home"), "DESKPILOT_PSEUDONYM_KEY": KEY})
    assert code == 0, out + err
    assert ModelRegistry(registry).live_version("intent") is not None
    files = _assert_nothing_raw(registry, (EMAIL, NAME, "keller", "maria"))
    assert any(p.suffix == ".joblib" for p in files), files
