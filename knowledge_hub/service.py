"""Article service: SQL is the truth; every change that affects published content updates the index at once.

Write order: the SQL change is committed first with `index_stale=True`, then the index is written, then the flag is
cleared. If the index write fails (or the process dies in between) the SQL change stays and the flag tells
`knowledge_hub.consistency.repair` what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound
from core.ids import storable_id
from knowledge_hub.models import (
    Article,
    ArticleCreate,
    ArticleStatus,
    ArticleUpdate,
    ArticleVersion,
    utcnow,
)

log = logging.getLogger(__name__)


class ArticleIndex(Protocol):
    """The index operations the service needs (knowledge_hub.index.KnowledgeIndex implements them)."""

    def upsert_article(
        self, *, article_id: int, version: int, title: str, body: str, intents: list[str], tags: list[str],
        status: str = "published",
    ) -> int: ...

    def remove_article(self, article_id: int) -> None: ...


def _snapshot(article: Article, *, note: str) -> ArticleVersion:
    assert article.id is not None
    return ArticleVersion(
        article_id=article.id, version=article.version, title=article.title, body=article.body,
        tags=list(article.tags), intents=list(article.intents), activities=list(article.activities),
        status=article.status, author=article.author, note=note,
    )


def sync_article(*, session: Session, index: ArticleIndex, article: Article) -> bool:
    """Make the index match one article's SQL state; returns False (and leaves it marked stale) on failure."""
    assert article.id is not None
    article.index_stale = True
    session.add(article)
    session.commit()
    try:
        if article.status == ArticleStatus.published:
            index.upsert_article(
                article_id=article.id, version=article.version, title=article.title, body=article.body,
                intents=list(article.intents), tags=list(article.tags), status=str(article.status),
            )
        else:
            index.remove_article(article.id)
    except Exception as exc:  # any index failure: SQL stays committed, repair later
        log.warning("index write failed for article %s (kept in SQL, marked stale): %s", article.id, exc)
        session.refresh(article)
        return False
    article.index_stale = False
    session.add(article)
    session.commit()
    session.refresh(article)
    return True


# Ids are 64-bit integers in every database; a larger number names no article (and would overflow the driver).


def get(*, session: Session, article_id: int) -> Article:
    """The article with this id, or NotFound."""
    article = session.get(Article, article_id) if storable_id(article_id) else None
    if article is None:
        raise NotFound(f"article {article_id} not found", article_id=article_id)
    return article


def list_articles(
    *,
    session: Session,
    status: ArticleStatus | None = None,
    intent: str | None = None,
    tag: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Article]:
    """Articles ordered by id, optionally filtered by status, intent or tag."""
    stmt = select(Article).order_by(col(Article.id))
    if status is not None:
        stmt = stmt.where(Article.status == status)
    rows = list(session.exec(stmt).all())
    # JSON list membership is filtered in Python so the same code works on SQLite and PostgreSQL.
    if intent is not None:
        rows = [a for a in rows if intent in a.intents]
    if tag is not None:
        rows = [a for a in rows if tag in a.tags]
    return rows[offset: offset + limit]


def list_versions(*, session: Session, article_id: int) -> list[ArticleVersion]:
    """All stored versions of an article, oldest first."""
    get(session=session, article_id=article_id)
    stmt = select(ArticleVersion).where(ArticleVersion.article_id == article_id).order_by(col(ArticleVersion.version))
    return list(session.exec(stmt).all())


def create(*, session: Session, index: ArticleIndex, article_in: ArticleCreate, author: str) -> Article:
    """Store a new article (version 1); a published one is indexed in the same call."""
    article = Article.model_validate(article_in.model_dump(), update={"author": author, "version": 1})
    session.add(article)
    session.flush()
    session.add(_snapshot(article, note="created"))
    session.commit()
    session.refresh(article)
    if article.status == ArticleStatus.published:
        sync_article(session=session, index=index, article=article)
    return article


def _commit_version(session: Session, index: ArticleIndex, article: Article, *, note: str) -> Article:
    """Commit `article` as its new version with its snapshot; the answer is the version this call stored.

    Two edits of one article at the same time both try to store the same next version: the version table's unique
    key lets exactly one commit, the other is rolled back and answered 409 with the version now current. If another
    edit commits right after this one, the answer still reports what this call stored (not the other edit's
    version), and the index is left to that later edit, which syncs it itself.
    """
    assert article.id is not None
    article_id, stored = article.id, article.version
    session.add(article)
    session.add(_snapshot(article, note=note))
    try:
        session.commit()
    except (IntegrityError, OperationalError) as exc:
        session.rollback()
        if isinstance(exc, OperationalError) and "locked" not in str(exc).lower():
            raise  # not a competing write (SQLite reports one as "database is locked")
        current = session.get(Article, article_id)
        now = current.version if current is not None else None
        raise Conflict(
            f"article {article_id} was changed by another edit at the same time (now at version {now}); read it "
            "again and re-apply your change", article_id=article_id, current_version=now,
        ) from exc
    session.refresh(article)
    if article.version != stored:
        snap = session.exec(select(ArticleVersion).where(
            ArticleVersion.article_id == article_id, ArticleVersion.version == stored)).one()
        session.expunge(article)
        article.version, article.title, article.body, article.status = stored, snap.title, snap.body, snap.status
        article.tags, article.intents, article.activities = list(snap.tags), list(snap.intents), list(snap.activities)
        return article
    if article.status == ArticleStatus.published:
        sync_article(session=session, index=index, article=article)
    return article


