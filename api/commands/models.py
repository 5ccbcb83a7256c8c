"""`deskpilot models list|versions|rollback|promote|retrain`: the registry's versions, who made them live and why,
rollback, an admin's forced promotion, and the gated retrain from the command line.

Every change moves the registry's live pointer and is recorded in the task's history file (who: the OS user,
when, why); running servers follow the pointer within `models_watch_seconds`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.settings import get_settings


def _registry() -> Any:
    from insight.models.registry import ModelRegistry

    return ModelRegistry(get_settings().registry_path)


def _who(by: str | None) -> str:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}" + (f" ({by})" if by else "")


def _check_task(reg: Any, task: str) -> None:
    from core.errors import NotFound

    if task not in reg.tasks():
        raise NotFound(f"no task {task!r} in the registry {reg.root}; tasks: {', '.join(reg.tasks()) or 'none'}")


def _headline(metrics: dict[str, Any]) -> str:
    for key in ("accuracy", "in_scope_accuracy", "mae_hours", "n_tickets"):
        if isinstance(metrics.get(key), int | float):
            return f"{key} {metrics[key]:.4g}"
    return ""


def register(app: typer.Typer) -> None:
    """Add the `models` command group to the CLI."""
    models = typer.Typer(help="Model registry: versions, history, rollback, forced promotion, gated retrain.",
                         no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    @boundary
    def list_cmd() -> None:
        """Every task's live version, how many versions it has, and its headline test metric."""
        reg = _registry()
        table = Table(title=f"registry {reg.root}")
        for c in ("task", "live", "versions", "live since", "by", "headline metric"):
            table.add_column(c)
        for task in reg.tasks():
            live = reg.live_version(task)
            meta = reg.read_metadata(task, live) if live else None
            last: dict[str, Any] = next((h for h in reversed(reg.history(task)) if h.get("version") == live
                                         and h.get("action") != "reject"), {})
            table.add_row(task, live or "-", str(len(reg.list_versions(task))), str(last.get("at", "-"))[:19],
                          str(last.get("who", "-")), _headline(meta.metrics) if meta else "")
        Console().print(table)

    @models.command("versions")
    @boundary
    def versions_cmd(
        task: Annotated[str, typer.Argument(help="Registry task, e.g. router, intent, next_activity.")],
    ) -> None:
        """A task's versions (newest first) with their gate results, then its history (who / when / why)."""
        reg = _registry()
        _check_task(reg, task)
        live = reg.live_version(task)
        table = Table(title=f"{task} versions")
        for c in ("version", "live", "headline metric", "gate"):
            table.add_column(c)
        for v in reversed(reg.list_versions(task)):
            meta = reg.read_metadata(task, v)
            gate = meta.extra.get("gate") or {}
            table.add_row(v, "yes" if v == live else "", _headline(meta.metrics), str(gate.get("verdict", "")))
        Console().print(table)
        hist = Table(title=f"{task} history")
        for c in ("at", "action", "version", "previous", "who", "why"):
            hist.add_column(c)
        for h in reversed(reg.history(task)):
            hist.add_row(*(str(h.get(k) or "")[:120] for k in ("at", "action", "version", "previous", "who",
                                                               "why")))
        Console().print(hist)

    @models.command("rollback")
    @boundary
    def rollback_cmd(
        task: Annotated[str, typer.Argument(help="Registry task to roll back.")],
        to: Annotated[str | None, typer.Option("--to", help="Version to make live (default: the one live "
                                                            "before the current one).")] = None,
        reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")] = None,
        by: Annotated[str | None, typer.Option("--by", help="Who asked for it (added to the OS user).")] = None,
    ) -> None:
        """Make the previous (or given) version live again; servers follow within seconds."""
        reg = _registry()
        _check_task(reg, task)
        previous, ref = reg.rollback(task, to=to, who=_who(by), why=reason or "rollback from the CLI")
        typer.echo(f"{task}: {previous} -> {ref.version} (live)")

    @models.command("promote")
    @boundary
    def promote_cmd(
        task: Annotated[str, typer.Argument(help="Registry task.")],
        version: Annotated[str, typer.Argument(help="Stored version to make live without the gate.")],
        reason: Annotated[str, typer.Option("--reason", help="Why the gate is overruled (required).")],
        by: Annotated[str | None, typer.Option("--by", help="Who asked for it (added to the OS user).")] = None,
    ) -> None:
        """Make a stored version live over the gate (recorded as a forced swap)."""
        reg = _registry()
        _check_task(reg, task)
        previous = reg.live_version(task)
        reg.promote(task, version, who=_who(by), why=reason, action="force")
        typer.echo(f"{task}: {previous} -> {version} (live, forced)")

    @models.command("retrain")
    @boundary
    def retrain_cmd(
        tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated tasks (default: all).")] = None,
        no_embeddings: Annotated[bool, typer.Option("--no-embeddings", help="TF-IDF intent model, no memory.")]
        = False,
        evaluate_only: Annotated[bool, typer.Option("--evaluate-only", help="Train and gate; promote nothing.")]
        = False,
        force: Annotated[bool, typer.Option("--force", help="Promote even when the gate rejects (recorded).")]
        = False,
        reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the history).")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the whole job as JSON.")] = False,
    ) -> None:
        """The gated retrain of POST /v1/models/retrain, in this process (same data, gate and job table)."""
        from sqlmodel import SQLModel

        from api.app import _import_tables, make_engine
        from api.retrain import RETRAIN_TASKS, RetrainManager, RetrainOptions, run_job_sync
        from core.errors import InvalidInput

        settings = get_settings()
        chosen = tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else RETRAIN_TASKS
        unknown = [t for t in chosen if t not in RETRAIN_TASKS]
        if unknown or not chosen:
            raise InvalidInput(f"--tasks: unknown task(s) {unknown}; choose from {', '.join(RETRAIN_TASKS)}",
                               field="tasks")
        if settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        _import_tables()
        SQLModel.metadata.create_all(engine)
        manager = RetrainManager(engine, settings.registry_path)
        try:
            job = manager.create(options=RetrainOptions(tasks=chosen, use_embeddings=not no_embeddings,
                                                        evaluate_only=evaluate_only, force=force, reason=reason),
                                 requested_by=_who(None))
            job = run_job_sync(settings, engine, job, manager)
        finally:
            engine.dispose()
        if json_out:
            typer.echo(json.dumps(job.to_json(), indent=2))
        else:
            gate = job.gate
            typer.echo(f"job {job.id}: {job.status} ({job.stage}); gate {gate.get('decision')}: {gate.get('reason')}")
            for task, entry in (gate.get("tasks") or {}).items():
                for name, m in (entry.get("metrics") or {}).items():
                    if m.get("champion") is None:
                        continue
                    typer.echo(f"  {task} {name}: live {m['champion']:.4f} vs challenger {m['challenger']:.4f} "
                               f"on {m['n']} (lower bound {m['lower_bound']:+.4f}, {m['verdict']})")
            if job.promoted:
                typer.echo("promoted: " + ", ".join(f"{t}={v}" for t, v in sorted(job.promoted.items())))
            if job.error:
                typer.echo(f"error: {job.error}", err=True)
        if job.status == "failed":
            raise typer.Exit(1)
