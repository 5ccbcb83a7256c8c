"""Knowledge-manager pages: articles with search and filters, an editor with a live (sanitised) preview, versions with
a diff and restore, the review workflow (the reviewer is someone else), knowledge gaps with "write an article for
this gap", and each article's effect on resolution time. Handlers call `knowledge_hub.service` / `.review` and
`assist.gaps` exactly as the JSON routes do."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Annotated, Any

import nh3
from fastapi import Depends, Form, Request, Response
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlmodel import Session

from api.auth import Principal, set_audit_object
from api.deps import get_kb_index, get_session, kb_retriever
from api.limits import heavy
from api.views.assist import GAP_READERS, _read_for_gaps
from api.views.kb import READERS, WRITERS
from api.web.core import NavItem, flash, redirect, render, web_require, web_router
from assist.gaps import knowledge_gaps
from core.errors import InvalidInput
from knowledge_hub import review, service
from knowledge_hub.index import check_body_length
from knowledge_hub.models import ArticleCreate, ArticleStatus, ArticleUpdate

router = web_router(prefix="/knowledge")
NAV = [
    NavItem("Articles", "/knowledge", READERS, "Knowledge"),
    NavItem("Reviews", "/knowledge/reviews", WRITERS, "Knowledge"),
    NavItem("Gaps", "/knowledge/gaps", GAP_READERS, "Knowledge"),
]
HOME = {"knowledge_manager": "/knowledge"}
Reader = Annotated[Principal, Depends(web_require(*READERS))]
Writer = Annotated[Principal, Depends(web_require(*WRITERS))]
GapReader = Annotated[Principal, Depends(web_require(*GAP_READERS))]
SessionDep = Annotated[Session, Depends(get_session)]
GAPS_TTL_S = 600.0  # a computed gap report is reused this long (it runs one retrieval per sampled ticket)

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
ALLOWED_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre", "blockquote",
                "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "img", "del", "s"}


def render_markdown(text: str) -> Markup:
    """Markdown to HTML, sanitised: raw HTML is escaped by the parser, then only safe tags / URL schemes survive."""
    html = _md.render(text or "")
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}, "img": {"src", "alt", "title"},
                                                           "th": {"align"}, "td": {"align"}},
                      url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")
    return Markup(clean)  # noqa: S704 - sanitised by nh3 just above


def _lines(*parts: str) -> list[str]:
    return "\n".join(parts).splitlines()


def diff_html(old: Any, new: Any, *, old_label: str, new_label: str) -> Markup:
    """A unified diff of two article contents (title, tags, intents, body) as HTML lines marked added / removed."""
    def text(a: Any) -> list[str]:
        return _lines(f"# {a.title}", f"tags: {', '.join(a.tags)}", f"intents: {', '.join(a.intents)}", "", a.body)

    out = []
    for line in difflib.unified_diff(text(old), text(new), fromfile=old_label, tofile=new_label, lineterm="", n=3):
        cls = "hunk" if line.startswith(("@@", "---", "+++")) else "add" if line.startswith("+") else \
            "del" if line.startswith("-") else "same"
        out.append(f'<span class="{cls}">{Markup.escape(line) or " "}</span>')
    if not out:
        return Markup('<span class="same">No difference.</span>')
    return Markup("".join(out))  # noqa: S704 - every line escaped above; each line is a block


def _split(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()][:50]


# ----------------------------------------------------------------------------------------------- articles


@router.get("")
def articles_page(request: Request, session: SessionDep, principal: Reader) -> Response:
    """Articles with text search (title, body, tags) and filters by status, intent and tag."""
    q = request.query_params
    status_raw = q.get("status") or None
    try:
        status = ArticleStatus(status_raw) if status_raw else None
    except ValueError:
        raise InvalidInput(f"status must be one of {[s.value for s in ArticleStatus]}", field="status") from None
    intent, tag, text = (q.get("intent") or None), (q.get("tag") or None), (q.get("q") or "").strip()[:200]
    rows = service.list_articles(session=session, status=status, intent=intent, tag=tag, limit=10_000)
    if text:
        words = text.lower().split()
        rows = [a for a in rows if all(w in f"{a.title}\n{a.body}\n{' '.join(a.tags)}".lower() for w in words)]
    everything = service.list_articles(session=session, limit=10_000)
    pending = {r.article_id: r for r in review.list_reviews(session=session)} if principal.allowed(WRITERS) else {}
    return render(request, "knowledge/articles.html", {
        "rows": rows, "q": text, "status": status_raw or "", "intent": intent or "", "tag": tag or "",
        "statuses": [s.value for s in ArticleStatus],
        "intents": sorted({i for a in everything for i in a.intents}), "tags": sorted({t for a in everything for t in a.tags}),
        "pending": pending, "can_write": principal.allowed(WRITERS),
    }, title="Knowledge articles")


@router.get("/articles/{article_id}")
def article_page(request: Request, article_id: int, session: SessionDep, principal: Reader) -> Response:
    """One article rendered, its versions, its open review and its effect on resolution time (when known)."""
    art = service.get(session=session, article_id=article_id)
    versions = service.list_versions(session=session, article_id=article_id)
    can_write = principal.allowed(WRITERS)
    reviews = review.list_reviews(session=session, state=None, article_id=article_id, limit=20) if can_write else []
    usage = None
    cached = _cached_gaps(request)
    if cached is not None:
        usage = next((u for u in cached.report.articles if u.article_id == article_id), None)
    return render(request, "knowledge/article.html", {
        "a": art, "html": render_markdown(art.body), "versions": list(reversed(versions)), "reviews": reviews,
        "open": next((r for r in reviews if r.state == review.ReviewState.pending), None), "can_write": can_write,
        "usage": usage, "gaps_at": cached.at if cached else None,
    }, title=art.title)


@router.get("/new")
def new_page(request: Request, principal: Writer) -> Response:
    """The editor for a new draft; `?gap=TOPIC` prefills it from that knowledge gap's example tickets."""
    prefill: dict[str, Any] = {"title": "", "body": "", "tags": "", "intents": ""}
    topic = (request.query_params.get("gap") or "").strip()[:200]
    if topic:
        gap = _gap_topic(request, topic)
        examples = "\n".join(f"> **{e.case_id}**: {e.text.strip()[:300]}\n" for e in gap.examples) if gap else ""
        prefill = {
            "title": f"How to resolve: {topic}", "tags": "", "intents": topic,
            "body": (f"## When this applies\n\nCustomers asking about **{topic}**"
                     + (f" ({gap.cases:,} cases, {gap.hours_share:.0%} of support hours, {gap.coverage:.0%} covered "
                        f"by the knowledge base today)" if gap else "") + ".\n\n"
                     + (f"## What customers wrote\n\n{examples}\n" if examples else "")
                     + "## Steps\n\n1. \n2. \n3. \n\n## Reply to the customer\n\n"),
        }
    return render(request, "knowledge/edit.html", {"a": None, "f": prefill, "html": render_markdown(prefill["body"]),
                                                   "gap": topic}, title="New article")


