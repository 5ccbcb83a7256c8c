"""`deskpilot demo`: the whole loop on embedded defaults — simulate, ingest, mine, train, load the KB, serve.

This is what `make run` runs. Every step uses the real components (SQLite, embedded chroma, the bundled embedding
model) and writes into the configured home folder, so the service it starts afterwards is the real one.
"""

from __future__ import annotations

import json
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from api.commands import boundary
from api.settings import Settings, get_settings

console = Console()

EXAMPLE_TICKET = {
    "ticket_id": "HD-10042",
    "subject": "Charged twice for my order",
    "body": "Hi, my card was charged two times for order #55120 on Nimbus Pay. "
            "Please refund the second payment. Reach me at jane.doe@example.com.",
    "channel": "email",
    "segment": "consumer",
    "priority": "P3",
}


def _step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _done(t0: float) -> None:
    console.print(f"[dim]({time.perf_counter() - t0:.1f} s)[/dim]")


def _demo_key(settings: Settings) -> str:
    """The demo's admin API key, kept in the home folder so repeated runs reuse it."""
    path = settings.home / "demo-api-key"
    if settings.bootstrap_admin_key is not None:
        return settings.bootstrap_admin_key.get_secret_value()
    if path.is_file():
        return path.read_text().strip()
    from api.auth import KEY_PREFIX

    secret = KEY_PREFIX + secrets.token_urlsafe(32)  # shaped like every other key, so the log scrubber knows it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def demo_key_ref(settings: Settings) -> tuple[str, str]:
    """How the printed example names the demo's admin key: a shell expression that yields it, and where it is."""
    if settings.bootstrap_admin_key is not None:
        return "$DESKPILOT_BOOTSTRAP_ADMIN_KEY", "the admin key from DESKPILOT_BOOTSTRAP_ADMIN_KEY"
    key_file = Path(settings.home) / "demo-api-key"
    return f"$(cat {shlex.quote(str(key_file))})", f"admin key stored in {key_file}"


def _quality_table(quality: Any) -> Table:
    table = Table(title=f"data quality: {quality.source}")
    table.add_column("fix")
    table.add_column("rows", justify="right")
    table.add_column("detail")
    table.add_row("rows in", f"{quality.rows_in:,}", "")
    for fix in quality.fixes:
        table.add_row(fix.name, f"{fix.rows:,}", fix.detail)
    table.add_row("rows out", f"{quality.rows_out:,}", f"{quality.cases_out:,} cases")
    return table


