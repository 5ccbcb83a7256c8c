"""Assist service: for an open ticket, next-best actions, supporting knowledge, a grounded draft; agent feedback.

Everything heavy is passed in (models, the retriever, a catalog of published articles read from SQL), so the same
function serves the HTTP API, the CLI, tests and benchmarks. Retrieval goes through the live index on every call:
an article edited, unpublished or restored is what the very next call sees.

The retriever is knowledge_hub's `HybridRetriever` (anything with its `score_matrix(queries)`): the ticket's text and
one query per suggested action are scored in one batched pass (one embedding call), then filtered by intent or by
the articles listing an action. Articles tagged with the ticket's intent are preferred when one of them clears the
draft threshold; otherwise all published articles compete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from assist.actions import TASK_STEP_OUTCOMES, Ranking, StepOutcomes, events_frame, rank_actions
from assist.draft import DEFAULT_DRAFT_THRESHOLD, build_draft
from assist.models import (
    ArticleSupport,
    AssistFeedback,
    AssistFeedbackIn,
    AssistFeedbackPublic,
    AssistResult,
    NextBestAction,
    PassageRef,
)
from core.errors import InvalidInput
from insight.eventlog.schema import ACTIVITY
from knowledge_hub.models import Article, ArticleStatus, SearchHit


@dataclass
class AssistModels:
    """The models assist uses; any may be None (assist then does what it can without it)."""

    intent: Any = None
    next_activity: Any = None
    remaining_time: Any = None
    outcomes: StepOutcomes | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_bundle(cls, bundle: Any, *, outcomes: StepOutcomes | None = None,
                    outcomes_version: str | None = None) -> AssistModels:
        """Take intent / next-activity / remaining-time from a routing ModelBundle (or anything with those names)."""
        own = {TASK_STEP_OUTCOMES: outcomes_version} if outcomes is not None and outcomes_version else {}
        if bundle is None:
            return cls(outcomes=outcomes, versions=own)
        versions = dict(getattr(bundle, "versions", {}) or {})
        return cls(intent=getattr(bundle, "intent", None), next_activity=getattr(bundle, "next_activity", None),
                   remaining_time=getattr(bundle, "remaining_time", None), outcomes=outcomes,
                   versions={**{k: str(v) for k, v in versions.items()
                                if k in ("intent", "next_activity", "remaining_time")}, **own})


@dataclass(frozen=True)
class CatalogEntry:
    """What assist needs to know about one published article beyond its passages."""

    article_id: int
    version: int
    title: str
    intents: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    body: str = ""


@dataclass
class KnowledgeCatalog:
    """Published articles' metadata from SQL (the truth): intents and the activities each article supports."""

    entries: dict[int, CatalogEntry] = field(default_factory=dict)

    def for_activity(self, activity: str) -> list[int]:
        """Ids of published articles listing this activity (case-insensitive)."""
        a = activity.strip().lower()
        return [e.article_id for e in self.entries.values() if a in {x.strip().lower() for x in e.activities}]

    def for_topic(self, topic: str) -> list[int]:
        """Ids of published articles tagged with this intent / topic."""
        return [e.article_id for e in self.entries.values() if topic in e.intents]

    def intents(self) -> set[str]:
        """Every intent some published article is tagged with."""
        return {i for e in self.entries.values() for i in e.intents}


def load_catalog(*, session: Session) -> KnowledgeCatalog:
    """Read the published articles' metadata from SQL."""
    rows = session.exec(select(Article).where(Article.status == ArticleStatus.published).order_by(col(Article.id)))
    return KnowledgeCatalog({
        a.id: CatalogEntry(article_id=a.id, version=a.version, title=a.title, intents=tuple(a.intents),
                           activities=tuple(a.activities), body=a.body)
        for a in rows if a.id is not None
    })


def group_hits(hits: Sequence[Any], *, top_k: int, catalog: KnowledgeCatalog | None = None) -> list[ArticleSupport]:
    """Passages grouped by article (best article first), at most `top_k` articles."""
    out: dict[tuple[int, int], ArticleSupport] = {}
    for h in hits:
        key = (h.article_id, h.version)
        if key not in out:
            if len(out) >= top_k:
                continue
            entry = catalog.entries.get(h.article_id) if catalog is not None else None
            out[key] = ArticleSupport(article_id=h.article_id, version=h.version, title=h.title, score=float(h.score),
                                      intents=list(entry.intents if entry else h.passage.intents))
        out[key].passages.append(PassageRef(
            article_id=h.article_id, version=h.version, title=h.title, heading=h.passage.heading, text=h.passage.text,
            score=float(h.score), dense_score=float(h.dense_score), lexical_score=float(h.lexical_score)))
    return list(out.values())


