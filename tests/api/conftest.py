"""API test fixtures: an app on in-memory SQLite with a tiny real model, one key per role, clean overrides."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.auth import ROLES, create_key
from api.settings import Settings
from tests.conftest import postgres_url  # noqa: F401  (re-exported for the API tests)
from tests.routing.tiny_triage import TinyBundle, tiny_decide, train_tiny_bundle


@dataclass
class Api:
    """A running app (lifespan entered), its client and one API key per role."""

    app: FastAPI
    client: TestClient
    keys: dict[str, str]

    def h(self, role: str) -> dict[str, str]:
        """Auth header for a role."""
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture(scope="session")
def tiny_bundle() -> TinyBundle:
    return train_tiny_bundle()


def start_api(
    settings: Settings,
    *,
    bundle_loader: Callable[[Settings, Any], Any] | None,
    open_kb_index: Callable[[Settings, Any], Any] | None = None,
    embedder: Any = None,
    decide: Any = tiny_decide,
) -> tuple[FastAPI, TestClient, dict[str, str]]:
    """Create the app, enter its lifespan and create a key per role (caller must close the client).

    Without `open_kb_index` the app runs with no knowledge-base index (KB routes answer 503). `bundle_loader=None`
    with `decide=None` is the production set-up: the registry's live models and `routing.triage.decide`.
    """
    app = create_app(
        settings, bundle_loader=bundle_loader, decide=decide,
        open_kb_index=open_kb_index or (lambda s, e: None), embedder=embedder,
    )
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    keys: dict[str, str] = {}
    with Session(app.state.engine) as session:
        for role in ROLES:
            keys[role] = create_key(session=session, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role).secret
    return app, client, keys


@pytest.fixture(scope="module")
def api_module(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: TinyBundle) -> Iterator[Api]:
    home: Path = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, database_url="sqlite://", max_body_bytes=64 * 1024)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    try:
        yield Api(app=app, client=client, keys=keys)
    finally:
        client.__exit__(None, None, None)


@pytest.fixture()
def api(api_module: Api) -> Iterator[Api]:
    """The module's app; any dependency override a test sets is cleared afterwards."""
    yield api_module
    api_module.app.dependency_overrides.clear()


def new_id(prefix: str = "T") -> str:
    """A ticket id unique across the session (tests share one database per module)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], *,
            env: dict[str, str]) -> tuple[int, str, str]:
    """Run `deskpilot ARGV` in this process through its real entry point (`api.cli.main`, error boundary included)
    with the DESKPILOT_* variables in `env`; returns (exit code, stdout, stderr)."""
    import sys

    from api import cli
    from api.settings import get_settings

    for name, value in {"DESKPILOT_LOG_LEVEL": "WARNING", **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["deskpilot", *argv])
    get_settings.cache_clear()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        get_settings.cache_clear()
    out, err = capfd.readouterr()
    return code, out, err


def wait_for_retrain(api: Api, job_id: str, timeout: float = 600) -> dict[str, Any]:
    """Poll GET /v1/models/retrain/{job_id} until the job leaves queued / running; its final JSON."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.client.get(f"/v1/models/retrain/{job_id}", headers=api.h("analyst"))
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        time.sleep(0.25)
    raise AssertionError(f"retrain job {job_id} did not finish in {timeout} s")

