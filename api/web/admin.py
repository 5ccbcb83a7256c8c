"""Admin pages: users, API keys, model versions with retrain / rollback and the gate's verdict, draft-reply
templates with a preview, the audit log, read-only settings and service health.

Each page calls what the JSON route calls — often the route function itself (api.views.models, api.views.health),
so checks, audit object ids and swaps are the same code; users and keys use their service modules
(api.web.accounts, api.auth). Roles are the routes' own: admin only, except the models and health pages, which
analysts may read like GET /v1/models and GET /v1/models/health.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import Depends, Form, Path, Query, Request, Response
from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from api.audit import MAX_PAGE, query_audit
from api.auth import ROLES, Principal, create_key, list_keys, revoke_key, set_audit_object
from api.deps import get_session
from api.errors import status_for, validation_detail
from api.settings import Settings
from api.views import health as health_views
from api.views import models as model_views
from api.web import accounts
from api.web.core import NavItem, flash, redirect, render, web_require, web_router
from assist import draft as assist_draft
from assist import service as assist_service
from assist.models import ANY, MAX_LABEL, MAX_TEMPLATE, DraftReply, DraftTemplateIn, DraftTemplatePublic
from core.errors import DeskpilotError, InvalidInput
from knowledge_hub.models import Passage, SearchHit
from routing.models import Ticket

router = web_router(prefix="/admin")
ADMIN: tuple[str, ...] = ()  # `require()`: admin only
MODEL_READERS = ("analyst",)  # GET /v1/models, /v1/models/health, /v1/models/retrain
NAV = [
    NavItem("Users", "/admin/users", ADMIN, "Admin"),
    NavItem("API keys", "/admin/keys", ADMIN, "Admin"),
    NavItem("Models", "/admin/models", MODEL_READERS, "Admin"),
    NavItem("Draft templates", "/admin/templates", ADMIN, "Admin"),
    NavItem("Audit log", "/admin/audit", ADMIN, "Admin"),
    NavItem("Settings", "/admin/settings", ADMIN, "Admin"),
    NavItem("Health", "/admin/health", MODEL_READERS, "Admin"),
]
HOME = {"admin": "/admin/users"}
AUDIT_METHODS = ["POST", "PUT", "PATCH", "DELETE", "JOB", "CLI"]

SessionDep = Annotated[Session, Depends(get_session)]
AdminDep = Annotated[Principal, Depends(web_require(*ADMIN))]
Username = Annotated[str, Path(min_length=1, max_length=64)]


# ---------------------------------------------------------------- users

@router.get("/users")
def users_page(request: Request, session: SessionDep, principal: AdminDep) -> Response:
    """Every user with role, status and actions; a form to add one."""
    return render(request, "admin/users.html", {"users": accounts.list_users(session=session), "roles": ROLES},
                  title="Users")


@router.post("/users")
def add_user(
    request: Request, session: SessionDep, principal: AdminDep,
    username: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=32)],
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
) -> Response:
    """Create a user."""
    set_audit_object(request, f"user:{username[:64]}")
    try:
        user = accounts.create_user(session=session, username=username, password=password, role=role)
    except DeskpilotError as exc:
        return render(request, "admin/users.html", {"users": accounts.list_users(session=session), "roles": ROLES,
                                                    "error": exc.message, "form": {"username": username,
                                                                                   "role": role}},
                      status_code=409 if exc.code == "conflict" else 422, title="Users")
    flash(request, f"User {user.username} ({user.role}) created.", "success")
    return redirect(request, "/admin/users")


@router.post("/users/{username}/role")
def change_role(request: Request, username: Username, session: SessionDep, principal: AdminDep,
                role: Annotated[str, Form(max_length=32)]) -> Response:
    """Change a user's role (their sessions end)."""
    set_audit_object(request, f"user:{username}")
    user = accounts.set_role(session=session, username=username, role=role)
    flash(request, f"{user.username} is now {user.role}.", "success")
    return redirect(request, "/admin/users")


@router.post("/users/{username}/disable")
def disable_user(request: Request, username: Username, session: SessionDep, principal: AdminDep) -> Response:
    """Disable a user (their sessions end at once). An admin cannot disable themself."""
    set_audit_object(request, f"user:{username}")
    if username == principal.name:
        raise InvalidInput("you cannot disable your own account", field="username")
    accounts.set_disabled(session=session, username=username, disabled=True)
    flash(request, f"{username} is disabled.", "success")
    return redirect(request, "/admin/users")


