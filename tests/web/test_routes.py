"""Every page and every form of the web app, enumerated from the app's own routes: a write without this session's
CSRF token is refused, a signed-in user of a role the route does not let in is refused, and a signed-out visitor is
sent to sign in. The roles expected are read from each route's own role dependency (`api.web.core.WebRequire`), so a
route added later is checked without editing this file, and a route that checks no role must be a sign-in route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.web.conftest import WebApp

# The only pages anyone may open signed out: the landing redirect and signing in and out.
PUBLIC = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
ROLE_REFUSED = "may not open this page"
CSRF_REFUSED = "security token is missing or out of date"


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def _role_check(dependant: Any) -> Any:
    """The route's `WebRequire` dependency (searched through sub-dependencies), or None."""
    from api.web.core import WebRequire

    for dep in dependant.dependencies:
        if isinstance(dep.call, WebRequire):
            return dep.call
        found = _role_check(dep)
        if found is not None:
            return found
    return None


def _walk(routes: list[Any], prefix: str = "", deps: tuple[Any, ...] = ()) -> Iterator[tuple[str, Any, tuple[Any, ...]]]:
    """(full path, route, router-level dependencies) of every route, through included routers."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:  # an included router: its routes, under its prefix and dependencies
            ctx = route.include_context
            yield from _walk(original.routes, prefix + ctx.prefix, deps + tuple(ctx.dependencies))
        else:
            yield prefix + getattr(route, "path", ""), route, deps


def _web_routes(web: WebApp) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(method, path, roles let in besides admin, or None when the route checks no role) of every web route."""
    from api.web.core import WebRequire, WebRoute

    out = []
    for path, route, deps in _walk(list(web.app.routes)):
        if not isinstance(route, WebRoute):
            continue
        check = next((d.dependency for d in deps if isinstance(d.dependency, WebRequire)), None)
        check = check or _role_check(route.dependant)
        for method in sorted(route.methods):
            out.append((method, path, None if check is None else check.roles))
    return out


def _url(path: str) -> str:
    """The route's path with every parameter filled (any value: the checks run before the parameters are used)."""
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture(scope="module")
def clients(web: WebApp) -> Iterator[dict[str, tuple[httpx.Client, str]]]:
    """A signed-in client and its CSRF token per role."""
    out: dict[str, tuple[httpx.Client, str]] = {}
    try:
        for role, cred in web.users.items():
            c = httpx.Client(base_url=web.base_url, timeout=60)
            out[role] = (c, "")
            r = c.post("/login", data={"username": cred.username, "password": cred.password,
                                       "csrf_token": _csrf(c.get("/login").text)})
            assert r.status_code == 303, f"sign-in as {cred.username}: HTTP {r.status_code}"
            out[role] = (c, _csrf(c.get("/account").text))
        yield out
    finally:
        for c, _ in out.values():
            c.close()


def test_the_web_routes_are_found_and_all_but_sign_in_check_a_role(web: WebApp) -> None:
    routes = _web_routes(web)
    paths = {p for _, p, _ in routes}
    for item in web.app.state.web_nav:  # every page in the navigation is among them
        assert item.path in paths, item.path
    assert sum(1 for m, _, _ in routes if m == "POST") >= 20 and sum(1 for m, _, _ in routes if m == "GET") >= 20
    unchecked = {(m, p) for m, p, roles in routes if roles is None}
    assert unchecked == PUBLIC, f"routes without a role check: {sorted(unchecked - PUBLIC)}"


def test_every_write_is_refused_without_a_valid_csrf_token(web: WebApp, clients) -> None:
    admin, token = clients["admin"]  # admin may do every write: only the token can refuse it
    writes = [(m, p) for m, p, _ in _web_routes(web) if m in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes
    for method, path in writes:
        url = _url(path)
        for data in ({}, {"csrf_token": token + "x"}, {"csrf_token": ""}):
            r = admin.request(method, url, data=data)
            assert r.status_code == 403 and CSRF_REFUSED in r.text, (method, path, data, r.status_code)
        r = admin.request(method, url, headers={"X-CSRF-Token": "not-" + token})
        assert r.status_code == 403 and CSRF_REFUSED in r.text, (method, path, "header", r.status_code)
    # The same session's token is accepted (the refusals above were the token's, not the session's).
    r = admin.post("/knowledge/preview", data={"csrf_token": token, "body": "**bold**"})
    assert r.status_code == 200 and "<strong>bold</strong>" in r.text


def test_every_route_refuses_the_roles_it_does_not_let_in(web: WebApp, clients) -> None:
    from api.auth import ROLES

    checked = 0
    for method, path, roles in _web_routes(web):
        if roles is None:
            continue
        for role in ROLES:
            if role == "admin" or role in roles:
                continue
            client, token = clients[role]
            r = client.request(method, _url(path), data={"csrf_token": token} if method != "GET" else None)
            assert r.status_code == 403 and ROLE_REFUSED in r.text, (role, method, path, r.status_code)
            assert f"your role ({role})" in r.text
            checked += 1
    assert checked >= 100  # most routes are closed to most roles


def test_every_page_sends_a_signed_out_visitor_to_sign_in(web: WebApp) -> None:
    with httpx.Client(base_url=web.base_url, timeout=60) as anon:
        for method, path, roles in _web_routes(web):
            if roles is None or method != "GET":
                continue
            url = _url(path)
            r = anon.get(url)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"] == f"/login?next={quote(url)}", (path, r.headers)


def test_a_role_the_route_lets_in_gets_past_the_check(web: WebApp, clients) -> None:
    """The refusals are the role check's: for each page, a role it lets in is not refused (the page may still say
    the filled-in address does not exist)."""
    for method, path, roles in _web_routes(web):
        if roles is None or method != "GET":
            continue
        role = next((r for r in roles if r in clients), "admin")
        r = clients[role][0].get(_url(path))
        assert ROLE_REFUSED not in r.text and r.status_code < 500, (role, path, r.status_code)
