"""The `deskpilot` command line."""

from __future__ import annotations

import os

import typer
from pydantic import ValidationError

from api.commands import fail
from api.logging import configure_logging
from api.settings import get_settings
from core.errors import DeskpilotError

app = typer.Typer(help="deskpilot: mine support event logs, learn from them, route and assist tickets.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)


def _register_commands() -> None:
    # Each area owns its module; registration order is the order shown in --help.
    from api.commands import audit as audit_cmd
    from api.commands import demo, ingest, keys, serve
    from api.commands import kb as kb_cmd
    from api.commands import mine as mine_cmd
    from api.commands import models as models_cmd
    from api.commands import simulate as simulate_cmd
    from api.commands import train as train_cmd
    from api.commands import users as users_cmd

    demo.register(app)
    ingest.register(app)
    simulate_cmd.register(app)
    mine_cmd.register(app)
    serve.register(app)
    keys.register(app)
    users_cmd.register(app)
    audit_cmd.register(app)
    kb_cmd.register(app)
    train_cmd.register(app)
    models_cmd.register(app)


def main() -> None:
    """Console entry point."""
    # Nothing may be fetched from a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    try:
        settings = get_settings()
    except ValidationError as exc:  # a bad DESKPILOT_* setting: one line per problem, exit 2
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            typer.echo(f"configuration error ({where}): {err['msg']}", err=True)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_json)
    _register_commands()
    try:
        app(standalone_mode=True)
    except DeskpilotError as exc:  # bad input a command did not catch itself: one line, exit 2
        try:
            fail(exc)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if settings.log_level.upper() == "DEBUG":
            raise
        from api.logging import scrub

        typer.echo(scrub(" ".join(f"internal error ({type(exc).__name__}: {str(exc)[:300]}); rerun with "
                                  "DESKPILOT_LOG_LEVEL=DEBUG for the traceback, and please report it".split())),
                   err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
