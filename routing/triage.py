"""Triage: from a new ticket to intent, team, risks, a decision and the reasons — a pure function of the models.

`load_bundle` reads the live models from the registry once (the service hot-swaps whole bundles); `decide` and
`decide_batch` never touch storage, so the same code serves the HTTP API, the CLI and the benchmarks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ModelArtifactError, ModelNotReady
from insight.eventlog.schema import ACTIVITY, CASE_ID, CHANNEL, TIMESTAMP
from insight.models.registry import ModelRegistry
from routing.live_memory import ReadWriteLock
from routing.models import (
    Decision,
    DecisionThresholds,
    Risks,
    SimilarTicket,
    TeamScore,
    TicketIn,
    TriageResult,
)

TASKS = ("intent", "router", "misroute", "next_activity", "remaining_time", "memory")
HOW_TO_TRAIN = "run `deskpilot train` (or `make run`) to train and register models"
# Text as the models were trained on it (see insight.training): intent reads "subject. body", the router
# reads subject and body joined by a blank line.
ROUTER_TEXT_COLUMN = "__text__"
FIRST_ACTIVITY = "Ticket created"


def intent_text(ticket: TicketIn) -> str:
    """Ticket text the way the intent model was trained on it."""
    return ". ".join(p for p in (ticket.subject, ticket.body) if p)


class CachingEmbedder:
    """Wraps an embedder so the intent model and the ticket memory embed each text once per request."""

    def __init__(self, inner: Any, *, max_items: int = 4096) -> None:
        self.inner = inner
        self.max_items = max_items
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Name of the wrapped model."""
        return str(self.inner.name)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the wrapped model."""
        return str(self.inner.fingerprint)

    def clear(self) -> None:
        """Forget every cached vector (the next encode of a text runs the model again)."""
        with self._lock:
            self._cache.clear()

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Encode, reusing vectors of texts seen recently."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = self.inner.encode(missing, show_progress=show_progress)
            with self._lock:
                for t, v in zip(missing, vecs, strict=True):
                    self._cache[t] = v
                while len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
        with self._lock:
            hit = [self._cache.get(t) for t in texts]
        vectors = [v for v in hit if v is not None]
        if len(vectors) < len(texts):  # evicted by a concurrent request: encode directly
            return np.asarray(self.inner.encode(list(texts)), dtype=np.float32)
        return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)


@dataclass
class ModelBundle:
    """The live models the service routes with, and their versions; a missing model leaves its field None."""

    intent: Any = None
    router: Any = None
    misroute: Any = None  # insight.models.misroute.MisrouteModel: risks.misroute; without it the risk is None
    next_activity: Any = None
    remaining_time: Any = None
    memory: Any = None
    embedder: Any = None
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    router_meta: dict[str, Any] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The router's live memory (routing.live_memory): resolutions stored after this time are applied on top of
    # the fitted memory; rank() reads under memory_lock, observe() writes under it.
    router_trained_until: datetime | None = None
    memory_refresh_seconds: float = 1.0
    memory_lock: ReadWriteLock = field(default_factory=ReadWriteLock, repr=False)
    memory_sync_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    memory_hwm: int = 0
    memory_checked: float = float("-inf")
    memory_gaps: dict[int, float] = field(default_factory=dict, repr=False)
    memory_applied: int = 0

    @property
    def ready(self) -> bool:
        """True when tickets can be routed (an intent model or a router)."""
        return self.intent is not None or self.router is not None


def load_bundle(registry_path: str | Path, embedder: Any = None) -> ModelBundle:
    """Load every live model from the registry; raises ModelNotReady when there is none to route with."""
    reg = ModelRegistry(registry_path)
    wrapped = CachingEmbedder(embedder) if embedder is not None else None
    bundle = ModelBundle(embedder=wrapped)
    for task in TASKS:
        if reg.live_version(task) is None:
            continue
        art = reg.load(task)
        model = art.model
        if hasattr(model, "set_embedder") and getattr(model, "embedder_name_", None) is not None:
            if wrapped is None:
                raise ModelArtifactError(f"the {task} model needs an embedding model; none was given")
            model.set_embedder(wrapped)
        elif task == "intent" and getattr(model, "embedder_fingerprint_", None) is not None:
            if wrapped is None:
                raise ModelArtifactError("the intent model needs an embedding model; none was given")
            model.set_embedder(wrapped)
        setattr(bundle, task, model)
        bundle.versions[task] = art.metadata.version
        bundle.metrics[task] = dict(art.metadata.metrics or {})
        if task == "router":
            bundle.router_meta = dict(art.metadata.extra or {})
            window = list(art.metadata.training_window or [])
            if window:
                end = pd.to_datetime(window[-1], utc=True, errors="coerce")
                bundle.router_trained_until = None if pd.isna(end) else end.to_pydatetime()
    if not bundle.ready:
        raise ModelNotReady(f"no trained intent or routing model in {registry_path}; {HOW_TO_TRAIN}")
    return bundle


def _router_rows(bundle: ModelBundle, tickets: list[TicketIn], intents: list[str | None]) -> list[dict[str, Any]]:
    """One record per ticket with the columns the router and the misroute model read (absent = missing)."""
    aliases = {m.text for m in (bundle.router, bundle.misroute) if m is not None and m.text} - {ROUTER_TEXT_COLUMN}
    rows = []
    for t, intent in zip(tickets, intents, strict=True):
        row: dict[str, Any] = {"channel": t.channel, "segment": t.segment, "priority": t.priority,
                               "intent": intent}
        row.update(t.custom_fields)
        row[ROUTER_TEXT_COLUMN] = " \n ".join(p for p in (t.subject, t.body) if p)
        for alias in aliases:
            row[alias] = row[ROUTER_TEXT_COLUMN]
        rows.append(row)
    return rows


def _risk_events(bundle: ModelBundle, tickets: list[TicketIn], intents: list[str | None],
                 teams: list[str | None]) -> list[dict[str, Any]]:
    """One event per ticket (its creation), carrying what the remaining-time model reads.

    Case ids are the tickets' positions, zero-padded: prefixes come back in case-id order, so row i is ticket i
    (ticket ids would sort "t-10" before "t-2", and a repeated id would merge two tickets into one case).
    """
    enc = bundle.remaining_time.encoder_
    now = datetime.now(UTC)
    width = len(str(len(tickets)))
    events = []
    for i, (t, intent, team) in enumerate(zip(tickets, intents, teams, strict=True)):
        event: dict[str, Any] = {CASE_ID: str(i).zfill(width), ACTIVITY: FIRST_ACTIVITY,
                                 TIMESTAMP: t.created_at or now, CHANNEL: t.channel}
        known = {"intent": intent, "segment": t.segment, "priority": t.priority, "channel": t.channel,
                 "group": team, **t.custom_fields}
        for col in [*enc.case_attributes_, *enc.event_attributes_]:
            event[col] = known.get(col)
        events.append(event)
    return events


def decision_for(*, intent_pred: Any, teams: list[TeamScore], risks: Risks, thresholds: DecisionThresholds,
                 ) -> tuple[Decision, list[str]]:
    """The auto-route / suggest / triage rule and its reasons: out of scope goes to people; otherwise the lower of
    the team and intent confidence is held against the thresholds, and auto-routing also needs a misroute risk
    within bounds (when a misroute model is loaded).

    `intent_pred` is an `insight.models.intent.IntentPrediction` (or None without an intent model); `teams` are
    ranked best first. Every triage (production, tests' stand-ins, benchmarks) decides through this function."""
    reasons: list[str] = []
    if intent_pred is not None and intent_pred.out_of_scope:
        score = getattr(intent_pred, "oos_score", None)
        # The score is the share of held-out in-scope tickets that looked less like a known intent.
        how = "" if score is None else f"; only {score:.1%} of known in-scope tickets looked less like a known intent"
        reasons.append(f"the text fits no known intent (best guess {intent_pred.label!r} at "
                       f"{intent_pred.confidence:.2f}{how}); a person should look")
        return "triage", reasons
    team_conf = teams[0].probability if teams else 0.0
    intent_conf = intent_pred.confidence if intent_pred is not None else team_conf
    confidence = min(team_conf, intent_conf) if teams else intent_conf
    misroute = risks.misroute
    if confidence >= thresholds.auto_route_confidence:
        if misroute is None:
            reasons.append(f"confident: team {team_conf:.2f}, intent {intent_conf:.2f} >= "
                           f"{thresholds.auto_route_confidence:.2f}; misroute risk not assessed (no misroute model "
                           "is loaded, so max_auto_misroute_risk was not applied)")
            return "auto_route", reasons
        if misroute <= thresholds.max_auto_misroute_risk:
            reasons.append(f"confident: team {team_conf:.2f}, intent {intent_conf:.2f} >= "
                           f"{thresholds.auto_route_confidence:.2f} and misroute risk {misroute:.2f} <= "
                           f"{thresholds.max_auto_misroute_risk:.2f}")
            return "auto_route", reasons
        reasons.append(f"confident ({confidence:.2f}) but the misroute risk {misroute:.2f} is above "
                       f"{thresholds.max_auto_misroute_risk:.2f}: suggest to an agent")
        return "suggest", reasons
    if confidence >= thresholds.suggest_confidence:
        reasons.append(f"fairly confident ({confidence:.2f}) but below the auto-route threshold "
                       f"{thresholds.auto_route_confidence:.2f}: suggest to an agent")
        return "suggest", reasons
    reasons.append(f"low confidence ({confidence:.2f} < {thresholds.suggest_confidence:.2f}): human triage queue")
    return "triage", reasons


def decide_batch(*, bundle: ModelBundle, tickets: list[TicketIn], thresholds: DecisionThresholds) -> list[TriageResult]:
    """Triage many tickets with one embedding and one model call per model."""
    if not bundle.ready:
        raise ModelNotReady(f"no trained intent or routing model is loaded; {HOW_TO_TRAIN}")
    if not tickets:
        return []
    n = len(tickets)
    texts = [intent_text(t) for t in tickets]
    intent_preds: list[Any] = [None] * n
    if bundle.intent is not None:
        intent_preds = bundle.intent.predict_with_oos(texts, top_k=3)
    intents = [p.label if p is not None and not p.out_of_scope else None for p in intent_preds]

    team_lists: list[list[TeamScore]] = [[] for _ in range(n)]
    feature_reasons: list[list[str]] = [[] for _ in range(n)]
    rows = _router_rows(bundle, tickets, intents) if bundle.router is not None or bundle.misroute is not None else []
    if bundle.router is not None:
        with bundle.memory_lock.read():  # the live memory may be growing (routing.live_memory)
            tops, feature_reasons = bundle.router.rank(rows, k=3, n_reasons=3)
        team_lists = [[TeamScore(team=s.team, probability=float(s.probability)) for s in top] for top in tops]
    misroute = bundle.misroute.predict_proba(rows) if bundle.misroute is not None else None

    best_teams = [tl[0].team if tl else None for tl in team_lists]
    expected = breach = None
    if bundle.remaining_time is not None:
        rows = bundle.remaining_time.prefix_matrix(_risk_events(bundle, tickets, intents, best_teams))
        expected = bundle.remaining_time.predict(rows)
        breach = bundle.remaining_time.predict_breach_proba(rows)

    similar: list[list[SimilarTicket]] = [[] for _ in range(n)]
    if bundle.memory is not None and bundle.embedder is not None:
        hits = bundle.memory.search(bundle.embedder.encode(texts), k=3)
        similar = [[SimilarTicket(ticket_id=h.case_id, similarity=round(h.similarity, 4), intent=h.intent,
                                  team=h.team, subject=h.subject) for h in row] for row in hits]

    out = []
    for i in range(n):
        pred = intent_preds[i]
        teams = team_lists[i]
        risks = Risks(
            misroute=round(float(misroute[i]), 4) if misroute is not None else None,
            sla_breach=round(float(breach[i]), 4) if breach is not None else None,
            expected_hours_to_resolve=round(float(expected[i]), 2) if expected is not None else None,
        )
        decision, reasons = decision_for(intent_pred=pred, teams=teams, risks=risks, thresholds=thresholds)
        if pred is not None:
            alt = ", ".join(f"{s.label} {s.probability:.2f}" for s in pred.top_k[1:])
            reasons.append(f"intent {pred.label!r} at {pred.confidence:.2f}" + (f" (next: {alt})" if alt else ""))
        if teams:
            alt = ", ".join(f"{s.team} {s.probability:.2f}" for s in teams[1:])
            reasons.append(f"team {teams[0].team!r} at {teams[0].probability:.2f}" + (f" (next: {alt})" if alt else ""))
        if feature_reasons[i]:
            reasons.append("strongest signals for that team: " + ", ".join(feature_reasons[i]))
        if similar[i] and teams:
            agree = sum(1 for s in similar[i] if s.team == teams[0].team)
            reasons.append(f"{agree} of the {len(similar[i])} most similar past tickets were resolved by "
                           f"{teams[0].team!r}")
        if risks.misroute is not None and risks.misroute >= 0.5:
            reasons.append(f"misroute risk {risks.misroute:.2f}: tickets like this one are often passed on by the "
                           "team they first go to")
        if risks.sla_breach is not None and risks.sla_breach >= 0.5:
            sla = getattr(bundle.remaining_time, "sla_hours_", None)
            target = f" of taking longer than {sla:.0f} h" if sla is not None else ""
            reasons.append(f"SLA breach risk {risks.sla_breach:.2f}{target} (expected "
                           f"{risks.expected_hours_to_resolve} h)")
        out.append(TriageResult(
            intent=pred.label if pred is not None else None,
            intent_confidence=round(pred.confidence, 4) if pred is not None else 0.0,
            out_of_scope=bool(pred.out_of_scope) if pred is not None else False,
            team=teams[0].team if teams else None,
            team_confidence=round(teams[0].probability, 4) if teams else 0.0,
            top_teams=[TeamScore(team=s.team, probability=round(s.probability, 4)) for s in teams],
            risks=risks, decision=decision, reasons=reasons, similar=similar[i],
            model_versions=dict(bundle.versions),
        ))
    return out


def prepare_batch(*, bundle: ModelBundle, tickets: list[TicketIn]) -> None:
    """Embed the tickets' texts into the bundle's embedding cache, where `decide_batch` of the same tickets finds them.

    The service runs this for redacted tickets on a worker thread while it redacts the next ones (routing.service).
    Vectors are what decide_batch would compute (int8: the same bits, one text per run; float: within the batching
    tolerance of core.embedding.Embedder), so answers stay independent of the batch."""
    if bundle.embedder is None or not tickets:
        return
    if bundle.memory is None and getattr(bundle.intent, "embedder", None) is None:
        return  # nothing of the bundle reads the vectors
    bundle.embedder.encode([intent_text(t) for t in tickets])


def decide(*, bundle: ModelBundle, ticket: TicketIn, thresholds: DecisionThresholds) -> TriageResult:
    """Triage one ticket: intent (+ out-of-scope), resolving team, risks, decision and reasons."""
    return decide_batch(bundle=bundle, tickets=[ticket], thresholds=thresholds)[0]
