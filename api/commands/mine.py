"""`deskpilot mine`: mine an event log into insight.json and a self-contained report.html."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from api.commands import boundary
from api.settings import get_settings
from core.errors import InvalidInput


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {what} file {path}: {exc}", field=what) from exc


def load_journey(path: Path) -> Any:
    """A designed journey from JSON or YAML (docs/JOURNEYS.md), or the journey inside a simulator truth.json."""
    from insight.mining.conformance import IntendedJourney

    if path.suffix.lower() in (".yaml", ".yml"):
        return IntendedJourney.from_file(path)
    data = _read_json(path, "journey")
    # The simulator's truth.json carries the designed journey as ordered steps with an `optional` flag.
    if isinstance(data, dict) and "deviations" in data and isinstance(data["deviations"], dict):
        data = data["deviations"].get("intended_journey", data)
    if isinstance(data, list):
        data = {"steps": data}
    if isinstance(data, dict):
        j = IntendedJourney.from_dict(data)
        if j.source == "declared":
            j.source = f"declared journey ({path.name})"
        return j
    raise InvalidInput(f"journey file {path} must hold a list of steps or {{'steps': [...]}}", field="journey")


def register(app: typer.Typer) -> None:
    """Add the `mine` command to the CLI."""

    @app.command("mine")
    @boundary
    def mine_cmd(
        log: Annotated[Path, typer.Argument(help="CSV(.gz), XES(.gz) or Parquet event log.")],
        out: Annotated[Path, typer.Option("--out", help="Folder for insight.json and report.html.")],
        preset: Annotated[str | None, typer.Option(help="Known log layout, e.g. servicenow, bpic2013_vinst.")] = None,
        mapping: Annotated[Path | None, typer.Option("--mapping", help="JSON file {source column: canonical}.")] = None,
        map_: Annotated[list[str] | None, typer.Option("--map", help="SOURCE=CANONICAL, repeatable.")] = None,
        journey: Annotated[
            Path | None,
            typer.Option(help="Designed journey, JSON or YAML (docs/JOURNEYS.md): steps, optional, allowed_anywhere."),
        ] = None,
        model: Annotated[Path | None, typer.Option(help="Intended process as a BPMN or PNML file.")] = None,
        lines: Annotated[Path | None, typer.Option(help="JSON {team: support line 1/2/3}.")] = None,
        window: Annotated[str, typer.Option(help="Alert window (recent period), e.g. 7D.")] = "7D",
        baseline_windows: Annotated[int, typer.Option(help="Windows before the recent one to compare with.")] = 8,
        dayfirst: Annotated[bool, typer.Option("--dayfirst", help="Read ambiguous dates day-first.")] = False,
        no_privacy: Annotated[bool, typer.Option("--no-privacy", help="Skip redaction and pseudonymization.")] = False,
    ) -> None:
        """Mine a log: process map, costly paths, misrouting, bottlenecks, KPIs, conformance, alerts."""
        from api.commands.ingest import _parse_mapping
        from insight.eventlog import ingest
        from insight.mining.alerts import AlertConfig
        from insight.mining.html import write_html
        from insight.mining.labels import LabelConfig
        from insight.mining.report import STEPS, MineConfig, mine

        console = Console()
        settings = get_settings()
        t0 = time.perf_counter()
        line_map = {str(k): int(v) for k, v in _read_json(lines, "lines").items()} if lines else None
        labels = LabelConfig(line_mapping=line_map)
        cfg = MineConfig(
            labels=labels,
            alerts=AlertConfig(window=window, baseline_windows=baseline_windows, labels=labels),
            journey=load_journey(journey) if journey else None,
            model_path=str(model) if model else None,
            line_mapping=line_map,
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<14}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("reading log", total=len(STEPS) + 1)
            elog = ingest(
                log,
                mapping=_parse_mapping(mapping, map_) or None,
                preset=preset,
                dayfirst=True if dayfirst else None,
                pseudonym_key=None if no_privacy else settings.pseudonym_key.get_secret_value(),
                privacy=not no_privacy,
            )
            bar.update(task, advance=1)

            def progress(step: str, done: int, total: int) -> None:
                bar.update(task, description=step, completed=done + 1)

            report = mine(elog, config=cfg, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        json_path = report.write_json(out / "insight.json")
        html_path = write_html(report, out / "report.html")
        took = time.perf_counter() - t0
        body = "\n".join(f"- {h}" for h in report.headlines)
        console.print(Panel(body, title=f"headline findings: {report.name}", expand=False))
        console.print(f"wrote [bold]{json_path}[/bold] and [bold]{html_path}[/bold] in {took:.1f} s")
