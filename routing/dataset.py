"""Training data from the service's own store: the live event log, ticket texts, and agents' corrections as labels.

What the store knows, and what it is used for:

* **events** (`ticket_event`) are the live log: process models (next activity, remaining time), the mined team
  labels of the router and the step outcomes learn from them, with the ticket's attributes on every row.
* **ticket texts** (`ticket`) are the router's and the ticket memory's inputs; `redact_ticket_table` redacts their
  text and custom fields of PII and turns person fields into the install's keyed tokens, the rule the service applies
  at the door and every ticket table meets before any model sees it (`deskpilot train --tickets` and the demo apply
  it through `flows.training.prepare_tickets`).
* **intent labels** come from agents only: the latest `corrected_intent` of a ticket's feedback (or the intent a
  historical ticket table carries). The intent the model itself predicted is not a label: training on it would
  only teach the model its own mistakes.
* **team labels**: the latest `corrected_team` of a ticket's feedback, handed to training as `team_labels` (used for
  cases the log has not resolved yet; a resolved case is labelled by the team that resolved it).

A historical log and ticket table (what the first models were trained on) can be added; a case that is also in the
store is taken from the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Table
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from core.errors import InvalidInput
from insight.eventlog import apply_privacy, clean, redact_series
from insight.eventlog.privacy import (
    RedactionCounts,
    is_person_field,
    pseudonym_prefix,
    pseudonymize,
)
from insight.eventlog.schema import (
    ACTIVITY,
    CANONICAL_COLUMNS,
    CASE_ID,
    CHANNEL,
    GROUP,
    RESOURCE,
    TIMESTAMP,
    EventLog,
)
from routing.models import Feedback, Ticket, TicketEvent

TEXT_COLUMNS = ("subject", "body")
# Ticket fields kept as they are in training data: ids, times, the schema's categories and the labels (teams are what
# the router predicts, not people).
_KEPT = frozenset({*CANONICAL_COLUMNS, "ticket_id", "created_at", "segment", "priority", "intent", "first_team",
                   "resolving_team"})
# Ticket columns written from the store; custom fields with these names are left out rather than overwrite them.
_RESERVED = frozenset({*CANONICAL_COLUMNS, "created_at", "subject", "body", "segment", "priority", "intent"})


@dataclass(frozen=True)
class TicketRedaction:
    """A ticket table as training may read it (`redact_ticket_table`): what was redacted, which person columns
    became keyed tokens."""

    table: pd.DataFrame
    redacted: RedactionCounts
    pseudonymized: tuple[str, ...] = ()


def _date_or_flag(values: pd.Series) -> bool:
    return bool(pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_bool_dtype(values))


def redact_ticket_table(tickets: pd.DataFrame, *, pseudonym_key: str | None) -> TicketRedaction:
    """A copy of a ticket table treated as the service treats a ticket at the door (routing.redaction), and what
    was changed.

    Free text (`TEXT_COLUMNS`) is redacted of PII; a column whose name says it holds a person (`requester`,
    `customer_email`, `assignee` …: `privacy.is_person_field`, and `resource`) becomes the install's keyed tokens
    with the prefix the service gives the same custom field (`pseudonym_prefix`), so a trained value is the value
    serving sees (without a key it is redacted like text, as at the door); every other text column (a custom
    field) is redacted like text. The ticket's own fields (`_KEPT`: ids, times, channel, segment, priority, the
    intent and team labels) are kept.

    Every ticket table bound for training passes here: the store's (`training_data`), `deskpilot train --tickets`
    and the demo's (`flows.training.prepare_tickets`).
    """
    out = tickets.copy()
    total = RedactionCounts()
    people: list[str] = []

    def add(counts: RedactionCounts) -> None:
        total.values_changed += counts.values_changed
        total.items.update(counts.items)

    for column in TEXT_COLUMNS:
        if column in out.columns:
            out[column], counts = redact_series(out[column].fillna("").astype(str))
            add(counts)
    for column in out.columns:
        name = str(column)
        if column in TEXT_COLUMNS or (name in _KEPT and name != RESOURCE) or _date_or_flag(out[column]):
            continue
        values = out[column]
        if (name == RESOURCE or is_person_field(name)) and pseudonym_key:
            # any type: the service receives custom fields as text, and an id read as 7.0 hashes like "7"
            out[column] = pseudonymize(values, key=pseudonym_key, prefix=pseudonym_prefix(name))
            people.append(name)
            continue
        if pd.api.types.is_string_dtype(values) or values.dtype == object:
            new, counts = redact_series(values)
            if counts.values_changed:
                out[column] = new
            add(counts)
    return TicketRedaction(table=out, redacted=total, pseudonymized=tuple(people))


@dataclass
class DataSummary:
    """Where the training data came from (counts), reported with every retrain."""

    live_tickets: int = 0
    live_events: int = 0
    live_cases: int = 0  # tickets with at least one event
    history_cases: int = 0
    history_tickets: int = 0
    history_cases_replaced: int = 0  # historical cases also in the store (the store's version is used)
    intent_labels: int = 0  # tickets with a known intent (corrections + history)
    intent_from_feedback: int = 0
    team_corrections: int = 0
    redacted_values: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class TrainingData:
    """What `flows.training.train_all` needs: the log, the ticket table and the agents' team corrections."""

    log: EventLog | None
    tickets: pd.DataFrame | None
    team_labels: dict[str, str] = field(default_factory=dict)
    summary: DataSummary = field(default_factory=DataSummary)


