"""Agent pages: the triage queue (tickets the router left to people), claims, the one-action triage (team + intent =
the feedback endpoint's service function), and the ticket page with decision, similar tickets, assist and timeline.

Roles are the JSON routes' own: reading a ticket is `api.views.tickets.READERS`, triage feedback and claims are
`FEEDBACK`, assist and its thumbs are `api.views.assist.AGENTS`, sending the reply to the helpdesk is `REPLIERS`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import Depends, Form, Path, Query, Request, Response
from sqlmodel import Session

from api.auth import Principal, set_audit_object
from api.deps import TicketId, get_session
from api.limits import heavy
from api.views.assist import AGENTS, AssistRequest, _assist, _read_for_assist
from api.views.tickets import FEEDBACK, READERS, REPLIERS, send_reply
from api.web.core import NavItem, flash, redirect, render, web_require, web_router
from api.webhooks import REPLY_MAX_CHARS, ReplyIn, ReplyPublic, TicketReply, list_replies
from assist import service as assist_service
from assist.models import AssistFeedback, AssistFeedbackIn, AssistResult
from core.errors import InvalidInput, NotFound
from routing import queue as queue_service
from routing import service
from routing.models import MAX_LABEL, FeedbackIn, QueueFilter, TicketPublic, has_text
from routing.redaction import redact_fields

router = web_router(prefix="/agent")
NAV = [NavItem("Triage queue", "/agent/queue", READERS, "Agent")]
HOME = {"agent": "/agent/queue", "helpdesk": "/agent/queue"}

SessionDep = Annotated[Session, Depends(get_session)]
AGES = {"4h": 4.0, "24h": 24.0, "7d": 168.0, "30d": 720.0}
ASSIST_CACHE_TICKETS = 512  # tickets whose suggestions the panel keeps (least recently opened dropped first)
AGE_LABELS = [("all", "Any age"), ("4h", "Last 4 hours"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"),
              ("30d", "Last 30 days")]


def _known(request: Request) -> dict[str, list[str]]:
    """Teams and intents feedback may name (the live models' classes plus declared labels), sorted."""
    from api.retrain import known_labels

    return {k: sorted(v) for k, v in known_labels(request.app).items()}


def _safe_back(target: str | None, default: str) -> str:
    return target if target and target.startswith("/agent/") and not target.startswith("//") else default


@router.get("/queue")
def queue(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*READERS))],
    decision: Annotated[Literal["all", "triage", "suggest"], Query()] = "all",
    team: Annotated[str, Query(max_length=MAX_LABEL)] = "",
    intent: Annotated[str, Query(max_length=MAX_LABEL)] = "",
    age: Annotated[Literal["all", "4h", "24h", "7d", "30d"], Query()] = "all",
    claimed: Annotated[Literal["any", "unclaimed", "mine"], Query()] = "any",
    handled: Annotated[bool, Query()] = False,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    """The triage queue with its filters; htmx swaps only the results when a filter changes."""
    per_page = 50
    f = QueueFilter(decisions=["triage", "suggest"] if decision == "all" else [decision], team=team or None,
                    intent=intent or None, max_age_hours=AGES.get(age), claimed=claimed, include_handled=handled,
                    limit=per_page, offset=(page - 1) * per_page)
    result = queue_service.list_queue(session=session, queue_filter=f, by=principal.name)
    params = {"decision": decision, "team": team, "intent": intent, "age": age, "claimed": claimed,
              "handled": handled}
    return render(request, "agent/queue.html", {
        "result": result, "f": params, "known": _known(request), "ages": AGE_LABELS, "page": page,
        "pages": max(1, -(-result.total // per_page)), "can_claim": principal.allowed(FEEDBACK),
        "me": principal.name,
    }, title="Triage queue")


def _claim_response(request: Request, session: Session, ticket_id: str, back: str | None, message: str) -> Response:
    if request.headers.get("hx-request") and request.headers.get("hx-target", "").startswith("claim-"):
        claim = queue_service.get_claim(session=session, ticket_id=ticket_id)
        return render(request, "agent/_claim.html", {"ticket_id": ticket_id, "claim": claim,
                                                      "me": request.state.principal.name, "can_claim": True,
                                                      "back": back})
    flash(request, message, "success")
    return redirect(request, _safe_back(back, f"/agent/tickets/{ticket_id}"))


@router.post("/tickets/{ticket_id}/claim")
def claim(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*FEEDBACK))],
    back: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Claim a ticket (409 page if someone else holds it)."""
    set_audit_object(request, ticket_id)
    queue_service.claim_ticket(session=session, ticket_id=ticket_id, by=principal.name)
    return _claim_response(request, session, ticket_id, back, f"You claimed {ticket_id}.")


@router.post("/tickets/{ticket_id}/release")
def release(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*FEEDBACK))],
    back: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Release one's claim (an admin may release anyone's)."""
    set_audit_object(request, ticket_id)
    queue_service.release_ticket(session=session, ticket_id=ticket_id, by=principal.name, force=principal.role == "admin")
    return _claim_response(request, session, ticket_id, back, f"You released {ticket_id}.")


