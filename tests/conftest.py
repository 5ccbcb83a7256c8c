"""Shared fixtures: where the public data lives, and skipping cleanly when it is absent."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _minilm_for_the_kb() -> None:
    # The knowledge hub's default model (all-mpnet-base-v2) encodes 7-12x slower than the bundled MiniLM: tests use
    # MiniLM for the hub too unless they are about mpnet (those set DESKPILOT_KB_EMBEDDING_MODEL themselves).
    from api.settings import bundled_model_path

    os.environ.setdefault("DESKPILOT_KB_EMBEDDING_MODEL", str(bundled_model_path()))


_minilm_for_the_kb()

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("DESKPILOT_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets in ../shared/data; skips the test when they are not on this machine."""
    d = _data_dir()
    if not (d / "SOURCES.md").is_file():
        pytest.skip(f"public data not found at {d} (set DESKPILOT_DATA); real-data tests skipped")
    return d


@pytest.fixture(scope="session")
def embedder():
    """The bundled all-MiniLM-L6-v2 embedder (loaded once per test session)."""
    from api.settings import bundled_model_path
    from core.embedding import Embedder

    return Embedder(bundled_model_path())


@pytest.fixture(scope="session")
def sim_small():
    """A small simulated contact-center log (600 cases, seed 7) with its tickets and planted ground truth."""
    from insight.simulate import simulate

    return simulate(n_cases=600, seed=7)


def postgres_url() -> str:
    """The test PostgreSQL URL (DESKPILOT_TEST_POSTGRES_URL or the local default)."""
    return os.environ.get("DESKPILOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(scope="module")
def pg_schema_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL (dropped afterwards), as a URL whose search_path points at it.

    Skips when the server is unreachable, unless DESKPILOT_REQUIRE_POSTGRES=1 (CI) makes it a failure.
    """
    url = postgres_url()
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # unreachable server, missing driver, auth: all mean "no PostgreSQL here"
        admin.dispose()
        msg = f"PostgreSQL not reachable at {url} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        if os.environ.get("DESKPILOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{msg}; DESKPILOT_REQUIRE_POSTGRES=1 makes this test required")
        pytest.skip(f"{msg}; set DESKPILOT_TEST_POSTGRES_URL to run the PostgreSQL tests")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(url, schema)
    finally:
        # Drop only what this run created.
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
