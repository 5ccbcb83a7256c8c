"""Assist on the simulator: actions ranked by outcome, grounded drafts, live article changes, feedback, gaps.

Everything is real: tiny LightGBM models trained on `sim_small`, the simulated help centre imported into SQLite and
the embedded chroma store, hybrid retrieval with the bundled MiniLM.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from assist.actions import StepOutcomes, events_frame, rank_actions
from assist.draft import DEFAULT_TEMPLATE
from assist.gaps import knowledge_gaps
from assist.models import AssistFeedback, AssistFeedbackIn
from assist.service import AssistModels, articles_used, assist, list_feedback, load_catalog, record_feedback
from core.errors import InvalidInput
from insight.models import NextActivityPredictor, RemainingTimePredictor
from insight.simulate.knowledge import knowledge_base
from knowledge_hub import service as kb
from knowledge_hub.index import KnowledgeIndex
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus, ArticleUpdate, ArticleVersion
from knowledge_hub.retrieval import HybridRetriever

TINY = {"n_estimators": 25, "num_leaves": 15, "validation_fraction": 0.0, "min_child_samples": 10, "num_threads": 1}
UNRELATED = ArticleCreate(
    title="Watering the office plants",
    body="## Schedule\nWater the ficus on Mondays and the cactus once a month. Use rain water from the tank.",
    tags=["facilities"], status=ArticleStatus.published,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, embedder):
    """The simulated help centre (plus one unrelated article) in SQLite + embedded chroma."""
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__,  # type: ignore[attr-defined]
                                                 AssistFeedback.__table__])  # type: ignore[attr-defined]
    session = Session(engine, expire_on_commit=False)
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("chroma"),
                           collection=f"assist-{uuid.uuid4().hex[:8]}")
    ids = {}
    for spec in knowledge_base():
        a = kb.create(session=session, index=index, author="sim",
                      article_in=ArticleCreate(**spec.to_dict(), status=ArticleStatus.published))
        ids[a.title] = a.id
    ids[UNRELATED.title] = kb.create(session=session, index=index, article_in=UNRELATED, author="sim").id
    yield session, index, HybridRetriever(index=index), ids
    session.close()
    engine.dispose()


@pytest.fixture(scope="module")
def models(sim_small):
    log = sim_small.log
    return AssistModels(
        next_activity=NextActivityPredictor(**TINY).fit(log),
        remaining_time=RemainingTimePredictor(**TINY).fit(log),
        outcomes=StepOutcomes().fit(log),
        versions={"next_activity": "tiny", "remaining_time": "tiny"},
    )


def _ticket(sim, intent: str, *, n_events: int = 4, skip: int = 0):
    """A clearly worded ticket of this intent (the simulator marks borrowed, vague and misspelt wording)."""
    flags = sim.cases.set_index("case_id")[["ambiguous_text", "vague_text", "has_typo"]].any(axis=1)
    clear = sim.tickets["case_id"].map(~flags).astype(bool)
    t = sim.tickets[(sim.tickets["intent"] == intent) & clear].iloc[skip]
    ev = sim.log.df[sim.log.df["case_id"] == t["case_id"]].iloc[:n_events]
    attrs = {c: t[c] for c in ("intent", "segment", "priority", "product")}
    return t["case_id"], f"{t['subject']}. {t['body']}", ev, attrs


def _fields(sim, cid: str) -> dict:
    t = sim.tickets.set_index("case_id").loc[cid]
    return {"subject": t["subject"], "body": t["body"], "product": t["product"]}


def _run(hub, sim, intent, models=None, **kw):
    session, _, retriever, _ = hub
    cid, text, ev, attrs = _ticket(sim, intent, **kw)
    return assist(ticket_text=text, events=ev, case_attributes=attrs, ticket_id=cid, models=models,
                  retriever=retriever, catalog=load_catalog(session=session), ticket_fields=_fields(sim, cid))


# ---------------------------------------------------------------- next-best actions


def _fork_log(n: int = 240, seed: int = 3) -> pd.DataFrame:
    """Open -> Work, then 70 % Escalate (case ends ~60 h later) or 30 % Fix (ends ~2 h later)."""
    rng = np.random.default_rng(seed)
    rows = []
    t0 = pd.Timestamp("2026-01-05", tz="UTC")
    for i in range(n):
        start = t0 + pd.Timedelta(hours=float(rng.uniform(0, 24 * 60)))
        slow = rng.random() < 0.7
        steps = [("Open", 0.0), ("Work", 0.5), ("Escalate" if slow else "Fix", 1.0),
                 ("Close", (60.0 if slow else 2.0) + float(rng.uniform(0, 1)))]
        rows += [{"case_id": f"c{i:04d}", "activity": a, "timestamp": start + pd.Timedelta(hours=h)} for a, h in steps]
    return pd.DataFrame(rows)


def test_actions_ranked_by_expected_outcome_not_only_likelihood():
    log = _fork_log()
    na = NextActivityPredictor(**TINY).fit(log)
    rt = RemainingTimePredictor(**TINY).fit(log)
    prefix = events_frame(log[log["case_id"] == "c0000"].iloc[:2])
    by_outcome, ctx = rank_actions(prefix=prefix, next_activity_model=na, remaining_time_model=rt,
                                   outcomes=StepOutcomes().fit(log))
    by_likelihood, _ = rank_actions(prefix=prefix, next_activity_model=na, remaining_time_model=rt,
                                    ranking="likelihood")
    assert [a.activity for a in by_outcome] == ["Fix", "Escalate"]
    assert [a.activity for a in by_likelihood] == ["Escalate", "Fix"]
    fix, esc = by_outcome
    assert esc.probability > fix.probability >= 0.05
    assert fix.expected_remaining_hours < 10 < 40 < esc.expected_remaining_hours
    assert fix.expected_change_hours < 0 < esc.expected_change_hours
    assert ctx.expected_remaining_hours is not None and fix.sla_breach_probability < esc.sla_breach_probability
    assert fix.similar_cases and 40 < fix.similar_cases < 110 and "faster" in fix.why and "#2 most likely" in fix.why


def test_assist_on_a_simulated_ticket(hub, models, sim_small):
    _, _, _, ids = hub
    cid, _, ev, _ = _ticket(sim_small, "refund request", n_events=4)
    out = _run(hub, sim_small, "refund request", models=models, n_events=4)
    assert out.ticket_id == cid and out.prefix == ev["activity"].tolist() and len(out.prefix) == 4
    # The forecast of the next events (timeline) keeps the models' ranking by expected outcome.
    steps = out.next_steps
    assert 1 <= len(steps) <= 3 and [a.rank for a in steps] == list(range(1, len(steps) + 1))
    hours = [a.expected_remaining_hours for a in steps]
    assert hours == sorted(hours)
    for a in steps:
        assert a.source == "model" and 0 < a.probability <= 1 and a.why and a.sla_breach_probability is not None
    # Agent actions: never a process state, each with its mined support and interval.
    for a in out.actions:
        assert a.source == "effect" and a.activity not in ("Triage", "Assign to team", "Reassign", "Work started")
        assert min(a.n_with, a.n_without) >= out.evidence_rule["min_support"] and a.hours_interval
    # supporting knowledge: the refund article first, passages carry article id, version and scores
    top = out.knowledge[0]
    assert top.article_id == ids["Processing a refund request"] and top.version == 1
    assert top.passages and all(p.article_id == top.article_id and p.score <= top.score for p in top.passages)
    # each guideline step of the best article gets that article's passages
    assert [g.activity for g in out.guideline_steps] == ["Solution proposed", "Approval requested"]
    for g in out.guideline_steps:
        assert ids["Processing a refund request"] in {k.article_id for k in g.knowledge}
    assert out.draft.grounded and out.draft.article_id == top.article_id and out.draft.article_version == 1
    assert out.draft.section == "Answer for the customer" and "supervisor's approval" in out.draft.text


# ---------------------------------------------------------------- grounded draft


def _quoted_only(draft, body: str, template: str = DEFAULT_TEMPLATE, fields: dict | None = None) -> None:
    """Every part of the draft is template text, a ticket field or the article's own text."""
    assert draft.text == "".join(p.text for p in draft.parts)
    for p in draft.parts:
        if p.source == "article":
            assert p.text in body, f"draft quotes text that is not in the article: {p.text!r}"
        elif p.source == "template":
            assert p.text in template or p.text.strip() == "", p.text
        elif p.field == "question":  # the customer's own words
            assert fields is not None and (p.text in fields["body"] or p.text == fields["subject"]), p
        else:
            assert fields is not None and p.text == fields[p.field], p
    assert draft.quoted and all(q in body for q in draft.quoted)


