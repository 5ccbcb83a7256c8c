"""Hybrid retrieval over the published passages: dense (sentence embeddings) + lexical (BM25), fused by score.

Why not reciprocal-rank fusion: on StackFAQ an equal-weight RRF of BM25 and MiniLM is clearly worse than MiniLM
alone, because RRF gives the much weaker lexical ranking the same say. We fuse *scores* instead:

    dense(q, p)  = max(cos(q, title + passage), cos(q, title))      # two representations, max over fields
    lexical(q,p) = BM25(q, title + passage) / max over the candidate set   # in [0, 1], like Elasticsearch's max-norm
    hybrid       = (1 - w(q)) * dense + w(q) * lexical

w(q) is per query (adaptive, the default): w(q) = w_max * margin(q) * agreement(q), where
    margin(q)    = 1 - (2nd best article's lexical score / best article's lexical score)   # is BM25 sure of one article?
    agreement(q) = |dense top-k articles  ∩  lexical top-k articles| / k   (k = 5)         # do the two sides agree?
so when BM25 is unsure, or its candidates are not the dense candidates, the query is answered (almost) by dense alone.
A fixed weight (the previous behaviour) is `HybridRetriever(adaptive=False, lexical_weight=0.15)`. The fused score stays
on the cosine scale (a convex mix of a cosine and a [0, 1] score), so thresholds on it (assist drafts) keep meaning.

No knob was tuned on StackFAQ's queries: w_max was chosen on Banking77-as-FAQ and the three HINT3 train sets as FAQs,
for each sentence model (`lexical_weight_for`); see bench/retrieval.py.

Results are grouped per article (`search_articles`): an article is ranked by its best passage and returned once, with
its best passages. The score below which nothing is good enough to quote (`abstain_threshold`, `calibration()`) is
calibrated per hub, on queries the hub itself holds out: each article's title is asked with that article left out,
and with it every article that answers the same question (`held_out_articles`: those sharing one of its intents, and
those with the same title), which is exactly a question whose article does not exist; the threshold is the lowest
score that at most `1 - target` of those questions reach (hubs too small to say fall back to
`DEFAULT_ABSTAIN_THRESHOLD`). Leaving out the article alone is not enough on a hub of near-duplicates: its sibling
for the same intent answers the title almost as well, and such questions drove the threshold up to sibling-match
scores. It needs no encoding (the titles' vectors are in the index) and is recomputed when the index changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.errors import InvalidInput
from knowledge_hub.index import IndexSnapshot, KnowledgeIndex
from knowledge_hub.models import Passage, SearchHit

Mode = Literal["hybrid", "dense", "lexical"]

# Fixed-weight fusion (adaptive=False): chosen on Banking77-as-FAQ (best MAP over w in {0, .05, .1, .15, .2, .3, .5}).
FIXED_LEXICAL_WEIGHT = 0.15
# Adaptive fusion: w_max with the best worst-case gain over the better single part on Banking77-as-FAQ and the three
# HINT3 sets (grid .1 .15 .2 .3 .4 .5 .6; bench/retrieval.py re-derives it each run). StackFAQ was not used.
DEFAULT_LEXICAL_WEIGHT = 0.4
# w_max of other sentence models (by model folder name), chosen the same way for each on the tuning sets only
# (bench/retrieval.py re-derives it per model; docs/PERFORMANCE.md, "Retrieval"); a model without an entry uses
# DEFAULT_LEXICAL_WEIGHT. The stronger model needs less of BM25's help.
MODEL_LEXICAL_WEIGHTS: dict[str, float] = {"all-mpnet-base-v2": 0.2}
AGREEMENT_K = 5
# Abstain calibration: at least a share `target` of the left-out-article questions score below the threshold. Titles
# are crisper questions than tickets (they score higher against a neighbour article), so the target that best serves
# tickets is well below 1: chosen on training simulations, for both sentence models (docs/PERFORMANCE.md, "Assist").
# Fewer left-out questions than MIN_CALIBRATION_QUERIES cannot say where that is, and the fixed threshold is used.
DEFAULT_ABSTAIN_TARGET = 0.6
DEFAULT_ABSTAIN_THRESHOLD = 0.40
MIN_CALIBRATION_QUERIES = 8
MAX_CALIBRATION_QUERIES = 2000


def lexical_weight_for(embedder: object) -> float:
    """The adaptive w_max chosen for this embedder's model (DEFAULT_LEXICAL_WEIGHT for models not tuned)."""
    path = getattr(embedder, "model_path", None)
    name = getattr(path, "name", None) if path is not None else None
    return MODEL_LEXICAL_WEIGHTS.get(str(name), DEFAULT_LEXICAL_WEIGHT) if name else DEFAULT_LEXICAL_WEIGHT


