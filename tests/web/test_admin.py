"""The admin's journeys in a real browser: users, API keys (shown once), models with retrain / rollback and the
gate's verdict, the audit log with filters, read-only settings with secrets masked, service health."""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in


def test_admin_creates_a_user_who_can_then_sign_in_and_changes_their_role(page, web: WebApp, browser) -> None:
    sign_in(page, web, "admin")
    assert page.url.endswith("/admin/users")
    check_page_accessible(page)
    screenshot(page, "admin-users")
    page.get_by_label("Username").fill("dana.kb")
    page.get_by_label("Role", exact=True).select_option("knowledge_manager")
    page.get_by_label("Password", exact=True).fill("dana-password-123")
    page.get_by_role("button", name="Add user").click()
    assert page.get_by_text("User dana.kb (knowledge_manager) created.").is_visible()
    row = page.locator("tr", has=page.get_by_role("cell", name="dana.kb", exact=True))
    assert row.get_by_label("Role of dana.kb", exact=True).input_value() == "knowledge_manager"
    # The new user signs in in another browser.
    other = browser.new_context()
    p2 = other.new_page()
    try:
        from tests.web.conftest import Credentials

        sign_in(p2, web, Credentials("dana.kb", "dana-password-123", "knowledge_manager"))
        row.get_by_label("Role of dana.kb", exact=True).select_option("analyst")
        row.get_by_role("button", name="Change role of dana.kb").click()
        assert page.get_by_text("dana.kb is now analyst.").is_visible()
        p2.goto(web.url("/account"))
        assert "/login" in p2.url  # a role change ends the open session
    finally:
        other.close()


def test_duplicate_and_short_password_are_explained(page, web: WebApp) -> None:
    sign_in(page, web, "admin")
    page.get_by_label("Username").fill("agent1")
    page.get_by_label("Password", exact=True).fill("long-enough-password")
    page.get_by_role("button", name="Add user").click()
    assert "already exists" in page.get_by_role("alert").inner_text()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password", exact=True).fill("short")
    page.evaluate("() => document.getElementById('new-password').removeAttribute('minlength')")
    page.get_by_role("button", name="Add user").click()
    assert "at least 10 characters" in page.get_by_role("alert").inner_text()


def test_disable_and_reset_password(page, web: WebApp) -> None:
    cred = web.add_user("agent")
    sign_in(page, web, "admin")
    page.get_by_role("button", name=f"Disable {cred.username}").click()
    assert page.get_by_text(f"{cred.username} is disabled.").is_visible()
    page.get_by_role("button", name=f"Enable {cred.username}").click()
    page.get_by_label(f"New password for {cred.username}").fill("reset-password-42")
    page.get_by_role("button", name=f"Reset password of {cred.username}").click()
    assert page.get_by_text(f"{cred.username}'s password is reset").is_visible()
    cred.password = "reset-password-42"
    p = page.context.browser.new_page()
    try:
        sign_in(p, web, cred)
    finally:
        p.close()


def test_api_key_is_shown_once_works_and_is_revoked(page, web: WebApp) -> None:
    sign_in(page, web, "admin")
    page.goto(web.url("/admin/keys"))
    check_page_accessible(page)
    page.get_by_label("Name (who or what uses it)").fill("zendesk-bridge")
    page.get_by_label("Role").select_option("helpdesk")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("dpk_")
    screenshot(page, "admin-keys-created")
    r = httpx.get(web.url("/v1/tickets/" + web.tickets[0]), headers={"X-API-Key": secret})
    assert r.status_code == 200
    page.goto(web.url("/admin/keys"))
    assert secret not in page.content()  # never shown again
    page.get_by_role("button", name="Revoke key zendesk-bridge").click()
    assert page.get_by_text("Key zendesk-bridge is revoked.").is_visible()
    assert httpx.get(web.url("/v1/tickets/" + web.tickets[0]), headers={"X-API-Key": secret}).status_code == 401


def test_models_page_shows_live_versions_and_metrics(page, web: WebApp) -> None:
    r = httpx.get(web.url("/v1/models"), headers=web.h("admin")).json()
    sign_in(page, web, "admin")
    page.goto(web.url("/admin/models"))
    table = page.locator("table").first
    for t in r["tasks"]:
        row = table.locator("tr", has=page.get_by_role("cell", name=t["task"], exact=True))
        assert row.count() == 1 and (t["live"] or "—") in row.inner_text()
    check_page_accessible(page)
    screenshot(page, "admin-models")


