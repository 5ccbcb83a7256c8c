"""CLI sub-commands, one module per area; each exposes `register(app)`."""

from __future__ import annotations

from typing import NoReturn

import typer

from insight.errors import DeskpilotError


def fail(exc: DeskpilotError) -> NoReturn:
    """End a command on bad input: one line on standard error naming what is wrong, exit code 2."""
    from api.logging import scrub

    typer.echo(scrub(" ".join(f"error ({exc.code}): {exc}".split())), err=True)
    raise typer.Exit(2)
