"""Review workflow on real SQLite and the real embedded index: draft -> in review -> published by someone else,
reviewed revisions of published articles, rejection, withdrawal, stale proposals, restore through review."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from core.errors import Conflict, InvalidInput
from knowledge_hub import review, service
from knowledge_hub.index import KnowledgeIndex
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus, ArticleUpdate, ArticleVersion
from knowledge_hub.review import ArticleReview, ReviewKind, ReviewState

DRAFT = ArticleCreate(title="Export account data", body="Open Settings, then Privacy, then press Export.",
                      intents=["data export"], tags=["account"])


@pytest.fixture
def session():
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__,  # type: ignore[attr-defined]
                                                 ArticleReview.__table__])  # type: ignore[attr-defined]
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


@pytest.fixture
def index(tmp_path, embedder):
    idx = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma", collection=f"kb-{uuid.uuid4().hex[:8]}")
    yield idx
    idx.close()


def test_a_draft_is_published_only_by_someone_other_than_its_author(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT, author="ann")
    r = review.submit(session=session, article_id=art.id, by="ann", note="first version")
    assert r.kind == ReviewKind.publish and r.state == ReviewState.pending
    assert service.get(session=session, article_id=art.id).status == ArticleStatus.in_review
    assert art.id not in index.indexed_versions()  # in review is not searchable
    with pytest.raises(Conflict, match="someone other than the author"):
        review.approve(session=session, index=index, review_id=r.id, by="ann")
    with pytest.raises(Conflict, match="in review"):
        service.update(session=session, index=index, article_id=art.id, article_in=ArticleUpdate(body="x"),
                       author="ann")
    with pytest.raises(Conflict, match="in review"):
        service.publish(session=session, index=index, article_id=art.id)
    out = review.approve(session=session, index=index, review_id=r.id, by="bob", comment="clear")
    assert out.status == ArticleStatus.published
    assert index.indexed_versions()[art.id] == out.version
    done = review.get_review(session=session, review_id=r.id)
    assert (done.state, done.reviewer) == (ReviewState.approved, "bob")
    with pytest.raises(Conflict, match="already approved"):
        review.approve(session=session, index=index, review_id=r.id, by="carl")


def test_a_revision_of_a_published_article_waits_for_review_while_the_old_text_stays_live(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT.model_copy(
        update={"status": ArticleStatus.published}), author="ann")
    v1 = art.version
    r = review.submit(session=session, article_id=art.id, by="carl",
                      changes=ArticleUpdate(body="Open Settings > Privacy > Export data; the file arrives by email."))
    live = service.get(session=session, article_id=art.id)
    assert (live.status, live.version, live.body) == (ArticleStatus.published, v1, DRAFT.body)
    assert index.indexed_versions()[art.id] == v1
    with pytest.raises(Conflict, match="someone other than the author"):
        review.approve(session=session, index=index, review_id=r.id, by="carl")
    out = review.approve(session=session, index=index, review_id=r.id, by="ann")
    assert out.version == v1 + 1 and out.body.endswith("arrives by email.") and out.author == "carl"
    assert index.indexed_versions()[art.id] == v1 + 1


def test_unchanged_or_duplicate_proposals_are_refused(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT.model_copy(
        update={"status": ArticleStatus.published}), author="ann")
    with pytest.raises(InvalidInput, match="at least one changed field"):
        review.submit(session=session, article_id=art.id, by="ann", changes=ArticleUpdate(title=DRAFT.title))
    review.submit(session=session, article_id=art.id, by="ann", changes=ArticleUpdate(title="Export your data"))
    with pytest.raises(Conflict, match="already has a review waiting"):
        review.submit(session=session, article_id=art.id, by="bob", changes=ArticleUpdate(title="Other"))


def test_rejection_needs_a_comment_and_returns_the_draft_and_only_the_submitter_withdraws(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT, author="ann")
    r = review.submit(session=session, article_id=art.id, by="ann")
    with pytest.raises(InvalidInput, match="needs a comment"):
        review.reject(session=session, review_id=r.id, by="bob", comment="  ")
    out = review.reject(session=session, review_id=r.id, by="bob", comment="add the email step")
    assert out.state == ReviewState.rejected and out.comment == "add the email step"
    assert service.get(session=session, article_id=art.id).status == ArticleStatus.draft
    r2 = review.submit(session=session, article_id=art.id, by="ann")
    with pytest.raises(Conflict, match="only ann"):
        review.withdraw(session=session, review_id=r2.id, by="bob")
    assert review.withdraw(session=session, review_id=r2.id, by="ann").state == ReviewState.withdrawn
    assert service.get(session=session, article_id=art.id).status == ArticleStatus.draft


def test_a_proposal_made_on_an_older_version_cannot_be_approved(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT.model_copy(
        update={"status": ArticleStatus.published}), author="ann")
    r = review.submit(session=session, article_id=art.id, by="ann", changes=ArticleUpdate(title="Export data"))
    service.update(session=session, index=index, article_id=art.id, article_in=ArticleUpdate(body="new"),
                   author="dan")  # the JSON API's direct edit
    with pytest.raises(Conflict, match="changed since the review was submitted"):
        review.approve(session=session, index=index, review_id=r.id, by="bob")


def test_restoring_an_old_version_of_a_published_article_goes_through_review(session, index) -> None:
    art = service.create(session=session, index=index, article_in=DRAFT.model_copy(
        update={"status": ArticleStatus.published}), author="ann")
    service.update(session=session, index=index, article_id=art.id, article_in=ArticleUpdate(body="worse text"),
                   author="dan")
    r = review.propose_restore(session=session, article_id=art.id, version=1, by="dan")
    assert r.body == DRAFT.body and service.get(session=session, article_id=art.id).body == "worse text"
    out = review.approve(session=session, index=index, review_id=r.id, by="ann")
    assert out.body == DRAFT.body and out.version == 3
    assert [v.version for v in service.list_versions(session=session, article_id=art.id)] == [1, 2, 3]


@pytest.mark.postgres
def test_a_postgres_database_from_before_the_review_workflow_is_upgraded(pg_schema_url) -> None:
    engine = create_engine(pg_schema_url)
    try:
        with engine.begin() as conn:  # the status type as it was before `in_review` existed
            conn.exec_driver_sql("CREATE TYPE articlestatus AS ENUM ('draft', 'published', 'archived')")
        SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__,  # type: ignore[attr-defined]
                                                     ArticleReview.__table__])  # type: ignore[attr-defined]
        review.upgrade_schema(engine)
        review.upgrade_schema(engine)  # idempotent
        with Session(engine, expire_on_commit=False) as s:
            art = service.create(session=s, index=_NoIndex(), article_in=DRAFT, author="ann")
            review.submit(session=s, article_id=art.id, by="ann")
            assert service.get(session=s, article_id=art.id).status == ArticleStatus.in_review
    finally:
        engine.dispose()


class _NoIndex:
    """Drafts never reach the index; any call would be a bug here."""

    def upsert_article(self, **_: object) -> int:
        raise AssertionError("a draft was indexed")

    def remove_article(self, article_id: int) -> None:
        raise AssertionError("nothing to remove")