@router.post("/users/{username}/enable")
def enable_user(request: Request, username: Username, session: SessionDep, principal: AdminDep) -> Response:
    """Enable a disabled user."""
    set_audit_object(request, f"user:{username}")
    accounts.set_disabled(session=session, username=username, disabled=False)
    flash(request, f"{username} is enabled.", "success")
    return redirect(request, "/admin/users")


@router.post("/users/{username}/password")
def reset_password(request: Request, username: Username, session: SessionDep, principal: AdminDep,
                   password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)]) -> Response:
    """Set a new password for a user (ends their sessions, lifts a lock-out)."""
    set_audit_object(request, f"user:{username}")
    accounts.set_password(session=session, username=username, password=password)
    flash(request, f"{username}'s password is reset; tell them the new one by a safe channel.", "success")
    return redirect(request, "/admin/users")


# ---------------------------------------------------------------- API keys

@router.get("/keys")
def keys_page(request: Request, session: SessionDep, principal: AdminDep) -> Response:
    """Every API key (never its secret) and a form to create one."""
    return render(request, "admin/keys.html", {"keys": list_keys(session=session), "roles": ROLES}, title="API keys")


@router.post("/keys")
def add_key(request: Request, session: SessionDep, principal: AdminDep,
            name: Annotated[str, Form(max_length=128)], role: Annotated[str, Form(max_length=32)]) -> Response:
    """Create a key and show its secret once, on this answer only (never stored, never in a cookie)."""
    set_audit_object(request, f"key:{name[:128]}")
    created = create_key(session=session, name=name, role=role)
    return render(request, "admin/keys.html", {"keys": list_keys(session=session), "roles": ROLES,
                                               "created": created}, status_code=201, title="API keys")


@router.post("/keys/{name}/revoke")
def revoke(request: Request, name: Annotated[str, Path(min_length=1, max_length=128)], session: SessionDep,
           principal: AdminDep) -> Response:
    """Revoke a key (it stops working at once)."""
    set_audit_object(request, f"key:{name}")
    revoke_key(session=session, name=name)
    flash(request, f"Key {name} is revoked.", "success")
    return redirect(request, "/admin/keys")


# ---------------------------------------------------------------- models, retraining, rollback

@router.get("/models")
async def models_page(request: Request,
                      principal: Annotated[Principal, Depends(web_require(*MODEL_READERS))]) -> Response:
    """Live versions with metrics, each task's versions and history, recent retrain jobs with the gate's verdict."""
    settings: Settings = request.app.state.settings
    models = model_views.list_models(state=request.app.state.models, settings=settings, principal=principal)
    versions = {}
    for task in models.tasks:
        try:
            versions[task.task] = model_views.list_versions(task=task.task, settings=settings, principal=principal)
        except DeskpilotError:
            continue
    jobs = await model_views.list_retrain_jobs(request=request, principal=principal)
    return render(request, "admin/models.html", {
        "m": models, "versions": versions, "jobs": jobs[:10], "tasks": list(get_args(model_views.RetrainTask)), "can_change": principal.role == "admin",
    }, title="Models")


@router.post("/models/retrain")
async def start_retrain(
    request: Request, principal: AdminDep,
    tasks: Annotated[list[model_views.RetrainTask], Form()],
    use_embeddings: Annotated[bool, Form()] = False,
    evaluate_only: Annotated[bool, Form()] = False,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Start a gated retrain (POST /v1/models/retrain) and go to its job page."""
    body = model_views.RetrainRequest(tasks=tasks, use_embeddings=use_embeddings, evaluate_only=evaluate_only,
                                      reason=reason or None)
    job = await model_views.retrain(request=request, response=Response(), principal=principal, body=body)
    flash(request, f"Retrain job {job.job_id} started.", "success")
    return redirect(request, f"/admin/models/jobs/{job.job_id}")


@router.get("/models/jobs/{job_id}")
async def job_page(request: Request, job_id: Annotated[str, Path(min_length=1, max_length=64)],
                   principal: Annotated[Principal, Depends(web_require(*MODEL_READERS))]) -> Response:
    """A retrain job: status, stage, data read, trained models and the gate's side-by-side verdict (polls while
    it runs)."""
    job = await model_views.get_retrain_job(job_id=job_id, request=request, principal=principal)
    fragment = bool(request.headers.get("hx-request"))
    return render(request, "admin/job.html", {"job": job, "fragment": fragment}, title=f"Retrain job {job_id}")


@router.post("/models/{task}/rollback")
async def rollback(
    request: Request, task: model_views.TaskName, principal: AdminDep,
    to: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Make an earlier version live again and swap it in (POST /v1/models/{task}/rollback)."""
    settings: Settings = request.app.state.settings
    body = model_views.RollbackIn(to=to or None, reason=reason or None)
    out = await model_views.rollback(task=task, request=request, settings=settings, principal=principal, body=body)
    flash(request, f"{task}: {out.previous} → {out.live} is live.", "success")
    return redirect(request, "/admin/models")