def _latest_corrections(session: Session) -> tuple[dict[str, str], dict[str, str]]:
    """Per ticket, the latest corrected intent and the latest corrected team (later feedback wins)."""
    intents: dict[str, str] = {}
    teams: dict[str, str] = {}
    stmt = select(Feedback.ticket_id, Feedback.corrected_intent, Feedback.corrected_team).order_by(col(Feedback.id))
    for ticket_id, intent, team in session.exec(stmt).all():
        if intent:
            intents[ticket_id] = intent
        if team:
            teams[ticket_id] = team
    return intents, teams


def _store_tickets(session: Session, corrected: dict[str, str]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for t in session.exec(select(Ticket).order_by(col(Ticket.id))).all():
        created = t.created_at or t.received_at
        row: dict[str, Any] = {k: v for k, v in (t.custom_fields or {}).items() if k not in _RESERVED}
        row.update({CASE_ID: t.ticket_id, "created_at": created, "subject": t.subject, "body": t.body,
                    CHANNEL: t.channel, "segment": t.segment, "priority": t.priority,
                    "intent": corrected.get(t.ticket_id),
                    # What the log's rows carry as the case's intent: the agent's word, else the model's.
                    "_intent_attr": corrected.get(t.ticket_id) or t.current_intent})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _store_events(session: Session) -> pd.DataFrame:
    ev: Table = TicketEvent.__table__  # type: ignore[attr-defined]
    stmt = sa_select(ev.c.case_id, ev.c.activity, ev.c.timestamp, ev.c.resource, ev.c.group, ev.c.channel).order_by(
        ev.c.case_id, ev.c.timestamp, ev.c.id)
    rows = session.connection().execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=[CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, GROUP, CHANNEL])
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)  # SQLite returns naive UTC
    return frame


def _live_log(events: pd.DataFrame, tickets: pd.DataFrame, pseudonym_key: str | None) -> EventLog | None:
    """Events with the ticket's attributes on every row, cleaned and pseudonymized like an ingested log."""
    if events.empty:
        return None
    attrs = [c for c in tickets.columns if c not in (CASE_ID, CHANNEL, "created_at", "subject", "body", "intent")]
    case = tickets.set_index(CASE_ID)[attrs].rename(columns={"_intent_attr": "intent"})
    df = events.join(case, on=CASE_ID)
    # The event's channel when the helpdesk sent one, else the ticket's.
    df[CHANNEL] = df[CHANNEL].fillna(events[CASE_ID].map(tickets.set_index(CASE_ID)[CHANNEL]))
    df = df.dropna(axis=1, how="all")
    log = clean(EventLog(df, name="live log"))
    if pseudonym_key:
        attrs_kept = list(log.case_attributes)
        log = apply_privacy(log, key=pseudonym_key, pseudonymize_columns=(RESOURCE,))
        log.case_attributes = attrs_kept
    return log


