"""Knowledge-hub routes: article CRUD, versions, publish / unpublish / archive, import, search, consistency."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.auth import Principal, require, set_audit_object
from api.deps import Offset, RowId, RowIdQuery, get_kb_index, get_session, kb_retriever
from api.errors import ERROR_RESPONSES
from core.jsonbody import JsonBody
from knowledge_hub import review, service
from knowledge_hub.index import check_body_length
from knowledge_hub.models import (
    ArticleCreate,
    ArticlePublic,
    ArticleStatus,
    ArticleUpdate,
    ArticleVersionPublic,
)
from routing.models import TEXT_PATTERN

router = APIRouter(prefix="/v1/kb", tags=["knowledge hub"], responses=ERROR_RESPONSES)

WRITERS = ("knowledge_manager",)
READERS = ("knowledge_manager", "agent", "helpdesk", "analyst")

SessionDep = Annotated[Session, Depends(get_session)]
IndexDep = Annotated[Any, Depends(get_kb_index)]


class ImportArticle(ArticleCreate):
    """An article to import, with the author its source names (the audit log records the caller)."""

    author: str | None = Field(default=None, min_length=1, max_length=128,
                               description="Author recorded on the article; default the caller's key name.")


class ImportIn(JsonBody):
    """Articles to import in one call: all are validated before any is stored."""

    model_config = ConfigDict(extra="forbid")

    articles: list[ImportArticle] = Field(min_length=1, max_length=500)


def _bounded(request: Request, *bodies: tuple[str, str | None]) -> None:
    """422 naming the limit when an article body is longer than `kb_max_body_chars`."""
    limit = request.app.state.settings.kb_max_body_chars
    for where, body in bodies:
        check_body_length(body, limit=limit, where=where)


class ImportPublic(BaseModel):
    """What an import stored."""

    created: list[int]
    index_stale: list[int]


class PassagePublic(BaseModel):
    """One passage of a retrieved article."""

    heading: str
    text: str
    score: float
    dense_score: float
    lexical_score: float


class HitPublic(BaseModel):
    """One retrieved article (each article once), ranked by its best passage; `heading`, `text` and the scores are
    that passage's, `passages` its best passages, best first."""

    article_id: int
    version: int
    title: str
    heading: str
    text: str
    score: float
    dense_score: float
    lexical_score: float
    rank: int
    passages: list[PassagePublic]


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
    offset: Offset = 0,
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
    _bounded(request, ("body", article.body))
    out = service.create(session=session, index=index, article_in=article, author=principal.name)
    set_audit_object(request, out.id)
    return out


@router.get("/articles/{article_id}", response_model=ArticlePublic)
def get_article(
    article_id: RowId, session: SessionDep, principal: Annotated[Principal, Depends(require(*READERS))]
) -> Any:
    """One article."""
    return service.get(session=session, article_id=article_id)


@router.patch("/articles/{article_id}", response_model=ArticlePublic)
def update_article(
    article_id: RowId,
    article: ArticleUpdate,
    request: Request,
    session: SessionDep,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
    expected_version: Annotated[RowIdQuery, Query(description="409 if the article moved on")] = None,
) -> Any:
    """Edit an article (kept as a new version; a published article is re-indexed at once)."""
    _bounded(request, ("body", article.body))
    return service.update(session=session, index=index, article_id=article_id, article_in=article,
                          author=principal.name, expected_version=expected_version)