@router.post("/tickets/{ticket_id}/triage")
def triage(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*FEEDBACK))],
    team: Annotated[str, Form(max_length=MAX_LABEL)] = "",
    intent: Annotated[str, Form(max_length=MAX_LABEL)] = "",
    decision_id: Annotated[int | None, Form(ge=1)] = None,
    comment: Annotated[str, Form(max_length=4000)] = "",
    back: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Set the team and intent in one action: the feedback of POST /v1/tickets/{id}/feedback (same checks)."""
    from api.retrain import known_labels

    if not team and not intent:
        raise InvalidInput("choose a team or an intent", field="team")
    current = service.get_ticket(session=session, ticket_id=ticket_id)
    dec = current.current_decision
    fb = FeedbackIn(decision_id=decision_id, corrected_team=team or None, corrected_intent=intent or None,
                    accepted=[f"team:{team}"] if dec and team and dec.result.team == team else [],
                    comment=comment or None)
    out = service.add_feedback(session=session, ticket_id=ticket_id, feedback_in=fb, by=principal.name,
                               known=known_labels(request.app), store_raw=request.app.state.settings.store_raw_text)
    set_audit_object(request, f"{ticket_id}/feedback/{out.id}")
    what = ", ".join(x for x in (f"team {team}" if team else "", f"intent {intent}" if intent else "") if x)
    flash(request, f"{ticket_id}: {what} saved.", "success")
    return redirect(request, _safe_back(back, "/agent/queue"))


def _timeline(ticket: TicketPublic) -> list[dict[str, Any]]:
    """Events and decisions in time order; a re-triage shows the decision it made."""
    items: list[dict[str, Any]] = []
    by_id = {d.decision_id: d for d in ticket.decisions}
    for d in ticket.decisions:
        if d.trigger != "event":
            items.append({"at": d.created_at, "kind": "decision", "decision": d})
    for e in ticket.events:
        items.append({"at": e.timestamp, "kind": "event", "event": e,
                      "decision": by_id.get(e.decision_id) if e.decision_id else None})
    for fb in ticket.feedback:
        items.append({"at": fb.created_at, "kind": "feedback", "feedback": fb})
    return sorted(items, key=lambda i: i["at"])


@router.get("/tickets/{ticket_id}")
def ticket_page(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*READERS))],
) -> Response:
    """The ticket: text, current decision and reasons, similar tickets, triage form, assist panel, timeline."""
    ticket = service.get_ticket(session=session, ticket_id=ticket_id)
    claim = queue_service.get_claim(session=session, ticket_id=ticket_id)
    return render(request, "agent/ticket.html", {
        "t": ticket, "d": ticket.current_decision, "claim": claim, "timeline": _timeline(ticket),
        "known": _known(request), "can_triage": principal.allowed(FEEDBACK), "can_assist": principal.allowed(AGENTS),
        "me": principal.name, "retriages": sum(1 for d in ticket.decisions if d.trigger == "event"),
        "replies": [reply_view(r) for r in list_replies(session=session, ticket_id=ticket_id)],
    }, title=f"Ticket {ticket_id}")


class _AssistCache:
    """The panel's assist results, kept per ticket and keyed by everything assist reads: the stored ticket (text,
    events, decisions, feedback), the loaded model set, the knowledge index snapshot, the published catalog, agents'
    verdicts so far and the draft template. Any change is a new key, so a cached result is exactly what assist would
    compute now; re-opening a ticket (or coming back to it) skips the embedding and the models."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, Any, Any, AssistResult]] = OrderedDict()

    @staticmethod
    def key(request: Request, ticket_id: str) -> tuple[str, Any, Any, Any]:
        """(digest of the stored inputs, model state, index snapshot, the stored inputs); state and snapshot are
        compared by identity, and the stored inputs are what a miss computes from (one read per open)."""
        state = request.app.state.models
        index = request.app.state.kb_index
        stored = _read_for_assist(request.app.state.engine, ticket_id, index is not None)
        snapshot = index.snapshot() if index is not None else None
        catalog = stored.catalog.entries if stored.catalog is not None else None
        parts = [stored.ticket.model_dump_json(), repr(catalog), repr(stored.feedback),
                 stored.template.model_dump_json() if stored.template is not None else ""]
        digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
        return digest, state, snapshot, stored

    def get(self, request: Request, ticket_id: str) -> AssistResult:
        """The cached result when nothing it depends on changed, else a fresh one (then kept)."""
        digest, state, snapshot, stored = self.key(request, ticket_id)
        with self._lock:
            hit = self._items.get(ticket_id)
            if hit is not None and hit[0] == digest and hit[1] is state and hit[2] is snapshot:
                self._items.move_to_end(ticket_id)
                return hit[3]
        result = _assist(request, ticket_id, AssistRequest(), stored=stored, state=state)
        with self._lock:
            self._items[ticket_id] = (digest, state, snapshot, result)  # read only: pages only render it
            self._items.move_to_end(ticket_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return result


_CACHE_LOCK = threading.Lock()


def _assist_cache(request: Request) -> _AssistCache:
    state = request.app.state
    with _CACHE_LOCK:
        cache = getattr(state, "web_assist_cache", None)
        if cache is None:
            cache = state.web_assist_cache = _AssistCache(ASSIST_CACHE_TICKETS)
    return cache  # type: ignore[no-any-return]


@router.get("/tickets/{ticket_id}/assist")
def assist_panel(
    ticket_id: TicketId,
    request: Request,
    principal: Annotated[Principal, Depends(web_require(*AGENTS))],
    _slot: Annotated[None, Depends(heavy("assist"))],
) -> Response:
    """Next-best actions with their supporting passages, the articles and the draft reply (GET /v1/.../assist);
    computed once per state of the ticket, the models and the knowledge hub (`_AssistCache`)."""
    result = _assist_cache(request).get(request, ticket_id)
    fragment = bool(request.headers.get("hx-request"))
    return render(request, "agent/assist.html", {"a": result, "ticket_id": ticket_id, "fragment": fragment,
                                                  "reply_key": secrets.token_urlsafe(16)},
                  title=f"Suggestions for {ticket_id}")


@router.post("/tickets/{ticket_id}/assist/feedback")
def assist_feedback(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*AGENTS))],
    kind: Annotated[Literal["action", "article", "draft"], Form()],
    suggestion: Annotated[str, Form(min_length=1, max_length=MAX_LABEL)],
    verdict: Annotated[Literal["accepted", "edited", "rejected"], Form()],
    article_id: Annotated[int | None, Form(ge=1)] = None,
    article_version: Annotated[int | None, Form(ge=1)] = None,
    rank: Annotated[int | None, Form(ge=1)] = None,
    text: Annotated[str | None, Form(max_length=20_000)] = None,
) -> Response:
    """A thumb on one suggestion: the assist feedback of POST /v1/tickets/{id}/assist/feedback (an edit's text is
    redacted as there). Sending the reply is `send_reply`."""
    fb = AssistFeedbackIn(kind=kind, suggestion=suggestion, verdict=verdict, article_id=article_id,
                          article_version=article_version, rank=rank,
                          edited_text=text if verdict == "edited" else None)
    if not request.app.state.settings.store_raw_text:
        fb = redact_fields(fb, ("edited_text", "comment"))
    service.get_ticket(session=session, ticket_id=ticket_id)  # 404 for an unknown ticket, as the JSON route
    out = assist_service.record_feedback(session=session, ticket_id=ticket_id, feedback_in=fb, by=principal.name)
    set_audit_object(request, f"{ticket_id}/assist/feedback/{out.id}")
    message = {"accepted": "Marked helpful.", "rejected": "Marked not helpful.", "edited": "Edit recorded."}[verdict]
    if request.headers.get("hx-request"):
        return render(request, "agent/_thanks.html", {"message": message})
    flash(request, message, "success")
    return redirect(request, f"/agent/tickets/{ticket_id}")


