"""Review workflow: draft -> in review -> published, and reviewed revisions of published articles.

Two kinds of review:

* **publish**: a draft is submitted; the article's status becomes `in_review` (not searchable, not editable) until a
  reviewer approves (-> published and indexed) or rejects it / the submitter withdraws it (-> draft again).
* **revision**: an edit (or a restore of an old version) of a *published* article is stored as a proposal; the live
  article keeps serving its current content until a reviewer approves, when the proposal becomes a new version.

The reviewer must be someone other than the person who submitted the review and the author of the content under
review. A proposal is checked against the version it was made from: if the article moved on since, approving is
refused (409) and the proposal has to be made again on the current version.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON
from sqlmodel import Field, Session, SQLModel, col, select

from core.errors import Conflict, InvalidInput, NotFound
from core.ids import storable_id
from knowledge_hub import service
from knowledge_hub.models import Article, ArticleStatus, ArticleUpdate, utcnow

CONTENT_FIELDS = ("title", "body", "tags", "intents", "activities")


class ReviewKind(StrEnum):
    """What approving a review does."""

    publish = "publish"
    revision = "revision"


class ReviewState(StrEnum):
    """Where a review stands."""

    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    withdrawn = "withdrawn"


class ArticleReview(SQLModel, table=True):
    """One request to publish a draft or to change a published article, with the content proposed."""

    __tablename__ = "kb_article_review"

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(index=True)
    kind: ReviewKind
    state: ReviewState = Field(default=ReviewState.pending, index=True)
    base_version: int  # the article version the proposal was made from
    title: str = Field(max_length=500)
    body: str = ""
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    intents: list[str] = Field(default_factory=list, sa_type=JSON)
    activities: list[str] = Field(default_factory=list, sa_type=JSON)
    author: str = ""  # who wrote the content under review
    submitted_by: str
    submitted_at: datetime = Field(default_factory=utcnow)
    note: str = Field(default="", max_length=2000)
    reviewer: str | None = None
    decided_at: datetime | None = None
    comment: str = Field(default="", max_length=2000)


class ReviewPublic(SQLModel):
    """A review as returned to callers."""

    id: int
    article_id: int
    kind: ReviewKind
    state: ReviewState
    base_version: int
    title: str
    body: str
    tags: list[str]
    intents: list[str]
    activities: list[str]
    author: str
    submitted_by: str
    submitted_at: datetime
    note: str
    reviewer: str | None
    decided_at: datetime | None
    comment: str


def upgrade_schema(engine: Any) -> None:
    """A PostgreSQL database created before the review workflow: add `in_review` to its article status type."""
    if engine.dialect.name != "postgresql":
        return  # SQLite stores the status as text
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        known = conn.exec_driver_sql("SELECT to_regtype('articlestatus')").scalar()  # on the search path
        if known is not None:
            conn.exec_driver_sql("ALTER TYPE articlestatus ADD VALUE IF NOT EXISTS 'in_review'")


def get_review(*, session: Session, review_id: int) -> ArticleReview:
    """The review with this id, or NotFound."""
    review = session.get(ArticleReview, review_id) if storable_id(review_id) else None
    if review is None:
        raise NotFound(f"review {review_id} not found", review_id=review_id)
    return review


def pending_for(*, session: Session, article_id: int) -> ArticleReview | None:
    """The article's open review, if any."""
    stmt = select(ArticleReview).where(ArticleReview.article_id == article_id,
                                       ArticleReview.state == ReviewState.pending)
    return session.exec(stmt).first()


def list_reviews(*, session: Session, state: ReviewState | None = ReviewState.pending, article_id: int | None = None,
                 limit: int = 200) -> list[ArticleReview]:
    """Reviews, newest first, optionally by state and article."""
    stmt = select(ArticleReview).order_by(col(ArticleReview.id).desc())
    if state is not None:
        stmt = stmt.where(ArticleReview.state == state)
    if article_id is not None:
        stmt = stmt.where(ArticleReview.article_id == article_id)
    return list(session.exec(stmt.limit(limit)).all())


def _content(article: Article) -> dict[str, Any]:
    return {"title": article.title, "body": article.body, "tags": list(article.tags),
            "intents": list(article.intents), "activities": list(article.activities)}


