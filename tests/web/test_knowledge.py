"""Knowledge-manager journeys in a real browser: draft -> submit for review -> another user publishes -> a change to
the published article is reviewed -> diff -> restore; the live preview is sanitised; gap -> prefilled article; the
effect of each article on resolution time; role checks. Asserts what a person sees."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in


def test_draft_review_publish_change_diff_restore(browser, web: WebApp) -> None:
    author, reviewer = web.add_user("knowledge_manager"), web.add_user("knowledge_manager")
    title = f"Export account data {uuid.uuid4().hex[:5]}"
    ctx_a = browser.new_context(viewport={"width": 1440, "height": 900})
    ctx_b = browser.new_context(viewport={"width": 1440, "height": 900})
    a, b = ctx_a.new_page(), ctx_b.new_page()
    try:
        sign_in(a, web, author)
        a.goto(web.url("/knowledge/new"))
        a.get_by_label("Title").fill(title)
        a.get_by_label("Intents (comma-separated)").fill("data export")
        body = a.get_by_label("Text (Markdown)")
        body.fill("## Steps\n\n1. Open **Settings**\n2. Press Export\n\n<script>window.pwned=1</script>")
        # The live preview renders on the server as you type; raw HTML stays text.
        a.locator("#preview strong", has_text="Settings").wait_for()
        assert a.locator("#preview script").count() == 0
        assert "<script>" in a.locator("#preview").inner_text()
        check_page_accessible(a)
        screenshot(a, "knowledge-editor")
        a.get_by_role("button", name="Create draft").click()
        a.wait_for_load_state("networkidle")
        assert a.get_by_role("heading", name=title).is_visible()
        assert a.locator("#article-status").inner_text() == "draft"
        assert a.evaluate("window.pwned") is None
        check_page_accessible(a)
        screenshot(a, "knowledge-article")
        article_url = a.url
        a.get_by_role("button", name="Submit for review").click()
        a.wait_for_load_state("networkidle")
        assert a.locator("#article-status").inner_text() == "in review"
        a.get_by_role("link", name="Open the review").click()
        a.wait_for_load_state("networkidle")
        assert "another knowledge manager approves or rejects it" in a.locator("main").inner_text()
        assert a.get_by_role("button", name="Approve and publish").count() == 0
        check_page_accessible(a)

        sign_in(b, web, reviewer)
        b.goto(web.url("/knowledge/reviews"))
        assert b.get_by_role("heading", name="Reviews", exact=True).is_visible()
        assert b.locator("nav [aria-current=page]").all_inner_texts() == ["Reviews"]  # not Articles too
        check_page_accessible(b)
        screenshot(b, "knowledge-reviews")
        b.locator("#pending-reviews tr", has_text=title).get_by_role("link").click()
        b.wait_for_load_state("networkidle")
        assert "+# " + title in b.locator("#diff").inner_text()
        check_page_accessible(b)
        screenshot(b, "knowledge-review")
        b.get_by_role("button", name="Approve and publish").click()
        b.wait_for_load_state("networkidle")
        assert b.locator("#article-status").inner_text() == "published"
        assert "published at version 1" in b.locator(".flashes").inner_text()

        # A change to the published article is a proposal: the live text stays until the reviewer approves.
        a.goto(article_url + "/edit")
        assert "saving proposes your change for review" in a.locator("main").inner_text()
        a.get_by_label("Text (Markdown)").fill("## Steps\n\n1. Open **Privacy**\n2. Press Export data")
        a.get_by_role("button", name="Propose for review").click()
        a.wait_for_load_state("networkidle")
        assert "Privacy" not in a.locator("article").inner_text()
        b.goto(web.url("/knowledge/reviews"))
        b.locator("#pending-reviews tr", has_text=title).get_by_role("link").click()
        diff = b.locator("#diff").inner_text()
        assert "-1. Open **Settings**" in diff and "+1. Open **Privacy**" in diff
        b.get_by_role("button", name="Approve and publish").click()
        b.wait_for_load_state("networkidle")
        assert "Privacy" in b.locator("article").inner_text()

        # Diff version 1 against the current one, then restore it (through review again).
        a.goto(article_url)
        a.get_by_role("link", name="Diff of version 1 against the current version").click()
        a.wait_for_load_state("networkidle")
        assert a.locator("#diff .del", has_text="Settings").count() == 1
        assert a.locator("#diff .add", has_text="Privacy").count() == 1
        check_page_accessible(a)
        screenshot(a, "knowledge-diff")
        a.get_by_role("button", name=re.compile(r"Restore version 1")).click()
        a.wait_for_load_state("networkidle")
        assert "proposed for review" in a.locator(".flashes").inner_text()
        b.goto(web.url("/knowledge/reviews"))
        b.locator("#pending-reviews tr", has_text=title).get_by_role("link").click()
        b.get_by_role("button", name="Approve and publish").click()
        b.wait_for_load_state("networkidle")
        text = b.locator("article").inner_text()
        assert "Settings" in text and "Privacy" not in text
        versions = b.locator("#versions-table tbody tr")
        assert versions.count() == 3
    finally:
        ctx_a.close()
        ctx_b.close()


def test_the_author_cannot_publish_through_the_api_either(web: WebApp) -> None:
    h = web.h("knowledge_manager")
    with httpx.Client(base_url=web.base_url, headers=h, timeout=60) as c:
        art = c.post("/v1/kb/articles", json={"title": "API draft", "body": "Text"}).json()
        rev = c.post(f"/v1/kb/articles/{art['id']}/review", json={"note": "please"})
        assert rev.status_code == 201 and rev.json()["kind"] == "publish"
        assert c.post(f"/v1/kb/articles/{art['id']}/publish").status_code == 409
        own = c.post(f"/v1/kb/reviews/{rev.json()['id']}/approve", json={})
        assert own.status_code == 409 and "someone other than the author" in own.json()["detail"]
        other = c.post(f"/v1/kb/reviews/{rev.json()['id']}/approve", json={}, headers=web.h("admin"))
        assert other.status_code == 200 and other.json()["status"] == "published"


def test_gap_to_prefilled_article_and_article_effects(page, web: WebApp) -> None:
    sign_in(page, web, "knowledge_manager")
    page.goto(web.url("/knowledge/gaps"))
    rows = page.locator("#gaps-table tbody tr")
    assert rows.count() >= 1
    first = rows.first
    topic = first.locator("td").nth(1).inner_text()
    effect = page.locator("#effect-table tbody tr")
    assert effect.count() >= 1 and "Effect of each article on resolution time" in page.locator("main").inner_text()
    check_page_accessible(page)
    screenshot(page, "knowledge-gaps")
    first.get_by_role("link", name=f"Write an article for the gap {topic}").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_label("Title").input_value() == f"How to resolve: {topic}"
    assert page.get_by_label("Intents (comma-separated)").input_value() == topic
    body = page.get_by_label("Text (Markdown)").input_value()
    assert "What customers wrote" in body and re.search(r"\*\*W?C\d+\*\*", body)
    page.locator("#preview blockquote").first.wait_for()
    screenshot(page, "knowledge-gap-draft")


def test_articles_search_and_filters(page, web: WebApp) -> None:
    sign_in(page, web, "knowledge_manager")
    page.goto(web.url("/knowledge"))
    total = int(re.search(r"(\d+) articles?", page.locator("main p[role=status]").inner_text()).group(1))
    assert total >= 5
    page.get_by_label("Status").select_option("published")
    page.get_by_role("button", name="Search").click()
    statuses = page.locator("#articles-table tbody td:nth-child(2)").all_inner_texts()
    assert statuses and set(statuses) == {"published"}
    word = page.locator("#articles-table tbody td a").first.inner_text().split()[0]
    page.get_by_label("Search title, text and tags").fill(word)
    page.get_by_role("button", name="Search").click()
    titles = page.locator("#articles-table tbody td a").all_inner_texts()
    assert titles and len(titles) < total
    check_page_accessible(page)
    screenshot(page, "knowledge-articles")


def test_agents_read_articles_but_cannot_edit(page, web: WebApp) -> None:
    sign_in(page, web, "agent")
    page.goto(web.url("/knowledge"))
    assert page.get_by_role("link", name="New article").count() == 0
    page.goto(web.url("/knowledge/new"))
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    page.goto(web.url("/knowledge/gaps"))
    assert page.get_by_role("heading", name="Not allowed").is_visible()
