"""Check the vector index against SQL (the truth) and repair it; full re-embedding when the model changed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from knowledge_hub.index import ArticleDoc, KnowledgeIndex
from knowledge_hub.models import Article, ArticleStatus
from knowledge_hub.service import sync_article

log = logging.getLogger(__name__)


@dataclass
class ConsistencyReport:
    """Differences between SQL and the index (article ids)."""

    missing: list[int] = field(default_factory=list)  # published in SQL, absent from the index
    outdated: list[int] = field(default_factory=list)  # indexed at another version than SQL's
    # same id and version, but the indexed text (or its vector's text) is not SQL's: another writer, another database
    altered: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)  # in the index but not published in SQL
    flagged: list[int] = field(default_factory=list)  # marked index_stale after a failed write
    stored_model: str | None = None
    current_model: str = ""
    published: int = 0

    @property
    def model_mismatch(self) -> bool:
        """The index was embedded by another model: a full reindex is needed."""
        return self.stored_model is not None and self.stored_model != self.current_model

    @property
    def ok(self) -> bool:
        """Nothing to repair."""
        return not (self.missing or self.outdated or self.altered or self.orphaned or self.flagged
                    or self.model_mismatch)

    @property
    def unexplained(self) -> list[int]:
        """Differing articles that no pending write (index_stale flag) accounts for."""
        pending = set(self.flagged)
        return sorted({*self.missing, *self.outdated, *self.altered, *self.orphaned} - pending)

    def summary(self) -> str:
        """One line naming each kind of difference and the first ids."""
        parts = [f"{name} {ids[:5]}{'...' if len(ids) > 5 else ''}"
                 for name in ("missing", "outdated", "altered", "orphaned", "flagged")
                 if (ids := getattr(self, name))]
        if self.model_mismatch:
            parts.append(f"embedded with {self.stored_model}, current model {self.current_model}")
        return "; ".join(parts) or "consistent"


@dataclass
class RepairResult:
    """What repair found and did."""

    before: ConsistencyReport
    reindexed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    full_reindex: bool = False


def check(*, session: Session, index: KnowledgeIndex) -> ConsistencyReport:
    """Compare every article's SQL state with what the index holds: ids, versions and content hashes.

    A published article is `altered` when the index has its id and version but the passages' or the title's hashes
    are not those of SQL's text (or a stored passage text no longer matches the hash its vector was made from).
    """
    articles = list(session.exec(select(Article)).all())
    published = {a.id: a for a in articles if a.status == ArticleStatus.published and a.id is not None}
    indexed = index.indexed_articles()
    altered = []
    for aid, a in published.items():
        got = indexed.get(aid)
        if got is None or got.version != a.version:
            continue
        passages, title = index.expected(a.title, a.body)
        if got.passage_hashes != passages or got.title_hash != title:
            altered.append(aid)
    return ConsistencyReport(
        missing=sorted(a for a in published if a not in indexed),
        outdated=sorted(a for a, art in published.items() if a in indexed and indexed[a].version != art.version),
        altered=sorted(altered),
        orphaned=sorted(a for a in indexed if a not in published),
        flagged=sorted(a.id for a in articles if a.index_stale and a.id is not None),
        stored_model=index.stored_model,
        current_model=index.embedder.name,
        published=len(published),
    )


def sync_published(*, session: Session, index: KnowledgeIndex, articles: list[Article],
                   progress: Callable[[int], None] | None = None) -> tuple[list[int], list[int]]:
    """Re-embed published articles in batches (flagged index-stale until their write succeeded): (synced, failed)."""
    if not articles:
        return [], []
    for a in articles:
        a.index_stale = True
        session.add(a)
    session.commit()
    docs = [ArticleDoc(int(a.id or 0), a.version, a.title, a.body, list(a.intents), list(a.tags), str(a.status))
            for a in articles]
    try:
        index.upsert_articles(docs, progress=progress)
    except Exception as exc:  # the batch stays flagged; the next repair retries it
        log.warning("batch index write failed for %d articles (kept flagged): %s", len(articles), exc)
        return [], [int(a.id or 0) for a in articles]
    for a in articles:
        a.index_stale = False
        session.add(a)
    session.commit()
    return [int(a.id or 0) for a in articles], []


def reindex(*, session: Session, index: KnowledgeIndex,
            progress: Callable[[int], None] | None = None) -> RepairResult:
    """Drop the index and re-embed every published article with the current model (one command after a model change)."""
    before = check(session=session, index=index)
    index.reset()
    result = RepairResult(before=before, full_reindex=True)
    articles = list(session.exec(select(Article).order_by(col(Article.id))).all())
    ok, failed = sync_published(session=session, index=index, progress=progress,
                                articles=[a for a in articles if a.status == ArticleStatus.published])
    result.reindexed += ok
    result.failed += failed
    for a in articles:
        if a.status != ArticleStatus.published and a.index_stale:  # a removal that had failed: nothing to remove now
            assert a.id is not None
            (result.reindexed if sync_article(session=session, index=index, article=a) else result.failed).append(a.id)
    return result


def repair(*, session: Session, index: KnowledgeIndex,
           progress: Callable[[int], None] | None = None) -> RepairResult:
    """Fix every difference `check` finds, from SQL; a model change triggers a full reindex."""
    report = check(session=session, index=index)
    if report.model_mismatch:
        log.info("embedding model changed (%s -> %s): full reindex", report.stored_model, report.current_model)
        return reindex(session=session, index=index, progress=progress)
    result = RepairResult(before=report)
    todo = [a for aid in sorted(set(report.missing + report.outdated + report.altered + report.flagged))
            if (a := session.get(Article, aid)) is not None]
    ok, failed = sync_published(session=session, index=index, progress=progress,
                                articles=[a for a in todo if a.status == ArticleStatus.published])
    result.reindexed += ok
    result.failed += failed
    for article in todo:
        if article.status != ArticleStatus.published:
            assert article.id is not None
            done = sync_article(session=session, index=index, article=article)
            (result.reindexed if done else result.failed).append(article.id)
    for aid in report.orphaned:
        if aid in report.flagged:
            continue  # already synced above (unpublished article whose removal had failed)
        try:
            index.remove_article(aid)
            result.removed.append(aid)
        except Exception as exc:  # keep going; the next check shows it again
            log.warning("could not remove orphaned article %s from the index: %s", aid, exc)
            result.failed.append(aid)
    return result
