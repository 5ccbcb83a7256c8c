"""`deskpilot ingest`: read, clean and redact an event log, print its data-quality summary, optionally save it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.settings import get_settings
from core.errors import InvalidInput

if TYPE_CHECKING:
    from insight.eventlog.schema import DataQualityReport


def _parse_mapping(mapping_file: Path | None, pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if mapping_file is not None:
        try:
            data = json.loads(mapping_file.read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"cannot read mapping file {mapping_file}: {exc}", field="mapping") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"mapping file {mapping_file} must hold a JSON object {{source: canonical}}",
                               field="mapping")
        out.update({str(k): str(v) for k, v in data.items()})
    for pair in pairs or []:
        if "=" not in pair:
            raise InvalidInput(f"--map expects SOURCE=CANONICAL, got {pair!r}", field="map")
        src, dst = pair.split("=", 1)
        out[src.strip()] = dst.strip()
    return out


def _quality_table(console: Console, title: str, q: DataQualityReport | None, detail: str) -> None:
    table = Table(title=title)
    table.add_column("fix")
    table.add_column("rows", justify="right")
    table.add_column("detail", overflow="fold")
    if q is not None:
        table.add_row("rows in", str(q.rows_in), "")
        for fix in q.fixes:
            table.add_row(fix.name, str(fix.rows), fix.detail)
        table.add_row("rows out", str(q.rows_out), detail)
    console.print(table)
    if q is not None:
        for w in q.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        for n in q.notices:
            console.print(f"[cyan]input:[/cyan] {n}")


def _ingest_partitioned(console: Console, log: Path, out: Path | None, *, part_events: int, chunk_mb: int,
                        bucket_mb: int, **options: Any) -> None:
    """`ingest --partitioned`: the CSV streamed through case buckets into Parquet parts under OUT."""
    from insight.eventlog.stream import ingest_partitioned

    if out is None:
        raise InvalidInput("--partitioned needs --out FOLDER for the Parquet parts", field="out")
    if out.suffix.lower() in (".parquet", ".pq", ".csv", ".gz"):
        raise InvalidInput(f"--partitioned writes a folder of parts; --out {out} names a file", field="out")
    res = ingest_partitioned(log, out, events_per_part=part_events, chunk_bytes=chunk_mb << 20,
                             bucket_bytes=bucket_mb << 20, **options)
    q = res.quality
    _quality_table(console, f"data quality: {log.name}", q,
                   f"{q.cases_out} cases, {len(res.activities)} activities")
    if res.case_attributes:
        console.print(f"case attributes: {', '.join(res.case_attributes)}")
    console.print(f"wrote {len(res.parts)} part(s) to {res.out_dir} "
                  f"({res.chunks} chunk(s) through {res.buckets} case bucket(s))")


def register(app: typer.Typer) -> None:
    """Add the `ingest` command to the CLI."""

    @app.command("ingest")
    @boundary
    def ingest_cmd(
        log: Annotated[Path, typer.Argument(help="CSV(.gz), XES(.gz) or Parquet event log.")],
        mapping: Annotated[Path | None, typer.Option("--mapping", help="JSON file {source column: canonical}.")] = None,
        map_: Annotated[list[str] | None, typer.Option("--map", help="SOURCE=CANONICAL, repeatable.")] = None,
        preset: Annotated[str | None, typer.Option(help="Known log layout, e.g. servicenow, bpic2013_vinst.")] = None,
        out: Annotated[Path | None, typer.Option(help="Write the clean log to .parquet or .csv.")] = None,
        activity_map: Annotated[Path | None, typer.Option(help="JSON or CSV old->new activity labels.")] = None,
        timestamp_policy: Annotated[str, typer.Option(help="drop | impute | error")] = "drop",
        source_tz: Annotated[str | None, typer.Option(help="Time zone of naive timestamps (default UTC).")] = None,
        dayfirst: Annotated[bool, typer.Option("--dayfirst", help="Read ambiguous dates day-first.")] = False,
        keep_duplicates: Annotated[bool, typer.Option("--keep-duplicates", help="Keep exact duplicates.")] = False,
        no_privacy: Annotated[bool, typer.Option("--no-privacy", help="Skip redaction and pseudonymization.")] = False,
        partitioned: Annotated[bool, typer.Option(
            "--partitioned", help="Stream a CSV in bounded memory into case-partitioned Parquet parts under the "
                                  "--out folder (for `mine --workers/--scheduler`).")] = False,
        part_events: Annotated[int, typer.Option(help="Events per Parquet part with --partitioned.", min=1)] = 1_000_000,
        chunk_mb: Annotated[int, typer.Option(help="CSV block read at a time with --partitioned (MiB).", min=1)] = 16,
        bucket_mb: Annotated[int, typer.Option(
            help="CSV size per case bucket with --partitioned (MiB); one bucket is held in memory.", min=1)] = 32,
    ) -> None:
        """Ingest an event log and print what cleaning and privacy did to it."""
        from insight.eventlog import ingest, write_log

        console = Console()
        if timestamp_policy not in ("drop", "impute", "error"):
            raise InvalidInput(f"--timestamp-policy must be drop, impute or error, got {timestamp_policy!r}",
                               field="timestamp_policy")
        settings = get_settings()
        if partitioned:
            _ingest_partitioned(console, log, out, mapping=_parse_mapping(mapping, map_) or None, preset=preset,
                                source_tz=source_tz, dayfirst=True if dayfirst else None, activity_map=activity_map,
                                timestamp_policy=timestamp_policy, drop_duplicates=not keep_duplicates,
                                pseudonym_key=None if no_privacy else settings.pseudonym_key.get_secret_value(),
                                privacy=not no_privacy, part_events=part_events, chunk_mb=chunk_mb,
                                bucket_mb=bucket_mb)
            return
        result = ingest(
            log,
            mapping=_parse_mapping(mapping, map_) or None,
            preset=preset,
            source_tz=source_tz,
            dayfirst=True if dayfirst else None,
            activity_map=activity_map,
            timestamp_policy=timestamp_policy,  # type: ignore[arg-type]
            drop_duplicates=not keep_duplicates,
            pseudonym_key=None if no_privacy else settings.pseudonym_key.get_secret_value(),
            privacy=not no_privacy,
        )
        written = write_log(result, out) if out is not None else None
        q = result.quality
        _quality_table(console, f"data quality: {log.name}", q,
                       f"{q.cases_out if q else 0} cases, {len(result.activities)} activities")
        if result.case_attributes:
            console.print(f"case attributes: {', '.join(result.case_attributes)}")
        if written is not None:
            console.print(f"wrote {written}")
