"""Shared fixtures: where the public data lives, and skipping cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

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
    from insight.embedding import Embedder

    return Embedder(bundled_model_path())


@pytest.fixture(scope="session")
def sim_small():
    """A small simulated contact-center log (600 cases, seed 7) with its tickets and planted ground truth."""
    from insight.simulate import simulate

    return simulate(n_cases=600, seed=7)
