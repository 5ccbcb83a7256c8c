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


def _clear_parts(folder: Path) -> None:
    """Make room for new parts in `folder`: the parts and manifest an earlier run wrote there go; anything else
    stops the run (it is not deskpilot's to delete)."""
    from insight.mining.distributed import MANIFEST

    if not folder.exists():
        return
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is a file; --out needs room for a parts folder there", field="out")
    manifest = folder / MANIFEST
    ours: set[str] = set()
    if manifest.is_file():
        try:
            ours = {str(p) for p in json.loads(manifest.read_text(encoding="utf-8")).get("parts", [])}
        except (OSError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"cannot read {manifest} ({exc}); remove {folder} or give another --out",
                               field="out") from exc
    foreign = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in ours)
    if foreign:
        raise InvalidInput(f"{folder} holds files an earlier mine run did not write ({foreign[:3]}); remove them or "
                           "give another --out", field="out")
    for name in ours:
        (folder / name).unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)


def _mine_on_cluster(
    log: Path, out: Path, *, scheduler: str | None, workers: int | None, worker_memory: str | None,
    part_events: int, preset: str | None, mapping: Path | None, map_: list[str] | None, lines: Path | None,
    dayfirst: bool, no_privacy: bool, cost_model: Any,
) -> None:
    """Process map, variants, bottlenecks, handovers, KPIs and labels on a Dask cluster (insight/mining/distributed).

    LOG is a partitioned log folder (with `_parts.json`) or a file, which is ingested here and written as
    case-partitioned Parquet under OUT/parts first (a CSV streamed in bounded memory, as `ingest --partitioned`).
    The workers must see the part files at the same path.
    """
    from api.commands.ingest import _parse_mapping
    from insight.eventlog import ingest
    from insight.eventlog.readers.detect import detect_format
    from insight.eventlog.stream import ingest_partitioned
    from insight.eventlog.writers import write_partitioned
    from insight.mining.distributed import MANIFEST, DistributedConfig, connect, mine_partitioned
    from insight.mining.labels import LabelConfig
    from insight.mining.report import fmt_duration

    console = Console()
    t0 = time.perf_counter()
    line_map = {str(k): int(v) for k, v in _read_json(lines, "lines").items()} if lines else None
    cfg = DistributedConfig(labels=LabelConfig(line_mapping=line_map), line_mapping=line_map, cost_model=cost_model)
    source = log
    if not (log.is_dir() and (log / MANIFEST).is_file()):
        settings = get_settings()
        source = out / "parts"
        options: dict[str, Any] = {
            "mapping": _parse_mapping(mapping, map_) or None, "preset": preset, "dayfirst": True if dayfirst else None,
            "pseudonym_key": None if no_privacy else settings.pseudonym_key.get_secret_value(),
            "privacy": not no_privacy,
        }
        if detect_format(log) == "csv":
            # streamed: memory holds a block of the file and the open parts, never the whole log
            console.print(f"streaming {log} into case-partitioned Parquet under {source}")
            _clear_parts(source)
            ingest_partitioned(log, source, events_per_part=part_events, **options)
        else:
            console.print(f"ingesting {log} and writing case-partitioned Parquet to {source}")
            elog = ingest(log, **options)
            write_partitioned(elog, source, events_per_part=part_events)
            del elog
    client = connect(scheduler=scheduler, workers=workers, memory_limit=worker_memory)
    try:
        where = scheduler or f"a local cluster of {workers} workers"
        # the link only when the scheduler serves a dashboard (client.dashboard_link is a guess either way)
        has_dashboard = "dashboard" in (client.scheduler_info().get("services") or {})
        console.print(f"mining on {where}" + (f" (dashboard: {client.dashboard_link})" if has_dashboard else ""))
        result = mine_partitioned(source, client, config=cfg)
    finally:
        cluster = getattr(client, "cluster", None) if not scheduler else None
        client.close()
        if cluster is not None:
            cluster.close()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "insight.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    happy = result.variants.happy
    lines_out = [
        f"{result.n_cases:,} cases, {result.n_events:,} events in {result.n_parts} parts; "
        f"median time to close {fmt_duration(result.kpis.overall.throughput_median_s)}.",
        f"{len(result.process_map.activities)} activities and {len(result.process_map.edges)} edges on the map; "
        f"{result.variants.n_variants:,} variants" + (f", happy path {happy.cases:,} cases." if happy else "."),
        "misrouting, conformance and alerts read the whole frame: run `mine` without --workers/--scheduler for them.",
    ]
    console.print(Panel("\n".join(f"- {x}" for x in lines_out), title=f"mined on the cluster: {result.name}",
                        expand=False))
    console.print(f"wrote [bold]{path}[/bold] in {time.perf_counter() - t0:.1f} s")


