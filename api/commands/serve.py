"""`deskpilot serve`: run the HTTP API with uvicorn."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the CLI."""

    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
        workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each loads the models)."),
        access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
    ) -> None:
        """Serve the deskpilot API (OpenAPI docs at /docs); starts without a trained model and says so."""
        import uvicorn

        from api.settings import get_settings

        settings = get_settings()
        typer.echo(f"deskpilot API on http://{host}:{port}  (docs: /docs, health: /healthz, metrics: /metrics; "
                   f"home {settings.home})", err=True)
        uvicorn.run(
            "api.app:create_app", factory=True, host=host, port=port, workers=workers,
            access_log=access_log, log_config=None, timeout_graceful_shutdown=10,
        )
