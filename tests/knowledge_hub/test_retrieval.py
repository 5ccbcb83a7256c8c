"""Hybrid retrieval: the adaptive lexical weight, per-row fusion, and 'never below the better part' on a small FAQ."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from core.errors import InvalidInput
from knowledge_hub.index import ArticleDoc, KnowledgeIndex
from knowledge_hub.retrieval import (
    DEFAULT_LEXICAL_WEIGHT,
    HybridRetriever,
    adaptive_weights,
    article_max,
    fuse,
)

# --- pure functions ------------------------------------------------------------------------------------------------


def test_article_max_takes_the_best_passage_per_article():
    scores = np.array([[0.1, 0.9, 0.3, 0.2], [0.5, 0.4, 0.0, 0.8]], dtype=np.float32)
    ids, out = article_max(scores, np.array([7, 7, 3, 9]))
    assert ids.tolist() == [3, 7, 9]
    assert np.allclose(out, [[0.3, 0.9, 0.2], [0.0, 0.5, 0.8]])


def test_fuse_accepts_one_weight_per_query_row():
    dense = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    lex = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    out = fuse(dense, lex, lexical_weight=np.array([0.0, 0.25], dtype=np.float32))
    assert np.allclose(out, [[1.0, 0.0], [0.75, 0.25]])
    assert np.allclose(fuse(dense, lex, lexical_weight=0.5), 0.5)


ARTS = np.arange(6)  # one passage per article
DENSE = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], dtype=np.float32)


def _w(lex, *, mask=None, k=3, wmax=0.2):
    return float(adaptive_weights(DENSE, np.array([lex], dtype=np.float32), article_of=ARTS, max_weight=wmax,
                                  mask=mask, k=k)[0])


def test_weight_is_max_when_bm25_is_sure_and_agrees_with_dense():
    # BM25 puts all its mass on article 0 (margin 1) and its top-3 is dense's top-3 (agreement 1).
    assert _w([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], k=1) == pytest.approx(0.2)
    assert _w([1.0, 0.5, 0.25, 0.0, 0.0, 0.0]) == pytest.approx(0.2 * 0.5 * 1.0)


def test_weight_is_zero_when_bm25_is_unsure_or_finds_nothing():
    assert _w([1.0, 1.0, 0.2, 0.0, 0.0, 0.0]) == 0.0  # two articles tie at the top: margin 0
    assert _w([0.0] * 6) == 0.0  # no query term in the vocabulary


def test_weight_shrinks_as_the_top_lists_disagree():
    agree = _w([1.0, 0.5, 0.4, 0.0, 0.0, 0.0])
    half = _w([0.0, 0.0, 0.0, 1.0, 0.5, 0.4])  # BM25's top-3 is dense's bottom-3
    one = _w([1.0, 0.0, 0.0, 0.5, 0.4, 0.0])
    assert agree == pytest.approx(0.2 * 0.5)
    assert half == 0.0
    assert one == pytest.approx(0.2 * 0.5 / 3)
    assert agree > one > half


def test_weight_ignores_filtered_articles():
    # Article 0 is filtered out: among the rest BM25 ties (0.5, 0.5), so the weight must drop to 0.
    lex = [1.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert _w(lex) > 0
    mask = np.array([False, True, True, True, True, True])
    assert _w(lex, mask=mask) == 0.0


def test_single_candidate_gets_no_lexical_weight():
    w = adaptive_weights(np.array([[0.5]], np.float32), np.array([[1.0]], np.float32), article_of=np.array([1]),
                         max_weight=0.3)
    assert w.tolist() == [0.0]


# --- through the real index ----------------------------------------------------------------------------------------

# A small support FAQ. Several articles share vocabulary ("account", "card", "order") so BM25 alone is often wrong;
# product names (Zelle, Apple Pay, PayPal) are rare words where BM25 is sharp.
FAQ = [
    ("Reset a forgotten password", "Open the sign-in page and choose 'Forgot password'. We email a reset link that "
     "expires after 24 hours. If the email does not arrive, check the spam folder."),
    ("Change the email address on your account", "Go to Settings > Profile, enter the new address and confirm it from "
     "the message we send to the new inbox."),
    ("Close your account", "Account closure is permanent. Withdraw your balance first, then ask support to close the "
     "account; we keep records for seven years as the law requires."),
    ("Report a lost or stolen card", "Freeze the card in the app at once, then order a replacement. Transactions made "
     "after you report the card are refunded."),
    ("Activate a new card", "Your new card arrives inactive. Open the app, choose Cards and enter the last four digits "
     "to activate it."),
    ("Card payment declined", "A payment can be declined for insufficient funds, a frozen card, or a merchant in a "
     "blocked country. Check the card status in the app."),
    ("Send money with Zelle", "Link your checking account to Zelle, then send to a phone number or email. Zelle "
     "transfers cannot be cancelled once the recipient is enrolled."),
    ("Add your card to Apple Pay", "Open the Wallet app on the iPhone, tap plus and scan the card. Apple Pay needs the "
     "card to be active and verified by a code we text you."),
    ("Pay with PayPal", "At checkout choose PayPal and log in. Refunds for PayPal purchases go back to the PayPal "
     "balance, not the card."),
    ("Track an order", "The order page shows the carrier and tracking number once the parcel ships, usually within "
     "two business days."),
    ("Return an item", "Items can be returned within 30 days in their original packaging. Print the prepaid label "
     "from the order page."),
    ("Refund timing", "Refunds reach the original payment method within 5 to 10 business days after the return is "
     "received at the warehouse."),
]
QUERIES = [
    ("I can't remember my login password", 0), ("how do I get a new password link", 0),
    ("update my e-mail on the profile", 1), ("I want to use a different email for my account", 1),
    ("delete my account permanently", 2), ("how can I shut down my account", 2),
    ("someone stole my wallet with my card in it", 3), ("I lost my debit card", 3),
    ("the card I received doesn't work yet", 4), ("how to turn on my new card", 4),
    ("why was my card refused at the shop", 5), ("payment didn't go through", 5),
    ("can I cancel a Zelle transfer", 6), ("transfer money to a friend with Zelle", 6),
    ("set up Apple Pay on my phone", 7), ("iPhone wallet won't accept my card", 7),
    ("can I pay with PayPal", 8), ("where does a PayPal refund go", 8),
    ("where is my parcel", 9), ("tracking number for my order", 9),
    ("send back a product I bought", 10), ("how many days do I have to return something", 10),
    ("when will I get my money back", 11), ("how long does a refund take", 11),
]


@pytest.fixture(scope="module")
def faq_retriever(tmp_path_factory, embedder):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning intra-op threads are far slower on a shared 2-core box
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("faq-chroma"),
                           collection=f"faq-{uuid.uuid4().hex[:8]}")
    index.upsert_articles([ArticleDoc(i + 1, 1, t, b, [], []) for i, (t, b) in enumerate(FAQ)])
    yield HybridRetriever(index=index)
    torch.set_num_threads(before)


def _metrics(retr: HybridRetriever, mode: str) -> tuple[float, float]:
    """hit@1 and mean reciprocal rank of the right article over QUERIES."""
    snap, fused, _, _ = retr.score_matrix([q for q, _ in QUERIES], mode=mode)  # type: ignore[arg-type]
    aids, per_article = article_max(fused, np.array([p.article_id for p in snap.passages]))
    hits, rr = [], []
    for row, (_, want) in zip(per_article, QUERIES, strict=True):
        ranked = aids[np.argsort(-row, kind="stable")].tolist()
        rank = ranked.index(want + 1) + 1
        hits.append(rank == 1)
        rr.append(1.0 / rank)
    return float(np.mean(hits)), float(np.mean(rr))


def test_hybrid_never_below_the_better_part_on_a_small_faq(faq_retriever):
    dense, lexical, hybrid = (_metrics(faq_retriever, m) for m in ("dense", "lexical", "hybrid"))
    # The parts really differ here (otherwise the check would be vacuous).
    assert lexical[1] < dense[1]
    for i, name in enumerate(("hit@1", "MRR")):
        assert hybrid[i] >= max(dense[i], lexical[i]) - 1e-9, (name, dense, lexical, hybrid)
    # The fixture can catch a bad fusion: the same w_max used as a fixed weight falls below dense here.
    fixed = _metrics(HybridRetriever(index=faq_retriever.index, adaptive=False,
                                     lexical_weight=DEFAULT_LEXICAL_WEIGHT), "hybrid")
    assert fixed[1] < dense[1]


def test_search_uses_the_adaptive_weight(faq_retriever):
    # A query whose words are not in the FAQ: BM25 matches nothing, so the hybrid is exactly the dense score.
    hit = faq_retriever.search("qwxz zzyzx frobnicate", k=1)[0]
    assert hit.lexical_score == 0.0 and hit.score == pytest.approx(hit.dense_score)
    # Over the FAQ queries: every weight lies in [0, w_max], and queries where BM25's best article is dense's best
    # get more lexical say on average than queries where the two sides disagree.
    snap, _, dense, lexn = faq_retriever.score_matrix([q for q, _ in QUERIES], mode="hybrid")
    w = faq_retriever.query_weights(snap, dense, lexn)
    assert ((w >= 0) & (w <= DEFAULT_LEXICAL_WEIGHT)).all() and w.max() > 0
    aids, d_art = article_max(dense, np.array([p.article_id for p in snap.passages]))
    _, l_art = article_max(lexn, np.array([p.article_id for p in snap.passages]))
    same_top = d_art.argmax(axis=1) == l_art.argmax(axis=1)
    assert 0 < same_top.sum() < len(QUERIES)
    assert w[same_top].mean() > w[~same_top].mean()
    # search() scores with that weight: the fused score is the convex mix of the two parts.
    q = "can I cancel a Zelle transfer"
    wq = float(w[[x for x, _ in QUERIES].index(q)])
    top = faq_retriever.search(q, k=1)[0]
    assert top.title == "Send money with Zelle"
    assert top.score == pytest.approx((1 - wq) * top.dense_score + wq * top.lexical_score, abs=1e-5)


def test_fixed_weight_mode_keeps_the_old_behaviour(faq_retriever):
    fixed = HybridRetriever(index=faq_retriever.index, adaptive=False)
    snap, fused, dense, lexn = fixed.score_matrix(["where is my parcel"], mode="hybrid")
    assert fixed.lexical_weight == 0.15
    assert np.allclose(fused, 0.85 * dense + 0.15 * lexn, atol=1e-6)


def test_bad_knobs_are_rejected(faq_retriever):
    with pytest.raises(InvalidInput, match="lexical_weight"):
        HybridRetriever(index=faq_retriever.index, lexical_weight=1.5)
    with pytest.raises(InvalidInput, match="agreement_k"):
        HybridRetriever(index=faq_retriever.index, agreement_k=0)


# A long article whose body never restates its title: the passage vector ("title + passage") is dominated by the
# billing details, so only the title field (its own vector, max-ed with the passage score) finds it for the question.
LONG_CANCEL = (
    "Plans renew on the same day each month. The renewal charges the card on file; if the charge fails we retry three "
    "times over a week and email the account owner each time. Invoices list every seat, add-on and tax line. Seats "
    "removed mid-cycle are credited pro rata on the next invoice, and credits never expire. Annual plans are billed up "
    "front with a discount and renew for another year unless the renewal is switched off in Settings > Billing before "
    "the renewal date. After that date the plan stays active until the end of the paid term, the workspace then "
    "becomes read-only for 30 days and is deleted afterwards."
)
TITLED = [
    ("Cancel your subscription", LONG_CANCEL),
    ("Billing cycles and invoices", "Each plan is billed monthly or yearly. The invoice shows seats, add-ons and tax. "
     "Download past invoices from Settings > Billing."),
    ("Change your payment card", "Open Settings > Billing, choose Payment method and enter the new card. The next "
     "renewal uses it."),
    ("Pause a subscription for a while", "Subscriptions cannot be paused. Downgrade to the free plan instead; your "
     "data is kept."),
]


@pytest.fixture(scope="module")
def titled_index(tmp_path_factory, embedder):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("titled-chroma"),
                           collection=f"titled-{uuid.uuid4().hex[:8]}")
    index.upsert_articles([ArticleDoc(i + 1, 1, t, b, [], []) for i, (t, b) in enumerate(TITLED)])
    yield index
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_title_match_ranks_its_article_first(titled_index, mode):
    query = "how do I cancel my subscription?"
    top = HybridRetriever(index=titled_index).search(query, k=2, mode=mode)
    assert top[0].title == "Cancel your subscription", [h.title for h in top]
    # The article wins through its title vector: its dense score is the title cosine, well above the passage cosine.
    q = titled_index.embedder.encode([query])[0]
    snap = titled_index.snapshot()
    j = next(i for i, p in enumerate(snap.passages) if p.title == "Cancel your subscription")
    title_cos, passage_cos = float(q @ snap.title_vectors[j]), float(q @ snap.passage_vectors[j])
    assert top[0].dense_score == pytest.approx(title_cos, abs=1e-5) and title_cos > passage_cos + 0.1
    # Without the title field the long body buries it under a shorter article that shares a word with the query.
    plain = HybridRetriever(index=titled_index, use_title_field=False).search(query, k=2, mode=mode)
    assert plain[0].title != "Cancel your subscription"