class _Scored:
    """Scores of every passage for the ticket's queries, computed in one batched retrieval pass.

    Filters are applied to the one score matrix (intent, article ids), so the lexical part stays max-normalised
    over all passages: the same scale the draft threshold was calibrated on (unfiltered hybrid search).
    """

    def __init__(self, retriever: Any, queries: list[str]) -> None:
        self.snapshot, self.fused, self.dense, self.lexical = retriever.score_matrix(queries)
        self.article_ids = np.array([p.article_id for p in self.snapshot.passages], dtype=np.int64)

    def hits(self, row: int, *, k: int, intents: Sequence[str] = (), article_ids: Sequence[int] = ()) -> list[Any]:
        """Top-k passages for query `row`, optionally only those of the given intents / articles."""
        scores = np.asarray(self.fused[row], dtype=np.float64).copy()
        if intents:
            want = set(intents)
            keep = np.array([bool(want.intersection(p.intents)) for p in self.snapshot.passages], dtype=bool)
            scores[~keep] = -np.inf
        if article_ids:
            scores[~np.isin(self.article_ids, np.asarray(list(article_ids), dtype=np.int64))] = -np.inf
        out: list[Any] = []
        for j in np.argsort(-scores, kind="stable")[:k]:
            if not np.isfinite(scores[j]):
                break
            out.append(SearchHit(passage=self.snapshot.passages[int(j)], score=float(scores[j]),
                                 dense_score=float(self.dense[row, j]), lexical_score=float(self.lexical[row, j]),
                                 rank=len(out) + 1))
        return out


def _guideline_steps(support: ArticleSupport | None, catalog: KnowledgeCatalog | None,
                     done: Sequence[str]) -> list[NextBestAction]:
    """The best article's listed activities not yet done on this ticket, in the article's order."""
    if support is None or catalog is None or support.article_id not in catalog.entries:
        return []
    entry = catalog.entries[support.article_id]
    seen = {d.strip().lower() for d in done}
    steps: list[NextBestAction] = []
    for n, act in enumerate(entry.activities, start=1):
        if act.strip().lower() in seen:
            continue
        steps.append(NextBestAction(
            rank=len(steps) + 1, activity=act, source="knowledge",
            why=f"step {n} of {len(entry.activities)} in '{entry.title}' (article {entry.article_id} "
                f"version {entry.version}), the best match for this ticket (score {support.score:.2f}).",
        ))
    return steps


