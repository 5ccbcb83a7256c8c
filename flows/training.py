"""Train every model of a deployment from one mined log and its ticket table.

`train_all` runs the per-model trainers of `insight.training` and the assist step outcomes (what followed each step
in the log) into one registry; `train_and_store` is what `deskpilot train` and the demo run: the ticket table
treated as the service treats a ticket at the door (`prepare_tickets`: text redacted, person fields pseudonymized),
every task, then the training data stored with the registry as the history a later retrain adds the live data to.
`prepare_texts` is the same redaction for bare texts (`deskpilot train intent`). A `CaseSample` trains the prefix
models and the router on whole cases sampled per start window, for logs too large to fit on in full.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from assist.actions import TASK_STEP_OUTCOMES, train_step_outcomes
from core.errors import InvalidInput
from insight.eventlog.privacy import RedactionCounts, redact_series
from insight.eventlog.schema import GROUP, EventLog
from insight.models.registry import ModelRegistry
from insight.training import (
    ROUTER_TEXT,
    TASK_INTENT,
    TASK_MEMORY,
    TASK_MISROUTE,
    TASK_NEXT_ACTIVITY,
    TASK_REMAINING_TIME,
    TASK_ROUTER,
    TrainedModel,
    apply_team_corrections,
    ticket_texts,
    train_intent,
    train_memory,
    train_misroute,
    train_next_activity,
    train_remaining_time,
    train_router,
)
from routing.dataset import TicketRedaction, redact_ticket_table

MODEL_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_MISROUTE, TASK_NEXT_ACTIVITY, TASK_REMAINING_TIME,
                                TASK_MEMORY)
ALL_TASKS: tuple[str, ...] = (*MODEL_TASKS, TASK_STEP_OUTCOMES)


# A ticket table ready for training: text and custom fields redacted of PII, person columns as keyed tokens.
TrainingTickets = TicketRedaction


def prepare_tickets(tickets: pd.DataFrame, *, pseudonym_key: str | None) -> TrainingTickets:
    """The ticket table as training may read it, before any model or the registry's stored training data sees it:
    `routing.dataset.redact_ticket_table`, the rule the service applies at the door and its own store meets too.
    `pseudonym_key` is the install's (settings.pseudonym_key), so a person column's tokens are the ones serving
    gives the same custom field."""
    return redact_ticket_table(tickets, pseudonym_key=pseudonym_key)


def prepare_texts(texts: list[str]) -> tuple[list[str], RedactionCounts]:
    """Bare texts (an intent CSV) redacted of PII by the rule ticket text meets (each distinct text read once)."""
    if not texts:
        return [], RedactionCounts()
    out, counts = redact_series(pd.Series(texts, dtype=object))
    return [str(t) for t in out], counts


@dataclass(frozen=True)
class CaseSample:
    """Whole cases sampled per start window for the models that support it (next activity, remaining time, the
    router; `insight.models.split.sample_case_ids`): give `fraction` in (0, 1] or `max_cases`, not both; `window`
    is a fixed duration (default: the trainers'). The models' metadata record the sample (`train_sample`)."""

    fraction: float | None = None
    max_cases: int | None = None
    window: str | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None and self.max_cases is not None:
            raise InvalidInput("give a sample fraction or a largest number of training cases, not both",
                               field="max_train_cases")
        if self.fraction is not None and (not math.isfinite(self.fraction) or not 0 < self.fraction <= 1):
            raise InvalidInput(f"the sample fraction must be in (0, 1], got {self.fraction:g}",
                               field="sample_fraction")
        if self.max_cases is not None and self.max_cases < 1:
            raise InvalidInput(f"the largest number of training cases must be at least 1, got {self.max_cases}",
                               field="max_train_cases")
        if self.window is not None:
            if self.fraction is None and self.max_cases is None:
                raise InvalidInput("a sample window needs a sample fraction or a largest number of training cases",
                                   field="sample_window")
            try:
                length = pd.Timedelta(self.window)
            except (TypeError, ValueError):
                length = None
            if length is None or pd.isna(length) or length <= pd.Timedelta(0):
                raise InvalidInput(f"the sample window must be a positive fixed duration such as 7D or 12h, got "
                                   f"{self.window!r}", field="sample_window")

    def kwargs(self) -> dict[str, Any]:
        """The trainers' keyword arguments (`sample_fraction`, `max_train_cases`, `sample_window`)."""
        out: dict[str, Any] = {"sample_fraction": self.fraction, "max_train_cases": self.max_cases}
        if self.window is not None:
            out["sample_window"] = self.window
        return out


@dataclass
class TrainingReport:
    """Everything `train_all` produced."""

    registry: str | None
    models: list[TrainedModel]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"registry": self.registry, "models": [m.to_dict() for m in self.models], "skipped": self.skipped}