@dataclass(frozen=True)
class Filters:
    """Which passages may be returned: status, any-of intents, any-of tags, a set of article ids."""

    status: str | None = "published"
    intents: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    article_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ArticleHit:
    """One retrieved article: ranked by its best passage, with its best passages (best first)."""

    passages: tuple[SearchHit, ...]
    rank: int

    @property
    def best(self) -> SearchHit:
        """The article's best passage."""
        return self.passages[0]

    @property
    def article_id(self) -> int:
        """Id of the article."""
        return self.best.article_id

    @property
    def version(self) -> int:
        """Version the passages were indexed from."""
        return self.best.version

    @property
    def title(self) -> str:
        """Title of the article."""
        return self.best.title

    @property
    def score(self) -> float:
        """The article's score: its best passage's fused score."""
        return self.best.score


@dataclass(frozen=True)
class Calibration:
    """The abstain threshold of one hub (index revision) and what it was chosen on.

    `queries` is how many held-out questions were asked (titles with their article and its siblings left out, when
    some article was left to answer); `false_answer_rate` is the share of them at or above the threshold;
    `calibrated` is False when there were too few and `threshold` is the fixed default.
    """

    threshold: float
    target: float
    queries: int
    false_answer_rate: float | None
    calibrated: bool
    revision: int


def choose_threshold(negatives: np.ndarray, *, target: float) -> float:
    """Lowest score that at most a share `1 - target` of `negatives` (best scores of questions with no right
    article) reach: with n questions, the (floor((1 - target) * n) + 1)-th highest, nudged just above it."""
    if not 0.0 < target < 1.0:
        raise InvalidInput(f"abstain target must be in (0, 1), got {target}", field="target")
    neg = np.sort(np.asarray(negatives, dtype=np.float64)[np.isfinite(negatives)])[::-1]
    if neg.size == 0:
        raise InvalidInput("no held-out questions to calibrate on", field="negatives")
    allowed = int(np.floor((1.0 - target) * neg.size + 1e-9))
    if allowed >= neg.size:
        return float(neg[-1])
    return float(np.nextafter(np.float32(neg[allowed]), np.float32(np.inf)))


def held_out_articles(passages: Sequence[Passage], article_ids: Sequence[int]) -> list[frozenset[int]]:
    """For each article in `article_ids`, the articles left out when its title is asked as a question that has no
    article: itself, every article that shares one of its intents (a sibling written for the same kind of request
    answers the question, so leaving only the article itself out would not make a question without an article), and
    every article with the same title text (case and spacing aside), which also covers copies without intents."""
    intents: dict[int, set[str]] = {}
    title_key: dict[int, str] = {}
    for p in passages:
        intents.setdefault(p.article_id, set()).update(p.intents)
        title_key.setdefault(p.article_id, " ".join(p.title.casefold().split()))
    by_intent: dict[str, set[int]] = {}
    by_title: dict[str, set[int]] = {}
    for aid, its in intents.items():
        for it in its:
            by_intent.setdefault(it, set()).add(aid)
        by_title.setdefault(title_key[aid], set()).add(aid)
    out = []
    for aid in article_ids:
        group = {aid} | by_title[title_key[aid]]
        for it in intents[aid]:
            group |= by_intent[it]
        out.append(frozenset(group))
    return out


def group_passages(order: np.ndarray, scores: np.ndarray, passages: Sequence[Passage], *, dense: np.ndarray,
                   lexical: np.ndarray, k: int, per_article: int,
                   min_score: float | None = None) -> list[ArticleHit]:
    """Walk passages best first (`order`), keep the first `k` articles and up to `per_article` passages of each."""
    groups: dict[int, list[SearchHit]] = {}
    for j in order:
        sc = float(scores[j])
        if not np.isfinite(sc) or (min_score is not None and sc < min_score):
            break
        aid = passages[int(j)].article_id
        got = groups.get(aid)
        if got is None:
            if len(groups) >= k:
                if all(len(g) >= per_article for g in groups.values()):
                    break
                continue
            got = groups[aid] = []
        if len(got) < per_article:
            got.append(SearchHit(passage=passages[int(j)], score=sc, dense_score=float(dense[j]),
                                 lexical_score=float(lexical[j]), rank=len(got) + 1))
    return [ArticleHit(passages=tuple(g), rank=r) for r, g in enumerate(groups.values(), start=1)]


