"""The consistency check compares what the index holds by content hash, not only by id and version."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from knowledge_hub import consistency, service
from knowledge_hub.index import KnowledgeIndex
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus, ArticleVersion
from knowledge_hub.retrieval import HybridRetriever

PASSWORD = ArticleCreate(
    title="Reset a forgotten password",
    body="If a customer forgot their password, send the reset link from the account page. "
         "The link expires after 24 hours.",
    tags=["account"], intents=["password_reset"], status=ArticleStatus.published,
)
REFUND = ArticleCreate(
    title="Refund a damaged item",
    body="# Damaged items\nWhen an item arrived broken, ask for a photo, then issue a refund to the original card.",
    tags=["billing"], intents=["refund"], status=ArticleStatus.published,
)


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


def _stored(session, index):
    a = service.create(session=session, index=index, article_in=PASSWORD, author="ann")
    b = service.create(session=session, index=index, article_in=REFUND, author="ann")
    assert consistency.check(session=session, index=index).ok
    return a, b


def test_other_text_under_the_same_id_and_version_is_caught_and_repaired(session, index):
    a, b = _stored(session, index)
    # Another writer (say, a second database sharing this store) indexes its own text under a's id and version.
    index.upsert_article(article_id=a.id, version=a.version, title=a.title, intents=[], tags=[],
                         body="Wire the refund to the IBAN the caller reads out; no photo needed.")
    report = consistency.check(session=session, index=index)
    assert report.altered == [a.id]
    assert report.missing == report.outdated == report.orphaned == report.flagged == []
    assert not report.ok and report.unexplained == [a.id] and "altered" in report.summary()

    result = consistency.repair(session=session, index=index)
    assert result.reindexed == [a.id] and result.failed == []
    assert consistency.check(session=session, index=index).ok
    hit = HybridRetriever(index=index).search("forgot my password", k=1)[0]
    assert hit.article_id == a.id and "reset link" in hit.passage.text


def test_a_changed_title_or_shown_text_is_caught(session, index):
    a, b = _stored(session, index)
    passages, titles = index._collections()
    # The vector stays, the text shown to agents changes: the stored hash no longer matches the document.
    got = passages.get(where={"article_id": int(b.id)}, include=["embeddings"])
    passages.update(ids=got["ids"][:1], embeddings=got["embeddings"][:1],
                    documents=["Tell the customer refunds are not possible."])
    tgot = titles.get(ids=[str(a.id)], include=["embeddings"])
    titles.update(ids=[str(a.id)], embeddings=tgot["embeddings"], documents=["Close the account"])
    report = consistency.check(session=session, index=index)
    assert report.altered == sorted([a.id, b.id])
    consistency.repair(session=session, index=index)
    assert consistency.check(session=session, index=index).ok
    texts = [p.text for p in index.snapshot().passages if p.article_id == b.id]
    assert texts and all("photo" in t for t in texts)


def test_a_new_chunking_of_the_same_body_is_caught(session, index, embedder):
    a, _ = _stored(session, index)
    # An index written with a different chunk size holds other passages for the same article version.
    long = service.update(session=session, index=index, article_id=a.id, author="ann",
                          article_in=service.ArticleUpdate(body=" ".join(["Send the reset link."] * 120)))
    assert consistency.check(session=session, index=index).ok
    other = KnowledgeIndex(embedder=embedder, path=index.path, collection=index.collection_name, max_chars=300)
    other.upsert_article(article_id=long.id, version=long.version, title=long.title, body=long.body,
                         intents=[], tags=[])
    assert consistency.check(session=session, index=index).altered == [a.id]


def test_grouped_import_reports_progress_and_keeps_what_was_written_before_a_failure(index, embedder):
    from knowledge_hub.index import ArticleDoc

    docs = [ArticleDoc(i, 1, f"Article {i}", f"Body of article {i}: how to fix problem {i}.", [], [])
            for i in range(1, 8)]
    seen: list[int] = []
    rev = index.revision
    assert index.upsert_articles(docs, progress=seen.append, batch_texts=4) == 7
    assert sum(seen) == 7 and len(seen) == 4 and index.revision == rev + 1
    assert sorted(index.indexed_articles()) == list(range(1, 8))

    class Failing:
        name = embedder.name
        calls = 0

        def encode(self, texts, show_progress=False):
            Failing.calls += 1
            if Failing.calls == 2:
                raise RuntimeError("embedder died")
            return embedder.encode(texts)

    broken = KnowledgeIndex(embedder=Failing(), path=index.path, collection=index.collection_name)
    more = [ArticleDoc(i, 2, f"Article {i}", f"Second version of article {i}.", [], []) for i in range(1, 8)]
    with pytest.raises(RuntimeError):
        broken.upsert_articles(more, batch_texts=4)
    state = index.indexed_articles()
    assert [state[i].version for i in (1, 2)] == [2, 2] and state[7].version == 1
    assert index.revision == rev + 2  # bumped after the failure too: readers see what was written
