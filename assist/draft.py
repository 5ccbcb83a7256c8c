"""Grounded draft replies: a template (per intent and channel, editable by an admin) filled with the ticket's own
fields and the best article's verbatim text, or an abstention when no article fits.

A template is lines of text with {placeholders}. Ticket fields: {customer_name}, {order_id}, {product},
{question} (the customer's own question, quoted from the ticket), {subject}; article parts: {answer} (its
customer-answer section, else its best passages), {steps} (its numbered steps, verbatim), {article_title}. A line may
offer alternatives, `Hello {customer_name}, || Hello,`: the first whose placeholders all have a value is used; a line
whose placeholders cannot all be filled is left out. Every piece of the result is recorded in `DraftReply.parts` as
template text, a ticket field or article text, so each sentence can be traced to where it came from.

The draft abstains (says there is no grounded answer) when the best passage scores below the threshold the caller
passes (the knowledge hub's calibrated one where it has one, else `DEFAULT_DRAFT_THRESHOLD`).

How the default threshold was chosen: on a simulated log that is not the test log (`simulate(n_cases=1500,
seed=11)`), each ticket's "subject. body" was searched (hybrid, no filter) against the simulated help centre (one
article per intent, none for the planted "data export" gap). A draft should be grounded exactly when the best
article is one written for the ticket's intent; the threshold is the most accurate one for that decision, rounded
down to 0.05 (the figures are in docs/PERFORMANCE.md, "Assist"). Raise `draft_threshold` where a wrong draft costs
more than none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from assist.models import DraftPart, DraftReply
from core.errors import InvalidInput

DEFAULT_DRAFT_THRESHOLD = 0.40
# For a ticket whose routed intent has tagged articles, the intent already says what the ticket is about; the score
# only has to show the text is not unrelated. bench/assist.py chooses this floor on a training simulation (the
# highest grid value keeping >= 95 % of its tickets drafted from their intent's article).
DEFAULT_INTENT_DRAFT_THRESHOLD = 0.25
DEFAULT_TEMPLATE = """Hello {customer_name}, || Hello,
thank you for contacting us about your order {order_id}. || thank you for contacting us about {product}. || thank you for contacting us.
You asked: "{question}"
{answer}
If anything is still unclear, just reply to this message.
Kind regards"""
TICKET_FIELDS: tuple[str, ...] = ("customer_name", "order_id", "product", "question", "subject")
ARTICLE_FIELDS: tuple[str, ...] = ("answer", "steps", "article_title")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
# Sections written for customers, in order of preference (compared lower-case, without punctuation).
ANSWER_HEADINGS: tuple[str, ...] = ("answer for the customer", "customer answer", "reply to the customer", "answer")
STEP_LINE = re.compile(r"^\s*\d+[.)]\s+(.+?)\s*$", re.MULTILINE)
NO_MATCH = ("No published article matches this request well enough to draft a reply "
            "(best match {best}); answer it yourself or ask the knowledge team for an article.")


def check_template(text: str) -> None:
    """Raise InvalidInput naming the first unknown placeholder, or when no line can quote the article."""
    known = set(TICKET_FIELDS) | set(ARTICLE_FIELDS)
    names = PLACEHOLDER.findall(text)
    for name in names:
        if name not in known:
            raise InvalidInput(f"unknown placeholder {{{name}}}; use one of "
                               + ", ".join(f"{{{k}}}" for k in (*TICKET_FIELDS, *ARTICLE_FIELDS)), field="text")
    if not {"answer", "steps"} & set(names):
        raise InvalidInput("a draft template needs {answer} or {steps}: a draft must quote the article",
                           field="text")
    stray = PLACEHOLDER.sub("", text)
    if "{" in stray or "}" in stray:
        raise InvalidInput("a draft template has an unbalanced brace; placeholders look like {customer_name}",
                           field="text")


def question_of(subject: str, body: str) -> str | None:
    """The customer's question in their own words: the first sentence of the body ending in '?', else the subject."""
    for m in re.finditer(r"[^.!?\n]*\?", body or ""):
        q = m.group(0).strip()
        if len(q.split()) >= 3:
            return q
    subject = (subject or "").strip()
    return subject or None


def render(template: str, values: dict[str, Any]) -> list[DraftPart]:
    """Fill a template: the parts in order (template text, ticket fields, article text), lines joined by newlines.

    A value may be a string or a list of article quotes (joined by blank lines, each its own part).
    """
    parts: list[DraftPart] = []
    for line in template.splitlines():
        chosen = None
        for alt in line.split(" || "):
            names = PLACEHOLDER.findall(alt)
            if all(values.get(n) for n in names):
                chosen = alt
                break
        if chosen is None:
            continue
        if parts:
            parts.append(DraftPart(text="\n", source="template"))
        pos = 0
        for m in PLACEHOLDER.finditer(chosen):
            if m.start() > pos:
                parts.append(DraftPart(text=chosen[pos:m.start()], source="template"))
            name = m.group(1)
            value = values[name]
            src: Literal["ticket", "article"] = "article" if name in ARTICLE_FIELDS else "ticket"
            if isinstance(value, list):
                for i, q in enumerate(value):
                    if i:
                        parts.append(DraftPart(text="\n\n", source="template"))
                    parts.append(DraftPart(text=q, source=src, field=name))
            else:
                parts.append(DraftPart(text=str(value), source=src, field=name))
            pos = m.end()
        if pos < len(chosen):
            parts.append(DraftPart(text=chosen[pos:], source="template"))
    return parts


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


def article_steps(body: str | None) -> list[str]:
    """The article's numbered step lines, verbatim (the text after the number)."""
    return [m.group(1) for m in STEP_LINE.finditer(body or "")]


def build_draft(
    *,
    hits: Sequence[Any],
    snapshot: Any = None,
    threshold: float = DEFAULT_DRAFT_THRESHOLD,
    max_passages: int = 2,
    answer_headings: Sequence[str] = ANSWER_HEADINGS,
    article_body: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    fields: dict[str, str | None] | None = None,
    template_id: int | None = None,
    template_scope: str | None = None,
) -> DraftReply:
    """Draft from the best hit's article through `template` and the ticket's `fields`, or say none fits.

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
    values: dict[str, Any] = {k: (v.strip() if isinstance(v, str) and v.strip() else None)
                              for k, v in (fields or {}).items() if k in TICKET_FIELDS}
    steps = article_steps(article_body)
    values.update(answer=quoted, steps=steps or None, article_title=best.title)
    parts = render(template, values)
    quoted_used = [p.text for p in parts if p.source == "article" and p.field != "article_title"]
    if not quoted_used:
        return DraftReply(grounded=False, text=NO_MATCH.format(best=f"'{best.title}' (template quotes nothing)"),
                          threshold=threshold, score=float(best.score), template_id=template_id,
                          template_scope=template_scope,
                          reason="the template's article lines could not be filled from this article")
    return DraftReply(
        grounded=True, text="".join(p.text for p in parts), article_id=best.article_id,
        article_version=best.version, article_title=best.title, section=section, score=float(best.score),
        threshold=threshold, quoted=quoted_used, parts=parts, template_id=template_id, template_scope=template_scope,
        reason=f"quotes article {best.article_id} version {best.version} ('{best.title}')"
               + (f", section '{section}'" if section else ", best passages"),
    )