@router.delete("/articles/{article_id}", status_code=204, response_class=Response)
def delete_article(
    article_id: RowId, session: SessionDep, index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Response:
    """Delete an article and its versions (and its passages from the index)."""
    service.delete(session=session, index=index, article_id=article_id)
    return Response(status_code=204)


@router.get("/articles/{article_id}/versions", response_model=list[ArticleVersionPublic])
def list_versions(
    article_id: RowId, session: SessionDep, principal: Annotated[Principal, Depends(require(*READERS))]
) -> Any:
    """Every stored version, oldest first."""
    return service.list_versions(session=session, article_id=article_id)


@router.post("/articles/{article_id}/versions/{version}/restore", response_model=ArticlePublic)
def restore_version(
    article_id: RowId, version: RowId, session: SessionDep, index: IndexDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Make an old version current again (as a new version)."""
    return service.restore_version(session=session, index=index, article_id=article_id, version=version,
                                   author=principal.name)


class ReviewIn(JsonBody):
    """Submit an article for review: a draft as it is, or `changes` proposed to a published article."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)
    changes: ArticleUpdate | None = None


class DecisionIn(JsonBody):
    """A reviewer's decision; a rejection needs a comment saying what has to change."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000)


@router.post("/articles/{article_id}/review", response_model=review.ReviewPublic, status_code=201)
def submit_review(
    article_id: RowId, body: ReviewIn, request: Request, session: SessionDep,
    principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Ask another knowledge manager to publish a draft (it is `in_review` meanwhile) or to accept `changes` to a
    published article (which keeps serving its current content until approved)."""
    _bounded(request, ("changes.body", body.changes.body if body.changes is not None else None))
    out = review.submit(session=session, article_id=article_id, by=principal.name, note=body.note,
                        changes=body.changes)
    set_audit_object(request, f"{article_id}/review/{out.id}")
    return out


@router.get("/reviews", response_model=list[review.ReviewPublic])
def list_reviews(
    session: SessionDep, principal: Annotated[Principal, Depends(require(*WRITERS))],
    state: review.ReviewState | None = review.ReviewState.pending,
    article_id: RowIdQuery = None,
) -> Any:
    """Reviews, newest first (pending ones by default)."""
    return review.list_reviews(session=session, state=state, article_id=article_id)


@router.post("/reviews/{review_id}/{decision}", response_model=ArticlePublic | review.ReviewPublic)
def decide_review(
    review_id: RowId, decision: Literal["approve", "reject", "withdraw"], body: DecisionIn, request: Request,
    session: SessionDep, index: IndexDep, principal: Annotated[Principal, Depends(require(*WRITERS))],
) -> Any:
    """Approve (publish / apply the change; not by its author), reject with a comment, or withdraw (the submitter).

    Approve answers the article; reject and withdraw answer the review."""
    set_audit_object(request, f"review/{review_id}/{decision}")
    if decision == "approve":
        art = review.approve(session=session, index=index, review_id=review_id, by=principal.name, comment=body.comment)
        return ArticlePublic.model_validate(art, from_attributes=True)
    if decision == "reject":
        out = review.reject(session=session, review_id=review_id, by=principal.name, comment=body.comment)
    else:
        out = review.withdraw(session=session, review_id=review_id, by=principal.name)
    return review.ReviewPublic.model_validate(out, from_attributes=True)


@router.post("/articles/{article_id}/{action}", response_model=ArticlePublic)
def change_status(
    article_id: RowId,
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
    _bounded(request, *((f"articles.{i}.body", a.body) for i, a in enumerate(body.articles)))
    articles_in = [(ArticleCreate.model_validate(a.model_dump(exclude={"author"})), a.author or principal.name)
                   for a in body.articles]
    created = service.bulk_create(session=session, index=index, articles_in=articles_in)
    ids = [a.id for a in created if a.id is not None]
    set_audit_object(request, f"{len(ids)} articles")
    return ImportPublic(created=ids, index_stale=[a.id for a in created if a.index_stale and a.id is not None])


@router.get("/search", response_model=list[HitPublic])
def search(
    request: Request,
    index: IndexDep,
    principal: Annotated[Principal, Depends(require(*READERS))],
    q: Annotated[str, Query(min_length=1, max_length=2000, pattern=TEXT_PATTERN,
                            description="Question or ticket text")],
    k: Annotated[int, Query(ge=1, le=50, description="How many articles")] = 5,
    passages: Annotated[int, Query(ge=1, le=10, description="Best passages per article")] = 3,
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid",
    intent: Annotated[list[str] | None, Query(max_length=20)] = None,
    tag: Annotated[list[str] | None, Query(max_length=20)] = None,
) -> list[HitPublic]:
    """Hybrid (dense + BM25) search over published articles, filtered by intent / tag: each article once, ranked by
    its best passage, with its best passages."""
    found = kb_retriever(request, index).search_articles(q, k=k, passages=passages, mode=mode, intents=intent or (),
                                                          tags=tag or ())
    return [
        HitPublic(article_id=a.article_id, version=a.version, title=a.title, heading=a.best.passage.heading,
                  text=a.best.passage.text, score=a.score, dense_score=a.best.dense_score,
                  lexical_score=a.best.lexical_score, rank=a.rank,
                  passages=[PassagePublic(heading=h.passage.heading, text=h.passage.text, score=h.score,
                                          dense_score=h.dense_score, lexical_score=h.lexical_score)
                            for h in a.passages])
        for a in found
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


@router.post("/reindex", response_model=ConsistencyPublic)
def reindex(
    session: SessionDep, index: IndexDep, principal: Annotated[Principal, Depends(require(*WRITERS))]
) -> ConsistencyPublic:
    """Drop the index and re-embed every published article with the configured model (after a model change)."""
    from knowledge_hub.consistency import reindex as do_reindex

    result = do_reindex(session=session, index=index)
    return _consistency(result.before, result)
