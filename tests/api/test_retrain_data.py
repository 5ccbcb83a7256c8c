"""What a retrain learns from by default: the history stored with the registry plus the store, a sliding history
window when set, and only resolved live tickets in the ticket memory."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlmodel import Session, SQLModel

from api.app import _import_tables, make_engine
from api.retrain import read_training_data
from api.settings import Settings
from flows.retrain import memory_tickets
from insight.models.registry import ModelRegistry
from tests.api.conftest import run_cli
from tests.routing.test_dataset import store_sim


@pytest.fixture()
def home(tmp_path, sim_small):
    order = sim_small.tickets.sort_values("created_at")["case_id"].tolist()
    hist = order[:400]
    ModelRegistry(tmp_path / "registry").save_training_data(
        sim_small.log.filter_cases(hist), sim_small.tickets[sim_small.tickets["case_id"].isin(hist)], source="test")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _import_tables()
    SQLModel.metadata.create_all(engine)
    live = order[400:500]
    with Session(engine) as session:
        store_sim(session, sim_small, live, keep_events={cid: 3 for cid in live[:10]})
    yield tmp_path, engine, hist, live
    engine.dispose()


def test_a_plain_service_retrains_on_the_stored_history_plus_its_store(home):
    path, engine, hist, live = home
    data, source = read_training_data(Settings(home=path), engine)
    assert source.startswith("registry training data") and "400 cases" in source
    assert data.summary.history_cases == 400 and data.summary.live_cases == 100
    assert data.log.n_cases == 500 and len(data.tickets) == 500


def test_the_history_window_keeps_only_recent_history(home, sim_small):
    path, engine, hist, live = home
    data, source = read_training_data(Settings(home=path, retrain_history_days=30), engine)
    newest_live = sim_small.log.df[sim_small.log.df["case_id"].isin(live)]["timestamp"].max()
    starts = sim_small.log.df.groupby("case_id")["timestamp"].min()
    expected = {c for c in hist if starts[c] >= newest_live - pd.Timedelta(days=30)}
    assert 0 < len(expected) < 400 and data.summary.history_cases == len(expected)
    assert "retrain_history_days=30" in source


def test_the_memory_gets_history_and_resolved_live_tickets_only(home):
    path, engine, hist, live = home
    data, _ = read_training_data(Settings(home=path), engine)
    kept = set(memory_tickets(data.tickets, data.log)["case_id"].astype(str))
    assert set(hist) <= kept  # the history (resolved cases)
    assert not kept & set(live[:10])  # open live tickets (three events, no resolution) stay out
    assert set(live[10:]) <= kept


def test_cli_retrain_runs_the_gated_job_and_records_it(home, monkeypatch, capfd):
    from api.retrain import RetrainManager

    path, engine, _, _ = home
    code, out, _ = run_cli(["models", "retrain", "--tasks", "next_activity", "--evaluate-only", "--no-embeddings"],
                           monkeypatch, capfd,
                           env={"DESKPILOT_HOME": str(path), "DESKPILOT_DATABASE_URL": f"sqlite:///{path / 'db.sqlite'}"})
    assert code == 0, out
    assert "succeeded (done (evaluated only" in out and "gate accepted: no live model to compare with" in out
    job = RetrainManager(engine, path / "registry").recent()[0]
    assert job.status == "succeeded" and job.requested_by and job.requested_by.startswith("cli:")
    assert job.data["history_cases"] == 400 and [m["task"] for m in job.models] == ["next_activity"]
    assert ModelRegistry(path / "registry").tasks() == []  # evaluated only: nothing saved