def register(app: typer.Typer) -> None:
    """Add the `mine` command to the CLI."""

    @app.command("mine")
    @boundary
    def mine_cmd(
        log: Annotated[Path, typer.Argument(help="CSV(.gz), XES(.gz) or Parquet event log, or a folder written by "
                                            "`ingest --partitioned`.")],
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
        scheduler: Annotated[
            str | None,
            typer.Option(help="Mine on the dask.distributed cluster at this address, e.g. tcp://host:8786."),
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help="Mine on a local Dask cluster of this many worker processes.", min=1)
        ] = None,
        worker_memory: Annotated[
            str | None,
            typer.Option(help="Memory limit of each local worker, e.g. 3GiB: past 70 % of it a worker spills what "
                              "waits on it to disk [default: the machine's memory shared out].")
        ] = None,
        part_events: Annotated[
            int, typer.Option(help="Events per Parquet part when a file is partitioned for the cluster.", min=1)
        ] = 1_000_000,
        hour_cost: Annotated[float | None, typer.Option(
            help="Cost of one hour of a case's throughput time [default: the cost model's].", min=0)] = None,
        handoff_cost: Annotated[float | None, typer.Option(
            help="Cost of one handoff, the owning team or agent changing [default: the cost model's].", min=0)] = None,
        touch_cost: Annotated[float | None, typer.Option(
            help="Cost of one event, a touch [default: the cost model's].", min=0)] = None,
        time_basis: Annotated[str | None, typer.Option(
            help="A variant's typical case time for its cost: median or mean [default: the cost model's].")] = None,
        min_support: Annotated[int | None, typer.Option(
            help="Cases a variant needs to be ranked among the costly paths [default: the cost model's].",
            min=1)] = None,
    ) -> None:
        """Mine a log: process map, costly paths, misrouting, bottlenecks, KPIs, conformance, alerts.

        Costs (docs: the README's configuration): time, handoffs and touches are priced by default; the options
        override one price each.
        """
        from insight.mining.variants import CostModel

        given: dict[str, Any] = {"hour_cost": hour_cost, "handoff_cost": handoff_cost, "touch_cost": touch_cost,
                 "time_basis": time_basis, "min_support": min_support}
        costs = CostModel(**{k: v for k, v in given.items() if v is not None})
        if scheduler or workers:
            if worker_memory and not workers:
                raise InvalidInput("--worker-memory sets the memory of a local cluster's workers: give --workers N "
                                   "(a running cluster's workers have their own limit)", field="worker_memory")
            _mine_on_cluster(log, out, scheduler=scheduler, workers=workers, worker_memory=worker_memory,
                             part_events=part_events,
                             preset=preset, mapping=mapping, map_=map_, lines=lines, dayfirst=dayfirst,
                             no_privacy=no_privacy, cost_model=costs)
            return
        from api.commands.ingest import _parse_mapping
        from insight.eventlog import ingest
        from insight.mining.alerts import AlertConfig
        from insight.mining.distributed import MANIFEST, read_partitioned
        from insight.mining.html import write_html
        from insight.mining.labels import LabelConfig
        from insight.mining.report import STEPS, MineConfig, mine

        console = Console()
        settings = get_settings()
        t0 = time.perf_counter()
        line_map = {str(k): int(v) for k, v in _read_json(lines, "lines").items()} if lines else None
        labels = LabelConfig(line_mapping=line_map)
        cfg = MineConfig(
            cost_model=costs,
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
            if log.is_dir() and (log / MANIFEST).is_file():
                # A folder `ingest --partitioned` wrote: its events are already cleaned (and redacted).
                elog = read_partitioned(log)
            else:
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