@pytest.mark.parametrize("intent", ["password reset", "api error", "damaged item", "cancel subscription"])
def test_draft_quotes_only_article_content(hub, sim_small, intent):
    session = hub[0]
    out = _run(hub, sim_small, intent)
    assert out.draft.grounded, out.draft.reason
    art = session.get(Article, out.draft.article_id)
    assert art is not None and out.draft.article_version == art.version
    _quoted_only(out.draft, art.body, fields=_fields(sim_small, out.ticket_id))
    assert {p.field for p in out.draft.parts if p.source == "ticket"} >= {"product", "question"}


def test_no_draft_when_nothing_matches(hub, sim_small):
    out = _run(hub, sim_small, sim_small.truth.knowledge_gap.intent)
    assert not out.draft.grounded and out.draft.article_id is None and out.draft.quoted == []
    assert "No published article matches" in out.draft.text
    # below the threshold, or (the gap intent has no article) the best match is another intent's
    assert out.draft.score < out.draft.threshold or "tagged for other intents" in out.draft.reason
    out = assist(ticket_text="zxqv blorf wibble", retriever=hub[2], catalog=load_catalog(session=hub[0]))
    assert not out.draft.grounded


# ---------------------------------------------------------------- the hub changes the very next answer


def test_edit_unpublish_and_restore_change_the_next_assist_answer(hub):
    session, index, retriever, ids = hub

    def ask():
        return assist(ticket_text="I forgot my password and the reset link I got has expired",
                      case_attributes={"intent": "password reset"}, retriever=retriever,
                      catalog=load_catalog(session=session))

    aid = ids["Helping a customer reset their password"]
    before = ask()
    assert before.draft.article_id == aid and before.draft.article_version == 1
    original = session.get(Article, aid).body
    new_answer = "Use the new one-time sign-in code sent by text message; it is valid for 10 minutes."
    edited = original.split("## Answer for the customer")[0] + f"## Answer for the customer\n{new_answer}\n"
    kb.update(session=session, index=index, article_id=aid, author="km", article_in=ArticleUpdate(body=edited))
    after_edit = ask()
    assert after_edit.draft.article_id == aid and after_edit.draft.article_version == 2
    assert after_edit.draft.quoted == [new_answer] and "30 minutes" not in after_edit.draft.text

    kb.unpublish(session=session, index=index, article_id=aid)
    gone = ask()
    assert aid not in {k.article_id for k in gone.knowledge} and gone.draft.article_id != aid

    kb.publish(session=session, index=index, article_id=aid)
    restored = kb.restore_version(session=session, index=index, article_id=aid, version=1, author="km")
    back = ask()
    assert back.draft.article_id == aid and back.draft.article_version == restored.version == 3
    assert back.draft.quoted == before.draft.quoted and new_answer not in back.draft.text