class _Lexical:
    """BM25 (bm25s) over a snapshot's passages."""

    def __init__(self, texts: list[str]) -> None:
        import bm25s

        self.n = len(texts)
        self.model = bm25s.BM25()
        self.indexed = False
        if texts:
            tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
            # Passages with no word at all ("0", only stop words) leave no vocabulary, which bm25s cannot index:
            # then nothing matches lexically and the dense side decides alone.
            if tokens.vocab:
                self.model.index(tokens, show_progress=False)
                self.indexed = True

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        import bm25s

        out = np.zeros((len(queries), self.n), dtype=np.float32)
        if not self.n or not self.indexed:
            return out
        toks = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
        vocab = self.model.vocab_dict or {}
        for i, q in enumerate(toks):
            known = [t for t in q if t in vocab]
            if known:
                out[i] = self.model.get_scores(known)
        return out


def normalise_lexical(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Divide each row by its maximum over the allowed candidates, so the best lexical match scores 1."""
    s = scores if mask is None else np.where(mask, scores, 0.0)
    top = s.max(axis=1, keepdims=True) if s.size else np.zeros((s.shape[0], 1), dtype=np.float32)
    return np.asarray(s / np.maximum(top, 1e-9), dtype=np.float32)


def fuse(dense: np.ndarray, lexical_norm: np.ndarray, *, lexical_weight: float | np.ndarray) -> np.ndarray:
    """Convex combination of dense cosine and max-normalised BM25 (weight: a number or one per query row)."""
    w = np.asarray(lexical_weight, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]  # one weight per query row
    return np.asarray((1.0 - w) * dense + w * lexical_norm, dtype=np.float32)


def article_max(scores: np.ndarray, article_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best passage score per article: (article ids in column order, (queries, articles) matrix)."""
    ids, col = np.unique(article_of, return_inverse=True)
    if scores.shape[1] == 0:
        return ids, np.zeros((scores.shape[0], 0), dtype=np.float32)
    order = np.argsort(col, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(col[order]) != 0])
    return ids, np.maximum.reduceat(np.asarray(scores, dtype=np.float32)[:, order], starts, axis=1)


