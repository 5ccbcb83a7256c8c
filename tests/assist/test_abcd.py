"""ABCD demo: the agent guidelines imported as the knowledge base; assist suggests the matching subflow's actions."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from assist.service import assist, load_catalog
from knowledge_hub import importexport
from knowledge_hub.index import KnowledgeIndex
from knowledge_hub.models import Article, ArticleVersion
from knowledge_hub.retrieval import HybridRetriever

# The guideline's button names vs the action ids ABCD's kb.json uses for the required sequences.
BUTTON_ID = {"membership privileges": "membership", "notify internal team": "notify-team",
             "enter detail": "enter-details", "select answer": "select-faq"}
FAQ_TOPICS = {"boots", "shirt", "jeans", "jacket", "pricing", "membership", "timing", "policy"}
# Where the guideline text itself disagrees with kb.json: refund_status requires an "update-order" and
# manage_pay_bill a "subscription-status" that no guideline step names; the two site-troubleshooting subflows list
# their buttons in another order than kb.json requires.
GUIDELINE_DISAGREES = {"refund_status", "manage_pay_bill", "search_results", "slow_speed"}

REQUESTS = {
    # customer request -> (expected subflow article, kb.json key of its required actions, must it rank first?)
    # The shirt example: the adaptive hybrid ranks the return subflow first (dense 0.404 vs 0.389 for "Out-of-Stock
    # One Item" and 0.361 for "Single-Item Query: Shirt FAQ"; BM25 prefers the Shirt FAQ for the rare word "shirt"
    # but gets little weight). The margin is small, so first place is not required. Without "it doesn't fit"
    # ("I want to return my shirt") no return subflow reaches the top 3: Shirt FAQ, Out-of-Stock, Manage Cancel.
    "I want to return my shirt, it doesn't fit": ("Product Defect: Return Due to Size", "return_size", False),
    "I forgot my password and cannot log in": ("Account Access: Recover Password", "recover_password", True),
    "my jeans have a stain, I want to return them": ("Product Defect: Return Due to Stain", "return_stain", True),
}


def _action_id(button: str, subflow: str | None = None) -> str:
    b = button.strip().lower()
    if subflow is not None and b in FAQ_TOPICS and subflow == f"{b}_faq":
        return f"search-{b}"  # a FAQ subflow's topic button is kb.json's "search-<topic>"
    return BUTTON_ID.get(b, importexport.slug(b).replace("_", "-"))


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(x in it for x in needle)


@pytest.fixture(scope="module")
def abcd_hub(shared_data, tmp_path_factory, embedder):
    path = shared_data / "text" / "abcd" / "guidelines.json"
    if not path.is_file():
        pytest.skip(f"ABCD guidelines not found at {path}")
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
    session = Session(engine, expire_on_commit=False)
    index = KnowledgeIndex(embedder=embedder, path=tmp_path_factory.mktemp("abcd-chroma"),
                           collection=f"abcd-{uuid.uuid4().hex[:8]}")
    result = importexport.import_path(session=session, index=index, path=path)
    assert len(result.created) == 55 and not result.stale
    required = json.loads((shared_data / "text" / "abcd" / "kb.json").read_text(encoding="utf-8"))
    yield session, HybridRetriever(index=index), required
    session.close()
    engine.dispose()


@pytest.mark.realdata
@pytest.mark.parametrize("request_text", list(REQUESTS))
def test_assist_suggests_the_guideline_actions(abcd_hub, request_text):
    session, retriever, required = abcd_hub
    title, key, first = REQUESTS[request_text]
    out = assist(ticket_text=request_text, retriever=retriever, catalog=load_catalog(session=session))
    titles = [k.title for k in out.knowledge]
    assert title in titles[:2] and (titles[0] == title or not first), titles
    support = out.knowledge[titles.index(title)]
    assert _is_subsequence(required[key], [_action_id(s) for s in support.steps]), (support.steps, required[key])
    if first:
        steps = [_action_id(s.activity) for s in out.guideline_steps]
        assert _is_subsequence(required[key], steps), (steps, required[key])
        assert all(s.source == "knowledge" and title in s.why for s in out.guideline_steps)
    # The draft quotes the best article's own text, cited by article and version.
    assert out.draft.grounded and out.draft.article_title == titles[0] and out.draft.article_version == 1
    article = session.get(Article, out.draft.article_id)
    assert out.draft.text == "".join(p.text for p in out.draft.parts)
    assert all(p.text in article.body for p in out.draft.parts if p.source == "article")
    assert out.draft.quoted and all(q in article.body for q in out.draft.quoted)


@pytest.mark.realdata
def test_guideline_steps_already_done_are_not_suggested_again(abcd_hub):
    import pandas as pd

    session, retriever, _ = abcd_hub
    events = pd.DataFrame({"activity": ["Pull up Account", "Validate Purchase"],
                           "timestamp": pd.to_datetime(["2026-01-05 10:00", "2026-01-05 10:02"], utc=True)})
    out = assist(ticket_text="my jeans have a stain, I want to return them", events=events, retriever=retriever,
                 catalog=load_catalog(session=session))
    steps = [s.activity for s in out.guideline_steps]
    assert steps[0] == "Membership Privileges" and "Pull up Account" not in steps and out.actions == []
    assert any("no mined action effects" in n for n in out.notes)  # no log: checklist only, nothing ranked


def _subflows(shared_data) -> list[tuple[str, str, str]]:
    """(flow, guideline subflow name, kb.json key): ontology.json lists each flow's keys in the guideline's order."""
    d = shared_data / "text" / "abcd"
    guide = json.loads((d / "guidelines.json").read_text(encoding="utf-8"))
    onto = json.loads((d / "ontology.json").read_text(encoding="utf-8"))
    out = []
    for flow, fv in guide.items():
        keys = onto["intents"]["subflows"][importexport.slug(flow)]
        assert len(keys) == len(fv["subflows"])
        out += [(flow, sub, key) for sub, key in zip(fv["subflows"], keys, strict=True)]
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_required_action_sequences_come_out_in_order_for_every_subflow(abcd_hub, shared_data):
    """For a ticket of each of the 55 subflows (its category set, as a helpdesk form would), the guideline steps
    assist lists keep kb.json's required actions in order as the ticket advances: with none, the first one and all
    but the last done, the rest still come out in order and the next required one is the first required step."""
    session, retriever, required = abcd_hub
    catalog = load_catalog(session=session)
    subflows = _subflows(shared_data)
    assert len(subflows) == 55 == len(required)
    t0 = pd.Timestamp("2026-01-05 10:00", tz="UTC")
    in_order, stages = [], 0
    for flow, sub, key in subflows:
        intent = importexport.slug(sub)
        need = required[key]
        ok = True
        for k in sorted({0, 1, len(need) - 1}):
            entry = next(e for e in catalog.entries.values() if intent in e.intents)
            to_id = {_action_id(b, intent): b for b in entry.activities}
            done = [to_id[a] for a in need[:k] if a in to_id]
            events = pd.DataFrame({"activity": ["Ticket created", *done],
                                   "timestamp": [t0 + pd.Timedelta(minutes=i) for i in range(len(done) + 1)]})
            out = assist(ticket_text=f"I need help with this: {sub.lower()}", events=events,
                         case_attributes={"intent": intent}, retriever=retriever, catalog=catalog)
            listed = [_action_id(s.activity, intent) for s in out.guideline_steps]
            stages += 1
            first_required = next((a for a in listed if a in need[k:]), None)
            ok &= out.knowledge[0].title == f"{flow}: {sub}" and _is_subsequence(need[k:], listed) \
                and first_required == need[k]
        if ok:
            in_order.append(key)
    missed = set(required) - set(in_order)
    assert missed == GUIDELINE_DISAGREES, (sorted(missed), stages)
