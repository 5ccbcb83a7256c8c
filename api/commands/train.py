"""`deskpilot train`: train every model into the registry (simulator or a log + ticket CSV), or one model on
any user data (`train intent|next-activity|remaining-time|router`), printing a metrics table and writing JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.commands import boundary
from api.settings import get_settings
from core.errors import InvalidInput

train_app = typer.Typer(help="Train models into the registry and report honest, time-ordered test metrics.",
                        invoke_without_command=True, no_args_is_help=False)

PresetOpt = Annotated[str | None, typer.Option(help="Known log layout, e.g. servicenow, bpic2013_vinst.")]
MappingOpt = Annotated[Path | None, typer.Option("--mapping", help="JSON file {source column: canonical}.")]
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="SOURCE=CANONICAL, repeatable.")]
RegistryOpt = Annotated[Path | None, typer.Option("--registry", help="Registry folder (default: settings).")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed (default: settings).")]
NoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Evaluate only; write nothing to the registry.")]
TestFracOpt = Annotated[float, typer.Option("--test-fraction", help="Newest share of cases held out.")]
SampleFractionOpt = Annotated[float | None, typer.Option(
    "--sample-fraction", help="Fit on this share (0 < f <= 1) of the training cases, whole cases sampled per "
    "--sample-window of case start; every test case is still scored (default: every case).")]
MaxTrainCasesOpt = Annotated[int | None, typer.Option(
    "--max-train-cases", help="Fit on at most this many cases, sampled like --sample-fraction (give one of the "
    "two).")]
SampleWindowOpt = Annotated[str | None, typer.Option(
    "--sample-window", help="Window of case start in which the sample keeps each period's share, a duration such "
    "as 7D or 12h (default: 7D).")]
_SAMPLE_OPTIONS = {"sample_fraction": "--sample-fraction", "max_train_cases": "--max-train-cases",
                   "sample_window": "--sample-window"}


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _show(models: list[Any], json_path: Path | None, extra: dict[str, Any] | None = None) -> None:
    console = Console()
    table = Table(title="deskpilot train")
    for col in ("model", "metric", "value"):
        table.add_column(col)
    for m in models:
        for k, v in _flat(m.metrics):
            table.add_row(m.task, k, f"{v:.4f}" if isinstance(v, float) else str(v))
        if m.version:
            table.add_row(m.task, "saved as", f"{m.version} ({m.path})")
    console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"models": [m.to_dict() for m in models], **(extra or {})}
        json_path.write_text(json.dumps(payload, indent=2, default=str))
        console.print(f"wrote {json_path}")


def _case_sample(fraction: float | None, max_cases: int | None, window: str | None) -> Any:
    """The case sample the options ask for (flows.training.CaseSample), or None; a bad value names its option."""
    from flows.training import CaseSample

    if fraction is None and max_cases is None and window is None:
        return None
    try:
        return CaseSample(fraction=fraction, max_cases=max_cases, window=window)
    except InvalidInput as exc:
        field = exc.context.get("field")
        raise InvalidInput(f"{_SAMPLE_OPTIONS.get(str(field), 'sample')}: {exc.message}", field=field) from exc


def _sample_kwargs(sample: Any) -> dict[str, Any]:
    return sample.kwargs() if sample is not None else {}


def _registry(path: Path | None, no_save: bool) -> Any:
    from insight.models.registry import ModelRegistry

    if no_save:
        return None
    return ModelRegistry(path or get_settings().registry_path)


def _read_log(path: Path, preset: str | None, mapping: Path | None, map_: list[str] | None) -> Any:
    from api.commands.ingest import _parse_mapping
    from insight.eventlog import ingest

    m = _parse_mapping(mapping, map_)
    return ingest(path, preset=preset, mapping=m or None,
                  pseudonym_key=get_settings().pseudonym_key.get_secret_value())


@train_app.callback()
@boundary
def train_all_cmd(
    ctx: typer.Context,
    log: Annotated[Path | None, typer.Option("--log", help="Event log (default: simulate one).")] = None,
    tickets: Annotated[Path | None, typer.Option("--tickets", help="Ticket CSV: case_id, subject, body, ...")] = None,
    preset: PresetOpt = None,
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    cases: Annotated[int, typer.Option("--cases", help="Simulated cases when no --log is given.")] = 3000,
    registry: RegistryOpt = None,
    json_out: JsonOpt = None,
    seed: SeedOpt = None,
    no_embeddings: Annotated[bool, typer.Option("--no-embeddings", help="Intent model without the embedder.")] = False,
    no_save: NoSaveOpt = False,
    sample_fraction: SampleFractionOpt = None,
    max_train_cases: MaxTrainCasesOpt = None,
    sample_window: SampleWindowOpt = None,
) -> None:
    """Train intent, router, next-activity, remaining-time, memory and step outcomes (simulator unless --log).
    A case sample (--sample-fraction / --max-train-cases) applies to the router, next-activity and remaining-time
    models; the others read every case."""
    if ctx.invoked_subcommand is not None:
        return
    import pandas as pd

    from flows.training import train_and_store

    sample = _case_sample(sample_fraction, max_train_cases, sample_window)
    settings = get_settings()
    s = settings.seed if seed is None else seed
    t0 = time.perf_counter()
    if log is None:
        from insight.simulate import simulate

        sim = simulate(n_cases=cases, seed=s)
        ev, tk = sim.log, sim.tickets
    else:
        ev = _read_log(log, preset, mapping, map_)
        tk = pd.read_csv(tickets) if tickets is not None else None
    # train_and_store prepares the tickets as the service does at the door (flows.training.prepare_tickets: text
    # redacted, person columns as the install's keyed tokens) before any model or file sees them.
    embedder = None
    if not no_embeddings:
        from core.embedding import Embedder

        embedder = Embedder(settings.embedding_model_path, **settings.embedder_kwargs)
    report = train_and_store(log=ev, tickets=tk, registry=_registry(registry, no_save), embedder=embedder,
                             seed=s, source=str(log) if log is not None else f"simulator ({cases} cases)",
                             pseudonym_key=settings.pseudonym_key.get_secret_value(), sample=sample)
    _show(report.models, json_out, {"skipped": report.skipped, "registry": report.registry})
    for task, why in report.skipped.items():
        typer.echo(f"skipped {task}: {why}")
    typer.echo(f"trained {len(report.models)} model(s) in {time.perf_counter() - t0:.0f}s")


INTENT_METRIC_NAMES = ("in_scope_accuracy", "oos_recall", "oos_precision", "accuracy", "macro_f1", "threshold")
INTENT_COUNT_NAMES = ("n_train", "n_validation", "n_test", "n_test_in_scope", "n_test_oos", "n_flagged",
                      "n_test_in_scope_flagged")


def _read_intent_csv(p: Path, what: str) -> tuple[list[str], list[str]]:
    import pandas as pd

    if not p.is_file():
        raise InvalidInput(f"{what} file {p} does not exist", field=what)
    try:
        df = pd.read_csv(p)
    except (ValueError, UnicodeDecodeError) as e:  # empty file, bad encoding, broken quoting
        raise InvalidInput(f"{what} file {p} is not a readable CSV: {e}", field=what) from e
    text_col = next((c for c in ("text", "sentence", "utterance") if c in df.columns), None)
    label_col = next((c for c in ("label", "category", "intent") if c in df.columns), None)
    if text_col is None or label_col is None:
        raise InvalidInput(f"{what} file {p} needs a text column (text, sentence or utterance) and a label column "
                           f"(label, category or intent); it has {list(df.columns)}", field=what)
    df = df.dropna(subset=[text_col, label_col])
    if df.empty:
        raise InvalidInput(f"{what} file {p} has no rows with both a text and a label", field=what)
    return df[text_col].astype(str).tolist(), df[label_col].astype(str).str.strip().tolist()


def _redacted_intent_texts(console: Console, *sets: list[str] | None) -> list[Any]:
    """Each set of intent texts redacted of PII (flows.training.prepare_texts) before the model or its stored
    vocabulary sees them; None stays None."""
    from flows.training import prepare_texts

    out: list[Any] = []
    changed = 0
    for texts in sets:
        if texts is None:
            out.append(None)
            continue
        clean, counts = prepare_texts(texts)
        changed += counts.values_changed
        out.append(clean)
    if changed:
        console.print(f"PII redacted from {changed} text(s) before training")
    return out


class _RichProgress:
    """progress(step, done, total) on a rich progress bar, one bar per step."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(step, total=total)
        self.progress.update(self.tasks[step], completed=done, total=total)


