"""`deskpilot serve`: run the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Any

import typer

from api.commands import boundary


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the CLI."""

    @app.command("serve")
    @boundary
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
        workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each loads the models)."),
        access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
    ) -> None:
        """Serve the deskpilot API (OpenAPI docs at /docs); starts without a trained model and says so."""
        import uvicorn

        from api.settings import get_settings
        from knowledge_hub.ownership import remove_serve_file, write_serve_file

        settings = get_settings()
        _preflight(settings, workers)
        typer.echo(f"deskpilot API on http://{host}:{port}  (docs: /docs, health: /healthz, metrics: /metrics; "
                   f"home {settings.home})", err=True)
        # Where `deskpilot kb` finds this server, to send its index writes here (the server holds the index).
        local = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
        write_serve_file(settings.home, url=f"http://{local}:{port}")
        try:
            uvicorn.run(
                "api.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=access_log, log_config=None, timeout_graceful_shutdown=10,
            )
        finally:
            remove_serve_file(settings.home)


def _preflight(settings: Any, workers: int) -> None:
    """Refuse, in one line, what the app would refuse at start-up: several processes on one embedded index, and a
    home whose index belongs to another database."""
    from api.app import make_engine
    from core.errors import InvalidInput
    from knowledge_hub.identity import bind_home

    if workers > 1 and not settings.chroma_url:
        raise InvalidInput(f"--workers {workers} needs a chroma server (DESKPILOT_CHROMA_URL): the embedded index in "
                           f"{settings.chroma_path} can be held by one process only", field="workers")
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        bind_home(engine=engine, home=settings.home)
    finally:
        engine.dispose()
