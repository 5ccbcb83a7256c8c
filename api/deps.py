"""FastAPI dependencies: hand out what the lifespan put on `app.state` (settings, DB sessions, models, index).

They are `async def` although they do no awaiting: FastAPI runs sync dependencies in the thread pool, and a few
thread hops per request cost more than the work they guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Path, Query, Request
from sqlalchemy import Engine
from sqlmodel import Session

from api.audit import request_session
from api.settings import Settings
from core.errors import DeskpilotError, IndexUnavailable, ModelNotReady
from core.ids import MAX_DB_INT
from routing.models import MAX_ID, DecisionThresholds

if TYPE_CHECKING:  # the model stack loads with the first bundle, not with this module
    from assist.actions import StepOutcomes
    from routing.service import DecideBatchFn, DecideFn
    from routing.triage import ModelBundle

# Path and query parameters the routes share: a row id, version or offset is bounded by what the database stores, and
# the schema says so (a larger number is a 422 naming the bound, not a lookup that overflows).
RowId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_DB_INT)]
Offset = Annotated[int, Query(ge=0, le=MAX_DB_INT, description="rows to skip")]
TicketId = Annotated[str, Path(min_length=1, max_length=MAX_ID, description="The helpdesk's ticket id")]

TRAIN_HINT = "run `deskpilot train` (or `deskpilot demo`), then POST /v1/models/reload or restart the service"


@dataclass(frozen=True)
class ModelState:
    """What is loaded right now; replaced as a whole on reload, so a request sees one consistent snapshot."""

    bundle: ModelBundle | None
    versions: dict[str, str] = field(default_factory=dict)
    loaded_at: datetime | None = None
    error: DeskpilotError | None = None  # why there is no bundle (ModelNotReady, ModelArtifactError, ...)
    # assist.actions.StepOutcomes mined from the training log (expected effect of each next step); assist works
    # without it, so a missing or broken table does not stop routing: `outcomes_error` says why it is absent.
    outcomes: StepOutcomes | None = None
    outcomes_error: str | None = None

    @property
    def ready(self) -> bool:
        """True when a bundle is loaded."""
        return self.bundle is not None


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    """The app's database engine."""
    engine: Engine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; services commit their own single transaction, anything else is rolled back.

    A write request's first commit also stores its audit row, in that same transaction (api.audit).
    """
    # async on purpose: creating a Session does no I/O, and a sync dependency would cost two thread hops per request.
    with request_session(request.app.state.engine, request.scope) as session:
        yield session


async def get_model_state(request: Request) -> ModelState:
    """The current model snapshot (may hold no bundle)."""
    state: ModelState = request.app.state.models
    return state


async def get_bundle(request: Request) -> ModelBundle:
    """The loaded triage bundle, or the error saying why there is none (503 model_not_ready with how to train)."""
    state: ModelState = request.app.state.models
    if state.bundle is None:
        if state.error is not None and not isinstance(state.error, ModelNotReady):
            raise state.error
        why = f" ({state.error.message})" if state.error is not None else ""
        raise ModelNotReady(f"no trained model is loaded{why}; {TRAIN_HINT}")
    return state.bundle


async def get_optional_bundle(request: Request) -> ModelBundle | None:
    """The loaded bundle or None (for writes that must succeed without a model, e.g. storing events)."""
    return request.app.state.models.bundle


async def get_thresholds(request: Request) -> DecisionThresholds:
    """Decision thresholds from the settings."""
    s: Settings = request.app.state.settings
    return DecisionThresholds(
        auto_route_confidence=s.auto_route_confidence, suggest_confidence=s.suggest_confidence,
        max_auto_misroute_risk=s.max_auto_misroute_risk,
    )


async def get_decide(request: Request) -> DecideFn:
    """The triage function (routing.triage.decide unless the app was built with another)."""
    return request.app.state.decide


async def get_decide_batch(request: Request) -> DecideBatchFn | None:
    """The batched triage function, if any."""
    return request.app.state.decide_batch


async def get_embedder(request: Request) -> Any:
    """The shared embedder (loads its weights on first use)."""
    return request.app.state.embedder


async def get_kb_index(request: Request) -> Any:
    """The knowledge-base vector index, or 503 index_unavailable when it could not be opened."""
    index = request.app.state.kb_index
    if index is None:
        err = request.app.state.kb_index_error
        raise IndexUnavailable(f"the knowledge-base index is not available: {err or 'not opened'}")
    return index


async def get_metrics(request: Request) -> Any:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


def kb_retriever(request: Request, index: Any) -> Any:
    """The app's hybrid retriever for this index (one per index: it caches its BM25 side until the index changes)."""
    state = request.app.state
    retriever = getattr(state, "kb_retriever", None)
    if retriever is None or retriever.index is not index:
        from knowledge_hub.retrieval import HybridRetriever

        retriever = HybridRetriever(index=index, calibrate_abstain=state.settings.kb_calibrated_abstain)
        state.kb_retriever = retriever
    return retriever
