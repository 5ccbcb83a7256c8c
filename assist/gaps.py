"""Knowledge gaps (insight -> hub): topics that cost a lot and that the knowledge base does not cover, ranked.

For every topic (the intent of each case, from the ticket table or a case attribute of the log):

* demand: its share of all cases and of all case hours (the mined cost: first to last event of each case), and
  how much longer its cases take than the rest (`cost_ratio`);
* coverage: up to `sample_per_topic` of its tickets are searched (hybrid, no filter) against the published
  articles; a ticket is covered when its best passage scores >= `threshold` (the draft threshold: the score above
  which assist drafts a grounded reply) and, when the articles are tagged with the log's topic names, the best
  article is tagged with this topic;
* `gap_score = hours_share x (1 - coverage)`: the share of all support hours spent on tickets the hub cannot answer.

Articles are judged on the same sample: never among any ticket's top-k are listed as `never_retrieved`. When agent
feedback says which articles were used on which tickets (accepted / edited suggestions), each used article's tickets
are compared with the unused tickets of the same topics (topic-weighted means): no shorter -> `does_not_shorten`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from assist.draft import DEFAULT_DRAFT_THRESHOLD
from assist.models import ArticleUsage, GapExample, GapReport, GapTopic
from assist.service import KnowledgeCatalog
from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, TIMESTAMP

_HOUR = 3600.0


def ticket_texts(tickets: pd.DataFrame, *, text_columns: tuple[str, ...] = ("subject", "body")) -> pd.Series:
    """Ticket text per case id ("subject. body"), or the `text` column when there is one."""
    if "text" in tickets.columns:
        s = tickets["text"].fillna("").astype(str)
    else:
        cols = [c for c in text_columns if c in tickets.columns]
        if not cols:
            raise InvalidInput(f"ticket table needs a 'text' column or one of {list(text_columns)}; "
                               f"has {list(tickets.columns)}", field="tickets")
        if tickets.empty:  # agg over no rows returns a frame, not a series
            return pd.Series([], dtype=object, index=pd.Index([], dtype=object))
        s = tickets[cols].fillna("").astype(str).agg(". ".join, axis=1).str.strip(". ")
    return pd.Series(s.to_numpy(), index=tickets[CASE_ID].astype(str).to_numpy())


def case_hours(log: Any) -> pd.Series:
    """Hours from first to last event per case (the mined cost of a case)."""
    df = log.df if hasattr(log, "df") else log
    for c in (CASE_ID, TIMESTAMP):
        if c not in df.columns:
            raise InvalidInput(f"log lacks column {c!r}", field=c)
    g = df.groupby(df[CASE_ID].astype(str), sort=False)[TIMESTAMP]
    return (g.max() - g.min()).dt.total_seconds() / _HOUR


def _topics(log: Any, tickets: pd.DataFrame | None, topic_column: str) -> pd.Series:
    if tickets is not None and topic_column in tickets.columns:
        return pd.Series(tickets[topic_column].to_numpy(), index=tickets[CASE_ID].astype(str).to_numpy())
    df = log.df if hasattr(log, "df") else log
    if topic_column not in df.columns:
        raise InvalidInput(f"neither the tickets nor the log have a {topic_column!r} column to group topics by",
                           field="topic_column")
    return df.groupby(df[CASE_ID].astype(str), sort=False)[topic_column].first()


def knowledge_gaps(
    *,
    log: Any,
    tickets: pd.DataFrame,
    retriever: Any,
    catalog: KnowledgeCatalog,
    topic_column: str = "intent",
    sample_per_topic: int = 20,
    top_k: int = 5,
    threshold: float = DEFAULT_DRAFT_THRESHOLD,
    used: Mapping[str, set[int]] | None = None,
    min_use: int = 5,
    n_examples: int = 3,
    seed: int = 7,
    feedback: Sequence[Any] = (),
) -> GapReport:
    """Topics ranked by the support hours the knowledge base cannot answer; unused and unhelpful articles.

    `feedback` (stored assist feedback rows) counts too: a sampled ticket whose suggested article or draft an agent
    rejected is not covered, and the replies agents wrote instead of a draft are listed per topic as material for
    the missing article.
    """
    if sample_per_topic < 1 or top_k < 1:
        raise InvalidInput("sample_per_topic and top_k must be >= 1", field="sample_per_topic")
    hours = case_hours(log)
    topics = _topics(log, tickets, topic_column).reindex(hours.index)
    texts = ticket_texts(tickets)
    frame = pd.DataFrame({"hours": hours, "topic": topics, "text": texts.reindex(hours.index)})
    frame = frame[frame["topic"].notna()]
    frame["topic"] = frame["topic"].astype(str)
    if frame.empty:  # nothing to rank yet (a fresh install, or no ticket with a topic): an empty report
        return GapReport(topics=[], threshold=threshold, tickets_sampled=0, cases=0)
    total_hours = float(frame["hours"].sum()) or 1.0
    n_cases = len(frame)

    # Deterministic sample of tickets per topic (only tickets with text can be searched).
    rng = np.random.default_rng(seed)
    with_text = frame[frame["text"].fillna("").str.strip() != ""]
    sample_ids: list[str] = []
    for _, grp in with_text.groupby("topic", sort=True):
        ids = grp.index.to_numpy()
        take = ids if len(ids) <= sample_per_topic else rng.choice(ids, size=sample_per_topic, replace=False)
        sample_ids.extend(str(i) for i in sorted(take))
    strict = bool(catalog.intents() & set(frame["topic"]))
    best_art: dict[str, int | None] = {}
    best_score: dict[str, float] = {}
    top1 = dict.fromkeys(catalog.entries, 0)
    topk = dict.fromkeys(catalog.entries, 0)
    if sample_ids:
        snap, fused, _, _ = retriever.score_matrix(frame.loc[sample_ids, "text"].tolist())
        aids = np.array([p.article_id for p in snap.passages], dtype=np.int64)
        for i, cid in enumerate(sample_ids):
            row = fused[i]
            if not len(row) or not np.isfinite(row).any():
                best_art[cid], best_score[cid] = None, 0.0
                continue
            order = np.argsort(-row, kind="stable")
            best_art[cid], best_score[cid] = int(aids[order[0]]), float(row[order[0]])
            seen: list[int] = []
            for j in order:
                a = int(aids[j])
                if a not in seen:
                    seen.append(a)
                if len(seen) >= top_k:
                    break
            b = best_art[cid]
            if b is not None and b in top1:
                top1[b] += 1
            for a in seen:
                if a in topk:
                    topk[a] += 1

    rejected_on: set[str] = set()
    rejected_by_topic: dict[str, int] = {}
    answers: dict[str, list[str]] = {}
    for f in feedback:
        cid = str(f.ticket_id)
        if cid not in frame.index or f.kind not in ("article", "draft"):
            continue
        topic_f = str(frame.at[cid, "topic"])
        if f.verdict == "rejected":
            rejected_on.add(cid)
            rejected_by_topic[topic_f] = rejected_by_topic.get(topic_f, 0) + 1
        if f.kind == "draft" and f.verdict == "edited" and (f.edited_text or "").strip():
            answers.setdefault(topic_f, []).append(str(f.edited_text).strip()[:1000])

    def covered(cid: str, topic: str) -> bool:
        if cid in rejected_on:  # an agent said the suggestion did not answer this ticket
            return False
        a = best_art.get(cid)
        if a is None or best_score.get(cid, 0.0) < threshold:
            return False
        if not strict:
            return True
        entry = catalog.entries.get(a)
        return entry is not None and topic in entry.intents

    out: list[GapTopic] = []
    for topic, grp in frame.groupby("topic", sort=True):
        t = str(topic)
        sampled = [c for c in sample_ids if frame.at[c, "topic"] == t]
        cov = float(np.mean([covered(c, t) for c in sampled])) if sampled else 0.0
        mean_top = float(np.mean([best_score[c] for c in sampled])) if sampled else 0.0
        rest = frame.loc[frame["topic"] != t, "hours"]
        mean_h = float(grp["hours"].mean())
        ratio = mean_h / float(rest.mean()) if len(rest) and float(rest.mean()) > 0 else 1.0
        hours_share = float(grp["hours"].sum()) / total_hours
        n_art = len(catalog.for_topic(t))
        gap = hours_share * (1.0 - cov)
        examples = []
        for c in sorted(sampled, key=lambda c: (covered(c, t), best_score.get(c, 0.0)))[:n_examples]:
            top = best_art.get(c)
            entry = catalog.entries.get(top) if top is not None else None
            examples.append(GapExample(case_id=c, text=str(frame.at[c, "text"])[:500], top_article_id=top,
                                       top_article_title=entry.title if entry else None,
                                       top_score=best_score.get(c), covered=covered(c, t)))
        why = (f"{len(grp)} cases ({len(grp) / n_cases:.0%} of volume, {hours_share:.0%} of support hours); "
               f"cases take {ratio:.1f}x as long as the rest; {cov:.0%} of {len(sampled)} sampled tickets find an "
               f"applicable article scoring >= {threshold:.2f} (mean best score {mean_top:.2f}); "
               f"{n_art} published article(s) tagged with this topic.")
        if rejected_by_topic.get(t):
            why += f" Agents rejected the suggested article or draft {rejected_by_topic[t]} time(s)."
        out.append(GapTopic(rank=0, topic=t, cases=len(grp), volume_share=len(grp) / n_cases,
                            hours_share=hours_share, mean_hours=mean_h, cost_ratio=ratio, coverage=cov,
                            mean_top_score=mean_top, articles_for_topic=n_art, gap_score=gap, why=why,
                            examples=examples, rejected_suggestions=rejected_by_topic.get(t, 0),
                            agent_answers=answers.get(t, [])[:n_examples]))
    out.sort(key=lambda g: (-g.gap_score, g.topic))
    for r, g in enumerate(out, start=1):
        g.rank = r

    articles = _article_usage(frame, catalog=catalog, top1=top1, topk=topk, used=used or {}, min_use=min_use)
    return GapReport(
        topics=out, articles=articles,
        never_retrieved=[a for a in articles if a.verdict == "never_retrieved"],
        does_not_shorten=[a for a in articles if a.verdict == "does_not_shorten"],
        threshold=threshold, tickets_sampled=len(sample_ids), cases=n_cases,
    )


def _article_usage(frame: pd.DataFrame, *, catalog: KnowledgeCatalog, top1: dict[int, int], topk: dict[int, int],
                   used: Mapping[str, set[int]], min_use: int) -> list[ArticleUsage]:
    usage_cases: dict[int, list[str]] = {}
    for cid, arts in used.items():
        if cid in frame.index:
            for a in arts:
                usage_cases.setdefault(int(a), []).append(cid)
    any_use = {c for cs in usage_cases.values() for c in cs}
    out = []
    for aid, entry in sorted(catalog.entries.items()):
        cases = usage_cases.get(aid, [])
        mean_used = mean_unused = diff = None
        if cases:
            u = frame.loc[cases]
            mean_used = float(u["hours"].mean())
            # Unused tickets of the same topics, weighted like the used ones: compares like with like.
            unused = frame[~frame.index.isin(any_use)]
            weights = u["topic"].value_counts(normalize=True)
            per_topic = unused.groupby("topic")["hours"].mean()
            known = [t for t in weights.index if t in per_topic.index]
            if known:
                w = weights[known] / weights[known].sum()
                mean_unused = float((per_topic[known] * w).sum())
                diff = mean_used - mean_unused
        verdict: Literal["never_retrieved", "does_not_shorten", "shortens", "not_enough_use"]
        if topk.get(aid, 0) == 0 and not cases:
            verdict = "never_retrieved"
        elif len(cases) < min_use or diff is None:
            verdict = "not_enough_use"
        else:
            verdict = "does_not_shorten" if diff >= 0 else "shortens"
        out.append(ArticleUsage(article_id=aid, title=entry.title, version=entry.version, top1=top1.get(aid, 0),
                                topk=topk.get(aid, 0), used_cases=len(cases), mean_hours_used=mean_used,
                                mean_hours_unused=mean_unused, hours_difference=diff, verdict=verdict))
    return out
