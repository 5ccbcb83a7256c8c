"""`deskpilot audit`: read the audit log (who wrote what, when, with which answer) with the API's filters."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer

from api.commands import boundary
from api.settings import get_settings
from core.errors import InvalidInput


def _when(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--{field} {value!r} is not an ISO 8601 time (e.g. 2026-12-06T10:00:00Z)",
                           field=field) from None


def register(app: typer.Typer) -> None:
    """Add the `audit` command to the CLI."""

    @app.command("audit")
    @boundary
    def audit(
        who: Annotated[str | None, typer.Option("--who", help="API key name (or cli:<user>, a job's requester).")]
        = None,
        role: Annotated[str | None, typer.Option("--role", help="The caller's role.")] = None,
        method: Annotated[str | None, typer.Option("--method", help="POST, PUT, PATCH, DELETE, JOB or CLI.")] = None,
        path_prefix: Annotated[str | None, typer.Option("--path-prefix", help="The path starts with this.")] = None,
        status: Annotated[int | None, typer.Option("--status", help="The HTTP status answered.")] = None,
        since: Annotated[str | None, typer.Option("--since", help="At or after (ISO 8601; no zone means UTC).")]
        = None,
        until: Annotated[str | None, typer.Option("--until", help="Before (ISO 8601; no zone means UTC).")] = None,
        object_id: Annotated[str | None, typer.Option("--object-id", help="The object a write touched.")] = None,
        limit: Annotated[int, typer.Option("--limit", help="Rows per page (1..1000).")] = 50,
        cursor: Annotated[str | None, typer.Option("--cursor", help="next_cursor of the previous page.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object (items, next_cursor).")] = False,
    ) -> None:
        """Audited writes and refusals matching every filter given, newest first."""
        from sqlmodel import Session

        from api.app import make_engine
        from api.audit import AUDIT, query_audit

        settings = get_settings()
        since_at, until_at = _when(since, "since"), _when(until, "until")
        db_file = settings.home / "deskpilot.db"
        if settings.database_url is None and not db_file.exists():
            raise InvalidInput(f"no database at {db_file}; nothing has been audited yet", field="home")
        engine = make_engine(settings.db_url)
        try:
            AUDIT.create(engine, checkfirst=True)  # a home only the kb commands used has none yet
            with Session(engine) as session:
                page = query_audit(session=session, who=who, role=role, method=method, path_prefix=path_prefix,
                                   status=status, since=since_at, until=until_at, object_id=object_id,
                                   limit=limit, cursor=cursor)
        finally:
            engine.dispose()
        if as_json:
            typer.echo(json.dumps(page.model_dump(mode="json")))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "at (UTC)", "who", "role", "method", "path", "object", "status")
        for r in page.items:
            table.add_row(str(r.id), r.at.strftime("%Y-%m-%d %H:%M:%S"), r.who or "", r.role or "", r.method,
                          r.path, r.object_id or "", str(r.status))
        console = Console()
        console.print(table)
        if page.next_cursor is not None:
            console.print(f"more: --cursor {page.next_cursor}")