def submit(*, session: Session, article_id: int, by: str, note: str = "",
           changes: ArticleUpdate | None = None) -> ArticleReview:
    """Ask for a review: a draft to be published (its current content), or `changes` to a published article."""
    article = service.get(session=session, article_id=article_id)
    if pending_for(session=session, article_id=article_id) is not None:
        raise Conflict(f"article {article_id} already has a review waiting; approve, reject or withdraw it first",
                       article_id=article_id)
    content = _content(article)
    if article.status == ArticleStatus.draft:
        if changes is not None and changes.model_dump(exclude_unset=True, exclude_none=True):
            raise InvalidInput("a draft is edited directly; submit it for review as it is", field="changes")
        kind, author = ReviewKind.publish, article.author
    elif article.status == ArticleStatus.published:
        proposed = changes.model_dump(exclude_unset=True, exclude_none=True) if changes is not None else {}
        if not proposed or all(content.get(k) == v for k, v in proposed.items()):
            raise InvalidInput("a published article is reviewed for a change: propose at least one changed field",
                               field="changes")
        content.update(proposed)
        kind, author = ReviewKind.revision, by
    else:
        raise Conflict(f"article {article_id} is {article.status}; only drafts and published articles can be "
                       "submitted for review", article_id=article_id)
    review = ArticleReview(article_id=article_id, kind=kind, base_version=article.version, author=author,
                           submitted_by=by, note=note[:2000], **content)
    session.add(review)
    if kind == ReviewKind.publish:
        article.status = ArticleStatus.in_review
        article.updated_at = utcnow()
        session.add(article)
    session.commit()
    session.refresh(review)
    return review


def _check_reviewer(review: ArticleReview, by: str) -> None:
    if by in (review.submitted_by, review.author):
        raise Conflict(f"the reviewer must be someone other than the author: {by} wrote or submitted review "
                       f"{review.id}; another knowledge manager has to decide it", review_id=review.id)


def _open(session: Session, review_id: int) -> tuple[ArticleReview, Article]:
    review = get_review(session=session, review_id=review_id)
    if review.state != ReviewState.pending:
        raise Conflict(f"review {review_id} is already {review.state}", review_id=review_id)
    return review, service.get(session=session, article_id=review.article_id)


def _close(session: Session, review: ArticleReview, state: ReviewState, by: str, comment: str) -> None:
    review.state, review.reviewer, review.decided_at, review.comment = state, by, utcnow(), comment[:2000]
    session.add(review)


def approve(*, session: Session, index: service.ArticleIndex, review_id: int, by: str, comment: str = "") -> Article:
    """Approve (someone other than the author): publish the draft, or apply the revision as a new version."""
    review, article = _open(session, review_id)
    _check_reviewer(review, by)
    if article.version != review.base_version:
        raise Conflict(f"article {article.id} changed since the review was submitted (version {review.base_version} "
                       f"-> {article.version}); submit it again", review_id=review_id)
    _close(session, review, ReviewState.approved, by, comment)
    if review.kind == ReviewKind.publish:
        if article.status != ArticleStatus.in_review:
            raise Conflict(f"article {article.id} is {article.status}, not in review", review_id=review_id)
        session.commit()
        return service._set_status(session=session, index=index, article_id=review.article_id,
                                   status=ArticleStatus.published)
    session.commit()
    changes = ArticleUpdate(**{k: getattr(review, k) for k in CONTENT_FIELDS})
    return service.update(session=session, index=index, article_id=review.article_id, article_in=changes,
                          author=review.author, expected_version=review.base_version)


def reject(*, session: Session, review_id: int, by: str, comment: str = "") -> ArticleReview:
    """Send back with a comment (someone other than the author): a draft returns to draft, a revision is dropped."""
    review, article = _open(session, review_id)
    _check_reviewer(review, by)
    if not comment.strip():
        raise InvalidInput("say what has to change: a rejection needs a comment", field="comment")
    _close(session, review, ReviewState.rejected, by, comment)
    _back_to_draft(session, review, article)
    session.commit()
    session.refresh(review)
    return review


def withdraw(*, session: Session, review_id: int, by: str) -> ArticleReview:
    """The submitter takes the request back (a draft returns to draft)."""
    review, article = _open(session, review_id)
    if by != review.submitted_by:
        raise Conflict(f"only {review.submitted_by}, who submitted review {review_id}, can withdraw it",
                       review_id=review_id)
    _close(session, review, ReviewState.withdrawn, by, "")
    _back_to_draft(session, review, article)
    session.commit()
    session.refresh(review)
    return review


def _back_to_draft(session: Session, review: ArticleReview, article: Article) -> None:
    if review.kind == ReviewKind.publish and article.status == ArticleStatus.in_review:
        article.status = ArticleStatus.draft
        article.updated_at = utcnow()
        session.add(article)


def propose_restore(*, session: Session, article_id: int, version: int, by: str) -> ArticleReview:
    """Restoring an old version of a published article goes through review like any other change."""
    versions = {v.version: v for v in service.list_versions(session=session, article_id=article_id)}
    old = versions.get(version)
    if old is None:
        raise NotFound(f"article {article_id} has no version {version}", article_id=article_id, version=version)
    changes = ArticleUpdate(title=old.title, body=old.body, tags=list(old.tags), intents=list(old.intents),
                            activities=list(old.activities))
    return submit(session=session, article_id=article_id, by=by, note=f"restore version {version}", changes=changes)
