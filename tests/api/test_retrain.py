"""Retraining through the real HTTP stack: a cold service learns from its own store (live log, ticket texts, agents'
corrections), swaps the models in, and a second retrain swaps again while clients keep routing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import get_args

import pytest
from sqlmodel import Session, col, select

from api.auth import AuditLog
from api.retrain import RETRAIN_TASKS
from api.settings import Settings
from api.views.models import RetrainTask
from tests.api.conftest import Api, new_id, start_api, wait_for_retrain
from tests.routing.test_dataset import store_sim

INTENTS = ("password reset", "invoice copy", "order status")
PER_INTENT = 12
FAST = ["intent", "next_activity", "remaining_time", "step_outcomes"]


@pytest.fixture(scope="module")
def cold_api(tmp_path_factory, sim_small):
    # The production set-up: the registry's live models and routing.triage.decide; nothing trained yet.
    settings = Settings(home=tmp_path_factory.mktemp("retrain"), retrain_min_intent_labels=30)
    app, client, keys = start_api(settings, bundle_loader=None, decide=None)
    api = Api(app=app, client=client, keys=keys)
    ids = sim_small.tickets["case_id"].iloc[:300].tolist()
    open_case = ids[0]
    with Session(app.state.engine) as session:
        store_sim(session, sim_small, ids, keep_events={open_case: 3})
    truth = sim_small.tickets.set_index("case_id").loc[ids]
    # Agents correct the intent of some tickets and the team of one still-open ticket, through the API.
    corrected = {cid: it for cid, it in truth["intent"].items() if it in INTENTS}
    corrected = {cid: corrected[cid] for cid in
                 truth.loc[list(corrected)].groupby("intent").head(PER_INTENT).index}
    for cid, intent in corrected.items():
        r = client.post(f"/v1/tickets/{cid}/feedback", json={"corrected_intent": intent}, headers=api.h("agent"))
        assert r.status_code == 201, r.text
    r = client.post(f"/v1/tickets/{open_case}/feedback", json={"corrected_team": "Billing L2"},
                    headers=api.h("agent"))
    assert r.status_code == 201, r.text
    try:
        yield api, ids, corrected
    finally:
        client.__exit__(None, None, None)


def test_task_names_agree():
    assert set(get_args(RetrainTask)) == set(RETRAIN_TASKS)


def test_cold_service_retrains_from_its_store_and_swaps_in(cold_api):
    api, ids, corrected = cold_api
    assert api.client.get("/v1/models", headers=api.h("analyst")).json()["ready"] is False
    assert api.client.post("/v1/models/retrain", headers=api.h("analyst")).status_code == 403
    bad = api.client.post("/v1/models/retrain", json={"tasks": ["intent", "astrology"]}, headers=api.h("admin"))
    assert bad.status_code == 422 and "tasks" in bad.json()["detail"]

    r = api.client.post("/v1/models/retrain", json={"tasks": FAST, "use_embeddings": False}, headers=api.h("admin"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/models/retrain/{job['job_id']}"
    assert job["status"] in ("queued", "running") and job["requested_by"].startswith("admin-")
    busy = api.client.post("/v1/models/retrain", json={"tasks": ["step_outcomes"]}, headers=api.h("admin"))
    assert busy.status_code == 409 and busy.json()["code"] == "conflict" and job["job_id"] in busy.json()["detail"]

    done = wait_for_retrain(api, job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["data"]["live_tickets"] == 300 and done["data"]["live_cases"] == 300
    assert done["data"]["intent_from_feedback"] == done["data"]["intent_labels"] == len(corrected) == 36
    # The labels are the agents' corrections, not the model's own guesses stored on the tickets.
    assert done["labels"]["intent"] == {i: PER_INTENT for i in INTENTS}
    assert done["labels"]["team_corrections"] == {"applied": 1, "agreed": 0, "overruled": 0, "unknown": 0}
    trained = {m["task"]: m for m in done["models"]}
    assert set(trained) == set(FAST) and all(m["version"] for m in trained.values())
    assert trained["intent"]["metrics"]["n_train"] + trained["intent"]["metrics"]["n_test"] == 36
    assert done["swapped"] is True and done["previous"] == {}
    assert done["gate"]["decision"] == "accepted" and done["gate"]["reason"] == "no live model to compare with"
    assert done["serving"] == {t: m["version"] for t, m in trained.items()}

    models = api.client.get("/v1/models", headers=api.h("analyst")).json()
    assert models["ready"] is True and models["serving"] == done["serving"] and models["step_outcomes"] is None
    live = {t["task"]: t["live"] for t in models["tasks"]}
    assert live == done["serving"]

    routed = api.client.post("/v1/tickets/route", headers=api.h("helpdesk"), json={
        "ticket_id": new_id(), "subject": "Forgot my password", "body": "I cannot log in, please reset my password"})
    assert routed.status_code == 201, routed.text
    result = routed.json()["result"]
    assert result["model_versions"]["intent"] == trained["intent"]["version"] and result["intent"] in INTENTS

    # Assist ranks next steps with the retrained models and the step outcomes mined from the same live log.
    a = api.client.get(f"/v1/tickets/{ids[0]}/assist", headers=api.h("agent"))
    assert a.status_code == 200, a.text
    body = a.json()
    assert body["model_versions"]["step_outcomes"] == trained["step_outcomes"]["version"]
    assert body["next_steps"] and any(x["similar_cases"] for x in body["next_steps"])
    assert all(x["expected_remaining_hours"] is not None for x in body["next_steps"])

    # Both the request and the swap it caused are in the audit log.
    assert api.app.state.audit_writer.flush()  # rows are written in the background
    with Session(api.app.state.engine) as session:
        rows = session.exec(select(AuditLog).where(col(AuditLog.path).startswith("/v1/models/retrain"))
                            .order_by(col(AuditLog.id))).all()
    started = [x for x in rows if x.method == "POST" and x.status == 202]
    finished = [x for x in rows if x.method == "JOB" and x.object_id and x.object_id.startswith(job["job_id"])]
    assert len(started) == 1 and started[0].object_id == job["job_id"] and started[0].role == "admin"
    assert len(finished) == 1 and finished[0].status == 200 and trained["intent"]["version"] in finished[0].object_id
    assert [x for x in rows if x.status == 409] and [x for x in rows if x.status == 403]

    listed = api.client.get("/v1/models/retrain", headers=api.h("analyst")).json()
    assert listed[0]["job_id"] == job["job_id"]
    assert api.client.get("/v1/models/retrain/nope", headers=api.h("admin")).status_code == 404
    assert api.client.get("/v1/models/retrain/nope", headers=api.h("agent")).status_code == 403


def test_retrain_swaps_while_clients_keep_routing(cold_api):
    api, _, _ = cold_api
    before = api.client.get("/v1/models", headers=api.h("analyst")).json()["serving"]
    assert before.get("intent"), "runs after the cold-start test"
    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []

    def client_loop() -> None:
        while not stop.is_set():
            resp = api.client.post("/v1/tickets/route", headers=api.h("helpdesk"),
                                   json={"ticket_id": new_id("HOT"), "subject": "Where is my order?"})
            ver = resp.json()["result"]["model_versions"].get("intent") if resp.status_code == 201 else None
            seen.append((resp.status_code, ver))

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(client_loop) for _ in range(2)]
        # No case is newer than the live models' training: the gate cannot tell, so only a forced swap goes in.
        r = api.client.post("/v1/models/retrain", json={"tasks": ["intent", "step_outcomes"], "use_embeddings": False,
                                                        "force": True, "reason": "swap under load"},
                            headers=api.h("admin"))
        assert r.status_code == 202, r.text
        done = wait_for_retrain(api, r.json()["job_id"])
        time.sleep(0.3)
        stop.set()
        for f in futures:
            f.result()
    assert done["status"] == "succeeded", done
    assert done["gate"]["decision"] == "rejected" and done["force"] is True
    new = done["serving"]["intent"]
    assert new != before["intent"] and done["previous"]["intent"] == before["intent"]
    assert done["serving"]["next_activity"] == before["next_activity"]  # not retrained: the live one is kept
    assert {s for s, _ in seen} == {201}, {s for s, _ in seen}
    versions = [v for _, v in seen]
    assert before["intent"] in versions and new in versions
    first_new = versions.index(new)
    assert versions[first_new:].count(before["intent"]) <= 2  # only requests already in flight at the swap


def test_a_promoted_set_that_fails_to_load_is_rolled_back_in_the_registry(tmp_path):
    """When the models a job promoted fail to load together (api.app.load_models' test ticket), the worker keeps
    the old ones and the registry points back at them, so a restart or another replica does not pick them up."""
    from api.retrain import RetrainJob, RetrainOptions, _undo_promotions
    from insight.models.registry import ModelRegistry

    settings = Settings(home=tmp_path)
    reg = ModelRegistry(settings.registry_path)
    reg.save({"w": 1}, task="remaining_time", version="v1", promote=True)
    reg.save({"w": 2}, task="remaining_time", version="v2", promote=True)
    reg.save({"w": 1}, task="intent", version="v1", promote=True)
    job = RetrainJob(id="j1", options=RetrainOptions(), requested_by="admin")
    job.promoted = {"remaining_time": "v2"}
    _undo_promotions(settings, job)
    assert reg.live_version("remaining_time") == "v1" and reg.live_version("intent") == "v1"
    assert job.promoted == {} and "rolled back" in job.skipped["remaining_time"]
    last = reg.history("remaining_time")[-1]
    assert last["action"] == "rollback" and "j1" in last["why"] and last["version"] == "v1"
    assert (settings.registry_path / "remaining_time" / "v2").is_dir()  # kept for a look, not live
