"""The admin's draft-template page through the real server: list, create and replace with the API's checks and
versions, the preview from assist's draft code, removal, refusals for other roles, and the audit rows."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in

TEXT = "Hi {customer_name}, || Hi,\n{answer}\nKind regards"
ANSWER = ("We found the second payment for your order and refunded it. The money is back on your card "
          "within a few working days.")


def _token(page_html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert m is not None, "no CSRF token on the page"
    return m.group(1)


@contextmanager
def _signed_in(web: WebApp, role: str) -> Iterator[tuple[httpx.Client, str]]:
    """A cookie client signed in through the sign-in form as the user of `role`, and its CSRF token."""
    cred = web.users[role]
    with httpx.Client(base_url=web.base_url, timeout=60) as c:
        r = c.post("/login", data={"username": cred.username, "password": cred.password,
                                   "csrf_token": _token(c.get("/login").text)})
        assert r.status_code == 303, r.text[:300]
        yield c, _token(c.get("/account").text)


def _scope() -> str:
    """An intent no other test drafts for (a stored template changes the drafts of its intent)."""
    return f"web-test-{uuid.uuid4().hex[:8]}"


def _alert(page_html: str) -> str:
    m = re.search(r'<p class="flash flash-error" role="alert">(.*?)</p>', page_html, re.S)
    assert m is not None, "no error shown on the page"
    return html.unescape(m.group(1))


def _text_of(page_html: str, element_id: str) -> str:
    """The text of the element with `element_id` (tags removed)."""
    m = re.search(rf'<div [^>]*id="{element_id}"[^>]*>(.*?)</div>', page_html, re.S)
    assert m is not None, f"#{element_id} is not on the page"
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def _stored(web: WebApp, intent: str, channel: str) -> list[dict[str, object]]:
    rows = httpx.get(web.url("/v1/assist/templates"), headers=web.h("admin")).json()
    return [t for t in rows if (t["intent"], t["channel"]) == (intent, channel)]


def test_admin_creates_and_replaces_a_template_the_api_then_serves(web: WebApp) -> None:
    intent = _scope()
    with _signed_in(web, "admin") as (c, token):
        page = c.get("/admin/templates")
        assert page.status_code == 200
        assert 'href="/admin/templates"' in page.text  # the nav item
        assert intent not in page.text
        r = c.post("/admin/templates", data={"csrf_token": token, "intent": intent, "channel": "email", "text": TEXT})
        assert r.status_code == 303, _alert(r.text)
        assert r.headers["location"] == f"/admin/templates?intent={intent}&channel=email"
        page = c.get(r.headers["location"])
        assert f"Draft template {intent} / email saved as version 1." in page.text
        row = re.search(rf"<tr>\s*<td>{intent}</td>\s*<td>email</td>\s*<td>(\d+)</td>\s*<td>(.*?)</td>", page.text)
        assert row is not None and row.groups() == ("1", "admin1")
        assert "Saving replaces version 1" in page.text  # the opened template, ready to be replaced

        api = httpx.get(web.url(f"/v1/assist/templates/{intent}/email"), headers=web.h("agent"))
        assert api.status_code == 200
        first = api.json()
        assert (first["text"], first["version"], first["updated_by"]) == (TEXT, 1, "admin1")

        replaced = TEXT.replace("Kind regards", "Best wishes")
        r = c.post("/admin/templates", data={"csrf_token": token, "intent": intent, "channel": "email",
                                             "text": replaced.replace("\n", "\r\n")})  # as a browser sends it
        assert r.status_code == 303
        assert f"Draft template {intent} / email saved as version 2." in c.get(r.headers["location"]).text
    second = httpx.get(web.url(f"/v1/assist/templates/{intent}/email"), headers=web.h("admin")).json()
    assert (second["id"], second["text"], second["version"]) == (first["id"], replaced, 2)
    assert _stored(web, intent, "email") == [second]

    audit = httpx.get(web.url("/v1/audit"), params={"who": "admin1", "path_prefix": "/admin/templates"},
                      headers=web.h("admin")).json()["items"]
    ours = [a for a in audit if a["object_id"] == f"assist/templates/{intent}/email"]
    assert [(a["method"], a["path"], a["status"]) for a in ours] == [("POST", "/admin/templates", 303)] * 2


def test_invalid_templates_are_explained_like_the_api_and_store_nothing(web: WebApp) -> None:
    intent = _scope()
    too_long = "{answer}\n" + "x" * 4_000
    cases = [
        ("Hello {customer_name},\nKind regards", "a draft template needs {answer} or {steps}"),
        ("Hello {nmae},\n{answer}", "unknown placeholder {nmae}"),
        ("{answer} {", "unbalanced brace"),
        (too_long, "text: String should have at most 4000 characters"),
    ]
    with _signed_in(web, "admin") as (c, token):
        for text, message in cases:
            r = c.post("/admin/templates", data={"csrf_token": token, "intent": intent, "channel": "chat",
                                                 "text": text})
            assert r.status_code == 422, text
            assert message in _alert(r.text), (text, _alert(r.text))
            assert html.escape(text, quote=False)[:200] in r.text  # what was typed stays in the form
            api = httpx.put(web.url(f"/v1/assist/templates/{intent}/chat"), json={"text": text},
                            headers=web.h("admin"))
            assert api.status_code == 422, text  # the API refuses the same text
        assert "text: String should have at most 4000 characters" in httpx.put(
            web.url(f"/v1/assist/templates/{intent}/chat"), json={"text": too_long},
            headers=web.h("admin")).json()["detail"]
        r = c.post("/admin/templates", data={"csrf_token": token, "intent": " ", "channel": "chat", "text": TEXT})
        assert r.status_code == 422 and _alert(r.text) == "intent is required: a name, or * for any"
        r = c.post("/admin/templates", data={"intent": intent, "channel": "chat", "text": TEXT})
        assert r.status_code == 403  # no CSRF token
    assert _stored(web, intent, "chat") == []
    assert _stored(web, "*", "chat") == []
    audit = httpx.get(web.url("/v1/audit"), params={"who": "admin1", "path_prefix": "/admin/templates"},
                      headers=web.h("admin")).json()["items"]
    refused = [a["status"] for a in audit if a["object_id"] == f"assist/templates/{intent}/chat"]
    assert refused.count(422) == len(cases)


def test_preview_fills_the_sample_tickets_with_the_draft_code_and_stores_nothing(web: WebApp) -> None:
    intent = _scope()
    text = "Dear {customer_name}, || Dear customer,\n{answer}\nOrder: {order_id}\n{steps}"
    steps = "Find both payments in the billing console\n\nRefund the later payment\n\n" \
            "Add the refund reference to the ticket"
    with _signed_in(web, "admin") as (c, token):
        r = c.post("/admin/templates/preview", data={"csrf_token": token, "intent": intent, "channel": "*",
                                                     "text": text})
        assert r.status_code == 200, r.text[:500]
        assert _text_of(r.text, "preview-1") == f"Dear Alex Morgan,\n{ANSWER}\nOrder: A-10432\n{steps}"
        assert _text_of(r.text, "preview-2") == f"Dear customer,\n{ANSWER}\n{steps}"
        assert "<mark>" + ANSWER + "</mark>" in r.text and "<strong>Alex Morgan</strong>" in r.text
        r = c.post("/admin/templates/preview", data={"csrf_token": token, "intent": intent, "channel": "*",
                                                     "text": "Dear {customer_name},"})
        assert r.status_code == 422
        assert "needs {answer} or {steps}" in _alert(r.text) and 'id="preview-1"' not in r.text
    assert _stored(web, intent, "*") == []


def test_removing_a_template_falls_back_and_is_audited(web: WebApp) -> None:
    intent = _scope()
    with _signed_in(web, "admin") as (c, token):
        assert c.post("/admin/templates", data={"csrf_token": token, "intent": intent, "channel": "phone",
                                                "text": TEXT}).status_code == 303
        assert len(_stored(web, intent, "phone")) == 1
        r = c.post("/admin/templates/delete", data={"csrf_token": token, "intent": intent, "channel": "phone"})
        assert r.status_code == 303
        assert f"Draft template {intent} / phone removed" in c.get(r.headers["location"]).text
        assert c.post("/admin/templates/delete", data={"csrf_token": token, "intent": intent,
                                                       "channel": "phone"}).status_code == 404
    assert _stored(web, intent, "phone") == []
    assert httpx.get(web.url(f"/v1/assist/templates/{intent}/phone"), headers=web.h("admin")).status_code == 404
    audit = httpx.get(web.url("/v1/audit"), params={"who": "admin1", "path_prefix": "/admin/templates/delete"},
                      headers=web.h("admin")).json()["items"]
    assert [a["status"] for a in audit if a["object_id"] == f"assist/templates/{intent}/phone"] == [404, 303]


def test_other_roles_are_refused_like_the_api(web: WebApp) -> None:
    intent = _scope()
    for role in ("agent", "knowledge_manager", "analyst"):
        with _signed_in(web, role) as (c, token):
            assert 'href="/admin/templates"' not in c.get("/account").text, role
            assert c.get("/admin/templates").status_code == 403, role
            form = {"csrf_token": token, "intent": intent, "channel": "email", "text": TEXT}
            for url in ("/admin/templates", "/admin/templates/preview", "/admin/templates/delete"):
                r = c.post(url, data=form)
                assert r.status_code == 403, (role, url)
                assert "may not open this page" in r.text
        assert httpx.put(web.url(f"/v1/assist/templates/{intent}/email"), json={"text": TEXT},
                         headers=web.h(role)).status_code == 403
    assert _stored(web, intent, "email") == []


def test_admin_writes_a_template_in_the_browser(page, web: WebApp) -> None:
    intent = _scope()
    sign_in(page, web, "admin")
    page.get_by_role("link", name="Draft templates", exact=True).click()
    assert page.url.endswith("/admin/templates")
    assert page.get_by_label("Template text", exact=True).input_value().startswith("Hello {customer_name}, || Hello,")
    check_page_accessible(page)
    page.get_by_label("Intent", exact=True).fill(intent)
    page.get_by_label("Channel", exact=True).fill("email")
    page.get_by_label("Template text", exact=True).fill(TEXT)
    page.get_by_role("button", name="Preview", exact=True).click()
    assert page.locator("#preview-1").inner_text().startswith("Hi Alex Morgan,")
    assert page.get_by_label("Template text", exact=True).input_value() == TEXT
    screenshot(page, "admin-templates-preview")
    page.get_by_role("button", name="Save template", exact=True).click()
    page.locator(".flash-success").wait_for()
    assert page.get_by_text(f"Draft template {intent} / email saved as version 1.").is_visible()
    api = httpx.get(web.url(f"/v1/assist/templates/{intent}/email"), headers=web.h("admin")).json()
    assert api["text"] == TEXT  # the browser's CR LF line breaks are stored as the API would store them
