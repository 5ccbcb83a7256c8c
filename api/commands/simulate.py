"""`deskpilot simulate`: write a simulated support log, its tickets and the planted ground truth to a folder."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path

import typer

from api.commands import boundary


class EventFormat(StrEnum):
    """File format(s) of the event table."""

    parquet = "parquet"
    csv = "csv"
    both = "both"


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to the CLI."""

    @app.command("simulate")
    @boundary
    def simulate_cmd(
        out: Path = typer.Option(Path("var/sim"), "--out", help="Folder to write into (created if missing)."),
        cases: int = typer.Option(2000, "--cases", min=1, help="Number of cases (tickets)."),
        seed: int = typer.Option(7, "--seed", help="Random seed; the same seed gives identical files."),
        start: str = typer.Option("2026-01-05", "--start", help="First day of the simulated period (UTC)."),
        weeks: int = typer.Option(12, "--weeks", min=2, help="Length of the period in weeks."),
        fmt: EventFormat = typer.Option(EventFormat.parquet, "--format", help="Event table format."),
    ) -> None:
        """Simulate a contact-center log (events, tickets.csv, truth.json) with planted, known patterns."""
        from insight.simulate import simulate

        t0 = time.perf_counter()
        sim = simulate(n_cases=cases, seed=seed, start=start, weeks=weeks)
        took = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if fmt in (EventFormat.parquet, EventFormat.both):
            sim.log.df.to_parquet(out / "events.parquet", index=False)
            written.append("events.parquet")
        if fmt in (EventFormat.csv, EventFormat.both):
            sim.log.df.to_csv(out / "events.csv", index=False)
            written.append("events.csv")
        sim.tickets.to_csv(out / "tickets.csv", index=False)
        (out / "truth.json").write_text(json.dumps(sim.truth.to_dict(), indent=1))
        written += ["tickets.csv", "truth.json"]
        typer.echo(
            f"simulated {sim.log.n_cases} cases / {sim.log.n_events} events in {took:.1f}s "
            f"(seed {seed}); wrote {', '.join(written)} to {out}"
        )
