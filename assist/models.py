"""Assist data: typed results (actions, supporting knowledge, grounded draft, knowledge gaps) and the feedback table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from core.ids import MAX_DB_INT
from core.jsonbody import JsonBody

SuggestionKind = Literal["action", "article", "draft"]
Verdict = Literal["accepted", "edited", "rejected"]
ActionSource = Literal["model", "log", "knowledge", "effect"]

MAX_TEXT = 20_000
MAX_LABEL = 256


def utcnow() -> datetime:
    """Current time, tz-aware UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- supporting knowledge


class PassageRef(BaseModel):
    """One retrieved passage of a published article, with its scores."""

    article_id: int
    version: int
    title: str
    heading: str = ""
    text: str
    score: float
    dense_score: float
    lexical_score: float


class ArticleSupport(BaseModel):
    """An article that applies, with the passages that matched (best first) and its best score."""

    article_id: int
    version: int
    title: str
    score: float
    intents: list[str] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list)  # activities the article lists that the ticket has not done yet
    passages: list[PassageRef] = Field(default_factory=list)


# ---------------------------------------------------------------- next-best actions


class NextBestAction(BaseModel):
    """A step: an agent action ranked by its mined effect (`actions`), a guideline step, or a forecast next event.

    Agent actions carry the mined effect among similar tickets (`hours_change`, `reopen_change`, each with an
    interval, and the tickets on each side); forecast next events carry the next-activity model's probability and the
    remaining-time expectation after them.
    """

    rank: int
    activity: str
    source: ActionSource
    sources: list[str] = Field(default_factory=list)  # where an agent action was drawn from: "guideline", "log"
    decision_point: str | None = None  # the state the effect is measured from
    similar_group: str | None = None  # which tickets count as similar (their intent, or "__all__")
    n_with: int | None = None  # similar tickets that took the action after the decision point
    n_without: int | None = None
    hours_change: float | None = None  # mean hours to resolution, with - without (negative = sooner)
    hours_interval: list[float] | None = None  # [low, high] at `interval_level`
    reopen_change: float | None = None  # reopen rate, with - without (negative = fewer reopenings)
    reopen_interval: list[float] | None = None
    interval_level: float | None = None
    feedback: dict[str, int] = Field(default_factory=dict)  # agents' verdicts on this action so far
    probability: float | None = None  # next-activity model (source "model") or share of similar cases ("log")
    expected_remaining_hours: float | None = None  # until the case ends, when this step is taken now
    expected_change_hours: float | None = None  # vs the expectation without choosing a step (negative = faster)
    sla_breach_probability: float | None = None  # after taking the step
    similar_cases: int | None = None  # cases in the mined log that took this step from the same state
    similar_remaining_hours: float | None = None  # their mean hours from this step to the end
    why: str = ""
    knowledge: list[ArticleSupport] = Field(default_factory=list)


# ---------------------------------------------------------------- grounded draft


class DraftPart(BaseModel):
    """One piece of a draft and where it comes from: the template's own text, a ticket field, or the article."""

    text: str
    source: Literal["template", "ticket", "article"]
    field: str | None = None  # ticket field name, or the article part ("answer", "steps")


class DraftReply(BaseModel):
    """A reply built from a template, the ticket's own fields and one article's verbatim text, or why there is none.

    `text` is exactly the concatenation of `parts`, each traceable to its source.
    """

    grounded: bool
    text: str
    article_id: int | None = None
    article_version: int | None = None
    article_title: str | None = None
    section: str | None = None  # heading the quoted text came from ("" for best passages)
    score: float | None = None
    threshold: float
    quoted: list[str] = Field(default_factory=list)  # the exact article snippets the body is made of
    reason: str = ""
    parts: list[DraftPart] = Field(default_factory=list)
    template_id: int | None = None  # the stored template used (None: the built-in default)
    template_scope: str | None = None  # "intent/channel" the template was written for ("*" = any)


class AssistResult(BaseModel):
    """Everything assist suggests for one open ticket."""

    ticket_id: str | None = None
    intent: str | None = None
    intent_confidence: float | None = None
    intent_out_of_scope: bool | None = None
    prefix: list[str] = Field(default_factory=list)  # activities so far
    expected_remaining_hours: float | None = None  # now, before any suggested step
    sla_breach_probability: float | None = None
    end_probability: float | None = None  # next-activity model's probability the case ends now
    actions: list[NextBestAction] = Field(default_factory=list)  # agent actions with enough evidence, best first
    next_steps: list[NextBestAction] = Field(default_factory=list)  # forecast next events (timeline, not advice)
    guideline_steps: list[NextBestAction] = Field(default_factory=list)  # the best article's listed steps not done yet
    evidence_rule: dict[str, float] = Field(default_factory=dict)  # what an action needs to be shown
    knowledge: list[ArticleSupport] = Field(default_factory=list)
    draft: DraftReply
    notes: list[str] = Field(default_factory=list)
    model_versions: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- feedback (the learning loop)


