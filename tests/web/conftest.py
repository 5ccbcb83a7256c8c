"""Browser-test fixtures: a home seeded by the demo pipeline, the real server on a free port, Chromium, users.

- `web` (session): `deskpilot demo`'s own pipeline (simulate, ingest, mine, train, import the knowledge base) into a
  temporary home, then the real app (registry models, embedded chroma, SQLite file) served by uvicorn in a thread;
  live tickets are routed and streamed through the JSON API with a helpdesk key, as a helpdesk would. One user per
  role (`web.users[role]`) and one API key per role (`web.keys[role]`).
- `browser` (session) / `page` (per test, 1440 x 900): Playwright driving Debian's chromium at /usr/bin/chromium.
  Playwright's own browser download is not reachable, so never `playwright install`.
- `sign_in(page, web, role)`, `check_page_accessible(page)`: every page test should call the latter.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PASSWORD = "web-test-password-1"
SHOTS = Path(os.environ.get("DESKPILOT_SHOTS", "/tmp/shots"))
SEED_CASES = 300
LIVE_TICKETS = 60


@dataclass
class Credentials:
    """A web user's sign-in."""

    username: str
    password: str
    role: str


@dataclass
class WebApp:
    """The running app: where it listens, its settings, a key and a user per role, the live tickets seeded."""

    base_url: str
    settings: Any
    app: Any
    keys: dict[str, str]
    users: dict[str, Credentials]
    tickets: list[str] = field(default_factory=list)  # ticket ids routed through the API, oldest first
    decisions: dict[str, str] = field(default_factory=dict)  # ticket id -> auto / suggest / triage
    retriaged: list[str] = field(default_factory=list)  # tickets a customer message re-triaged

    def url(self, path: str) -> str:
        """Absolute URL of a path."""
        return self.base_url + path

    def h(self, role: str) -> dict[str, str]:
        """API auth header for a role."""
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def session(self) -> Any:
        """A database session on the app's engine (close it)."""
        from sqlmodel import Session

        return Session(self.app.state.engine, expire_on_commit=False)

    def add_user(self, role: str, username: str | None = None, password: str = PASSWORD) -> Credentials:
        """One more user (unique name) for a test that changes its account."""
        from api.web.accounts import create_user

        name = username or f"{role}-{uuid.uuid4().hex[:6]}"
        with self.session() as s:
            create_user(session=s, username=name, password=password, role=role)
        return Credentials(name, password, role)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed_live(web: WebApp, home: Path) -> None:
    """Route the newest simulated tickets through the API, stream their first events, re-triage a few."""
    with open(home / "sim" / "tickets.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(home / "sim" / "events.csv", newline="", encoding="utf-8") as fh:
        events: dict[str, list[dict[str, str]]] = {}
        for e in csv.DictReader(fh):
            events.setdefault(e["case_id"], []).append(e)
    live = rows[-LIVE_TICKETS:]
    by_intent: dict[str, str] = {}
    for r in rows[:-LIVE_TICKETS]:
        by_intent.setdefault(r["intent"], r["body"])
    with httpx.Client(base_url=web.base_url, headers=web.h("helpdesk"), timeout=120) as client:
        for r in live:
            tid = "W" + r["case_id"]
            resp = client.post("/v1/tickets/route", json={
                "ticket_id": tid, "subject": r["subject"], "body": r["body"], "channel": r["channel"],
                "segment": r["segment"], "priority": r["priority"], "created_at": r["created_at"]})
            assert resp.status_code in (200, 201), resp.text
            web.tickets.append(tid)
            web.decisions[tid] = resp.json()["result"]["decision"]
            for e in events.get(r["case_id"], [])[:3]:
                resp = client.post(f"/v1/tickets/{tid}/events", json={
                    "activity": e["activity"], "timestamp": e["timestamp"], "resource": e["resource"] or None,
                    "group": e["group"] or None, "channel": e["channel"] or None})
                assert resp.status_code == 201, resp.text
        # A customer writes again about something else: the ticket is re-triaged (a different intent's text).
        for tid, r in list(zip(web.tickets, live, strict=True))[:6]:
            other = next(b for i, b in by_intent.items() if i != r["intent"])
            resp = client.post(f"/v1/tickets/{tid}/events", json={
                "activity": "Customer replied", "author_type": "customer", "message": other})
            assert resp.status_code == 201, resp.text
            if resp.json().get("decision") is not None:
                web.retriaged.append(tid)
                web.decisions[tid] = resp.json()["decision"]["result"]["decision"]


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    """The seeded home served by the real app on a free port (see the module docstring)."""
    import uvicorn
    from sqlmodel import Session

    from api.app import create_app
    from api.auth import ROLES, create_key
    from api.commands.demo import run_pipeline
    from api.settings import Settings
    from api.web.accounts import create_user

    for name, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}.items():
        os.environ.setdefault(name, value)
    home = tmp_path_factory.mktemp("webhome")
    # DESKPILOT_WEB_SEED_CACHE=<dir> (opt-in, for quick reruns while developing): the pipeline's output is copied
    # from there when present, else built and saved there. Delete the folder when models or the simulator change.
    cache = os.environ.get("DESKPILOT_WEB_SEED_CACHE")
    if cache and (Path(cache) / "registry").is_dir():
        shutil.copytree(cache, home, dirs_exist_ok=True)
        settings = Settings(home=home, log_level="WARNING")
    else:
        settings = Settings(home=home, log_level="WARNING")
        run_pipeline(settings=settings, cases=SEED_CASES, seed=7)
        from knowledge_hub.ownership import holder_of

        # The pipeline lets go of the index when it is done, so the server started next can be its one writer.
        assert holder_of(Path(settings.chroma_path)) is None
        if cache:
            shutil.copytree(home, cache, dirs_exist_ok=True)
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="deskpilot-web-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert thread.is_alive(), "the server thread died while starting"
        time.sleep(0.2)
    else:
        raise AssertionError("the server did not get ready")
    keys: dict[str, str] = {}
    users: dict[str, Credentials] = {}
    with Session(app.state.engine) as s:
        for role in ROLES:
            keys[role] = create_key(session=s, name=f"web-{role}", role=role).secret
            create_user(session=s, username=f"{role}1", password=PASSWORD, role=role)
            users[role] = Credentials(f"{role}1", PASSWORD, role)
    web = WebApp(base_url=base, settings=settings, app=app, keys=keys, users=users)
    _seed_live(web, home)
    try:
        yield web
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium from Debian's package, headless."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("DESKPILOT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium; `make browser` does it)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1440 x 900."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def sign_in(page: Any, web: WebApp, role: str | Credentials) -> None:
    """Sign in through the form as the user of `role` (or given credentials); lands on their home page."""
    cred = web.users[role] if isinstance(role, str) else role
    page.goto(web.url("/login"))
    page.get_by_label("Username").fill(cred.username)
    page.get_by_label("Password").fill(cred.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, f"sign-in as {cred.username} failed: {page.inner_text('main')[:300]}"


def screenshot(page: Any, name: str) -> list[Path]:
    """Full-page screenshots at 1440 and 768 px wide into /tmp/shots (DESKPILOT_SHOTS)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = []
    size = page.viewport_size or {"width": 1440, "height": 900}
    for width in (1440, 768):
        page.set_viewport_size({"width": width, "height": 900})
        path = SHOTS / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
        out.append(path)
    page.set_viewport_size(size)
    return out


# Every focusable control, its accessible name (a simplified accname: aria-labelledby, aria-label, <label>, wrapping
# label, alt / title, text, value of buttons), whether it is shown and enabled. Elements get a data-a11y index.
_CONTROLS_JS = """
() => {
  const sel = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]:not([tabindex="-1"]),'
            + ' [contenteditable="true"]';
  const text = (el) => (el ? (el.innerText || el.textContent || '').trim() : '');
  const nameOf = (el) => {
    const by = el.getAttribute('aria-labelledby');
    if (by) { const t = by.split(/\\s+/).map(id => text(document.getElementById(id))).join(' ').trim(); if (t) return t; }
    const al = (el.getAttribute('aria-label') || '').trim(); if (al) return al;
    if (el.id) { const l = document.querySelector('label[for="' + CSS.escape(el.id) + '"]'); if (l && text(l)) return text(l); }
    const wrap = el.closest('label'); if (wrap && text(wrap)) return text(wrap);
    if (['INPUT', 'BUTTON'].includes(el.tagName) && ['submit', 'button', 'reset'].includes(el.type) && el.value) return el.value;
    const t = text(el); if (t && !['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)) return t;
    const img = el.querySelector('img[alt]'); if (img && img.alt.trim()) return img.alt.trim();
    return (el.getAttribute('title') || '').trim();
  };
  const out = [];
  document.querySelectorAll(sel).forEach((el, i) => {
    el.setAttribute('data-a11y', String(i));
    const st = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    const shown = st.visibility !== 'hidden' && st.display !== 'none' && (r.width > 0 || r.height > 0)
                  && !el.closest('[hidden], [inert], details:not([open]) > :not(summary)');
    out.push({i, tag: el.tagName.toLowerCase(), type: el.type || '', name: nameOf(el), shown,
              disabled: !!el.disabled, html: el.outerHTML.slice(0, 160)});
  });
  return out;
}
"""

_FOCUS_JS = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const st = getComputedStyle(el);
  const visible = (st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0) || st.boxShadow !== 'none';
  return {i: el.getAttribute('data-a11y'), visible, html: el.outerHTML.slice(0, 160)};
}
"""


def check_page_accessible(page: Any, *, max_tabs: int = 400) -> list[dict[str, Any]]:
    """Assert every interactive element on the page has an accessible name, is reachable with Tab from the top of
    the page, and shows a visible focus indicator; returns the controls found.

    Tabbing starts at the skip link (the first stop on every page) and walks forward until focus leaves the page
    or comes back to the start.
    """
    controls = page.evaluate(_CONTROLS_JS)
    nameless = [c["html"] for c in controls if c["shown"] and not c["name"]]
    assert not nameless, f"controls without an accessible name on {page.url}: {nameless}"
    wanted = {str(c["i"]) for c in controls if c["shown"] and not c["disabled"]}
    # Start before the first element: a focused, unfocusable-by-Tab marker at the top of <body>.
    page.evaluate("""() => { const m = document.createElement('span'); m.id = 'a11y-start'; m.tabIndex = -1;
                             document.body.prepend(m); m.focus(); }""")
    page.keyboard.press("Tab")
    page.evaluate("() => document.getElementById('a11y-start')?.remove()")
    first = page.evaluate(_FOCUS_JS)
    assert first is not None and "skip-link" in first["html"], f"the first Tab stop is not the skip link: {first}"
    reached: set[str] = set()
    no_ring: list[str] = []
    current = first
    for _ in range(max_tabs):
        if current is None:
            break
        if current["i"] is not None:
            if current["i"] in reached:
                break
            reached.add(current["i"])
            if not current["visible"]:
                no_ring.append(current["html"])
        page.keyboard.press("Tab")
        current = page.evaluate(_FOCUS_JS)
    missing = [c["html"] for c in controls if str(c["i"]) in wanted - reached]
    assert not missing, f"controls not reachable with Tab on {page.url}: {missing[:10]}"
    assert not no_ring, f"controls without a visible focus indicator on {page.url}: {no_ring[:10]}"
    return list(controls)