# ---------------------------------------------------------------- draft-reply templates

# A browser sends each line break of a textarea as CR LF: the form may carry up to twice the template's limit
# before the line breaks are normalised and the API's own limit applies.
FORM_TEMPLATE_MAX = 2 * MAX_TEMPLATE
# The preview's sample: one article with a customer-facing section and numbered steps, and two tickets, one with
# every field a template can quote and one with none, so the `a || b` alternatives show both ways.
SAMPLE_TITLE = "Refund a duplicate charge"
SAMPLE_ANSWER = ("We found the second payment for your order and refunded it. The money is back on your card "
                 "within a few working days.")
SAMPLE_STEPS = ("Find both payments in the billing console", "Refund the later payment",
                "Add the refund reference to the ticket")
SAMPLE_BODY = ("## Steps\n\n" + "".join(f"{i}. {s}\n" for i, s in enumerate(SAMPLE_STEPS, 1))
               + f"\n## Reply to the customer\n\n{SAMPLE_ANSWER}\n")
SAMPLE_PASSAGES = [
    Passage(article_id=0, version=1, title=SAMPLE_TITLE, section=0, heading="Steps",
            text="\n".join(f"{i}. {s}" for i, s in enumerate(SAMPLE_STEPS, 1))),
    Passage(article_id=0, version=1, title=SAMPLE_TITLE, section=1, heading="Reply to the customer",
            text=SAMPLE_ANSWER),
]
SAMPLE_TICKETS: list[tuple[str, dict[str, str]]] = [
    ("A ticket with every field", {
        "subject": "Charged twice for my order",
        "body": "Hello, I was charged twice for order A-10432. Can you refund the second payment please?",
        "customer_name": "Alex Morgan", "order_id": "A-10432", "product": "Premium plan"}),
    ("A ticket without name, order or product", {
        "subject": "Charged twice", "body": "There are two payments on my card statement. Why was I charged twice?"}),
]


@dataclass
class _Snapshot:
    """What `build_draft` reads from an index snapshot: the article's indexed passages."""

    passages: list[Passage]


def _template_preview(text: str) -> list[tuple[str, dict[str, str], DraftReply]]:
    """The template filled for each sample ticket by assist's own draft code, the sample article as the best hit."""
    hit = SearchHit(passage=SAMPLE_PASSAGES[1], score=1.0, dense_score=1.0, lexical_score=1.0, rank=1)
    return [(label, ticket, assist_draft.build_draft(
        hits=[hit], snapshot=_Snapshot(SAMPLE_PASSAGES), article_body=SAMPLE_BODY, template=text,
        fields=assist_service._draft_fields(ticket, {}))) for label, ticket in SAMPLE_TICKETS]


def _checked_template(intent: str, channel: str, text: str) -> DraftTemplateIn:
    """The PUT body the API would build, or the reason it would refuse: intent and channel are required like the
    API's path parameters, the service's own rule (`check_template`, whose messages name the problem) runs before
    the body model's, and `put_template` runs it again."""
    for name, value in (("intent", intent), ("channel", channel)):
        if not value.strip():  # the service reads a blank as "any": a template for every ticket is asked for by name
            raise InvalidInput(f"{name} is required: a name, or {ANY} for any", field=name)
    assist_draft.check_template(text)
    return DraftTemplateIn(text=text)


def _problem(exc: DeskpilotError | ValidationError) -> str:
    return exc.message if isinstance(exc, DeskpilotError) else validation_detail(list(exc.errors()))