def update(
    *,
    session: Session,
    index: ArticleIndex,
    article_id: int,
    article_in: ArticleUpdate,
    author: str,
    expected_version: int | None = None,
) -> Article:
    """Apply a partial edit as a new version; a published article is re-indexed in the same call."""
    article = get(session=session, article_id=article_id)
    if expected_version is not None and expected_version != article.version:
        raise Conflict(
            f"article {article_id} is at version {article.version}, not {expected_version}",
            article_id=article_id,
        )
    changes = article_in.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        return article
    if article.status == ArticleStatus.in_review:
        raise Conflict(f"article {article_id} is in review; its content cannot change until the review is decided "
                       "or withdrawn", article_id=article_id)
    for key, value in changes.items():
        setattr(article, key, value)
    article.version += 1
    article.author = author
    article.updated_at = utcnow()
    return _commit_version(session, index, article, note="edited: " + ", ".join(sorted(changes)))


def _set_status(*, session: Session, index: ArticleIndex, article_id: int, status: ArticleStatus) -> Article:
    article = get(session=session, article_id=article_id)
    was = article.status
    article.status = status
    article.updated_at = utcnow()
    session.add(article)
    session.commit()
    session.refresh(article)
    # Index only changes when the article enters or leaves "published" (or was left stale earlier).
    if ArticleStatus.published in (was, status) or article.index_stale:
        sync_article(session=session, index=index, article=article)
    return article


def publish(*, session: Session, index: ArticleIndex, article_id: int) -> Article:
    """Mark published and index it now (an article in review is published by approving its review)."""
    if get(session=session, article_id=article_id).status == ArticleStatus.in_review:
        raise Conflict(f"article {article_id} is in review: a reviewer other than its author approves it "
                       "(POST /v1/kb/reviews/{id}/approve)", article_id=article_id)
    return _set_status(session=session, index=index, article_id=article_id, status=ArticleStatus.published)


def unpublish(*, session: Session, index: ArticleIndex, article_id: int) -> Article:
    """Back to draft; removed from the index now."""
    return _set_status(session=session, index=index, article_id=article_id, status=ArticleStatus.draft)


def archive(*, session: Session, index: ArticleIndex, article_id: int) -> Article:
    """Mark archived; removed from the index now."""
    return _set_status(session=session, index=index, article_id=article_id, status=ArticleStatus.archived)


def delete(*, session: Session, index: ArticleIndex, article_id: int) -> None:
    """Delete an article and its versions; its passages leave the index now (or at the next repair)."""
    article = get(session=session, article_id=article_id)
    for v in session.exec(select(ArticleVersion).where(ArticleVersion.article_id == article_id)).all():
        session.delete(v)
    session.delete(article)
    session.commit()
    try:
        index.remove_article(article_id)
    except Exception as exc:  # the orphaned passages are found by consistency.check
        log.warning("index delete failed for article %s (deleted in SQL): %s", article_id, exc)


def restore_version(
    *, session: Session, index: ArticleIndex, article_id: int, version: int, author: str
) -> Article:
    """Make an old version's content current again, as a new version (history is never rewritten)."""
    article = get(session=session, article_id=article_id)
    if article.status == ArticleStatus.in_review:
        raise Conflict(f"article {article_id} is in review; withdraw the review before restoring a version",
                       article_id=article_id)
    old = session.exec(
        select(ArticleVersion).where(ArticleVersion.article_id == article_id, ArticleVersion.version == version)
    ).first() if storable_id(version) else None
    if old is None:
        raise NotFound(f"article {article_id} has no version {version}", article_id=article_id, version=version)
    article.title, article.body = old.title, old.body
    article.tags, article.intents, article.activities = list(old.tags), list(old.intents), list(old.activities)
    article.version += 1
    article.author = author
    article.updated_at = utcnow()
    return _commit_version(session, index, article, note=f"restored version {version}")


def bulk_create(
    *, session: Session, index: ArticleIndex, articles_in: Sequence[tuple[ArticleCreate, str]],
    progress: Callable[[int], None] | None = None,
) -> list[Article]:
    """Create many (article, author) pairs in one transaction, then index the published ones in one batch.

    Same guarantees as `create`: the SQL rows are committed (published ones flagged index-stale) before the index is
    written, and the flag is cleared only after the index write succeeded. `progress(n)` is told as each group of
    n published articles is indexed.
    """
    articles: list[Article] = []
    for article_in, author in articles_in:
        a = Article.model_validate(article_in.model_dump(), update={"author": author, "version": 1})
        a.index_stale = a.status == ArticleStatus.published
        session.add(a)
        articles.append(a)
    session.flush()
    for a in articles:
        session.add(_snapshot(a, note="created"))
    session.commit()
    published = [a for a in articles if a.status == ArticleStatus.published]
    upsert_many = getattr(index, "upsert_articles", None)
    if published and upsert_many is None:  # an index without batch writes: one article at a time
        for a in published:
            sync_article(session=session, index=index, article=a)
    elif published and upsert_many is not None:
        from knowledge_hub.index import ArticleDoc

        docs = [ArticleDoc(int(a.id or 0), a.version, a.title, a.body, list(a.intents), list(a.tags)) for a in published]
        try:
            upsert_many(docs, progress=progress)
        except Exception as exc:  # the whole batch stays flagged; repair re-indexes it
            log.warning("batch index write failed for %d articles (kept in SQL, marked stale): %s", len(published), exc)
        else:
            for a in published:
                a.index_stale = False
                session.add(a)
            session.commit()
    # One query per 500 reloads what was committed (a refresh per article cost one round trip each).
    ids = [a.id for a in articles if a.id is not None]
    for start in range(0, len(ids), 500):
        session.exec(select(Article).where(col(Article.id).in_(ids[start:start + 500]))
                     .execution_options(populate_existing=True)).all()
    return articles
