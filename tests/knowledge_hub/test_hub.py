"""Knowledge hub: CRUD + versions in real SQLite, sync with the real embedded chroma, repair, filters, import/export."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from core.errors import IndexUnavailable, InvalidInput, NotFound
from knowledge_hub import consistency, importexport, service
from knowledge_hub.index import KnowledgeIndex, chunk_markdown
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus, ArticleUpdate, ArticleVersion
from knowledge_hub.retrieval import HybridRetriever

PASSWORD = ArticleCreate(
    title="Reset a forgotten password",
    body="If a customer forgot their password, send the reset link from the account page. "
         "The link expires after 24 hours.",
    tags=["account"], intents=["password_reset"], activities=["Send reset link"], status=ArticleStatus.published,
)
REFUND = ArticleCreate(
    title="Refund a damaged item",
    body="When an item arrived broken, ask for a photo, then issue a refund to the original card.",
    tags=["billing"], intents=["refund"], activities=["Validate purchase", "Offer refund"],
    status=ArticleStatus.published,
)
SHIPPING = ArticleCreate(
    title="Track a delayed parcel",
    body="Look up the carrier tracking number and tell the customer the expected delivery date.",
    tags=["shipping"], intents=["delivery_status"], status=ArticleStatus.published,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Two intra-op threads on a shared 2-core CI box spin against each other (~25x slower single encodes).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def session():
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


@pytest.fixture
def index(tmp_path, embedder):
    return KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma", collection=f"kb-{uuid.uuid4().hex[:8]}")


class FailingIndex:
    """Stands in for an unreachable chroma: every write raises."""

    def upsert_article(self, **_kw):
        raise IndexUnavailable("chroma down (test)")

    def remove_article(self, article_id):
        raise IndexUnavailable("chroma down (test)")


def _top(index, query, **kw):
    hits = HybridRetriever(index=index).search(query, k=3, **kw)
    return hits[0] if hits else None


def test_crud_versions_and_restore(session, index):
    a = service.create(session=session, index=index, author="ann",
                       article_in=ArticleCreate(title="Draft one", body="first body", tags=["x"]))
    assert (a.status, a.version, a.author) == (ArticleStatus.draft, 1, "ann")
    service.update(session=session, index=index, article_id=a.id, author="bob",
                   article_in=ArticleUpdate(body="second body"))
    a = service.update(session=session, index=index, article_id=a.id, author="cy",
                       article_in=ArticleUpdate(title="Renamed", tags=["y"]))
    assert (a.version, a.title, a.body, a.tags, a.author) == (3, "Renamed", "second body", ["y"], "cy")
    versions = service.list_versions(session=session, article_id=a.id)
    assert [(v.version, v.title, v.body) for v in versions] == [
        (1, "Draft one", "first body"), (2, "Draft one", "second body"), (3, "Renamed", "second body")]
    a = service.restore_version(session=session, index=index, article_id=a.id, version=1, author="dan")
    assert (a.version, a.title, a.body, a.tags) == (4, "Draft one", "first body", ["x"])
    assert len(service.list_versions(session=session, article_id=a.id)) == 4  # history is never rewritten
    with pytest.raises(NotFound, match="no version 9"):
        service.restore_version(session=session, index=index, article_id=a.id, version=9, author="dan")
    assert index.count() == 0  # drafts are never indexed
    service.delete(session=session, index=index, article_id=a.id)
    with pytest.raises(NotFound, match=f"article {a.id} not found"):
        service.get(session=session, article_id=a.id)
    assert service.list_articles(session=session) == []


def test_edit_archive_restore_change_the_very_next_search(session, index):
    pw = service.create(session=session, index=index, article_in=PASSWORD, author="kb")
    service.create(session=session, index=index, article_in=REFUND, author="kb")
    service.create(session=session, index=index, article_in=SHIPPING, author="kb")
    retr = HybridRetriever(index=index)  # one long-lived retriever, as the API holds it
    hit = retr.search("customer cannot log in, forgot password", k=1)[0]
    assert (hit.article_id, hit.version) == (pw.id, 1)
    assert "reset link" in hit.passage.text

    pw = service.update(session=session, index=index, article_id=pw.id, author="kb",
                        article_in=ArticleUpdate(body="Passwords are reset by calling the security desk on 555-0100."))
    hit = retr.search("customer cannot log in, forgot password", k=1)[0]
    assert (hit.article_id, hit.version) == (pw.id, 2)
    assert "security desk" in hit.passage.text and "reset link" not in hit.passage.text

    service.archive(session=session, index=index, article_id=pw.id)
    hits = retr.search("customer cannot log in, forgot password", k=5)
    assert pw.id not in {h.article_id for h in hits}
    assert len(hits) == 2

    pw = service.restore_version(session=session, index=index, article_id=pw.id, version=1, author="kb")
    service.publish(session=session, index=index, article_id=pw.id)
    hit = retr.search("customer cannot log in, forgot password", k=1)[0]
    assert (hit.article_id, hit.version) == (pw.id, 3)
    assert "reset link" in hit.passage.text  # the restored version is served again


def test_failed_index_write_keeps_sql_and_repair_fixes_it(session, index):
    a = service.create(session=session, index=index, article_in=PASSWORD, author="kb")
    a = service.update(session=session, index=FailingIndex(), article_id=a.id, author="kb",
                       article_in=ArticleUpdate(body="Call the security desk to reset a password."))
    assert a.version == 2 and a.index_stale  # the edit is committed, and marked stale
    stored = service.get(session=session, article_id=a.id)
    assert stored.body.startswith("Call the security desk") and stored.index_stale
    report = consistency.check(session=session, index=index)
    assert not report.ok and report.flagged == [a.id] and report.outdated == [a.id]
    assert _top(index, "forgot password").version == 1  # index still serves the old text

    res = consistency.repair(session=session, index=index)
    assert res.reindexed == [a.id] and not res.failed
    assert consistency.check(session=session, index=index).ok
    hit = _top(index, "forgot password")
    assert hit.version == 2 and "security desk" in hit.passage.text
    assert not service.get(session=session, article_id=a.id).index_stale


def test_failed_delete_leaves_orphan_that_repair_removes(session, index):
    a = service.create(session=session, index=index, article_in=REFUND, author="kb")
    service.delete(session=session, index=FailingIndex(), article_id=a.id)
    assert consistency.check(session=session, index=index).orphaned == [a.id]
    res = consistency.repair(session=session, index=index)
    assert res.removed == [a.id] and index.count() == 0


def test_model_change_triggers_full_reindex(session, index, embedder):
    service.create(session=session, index=index, article_in=REFUND, author="kb")

    class Renamed:
        name = "other-model@000"

        def encode(self, texts, show_progress=False):
            return embedder.encode(texts)

    other = KnowledgeIndex(embedder=Renamed(), path=index.path, collection=index.collection_name)
    assert other.needs_reindex() and consistency.check(session=session, index=other).model_mismatch
    res = consistency.repair(session=session, index=other)
    assert res.full_reindex and len(res.reindexed) == 1
    assert other.stored_model == "other-model@000" and not other.needs_reindex()
    assert consistency.check(session=session, index=other).ok


def test_filters_and_modes(session, index):
    for a in (PASSWORD, REFUND, SHIPPING):
        service.create(session=session, index=index, article_in=a, author="kb")
    retr = HybridRetriever(index=index)
    q = "the customer wants money back for a broken item"
    assert retr.search(q, k=1)[0].title == "Refund a damaged item"
    hits = retr.search(q, k=5, intents=["delivery_status"])
    assert [h.title for h in hits] == ["Track a delayed parcel"]
    assert {h.title for h in retr.search(q, k=5, tags=["account", "shipping"])} == {
        "Reset a forgotten password", "Track a delayed parcel"}
    assert retr.search(q, k=5, status="draft") == []
    lex = retr.search("carrier tracking number", k=1, mode="lexical")[0]
    assert lex.title == "Track a delayed parcel" and lex.lexical_score == pytest.approx(1.0)
    assert retr.search(q, k=5, min_score=0.99) == []
    with pytest.raises(InvalidInput, match="query"):
        retr.search("  ")


def test_chunk_markdown_splits_sections_and_long_text():
    body = "Intro line.\n\n## Steps\nDo this.\n\n```\n# not a heading\n```\n\n## Notes\n" + ("Long sentence. " * 200)
    chunks = chunk_markdown(body, max_chars=300)
    assert [c.heading for c in chunks[:2]] == ["", "Steps"]
    assert "# not a heading" in chunks[1].text
    notes = [c for c in chunks if c.heading == "Notes"]
    assert len(notes) >= 10 and all(len(c.text) <= 300 for c in notes)


def test_import_export_round_trip(session, index, tmp_path):
    for a in (PASSWORD, REFUND):
        service.create(session=session, index=index, article_in=a, author="kb")
    service.create(session=session, index=index, author="kb",
                   article_in=ArticleCreate(title="Draft: gift cards", body="# Gift cards\n\nUse the **gift** form.",
                                            tags=["billing", "gift"]))
    out = importexport.export_all(session=session, folder=tmp_path / "export")
    original = {(a.title, a.body, tuple(a.tags), tuple(a.intents), tuple(a.activities), str(a.status))
                for a in service.list_articles(session=session)}
    assert len(list(out["markdown"].glob("*.md"))) == 3
    for src in (out["markdown"], out["json"], out["csv"]):
        engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
        SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as s2:
            res = importexport.import_path(session=s2, index=FailingIndex(), path=src)
            assert len(res.created) == 3 and len(res.stale) == 2  # the two published ones could not be indexed
            got = {(a.title, a.body, tuple(a.tags), tuple(a.intents), tuple(a.activities), str(a.status))
                   for a in service.list_articles(session=s2)}
        assert got == original, src


def test_import_names_the_bad_record(tmp_path, session, index):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"title": "ok"}, {"title": ""}]))
    with pytest.raises(InvalidInput, match=r"item 1: field 'title'"):
        importexport.import_path(session=session, index=index, path=p)
    assert service.list_articles(session=session) == []  # validated before anything was stored


class HashEmbedder:
    """Cheap deterministic stand-in (bag of hashed words) where semantics are not under test."""

    name = "hash-embedder@test"

    def encode(self, texts, show_progress=False):
        import zlib

        import numpy as np

        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.mark.realdata
def test_abcd_guidelines_import(shared_data, session, tmp_path):
    index = KnowledgeIndex(embedder=HashEmbedder(), path=tmp_path / "abcd")
    res = importexport.import_path(session=session, index=index, path=shared_data / "text/abcd/guidelines.json")
    assert len(res.created) == 55 and not res.stale
    articles = service.list_articles(session=session, status=ArticleStatus.published)
    assert len(articles) == 55
    refund = next(a for a in articles if a.title == "Product Defect: Initiate Refund")
    assert refund.activities[:2] == ["Pull up Account", "Validate Purchase"]
    assert "refund" in refund.body.lower() and refund.intents == ["product_defect", "initiate_refund"]
    assert consistency.check(session=session, index=index).ok
    hit = HybridRetriever(index=index).search("customer forgot password, cannot log in", k=1, mode="lexical")[0]
    assert hit.title == "Account Access: Recover Password"
    only = HybridRetriever(index=index).search("refund", k=20, intents=["product_defect"])
    assert only and {h.title.split(":")[0] for h in only} == {"Product Defect"}


def _pg_url() -> str:
    return os.environ.get("DESKPILOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.mark.postgres
def test_postgres_crud_versions_restore(index):
    from sqlalchemy import text

    url = _pg_url()
    schema = f"kb_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("DESKPILOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {url}: {exc}")
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as s:
            a = service.create(session=s, index=index, article_in=PASSWORD, author="pg")
            a = service.update(session=s, index=index, article_id=a.id, author="pg",
                               article_in=ArticleUpdate(tags=["account", "security"]))
            a = service.restore_version(session=s, index=index, article_id=a.id, version=1, author="pg")
            assert (a.version, a.tags) == (3, ["account"])
            assert [v.version for v in service.list_versions(session=s, article_id=a.id)] == [1, 2, 3]
            assert service.list_articles(session=s, intent="password_reset")[0].id == a.id
            assert consistency.check(session=s, index=index).ok
            assert _top(index, "forgot password").version == 3
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))  # only what this test created
        admin.dispose()


