"""`deskpilot kb ...`: import, export, check/repair, reindex and search the knowledge hub.

One writer for an embedded index (knowledge_hub.ownership): when a server holds this home's index, the commands that
touch the index send their work to that server's API (found through HOME/serve.json, authenticated with a short-lived
key the command creates in the shared database and revokes when it ends). Otherwise the command holds the index
itself while it runs; a server starting meanwhile opens the index once the command lets go, and a second command
waits for the first.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.settings import Settings, get_settings
from core.errors import DeskpilotError, IndexUnavailable, InvalidInput

kb_app = typer.Typer(help="Knowledge hub: articles in SQL, the chroma index, hybrid search.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

# Articles per request when a running server does the import (the progress bar moves once per request).
SERVER_BATCH = 64

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


class RemoteError(DeskpilotError):
    """The server refused a request; `code` is the server's error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def _engine(settings: Settings) -> Any:
    """Engine with the knowledge-hub tables, on a database this home belongs to (knowledge_hub.identity)."""
    from sqlmodel import SQLModel

    from api.app import make_engine
    from knowledge_hub.identity import bind_home
    from knowledge_hub.models import Article, ArticleVersion

    if settings.database_url is None or settings.chroma_url is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
        bind_home(engine=engine, home=settings.home)
    except BaseException:
        engine.dispose()
        raise
    return engine


class ServerClient:
    """The API of the server that holds the index, with a key of this command's own (revoked by `close`)."""

    def __init__(self, url: str, engine: Any, holder: Any) -> None:
        import httpx
        from sqlmodel import Session

        from api.auth import create_key

        self.url, self.engine, self.holder = url, engine, holder
        self.key_name = f"deskpilot-kb-cli-{os.getpid()}-{secrets.token_hex(3)}"
        with Session(engine) as session:
            key = create_key(session=session, name=self.key_name, role="knowledge_manager")
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key.secret}"},
                                 timeout=httpx.Timeout(900.0, connect=10.0))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the server's error (or its silence) becomes a DeskpilotError naming it."""
        import httpx

        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise IndexUnavailable(f"{self.holder.describe()} holds the index but {self.url} does not answer "
                                   f"({type(exc).__name__}: {exc})") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                detail, code = str(body.get("detail")), str(body.get("code") or "http_error")
            except ValueError:
                detail, code = r.text[:300], "http_error"
            raise RemoteError(f"the server at {self.url} answered {r.status_code}: {detail}", code=code)
        return r.json() if r.content else None

    def close(self) -> None:
        """Revoke this command's key and close the connection."""
        from sqlmodel import Session

        from api.auth import revoke_key

        self.http.close()
        with Session(self.engine) as session:
            revoke_key(session=session, name=self.key_name)


@dataclass
class Hub:
    """Where a command's index work goes: the index this process holds, or the server holding it."""

    engine: Any
    index: Any = None
    server: ServerClient | None = None


@contextmanager
def _hub(settings: Settings) -> Iterator[Hub]:
    """Open the index for this command, or connect to the server that holds it; let go afterwards."""
    from knowledge_hub.index import kb_embedder, open_index
    from knowledge_hub.ownership import IndexBusy, server_url, wait_and_acquire

    engine = _engine(settings)
    hub = Hub(engine=engine)
    try:
        embedder = kb_embedder(settings)
        if settings.chroma_url:  # a chroma server is shared safely by every process
            hub.index = open_index(settings=settings, embedder=embedder)
        else:
            try:
                lease = wait_and_acquire(
                    settings.chroma_path, role="cli",
                    stop_if=lambda h: h is not None and h.role == "server",
                    on_wait=lambda h: err_console.print(f"waiting for {h.describe() if h else 'another process'} "
                                                        "to finish with the index ..."))
            except IndexBusy as busy:
                url = server_url(settings.home, busy.holder) if busy.holder is not None else None
                if url is None:
                    raise IndexUnavailable(f"{busy}, whose address is unknown (no {settings.home / 'serve.json'} "
                                           "from it): run this through its API, or stop it first") from None
                hub.server = ServerClient(url, engine, busy.holder)
            else:
                with lease:  # held until open_index holds it too
                    hub.index = open_index(settings=settings, embedder=embedder, role="cli")
        yield hub
    finally:
        if hub.index is not None:
            hub.index.close()
        if hub.server is not None:
            hub.server.close()
        engine.dispose()


