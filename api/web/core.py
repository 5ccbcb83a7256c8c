"""What every web page shares: the signed session cookie, CSRF, the signed-in user and role checks, templates,
flash messages and error pages in the product's look.

Every page router is built with `web_router()`: its routes (a) load the session from the signed cookie, (b) refuse
any write (POST/PUT/PATCH/DELETE) whose CSRF token is missing or wrong with 403, (c) render domain errors, 403 and
404 as HTML pages, and (d) write the cookie back when the session changed. Role checks use the API's own rule
(`api.auth.Principal.allowed`) with the role tuples the JSON routes declare, so one permission check serves both.
"""

from __future__ import annotations

import hmac
import secrets
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from api.auth import Principal, _check_role
from api.errors import Overloaded, status_for, validation_detail
from api.settings import Settings, install_secret
from api.web.accounts import UserPublic, session_user
from core.errors import DeskpilotError
from routing.models import utcnow

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "deskpilot_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

templates = Jinja2Templates(directory=str(HERE / "templates"))
def _num(value: Any, digits: int = 3) -> str:
    """A metric for people: whole numbers with thousands separators, others to `digits` decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


templates.env.filters["num"] = _num
templates.env.globals["ROLE_LABELS"] = {
    "helpdesk": "Helpdesk (machine)", "agent": "Agent", "knowledge_manager": "Knowledge manager",
    "analyst": "Analyst", "admin": "Admin",
}


# ---------------------------------------------------------------- navigation registry (filled by api/web/__init__)

@dataclass(frozen=True)
class NavItem:
    """A link in the top navigation, shown to the roles allowed on its page (admin sees everything)."""

    label: str
    path: str
    roles: tuple[str, ...]
    section: str  # groups the links: "Agent", "Analyst", "Knowledge", "Admin"


def _nav(request: Request) -> list[NavItem]:
    return list(getattr(request.app.state, "web_nav", []))


def nav_for(request: Request, principal: Principal | None) -> list[tuple[str, list[NavItem]]]:
    """The navigation a principal may see, grouped by section in registry order."""
    if principal is None:
        return []
    out: dict[str, list[NavItem]] = {}
    for item in _nav(request):
        if principal.allowed(item.roles):
            out.setdefault(item.section, []).append(item)
    return list(out.items())


def home_for(request: Request, principal: Principal) -> str:
    """The page a role lands on: its HOME entry, else the first page it may see, else the account page."""
    home: dict[str, str] = getattr(request.app.state, "web_home", {})
    if principal.role in home:
        return home[principal.role]
    for item in _nav(request):
        if principal.allowed(item.roles):
            return item.path
    return "/account"


# ---------------------------------------------------------------- the signed session cookie

@dataclass
class WebSession:
    """The session carried in the signed cookie: user id + session version, CSRF token, flash messages."""

    data: dict[str, Any]
    changed: bool = False

    @property
    def csrf(self) -> str:
        """This session's CSRF token (created on first use)."""
        token = self.data.get("csrf")
        if not token:
            token = secrets.token_urlsafe(32)
            self.data["csrf"] = token
            self.changed = True
        return str(token)

    def flash(self, text: str, level: str = "info") -> None:
        """Queue a message for the next page shown."""
        self.data.setdefault("flash", []).append([level, text])
        self.changed = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        """The queued messages (emptied)."""
        items = self.data.pop("flash", None) or []
        if items:
            self.changed = True
        return [(str(a), str(b)) for a, b in items]

    def sign_in(self, user: UserPublic, session_version: int) -> None:
        """Start a signed-in session (a fresh CSRF token: a token seen before sign-in is not reused)."""
        flashes = self.data.get("flash", [])
        self.data = {"uid": user.id, "sv": session_version, "iat": utcnow().timestamp(),
                     "csrf": secrets.token_urlsafe(32), "flash": flashes}
        self.changed = True

    def sign_out(self) -> None:
        """Forget the user (and the CSRF token)."""
        self.data = {}
        self.changed = True


def _serializer(request: Request) -> URLSafeTimedSerializer:
    state = request.app.state
    ser = getattr(state, "web_serializer", None)
    if ser is None:
        settings: Settings = state.settings
        secret = settings.web_secret_key.get_secret_value() or install_secret(
            settings.home, "web-session.key", "DESKPILOT_WEB_SECRET_KEY", "web session key")
        ser = URLSafeTimedSerializer(secret, salt="deskpilot-web-session")
        state.web_serializer = ser
    return ser


