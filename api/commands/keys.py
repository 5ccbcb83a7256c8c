"""`deskpilot keys create|list|revoke`: manage API keys (the secret is printed once, only its hash is stored)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.settings import get_settings


def _session(action: str | None = None, object_id: str | None = None):  # type: ignore[no-untyped-def]
    """A session on the configured database; with `action`, its commit also stores the audit row of that write."""
    from sqlmodel import Session, SQLModel

    from api.app import _import_tables, make_engine
    from api.audit import audited_session

    settings = get_settings()
    if settings.database_url is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    if action is not None:
        return audited_session(engine, action=action, object_id=object_id)
    return Session(engine)


def register(app: typer.Typer) -> None:
    """Add the `keys` command group to the CLI."""
    from api.auth import ROLES

    keys = typer.Typer(help="API keys with roles: " + ", ".join(ROLES) + ".", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    @boundary
    def create(
        role: str = typer.Option(..., "--role", help="One of: " + ", ".join(ROLES) + "."),
        name: str = typer.Option(..., "--name", help="Who or what uses the key (unique; shown in the audit log)."),
    ) -> None:
        """Create a key and print it once (it cannot be shown again)."""
        from api.auth import create_key

        with _session("keys create", name) as session:
            created = create_key(session=session, name=name, role=role)
        typer.echo(created.secret)
        typer.echo(f"created key {created.name!r} with role {created.role}; store it now, it is shown only once",
                   err=True)

    @keys.command("list")
    @boundary
    def list_() -> None:
        """List keys (names, roles, prefixes; never the secrets)."""
        from api.auth import list_keys

        with _session() as session:
            rows = list_keys(session=session)
        table = Table("name", "role", "prefix", "created", "revoked")
        for r in rows:
            table.add_row(r["name"], r["role"], r["prefix"], str(r["created_at"]), str(r["revoked_at"] or ""))
        Console().print(table)

    @keys.command("revoke")
    @boundary
    def revoke(name: str = typer.Argument(..., help="Name of the key to revoke.")) -> None:
        """Revoke a key by name (it stops working immediately)."""
        from api.auth import revoke_key

        with _session("keys revoke", name) as session:
            revoke_key(session=session, name=name)
        typer.echo(f"revoked {name!r}")