class AssistFeedback(SQLModel, table=True):
    """An agent's verdict on one assist suggestion (an action, an article or the draft)."""

    __tablename__ = "assist_feedback"

    id: int | None = SQLField(default=None, primary_key=True)
    ticket_id: str = SQLField(max_length=128, index=True)
    kind: str = SQLField(max_length=16, index=True)
    suggestion: str = SQLField(max_length=MAX_LABEL)  # activity name, article title or "draft"
    verdict: str = SQLField(max_length=16, index=True)
    article_id: int | None = SQLField(default=None, index=True)
    article_version: int | None = None
    rank: int | None = None
    edited_text: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    comment: str | None = SQLField(default=None, sa_column=Column(Text, nullable=True))
    by: str | None = SQLField(default=None, max_length=128)
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class AssistFeedbackIn(JsonBody):
    """Accept / edit / reject one suggestion; an edit carries the text the agent sent instead."""

    model_config = ConfigDict(extra="forbid")

    kind: SuggestionKind
    suggestion: str = Field(min_length=1, max_length=MAX_LABEL)
    verdict: Verdict
    # bounded like the integer columns that store them (a larger number is a 422, not a database overflow)
    article_id: int | None = Field(default=None, ge=1, le=MAX_DB_INT)
    article_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    rank: int | None = Field(default=None, ge=1, le=2**31 - 1)
    edited_text: str | None = Field(default=None, max_length=MAX_TEXT)
    comment: str | None = Field(default=None, max_length=4_000)


class AssistFeedbackPublic(BaseModel):
    """Stored assist feedback."""

    id: int
    ticket_id: str
    kind: str
    suggestion: str
    verdict: str
    article_id: int | None
    article_version: int | None
    rank: int | None
    edited_text: str | None
    comment: str | None
    by: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: AssistFeedback) -> AssistFeedbackPublic:
        """Build from a stored row (SQLite drops the time zone: read it back as UTC)."""
        assert row.id is not None
        at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        return cls(id=row.id, ticket_id=row.ticket_id, kind=row.kind, suggestion=row.suggestion, verdict=row.verdict,
                   article_id=row.article_id, article_version=row.article_version, rank=row.rank,
                   edited_text=row.edited_text, comment=row.comment, by=row.by, created_at=at)


# ---------------------------------------------------------------- draft templates (admin-editable)

MAX_TEMPLATE = 4_000
ANY = "*"


class DraftTemplate(SQLModel, table=True):
    """A reply template for one intent and channel ("*" = any); edits bump the version and are audited."""

    __tablename__ = "assist_draft_template"
    __table_args__ = (UniqueConstraint("intent", "channel", name="uq_draft_template_scope"),)

    id: int | None = SQLField(default=None, primary_key=True)
    intent: str = SQLField(max_length=MAX_LABEL, index=True)
    channel: str = SQLField(max_length=MAX_LABEL)
    text: str = SQLField(sa_column=Column(Text, nullable=False))
    version: int = 1
    updated_by: str | None = SQLField(default=None, max_length=128)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class DraftTemplateIn(JsonBody):
    """The template text: lines of plain text and {placeholders}; `a || b` on one line = the first that can fill."""

    model_config = ConfigDict(extra="forbid")

    # The schema states one rule of assist.draft.check_template: a line must quote the article.
    text: str = Field(min_length=1, max_length=MAX_TEMPLATE, pattern=r"\{(answer|steps)\}")


class DraftTemplatePublic(BaseModel):
    """A stored draft template."""

    id: int
    intent: str
    channel: str
    text: str
    version: int
    updated_by: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: DraftTemplate) -> DraftTemplatePublic:
        """Build from a stored row (time zone restored as UTC)."""
        assert row.id is not None
        at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        return cls(id=row.id, intent=row.intent, channel=row.channel, text=row.text, version=row.version,
                   updated_by=row.updated_by, updated_at=at)


# ---------------------------------------------------------------- knowledge gaps


class GapExample(BaseModel):
    """One ticket of a topic and what the knowledge base offered for it."""

    case_id: str
    text: str
    top_article_id: int | None = None
    top_article_title: str | None = None
    top_score: float | None = None
    covered: bool = False


class GapTopic(BaseModel):
    """One intent / topic: how much work it causes and how well the knowledge base covers it."""

    rank: int
    topic: str
    cases: int
    volume_share: float  # of all cases
    hours_share: float  # of all case hours (volume x cost)
    mean_hours: float  # mean case duration
    cost_ratio: float  # mean duration vs the mean of all other topics
    coverage: float  # share of sampled tickets whose best passage applies and scores >= threshold
    mean_top_score: float
    articles_for_topic: int  # published articles tagged with this topic
    gap_score: float  # hours_share x (1 - coverage)
    why: str
    examples: list[GapExample] = Field(default_factory=list)
    rejected_suggestions: int = 0  # articles / drafts agents rejected on this topic's tickets
    agent_answers: list[str] = Field(default_factory=list)  # replies agents wrote instead (material for an article)


class ArticleUsage(BaseModel):
    """How an article is retrieved and whether the tickets that used it resolved faster."""

    article_id: int
    title: str
    version: int
    top1: int  # sampled tickets where it was the best article
    topk: int  # sampled tickets where it was among the top-k
    used_cases: int  # tickets where an agent accepted / edited a suggestion citing it
    mean_hours_used: float | None = None
    mean_hours_unused: float | None = None  # same topics, article not used
    hours_difference: float | None = None  # used - unused (negative = shortens resolution)
    verdict: Literal["never_retrieved", "does_not_shorten", "shortens", "not_enough_use"]


class GapReport(BaseModel):
    """What knowledge managers should write next, and which articles do not earn their place."""

    topics: list[GapTopic]
    never_retrieved: list[ArticleUsage] = Field(default_factory=list)
    does_not_shorten: list[ArticleUsage] = Field(default_factory=list)
    articles: list[ArticleUsage] = Field(default_factory=list)
    threshold: float
    tickets_sampled: int
    cases: int
