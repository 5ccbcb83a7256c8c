"""`deskpilot kb ...`: import, export, check/repair, reindex and search the knowledge hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.settings import get_settings

kb_app = typer.Typer(help="Knowledge hub: articles in SQL, the chroma index, hybrid search.", no_args_is_help=True)
console = Console()


def _open() -> tuple[Any, Any]:
    """Engine (kb tables created) and index from the settings."""
    from sqlmodel import SQLModel

    from api.app import make_engine
    from insight.embedding import Embedder
    from knowledge_hub.index import open_index
    from knowledge_hub.models import Article, ArticleVersion

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    SQLModel.metadata.create_all(engine, tables=[Article.__table__, ArticleVersion.__table__])  # type: ignore[attr-defined]
    index = open_index(settings=settings, embedder=Embedder(settings.embedding_model_path, **settings.embedder_kwargs))
    return engine, index


def _report(rep: Any) -> None:
    console.print(f"published in SQL: {rep.published}; index model: {rep.stored_model} (current {rep.current_model})")
    for name in ("missing", "outdated", "altered", "orphaned", "flagged"):
        ids = getattr(rep, name)
        console.print(f"  {name:<9} {len(ids):>5}  {ids[:20]}{' ...' if len(ids) > 20 else ''}")
    if rep.model_mismatch:
        console.print("  [yellow]embedding model changed: run `deskpilot kb reindex`[/yellow]")
    console.print("[green]index consistent with SQL[/green]" if rep.ok else "[yellow]index differs from SQL[/yellow]")


@kb_app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="Folder of .md files with front matter, a .json, a .csv, "
                                               "or ABCD guidelines.json")],
    author: Annotated[str, typer.Option(help="Author recorded when a record has none.")] = "import",
) -> None:
    """Import articles (published ones are indexed as they are stored)."""
    from sqlmodel import Session

    from knowledge_hub.importexport import import_path, read_any

    records = read_any(path)  # a bad file is refused before the database and the index are opened
    engine, index = _open()
    with Session(engine, expire_on_commit=False) as session:
        res = import_path(session=session, index=index, path=path, author=author, records=records)
    console.print(f"imported {len(res.created)} articles from {path}"
                  + (f"; {len(res.stale)} index-stale (run `deskpilot kb check --repair`)" if res.stale else ""))


@kb_app.command("export")
def export_cmd(directory: Annotated[Path, typer.Argument(help="Output folder")]) -> None:
    """Export every article as Markdown files, articles.json and articles.csv."""
    from sqlmodel import Session

    from knowledge_hub.importexport import export_all

    engine, _ = _open()
    with Session(engine) as session:
        out = export_all(session=session, folder=directory)
    for kind, p in out.items():
        console.print(f"{kind:<8} {p}")


@kb_app.command("check")
def check_cmd(repair: Annotated[bool, typer.Option("--repair", help="Fix the index from SQL.")] = False) -> None:
    """Compare the index with SQL (the truth); --repair fixes it."""
    from sqlmodel import Session

    from knowledge_hub import consistency

    engine, index = _open()
    with Session(engine, expire_on_commit=False) as session:
        if repair:
            res = consistency.repair(session=session, index=index)
            _report(res.before)
            console.print(f"repaired: reindexed {len(res.reindexed)}, removed {len(res.removed)}, "
                          f"failed {len(res.failed)}{' (full reindex)' if res.full_reindex else ''}")
            rep = consistency.check(session=session, index=index)
        else:
            rep = consistency.check(session=session, index=index)
        _report(rep)
    if not rep.ok:
        raise typer.Exit(1)


@kb_app.command("reindex")
def reindex_cmd() -> None:
    """Drop the index and re-embed every published article with the configured model."""
    from sqlmodel import Session

    from knowledge_hub import consistency

    engine, index = _open()
    with Session(engine, expire_on_commit=False) as session:
        res = consistency.reindex(session=session, index=index)
    console.print(f"re-embedded {len(res.reindexed)} articles with {index.embedder.name}; failed {len(res.failed)}")
    if res.failed:
        raise typer.Exit(1)


@kb_app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="Search text")],
    k: Annotated[int, typer.Option("-k", help="Passages to show")] = 5,
    intent: Annotated[list[str] | None, typer.Option(help="Only articles for this intent (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only articles with this tag (repeatable)")] = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense or lexical")] = "hybrid",
) -> None:
    """Hybrid search over published articles."""
    from knowledge_hub.retrieval import HybridRetriever

    _, index = _open()
    hits = HybridRetriever(index=index).search(query, k=k, intents=intent or (), tags=tag or (), mode=mode)  # type: ignore[arg-type]
    table = Table("#", "score", "dense", "lex", "article", "v", "title", "passage")
    for h in hits:
        text = h.passage.text.replace("\n", " ")
        table.add_row(str(h.rank), f"{h.score:.3f}", f"{h.dense_score:.3f}", f"{h.lexical_score:.2f}",
                      str(h.article_id), str(h.version), h.title[:40], text[:80] + ("…" if len(text) > 80 else ""))
    console.print(table if hits else "no matching passages")


def register(app: typer.Typer) -> None:
    """Attach the `kb` command group."""
    app.add_typer(kb_app, name="kb")
