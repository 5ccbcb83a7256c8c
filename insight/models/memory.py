"""Ticket memory: embeddings of past tickets with how they were resolved, for "similar past tickets" reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidInput, ModelArtifactError


@dataclass
class SimilarCase:
    """A past ticket close to a query, with its label and resolving team."""

    case_id: str
    similarity: float
    intent: str | None
    team: str | None
    subject: str | None


class TicketMemory(BaseEstimator):
    """Nearest past tickets by cosine similarity of sentence embeddings (exact search; float16 storage)."""

    def __init__(self, *, embedder: Any = None, max_items: int = 50_000, subject_chars: int = 120) -> None:
        self.embedder = embedder
        self.max_items = max_items
        self.subject_chars = subject_chars

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["embedder"] = None  # the embedder is a model folder of its own; re-attached on load
        state.pop("_vectors_f32", None)  # a float32 working copy, rebuilt on first search
        return state

    def set_embedder(self, embedder: Any) -> TicketMemory:
        """Re-attach the embedder after loading; refuses a different model than the one the memory was built with."""
        if getattr(self, "embedder_name_", None) and getattr(embedder, "name", None) != self.embedder_name_:
            raise ModelArtifactError(
                f"ticket memory was built with embedder {self.embedder_name_!r}, got {getattr(embedder, 'name', None)!r};"
                " retrain with `deskpilot train`"
            )
        self.embedder = embedder
        return self

    def fit(self, tickets: pd.DataFrame, *, text: pd.Series, embeddings: np.ndarray | None = None) -> TicketMemory:
        """Store the newest `max_items` tickets (columns case_id, intent?, resolving_team?, subject?)."""
        if "case_id" not in tickets.columns:
            raise InvalidInput(f"ticket memory needs a case_id column; has {list(tickets.columns)}", field="case_id")
        if len(text) != len(tickets):
            raise InvalidInput(f"ticket memory: {len(tickets)} tickets but {len(text)} texts", field="text")
        tickets = tickets.tail(self.max_items)
        text = text.tail(self.max_items)
        if embeddings is None:
            if self.embedder is None:
                raise InvalidInput("ticket memory needs an embedder or precomputed embeddings", field="embedder")
            embeddings = self.embedder.encode(text.fillna("").astype(str).tolist())
        else:
            embeddings = embeddings[-len(tickets):]
        self.vectors_ = np.asarray(embeddings, dtype=np.float16)
        self._vectors_f32: np.ndarray | None = None

        def col(name: str) -> list[str | None]:
            if name not in tickets.columns:
                return [None] * len(tickets)
            return [None if pd.isna(v) else str(v) for v in tickets[name].tolist()]

        self.case_ids_ = tickets["case_id"].astype(str).tolist()
        self.intents_ = col("intent")
        self.teams_ = col("resolving_team")
        self.subjects_ = [s[: self.subject_chars] if s else s for s in col("subject")]
        self.embedder_name_ = getattr(self.embedder, "name", None)
        return self

    def search(self, vectors: np.ndarray, *, k: int = 5) -> list[list[SimilarCase]]:
        """The k most similar stored tickets for each query vector (unit-normalised embeddings)."""
        check_is_fitted(self, "vectors_", msg="%(name)s is not fitted; call fit first")
        q = np.asarray(vectors, dtype=np.float32)
        # float16 storage keeps the pickle small; converting all of it on every query is slow: convert once.
        stored = getattr(self, "_vectors_f32", None)
        if stored is None:
            stored = self._vectors_f32 = self.vectors_.astype(np.float32)
        sims = q @ stored.T
        k = min(k, sims.shape[1])
        out: list[list[SimilarCase]] = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([SimilarCase(self.case_ids_[i], float(row[i]), self.intents_[i], self.teams_[i],
                                    self.subjects_[i]) for i in top])
        return out