def adaptive_weights(
    dense: np.ndarray, lexical_norm: np.ndarray, *, article_of: np.ndarray, max_weight: float,
    mask: np.ndarray | None = None, k: int = AGREEMENT_K,
) -> np.ndarray:
    """Per-query lexical weight: max_weight x BM25's top-1 margin x top-k agreement of dense and lexical articles."""
    nq = dense.shape[0]
    if dense.shape[1] == 0:
        return np.zeros(nq, dtype=np.float32)
    allowed = np.ones(dense.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if not allowed.any():
        return np.zeros(nq, dtype=np.float32)
    _, d_art = article_max(dense[:, allowed], article_of[allowed])
    _, l_art = article_max(lexical_norm[:, allowed], article_of[allowed])
    n_art = d_art.shape[1]
    if n_art < 2:
        # One candidate article: the weight cannot change its rank, and margin/agreement are undefined.
        return np.zeros(nq, dtype=np.float32)
    kk = min(k, n_art)
    two = -np.sort(-l_art, axis=1)[:, :2]
    margin = np.where(two[:, 0] > 0, 1.0 - two[:, 1] / np.maximum(two[:, 0], 1e-9), 0.0)
    top_d = np.argsort(-d_art, axis=1, kind="stable")[:, :kk]
    top_l = np.argsort(-l_art, axis=1, kind="stable")[:, :kk]
    hit = np.zeros((nq, n_art), dtype=np.int8)
    np.put_along_axis(hit, top_d, 1, axis=1)
    agreement = np.take_along_axis(hit, top_l, axis=1).sum(axis=1) / kk
    return np.asarray(max_weight * margin * agreement, dtype=np.float32)


class HybridRetriever:
    """Searches a KnowledgeIndex; rebuilds its BM25 side whenever the index revision changes."""

    def __init__(self, *, index: KnowledgeIndex, lexical_weight: float | None = None, adaptive: bool = True,
                 use_title_field: bool = True, agreement_k: int = AGREEMENT_K, calibrate_abstain: bool = False) -> None:
        if lexical_weight is None:
            lexical_weight = lexical_weight_for(index.embedder) if adaptive else FIXED_LEXICAL_WEIGHT
        if not 0.0 <= lexical_weight <= 1.0:
            raise InvalidInput(f"lexical_weight must be in [0, 1], got {lexical_weight}", field="lexical_weight")
        if agreement_k < 1:
            raise InvalidInput(f"agreement_k must be >= 1, got {agreement_k}", field="agreement_k")
        self.index = index
        self.lexical_weight = lexical_weight  # the maximum per-query weight when adaptive
        self.adaptive = adaptive
        self.use_title_field = use_title_field
        self.agreement_k = agreement_k
        # Off by default: where articles of different intents answer each other's titles closely (ABCD's guidelines,
        # whose flows overlap), the calibrated threshold can still abstain on loosely worded in-domain requests.
        self.calibrate_abstain = calibrate_abstain
        self._lock = threading.Lock()
        self._lex_for: IndexSnapshot | None = None
        self._lex: _Lexical | None = None
        self._calibrations: dict[float, tuple[IndexSnapshot, Calibration]] = {}

    def _state(self) -> tuple[IndexSnapshot, _Lexical]:
        snap = self.index.snapshot()
        with self._lock:
            if self._lex is None or self._lex_for is not snap:
                self._lex = _Lexical([f"{p.title}\n{p.heading}\n{p.text}" for p in snap.passages])
                self._lex_for = snap  # held so identity stays meaningful
            return snap, self._lex

    @staticmethod
    def _mask(snap: IndexSnapshot, filters: Filters) -> np.ndarray:
        keep = np.ones(len(snap.passages), dtype=bool)
        want_intents, want_tags, want_ids = set(filters.intents), set(filters.tags), set(filters.article_ids)
        for i, p in enumerate(snap.passages):
            if (want_intents and not want_intents.intersection(p.intents)) or (
                want_tags and not want_tags.intersection(p.tags)
            ) or (want_ids and p.article_id not in want_ids):
                keep[i] = False
        # The index holds only published passages; any other status filter therefore matches nothing.
        if filters.status not in (None, "published"):
            keep[:] = False
        return keep

    def score_matrix(
        self, queries: Sequence[str], *, mode: Mode = "hybrid", filters: Filters | None = None
    ) -> tuple[IndexSnapshot, np.ndarray, np.ndarray, np.ndarray]:
        """Scores of every passage for every query: (snapshot, fused, dense, lexical-normalised); -inf = filtered."""
        if mode not in ("hybrid", "dense", "lexical"):
            raise InvalidInput(f"unknown retrieval mode {mode!r}", field="mode")
        snap, lex = self._state()
        n = len(snap.passages)
        mask = self._mask(snap, filters or Filters())[None, :]
        dense = np.zeros((len(queries), n), dtype=np.float32)
        if mode != "lexical" and n:
            q = self.index.embedder.encode(list(queries))
            dense = q @ snap.passage_vectors.T
            if self.use_title_field:
                dense = np.maximum(dense, q @ snap.title_vectors.T)
        lexn = normalise_lexical(lex.scores(queries), mask) if mode != "dense" else np.zeros_like(dense)
        if mode == "dense":
            fused = dense
        elif mode == "lexical":
            fused = lexn
        else:
            fused = fuse(dense, lexn, lexical_weight=self.query_weights(snap, dense, lexn, mask))
        fused = np.where(mask, fused, -np.inf).astype(np.float32)
        return snap, fused, dense, lexn

    def query_weights(
        self, snap: IndexSnapshot, dense: np.ndarray, lexical_norm: np.ndarray, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """The lexical weight used for each query row (constant unless adaptive)."""
        if not self.adaptive:
            return np.full(dense.shape[0], self.lexical_weight, dtype=np.float32)
        article_of = np.fromiter((p.article_id for p in snap.passages), dtype=np.int64, count=len(snap.passages))
        return adaptive_weights(dense, lexical_norm, article_of=article_of, max_weight=self.lexical_weight,
                                mask=mask, k=self.agreement_k)

    def search_articles(
        self,
        query: str,
        *,
        k: int = 5,
        passages: int = 3,
        mode: Mode = "hybrid",
        intents: Sequence[str] = (),
        tags: Sequence[str] = (),
        article_ids: Sequence[int] = (),
        status: str | None = "published",
        min_score: float | None = None,
    ) -> list[ArticleHit]:
        """Top-k articles for a query, each once, ranked by its best passage, with up to `passages` best passages."""
        if not query.strip():
            raise InvalidInput("query is empty", field="query")
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}", field="k")
        if passages < 1:
            raise InvalidInput(f"passages must be >= 1, got {passages}", field="passages")
        filters = Filters(status=status, intents=tuple(intents), tags=tuple(tags), article_ids=tuple(article_ids))
        snap, fused, dense, lexn = self.score_matrix([query], mode=mode, filters=filters)
        row = fused[0]
        return group_passages(np.argsort(-row, kind="stable"), row, snap.passages, dense=dense[0], lexical=lexn[0],
                              k=k, per_article=passages, min_score=min_score)

    @property
    def abstain_threshold(self) -> float:
        """The score assist's drafts abstain below: this hub's calibrated threshold at the index's current revision
        when `calibrate_abstain` is on (`calibration()` says what it was chosen on), else the fixed default."""
        return self.calibration().threshold if self.calibrate_abstain else DEFAULT_ABSTAIN_THRESHOLD

    def calibration(self, *, target: float = DEFAULT_ABSTAIN_TARGET) -> Calibration:
        """This hub's abstain threshold at the index's current revision and what it was chosen on (module
        docstring); cached until the index changes."""
        snap, lex = self._state()
        with self._lock:
            cached = self._calibrations.get(target)
            if cached is not None and cached[0] is snap:
                return cached[1]
        cal = self._calibrate(snap, lex, target=target)
        with self._lock:
            self._calibrations[target] = (snap, cal)
        return cal

    def _calibrate(self, snap: IndexSnapshot, lex: _Lexical, *, target: float) -> Calibration:
        article_of = np.fromiter((p.article_id for p in snap.passages), dtype=np.int64, count=len(snap.passages))
        first: dict[int, int] = {}
        for j, p in enumerate(snap.passages):
            first.setdefault(p.article_id, j)
        aids = sorted(first)
        if len(aids) > MAX_CALIBRATION_QUERIES:  # a fixed, spread-out sample of a large hub
            aids = [aids[i] for i in np.linspace(0, len(aids) - 1, MAX_CALIBRATION_QUERIES).astype(int)]
        if len(aids) < max(MIN_CALIBRATION_QUERIES, 2):
            return Calibration(threshold=DEFAULT_ABSTAIN_THRESHOLD, target=target, queries=len(aids),
                               false_answer_rate=None, calibrated=False, revision=snap.revision)
        left_out = held_out_articles(snap.passages, aids)
        # A question is asked only when some article is left to answer it wrongly.
        asked = [i for i, out in enumerate(left_out) if not np.isin(article_of, list(out)).all()]
        if len(asked) < max(MIN_CALIBRATION_QUERIES, 2):
            return Calibration(threshold=DEFAULT_ABSTAIN_THRESHOLD, target=target, queries=len(asked),
                               false_answer_rate=None, calibrated=False, revision=snap.revision)
        aids, left_out = [aids[i] for i in asked], [left_out[i] for i in asked]
        titles = [snap.passages[first[a]].title for a in aids]
        # A title's vector is stored with each of its passages: the questions need no encoding.
        q = snap.title_vectors[[first[a] for a in aids]]
        dense = q @ snap.passage_vectors.T
        if self.use_title_field:
            dense = np.maximum(dense, q @ snap.title_vectors.T)
        raw = lex.scores(titles)
        best = np.empty(len(aids), dtype=np.float64)
        for i, out in enumerate(left_out):
            keep = ~np.isin(article_of, list(out))  # no article answers the question: no right answer exists
            lexn = normalise_lexical(raw[i:i + 1], keep[None, :])
            d = dense[i:i + 1]
            w = self.query_weights(snap, d, lexn, keep[None, :])
            fused = fuse(d, lexn, lexical_weight=w)[0]
            best[i] = float(fused[keep].max())
        threshold = choose_threshold(best, target=target)
        return Calibration(threshold=threshold, target=target, queries=len(aids),
                           false_answer_rate=float((best >= threshold).mean()), calibrated=True,
                           revision=snap.revision)

    def search(
        self,
        query: str,
        *,
        k: int = 5,
        mode: Mode = "hybrid",
        intents: Sequence[str] = (),
        tags: Sequence[str] = (),
        article_ids: Sequence[int] = (),
        status: str | None = "published",
        min_score: float | None = None,
    ) -> list[SearchHit]:
        """Top-k passages for a query with their article id, version, title and scores."""
        if not query.strip():
            raise InvalidInput("query is empty", field="query")
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}", field="k")
        filters = Filters(status=status, intents=tuple(intents), tags=tuple(tags), article_ids=tuple(article_ids))
        snap, fused, dense, lexn = self.score_matrix([query], mode=mode, filters=filters)
        row = fused[0]
        order = np.argsort(-row, kind="stable")[:k]
        hits: list[SearchHit] = []
        for j in order:
            if not np.isfinite(row[j]) or (min_score is not None and row[j] < min_score):
                break
            hits.append(SearchHit(passage=snap.passages[int(j)], score=float(row[j]),
                                  dense_score=float(dense[0, j]), lexical_score=float(lexn[0, j]),
                                  rank=len(hits) + 1))
        return hits