@train_app.command("intent")
@boundary
def train_intent_cmd(
    csv: Annotated[Path, typer.Argument(help="CSV with a text column (text, sentence or utterance) and a label "
                                             "column (label, category or intent).")],
    validation: Annotated[Path | None, typer.Option(
        "--validation", help="Validation CSV (same columns): the out-of-scope score and threshold are chosen on it "
        "(else on inner folds of the training rows with held-out intents as pseudo out-of-scope).")] = None,
    test: Annotated[Path | None, typer.Option(
        "--test", help="Test CSV (same columns); else a shuffled, stratified 20 % of the rows is held out.")] = None,
    oos_label: Annotated[str, typer.Option(
        "--oos-label", help="Label of known out-of-scope rows (used for calibration, never an intent).")] = "oos",
    max_in_scope_flagged: Annotated[float | None, typer.Option(
        "--max-in-scope-flagged", help="Largest share of in-scope validation tickets the out-of-scope threshold may "
        "flag (default: the model's).")] = None,
    metrics_out: Annotated[Path | None, typer.Option(
        "--metrics-out", help="Write the test metrics as JSON: in_scope_accuracy, oos_recall, oos_precision, "
        "accuracy, macro_f1, threshold (fractions) and the counts.")] = None,
    refit: Annotated[bool, typer.Option(
        "--refit/--no-refit", help="Refit the saved model on all rows (train + validation + test) after scoring.",
    )] = True,
    registry: RegistryOpt = None,
    json_out: JsonOpt = None,
    seed: SeedOpt = None,
    no_embeddings: Annotated[bool, typer.Option("--no-embeddings", help="TF-IDF features only.")] = False,
    no_save: NoSaveOpt = False,
) -> None:
    """Train the intent classifier with its out-of-scope flag; test in-scope accuracy, OOS recall / precision,
    overall accuracy and macro-F1, then refit on all rows and save. Every text is redacted of PII first, by the
    rule a ticket's text meets at the door."""
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from insight.training import train_intent

    settings = get_settings()
    console = Console(stderr=True)
    texts, labels = _read_intent_csv(csv, "training")
    tt, tl = _read_intent_csv(test, "test") if test is not None else (None, None)
    vt, vl = _read_intent_csv(validation, "validation") if validation is not None else (None, None)
    texts, tt, vt = _redacted_intent_texts(console, texts, tt, vt)
    embedder = None
    if not no_embeddings:
        from core.embedding import Embedder

        embedder = Embedder(settings.embedding_model_path, **settings.embedder_kwargs)
    with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unseen test labels: printed below from the metrics
        m = train_intent(texts=texts, labels=labels, test_texts=tt, test_labels=tl, validation_texts=vt,
                         validation_labels=vl, oos_label=oos_label, embedder=embedder,
                         registry=_registry(registry, no_save), seed=settings.seed if seed is None else seed,
                         refit=refit, max_in_scope_flagged=max_in_scope_flagged, progress=_RichProgress(bar))
    _show([m], json_out)
    for warning in m.metrics.get("warnings", []):
        console.print(f"[yellow]warning[/yellow]: {warning}")
    if metrics_out is not None:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: m.metrics.get(k) for k in INTENT_METRIC_NAMES + INTENT_COUNT_NAMES}
        metrics_out.write_text(json.dumps(payload, indent=2))
        Console().print(f"wrote {metrics_out}")


