"""The abstain threshold, calibrated per hub on its own held-out questions, judged on simulated tickets it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from insight.simulate import simulate
from insight.simulate.knowledge import knowledge_base
from knowledge_hub.index import ArticleDoc, KnowledgeIndex
from knowledge_hub.retrieval import (
    DEFAULT_ABSTAIN_TARGET,
    DEFAULT_ABSTAIN_THRESHOLD,
    HybridRetriever,
    article_max,
    choose_threshold,
    held_out_articles,
)


def test_choose_threshold_lets_at_most_the_allowed_share_through():
    neg = np.array([0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95])
    t = choose_threshold(neg, target=0.9)  # 1 of 10 may reach it
    assert 0.90 < t <= 0.9000001 and (neg >= t).mean() == pytest.approx(0.1)
    t95 = choose_threshold(neg, target=0.95)  # floor(0.5) = 0 may reach it: just above the best
    assert t95 > 0.95 and (neg >= t95).sum() == 0
    assert choose_threshold(neg, target=0.5) == pytest.approx(0.5, abs=1e-6)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(InvalidInput):
            choose_threshold(neg, target=bad)
    with pytest.raises(InvalidInput):
        choose_threshold(np.array([np.nan]), target=0.9)


@pytest.fixture(scope="module")
def sim_hub(tmp_path_factory, embedder):
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("chroma"))
    arts = knowledge_base()
    index.upsert_articles([ArticleDoc(i + 1, 1, a.title, a.body, list(a.intents), list(a.tags))
                           for i, a in enumerate(arts)])
    return HybridRetriever(index=index, calibrate_abstain=True), arts


def test_calibrated_on_the_hub_and_cached_per_revision(sim_hub):
    retr, arts = sim_hub
    cal = retr.calibration()
    assert retr.abstain_threshold == cal.threshold
    assert cal.calibrated and cal.queries == len(arts) and cal.target == DEFAULT_ABSTAIN_TARGET
    assert cal.false_answer_rate is not None and cal.false_answer_rate <= 1 - cal.target
    assert cal.threshold != DEFAULT_ABSTAIN_THRESHOLD
    assert retr.calibration() is cal  # same revision: not recomputed
    looser = retr.calibration(target=0.4)
    assert looser.threshold <= cal.threshold


def test_calibrated_threshold_on_unseen_simulated_tickets(sim_hub):
    """Tickets of the planted gap intent (no article) must be abstained on; answered tickets must be on topic.

    The threshold saw only the hub's titles; these tickets (another seed) are the test. The fixed 0.40 is the
    baseline, measured on the same tickets."""
    retr, arts = sim_hub
    t = simulate(n_cases=400, seed=11).tickets
    texts = (t.subject + ". " + t.body).tolist()
    snap, fused, _, _ = retr.score_matrix(texts)
    ids, per_article = article_max(fused, np.array([p.article_id for p in snap.passages]))
    best, top = per_article.max(axis=1), ids[per_article.argmax(axis=1)]
    has = {it: {i + 1 for i, a in enumerate(arts) if it in a.intents} for it in set(t.intent)}
    on_topic = np.array([top[j] in has[it] for j, it in enumerate(t.intent)])
    gap = np.array([not has[it] for it in t.intent])
    assert gap.sum() >= 10

    def judge(th: float) -> tuple[float, float]:
        answered = best >= th
        return float((~answered[gap]).mean()), float(on_topic[answered].mean())

    cal = retr.calibration()
    abstain, precision = judge(cal.threshold)
    fixed_abstain, fixed_precision = judge(DEFAULT_ABSTAIN_THRESHOLD)
    assert abstain >= 0.9, (cal, abstain)
    assert abstain >= fixed_abstain and precision >= fixed_precision, (cal, abstain, precision, fixed_abstain,
                                                                      fixed_precision)
    assert (best >= cal.threshold).mean() >= 0.5  # still answers most tickets: not a threshold that refuses all


def test_small_hub_falls_back_and_a_change_recalibrates(tmp_path, embedder):
    index = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma")
    arts = knowledge_base()
    index.upsert_articles([ArticleDoc(i + 1, 1, a.title, a.body, [], []) for i, a in enumerate(arts[:3])])
    retr = HybridRetriever(index=index, calibrate_abstain=True)
    small = retr.calibration()
    assert not small.calibrated and small.threshold == DEFAULT_ABSTAIN_THRESHOLD and small.false_answer_rate is None
    index.upsert_articles([ArticleDoc(i + 1, 1, a.title, a.body, [], []) for i, a in enumerate(arts[3:], start=3)])
    grown = retr.calibration()
    assert grown.calibrated and grown.revision > small.revision and grown.queries == len(arts)


# A hub of near-duplicates (as ABCD's guidelines are): every intent's article has a sibling for the same intent whose
# title differs by a few words, and one article without intents is copied under the same title in capitals.
def _with_siblings(arts):
    docs = [ArticleDoc(i + 1, 1, a.title, a.body, list(a.intents), list(a.tags)) for i, a in enumerate(arts)]
    nid = len(docs)
    siblings: dict[int, int] = {}
    for d in list(docs):
        if d.intents:
            nid += 1
            docs.append(ArticleDoc(nid, 1, f"{d.title} (quick answer)", d.body, list(d.intents), list(d.tags)))
            siblings[d.article_id], siblings[nid] = nid, d.article_id
    plain = next(d for d in docs if not d.intents)
    nid += 1
    docs.append(ArticleDoc(nid, 1, plain.title.upper(), plain.body, [], list(plain.tags)))
    return docs, siblings, (plain.article_id, nid)


@pytest.fixture(scope="module")
def sibling_hub(tmp_path_factory, embedder):
    arts = knowledge_base()
    docs, siblings, twins = _with_siblings(arts)
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("chroma-siblings"))
    index.upsert_articles(docs)
    return HybridRetriever(index=index, calibrate_abstain=True), docs, siblings, twins


def test_a_question_leaves_out_its_siblings_by_intent_and_its_copies_by_title(sibling_hub):
    retr, docs, siblings, (plain, copy) = sibling_hub
    passages = retr.index.snapshot().passages
    ids = [d.article_id for d in docs]
    left_out = dict(zip(ids, held_out_articles(passages, ids), strict=True))
    for aid, sib in siblings.items():
        assert left_out[aid] == {aid, sib}
    assert left_out[plain] == left_out[copy] == {plain, copy}
    others = [d.article_id for d in docs if not d.intents and d.article_id not in (plain, copy)]
    assert others and all(left_out[a] == {a} for a in others)


def test_a_hub_where_one_intent_covers_every_article_falls_back(tmp_path, embedder):
    """Every question leaves out the whole hub: none is left without an article, and nothing is calibrated on."""
    index = KnowledgeIndex(embedder=embedder, path=tmp_path / "chroma")
    arts = knowledge_base()
    index.upsert_articles([ArticleDoc(i + 1, 1, a.title, a.body, ["support", *a.intents], [])
                           for i, a in enumerate(arts)])
    cal = HybridRetriever(index=index, calibrate_abstain=True).calibration()
    assert not cal.calibrated and cal.queries == 0 and cal.threshold == DEFAULT_ABSTAIN_THRESHOLD


def test_near_duplicate_siblings_do_not_drive_the_threshold_up(sibling_hub):
    """Asked with only its own article left out, a title finds its sibling (the same answer): such a question is not
    one without an article, and counting it pushed the threshold up to sibling-match scores, abstaining on most
    in-domain tickets. Its siblings are left out with it, so the threshold stays below what siblings score against
    each other and the hub still answers unseen tickets, and abstains on those of the intent without an article."""
    retr, docs, siblings, _ = sibling_hub
    cal = retr.calibration()
    assert cal.calibrated and cal.queries == len(docs)
    title = {d.article_id: d.title for d in docs}
    asked = sorted(siblings)
    snap, fused, _, _ = retr.score_matrix([title[a] for a in asked])
    ids, per_article = article_max(fused, np.array([p.article_id for p in snap.passages]))
    col = {int(a): j for j, a in enumerate(ids)}
    sibling_scores = np.array([per_article[i, col[siblings[a]]] for i, a in enumerate(asked)])
    assert cal.threshold < sibling_scores.min(), (cal, sibling_scores.min())

    t = simulate(n_cases=400, seed=11).tickets
    snap, fused, _, _ = retr.score_matrix((t.subject + ". " + t.body).tolist())
    ids, per_article = article_max(fused, np.array([p.article_id for p in snap.passages]))
    best = per_article.max(axis=1)
    covered = {it for d in docs for it in d.intents}
    gap = np.array([it not in covered for it in t.intent])
    assert gap.sum() >= 10
    assert (best[gap] < cal.threshold).mean() >= 0.9, cal
    assert (best[~gap] >= cal.threshold).mean() >= 0.5, cal  # in-domain tickets are still answered