def web_session(request: Request) -> WebSession:
    """The request's session (loaded from the cookie once; an invalid or expired cookie is an empty session)."""
    existing = getattr(request.state, "web_session", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    settings: Settings = request.app.state.settings
    data: dict[str, Any] = {}
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            loaded = _serializer(request).loads(raw, max_age=int(settings.web_session_hours * 3600))
            if isinstance(loaded, dict):
                data = loaded
        except BadSignature:
            data = {}
    iat = data.get("iat")
    if iat is not None and utcnow().timestamp() - float(iat) > settings.web_session_hours * 3600:
        data = {}  # the sign-in is older than a session may last, even if the cookie was re-signed since
    sess = WebSession(data=data, changed=not data and bool(raw))
    request.state.web_session = sess
    return sess


def _save_session(request: Request, response: Response) -> None:
    sess: WebSession | None = getattr(request.state, "web_session", None)
    if sess is None or not sess.changed:
        return
    settings: Settings = request.app.state.settings
    secure = settings.web_secure_cookies or request.url.scheme == "https"
    if not sess.data:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
        return
    response.set_cookie(COOKIE, _serializer(request).dumps(sess.data), max_age=int(settings.web_session_hours * 3600),
                        path="/", httponly=True, samesite="lax", secure=secure)


# ---------------------------------------------------------------- who is signed in, and may they

class SignInRequired(Exception):
    """The page needs a signed-in user: answered with a redirect to the sign-in page."""


def current_user(request: Request) -> UserPublic | None:
    """The signed-in user (checked against the database on every request: disabling or a new password ends the
    session at once), or None. Sets `request.state.principal` so the audit log names them."""
    if hasattr(request.state, "web_user"):
        cached: UserPublic | None = request.state.web_user
        return cached
    sess = web_session(request)
    user = None
    uid, sv = sess.data.get("uid"), sess.data.get("sv")
    if uid is not None and sv is not None:
        with Session(request.app.state.engine) as session:
            user = session_user(session=session, user_id=int(uid), session_version=int(sv))
        if user is None:
            sess.sign_out()
    request.state.web_user = user
    if user is not None:
        request.state.principal = Principal(name=user.username, role=user.role)
    return user


@dataclass(frozen=True)
class WebRequire:
    """The page dependency `web_require` returns: `roles` are the roles it lets in besides admin (empty: admin
    only), readable by anything that lists the pages and who may open them."""

    roles: tuple[str, ...]

    async def __call__(self, request: Request) -> Principal:
        """The signed-in principal, if their role is allowed."""
        user = current_user(request)
        if user is None:
            raise SignInRequired()
        principal = Principal(name=user.username, role=user.role)
        if not principal.allowed(self.roles):
            who = f"{', '.join(self.roles)} or admin" if self.roles else "admin only"
            raise HTTPException(403, f"your role ({user.role}) may not open this page (allowed: {who})")
        return principal


def web_require(*roles: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """Dependency for pages: a signed-in user of one of `roles` (admin always passes), exactly like
    `api.auth.require` for keys; not signed in -> the sign-in page, wrong role -> the 403 page."""
    for r in roles:
        _check_role(r)
    return WebRequire(tuple(roles))


def _csrf_ok(request: Request, sent: str | None) -> bool:
    token = web_session(request).data.get("csrf")
    return bool(token and sent and hmac.compare_digest(str(token), str(sent)))


async def check_csrf(request: Request) -> None:
    """403 unless a write carries this session's CSRF token (header for htmx, form field for plain forms)."""
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not _csrf_ok(request, sent):
        raise HTTPException(403, "the form's security token is missing or out of date; reload the page and "
                                 "try again")


# ---------------------------------------------------------------- rendering

def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go to after signing in (never another host)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200, title: str | None = None) -> HTMLResponse:
    """Render a page with the shared layout context (user, navigation, CSRF token, flashes)."""
    user = current_user(request)
    principal = Principal(name=user.username, role=user.role) if user else None
    sess = web_session(request)
    ctx = {
        "request": request, "user": user, "principal": principal, "nav": nav_for(request, principal),
        "csrf_token": sess.csrf, "flashes": sess.pop_flashes(), "title": title,
        "path": request.url.path,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, template, ctx, status_code=status_code)


def flash(request: Request, text: str, level: str = "info") -> None:
    """Queue a message for the next page this browser shows."""
    web_session(request).flash(text, level)


def redirect(request: Request, url: str) -> Response:
    """Go to `url` after a write (303 for forms; HX-Redirect for htmx requests)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    """An error in the product's look (403, 404, 409, 422, 503 ...)."""
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Check your input", 503: "Not available"}
    title = titles.get(status, "Something went wrong")
    template = "error_fragment.html" if request.headers.get("hx-request") else "error.html"
    return render(request, template, {"status": status, "detail": detail}, status_code=status, title=title)


# ---------------------------------------------------------------- the route class every page uses

class WebRoute(APIRoute):
    """A page route: session, CSRF on writes, HTML errors, cookie written back."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler."""
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                if request.method in WRITE_METHODS:
                    await check_csrf(request)
                response = await inner(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = redirect(request, f"/login?next={quote(target)}")
            except HTTPException as exc:
                response = error_page(request, exc.status_code, str(exc.detail))
            except DeskpilotError as exc:
                response = error_page(request, status_for(exc), exc.message)
            except RequestValidationError as exc:
                response = error_page(request, 422, validation_detail(list(exc.errors())))
            except Overloaded as exc:
                response = error_page(request, 503, exc.detail)
                response.headers["Retry-After"] = str(exc.retry_after)
            except PoolTimeout:
                response = error_page(request, 503, "every database connection is busy; retry in a moment")
                response.headers["Retry-After"] = "1"
            except Exception as exc:  # a bug: logged like the API's, shown in the product's look
                log.error("unhandled_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}",
                          traceback="".join(traceback.format_exception(exc)))
                response = error_page(request, 500, f"internal error ({type(exc).__name__}); see the server log")
            _save_session(request, response)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler


def web_router(**kwargs: Any) -> APIRouter:
    """A router for pages: WebRoute, left out of the OpenAPI schema."""
    return APIRouter(route_class=WebRoute, include_in_schema=False, **kwargs)


def lockout(settings: Settings) -> timedelta:
    """The lock-out duration from the settings."""
    return timedelta(minutes=settings.web_lockout_minutes)