def run_pipeline(*, settings: Settings, cases: int, seed: int) -> dict[str, Any]:
    """Simulate, ingest, mine, train and load the knowledge base into `settings.home` (the steps of `flows.demo`,
    each one's result printed); returns what it made."""
    from sqlmodel import Session, SQLModel

    from api.app import _import_tables, make_engine
    from api.commands.mine import load_journey
    from core.embedding import Embedder
    from flows import demo as flow
    from knowledge_hub.index import kb_embedder, open_index

    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    sim_dir, out_dir = home / "sim", home / "insights"

    t0 = _step(f"1/5 simulate a contact center ({cases:,} tickets, seed {seed})")
    sim = flow.simulate_center(sim_dir, cases=cases, seed=seed)
    console.print(f"{sim.log.n_events:,} events, {sim.log.n_cases:,} cases, {len(sim.log.activities)} activities "
                  f"-> {sim_dir}")
    _done(t0)

    t0 = _step("2/5 ingest: clean, redact PII, pseudonymize agents")
    log, tickets = flow.ingest_center(sim_dir, sim, pseudonym_key=settings.pseudonym_key.get_secret_value())
    console.print(_quality_table(log.quality))
    console.print("ticket text redacted before any model sees it: "
                  + ", ".join(f"{n:,} {kind}" for kind, n in sorted(tickets.redacted.items.items())))
    _done(t0)

    t0 = _step("3/5 mine: process map, costly variants, misrouting, bottlenecks, KPIs, conformance, alerts")
    report = flow.mine_center(log, journey=load_journey(sim_dir / flow.TRUTH_FILE), out_dir=out_dir)
    console.print(Panel("\n".join(f"- {h}" for h in report.headlines), title="headline findings", expand=False))
    console.print(f"report: {out_dir / flow.REPORT_HTML}")
    _done(t0)

    t0 = _step("4/5 train: intent, resolving-team router, next activity, remaining time / SLA risk")
    embedder = Embedder(settings.embedding_model_path, **settings.embedder_kwargs)
    training = flow.train_center(log, tickets, registry=settings.registry_path, embedder=embedder, seed=seed)
    table = Table(title="models (tested on the newest 20% of cases)")
    table.add_column("task")
    table.add_column("version")
    table.add_column("headline metric")
    for m in training.models:
        main = {k: v for k, v in m.metrics.items() if isinstance(v, float) and ("accuracy" in k or "mae" in k)}
        table.add_row(m.task, m.version or "-", ", ".join(f"{k} {v:.3f}" for k, v in list(main.items())[:3]))
    console.print(table)
    _done(t0)

    t0 = _step("5/5 knowledge hub: import the help-centre articles, index them")
    engine = make_engine(settings.db_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    # The knowledge hub's own model (DESKPILOT_KB_EMBEDDING_MODEL); never beside a server's writes.
    index = open_index(settings=settings, embedder=kb_embedder(settings, shared=embedder), role="cli")
    try:
        with Session(engine, expire_on_commit=False) as session:
            imported, existing = flow.load_help_centre(session=session, index=index)
    finally:
        # Let go of the index now, not when the object is collected: a server started next (in this process or
        # another) opens it as its one writer.
        index.close()
        engine.dispose()
    console.print(f"{imported} articles imported ({existing} were already there); "
                  f"the planted knowledge gap has no article on purpose")
    _done(t0)
    return {"report": out_dir / flow.REPORT_HTML, "training": training.to_dict(), "tickets": len(tickets.table)}


def _serve_in_thread(host: str, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    from api.app import create_app

    config = uvicorn.Config(create_app(get_settings()), host=host, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="deskpilot-api", daemon=True)
    thread.start()
    return server, thread


def example_curl(*, base: str, key_ref: str) -> str:
    """The curl command routing the example ticket, its key given by the shell expression `key_ref`."""
    body = json.dumps(EXAMPLE_TICKET)
    return (f"curl -s -X POST {base}/v1/tickets/route -H \"X-API-Key: {key_ref}\" "
            f"-H 'Content-Type: application/json' -d '{body}'")


def example_request(*, base: str, key: str, key_ref: str) -> tuple[str, dict[str, Any]]:
    """Route the example ticket through the running API; returns the equivalent curl command and the answer.

    The curl command names the key by `key_ref` (a shell expression such as `$(cat HOME/demo-api-key)`), never by
    its value: the terminal, a shared screen or a pasted transcript does not carry the admin key."""
    import httpx

    body = json.dumps(EXAMPLE_TICKET)
    curl = example_curl(base=base, key_ref=key_ref)
    resp = httpx.post(f"{base}/v1/tickets/route", content=body, timeout=60,
                      headers={"X-API-Key": key, "Content-Type": "application/json"})
    return curl, {"status": resp.status_code, "body": resp.json()}


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the CLI."""

    @app.command("demo")
    @boundary
    def demo(
        cases: Annotated[int, typer.Option(min=200, help="Simulated tickets.")] = 3000,
        seed: Annotated[int | None, typer.Option(help="Simulation and training seed (default: settings).")] = None,
        serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving the API afterwards.")] = True,
        host: Annotated[str, typer.Option(help="Interface for the API.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the API.")] = 8000,
    ) -> None:
        """Run the whole loop on embedded defaults and serve the API with a real example request."""
        import httpx

        settings = get_settings()
        run_pipeline(settings=settings, cases=cases, seed=settings.seed if seed is None else seed)
        key = _demo_key(settings)
        import os

        os.environ["DESKPILOT_BOOTSTRAP_ADMIN_KEY"] = key
        get_settings.cache_clear()
        t0 = _step(f"serve: http://{host}:{port} (docs at /docs)")
        server, thread = _serve_in_thread(host, port)
        base = f"http://{host}:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not thread.is_alive():
                raise typer.Exit(1)
            time.sleep(0.2)
        key_ref, where = demo_key_ref(settings)
        curl, answer = example_request(base=base, key=key, key_ref=key_ref)
        console.print(f"[bold]example request[/bold] ({where}):")
        console.print(curl, soft_wrap=True, highlight=False)
        console.print(f"[bold]answer[/bold] (HTTP {answer['status']}):")
        console.print_json(data=answer["body"])
        _done(t0)
        if not serve:
            server.should_exit = True
            thread.join(timeout=15)
            return
        console.print(f"serving on {base} — press Ctrl-C to stop")
        try:
            while thread.is_alive():
                thread.join(timeout=1)
        except KeyboardInterrupt:
            server.should_exit = True
            thread.join(timeout=15)
