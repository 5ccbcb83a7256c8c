"""State shared by all workers: two app instances on one database and one registry.

A promotion through one instance, and a rollback from the CLI, reach the other instance within 5 seconds without
a reload; a retrain job started on one is visible (and blocks a second one) on the other. Runs on a SQLite file,
and on PostgreSQL when it is reachable.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from api import cli
from api.settings import Settings, get_settings
from tests.api.conftest import Api, start_api

SWAP_SECONDS = 5.0


def _registry(home: Path, sim: Any) -> tuple[str, str]:
    """A live TF-IDF intent model (v1) and a second stored version (v2) of it, trained on simulated tickets."""
    from flows.training import train_all
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(home / "registry")
    tickets = sim.tickets.iloc[:300]
    report = train_all(log=sim.log.filter_cases(tickets["case_id"]), tickets=tickets, registry=reg, embedder=None,
                       tasks=("intent",))
    first = report.models[0]
    meta = reg.read_metadata("intent", first.version).to_dict()
    second = reg.save(first.model, task="intent", metadata=meta)
    return first.version, second.version


def _serving(api: Api) -> str | None:
    r = api.client.get("/v1/models", headers=api.h("analyst"))
    assert r.status_code == 200, r.text
    return dict(r.json()["serving"]).get("intent")


def _until(api: Api, version: str) -> float:
    """Seconds until `api` serves intent `version` (fails after SWAP_SECONDS)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < SWAP_SECONDS:
        if _serving(api) == version:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"still serving {_serving(api)} after {SWAP_SECONDS} s, not {version}")


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, settings: Settings) -> int:
    monkeypatch.setenv("DESKPILOT_HOME", str(settings.home))
    monkeypatch.setenv("DESKPILOT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped
    if settings.database_url:
        monkeypatch.setenv("DESKPILOT_DATABASE_URL", settings.database_url)
    monkeypatch.setattr(sys, "argv", ["deskpilot", *argv])
    get_settings.cache_clear()
    try:
        cli.main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, sim_small) -> tuple[Path, tuple[str, str]]:
    home = tmp_path_factory.mktemp("shared")
    return home, _registry(home, sim_small)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_workers(request, tmp_path, trained_home):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained_home[0], home)
    v1, v2 = trained_home[1]
    url = request.getfixturevalue("pg_schema_url") if request.param == "postgres" else None
    settings = Settings(home=home, database_url=url, models_watch_seconds=0.5)
    apis = []
    for _ in range(2):
        app, client, keys = start_api(settings, bundle_loader=None, decide=None)
        apis.append(Api(app=app, client=client, keys=keys))
    try:
        yield apis[0], apis[1], settings, (v1, v2)
    finally:
        for a in apis:
            a.client.__exit__(None, None, None)


def test_swap_and_rollback_reach_every_worker(two_workers, monkeypatch, capfd):
    a, b, settings, (v1, v2) = two_workers
    assert _serving(a) == _serving(b) == v1
    r = a.client.post("/v1/models/intent/promote", json={"version": v2, "reason": "test swap"}, headers=a.h("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["serving"]["intent"] == v2 and _serving(a) == v2  # the worker that swapped: at once
    waited = _until(b, v2)  # the other one: from the registry's live pointer, no reload call
    assert waited <= SWAP_SECONDS

    # A rollback from the command line reaches both servers.
    assert _cli(["models", "rollback", "intent", "--reason", "cli rollback", "--by", "ops"], monkeypatch,
                settings) == 0
    assert f"intent: {v2} -> {v1} (live)" in capfd.readouterr().out
    _until(a, v1)
    _until(b, v1)
    history = b.client.get("/v1/models/intent/versions", headers=b.h("analyst")).json()["history"]
    assert [(h["action"], h["version"]) for h in history[:2]] == [("rollback", v1), ("force", v2)]
    assert history[0]["who"].startswith("cli:") and history[0]["who"].endswith("(ops)")
    assert history[1]["who"].startswith("admin-") and history[1]["why"] == "test swap"
    assert _cli(["models", "rollback", "intent", "--to", "nope"], monkeypatch, settings) == 2
    assert "no artifact intent/nope" in capfd.readouterr().err
    assert _cli(["models", "list"], monkeypatch, settings) == 0
    listed = capfd.readouterr().out
    assert "intent" in listed and v1 in listed


def test_retrain_jobs_are_shared_by_the_workers(two_workers):
    a, b, _, _ = two_workers
    r = a.client.post("/v1/models/retrain", json={"tasks": ["intent"], "use_embeddings": False,
                                                  "evaluate_only": True}, headers=a.h("admin"))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    busy = b.client.post("/v1/models/retrain", json={"tasks": ["intent"]}, headers=b.h("admin"))
    assert busy.status_code == 409 and job_id in busy.json()["detail"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        seen = b.client.get(f"/v1/models/retrain/{job_id}", headers=b.h("analyst"))
        assert seen.status_code == 200, seen.text
        if seen.json()["status"] not in ("queued", "running"):
            break
        time.sleep(0.25)
    done = seen.json()
    # Nothing in the store and no history stored with the registry: nothing to learn from, said on every worker.
    assert done["status"] == "failed" and "nothing was trained" in done["error"], done
    assert [j["job_id"] for j in a.client.get("/v1/models/retrain", headers=a.h("analyst")).json()][0] == job_id