@router.post("/new")
def create_article(request: Request, session: SessionDep, principal: Writer,
                   index: Annotated[Any, Depends(get_kb_index)],
                   title: Annotated[str, Form(max_length=500)], body: Annotated[str, Form(max_length=200_000)] = "",
                   tags: Annotated[str, Form(max_length=2000)] = "",
                   intents: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Store a new draft (the same service call as POST /v1/kb/articles)."""
    if not title.strip():
        raise InvalidInput("the article needs a title", field="title")
    art = service.create(session=session, index=index, author=principal.name, article_in=ArticleCreate(
        title=title.strip(), body=body, tags=_split(tags), intents=_split(intents), status=ArticleStatus.draft))
    set_audit_object(request, art.id)
    flash(request, f"Draft “{art.title}” saved as version {art.version}.", "success")
    return redirect(request, f"/knowledge/articles/{art.id}")


@router.get("/articles/{article_id}/edit")
def edit_page(request: Request, article_id: int, session: SessionDep, principal: Writer) -> Response:
    """The editor with a live preview; a published article's edit becomes a proposal for review."""
    art = service.get(session=session, article_id=article_id)
    f = {"title": art.title, "body": art.body, "tags": ", ".join(art.tags), "intents": ", ".join(art.intents)}
    return render(request, "knowledge/edit.html", {"a": art, "f": f, "html": render_markdown(art.body), "gap": ""},
                  title=f"Edit {art.title}")


@router.post("/articles/{article_id}/edit")
def save_edit(request: Request, article_id: int, session: SessionDep, principal: Writer,
              index: Annotated[Any, Depends(get_kb_index)],
              title: Annotated[str, Form(max_length=500)], version: Annotated[int, Form(ge=1)],
              body: Annotated[str, Form(max_length=200_000)] = "", tags: Annotated[str, Form(max_length=2000)] = "",
              intents: Annotated[str, Form(max_length=2000)] = "",
              note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Save a draft as a new version, or propose the change to a published article for review."""
    check_body_length(body, limit=request.app.state.settings.kb_max_body_chars)
    art = service.get(session=session, article_id=article_id)
    changes = ArticleUpdate(title=title.strip(), body=body, tags=_split(tags), intents=_split(intents))
    set_audit_object(request, article_id)
    if art.status == ArticleStatus.published:
        if art.version != version:
            raise InvalidInput(f"the article moved on to version {art.version} while you edited version {version}; "
                               "open the editor again", field="version")
        r = review.submit(session=session, article_id=article_id, by=principal.name, note=note, changes=changes)
        flash(request, f"Change proposed for review (review {r.id}); the published text stays live until another "
                       "knowledge manager approves it.", "success")
    else:
        out = service.update(session=session, index=index, article_id=article_id, article_in=changes,
                             author=principal.name, expected_version=version)
        flash(request, f"Saved as version {out.version}.", "success")
    return redirect(request, f"/knowledge/articles/{article_id}")


@router.post("/preview")
def preview(request: Request, principal: Writer, body: Annotated[str, Form(max_length=200_000)] = "") -> Response:
    """The editor's live preview: the markdown rendered and sanitised on the server (htmx posts it as you type)."""
    return render(request, "knowledge/_preview.html", {"html": render_markdown(body)})


@router.post("/articles/{article_id}/submit")
def submit_review(request: Request, article_id: int, session: SessionDep, principal: Writer,
                  note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Submit a draft for review (another knowledge manager publishes it)."""
    r = review.submit(session=session, article_id=article_id, by=principal.name, note=note)
    set_audit_object(request, f"{article_id}/review/{r.id}")
    flash(request, "Submitted for review: another knowledge manager can now publish it.", "success")
    return redirect(request, f"/knowledge/articles/{article_id}")


# ------------------------------------------------------------------------------------------ versions, diffs


@router.get("/articles/{article_id}/versions/{version}")
def version_page(request: Request, article_id: int, version: int, session: SessionDep, principal: Reader) -> Response:
    """One stored version: its text and the diff against another version (the current one by default)."""
    art = service.get(session=session, article_id=article_id)
    versions = {v.version: v for v in service.list_versions(session=session, article_id=article_id)}
    if version not in versions:
        raise InvalidInput(f"article {article_id} has no version {version}; it has {sorted(versions)}", field="version")
    against_raw = request.query_params.get("against") or str(art.version)
    if not against_raw.isdigit() or int(against_raw) not in versions:
        raise InvalidInput(f"against must be one of the versions {sorted(versions)}", field="against")
    against = int(against_raw)
    v, w = versions[version], versions[against]
    return render(request, "knowledge/version.html", {
        "a": art, "v": v, "w": w, "versions": sorted(versions), "html": render_markdown(v.body),
        "diff": diff_html(v, w, old_label=f"version {version}", new_label=f"version {against}"),
        "can_write": principal.allowed(WRITERS),
    }, title=f"{art.title} · version {version}")


@router.post("/articles/{article_id}/versions/{version}/restore")
def restore(request: Request, article_id: int, version: int, session: SessionDep, principal: Writer,
            index: Annotated[Any, Depends(get_kb_index)]) -> Response:
    """Restore an old version: at once for a draft; as a proposal for review for a published article."""
    art = service.get(session=session, article_id=article_id)
    set_audit_object(request, f"{article_id}/versions/{version}")
    if art.status == ArticleStatus.published:
        r = review.propose_restore(session=session, article_id=article_id, version=version, by=principal.name)
        flash(request, f"Restoring version {version} is proposed for review (review {r.id}).", "success")
    else:
        out = service.restore_version(session=session, index=index, article_id=article_id, version=version,
                                      author=principal.name)
        flash(request, f"Version {version} restored as version {out.version}.", "success")
    return redirect(request, f"/knowledge/articles/{article_id}")


# -------------------------------------------------------------------------------------------------- reviews


@router.get("/reviews")
def reviews_page(request: Request, session: SessionDep, principal: Writer) -> Response:
    """Reviews waiting for a decision, and the latest decided ones."""
    pending = review.list_reviews(session=session)
    decided = [r for r in review.list_reviews(session=session, state=None, limit=60) if r.state != "pending"][:30]
    return render(request, "knowledge/reviews.html", {"pending": pending, "decided": decided, "me": principal.name},
                  title="Reviews")


@router.get("/reviews/{review_id}")
def review_page(request: Request, review_id: int, session: SessionDep, principal: Writer) -> Response:
    """A review: what would change (diff against the live article or the last published version) and the decision."""
    r = review.get_review(session=session, review_id=review_id)
    art = service.get(session=session, article_id=r.article_id)
    versions = service.list_versions(session=session, article_id=r.article_id)
    base = next((v for v in versions if v.version == r.base_version), art)
    published = [v for v in versions if v.status == ArticleStatus.published and v.version < r.base_version]
    before = base if r.kind == review.ReviewKind.revision else (published[-1] if published else None)
    diff = diff_html(before or _Blank(), r, old_label=(f"version {before.version}" if before else "(not published)"),
                     new_label="proposed")
    return render(request, "knowledge/review.html", {
        "r": r, "a": art, "diff": diff, "html": render_markdown(r.body), "me": principal.name,
        "own": principal.name in (r.submitted_by, r.author),
    }, title=f"Review {review_id}")


@dataclass
class _Blank:
    title: str = ""
    body: str = ""
    tags: tuple[str, ...] = ()
    intents: tuple[str, ...] = ()


@router.post("/reviews/{review_id}/{decision}")
def decide(request: Request, review_id: int, decision: str, session: SessionDep, principal: Writer,
           index: Annotated[Any, Depends(get_kb_index)],
           comment: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Approve, reject (with a comment) or withdraw a review: the same service calls as /v1/kb/reviews/…"""
    set_audit_object(request, f"review/{review_id}/{decision}")
    if decision == "approve":
        art = review.approve(session=session, index=index, review_id=review_id, by=principal.name, comment=comment)
        flash(request, f"Approved: “{art.title}” is published at version {art.version}.", "success")
        return redirect(request, f"/knowledge/articles/{art.id}")
    if decision == "reject":
        r = review.reject(session=session, review_id=review_id, by=principal.name, comment=comment)
        flash(request, "Sent back to the author with your comment.", "success")
    elif decision == "withdraw":
        r = review.withdraw(session=session, review_id=review_id, by=principal.name)
        flash(request, "Review withdrawn.", "success")
    else:
        raise InvalidInput("decision must be approve, reject or withdraw", field="decision")
    return redirect(request, f"/knowledge/articles/{r.article_id}")


# ----------------------------------------------------------------------------------------------------- gaps


@dataclass
class _Gaps:
    at: float
    report: Any


def _cached_gaps(request: Request) -> _Gaps | None:
    cached: _Gaps | None = getattr(request.app.state, "web_gaps", None)
    if cached is not None and time.time() - cached.at < GAPS_TTL_S:
        return cached
    return None


def _compute_gaps(request: Request, *, refresh: bool = False) -> _Gaps:
    cached = None if refresh else _cached_gaps(request)
    if cached is not None:
        return cached
    index = request.app.state.kb_index
    if index is None:
        from core.errors import IndexUnavailable

        raise IndexUnavailable(f"the knowledge-base index is not available: {request.app.state.kb_index_error}")
    log, frame, catalog, used = _read_for_gaps(request.app.state.engine)
    report = knowledge_gaps(log=log, tickets=frame, retriever=kb_retriever(request, index), catalog=catalog,
                            used=used)
    out = _Gaps(at=time.time(), report=report)
    request.app.state.web_gaps = out
    return out


def _gap_topic(request: Request, topic: str) -> Any:
    for g in _compute_gaps(request).report.topics:
        if g.topic == topic:
            return g
    return None


@router.get("/gaps")
def gaps_page(request: Request, principal: GapReader,
              _slot: Annotated[None, Depends(heavy("knowledge gaps"))]) -> Response:
    """Topics the knowledge base does not answer, ranked by the support hours they cost, and each article's effect
    on resolution time (the same computation as GET /v1/insights/gaps)."""
    gaps = _compute_gaps(request, refresh=request.query_params.get("refresh") == "1")
    return render(request, "knowledge/gaps.html", {"g": gaps.report, "at": time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(gaps.at)), "can_write": principal.allowed(WRITERS)},
        title="Knowledge gaps")