def test_retrain_shows_the_gates_verdict_then_rollback(page, web: WebApp) -> None:
    from routing.service import get_ticket  # noqa: F401  (keeps the import graph the app uses)

    sign_in(page, web, "admin")
    page.goto(web.url("/admin/models"))
    for t in ("intent", "misroute"):
        page.get_by_label(t, exact=True).uncheck()
    page.get_by_label("router", exact=True).check()
    page.get_by_label("Reason").fill("web test retrain")
    page.get_by_role("button", name="Start retraining").click()
    assert "/admin/models/jobs/" in page.url
    # The job page polls until the job ends, then shows the gate's side-by-side verdict.
    page.wait_for_function("() => !document.querySelector('#job[hx-trigger]')", timeout=600_000)
    status = page.locator("#job [role=status] .badge").inner_text()
    job_id = page.url.rsplit("/", 1)[-1]
    job = httpx.get(web.url(f"/v1/models/retrain/{job_id}"), headers=web.h("admin")).json()
    assert status == job["status"]
    # The router was trained and compared with the live one: either way the gate gave a verdict.
    assert status in ("succeeded", "rejected"), job
    assert job["gate"] and job["gate"]["decision"] in ("accepted", "rejected"), job
    verdict = page.locator("#job")
    assert f"Gate: {job['gate']['decision']}" in verdict.inner_text()
    assert verdict.get_by_text("Live model and challenger, side by side").is_visible()
    router_rows = verdict.locator("tbody tr", has=page.get_by_role("cell", name="router", exact=True))
    assert router_rows.count() >= 1
    check_page_accessible(page)
    screenshot(page, "admin-retrain-job")
    # The challenger is stored whether or not the gate let it go live: there is a version to roll back to.
    before = httpx.get(web.url("/v1/models/router/versions"), headers=web.h("admin")).json()
    assert len(before["versions"]) > 1, before
    page.goto(web.url("/admin/models"))
    box = page.locator("details", has=page.locator("summary", has_text="router —"))
    box.locator("summary").click()
    # The challenger never went live when the gate rejected it: roll back to a chosen stored version.
    box.get_by_label("Roll back to").select_option(index=1)
    box.get_by_label("Reason").fill("web test rollback")
    box.get_by_role("button", name="Roll back router").click()
    page.wait_for_load_state("networkidle")
    assert page.locator(".flash-success").count() == 1, page.inner_text("main")[:600]
    assert "router:" in page.locator(".flash-success").inner_text()
    after = httpx.get(web.url("/v1/models/router/versions"), headers=web.h("admin")).json()
    assert after["live"] != before["live"]


def test_audit_log_lists_web_writes_with_filters(page, web: WebApp) -> None:
    cred = web.add_user("agent")
    sign_in(page, web, cred)  # a web write: POST /login
    page.context.clear_cookies()
    sign_in(page, web, "admin")
    page.goto(web.url("/admin/audit"))
    check_page_accessible(page)
    page.get_by_label("Who").fill(cred.username)
    page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    text = rows.first.inner_text()
    assert cred.username in text and "/login" in text and "303" in text
    api = httpx.get(web.url("/v1/audit"), params={"who": cred.username}, headers=web.h("admin")).json()
    assert rows.count() == len(api["items"])
    screenshot(page, "admin-audit")
    page.get_by_label("Status").fill("abc")
    page.get_by_role("button", name="Apply filters").click()
    assert page.get_by_role("alert").inner_text() == "status must be an HTTP status like 403"
    assert page.get_by_label("Who").input_value() == cred.username  # the filters stay


def test_settings_are_read_only_and_secrets_masked(page, web: WebApp) -> None:
    sign_in(page, web, "admin")
    page.goto(web.url("/admin/settings"))
    html = page.content()
    assert "DESKPILOT_PSEUDONYM_KEY" in html and "•••••• (set)" in html
    assert web.settings.pseudonym_key.get_secret_value() not in html
    assert page.locator("main form").count() == 0
    check_page_accessible(page)
    screenshot(page, "admin-settings")


def test_health_page_reports_readiness_like_readyz(page, web: WebApp) -> None:
    ready = httpx.get(web.url("/readyz")).json()
    sign_in(page, web, "admin")
    page.goto(web.url("/admin/health"))
    assert page.locator("[role=status] .badge").inner_text() == "ready"
    for k, v in ready["checks"].items():
        assert f"{k}\n{v}" in page.inner_text("dl.facts >> nth=0") or v in page.inner_text("main")
    check_page_accessible(page)
    screenshot(page, "admin-health")


def test_admin_pages_refuse_other_roles_like_the_api(web: WebApp) -> None:
    for role in ("agent", "analyst", "knowledge_manager"):
        with httpx.Client(base_url=web.base_url) as c:
            token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
            c.post("/login", data={"username": web.users[role].username, "password": web.users[role].password,
                                   "csrf_token": token})
            token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/account").text).group(1)  # type: ignore[union-attr]
            for url in ("/admin/users", "/admin/keys", "/admin/audit", "/admin/settings"):
                assert c.get(url).status_code == 403, (role, url)
            assert c.post("/admin/keys", data={"csrf_token": token, "name": "x", "role": "admin"}).status_code == 403
            api_models = httpx.get(web.url("/v1/models"), headers=web.h(role)).status_code
            assert c.get("/admin/models").status_code == api_models, role
            api_audit = httpx.get(web.url("/v1/audit"), headers=web.h(role)).status_code
            assert api_audit == 403
