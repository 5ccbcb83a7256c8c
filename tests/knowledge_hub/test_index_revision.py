"""Readers notice every write to a shared index, even when two writers' revision bumps collide."""

from __future__ import annotations

import uuid

from knowledge_hub.index import ArticleDoc, KnowledgeIndex


def test_a_lost_revision_bump_still_makes_readers_reload(tmp_path, embedder) -> None:
    # Two replicas on one chroma: both read revision n and write n + 1, so the counter alone cannot tell a reader
    # that the second write happened.
    collection = f"kb-{uuid.uuid4().hex[:8]}"
    a = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma", collection=collection)
    b = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma", collection=collection)
    a.upsert_articles([ArticleDoc(1, 1, "Reset a password", "Send the reset link from the account page.", [], [])])
    seen = a.snapshot()
    assert {p.article_id for p in seen.passages} == {1}
    b.upsert_articles([ArticleDoc(2, 1, "Refund a damaged item", "Ask for a photo, then refund the card.", [], [])])
    col = b._collections()[0]
    col.modify(metadata={**dict(col.metadata or {}), "revision": seen.revision})  # the other writer's bump lost
    assert a.revision == seen.revision
    assert {p.article_id for p in a.snapshot().passages} == {1, 2}
    assert a.snapshot() is a.snapshot()  # nothing new since: the snapshot is kept