def train_all(
    *, log: EventLog, tickets: pd.DataFrame | None, registry: ModelRegistry | str | Path | None,
    embedder: Any = None, seed: int = 7, test_fraction: float = 0.2, promote: bool = True,
    tasks: tuple[str, ...] = MODEL_TASKS,
    team_labels: Mapping[str, str] | None = None, sample: CaseSample | None = None,
) -> TrainingReport:
    """Train intent (if tickets carry text + intent), router, misroute, next-activity, remaining-time and the
    ticket memory into the registry; the assist step outcomes too when `tasks` names them (`ALL_TASKS`).

    The intent model learns from the tickets whose `intent` is known (rows without one are left out of it);
    `team_labels` are agents' team corrections, used by the router for cases the log has not resolved yet.
    The tickets are read as given: a table from outside the store goes through `prepare_tickets` first
    (`train_and_store` does that; the store's own table comes prepared from `routing.dataset.training_data`).
    `sample` (default: every case) trains the router, next-activity and remaining-time models on a case sample;
    the other models read every case.
    """
    reg = registry if isinstance(registry, ModelRegistry) or registry is None else ModelRegistry(registry)
    sampled = sample.kwargs() if sample is not None else {}
    models: list[TrainedModel] = []
    skipped: dict[str, str] = {}
    if TASK_INTENT in tasks:
        labelled = (tickets[tickets["intent"].notna() & (tickets["intent"].astype(str).str.strip() != "")]
                    if tickets is not None and "intent" in tickets.columns else None)
        if labelled is not None and len(labelled) and any(c in labelled.columns for c in ROUTER_TEXT):
            t, texts = ticket_texts(labelled)
            models.append(train_intent(texts=texts, labels=t["intent"].astype(str).tolist(), embedder=embedder,
                                       registry=reg, seed=seed, test_fraction=test_fraction, promote=promote))
        else:
            skipped[TASK_INTENT] = "no ticket table with text and an `intent` column"
    if TASK_ROUTER in tasks:
        if log.has(GROUP) and tickets is not None:
            models.append(train_router(log=log, tickets=tickets, registry=reg, seed=seed,
                                       test_fraction=test_fraction, promote=promote, team_labels=team_labels,
                                       **sampled))
        else:
            skipped[TASK_ROUTER] = "needs a log with a group column and a ticket table"
    if TASK_MISROUTE in tasks:
        if log.has(GROUP) and tickets is not None:
            try:
                # The proxy comparison fits a second router; bench/misroute.py measures it, training skips it.
                models.append(train_misroute(log=log, tickets=tickets, registry=reg, seed=seed,
                                             test_fraction=test_fraction, promote=promote, team_labels=team_labels,
                                             proxy=False))
            except InvalidInput as exc:  # e.g. too few misrouted cases: triage then says it has no misroute model
                skipped[TASK_MISROUTE] = exc.message
        else:
            skipped[TASK_MISROUTE] = "needs a log with a group column and a ticket table"
    from insight.models.prefix_features import trace_attribute_problem

    # Trace-level attributes the ticket table also holds were known when the ticket was created (a column that
    # names the whole trace is left out rather than refused: train_all runs unattended).
    creation = [c for c in log.case_attributes if tickets is not None and c in tickets.columns
                and trace_attribute_problem(log.df, c) is None]
    if TASK_NEXT_ACTIVITY in tasks:
        models.append(train_next_activity(log=log, registry=reg, seed=seed, test_fraction=test_fraction,
                                          promote=promote, case_features=creation, **sampled))
    if TASK_REMAINING_TIME in tasks:
        models.append(train_remaining_time(log=log, registry=reg, seed=seed, test_fraction=test_fraction,
                                           promote=promote, case_features=creation, **sampled))
    if TASK_MEMORY in tasks:
        if tickets is not None and embedder is not None and any(c in tickets.columns for c in ROUTER_TEXT):
            from insight.mining.labels import case_labels

            labels = case_labels(log).df if log.has(GROUP) else None
            if labels is not None:
                labels = labels.set_axis(labels.index.astype(str))
                if team_labels:
                    apply_team_corrections(labels, log, team_labels)
            models.append(train_memory(tickets=tickets, embedder=embedder, registry=reg, promote=promote,
                                       labels=labels))
        else:
            skipped[TASK_MEMORY] = "needs a ticket table with text and an embedding model"
    if TASK_STEP_OUTCOMES in tasks:
        # What followed each step in this log: assist ranks next-best actions by it (expected hours, SLA risk).
        models.append(train_step_outcomes(log=log, registry=reg, promote=promote))
    return TrainingReport(registry=str(reg.root) if reg else None, models=models, skipped=skipped)


def train_and_store(
    *, log: EventLog, tickets: pd.DataFrame | TrainingTickets | None, registry: ModelRegistry | str | Path | None,
    embedder: Any = None, seed: int = 7, source: str, pseudonym_key: str | None = None,
    sample: CaseSample | None = None,
) -> TrainingReport:
    """Every task of `ALL_TASKS` into the registry (`sample` as for `train_all`), then the log and tickets stored
    with it (`source` says where they came from): a later retrain (API or `deskpilot models retrain`) adds the live
    data to this history.

    A raw ticket table is prepared here (`prepare_tickets` with `pseudonym_key`, the install's key); one already
    prepared is taken as it is."""
    reg = registry if isinstance(registry, ModelRegistry) or registry is None else ModelRegistry(registry)
    prepared = (tickets if tickets is None or isinstance(tickets, TicketRedaction)
                else prepare_tickets(tickets, pseudonym_key=pseudonym_key))
    table = prepared.table if prepared is not None else None
    report = train_all(log=log, tickets=table, registry=reg, embedder=embedder, seed=seed, tasks=ALL_TASKS,
                       sample=sample)
    if reg is not None:
        reg.save_training_data(log, table, source=source)
    return report
