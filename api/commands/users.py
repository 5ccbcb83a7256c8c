"""`deskpilot users add|list|disable|enable|passwd|set-role`: people's accounts for the web app (API keys stay for
machines). Passwords are read from a prompt (hidden, asked twice) or from stdin with --password-stdin; never from
the command line, where other users of the machine could read them."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.commands.keys import _session


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def register(app: typer.Typer) -> None:
    """Add the `users` command group to the CLI."""
    from api.auth import ROLES

    users = typer.Typer(help="People who sign in to the web app, with roles: " + ", ".join(ROLES) + ".",
                        no_args_is_help=True)
    app.add_typer(users, name="users")
    stdin_opt = typer.Option(False, "--password-stdin", help="Read the password from the first line of stdin.")

    @users.command("add")
    @boundary
    def add(
        username: str = typer.Argument(..., help="Sign-in name (letters, digits, . _ @ -)."),
        role: str = typer.Option(..., "--role", help="One of: " + ", ".join(ROLES) + "."),
        password_stdin: bool = stdin_opt,
    ) -> None:
        """Create a user (the password is hashed with argon2id; at least 10 characters)."""
        from api.web.accounts import create_user

        password = _read_password(password_stdin)
        with _session() as session:
            user = create_user(session=session, username=username, password=password, role=role)
        typer.echo(f"created user {user.username!r} with role {user.role}")

    @users.command("list")
    @boundary
    def list_() -> None:
        """List users (never their password hashes)."""
        from api.web.accounts import list_users

        with _session() as session:
            rows = list_users(session=session)
        table = Table("username", "role", "status", "created", "last sign-in")
        for u in rows:
            status = "disabled" if u.disabled else ("locked" if u.locked else "active")
            table.add_row(u.username, u.role, status, str(u.created_at or ""), str(u.last_login_at or ""))
        Console().print(table)

    @users.command("disable")
    @boundary
    def disable(username: str = typer.Argument(..., help="The user to disable.")) -> None:
        """Disable a user: they cannot sign in, and their open sessions end at once."""
        from api.web.accounts import set_disabled

        with _session() as session:
            set_disabled(session=session, username=username, disabled=True)
        typer.echo(f"disabled {username!r}")

    @users.command("enable")
    @boundary
    def enable(username: str = typer.Argument(..., help="The user to enable again.")) -> None:
        """Enable a disabled user."""
        from api.web.accounts import set_disabled

        with _session() as session:
            set_disabled(session=session, username=username, disabled=False)
        typer.echo(f"enabled {username!r}")

    @users.command("passwd")
    @boundary
    def passwd(username: str = typer.Argument(..., help="The user whose password to set."),
               password_stdin: bool = stdin_opt) -> None:
        """Set a new password (ends the user's sessions and lifts a lock-out)."""
        from api.web.accounts import set_password

        password = _read_password(password_stdin)
        with _session() as session:
            set_password(session=session, username=username, password=password)
        typer.echo(f"password of {username!r} changed")

    @users.command("set-role")
    @boundary
    def set_role(username: str = typer.Argument(..., help="The user."),
                 role: str = typer.Argument(..., help="One of: " + ", ".join(ROLES) + ".")) -> None:
        """Change a user's role (their sessions end; the new role applies from the next sign-in)."""
        from api.web.accounts import set_role as set_role_

        with _session() as session:
            user = set_role_(session=session, username=username, role=role)
        typer.echo(f"{user.username!r} is now {user.role}")