def _split_or_test(log_path: Path, test: Path | None, preset: str | None, mapping: Path | None,
                   map_: list[str] | None) -> tuple[Any, Any]:
    train = _read_log(log_path, preset, mapping, map_)
    return train, (_read_log(test, preset, mapping, map_) if test is not None else None)


CaseFeaturesOpt = Annotated[str | None, typer.Option(
    "--case-features", help="Comma-separated trace-level (case) columns known when a case is created, used as "
    "features; none by default. Columns that name the whole trace (variant, case id, event count) are refused.")]
PrefixMetricsOpt = Annotated[Path | None, typer.Option(
    "--metrics-out", help="Write the test metrics (fractions / hours, baselines measured in the same run) as JSON.")]


def _prefix_metrics_out(path: Path | None, m: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m.metrics, indent=2, default=str))
    Console().print(f"wrote {path}")


def _case_feature_list(value: str | None) -> list[str] | None:
    return [f.strip() for f in value.split(",") if f.strip()] if value else None


@train_app.command("next-activity")
@boundary
def train_next_cmd(
    log: Annotated[Path, typer.Argument(help="Event log (CSV/XES/Parquet).")],
    test: Annotated[Path | None, typer.Option("--test", help="Separate test log (else newest cases held out).")] = None,
    preset: PresetOpt = None,
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    case_features: CaseFeaturesOpt = None,
    test_fraction: TestFracOpt = 0.2,
    registry: RegistryOpt = None,
    json_out: JsonOpt = None,
    metrics_out: PrefixMetricsOpt = None,
    seed: SeedOpt = None,
    no_save: NoSaveOpt = False,
    sample_fraction: SampleFractionOpt = None,
    max_train_cases: MaxTrainCasesOpt = None,
    sample_window: SampleWindowOpt = None,
) -> None:
    """Train the next-activity model; accuracy on every test prefix vs bigram, majority and n-gram baselines.
    The saved model is then refitted on all cases (train + test; sampled by the same rule when asked)."""
    from insight.training import train_next_activity

    sample = _case_sample(sample_fraction, max_train_cases, sample_window)
    train, te = _split_or_test(log, test, preset, mapping, map_)
    m = train_next_activity(log=train, test_log=te, registry=_registry(registry, no_save),
                            seed=get_settings().seed if seed is None else seed, test_fraction=test_fraction,
                            case_features=_case_feature_list(case_features), **_sample_kwargs(sample))
    _show([m], json_out)
    _prefix_metrics_out(metrics_out, m)


