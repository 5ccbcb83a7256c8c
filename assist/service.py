"""Assist service: for an open ticket, agent actions ranked by mined effect, supporting knowledge, guideline steps, a
templated grounded draft and the forecast next events; agent feedback; draft templates.

Everything heavy is passed in (models, the mined action effects, the retriever, a catalog of published articles read
from SQL), so the same function serves the HTTP API, the CLI, tests and benchmarks. Retrieval goes through the live
index on every call: an article edited, unpublished or restored is what the very next call sees.

* Actions (`assist.effects`): the matching article's guideline steps and the actions agents took on similar tickets
  (same intent), not yet done on this ticket, ranked by their mined effect on hours to resolution (then reopening),
  each with its support and interval, shown only when the evidence meets the `EvidenceRule`. Process states
  (milestones, hand-overs, system and customer events) are never actions; they stay in the forecast `next_steps`.
* Knowledge: articles tagged with the ticket's intent first (above `intent_draft_threshold`), else the whole hub
  (above the hub's calibrated abstain threshold); the draft fills the admin's template for the intent and channel,
  and quotes only an article tagged with the ticket's intent or with none (one tagged for other intents is shown,
  never quoted: for an intent without an article that is a knowledge gap, not an answer).
* Feedback: actions and articles agents rejected more often than they used rank last; a rejected article is not
  drafted from; the gap report counts rejections and lists agents' own replies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlmodel import Session, col, select

from assist.actions import TASK_STEP_OUTCOMES, Ranking, StepOutcomes, events_frame, rank_actions
from assist.draft import (
    DEFAULT_DRAFT_THRESHOLD,
    DEFAULT_INTENT_DRAFT_THRESHOLD,
    DEFAULT_TEMPLATE,
    build_draft,
    check_template,
    question_of,
)
from assist.effects import ActionEffects, EvidenceRule, rank_by_effect
from assist.models import (
    ANY,
    ArticleSupport,
    AssistFeedback,
    AssistFeedbackIn,
    AssistFeedbackPublic,
    AssistResult,
    DraftTemplate,
    DraftTemplateIn,
    DraftTemplatePublic,
    NextBestAction,
    PassageRef,
    utcnow,
)
from core.errors import InvalidInput, NotFound
from insight.eventlog.schema import ACTIVITY
from knowledge_hub.models import Article, ArticleStatus, SearchHit


class BundleModels(Protocol):
    """What assist takes from routing's `ModelBundle` (assist may not import routing): three models and their
    versions. A model the bundle lacks is None."""

    @property
    def intent(self) -> object: ...

    @property
    def next_activity(self) -> object: ...

    @property
    def remaining_time(self) -> object: ...

    @property
    def versions(self) -> Mapping[str, str]: ...


@dataclass
class AssistModels:
    """The models assist uses; any may be None (assist then does what it can without it)."""

    intent: Any = None
    next_activity: Any = None
    remaining_time: Any = None
    outcomes: StepOutcomes | None = None
    versions: dict[str, str] = field(default_factory=dict)
    effects: ActionEffects | None = None  # else the step outcomes' mined effects (`outcomes.effects_`)

    @classmethod
    def from_bundle(cls, bundle: BundleModels | None, *, outcomes: StepOutcomes | None = None,
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


@dataclass
class FeedbackStats:
    """Agents' verdicts so far: per action, per article, and per (intent, article); used to demote suggestions.

    A suggestion is demoted when agents rejected it at least `min_rejections` times and more often than they used it
    (accepted or edited); demoted actions rank after the others, demoted articles after the other articles and are
    not drafted from.
    """

    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    articles: dict[int, dict[str, int]] = field(default_factory=dict)
    min_rejections: int = 3

    @staticmethod
    def _demoted(c: dict[str, int], n: int) -> bool:
        used = c.get("accepted", 0) + c.get("edited", 0)
        return c.get("rejected", 0) >= n and c.get("rejected", 0) > used

    def demoted_actions(self) -> set[str]:
        """Actions (lower-case) agents mostly rejected."""
        return {a for a, c in self.actions.items() if self._demoted(c, self.min_rejections)}

    def demoted_articles(self) -> set[int]:
        """Articles agents mostly rejected (as articles or drafts)."""
        return {a for a, c in self.articles.items() if self._demoted(c, self.min_rejections)}


def feedback_stats(*, session: Session, min_rejections: int = 3) -> FeedbackStats:
    """Count the stored verdicts per action and per article."""
    out = FeedbackStats(min_rejections=min_rejections)
    for r in session.exec(select(AssistFeedback)).all():
        if r.kind == "action":
            c = out.actions.setdefault(r.suggestion.strip().lower(), {})
            c[r.verdict] = c.get(r.verdict, 0) + 1
        if r.kind in ("article", "draft") and r.article_id is not None:
            c = out.articles.setdefault(int(r.article_id), {})
            c[r.verdict] = c.get(r.verdict, 0) + 1
    return out


def _fmt_hours(h: float) -> str:
    return f"{h / 24:.1f} days" if abs(h) >= 48 else f"{h:.1f} h"


def _effect_action(rank: int, r: Any, level: float, fb: dict[str, int], demoted: bool) -> NextBestAction:
    e = r.effect
    who = "all tickets" if e.group == "__all__" else f"'{e.group}' tickets"
    faster = "sooner" if e.hours_change < 0 else "later"
    why = (f"Among {who} that reached '{e.decision_point}', the {e.n_with} that took this step resolved "
           f"{_fmt_hours(abs(e.hours_change))} {faster} on average than the {e.n_without} that did not "
           f"({level * 100:g}% interval {e.hours_ci[0]:+.1f} to {e.hours_ci[1]:+.1f} h) and were reopened "
           f"{e.reopen_with:.0%} vs {e.reopen_without:.0%} of the time.")
    if "guideline" in r.sources:
        why += " The matching article lists it as a step."
    if demoted:
        why += f" Agents rejected it {fb.get('rejected', 0)} times: ranked last."
    return NextBestAction(
        rank=rank, activity=r.activity, source="effect", sources=list(r.sources), decision_point=e.decision_point,
        similar_group=e.group, n_with=e.n_with, n_without=e.n_without, hours_change=e.hours_change,
        hours_interval=[e.hours_ci[0], e.hours_ci[1]], reopen_change=e.reopen_change,
        reopen_interval=[e.reopen_ci[0], e.reopen_ci[1]], interval_level=level, feedback=dict(fb),
        expected_change_hours=e.hours_change, similar_cases=e.n_with, why=why)


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
    draft_threshold: float | None = None,
    intent_draft_threshold: float = DEFAULT_INTENT_DRAFT_THRESHOLD,
    evidence: EvidenceRule | None = None,
    feedback: FeedbackStats | None = None,
    template: DraftTemplatePublic | None = None,
    ticket_fields: Mapping[str, Any] | None = None,
    text_is_the_tickets: bool = True,
) -> AssistResult:
    """Agent actions ranked by mined effect, supporting articles, guideline steps, a templated grounded draft and
    the forecast next events, for one ticket.

    `ticket_fields` are what the helpdesk form holds (customer_name, order_id, product, subject, body); the draft
    quotes them. `draft_threshold` None takes the retriever's calibrated `abstain_threshold` when it has one; it
    applies when the whole hub is searched. When the ticket's intent has tagged articles, one of them is drafted
    from if it scores at least `intent_draft_threshold` (the intent says what the ticket is about).
    `text_is_the_tickets=False` (an agent's own text instead of the ticket's): an intent from `case_attributes`
    describes the ticket, not this text, so the knowledge and the draft are chosen by the text alone (the intent
    model's in-scope answer for it, else no intent).
    """
    text = (ticket_text or "").strip()
    if not text:
        raise InvalidInput("ticket_text is empty: assist needs the customer's words", field="ticket_text")
    if top_k < 1:
        raise InvalidInput(f"top_k must be >= 1, got {top_k}", field="top_k")
    if draft_threshold is None:
        calibrated = getattr(retriever, "abstain_threshold", None)
        if callable(calibrated):
            calibrated = calibrated()
        draft_threshold = float(calibrated) if isinstance(calibrated, (int, float)) else DEFAULT_DRAFT_THRESHOLD
    models = models or AssistModels()
    rule = evidence or EvidenceRule()
    fb = feedback or FeedbackStats()
    attrs = dict(case_attributes or {})
    notes: list[str] = []
    result = AssistResult(ticket_id=ticket_id, draft=build_draft(hits=[], threshold=draft_threshold),
                          model_versions=dict(models.versions),
                          evidence_rule={"min_support": float(rule.min_support),
                                         "require_interval": float(rule.require_interval)})

    # --- intent: the model's answer, else what the caller already knows
    intent = attrs.get("intent")
    text_intent = intent if text_is_the_tickets else None  # the intent the knowledge and the draft are chosen by
    if models.intent is not None:
        pred = models.intent.predict_with_oos([text], top_k=3)[0]
        result.intent_confidence, result.intent_out_of_scope = float(pred.confidence), bool(pred.out_of_scope)
        if not pred.out_of_scope:
            intent = text_intent = pred.label
        else:
            notes.append(f"the intent model finds this ticket out of scope (best guess {pred.label!r})")
    result.intent = None if intent is None else str(intent)

    # --- forecast of the next events (the timeline's likely next states; not advice)
    prefix = None
    if events is not None:
        prefix = events_frame(events, case_id=ticket_id, case_attributes={**attrs, **(
            {"intent": result.intent} if result.intent else {})})
        result.prefix = prefix[ACTIVITY].astype(str).tolist()
        if models.next_activity is not None or models.outcomes is not None:
            steps, ctx = rank_actions(
                prefix=prefix, next_activity_model=models.next_activity, remaining_time_model=models.remaining_time,
                outcomes=models.outcomes, top_n=top_n_actions, min_probability=min_probability, ranking=ranking)
            result.next_steps = steps
            result.expected_remaining_hours = ctx.expected_remaining_hours
            result.sla_breach_probability = ctx.sla_breach_probability
            result.end_probability = ctx.end_probability

    effects = models.effects
    if effects is None and models.outcomes is not None:
        effects = getattr(models.outcomes, "effects_", None)

    guideline: list[str] = []
    if retriever is None:
        notes.append("no knowledge index: no articles and no draft")
    else:
        _knowledge(result, text=text, intent=None if text_intent is None else str(text_intent), retriever=retriever,
                   catalog=catalog, top_k=top_k, threshold=draft_threshold,
                   intent_threshold=intent_draft_threshold,
                   demoted_articles=fb.demoted_articles(), notes=notes, template=template,
                   fields=_draft_fields(ticket_fields, attrs))
        if result.guideline_steps:
            guideline = [g.activity for g in result.guideline_steps]

    # --- agent actions: guideline steps and what agents did on similar tickets, ranked by their mined effect
    if effects is None:
        notes.append("no mined action effects are loaded: no action can be ranked by its effect")
    else:
        demoted = fb.demoted_actions()
        ranked = rank_by_effect(effects=effects, group=result.intent, guideline=guideline, done=result.prefix,
                                rule=rule, demoted=demoted)
        result.actions = [
            _effect_action(i, r, effects.level, fb.actions.get(r.activity.strip().lower(), {}),
                           r.activity.strip().lower() in demoted)
            for i, r in enumerate(ranked[:top_n_actions], start=1)]
        for a in result.actions:
            a.knowledge = [k for k in result.knowledge
                           if a.activity.strip().lower() in {x.strip().lower() for x in k.steps}][:1]
        if not result.actions:
            notes.append(f"no agent action has enough evidence yet (each side needs {rule.min_support} similar "
                         "tickets and an interval that excludes no effect)")
    result.notes = notes
    return result


def _may_answer(catalog: KnowledgeCatalog | None, article_id: int, intent: str | None) -> bool:
    """Whether an article may be quoted for a ticket of `intent`: tagged with it, or tagged with no intent (or the
    ticket's intent or the article's tags are unknown)."""
    if not intent or catalog is None:
        return True
    entry = catalog.entries.get(article_id)
    return entry is None or not entry.intents or intent in entry.intents


def _draft_fields(ticket_fields: Mapping[str, Any] | None, attrs: Mapping[str, Any]) -> dict[str, str | None]:
    f = {k: (None if v is None else str(v)) for k, v in (ticket_fields or {}).items()}
    out: dict[str, str | None] = {
        "customer_name": f.get("customer_name") or f.get("name"),
        "order_id": f.get("order_id") or f.get("order"),
        "product": f.get("product") or (str(attrs["product"]) if attrs.get("product") else None),
        "subject": f.get("subject"),
        "question": question_of(f.get("subject") or "", f.get("body") or ""),
    }
    return out


def _knowledge(result: AssistResult, *, text: str, intent: str | None, retriever: Any, catalog: KnowledgeCatalog | None, top_k: int,
               threshold: float, intent_threshold: float, demoted_articles: set[int], notes: list[str],
               template: DraftTemplatePublic | None, fields: dict[str, str | None]) -> None:
    """Supporting articles for the ticket (its intent's first), the draft, guideline steps, per-step knowledge."""
    k = max(top_k * 4, 8)
    scored = _Scored(retriever, [text])
    hits: list[Any] = []
    if intent and catalog is not None and catalog.for_topic(intent):
        hits = scored.hits(0, k=k, intents=[intent])
        if hits and hits[0].score < intent_threshold:
            notes.append(f"articles tagged {intent!r} match weakly (best {hits[0].score:.2f}); searched all")
            hits = []
        elif hits:
            threshold = intent_threshold
    if not hits:
        hits = scored.hits(0, k=k)
    if demoted_articles and hits:
        # Articles agents mostly rejected go after the others (stable: retrieval order otherwise).
        kept = [h for h in hits if h.article_id not in demoted_articles]
        if kept and kept[0].article_id != hits[0].article_id:
            notes.append(f"article {hits[0].article_id} was rejected by agents more often than used; ranked after "
                         "the others")
        hits = kept + [h for h in hits if h.article_id in demoted_articles]
    result.knowledge = group_hits(hits, top_k=top_k, catalog=catalog)
    if hits and hits[0].article_id in demoted_articles:
        # Only articles agents keep rejecting are left: list them, but draft nothing from them.
        notes.append(f"article {hits[0].article_id} was rejected by agents more often than used; no draft from it")
        result.draft = build_draft(hits=[], threshold=threshold)
        result.draft.reason = "the only matching articles were rejected by agents more often than used"
        return
    best = result.knowledge[0] if result.knowledge else None
    # The draft quotes only an article that may answer this ticket's intent: one tagged with it, or one with no
    # intent tags. An article its knowledge manager tagged for other intents answers those; quoting it for a ticket
    # of an intent the hub has no article for is the off-topic answer of a knowledge gap. The agent still sees it
    # among the supporting articles.
    draft_hits = [h for h in hits if _may_answer(catalog, h.article_id, intent)]
    gap_note = None
    if hits and not draft_hits:
        gap_note = (f"no published article is tagged for intent {intent!r}; the best matches are tagged for "
                    "other intents, so nothing is drafted (a knowledge gap)")
    elif hits and draft_hits[0] is not hits[0]:
        notes.append(f"article {hits[0].article_id} matches best but is tagged for other intents than "
                     f"{intent!r}; the draft quotes article {draft_hits[0].article_id}")
    body = None
    if draft_hits and catalog is not None:
        entry = catalog.entries.get(draft_hits[0].article_id)
        body = entry.body if entry is not None and entry.version == draft_hits[0].version else None
    tpl = template.text if template is not None else DEFAULT_TEMPLATE
    result.draft = build_draft(hits=draft_hits, snapshot=scored.snapshot, threshold=threshold, article_body=body,
                               template=tpl, fields=fields, template_id=template.id if template else None,
                               template_scope=f"{template.intent}/{template.channel}" if template else None)
    if gap_note is not None:
        notes.append(gap_note)
        result.draft.reason, result.draft.score = gap_note, float(hits[0].score)  # the best match, not quoted
    if catalog is not None:
        done = {d.strip().lower() for d in result.prefix}
        for sup in result.knowledge:
            entry = catalog.entries.get(sup.article_id)
            if entry is not None:
                sup.steps = [s for s in entry.activities if s.strip().lower() not in done]
        if best is not None and best.score >= threshold:
            result.guideline_steps = _guideline_steps(best, catalog, result.prefix)
    # Each guideline step gets the passages of the articles that list it, ranked for this ticket's text.
    for g in result.guideline_steps:
        ids = catalog.for_activity(g.activity) if catalog is not None else []
        g.knowledge = [s for s in result.knowledge if s.article_id in ids][:1]


# ---------------------------------------------------------------- draft templates


def _scope(value: str | None) -> str:
    v = (value or ANY).strip()
    return v or ANY


def get_template(*, session: Session, intent: str | None, channel: str | None) -> DraftTemplatePublic | None:
    """The most specific stored template: (intent, channel), (intent, *), (*, channel), (*, *); None = built-in."""
    i, c = _scope(intent), _scope(channel)
    for key in ((i, c), (i, ANY), (ANY, c), (ANY, ANY)):
        row = session.exec(select(DraftTemplate).where(DraftTemplate.intent == key[0],
                                                       DraftTemplate.channel == key[1])).first()
        if row is not None:
            return DraftTemplatePublic.from_row(row)
    return None


def list_templates(*, session: Session) -> list[DraftTemplatePublic]:
    """Every stored template, by intent and channel."""
    rows = session.exec(select(DraftTemplate).order_by(col(DraftTemplate.intent), col(DraftTemplate.channel)))
    return [DraftTemplatePublic.from_row(r) for r in rows.all()]


def put_template(*, session: Session, intent: str, channel: str, template_in: DraftTemplateIn,
                 by: str | None = None) -> DraftTemplatePublic:
    """Create or replace the template of one intent and channel ("*" = any); a replacement bumps the version."""
    check_template(template_in.text)
    i, c = _scope(intent), _scope(channel)
    row = session.exec(select(DraftTemplate).where(DraftTemplate.intent == i, DraftTemplate.channel == c)).first()
    if row is None:
        row = DraftTemplate(intent=i, channel=c, text=template_in.text, updated_by=by)
    else:
        row.text, row.version, row.updated_by, row.updated_at = template_in.text, row.version + 1, by, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return DraftTemplatePublic.from_row(row)


def delete_template(*, session: Session, intent: str, channel: str) -> None:
    """Remove one stored template (drafts fall back to a wider one, then the built-in)."""
    row = session.exec(select(DraftTemplate).where(DraftTemplate.intent == _scope(intent),
                                                   DraftTemplate.channel == _scope(channel))).first()
    if row is None:
        raise NotFound(f"no draft template for intent {intent!r} and channel {channel!r}")
    session.delete(row)
    session.commit()


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