def _templates_page(request: Request, session: Session, *, form: dict[str, str], status_code: int = 200,
                    error: str | None = None, preview: list[Any] | None = None) -> Response:
    rows = assist_service.list_templates(session=session)
    scope = (assist_service._scope(form["intent"]), assist_service._scope(form["channel"]))
    current: DraftTemplatePublic | None = next((t for t in rows if (t.intent, t.channel) == scope), None)
    seen = session.exec(select(Ticket.current_intent, Ticket.channel).distinct()).all()
    return render(request, "admin/templates.html", {
        "rows": rows, "form": form, "current": current, "error": error, "preview": preview,
        "intents": sorted({i for i, _ in seen if i}), "channels": sorted({c for _, c in seen if c}),
        "default_template": assist_draft.DEFAULT_TEMPLATE, "max_template": MAX_TEMPLATE, "any": ANY,
        "ticket_fields": assist_draft.TICKET_FIELDS, "article_fields": assist_draft.ARTICLE_FIELDS,
        "sample_title": SAMPLE_TITLE, "sample_body": SAMPLE_BODY,
    }, status_code=status_code, title="Draft templates")


TemplateScope = Annotated[str, Form(max_length=MAX_LABEL)]
TemplateText = Annotated[str, Form(max_length=FORM_TEMPLATE_MAX)]


@router.get("/templates")
def templates_page(request: Request, session: SessionDep, principal: AdminDep,
                   intent: Annotated[str, Query(max_length=MAX_LABEL)] = "",
                   channel: Annotated[str, Query(max_length=MAX_LABEL)] = "") -> Response:
    """Every stored draft template and a form to create or replace one; `?intent=&channel=` opens a stored one
    (else the form starts from the built-in default)."""
    form = {"intent": intent.strip() or ANY, "channel": channel.strip() or ANY, "text": ""}
    stored = next((t for t in assist_service.list_templates(session=session)
                   if (t.intent, t.channel) == (form["intent"], form["channel"])), None)
    form["text"] = stored.text if stored is not None else assist_draft.DEFAULT_TEMPLATE
    return _templates_page(request, session, form=form)


@router.post("/templates")
def save_template(request: Request, session: SessionDep, principal: AdminDep, intent: TemplateScope = "",
                  channel: TemplateScope = "", text: TemplateText = "") -> Response:
    """Create or replace the template of one intent and channel with the body model and service call of
    PUT /v1/assist/templates/{intent}/{channel}: the same checks, version and audit object."""
    form = {"intent": intent, "channel": channel, "text": text.replace("\r\n", "\n")}
    set_audit_object(request, f"assist/templates/{intent.strip() or ANY}/{channel.strip() or ANY}")
    try:
        body = _checked_template(intent, channel, form["text"])
        out = assist_service.put_template(session=session, intent=intent, channel=channel, template_in=body,
                                          by=principal.name)
    except (DeskpilotError, ValidationError) as exc:
        status = status_for(exc) if isinstance(exc, DeskpilotError) else 422
        return _templates_page(request, session, form=form, status_code=status, error=_problem(exc))
    set_audit_object(request, f"assist/templates/{out.intent}/{out.channel}")
    flash(request, f"Draft template {out.intent} / {out.channel} saved as version {out.version}.", "success")
    return redirect(request, "/admin/templates?" + urlencode({"intent": out.intent, "channel": out.channel}))


@router.post("/templates/preview")
def preview_template(request: Request, session: SessionDep, principal: AdminDep, intent: TemplateScope = "",
                     channel: TemplateScope = "", text: TemplateText = "") -> Response:
    """The form's template filled for the sample tickets by assist's draft code; nothing is stored."""
    form = {"intent": intent, "channel": channel, "text": text.replace("\r\n", "\n")}
    try:
        _checked_template(intent or ANY, channel or ANY, form["text"])
    except (DeskpilotError, ValidationError) as exc:
        return _templates_page(request, session, form=form, status_code=422, error=_problem(exc))
    return _templates_page(request, session, form=form, preview=_template_preview(form["text"]))