# ---------------------------------------------------------------- feedback


def test_feedback_is_stored_for_the_learning_loop(hub):
    session = hub[0]
    tid = f"T-{uuid.uuid4().hex[:6]}"
    record_feedback(session=session, ticket_id=tid, by="ann", feedback_in=AssistFeedbackIn(
        kind="action", suggestion="Approval requested", verdict="accepted", rank=1))
    record_feedback(session=session, ticket_id=tid, by="ann", feedback_in=AssistFeedbackIn(
        kind="draft", suggestion="draft", verdict="edited", article_id=2, article_version=1,
        edited_text="Hello, your refund is on its way."))
    record_feedback(session=session, ticket_id=tid, by="ann", feedback_in=AssistFeedbackIn(
        kind="article", suggestion="Processing a refund request", verdict="rejected", article_id=3))
    with pytest.raises(InvalidInput, match="edited_text"):
        record_feedback(session=session, ticket_id=tid, feedback_in=AssistFeedbackIn(
            kind="draft", suggestion="draft", verdict="edited", article_id=2))
    with pytest.raises(InvalidInput, match="article_id"):
        record_feedback(session=session, ticket_id=tid, feedback_in=AssistFeedbackIn(
            kind="article", suggestion="x", verdict="accepted"))
    rows = list_feedback(session=session, ticket_id=tid)
    assert [(r.kind, r.verdict, r.by) for r in rows] == [
        ("action", "accepted", "ann"), ("draft", "edited", "ann"), ("article", "rejected", "ann")]
    assert rows[1].edited_text.startswith("Hello") and rows[0].created_at.tzinfo is not None
    assert articles_used(session=session)[tid] == {2}  # only accepted / edited suggestions citing an article


