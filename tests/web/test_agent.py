"""The agent's journeys in a real browser: work the triage queue, claim, open a ticket, read the decision and the
suggestions, rate them, send the reply to the helpdesk and see it delivered, set team and intent in one action; re-triages on the timeline."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import col, select

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in


def _left_to_people(web: WebApp) -> list[str]:
    return [t for t, d in web.decisions.items() if d in ("triage", "suggest")]


def test_queue_lists_exactly_the_tickets_left_to_people(page, web: WebApp) -> None:
    waiting = _left_to_people(web)
    assert waiting, f"the seeded router left no ticket to people: {web.decisions}"
    sign_in(page, web, "agent")
    assert page.url.endswith("/agent/queue")
    assert page.get_by_role("heading", name="Triage queue").is_visible()
    shown = page.locator("#queue tbody tr td:first-child a").all_inner_texts()
    auto = [t for t, d in web.decisions.items() if d == "auto_route"]
    assert set(shown) <= set(waiting) and not set(shown) & set(auto)
    assert page.locator("#queue").get_by_text(f"{len(waiting)} ticket").is_visible()
    check_page_accessible(page)
    screenshot(page, "agent-queue")


def test_filters_narrow_the_queue_without_a_full_reload(page, web: WebApp) -> None:
    sign_in(page, web, "agent")
    triage_only = [t for t, d in web.decisions.items() if d == "triage"]
    page.get_by_label("Decision").select_option("triage")
    page.wait_for_url("**decision=triage**")
    page.wait_for_load_state("networkidle")
    assert page.locator("#queue").get_by_text(f"{len(triage_only)} ticket").is_visible()
    badges = page.locator("#queue tbody .badge-triage, #queue tbody .badge-suggest").all_inner_texts()
    assert all(b == "triage" for b in badges)
    page.get_by_label("Received").select_option("4h")  # tickets were created months ago in the simulation...
    page.wait_for_load_state("networkidle")
    # ...but received now: the age filter is on when the service received them, so they are all still there.
    assert page.locator("#queue").get_by_text(f"{len(triage_only)} ticket").is_visible()


def test_claim_and_release_from_the_queue(page, web: WebApp) -> None:
    sign_in(page, web, "agent")
    first = page.locator("#queue tbody tr").first
    tid = first.locator("td:first-child a").inner_text()
    first.get_by_role("button", name=f"Claim {tid}").click()
    first.get_by_text("Claimed by you").wait_for()  # swapped in place by htmx
    page.get_by_label("Claimed").select_option("mine")
    page.wait_for_url("**claimed=mine**")  # htmx pushes the filtered URL once the results are swapped in
    page.wait_for_load_state("networkidle")
    assert page.locator("#queue tbody tr td:first-child a").all_inner_texts() == [tid]
    # Someone else sees the claim and cannot take it over.
    other = web.add_user("agent")
    with httpx.Client(base_url=web.base_url) as c:
        import re

        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"username": other.username, "password": other.password, "csrf_token": token})
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/agent/queue").text).group(1)  # type: ignore[union-attr]
        r = c.post(f"/agent/tickets/{tid}/claim", data={"csrf_token": token})
        assert r.status_code == 409 and "already claimed by" in r.text
    page.locator("#queue tbody tr").first.get_by_role("button", name=f"Release {tid}").click()
    page.locator("#queue tbody tr").first.get_by_role("button", name=f"Claim {tid}").wait_for()


def test_ticket_page_shows_decision_reasons_similar_tickets_and_timeline(page, web: WebApp) -> None:
    from routing.service import get_ticket

    with web.session() as s:
        tickets = [get_ticket(session=s, ticket_id=tid) for tid in reversed(_left_to_people(web))]
    with_similar = [t for t in tickets if t.current_decision and t.current_decision.result.similar]
    assert with_similar, "no seeded ticket left to people has similar tickets"
    t = with_similar[0]
    tid = t.ticket_id
    sign_in(page, web, "agent")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    assert page.get_by_role("heading", name=f"Ticket {tid}").is_visible()
    decision = page.locator("section", has=page.get_by_role("heading", name="Router's decision"))
    r = t.current_decision.result  # type: ignore[union-attr]
    assert decision.locator(f".badge-{r.decision}").first.inner_text() == r.decision
    for reason in r.reasons:
        assert reason in decision.inner_text()
    assert decision.get_by_role("heading", name="Similar tickets").is_visible()
    rows = decision.locator("table tbody tr")
    assert rows.count() == len(r.similar)
    for row, sim in zip(rows.all(), r.similar, strict=True):
        cells = row.locator("td").all_inner_texts()
        assert cells[0].splitlines()[0] == sim.ticket_id and cells[1] == f"{sim.similarity:.2f}"
        assert cells[2] == (sim.intent or "—") and cells[3] == (sim.team or "—")
    timeline = page.locator("ol.timeline > li")
    assert timeline.count() == len(t.events) + 1  # the routing decision + every event
    page.wait_for_selector("#assist h3:has-text('Next-best actions')")
    check_page_accessible(page)
    screenshot(page, "agent-ticket")


def test_retriage_shows_on_the_timeline(page, web: WebApp) -> None:
    assert web.retriaged, "no seeded customer message changed a ticket's intent"
    tid = web.retriaged[0]
    sign_in(page, web, "agent")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    item = page.locator("ol.timeline > li.retriage")
    assert item.count() >= 1
    assert "re-triaged" in item.first.inner_text() and "Customer replied" in item.first.inner_text()
    assert "re-triaged 1 time" in page.locator("section", has=page.get_by_role(
        "heading", name="Router's decision")).inner_text()


def _ticket_with_a_grounded_draft(web: WebApp) -> tuple[str, dict[str, Any]]:
    """A ticket left to people whose suggestions (GET /v1/tickets/{id}/assist) hold ranked actions, articles with
    passages and a grounded draft; the tickets other tests triage are left out."""
    left = _left_to_people(web)
    for tid in [left[0], *left[3:]]:
        a = httpx.get(web.url(f"/v1/tickets/{tid}/assist"), headers=web.h("agent"), timeout=120).json()
        if a["draft"]["grounded"] and a["actions"] and a["knowledge"] and a["knowledge"][0]["passages"]:
            return tid, a
    raise AssertionError("no seeded ticket left to people gets actions, passages and a grounded draft")


def _words(text: str) -> str:
    return " ".join(text.split())


def test_suggestions_show_the_assist_results_passages_and_draft(page, web: WebApp) -> None:
    tid, expected = _ticket_with_a_grounded_draft(web)
    sign_in(page, web, "agent")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    page.wait_for_selector("#assist h3:has-text('Next-best actions')")
    panel = page.locator("#assist")
    actions = panel.locator("ol.plain > li > strong").all_inner_texts()
    assert actions[: len(expected["actions"])] == [a["activity"] for a in expected["actions"]]
    # Each mined action states its interval at the level assist used, never rounded up to a "100 %" interval.
    for a in expected["actions"]:
        if a["interval_level"] is not None:
            assert f"{a['interval_level'] * 100:g} % interval" in panel.inner_text()
    assert "100 % interval" not in panel.inner_text()
    # Supporting articles, each with its best passages, as the API ranks them.
    articles = panel.locator("h3:has-text('Supporting articles') + ul.plain > li")
    assert articles.count() == len(expected["knowledge"])
    for li, k in zip(articles.all(), expected["knowledge"], strict=True):
        assert li.locator("strong").first.inner_text() == k["title"]
        shown = li.locator("blockquote.passage").all_inner_texts()
        assert len(shown) == min(2, len(k["passages"]))
        for text, p in zip(shown, k["passages"], strict=False):
            assert _words(p["text"][:500]) in _words(text)
            if p["heading"]:
                assert _words(text).startswith(_words(p["heading"]))
    assert page.get_by_label("Reply (edit before sending)").input_value() == expected["draft"]["text"]
    assert expected["draft"]["article_title"] in panel.locator(".draft .help").inner_text()


def test_the_suggestions_open_as_their_own_page(page, web: WebApp) -> None:
    tid, expected = _ticket_with_a_grounded_draft(web)
    sign_in(page, web, "agent")
    # The ticket page links to them until the panel has loaded in place (and for a browser without scripts).
    html = page.request.get(web.url(f"/agent/tickets/{tid}")).text()
    assert f'<a href="/agent/tickets/{tid}/assist">Open the suggestions</a>' in html
    page.goto(web.url(f"/agent/tickets/{tid}/assist"))
    assert page.get_by_role("heading", name=f"Suggestions for ticket {tid}", level=1).is_visible()
    assert page.get_by_role("link", name=f"← Ticket {tid}").is_visible()
    assert page.get_by_role("button", name="Helpful: the draft reply", exact=True).is_visible()
    assert page.get_by_label("Reply (edit before sending)").input_value() == expected["draft"]["text"]
    check_page_accessible(page)
    screenshot(page, "agent-assist")


def test_thumbs_copy_and_sending_the_edited_reply_are_recorded_as_assist_feedback(page, web: WebApp) -> None:
    from assist.models import AssistFeedback

    tid, expected = _ticket_with_a_grounded_draft(web)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, web, "agent")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    page.wait_for_selector("#assist h3:has-text('Next-best actions')")
    actions = page.locator("#assist ol.plain > li")
    activity = actions.first.locator("strong").first.inner_text()
    assert activity == expected["actions"][0]["activity"]
    actions.first.get_by_role("button", name=f"Helpful: {activity}", exact=True).click()
    actions.first.get_by_text("Marked helpful.").wait_for()
    sent = "Hello, we refunded the second payment. Regards"
    page.get_by_label("Reply (edit before sending)").fill(sent)
    page.get_by_role("button", name="Copy reply").click()
    page.locator(".copy-note", has_text="Copied.").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == sent  # the edited text, not the draft
    page.get_by_role("button", name="Send to helpdesk").click()
    page.locator("#reply-result .reply-state").wait_for()
    with web.session() as s:
        rows = s.exec(select(AssistFeedback).where(AssistFeedback.ticket_id == tid)
                      .order_by(col(AssistFeedback.id))).all()
    assert any(r.kind == "action" and r.suggestion == activity and r.verdict == "accepted" and r.by == "agent1"
               for r in rows)
    drafts = [r for r in rows if r.kind == "draft"]
    assert [(r.verdict, r.edited_text, r.article_id, r.by) for r in drafts] == [
        ("edited", sent, expected["draft"]["article_id"], "agent1")]


def test_send_to_helpdesk_delivers_the_edited_reply_and_shows_its_state(page, web: WebApp) -> None:
    """The draft, edited with a customer's address in it, goes to a real local `reply` subscriber once, signed and
    redacted; the page says it was delivered, and the ticket page lists it with its state afterwards."""
    from api.webhooks import TicketReply, WebhookSubscription, sign
    from tests.api.test_webhooks import Receiver

    receiver = Receiver().start()
    # Stored directly: the app refuses loopback targets through the API (DESKPILOT_WEBHOOK_ALLOW_PRIVATE is off).
    with web.session() as s:
        sub = WebhookSubscription(url=receiver.url + "/replies", kinds=["reply"], secret="web-reply-secret")
        s.add(sub)
        s.commit()
        s.refresh(sub)
    try:
        tid, expected = _ticket_with_a_grounded_draft(web)
        with web.session() as s:
            before = len(s.exec(select(TicketReply).where(TicketReply.ticket_id == tid)).all())
        sign_in(page, web, "agent")
        page.goto(web.url(f"/agent/tickets/{tid}"))
        page.wait_for_selector("#assist h3:has-text('Next-best actions')")
        assert page.get_by_role("button", name="Send reply back to the helpdesk").count() == 0
        sent = expected["draft"]["text"] + "\nWrite to anna.devries@example.com if anything is missing."
        page.get_by_label("Reply (edit before sending)").fill(sent)
        page.get_by_role("button", name="Send to helpdesk").click()
        state = page.locator("#reply-result .reply-state[data-state='delivered']")
        state.wait_for()
        assert "Sent to the helpdesk: delivered." in state.inner_text()
        assert f"Webhook subscriber {sub.id}: delivered" in state.inner_text()
        screenshot(page, "agent-reply-sent")
        got = [x for x in receiver.seen if x.path == "/replies"]
        assert len(got) == 1
        hook = got[0]
        assert hook.headers["x-deskpilot-event"] == "reply"
        assert hook.headers["x-deskpilot-signature"] == sign("web-reply-secret", hook.headers["x-deskpilot-timestamp"],
                                                             hook.body)
        data = hook.json()["data"]
        assert (data["ticket_id"], data["external_id"], data["by"], data["edited"]) == (tid, tid, "agent1", True)
        assert "anna.devries@example.com" not in data["text"] and "[EMAIL]" in data["text"]
        assert data["text"].startswith(expected["draft"]["text"].split("\n")[0])
        with web.session() as s:
            rows = s.exec(select(TicketReply).where(TicketReply.ticket_id == tid)
                          .order_by(col(TicketReply.id))).all()
        assert len(rows) == before + 1 and rows[-1].text == data["text"] and rows[-1].id == data["reply_id"]
        # afterwards the ticket page lists the reply and where it went
        page.goto(web.url(f"/agent/tickets/{tid}"))
        replies = page.locator("#replies")
        assert replies.get_by_role("heading", name="Replies sent").is_visible()
        assert replies.locator(".reply").count() == before + 1
        newest = replies.locator(".reply").first  # newest first
        assert "Sent to the helpdesk: delivered." in newest.inner_text() and "[EMAIL]" in newest.inner_text()
        assert "draft edited" in newest.inner_text()
        page.wait_for_selector("#assist h3:has-text('Next-best actions')")  # nothing swaps in while Tab walks
        check_page_accessible(page)
        screenshot(page, "agent-ticket-replies")
        assert len([x for x in receiver.seen if x.path == "/replies"]) == 1  # once, however often the page polled
        token = page.locator("input[name=csrf_token]").first.input_value()
        empty = page.request.post(web.url(f"/agent/tickets/{tid}/reply"), form={"csrf_token": token, "text": "  \n "})
        assert empty.status == 422 and "the reply is empty" in empty.text()
    finally:
        with web.session() as s:
            row = s.get(WebhookSubscription, sub.id)
            if row is not None:
                row.active = False
                s.add(row)
                s.commit()
        receiver.stop()


def test_set_team_and_intent_in_one_action_is_the_feedback_and_leaves_the_queue(page, web: WebApp) -> None:
    from api.retrain import known_labels
    from routing.models import Feedback

    tid = _left_to_people(web)[1]
    teams = sorted(known_labels(web.app)["team"])
    intents = sorted(i for i in known_labels(web.app)["intent"] if i not in ("oos", "out_of_scope"))
    sign_in(page, web, "agent")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    page.get_by_label("Team", exact=True).select_option(teams[-1])
    page.get_by_label("Intent", exact=True).select_option(intents[0])
    page.get_by_role("button", name="Save team and intent").click()
    assert page.get_by_text(f"{tid}: team {teams[-1]}, intent {intents[0]} saved.").is_visible()
    with web.session() as s:
        fb = s.exec(select(Feedback).where(Feedback.ticket_id == tid)).all()
    assert [(f.corrected_team, f.corrected_intent, f.by) for f in fb] == [(teams[-1], intents[0], "agent1")]
    page.goto(web.url("/agent/queue"))
    assert tid not in page.locator("#queue").inner_text()
    page.get_by_label("Include handled").check()
    page.wait_for_load_state("networkidle")
    assert tid in page.locator("#queue").inner_text()


def test_a_label_the_models_do_not_know_is_refused_like_the_api(web: WebApp) -> None:
    import re

    tid = _left_to_people(web)[2]
    with httpx.Client(base_url=web.base_url) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"username": "agent1", "password": web.users["agent"].password, "csrf_token": token})
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/agent/queue").text).group(1)  # type: ignore[union-attr]
        r = c.post(f"/agent/tickets/{tid}/triage", data={"csrf_token": token, "team": "No Such Team"})
        assert r.status_code == 422 and "corrected_team" in r.text and "not a known team" in r.text
        api = httpx.post(web.url(f"/v1/tickets/{tid}/feedback"), headers=web.h("agent"),
                         json={"corrected_team": "No Such Team"})
        assert api.status_code == 422


def test_analyst_reads_tickets_but_gets_no_claim_triage_or_assist(page, web: WebApp) -> None:
    tid = _left_to_people(web)[0]
    sign_in(page, web, "analyst")
    page.goto(web.url(f"/agent/tickets/{tid}"))
    assert page.get_by_role("heading", name=f"Ticket {tid}").is_visible()
    assert page.get_by_role("button", name="Save team and intent").count() == 0
    assert page.locator("#assist").count() == 0
    resp = page.goto(web.url(f"/agent/tickets/{tid}/assist"))
    assert resp is not None and resp.status == 403  # GET /v1/tickets/{id}/assist is agents only, too
    assert httpx.get(web.url(f"/v1/tickets/{tid}/assist"), headers=web.h("analyst")).status_code == 403


def test_queue_is_usable_at_tablet_width(page, web: WebApp) -> None:
    page.set_viewport_size({"width": 768, "height": 1000})
    sign_in(page, web, "agent")
    assert page.get_by_role("heading", name="Triage queue").is_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 768 + 1, f"the page scrolls sideways at 768 px ({width} px wide)"
    check_page_accessible(page)


def test_the_panel_is_computed_again_when_the_ticket_changes(web: WebApp) -> None:
    """The panel keeps each ticket's suggestions, but a new event on the ticket is seen at once (a step taken is
    no longer suggested), exactly as the JSON API's assist sees it."""
    import re
    from datetime import datetime, timedelta

    left = _left_to_people(web)
    grounded, _ = _ticket_with_a_grounded_draft(web)
    tid, api = "", {}
    for t in reversed(left[3:]):
        api = httpx.get(web.url(f"/v1/tickets/{t}/assist"), headers=web.h("agent"), timeout=120).json()
        if t != grounded and api["actions"]:
            tid = t
            break
    assert tid, "no seeded ticket left to people has a ranked action"
    shown = re.compile(r"<li><strong>([^<]+)</strong>\s*<span class=\"muted\">· [+-]")
    with httpx.Client(base_url=web.base_url, timeout=120) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"username": "agent1", "password": web.users["agent"].password, "csrf_token": token})
        first, again = c.get(f"/agent/tickets/{tid}/assist"), c.get(f"/agent/tickets/{tid}/assist")
        assert first.status_code == again.status_code == 200
        before = shown.findall(first.text)
        assert before == [a["activity"] for a in api["actions"]] == shown.findall(again.text)
        taken = before[0]
        last = httpx.get(web.url(f"/v1/tickets/{tid}"), headers=web.h("agent")).json()["events"][-1]["timestamp"]
        at = (datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(minutes=5)).isoformat()
        r = httpx.post(web.url(f"/v1/tickets/{tid}/events"), headers=web.h("helpdesk"),
                       json={"activity": taken, "timestamp": at})
        assert r.status_code == 201, r.text
        after = shown.findall(c.get(f"/agent/tickets/{tid}/assist").text)
    api_after = httpx.get(web.url(f"/v1/tickets/{tid}/assist"), headers=web.h("agent"), timeout=120).json()
    assert taken not in after and after == [a["activity"] for a in api_after["actions"]]