@router.post("/templates/delete")
def delete_template(request: Request, session: SessionDep, principal: AdminDep,
                    intent: Annotated[str, Form(min_length=1, max_length=MAX_LABEL)],
                    channel: Annotated[str, Form(min_length=1, max_length=MAX_LABEL)]) -> Response:
    """Remove a stored template (DELETE /v1/assist/templates/{intent}/{channel}): drafts fall back to a wider one,
    then the built-in default."""
    set_audit_object(request, f"assist/templates/{intent}/{channel}")
    assist_service.delete_template(session=session, intent=intent, channel=channel)
    flash(request, f"Draft template {intent} / {channel} removed; its drafts now use the next wider template or "
                   "the built-in default.", "success")
    return redirect(request, "/admin/templates")


# ---------------------------------------------------------------- audit log

@router.get("/audit")
def audit_page(
    request: Request, session: SessionDep, principal: AdminDep,
    who: Annotated[str, Query(max_length=128)] = "",
    role: Annotated[str, Query(max_length=32)] = "",
    method: Annotated[str, Query(max_length=8)] = "",
    path_prefix: Annotated[str, Query(max_length=512)] = "",
    status: Annotated[str, Query(max_length=3)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    cursor: Annotated[str, Query(max_length=20)] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    """The audit log with filters, newest first (the query of GET /v1/audit)."""
    def when(value: str, field: str) -> datetime | None:
        if not value:
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{field} must be a date or date-time like 2026-01-31 or 2026-01-31T14:00",
                               field=field) from None

    f = {"who": who, "role": role, "method": method, "path_prefix": path_prefix, "status": status, "since": since,
         "until": until}
    try:
        if status and not status.isdigit():
            raise InvalidInput("status must be an HTTP status like 403", field="status")
        page = query_audit(session=session, who=who or None, role=role or None, method=method or None,
                           path_prefix=path_prefix or None, status=int(status) if status else None,
                           since=when(since, "since"), until=when(until, "until"), cursor=cursor or None,
                           limit=limit)
    except InvalidInput as exc:  # the filters stay on the page with what is wrong
        return render(request, "admin/audit.html", {"page": None, "f": f, "roles": ROLES, "next_url": None,
                                                    "error": exc.message, "methods": AUDIT_METHODS},
                      status_code=422, title="Audit log")
    from urllib.parse import urlencode

    next_url = "/admin/audit?" + urlencode({**{k: v for k, v in f.items() if v}, "cursor": page.next_cursor}) \
        if page.next_cursor else None
    return render(request, "admin/audit.html", {"page": page, "f": f, "roles": ROLES, "next_url": next_url,
                                                "methods": AUDIT_METHODS},
                  title="Audit log")


# ---------------------------------------------------------------- settings and health

def _shown(name: str, value: Any) -> str:
    """A setting as shown to admins: secrets masked, passwords in URLs hidden."""
    if isinstance(value, SecretStr):
        return "•••••• (set)" if value.get_secret_value() else "(not set)"
    if value is None:
        return "(not set)"
    if name.endswith("_url") and isinstance(value, str) and "://" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:  # not an SQLAlchemy URL (e.g. http://): strip any user-info
            head, _, rest = value.partition("://")
            return f"{head}://{rest.split('@', 1)[-1]}"
    return str(value)


@router.get("/settings")
def settings_page(request: Request, principal: AdminDep) -> Response:
    """Every setting with its value (secrets masked), its environment variable and what it does; read-only."""
    settings: Settings = request.app.state.settings
    rows = [{"name": name, "env": f"DESKPILOT_{name.upper()}", "value": _shown(name, getattr(settings, name)),
             "description": field.description or ""} for name, field in type(settings).model_fields.items()]
    return render(request, "admin/settings.html", {"rows": rows}, title="Settings")


@router.get("/health")
async def health_page(request: Request,
                      principal: Annotated[Principal, Depends(web_require(*MODEL_READERS))]) -> Response:
    """Readiness checks (GET /readyz), what is served, the knowledge index, and the drift watch."""
    ready = await health_views.readyz(request)
    body: dict[str, Any] = json.loads(bytes(ready.body))
    drift: dict[str, Any] | None
    try:
        drift = await model_views.models_health(request=request, principal=principal)
    except DeskpilotError as exc:
        drift = {"error": exc.message}
    return render(request, "admin/health.html", {"ready": ready.status_code == 200, "body": body, "drift": drift,
                                                 "state": request.app.state.models}, title="Health")