def assist(
    *,
    ticket_text: str,
    events: Any = None,
    case_attributes: Mapping[str, Any] | None = None,
    ticket_id: str | None = None,
    models: AssistModels | None = None,
    retriever: Any = None,
    catalog: KnowledgeCatalog | None = None,
    top_k: int = 3,
    top_n_actions: int = 3,
    min_probability: float = 0.05,
    ranking: Ranking = "outcome",
    draft_threshold: float = DEFAULT_DRAFT_THRESHOLD,
) -> AssistResult:
    """Next-best actions, supporting articles (for the ticket and each action) and a grounded draft for one ticket."""
    text = (ticket_text or "").strip()
    if not text:
        raise InvalidInput("ticket_text is empty: assist needs the customer's words", field="ticket_text")
    if top_k < 1:
        raise InvalidInput(f"top_k must be >= 1, got {top_k}", field="top_k")
    models = models or AssistModels()
    attrs = dict(case_attributes or {})
    notes: list[str] = []
    result = AssistResult(ticket_id=ticket_id, draft=build_draft(hits=[], threshold=draft_threshold),
                          model_versions=dict(models.versions))

    # --- intent: the model's answer, else what the caller already knows
    intent = attrs.get("intent")
    if models.intent is not None:
        pred = models.intent.predict_with_oos([text], top_k=3)[0]
        result.intent_confidence, result.intent_out_of_scope = float(pred.confidence), bool(pred.out_of_scope)
        if not pred.out_of_scope:
            intent = pred.label
        else:
            notes.append(f"the intent model finds this ticket out of scope (best guess {pred.label!r})")
    result.intent = None if intent is None else str(intent)

    # --- next-best actions from the ticket's events so far
    prefix = None
    if events is not None:
        prefix = events_frame(events, case_id=ticket_id, case_attributes={**attrs, **(
            {"intent": result.intent} if result.intent else {})})
        result.prefix = prefix[ACTIVITY].astype(str).tolist()
        if models.next_activity is None and models.outcomes is None:
            notes.append("no next-activity model is loaded: only guideline steps are suggested")
        else:
            actions, ctx = rank_actions(
                prefix=prefix, next_activity_model=models.next_activity, remaining_time_model=models.remaining_time,
                outcomes=models.outcomes, top_n=top_n_actions, min_probability=min_probability, ranking=ranking)
            result.actions = actions
            result.expected_remaining_hours = ctx.expected_remaining_hours
            result.sla_breach_probability = ctx.sla_breach_probability
            result.end_probability = ctx.end_probability

    if retriever is None:
        notes.append("no knowledge index: no articles and no draft")
        result.notes = notes
        return result

    # --- supporting knowledge for the ticket: articles for its intent first, the whole hub when they do not fit
    k = max(top_k * 4, 8)
    action_ids = {a.activity: catalog.for_activity(a.activity) for a in result.actions} if catalog else {}
    asked = [a for a in result.actions if action_ids.get(a.activity)]
    scored = _Scored(retriever, [text] + [f"{a.activity}. {text}" for a in asked])
    hits: list[Any] = []
    if result.intent and catalog is not None and catalog.for_topic(result.intent):
        hits = scored.hits(0, k=k, intents=[result.intent])
        if hits and hits[0].score < draft_threshold:
            notes.append(f"articles tagged {result.intent!r} match weakly (best {hits[0].score:.2f}); searched all")
            hits = []
    if not hits:
        hits = scored.hits(0, k=k)
    result.knowledge = group_hits(hits, top_k=top_k, catalog=catalog)
    best = result.knowledge[0] if result.knowledge else None
    snapshot = scored.snapshot
    body = None
    if hits and catalog is not None:
        entry = catalog.entries.get(hits[0].article_id)
        body = entry.body if entry is not None and entry.version == hits[0].version else None
    result.draft = build_draft(hits=hits, snapshot=snapshot, threshold=draft_threshold, article_body=body)

    # --- knowledge for each action: articles that list the activity, ranked for this ticket's text
    if catalog is not None:
        for row, a in enumerate(asked, start=1):
            a.knowledge = group_hits(scored.hits(row, k=k, article_ids=action_ids[a.activity]), top_k=top_k,
                                     catalog=catalog)
        done = {d.strip().lower() for d in result.prefix}
        for sup in result.knowledge:
            entry = catalog.entries.get(sup.article_id)
            if entry is not None:
                sup.steps = [s for s in entry.activities if s.strip().lower() not in done]
        if best is not None and best.score >= draft_threshold:
            result.guideline_steps = _guideline_steps(best, catalog, result.prefix)
    result.notes = notes
    return result


def record_feedback(
    *, session: Session, ticket_id: str, feedback_in: AssistFeedbackIn, by: str | None = None
) -> AssistFeedbackPublic:
    """Store an agent's accept / edit / reject of one suggestion (for the learning loop)."""
    if feedback_in.verdict == "edited" and not (feedback_in.edited_text or "").strip():
        raise InvalidInput("an 'edited' verdict needs edited_text (what the agent used instead)", field="edited_text")
    if feedback_in.kind in ("article", "draft") and feedback_in.verdict != "rejected" and feedback_in.article_id is None:
        raise InvalidInput(f"feedback on a{'n' if feedback_in.kind == 'article' else ''} {feedback_in.kind} "
                           "needs the article_id it cites", field="article_id")
    row = AssistFeedback(ticket_id=ticket_id, by=by, **feedback_in.model_dump())
    session.add(row)
    session.commit()
    session.refresh(row)
    return AssistFeedbackPublic.from_row(row)


def list_feedback(*, session: Session, ticket_id: str | None = None) -> list[AssistFeedbackPublic]:
    """Stored assist feedback, oldest first (one ticket's, or all)."""
    stmt = select(AssistFeedback).order_by(col(AssistFeedback.id))
    if ticket_id is not None:
        stmt = stmt.where(AssistFeedback.ticket_id == ticket_id)
    return [AssistFeedbackPublic.from_row(r) for r in session.exec(stmt).all()]


def articles_used(*, session: Session) -> dict[str, set[int]]:
    """ticket id -> articles an agent accepted or edited a suggestion of (what the gap report calls 'used')."""
    out: dict[str, set[int]] = {}
    stmt = select(AssistFeedback).where(col(AssistFeedback.verdict).in_(("accepted", "edited")))
    for r in session.exec(stmt).all():
        if r.article_id is not None:
            out.setdefault(r.ticket_id, set()).add(int(r.article_id))
    return out