@contextmanager
def _progress(total: int, label: str, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error (none with --quiet or when it is not a terminal); yields `advance(n)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    show = not quiet and total > 0 and err_console.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=not show, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _as_report(data: dict[str, Any]) -> Any:
    rep = SimpleNamespace(**{"altered": [], **data})
    rep.model_mismatch = rep.stored_model is not None and rep.stored_model != rep.current_model
    return rep


def _report(rep: Any) -> None:
    console.print(f"published in SQL: {rep.published}; index model: {rep.stored_model} (current {rep.current_model})")
    for name in ("missing", "outdated", "altered", "orphaned", "flagged"):
        ids = getattr(rep, name)
        console.print(f"  {name:<9} {len(ids):>5}  {ids[:20]}{' ...' if len(ids) > 20 else ''}")
    if rep.model_mismatch:
        console.print("  [yellow]embedding model changed: run `deskpilot kb reindex`[/yellow]")
    console.print("[green]index consistent with SQL[/green]" if rep.ok else "[yellow]index differs from SQL[/yellow]")


def _server_batches(records: list[tuple[Any, str | None]], *, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """The records as JSON objects in requests of at most SERVER_BATCH articles and about half the body limit."""
    batch: list[dict[str, Any]] = []
    size = 0
    for i, (article_in, author) in enumerate(records):
        item = article_in.model_dump(mode="json") | ({"author": author} if author else {})
        n = len(json.dumps(item).encode()) + 2
        if n > max_bytes - 64:
            raise InvalidInput(f"article {i} ({article_in.title[:60]!r}) is {n:,} bytes as JSON, over the server's "
                               f"request limit of {max_bytes:,} (DESKPILOT_MAX_BODY_BYTES)", field="body")
        if batch and (len(batch) >= SERVER_BATCH or size + n > max_bytes // 2):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


@kb_app.command("import")
@boundary
def import_cmd(
    path: Annotated[Path, typer.Argument(help="Folder of .md files with front matter, a .json, a .csv, "
                                               "or ABCD guidelines.json")],
    author: Annotated[str, typer.Option(help="Author recorded when a record has none.")] = "import",
    quiet: QuietOpt = False,
) -> None:
    """Import articles (published ones are indexed as they are stored; through the server when one runs)."""
    from api.audit import audited_session
    from knowledge_hub.importexport import import_path, read_any
    from knowledge_hub.index import check_body_length
    from knowledge_hub.models import ArticleStatus

    settings = get_settings()
    records = read_any(path)  # a bad file is refused before the database and the index are opened
    for i, (article_in, _) in enumerate(records):
        check_body_length(article_in.body, limit=settings.kb_max_body_chars,
                          where=f"file {path}, article {i} ({article_in.title[:60]!r})")
    with _hub(settings) as hub:
        if hub.server is not None:
            created: list[int] = []
            stale: list[int] = []
            with _progress(len(records), "importing", quiet=quiet) as advance:
                for batch in _server_batches(records, max_bytes=settings.max_body_bytes):
                    out = hub.server.call("POST", "/v1/kb/import", json={"articles": batch})
                    created += out["created"]
                    stale += out["index_stale"]
                    advance(len(batch))
            where = f" through the server at {hub.server.url}"
        else:
            published = sum(1 for a, _ in records if a.status == ArticleStatus.published)
            with _progress(published, "embedding", quiet=quiet) as advance, \
                    audited_session(hub.engine, action="kb import", object_id=str(path)) as session:
                # the first commit of the import stores its audit row, in the same transaction
                res = import_path(session=session, index=hub.index, path=path, author=author, records=records,
                                  progress=advance)
            created, stale, where = res.created, res.stale, ""
    typer.echo(f"imported {len(created)} articles from {path}{where}"
               + (f"; {len(stale)} index-stale (run `deskpilot kb check --repair`)" if stale else ""))


@kb_app.command("export")
@boundary
def export_cmd(directory: Annotated[Path, typer.Argument(help="Output folder")]) -> None:
    """Export every article as Markdown files, articles.json and articles.csv (from SQL; the index is not needed)."""
    from sqlmodel import Session

    from knowledge_hub.importexport import export_all

    engine = _engine(get_settings())
    try:
        with Session(engine) as session:
            out = export_all(session=session, folder=directory)
    finally:
        engine.dispose()
    for kind, p in out.items():
        console.print(f"{kind:<8} {p}")


@kb_app.command("check")
@boundary
def check_cmd(
    repair: Annotated[bool, typer.Option("--repair", help="Fix the index from SQL.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare the index with SQL (the truth): ids, versions and content hashes; --repair fixes it."""
    from sqlmodel import Session

    from knowledge_hub import consistency

    with _hub(get_settings()) as hub:
        if hub.server is not None:
            if repair:
                res = hub.server.call("POST", "/v1/kb/consistency/repair")
                _report(_as_report(res))
                console.print(f"repaired: reindexed {len(res['repaired'])}, removed {len(res['removed'])}, "
                              f"failed {len(res['failed'])}")
            rep = _as_report(hub.server.call("GET", "/v1/kb/consistency"))
        else:
            with Session(hub.engine, expire_on_commit=False) as session:
                if repair:
                    before = consistency.check(session=session, index=hub.index)
                    todo = len(set(before.missing + before.outdated + before.altered + before.flagged))
                    with _progress(todo, "re-embedding", quiet=quiet) as advance:
                        result = consistency.repair(session=session, index=hub.index, progress=advance)
                    _report(result.before)
                    console.print(f"repaired: reindexed {len(result.reindexed)}, removed {len(result.removed)}, "
                                  f"failed {len(result.failed)}{' (full reindex)' if result.full_reindex else ''}")
                rep = consistency.check(session=session, index=hub.index)
    _report(rep)
    if not rep.ok:
        raise typer.Exit(1)


@kb_app.command("reindex")
@boundary
def reindex_cmd(quiet: QuietOpt = False) -> None:
    """Drop the index and re-embed every published article with the configured model."""
    from sqlmodel import Session, col, func, select

    from knowledge_hub import consistency
    from knowledge_hub.models import Article, ArticleStatus

    with _hub(get_settings()) as hub:
        if hub.server is not None:
            res = hub.server.call("POST", "/v1/kb/reindex")
            model, done, failed = res["current_model"], res["repaired"], res["failed"]
        else:
            with Session(hub.engine, expire_on_commit=False) as session:
                total = session.exec(select(func.count(col(Article.id))).where(
                    Article.status == ArticleStatus.published)).one()
                with _progress(int(total), "re-embedding", quiet=quiet) as advance:
                    result = consistency.reindex(session=session, index=hub.index, progress=advance)
            model, done, failed = hub.index.embedder.name, result.reindexed, result.failed
    console.print(f"re-embedded {len(done)} articles with {model}; failed {len(failed)}")
    if failed:
        raise typer.Exit(1)


@kb_app.command("search")
@boundary
def search_cmd(
    query: Annotated[str, typer.Argument(help="Search text")],
    k: Annotated[int, typer.Option("-k", help="Passages to show")] = 5,
    intent: Annotated[list[str] | None, typer.Option(help="Only articles for this intent (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only articles with this tag (repeatable)")] = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense or lexical")] = "hybrid",
) -> None:
    """Hybrid search over published articles."""
    from knowledge_hub.retrieval import HybridRetriever

    with _hub(get_settings()) as hub:
        if hub.server is not None:
            rows = hub.server.call("GET", "/v1/kb/search", params={"q": query, "k": k, "mode": mode,
                                                                   "intent": intent or [], "tag": tag or []})
            hits = [SimpleNamespace(rank=r["rank"], score=r["score"], dense_score=r["dense_score"],
                                    lexical_score=r["lexical_score"], article_id=r["article_id"],
                                    version=r["version"], title=r["title"], text=r["text"]) for r in rows]
        else:
            found = HybridRetriever(index=hub.index).search_articles(  # each article once, as the API answers
                query, k=k, intents=intent or (), tags=tag or (), mode=mode)  # type: ignore[arg-type]
            hits = [SimpleNamespace(rank=a.rank, score=a.score, dense_score=a.best.dense_score,
                                    lexical_score=a.best.lexical_score, article_id=a.article_id, version=a.version,
                                    title=a.title, text=a.best.passage.text) for a in found]
    table = Table("#", "score", "dense", "lex", "article", "v", "title", "passage")
    for h in hits:
        text = h.text.replace("\n", " ")
        table.add_row(str(h.rank), f"{h.score:.3f}", f"{h.dense_score:.3f}", f"{h.lexical_score:.2f}",
                      str(h.article_id), str(h.version), h.title[:40], text[:80] + ("…" if len(text) > 80 else ""))
    console.print(table if hits else "no matching passages")


def register(app: typer.Typer) -> None:
    """Attach the `kb` command group."""
    app.add_typer(kb_app, name="kb")

