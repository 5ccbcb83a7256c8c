"""CLI sub-commands, one module per area; each exposes `register(app)`.

Every command is wrapped in `boundary`: a command raises `DeskpilotError` for bad input and never catches it
itself; the boundary prints one line naming what is wrong and exits with code 2. `api.cli.main` is the last
boundary for anything raised outside a command (a bug becomes one line and exit code 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from core.errors import DeskpilotError

P = ParamSpec("P")
R = TypeVar("R")


def fail(exc: DeskpilotError) -> NoReturn:
    """End a command on bad input: one line on standard error naming what is wrong, exit code 2."""
    from api.logging import scrub

    typer.echo(scrub(" ".join(f"error ({exc.code}): {exc}".split())), err=True)
    raise typer.Exit(2)


def boundary(command: Callable[P, R]) -> Callable[P, R]:
    """The commands' error boundary: a `DeskpilotError` from `command` ends it through `fail` (one line, exit 2)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DeskpilotError as exc:
            fail(exc)

    return run