@train_app.command("remaining-time")
@boundary
def train_remaining_cmd(
    log: Annotated[Path, typer.Argument(help="Event log (CSV/XES/Parquet).")],
    test: Annotated[Path | None, typer.Option("--test", help="Separate test log (else newest cases held out).")] = None,
    preset: PresetOpt = None,
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    case_features: CaseFeaturesOpt = None,
    sla_hours: Annotated[float | None, typer.Option("--sla-hours", help="Target resolution time.")] = None,
    test_fraction: TestFracOpt = 0.2,
    registry: RegistryOpt = None,
    json_out: JsonOpt = None,
    metrics_out: PrefixMetricsOpt = None,
    seed: SeedOpt = None,
    no_save: NoSaveOpt = False,
    sample_fraction: SampleFractionOpt = None,
    max_train_cases: MaxTrainCasesOpt = None,
    sample_window: SampleWindowOpt = None,
) -> None:
    """Train remaining-time and SLA-breach models; MAE vs the per-prefix-length median of training prefixes.
    The saved models are then refitted on all cases (train + test; sampled by the same rule when asked)."""
    from insight.training import train_remaining_time

    sample = _case_sample(sample_fraction, max_train_cases, sample_window)
    train, te = _split_or_test(log, test, preset, mapping, map_)
    m = train_remaining_time(log=train, test_log=te, registry=_registry(registry, no_save),
                             seed=get_settings().seed if seed is None else seed, sla_hours=sla_hours,
                             test_fraction=test_fraction, case_features=_case_feature_list(case_features),
                             **_sample_kwargs(sample))
    _show([m], json_out)
    _prefix_metrics_out(metrics_out, m)


