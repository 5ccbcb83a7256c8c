"""Fixtures shared by the routing tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine


@pytest.fixture()
def session() -> Iterator[Session]:
    """A fresh in-memory SQLite database with every table, one connection shared by all threads."""
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


@dataclass
class SimRouting:
    """A router fitted with history and a misroute model, both on the older simulated cases, and the newer ones."""

    router: Any
    misroute: Any
    train: pd.DataFrame
    test: pd.DataFrame
    cats: list[str]
    text: str | None


@pytest.fixture(scope="session")
def sim_routing() -> SimRouting:
    """Really trained on 1500 simulated tickets (seed 11): TeamRouter(history=True) on the attributes and
    MisrouteModel on attributes and text."""
    from insight.models.misroute import MisrouteModel
    from insight.models.router import TeamRouter
    from insight.simulate import simulate
    from insight.training import router_table

    sim = simulate(n_cases=1500, seed=11)
    table, cats, text = router_table(log=sim.log, tickets=sim.tickets)
    train, test = table.iloc[:1200], table.iloc[1200:]
    cols = cats + ([text] if text else [])
    # Attributes only (no text): fitting stays fast; the history memory reads the attributes anyway.
    router = TeamRouter(categorical=cats, text=None, C=1.0, pair_features=False, history=True,
                        strategy="model+history", seed=7)
    router.fit(train[cats], train["resolving_team"], created_at=train["created_at"], resolved_at=train["resolved_at"])
    misroute = MisrouteModel(categorical=cats, text=text, C=1.0).fit(train[cols], train["misrouted"].astype(bool))
    return SimRouting(router=router, misroute=misroute, train=train, test=test, cats=cats, text=text)