def reply_view(reply: ReplyPublic) -> dict[str, Any]:
    """What the page says about a sent reply: a headline for its state and a line per target."""
    headline = {
        "delivered": "Sent to the helpdesk: delivered.",
        "pending": "Sent to the helpdesk: delivering…",
        "failed": "Sent to the helpdesk, but a delivery failed.",
        "not_sent": "Saved, not sent: no webhook takes replies and this ticket has no helpdesk write-back.",
    }[reply.state]
    lines = []
    for d in reply.deliveries:
        if d.target.startswith("sub:"):
            where = f"Webhook subscriber {d.target[4:]}"
        else:
            where = f"{d.target.capitalize()} ticket {reply.external_id}"
        status = {"delivered": "delivered", "pending": "waiting" if not d.attempts else f"retrying after "
                  f"{d.attempts} attempt{'s' if d.attempts != 1 else ''}", "failed": "failed"}.get(d.status, d.status)
        lines.append({"where": where, "status": d.status, "text": status, "error": d.last_error})
    return {"r": reply, "headline": headline, "lines": lines}


@router.post("/tickets/{ticket_id}/reply")
def send_reply_form(
    ticket_id: TicketId,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*REPLIERS))],
    text: Annotated[str, Form(min_length=1, max_length=REPLY_MAX_CHARS)],
    original: Annotated[str | None, Form(max_length=REPLY_MAX_CHARS)] = None,
    suggestion: Annotated[str, Form(min_length=1, max_length=MAX_LABEL)] = "draft",
    article_id: Annotated[int | None, Form(ge=1, le=2**53)] = None,
    article_version: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
    reply_key: Annotated[str | None, Form(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")] = None,
) -> Response:
    """Send the (possibly edited) draft to the helpdesk: POST /v1/tickets/{id}/reply, with the draft's assist
    feedback (accepted as drafted, or edited) in the same transaction. `reply_key` (new on every render of the
    form) makes a second click on the same form send nothing twice."""
    text = text.replace("\r\n", "\n")  # a browser sends a textarea's line breaks as CR LF
    if not has_text(text):
        raise InvalidInput("the reply is empty: write it before sending", field="text")
    edited = None if original is None else text.strip() != original.replace("\r\n", "\n").strip()

    def draft_feedback(reply: TicketReply) -> list[Any]:
        if edited is None or article_id is None:
            return []  # not from a grounded draft: nothing to learn about the draft
        fb = AssistFeedbackIn(kind="draft", suggestion=suggestion, verdict="edited" if edited else "accepted",
                              article_id=article_id, article_version=article_version,
                              edited_text=reply.text if edited else None)
        return [AssistFeedback(ticket_id=ticket_id, by=principal.name, **fb.model_dump())]

    out = send_reply(request, session, ticket_id, ReplyIn(text=text, article_id=article_id, edited=edited),
                     principal.name, reply_key, also=draft_feedback)
    if request.headers.get("hx-request"):
        return render(request, "agent/_reply.html", {**reply_view(out), "ticket_id": ticket_id, "sent": True,
                                                     "new_key": secrets.token_urlsafe(16)})
    flash(request, reply_view(out)["headline"], "success" if out.state != "failed" else "error")
    return redirect(request, f"/agent/tickets/{ticket_id}#replies")


@router.get("/tickets/{ticket_id}/replies/{reply_id}")
def reply_state_fragment(
    ticket_id: TicketId,
    reply_id: Annotated[int, Path(ge=1, le=2**53)],
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(web_require(*READERS))],
) -> Response:
    """One sent reply's delivery state (what the page polls while a delivery is pending)."""
    found = list_replies(session=session, ticket_id=ticket_id, reply_id=reply_id)
    if not found:
        raise NotFound(f"ticket {ticket_id} has no reply {reply_id}")
    if not request.headers.get("hx-request"):
        return redirect(request, f"/agent/tickets/{ticket_id}#replies")
    return render(request, "agent/_reply.html", {**reply_view(found[0]), "ticket_id": ticket_id})