@train_app.command("router")
@boundary
def train_router_cmd(
    log: Annotated[Path, typer.Argument(help="Event log with a team (group) column.")],
    features: Annotated[str | None, typer.Option(
        "--features", help="Comma-separated columns known at creation (read from each case's first event).")] = None,
    tickets: Annotated[Path | None, typer.Option("--tickets", help="Ticket CSV with case_id, text and fields.")] = None,
    preset: PresetOpt = None,
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    test_fraction: TestFracOpt = 0.2,
    registry: RegistryOpt = None,
    json_out: JsonOpt = None,
    router_metrics_out: Annotated[Path | None, typer.Option(
        "--metrics-out", help="Write the test metrics as JSON: accuracy, accuracy_reassigned, the baselines "
        "baseline_first_team_accuracy, baseline_majority_given_first_team_accuracy, baseline_majority_accuracy "
        "(fractions, same split) and the selected strategy.")] = None,
    seed: SeedOpt = None,
    no_save: NoSaveOpt = False,
    history: Annotated[bool, typer.Option(
        "--history/--no-history", help="Add the history evidence: teams that resolved earlier tickets with the same "
        "attribute values (only resolutions known before each ticket's creation count); weighed on validation.",
    )] = True,
    live_memory: Annotated[bool, typer.Option(
        "--live-memory/--frozen-memory", help="Whether the deployment feeds resolutions to the router's memory as "
        "they arrive (the service does when it receives resolve / close events with a team): chooses how "
        "validation and the headline `accuracy` treat the history evidence (frozen = as it stood when training "
        "ended).")] = True,
    sample_fraction: SampleFractionOpt = None,
    max_train_cases: MaxTrainCasesOpt = None,
    sample_window: SampleWindowOpt = None,
) -> None:
    """Train the resolving-team router (labels mined from the log) against the trivial rules (first team, majority
    given the first team, majority), choose on validation, report the test split, refit on all cases and save."""
    import pandas as pd

    from flows.training import prepare_tickets
    from insight.training import train_router

    sample = _case_sample(sample_fraction, max_train_cases, sample_window)
    key = get_settings().pseudonym_key.get_secret_value()
    ev = _read_log(log, preset, mapping, map_)
    tk = prepare_tickets(pd.read_csv(tickets), pseudonym_key=key).table if tickets is not None else None
    feats = [f.strip() for f in features.split(",") if f.strip()] if features else None
    m = train_router(log=ev, tickets=tk, features=feats, registry=_registry(registry, no_save),
                     seed=get_settings().seed if seed is None else seed, test_fraction=test_fraction,
                     params={"history": history}, live_memory=live_memory, **_sample_kwargs(sample))
    _show([m], json_out)
    for warning in m.metrics.get("warnings", []):
        Console(stderr=True).print(f"[yellow]warning[/yellow]: {warning}")
    if router_metrics_out is not None:
        router_metrics_out.parent.mkdir(parents=True, exist_ok=True)
        router_metrics_out.write_text(json.dumps(m.metrics, indent=2, default=str))
        Console().print(f"wrote {router_metrics_out}")


def register(app: typer.Typer) -> None:
    """Add `deskpilot train` and its per-model sub-commands to the CLI."""
    app.add_typer(train_app, name="train")
