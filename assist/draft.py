"""Grounded draft replies: quote the best matching article (its customer-answer section, else its best passages).

The draft's body is made only of verbatim article text, between a fixed greeting and a fixed closing, and names the
article id and version it quotes. When the best passage scores below `DEFAULT_DRAFT_THRESHOLD` the draft says there
is no grounded answer instead of inventing one.

How the threshold was chosen: on a simulated log that is not the test log (`simulate(n_cases=1500, seed=11)`),
each ticket's "subject. body" was searched (hybrid, no filter) against the simulated help centre (one article per
intent, none for the planted "data export" gap). A draft should be grounded exactly when the best article is one
written for the ticket's intent; the threshold is the most accurate one for that decision, rounded down to 0.05, and
the gap intent's tickets all score below it (the figures are in docs/PERFORMANCE.md, "Assist"). Raise
`draft_threshold` where a wrong draft costs more than none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from assist.models import DraftReply

DEFAULT_DRAFT_THRESHOLD = 0.40
GREETING = "Hello,\n\nthank you for contacting us."
CLOSING = "If anything is still unclear, just reply to this message.\n\nKind regards"
# Sections written for customers, in order of preference (compared lower-case, without punctuation).
ANSWER_HEADINGS: tuple[str, ...] = ("answer for the customer", "customer answer", "reply to the customer", "answer")
NO_MATCH = ("No published article matches this request well enough to draft a reply "
            "(best match {best}); answer it yourself or ask the knowledge team for an article.")


def _norm_heading(h: str) -> str:
    return re.sub(r"[^a-z ]", "", h.lower()).strip()


def exact_span(body: str, text: str) -> str | None:
    """The stretch of `body` that `text` came from (chunking may have changed whitespace), or None."""
    words = text.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), body)
    return body[m.start():m.end()] if m else None


def article_passages(snapshot: Any, article_id: int, version: int) -> list[Any]:
    """All indexed passages of one article version, in document order."""
    ps = [p for p in snapshot.passages if p.article_id == article_id and p.version == version]
    return sorted(ps, key=lambda p: (p.section, p.chunk))


def build_draft(
    *,
    hits: Sequence[Any],
    snapshot: Any = None,
    threshold: float = DEFAULT_DRAFT_THRESHOLD,
    max_passages: int = 2,
    answer_headings: Sequence[str] = ANSWER_HEADINGS,
    article_body: str | None = None,
) -> DraftReply:
    """Draft from the best hit's article (customer-answer section, else its best passages), or say none fits.

    With `article_body` (the SQL body of the hit's version) every quote is mapped back to the body's exact text.
    """
    if not hits:
        return DraftReply(grounded=False, text=NO_MATCH.format(best="none"), threshold=threshold,
                          reason="no published article was retrieved")
    best = hits[0]
    if best.score < threshold:
        return DraftReply(
            grounded=False, text=NO_MATCH.format(best=f"'{best.title}' scored {best.score:.2f} < {threshold:.2f}"),
            threshold=threshold, score=float(best.score), article_id=None,
            reason=f"best score {best.score:.3f} is below the draft threshold {threshold:.3f}",
        )
    quoted: list[str] = []
    section = ""
    if snapshot is not None:
        passages = article_passages(snapshot, best.article_id, best.version)
        wanted = [_norm_heading(h) for h in answer_headings]
        for h in wanted:
            chosen = [p for p in passages if _norm_heading(p.heading) == h]
            if chosen:
                quoted = [p.text.strip() for p in chosen if p.text.strip()]
                section = chosen[0].heading
                break
    if not quoted:
        # No customer-facing section: the article's best-scoring passages, in the order retrieval ranked them.
        same = [h for h in hits if h.article_id == best.article_id and h.version == best.version]
        quoted = list(dict.fromkeys(h.passage.text.strip() for h in same if h.passage.text.strip()))[:max_passages]
    if article_body is not None:
        # Quote the article's own characters: indexed chunks may differ from the body in whitespace only.
        spans = [exact_span(article_body, q) for q in quoted]
        quoted = [q for q in spans if q]
        if not quoted:
            return DraftReply(grounded=False, text=NO_MATCH.format(best=f"'{best.title}' (text not verifiable)"),
                              threshold=threshold, score=float(best.score),
                              reason="the indexed passages do not match the stored article body; run kb check")
    body = "\n\n".join(quoted)
    return DraftReply(
        grounded=True, text=f"{GREETING}\n\n{body}\n\n{CLOSING}", article_id=best.article_id,
        article_version=best.version, article_title=best.title, section=section, score=float(best.score),
        threshold=threshold, quoted=quoted,
        reason=f"quotes article {best.article_id} version {best.version} ('{best.title}')"
               + (f", section '{section}'" if section else ", best passages"),
    )
