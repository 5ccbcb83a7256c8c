"""Signing in and out, the landing page (`GET /` goes to the sign-in page or the role's home) and one's account."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request, Response
from sqlmodel import Session

from api.auth import ROLES, Principal, set_audit_object
from api.deps import get_session
from api.settings import Settings
from api.web import accounts
from api.web.core import (
    current_user,
    flash,
    home_for,
    lockout,
    redirect,
    render,
    safe_next,
    web_require,
    web_router,
    web_session,
)
from core.errors import InvalidInput

router = web_router()
NAV: list = []
SessionDep = Annotated[Session, Depends(get_session)]
ANYONE = ROLES


@router.get("/")
def landing(request: Request) -> Response:
    """The sign-in page, or the signed-in user's home page."""
    user = current_user(request)
    if user is None:
        return redirect(request, "/login")
    return redirect(request, home_for(request, Principal(name=user.username, role=user.role)))


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    user = current_user(request)
    if user is not None:
        return redirect(request, safe_next(next, home_for(request, Principal(name=user.username, role=user.role))))
    return render(request, "login.html", {"next": safe_next(next, "")}, title="Sign in")


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the password; on success start a session and go on, else show the form again with why."""
    settings: Settings = request.app.state.settings
    set_audit_object(request, f"login:{username[:64]}")
    # Its own session: the request session would commit the audit row before it is known who signed in; the
    # audit middleware writes the row (with the user, or none on a refusal) once the answer is decided.
    with Session(request.app.state.engine, expire_on_commit=False) as own:
        result = accounts.sign_in(session=own, username=username, password=password,
                                  max_failed=settings.web_max_failed_logins, lockout=lockout(settings))
    if result.user is None:
        return render(request, "login.html", {"next": safe_next(next, ""), "error": result.reason,
                                              "username": username}, status_code=401, title="Sign in")
    web_session(request).sign_in(result.user, result.session_version)
    request.state.principal = result.principal
    request.state.web_user = result.user
    assert result.principal is not None
    return redirect(request, safe_next(next, home_for(request, result.principal)))


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session."""
    current_user(request)  # names the user in the audit log
    web_session(request).sign_out()
    flash(request, "You are signed out.")
    return redirect(request, "/login")


@router.get("/account")
def account(request: Request, principal: Annotated[Principal, Depends(web_require(*ANYONE))]) -> Response:
    """Who is signed in, with which role, and a form to change one's password."""
    return render(request, "account.html", title="Your account")


@router.post("/account/password")
def change_password(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*ANYONE))],
    current: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
    new: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
) -> Response:
    """Change one's own password (the current one is checked first); signs in again with the new one."""
    settings: Settings = request.app.state.settings
    set_audit_object(request, f"user:{principal.name}")
    check = accounts.sign_in(session=session, username=principal.name, password=current,
                             max_failed=settings.web_max_failed_logins, lockout=lockout(settings))
    if check.user is None:
        return render(request, "account.html", {"error": "your current password is not right"},
                      status_code=422, title="Your account")
    try:
        accounts.set_password(session=session, username=principal.name, password=new)
    except InvalidInput as exc:
        return render(request, "account.html", {"error": exc.message}, status_code=422, title="Your account")
    again = accounts.sign_in(session=session, username=principal.name, password=new,
                             max_failed=settings.web_max_failed_logins, lockout=lockout(settings))
    if again.user is not None:
        web_session(request).sign_in(again.user, again.session_version)
    flash(request, "Your password is changed.", "success")
    return redirect(request, "/account")
