"""Knowledge-hub routes: article CRUD, versions, publish / unpublish / archive, import, search, consistency."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.auth import Principal, require, set_audit_object
from api.deps import get_kb_index, get_session, kb_retriever
from api.errors import ERROR_RESPONSES
from knowledge_hub import service
from knowledge_hub.models import (
    ArticleCreate,
    ArticlePublic,
    ArticleStatus,
    ArticleUpdate,
    ArticleVersionPublic,
)

router = APIRouter(prefix="/v1/kb", tags=["knowledge hub"], responses=ERROR_RESPONSES)

WRITERS = ("knowledge_manager",)
READERS = ("knowledge_manager", "agent", "helpdesk", "analyst")

SessionDep = Annotated[Session, Depends(get_session)]
IndexDep = Annotated[Any, Depends(get_kb_index)]


class ImportIn(BaseModel):
    """Articles to import in one call: all are validated before any is stored."""

    model_config = ConfigDict(extra="forbid")

    articles: list[ArticleCreate] = Field(min_length=1, max_length=500)


class ImportPublic(BaseModel):
    """What an import stored."""

    created: list[int]
    index_stale: list[int]


class HitPublic(BaseModel):
    """One retrieved passage."""

    article_id: int
    version: int
    title: str
    heading: str
    text: str
    score: float
    dense_score: float
    lexical_score: float
    rank: int


class ConsistencyPublic(BaseModel):
    """Differences between SQL (the truth) and the vector index."""

    ok: bool
    published: int
    missing: list[int]
    outdated: list[int]
    altered: list[int] = Field(default=[], description="indexed at SQL's version but with other content (hashes differ)")
    orphaned: list[int]
    flagged: list[int]
    stored_model: str | None
    current_model: str
    repaired: list[int] = []
    removed: list[int] = []
    failed: list[int] = []


@router.get("/articles", response_model=list[ArticlePublic])
def list_articles(
    session: SessionDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
    status: ArticleStatus | None = None,
    intent: Annotated[str | None, Query(max_length=128)] = None,
    tag: Annotated[str | None, Query(max_length=128)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Articles, optionally filtered by status, intent or tag."""
    return service.list_articles(session=session, status=status, intent=intent, tag=tag, offset=offset, limit=limit)


@router.post("/articles", response_model=ArticlePublic, status_code=201)
def create_article(
    article: ArticleCreate,
    request: Request,
    session: SessionDep,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Create an article (draft unless `status` says published; a published one is searchable at once)."""
    out = service.create(session=session, index=index, article_in=article, author=principal.name)
    set_audit_object(request, out.id)
    return out


@router.get("/articles/{article_id}", response_model=ArticlePublic)
def get_article(
    article_id: int, session: SessionDep, principal: Annotated[Principal, Depends(require(*READERS))]
) -> Any:
    """One article."""
    return service.get(session=session, article_id=article_id)


@router.patch("/articles/{article_id}", response_model=ArticlePublic)
def update_article(
    article_id: int,
    article: ArticleUpdate,
    session: SessionDep,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
    expected_version: Annotated[int | None, Query(ge=1, description="409 if the article moved on")] = None,
) -> Any:
    """Edit an article (kept as a new version; a published article is re-indexed at once)."""
    return service.update(session=session, index=index, article_id=article_id, article_in=article,
                          author=principal.name, expected_version=expected_version)


@router.delete("/articles/{article_id}", status_code=204, response_class=Response)
def delete_article(
    article_id: int, session: SessionDep, index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Response:
    """Delete an article and its versions (and its passages from the index)."""
    service.delete(session=session, index=index, article_id=article_id)
    return Response(status_code=204)


@router.get("/articles/{article_id}/versions", response_model=list[ArticleVersionPublic])
def list_versions(
    article_id: int, session: SessionDep, principal: Annotated[Principal, Depends(require(*READERS))]
) -> Any:
    """Every stored version, oldest first."""
    return service.list_versions(session=session, article_id=article_id)


@router.post("/articles/{article_id}/versions/{version}/restore", response_model=ArticlePublic)
def restore_version(
    article_id: int, version: int, session: SessionDep, index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Make an old version current again (as a new version)."""
    return service.restore_version(session=session, index=index, article_id=article_id, version=version,
                                   author=principal.name)


@router.post("/articles/{article_id}/{action}", response_model=ArticlePublic)
def change_status(
    article_id: int,
    action: Literal["publish", "unpublish", "archive"],
    session: SessionDep,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Publish (searchable now), unpublish (back to draft) or archive an article."""
    fn = {"publish": service.publish, "unpublish": service.unpublish, "archive": service.archive}[action]
    return fn(session=session, index=index, article_id=article_id)


@router.post("/import", response_model=ImportPublic, status_code=201)
def import_articles(
    body: ImportIn,
    request: Request,
    session: SessionDep,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> ImportPublic:
    """Import many articles (JSON); published ones are indexed as they are stored."""
    created = service.bulk_create(session=session, index=index,
                                  articles_in=[(a, principal.name) for a in body.articles])
    ids = [a.id for a in created if a.id is not None]
    set_audit_object(request, f"{len(ids)} articles")
    return ImportPublic(created=ids, index_stale=[a.id for a in created if a.index_stale and a.id is not None])


@router.get("/search", response_model=list[HitPublic])
def search(
    request: Request,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
    q: Annotated[str, Query(min_length=1, max_length=2000, description="Question or ticket text")],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid",
    intent: Annotated[list[str] | None, Query(max_length=20)] = None,
    tag: Annotated[list[str] | None, Query(max_length=20)] = None,
) -> list[HitPublic]:
    """Hybrid (dense + BM25) search over published articles, filtered by intent / tag."""
    hits = kb_retriever(request, index).search(q, k=k, mode=mode, intents=intent or (), tags=tag or ())
    return [
        HitPublic(article_id=h.article_id, version=h.version, title=h.title, heading=h.passage.heading,
                  text=h.passage.text, score=h.score, dense_score=h.dense_score, lexical_score=h.lexical_score,
                  rank=h.rank)
        for h in hits
    ]


def _consistency(report: Any, result: Any = None) -> ConsistencyPublic:
    return ConsistencyPublic(
        ok=report.ok, published=report.published, missing=report.missing, outdated=report.outdated,
        altered=report.altered, orphaned=report.orphaned, flagged=report.flagged, stored_model=report.stored_model,
        current_model=report.current_model, repaired=list(getattr(result, "reindexed", [])),
        removed=list(getattr(result, "removed", [])), failed=list(getattr(result, "failed", [])),
    )


@router.get("/consistency", response_model=ConsistencyPublic)
def consistency(
    session: SessionDep, index: IndexDep, principal: Annotated[Principal, Depends(require(*WRITERS))]
) -> ConsistencyPublic:
    """Compare the index with SQL (the truth)."""
    from knowledge_hub.consistency import check

    return _consistency(check(session=session, index=index))


@router.post("/consistency/repair", response_model=ConsistencyPublic)
def repair(
    session: SessionDep, index: IndexDep, principal: Annotated[Principal, Depends(require(*WRITERS))]
) -> ConsistencyPublic:
    """Fix the index from SQL (a changed embedding model triggers a full reindex)."""
    from knowledge_hub.consistency import repair as do_repair

    result = do_repair(session=session, index=index)
    return _consistency(result.before, result)
