"""Signing in: landing page, wrong password, lock-out, CSRF, role checks, sessions that end, the 403/404 pages."""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import WebApp, check_page_accessible, screenshot, sign_in


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def test_root_lands_on_sign_in_then_on_the_role_home(page, web: WebApp) -> None:
    page.goto(web.url("/"))
    assert page.url.endswith("/login")
    assert page.get_by_role("heading", name="Sign in to deskpilot").is_visible()
    check_page_accessible(page)
    screenshot(page, "login")
    sign_in(page, web, "agent")
    assert page.get_by_text("agent1").first.is_visible()
    page.goto(web.url("/"))
    assert "/login" not in page.url


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(page, web: WebApp) -> None:
    page.goto(web.url("/login"))
    page.get_by_label("Username").fill("agent1")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "wrong username or password"
    page.get_by_label("Username").fill("nobody-here")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "wrong username or password"


def test_repeated_failures_lock_the_account_until_an_admin_resets_it(page, web: WebApp) -> None:
    from api.web.accounts import set_password

    cred = web.add_user("agent")
    for _ in range(web.settings.web_max_failed_logins):
        page.goto(web.url("/login"))
        page.get_by_label("Username").fill(cred.username)
        page.get_by_label("Password").fill("wrong-password-x")
        page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Username").fill(cred.username)
    page.get_by_label("Password").fill(cred.password)  # right password, but locked now
    page.get_by_role("button", name="Sign in").click()
    assert "locked" in page.get_by_role("alert").inner_text()
    with web.session() as s:
        set_password(session=s, username=cred.username, password=cred.password)
    sign_in(page, web, cred)


def test_a_write_without_the_csrf_token_is_refused(web: WebApp) -> None:
    with httpx.Client(base_url=web.base_url) as c:
        token = _csrf(c.get("/login").text)
        r = c.post("/login", data={"username": "agent1", "password": web.users["agent"].password})
        assert r.status_code == 403 and "security token" in r.text
        r = c.post("/login", data={"username": "agent1", "password": web.users["agent"].password,
                                   "csrf_token": token + "x"})
        assert r.status_code == 403
        r = c.post("/login", data={"username": "agent1", "password": web.users["agent"].password,
                                   "csrf_token": token})
        assert r.status_code == 303
        # Signed in now: the token changed with the session, so the old one no longer works either.
        r = c.post("/logout", data={"csrf_token": token})
        assert r.status_code == 403
        r = c.post("/logout", headers={"X-CSRF-Token": _csrf(c.get("/account").text)})
        assert r.status_code == 303


def test_session_cookie_is_httponly_and_samesite_lax(web: WebApp) -> None:
    with httpx.Client(base_url=web.base_url) as c:
        r = c.get("/login")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie


def test_disabling_a_user_ends_their_open_session(page, web: WebApp) -> None:
    from api.web.accounts import set_disabled

    cred = web.add_user("analyst")
    sign_in(page, web, cred)
    page.goto(web.url("/account"))
    assert page.get_by_role("heading", name="Your account").is_visible()
    with web.session() as s:
        set_disabled(session=s, username=cred.username, disabled=True)
    page.goto(web.url("/account"))
    assert "/login" in page.url
    page.get_by_label("Username").fill(cred.username)
    page.get_by_label("Password").fill(cred.password)
    page.get_by_role("button", name="Sign in").click()
    assert "disabled" in page.get_by_role("alert").inner_text()


def test_a_page_outside_ones_role_shows_the_403_page(page, web: WebApp) -> None:
    sign_in(page, web, "knowledge_manager")
    resp = page.goto(web.url("/admin/users"))
    assert resp is not None and resp.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    assert "knowledge_manager" in page.inner_text("main")
    check_page_accessible(page)
    screenshot(page, "error-403")


def test_an_unknown_address_shows_the_404_page_and_the_api_keeps_json(page, web: WebApp) -> None:
    sign_in(page, web, "agent")
    resp = page.goto(web.url("/no/such/page"))
    assert resp is not None and resp.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    check_page_accessible(page)
    screenshot(page, "error-404")
    r = httpx.get(web.url("/v1/no-such-route"), headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_signed_out_pages_redirect_to_sign_in_and_come_back(page, web: WebApp) -> None:
    page.goto(web.url("/account"))
    assert "/login?next=/account" in page.url
    page.get_by_label("Username").fill("analyst1")
    page.get_by_label("Password").fill(web.users["analyst"].password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    assert page.get_by_role("heading", name="Your account").is_visible()


def test_change_own_password(page, web: WebApp) -> None:
    cred = web.add_user("agent")
    sign_in(page, web, cred)
    page.goto(web.url("/account"))
    check_page_accessible(page)
    screenshot(page, "account")
    page.get_by_label("Current password").fill(cred.password)
    page.get_by_label("New password").fill("a-brand-new-password")
    page.get_by_role("button", name="Change password").click()
    assert page.get_by_text("Your password is changed.").is_visible()
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_text("You are signed out.").is_visible()
    cred.password = "a-brand-new-password"
    sign_in(page, web, cred)


def test_web_writes_are_audited_with_the_user(page, web: WebApp) -> None:
    from sqlmodel import col, select

    from api.auth import AuditLog

    cred = web.add_user("analyst")
    sign_in(page, web, cred)
    web.app.state.audit_writer.flush()
    with web.session() as s:
        rows = s.exec(select(AuditLog).where(AuditLog.path == "/login").order_by(col(AuditLog.id).desc())).all()
    assert any(r.who == cred.username and r.role == "analyst" and r.status == 303 for r in rows)


def test_pages_are_left_out_of_the_openapi_schema(web: WebApp) -> None:
    paths = httpx.get(web.url("/openapi.json")).json()["paths"]
    assert "/login" not in paths and "/" not in paths and all(p.startswith(("/v1", "/healthz", "/readyz",
                                                                              "/metrics")) for p in paths)