# ---------------------------------------------------------------- knowledge gaps


def test_gap_report_finds_the_planted_gap(hub, sim_small):
    session, _, retriever, ids = hub
    log, tickets = sim_small.log, sim_small.tickets
    hours = (log.df.groupby("case_id")["timestamp"].agg(lambda s: (s.max() - s.min()).total_seconds() / 3600))
    # Planted usage: the refund article "used" on the slowest refund cases, the invoice one on the fastest.
    refund = hours[tickets.set_index("case_id")["intent"].reindex(hours.index) == "refund request"].sort_values()
    invoice = hours[tickets.set_index("case_id")["intent"].reindex(hours.index) == "invoice copy"].sort_values()
    used = {c: {ids["Processing a refund request"]} for c in refund.index[-8:]}
    used |= {c: {ids["Sending a copy of an invoice"]} for c in invoice.index[:8]}
    rep = knowledge_gaps(log=log, tickets=tickets, retriever=retriever, catalog=load_catalog(session=session),
                         sample_per_topic=6, top_k=3, used=used)
    gap = sim_small.truth.knowledge_gap.intent
    first, second = rep.topics[0], rep.topics[1]
    assert first.topic == gap and first.rank == 1 and first.coverage == 0.0 and first.articles_for_topic == 0
    assert first.gap_score > 2 * second.gap_score and first.cost_ratio > 1.5
    assert len(first.examples) == 3 and all(not e.covered for e in first.examples) and first.why
    assert {t.topic for t in rep.topics} == set(tickets["intent"])
    by_title = {a.title: a for a in rep.articles}
    assert by_title[UNRELATED.title].verdict == "never_retrieved"
    assert UNRELATED.title in {a.title for a in rep.never_retrieved}
    assert by_title["Processing a refund request"].verdict == "does_not_shorten"
    assert by_title["Sending a copy of an invoice"].verdict == "shortens"
    assert by_title["Sending a copy of an invoice"].hours_difference < 0


def test_quotes_are_mapped_back_to_the_exact_article_text():
    from assist.draft import exact_span
    from knowledge_hub.index import chunk_markdown

    body = "## Answer\nFirst   sentence here.\nSecond line\twith a tab. " + "Filler words again. " * 80
    chunks = chunk_markdown(body, max_chars=200)
    assert chunks[0].text not in body  # chunking re-spaced the text
    span = exact_span(body, chunks[0].text)
    assert span is not None and span in body and span.split() == chunks[0].text.split()
    assert exact_span(body, "words that are not there") is None