def training_data(
    *,
    session: Session,
    history_log: EventLog | None = None,
    history_tickets: pd.DataFrame | None = None,
    pseudonym_key: str | None = None,
) -> TrainingData:
    """Read the live log, ticket texts and corrections from the store (plus an optional history) for training."""
    summary = DataSummary()
    corrected_intents, corrected_teams = _latest_corrections(session)
    tickets = _store_tickets(session, corrected_intents)
    events = _store_events(session)
    summary.live_tickets, summary.live_events = len(tickets), len(events)
    summary.live_cases = int(events[CASE_ID].nunique()) if len(events) else 0
    summary.intent_from_feedback = sum(1 for t in tickets.get(CASE_ID, []) if t in corrected_intents)
    summary.team_corrections = len(corrected_teams)
    log = _live_log(events, tickets, pseudonym_key) if len(tickets) else None
    if len(tickets):
        tickets = tickets.drop(columns=["_intent_attr"])
    store_ids = set(tickets[CASE_ID]) if len(tickets) else set()

    if history_log is not None:
        hist = history_log.df
        hist_ids = set(hist[CASE_ID].astype(str))
        summary.history_cases_replaced = len(hist_ids & store_ids)
        keep = ~hist[CASE_ID].astype(str).isin(store_ids)
        summary.history_cases = len(hist_ids - store_ids)
        if keep.any():
            hist_log = EventLog(hist.loc[keep].reset_index(drop=True), name=history_log.name,
                                case_attributes=list(history_log.case_attributes))
            log = hist_log if log is None else clean(EventLog(
                pd.concat([hist_log.df, log.df], ignore_index=True), name=f"{history_log.name} + live log"))
    if history_tickets is not None:
        if CASE_ID not in history_tickets.columns:
            raise InvalidInput(f"the history ticket table lacks column {CASE_ID!r}; has {list(history_tickets.columns)}",
                               field="retrain_history_tickets")
        hist_t = history_tickets.assign(**{CASE_ID: history_tickets[CASE_ID].astype(str)})
        if "intent" in hist_t.columns and len(tickets):
            # A historical label still counts for a case the store holds, unless an agent corrected it since.
            known = hist_t.set_index(CASE_ID)["intent"]
            fill = tickets[CASE_ID].map(known)
            tickets["intent"] = tickets["intent"].where(tickets["intent"].notna(), fill)
        hist_t = hist_t[~hist_t[CASE_ID].isin(store_ids)]
        # Labels the history carries that the store re-derives (from its own log and corrections) are dropped.
        hist_t = hist_t.drop(columns=[c for c in ("first_team", "resolving_team") if c in hist_t.columns])
        if "created_at" in hist_t.columns:
            hist_t["created_at"] = pd.to_datetime(hist_t["created_at"], utc=True)
        summary.history_tickets = len(hist_t)
        tickets = hist_t.reset_index(drop=True) if tickets.empty else pd.concat([hist_t, tickets], ignore_index=True)

    if tickets.empty:
        return TrainingData(log=log, tickets=None, team_labels=corrected_teams, summary=summary)
    prepared = redact_ticket_table(tickets, pseudonym_key=pseudonym_key)
    tickets = prepared.table
    summary.redacted_values += prepared.redacted.values_changed
    if "intent" in tickets.columns:
        summary.intent_labels = int(tickets["intent"].notna().sum())
    return TrainingData(log=log, tickets=tickets, team_labels=corrected_teams, summary=summary)


class LiveLogReader:
    """The live log, read incrementally: each `read` fetches only the events stored since the previous one.

    Ticket attributes and agents' corrections are read whole each time (they change in place); the event rows,
    the bulk of the store, are append-only, so the reader keeps them and asks for rows past the last id it saw.
    """

    def __init__(self, *, pseudonym_key: str | None = None) -> None:
        self.pseudonym_key = pseudonym_key
        self.last_id = 0
        self._events = pd.DataFrame(columns=["_id", CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, GROUP, CHANNEL])

    @property
    def n_events(self) -> int:
        """Events held so far."""
        return len(self._events)

    def read(self, session: Session) -> tuple[EventLog | None, int]:
        """The live log as of now, and how many events were new since the previous read."""
        ev: Table = TicketEvent.__table__  # type: ignore[attr-defined]
        stmt = sa_select(ev.c.id, ev.c.case_id, ev.c.activity, ev.c.timestamp, ev.c.resource, ev.c.group,
                         ev.c.channel).where(ev.c.id > self.last_id).order_by(ev.c.id)
        rows = session.connection().execute(stmt).all()
        if rows:
            new = pd.DataFrame([tuple(r) for r in rows],
                               columns=["_id", CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, GROUP, CHANNEL])
            new[TIMESTAMP] = pd.to_datetime(new[TIMESTAMP], utc=True)  # SQLite returns naive UTC
            self._events = new if self._events.empty else pd.concat([self._events, new], ignore_index=True)
            self.last_id = int(new["_id"].max())
        if self._events.empty:
            return None, 0
        events = self._events.sort_values([CASE_ID, TIMESTAMP, "_id"], kind="stable").drop(columns="_id")
        corrected_intents, _ = _latest_corrections(session)
        tickets = _store_tickets(session, corrected_intents)
        if tickets.empty:
            return None, len(rows)
        return _live_log(events.reset_index(drop=True), tickets, self.pseudonym_key), len(rows)
