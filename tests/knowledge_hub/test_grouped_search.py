"""Search grouped per article: each article once, ranked by its best passage, with its best passages."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from insight.simulate import simulate
from insight.simulate.knowledge import knowledge_base
from knowledge_hub.index import ArticleDoc, KnowledgeIndex
from knowledge_hub.models import Passage
from knowledge_hub.retrieval import HybridRetriever, group_passages


@pytest.fixture(scope="module")
def sim_hub(tmp_path_factory, embedder):
    """The simulated help centre (one multi-section article per intent, but the planted gap) in a real index."""
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("chroma"))
    arts = knowledge_base()
    index.upsert_articles([ArticleDoc(i + 1, 1, a.title, a.body, list(a.intents), list(a.tags))
                           for i, a in enumerate(arts)])
    return HybridRetriever(index=index), arts


def _tickets(n: int = 80, seed: int = 5) -> list[str]:
    t = simulate(n_cases=n, seed=seed).tickets
    return (t.subject + ". " + t.body).tolist()


def test_each_article_once_in_order_of_its_best_passage(sim_hub):
    retr, _ = sim_hub
    repeated = 0
    for q in _tickets(40)[:15]:
        passages = retr.search(q, k=15)
        repeated += len(passages) - len({h.article_id for h in passages})
        found = retr.search_articles(q, k=5, passages=3)
        ids = [a.article_id for a in found]
        assert len(ids) == len(set(ids)) == 5
        # The articles come in the order their first passage appears in the passage ranking.
        first_seen = list(dict.fromkeys(h.article_id for h in retr.search(q, k=10_000)))[:5]
        assert ids == first_seen
        assert [a.rank for a in found] == [1, 2, 3, 4, 5]
        for a in found:
            scores = [h.score for h in a.passages]
            assert scores == sorted(scores, reverse=True) and 1 <= len(a.passages) <= 3
            assert a.score == scores[0] and {h.article_id for h in a.passages} == {a.article_id}
        assert [a.score for a in found] == sorted((a.score for a in found), reverse=True)
    assert repeated > 0, "the passage ranking repeats articles on these tickets; grouping is what removes that"


def test_best_passages_are_the_articles_own_best(sim_hub):
    retr, _ = sim_hub
    q = "I want my money back for order #4411, it was returned last week"
    top = retr.search_articles(q, k=1, passages=2)[0]
    _, fused, _, _ = retr.score_matrix([q])
    snap = retr.index.snapshot()
    own = sorted((float(fused[0, j]) for j, p in enumerate(snap.passages) if p.article_id == top.article_id),
                 reverse=True)
    assert [h.score for h in top.passages] == pytest.approx(own[:2])
    assert "refund" in top.title.lower()


def test_filters_and_min_score_apply_to_articles(sim_hub):
    retr, arts = sim_hub
    q = "please reset my password, I am locked out"
    only = retr.search_articles(q, k=5, intents=["refund request"])
    assert only and {a.article_id for a in only} <= {i + 1 for i, a in enumerate(arts) if "refund request" in a.intents}
    best = retr.search_articles(q, k=5)[0].score
    assert retr.search_articles(q, k=5, min_score=best + 1e-3) == []
    assert [a.score for a in retr.search_articles(q, k=5, min_score=best - 1e-6)] == [best]


def test_bad_arguments_are_refused(sim_hub):
    retr, _ = sim_hub
    for kwargs in ({"k": 0}, {"passages": 0}):
        with pytest.raises(InvalidInput):
            retr.search_articles("refund", **kwargs)
    with pytest.raises(InvalidInput):
        retr.search_articles("   ")


def test_group_passages_stops_once_every_group_is_full():
    ps = [Passage(article_id=a, version=1, title=f"t{a}", text=f"p{j}") for j, a in enumerate([1, 2, 1, 3, 2, 1])]
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)
    zeros = np.zeros(6, dtype=np.float32)
    out = group_passages(np.arange(6), scores, ps, dense=zeros, lexical=zeros, k=2, per_article=2)
    assert [a.article_id for a in out] == [1, 2]  # article 3 is third: left out
    assert [[h.passage.text for h in a.passages] for a in out] == [["p0", "p2"], ["p1", "p4"]]
    filtered = np.where(np.arange(6) == 0, -np.inf, scores)  # a filtered passage (-inf) ends the walk
    order = np.argsort(-filtered, kind="stable")
    assert [a.article_id for a in group_passages(order, filtered, ps, dense=zeros, lexical=zeros, k=5,
                                                 per_article=1)] == [2, 1, 3]
