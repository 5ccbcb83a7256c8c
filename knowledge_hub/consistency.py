"""Check the vector index against SQL (the truth) and repair it; full re-embedding when the model changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlmodel import Session, select

from knowledge_hub.index import KnowledgeIndex
from knowledge_hub.models import Article, ArticleStatus
from knowledge_hub.service import sync_article

log = logging.getLogger(__name__)


@dataclass
class ConsistencyReport:
    """Differences between SQL and the index (article ids)."""

    missing: list[int] = field(default_factory=list)  # published in SQL, absent from the index
    outdated: list[int] = field(default_factory=list)  # indexed at another version than SQL's
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
        return not (self.missing or self.outdated or self.orphaned or self.flagged or self.model_mismatch)


@dataclass
class RepairResult:
    """What repair found and did."""

    before: ConsistencyReport
    reindexed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    full_reindex: bool = False


def check(*, session: Session, index: KnowledgeIndex) -> ConsistencyReport:
    """Compare every article's SQL state with what the index holds."""
    articles = list(session.exec(select(Article)).all())
    published = {a.id: a.version for a in articles if a.status == ArticleStatus.published and a.id is not None}
    indexed = index.indexed_versions()
    return ConsistencyReport(
        missing=sorted(a for a in published if a not in indexed),
        outdated=sorted(a for a, v in published.items() if a in indexed and indexed[a] != v),
        orphaned=sorted(a for a in indexed if a not in published),
        flagged=sorted(a.id for a in articles if a.index_stale and a.id is not None),
        stored_model=index.stored_model,
        current_model=index.embedder.name,
        published=len(published),
    )


def reindex(*, session: Session, index: KnowledgeIndex) -> RepairResult:
    """Drop the index and re-embed every published article with the current model (one command after a model change)."""
    before = check(session=session, index=index)
    index.reset()
    result = RepairResult(before=before, full_reindex=True)
    for a in session.exec(select(Article)).all():
        if a.status == ArticleStatus.published or a.index_stale:
            assert a.id is not None
            (result.reindexed if sync_article(session=session, index=index, article=a) else result.failed).append(a.id)
    return result


def repair(*, session: Session, index: KnowledgeIndex) -> RepairResult:
    """Fix every difference `check` finds, from SQL; a model change triggers a full reindex."""
    report = check(session=session, index=index)
    if report.model_mismatch:
        log.info("embedding model changed (%s -> %s): full reindex", report.stored_model, report.current_model)
        return reindex(session=session, index=index)
    result = RepairResult(before=report)
    for aid in sorted(set(report.missing + report.outdated + report.flagged)):
        article = session.get(Article, aid)
        if article is None:
            continue
        ok = sync_article(session=session, index=index, article=article)
        (result.reindexed if ok else result.failed).append(aid)
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
