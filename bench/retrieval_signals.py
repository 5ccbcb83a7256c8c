"""Which extra signal could lift StackFAQ retrieval past dense MiniLM? Issue #5 measurements, not the product path.

bench/retrieval.py measures the product (knowledge_hub). This script measures candidate signals on the same data sets
and the same BERT-FAQ metrics, with all-MiniLM-L6-v2 as the only model, to decide what is worth building:

- fields: cos(q, title), cos(q, passage), cos(q, title + passage), and the product's dense score
  max(cos(q, title + passage), cos(q, title)) (knowledge_hub.retrieval); BM25 as in the product;
- late interaction ("MaxSim", ColBERT-style but untrained): MiniLM's contextual token vectors; for each query token
  (no stop words / punctuation) its best cosine over the document's tokens, averaged with IDF weights (IDF over the
  passages), max over the title and title + passage fields; fused as (1 - a) * dense + a * maxsim with a chosen on the
  four tuning sets (best worst-case gain over dense), never on StackFAQ;
- the ceiling: the best NDCG@3 of any convex combination (grid step 0.1) of title cosine, title + passage cosine,
  MaxSim and BM25, chosen ON the StackFAQ queries. It is not a result, only an upper bound for score fusion of
  these signals (ties broken by document order in that grid, so it can differ slightly from sklearn's tie handling).

Every StackFAQ answer is one document (title = thread question), as in bench/retrieval.py.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Results, data_dir  # noqa: E402
from retrieval import banking77, evaluate, hint3, stackfaq  # noqa: E402

from api.settings import bundled_model_path  # noqa: E402
from core.embedding import Embedder  # noqa: E402
from knowledge_hub.index import chunk_markdown  # noqa: E402
from knowledge_hub.retrieval import _Lexical, normalise_lexical  # noqa: E402

MAXSIM_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)
STOP = set(
    ["a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "be", "can", "i", "my", "me", "you", "your", "how", "do", "does", "what", "which", "that", "this", "it", "with", "from", "at", "by", "as", "am", "was", "were", "will", "would", "could", "should", "there", "their", "they", "we", "our", "any", "some", "way", "not", "no"]
)


class Tokens:
    """Contextual token vectors of the bundled MiniLM (content tokens only, unit length)."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(bundled_model_path()), device="cpu", local_files_only=True)
        self.tok = self.model.tokenizer

    def encode(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(token ids, (n_tokens, d) unit vectors) per text, without [CLS]/[SEP], punctuation and stop words."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        embs = self.model.encode(texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False)
        special = {self.tok.cls_token_id, self.tok.sep_token_id, self.tok.pad_token_id}
        for text, e in zip(texts, embs, strict=True):
            ids = self.tok(text, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
            vecs = e.float().numpy()[: len(ids)]
            words = self.tok.convert_ids_to_tokens(ids)
            keep = np.array([i not in special and any(c.isalnum() for c in w) and w not in STOP
                             for i, w in zip(ids, words, strict=True)])
            if not keep.any():
                keep = np.array([i not in special for i in ids])
            v = vecs[keep]
            out.append((np.asarray(ids)[keep], v / np.linalg.norm(v, axis=1, keepdims=True)))
        return out


def maxsim(queries: list[tuple[np.ndarray, np.ndarray]], docs: list[tuple[np.ndarray, np.ndarray]],
           idf: dict[int, float], default_idf: float) -> np.ndarray:
    """IDF-weighted mean over query tokens of the best token cosine in each document: (queries, docs)."""
    allv = np.vstack([v for _, v in docs])
    starts = np.r_[0, np.cumsum([len(v) for _, v in docs])[:-1]]
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    for i, (qi, qv) in enumerate(queries):
        best = np.maximum.reduceat(qv @ allv.T, starts, axis=1)
        w = np.array([idf.get(int(t), default_idf) for t in qi])
        out[i] = (w[:, None] * best).sum(0) / w.sum()
    return out


def per_doc(scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Best passage score per document."""
    out = np.full((scores.shape[0], n), -np.inf, dtype=np.float32)
    for c, d in enumerate(owner):
        out[:, d] = np.maximum(out[:, d], scores[:, c])
    return out


def signals(docs: list[tuple[str, str]], queries: list[str], embedder: Embedder, tokens: Tokens) -> dict[str, Any]:
    """Per-document score matrices of every signal for one data set."""
    texts, owner, bodies = [], [], []
    for i, (title, body) in enumerate(docs):
        for c in chunk_markdown(body) or []:  # the product's chunking and passage text
            texts.append(f"{title}\n\n{c.heading}\n{c.text}" if c.heading else f"{title}\n\n{c.text}")
            bodies.append(c.text)
            owner.append(i)
    own, n = np.array(owner), len(docs)
    titles = sorted({t for t, _ in docs})
    t_of = np.array([titles.index(t) for t, _ in docs])
    q = embedder.encode(queries)
    cos_title = (q @ embedder.encode(titles).T)[:, t_of]
    cos_tp = per_doc(q @ embedder.encode(texts).T, own, n)
    cos_body = per_doc(q @ embedder.encode(bodies).T, own, n)
    lex = _Lexical([t.replace("\n\n", "\n", 1) for t in texts])
    bm25 = per_doc(normalise_lexical(lex.scores(queries)), own, n)
    tq, tt, tp = tokens.encode(queries), tokens.encode(titles), tokens.encode(texts)
    df: Counter[int] = Counter()
    for ids, _ in tp:
        df.update(set(ids.tolist()))
    idf = {t: float(np.log(1 + len(tp) / c)) for t, c in df.items()}
    default = float(np.log(1 + len(tp)))
    ms = np.maximum(maxsim(tq, tt, idf, default)[:, t_of], per_doc(maxsim(tq, tp, idf, default), own, n))
    return {"title": cos_title, "title+passage": cos_tp, "passage": cos_body, "bm25": bm25, "maxsim": ms,
            "dense (product)": np.maximum(cos_tp, cos_title)}


def fast_ndcg3(scores: np.ndarray, labels: np.ndarray) -> float:
    """NDCG@3 as evaluate() computes it, but ties broken by document order (for the ceiling grid only)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    lab = np.take_along_axis(labels, order, axis=1).astype(float)
    disc = 1 / np.log2(np.arange(2, 5))
    k = lab.sum(1).astype(int)
    ideal = np.array([disc[:kk].sum() for kk in k])
    return float(np.where(k > 0, (lab * disc).sum(1) / np.maximum(ideal, 1e-9), 0).mean())


def main() -> None:
    """Signals on the four tuning sets, the MaxSim weight chosen there, then StackFAQ and the fusion ceiling."""
    import torch

    torch.set_num_threads(1)
    root = data_dir()
    embedder = Embedder(bundled_model_path())
    tokens = Tokens()
    res = Results("retrieval_signals", extra_env={"embedding_model": embedder.name})
    sets = {"banking77-faq": banking77(root), **{f"hint3-{b}": hint3(root, b)
                                                for b in ("sofmattress", "curekart", "powerplay11")},
            "stackfaq": stackfaq(root)}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    kept: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for name, (docs, queries, relevant) in sets.items():
        print(name, flush=True)
        sig = signals(docs, queries, embedder, tokens)
        labels = np.array([[1 if k in relevant[i] else 0 for k in range(len(docs))] for i in range(len(queries))])
        m = {k: evaluate(v, labels) for k, v in sig.items()}
        for a in MAXSIM_WEIGHTS:
            m[f"dense + {a} maxsim"] = evaluate((1 - a) * sig["dense (product)"] + a * sig["maxsim"], labels)
        metrics[name] = m
        kept[name] = (sig, labels)
        for method, vals in m.items():
            for metric in ("NDCG@3", "MAP", "MAP (rank order)", "hit@1"):
                res.add(method, name, metric, vals[metric])

    tuning = [n for n in sets if n != "stackfaq"]

    def worst_gain(a: float) -> float:
        return min(metrics[n][f"dense + {a} maxsim"][k] - metrics[n]["dense (product)"][k]
                   for n in tuning for k in ("NDCG@3", "MAP"))

    for a in MAXSIM_WEIGHTS:
        res.add("maxsim: worst gain over dense", "tuning sets", f"a={a}", worst_gain(a))
    best = max(MAXSIM_WEIGHTS, key=worst_gain)
    res.add("chosen maxsim weight a (tuning sets)", "tuning sets", "a", best)
    chosen = metrics["stackfaq"][f"dense + {best} maxsim"]
    for metric, goal in (("NDCG@3", ">=0.98"), ("MAP", ">=0.96"), ("MAP (rank order)", None)):
        res.add(f"dense + {best} maxsim (chosen)", "stackfaq", metric, chosen[metric],
                metrics["stackfaq"]["dense (product)"][metric], goal)

    sig, labels = kept["stackfaq"]
    parts = ("title", "title+passage", "maxsim", "bm25")
    best_combo: tuple[float, tuple[float, ...]] = (-1.0, ())
    grid = np.round(np.arange(0, 1.01, 0.1), 1)
    for ws in itertools.product(grid, repeat=len(parts)):
        if abs(sum(ws) - 1) > 1e-6:
            continue
        nd3 = fast_ndcg3(sum(w * sig[p] for w, p in zip(ws, parts, strict=True) if w), labels)
        best_combo = max(best_combo, (nd3, ws))
    res.add("ceiling: best convex mix ON StackFAQ", "stackfaq", "NDCG@3 (ties by order)", best_combo[0], None,
            "weights " + ", ".join(f"{p}={w}" for p, w in zip(parts, best_combo[1], strict=True)))
    res.write()


if __name__ == "__main__":
    main()
