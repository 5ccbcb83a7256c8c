"""Retrain from the service's own data behind a champion / challenger gate: the flow, without the job machinery.

`read_training_data` reads the store's live log, ticket texts and agents' corrections (one short session) plus the
history the live models learned from. `train_and_gate` (run by `api.retrain` in a child process) trains
challengers on every case before a cut-off, holding out the newest cases the live models never trained on, scores
the live model (champion) and the challenger on those same held-out cases (and an admin's golden set) with the
rule of `insight.models.gate`, and reports the gate's decision; `api.retrain` promotes, swaps and audits.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from core.errors import DeskpilotError, InvalidInput
from routing.models import utcnow

# The registry's task names (insight.training's TASK_*, assist.actions.TASK_STEP_OUTCOMES), spelt out so that
# importing this module (the API does at start-up) does not load the training stack.
TASK_INTENT, TASK_ROUTER, TASK_MISROUTE, TASK_NEXT_ACTIVITY, TASK_REMAINING_TIME, TASK_MEMORY = (
    "intent", "router", "misroute", "next_activity", "remaining_time", "memory")
TASK_STEP_OUTCOMES = "step_outcomes"
RETRAIN_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_MISROUTE, TASK_NEXT_ACTIVITY, TASK_REMAINING_TIME,
                                  TASK_MEMORY, TASK_STEP_OUTCOMES)
# Tasks with a gate metric; the others (no per-case score to compare) follow the gate's decision.
GATED_TASKS: tuple[str, ...] = (TASK_INTENT, TASK_ROUTER, TASK_NEXT_ACTIVITY)


def read_history(*, registry: Path, history_log: Path | None = None, history_tickets: Path | None = None,
                 pseudonym_key: str | None = None) -> tuple[Any, Any, str]:
    """The history retraining adds to the store's data: (log, tickets, where from).

    `history_log` / `history_tickets` (the `retrain_history_log` / `retrain_history_tickets` settings) when set;
    else what `deskpilot train` stored with the registry (the data the first live models learned from); else none.
    """
    import pandas as pd

    from insight.eventlog import ingest
    from insight.models.registry import ModelRegistry

    log = tickets = None
    source = "none"
    if history_log is not None:
        log = ingest(history_log, pseudonym_key=pseudonym_key)
        source = str(history_log)
    if history_tickets is not None:
        try:
            tickets = pd.read_csv(history_tickets)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read retrain_history_tickets {history_tickets}: {exc}",
                               field="retrain_history_tickets") from exc
    if log is None and tickets is None:
        stored = ModelRegistry(registry).load_training_data()
        if stored is not None:
            log, tickets, info = stored
            source = f"registry training data {info.get('hash')} ({info.get('n_cases')} cases)"
    return log, tickets, source


def _recent_history(engine: Engine, log: Any, tickets: Any, source: str, days: float) -> tuple[Any, Any, str]:
    """Only the history cases created within `days` before the newest live event (or now, without live events)."""
    import pandas as pd
    from sqlalchemy import func

    from insight.eventlog.schema import CASE_ID, TIMESTAMP
    from routing.models import TicketEvent

    with Session(engine) as session:
        newest = session.exec(select(func.max(TicketEvent.timestamp))).one()
    end = pd.Timestamp(newest if newest is not None else utcnow())
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    since = end - pd.Timedelta(days=days)
    starts = log.df.groupby(log.df[CASE_ID].astype(str))[TIMESTAMP].min()
    keep = set(starts.index[starts >= since])
    log = log.filter_cases(log.df.loc[log.df[CASE_ID].astype(str).isin(keep), CASE_ID].unique())
    if tickets is not None and CASE_ID in tickets.columns:
        tickets = tickets[tickets[CASE_ID].astype(str).isin(keep)].reset_index(drop=True)
    return log, tickets, f"{source}; cases created since {since:%Y-%m-%d %H:%M} (retrain_history_days={days:g})"


def read_training_data(*, engine: Engine, registry: Path, history_log: Path | None = None,
                       history_tickets: Path | None = None, history_days: float | None = None,
                       pseudonym_key: str | None = None) -> tuple[Any, str]:
    """The store's live log, ticket texts and corrections (one short read session) plus the history (only its cases
    created within `history_days` of the newest live event, when given); and where the history came from."""
    from routing.dataset import training_data

    log, tickets, source = read_history(registry=registry, history_log=history_log,
                                        history_tickets=history_tickets, pseudonym_key=pseudonym_key)
    if history_days is not None and log is not None:
        log, tickets, source = _recent_history(engine, log, tickets, source, history_days)
    with Session(engine) as session:
        data = training_data(session=session, history_log=log, history_tickets=tickets,
                             pseudonym_key=pseudonym_key)
    return data, source


def read_golden(path: Path | None) -> Any:
    """The admin's golden set (the `retrain_golden_tickets` CSV), or None."""
    import pandas as pd

    if path is None:
        return None
    try:
        golden = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read retrain_golden_tickets {path}: {exc}", field="retrain_golden_tickets") from exc
    if not ({"subject", "body"} & set(golden.columns)) or not ({"intent", "team"} & set(golden.columns)):
        raise InvalidInput(f"retrain_golden_tickets {path} needs subject and/or body, and intent and/or team "
                           f"columns; has {list(golden.columns)}", field="retrain_golden_tickets")
    return golden


def _intent_guard(tickets: Any, minimum: int) -> str | None:
    """Why the intent model must not be retrained on these labels (None when it may)."""
    if tickets is None or "intent" not in tickets.columns:
        return "no ticket has a known intent (agents' corrected_intent or a history ticket table)"
    labels = tickets["intent"].dropna()
    if len(labels) < minimum:
        return (f"only {len(labels)} labelled ticket(s) (agents' corrections + history); at least {minimum} needed "
                "(retrain_min_intent_labels); the live intent model is kept")
    if labels.nunique() < 2:
        return f"all {len(labels)} labelled tickets have one intent ({labels.iloc[0]!r}); a classifier needs two"
    return None


def _cutoff_of(meta: Any) -> Any:
    """When a saved model's training data ends: `extra.training_cutoff`, else the end of its training window."""
    import pandas as pd

    raw = meta.extra.get("training_cutoff") or (meta.training_window[-1] if meta.training_window else None)
    if not raw:
        return None
    ts = pd.to_datetime(raw, utc=True, errors="coerce")
    return None if pd.isna(ts) else ts


def _load_champions(reg: Any, tasks: list[str], embedder: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The live model of each gated task ({task: LoadedArtifact}) and why a live one could not be loaded."""
    champions: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for task in GATED_TASKS:
        if task not in tasks:
            continue
        try:
            if reg.live_version(task) is None:
                continue
            art = reg.load(task)
        except DeskpilotError as exc:
            broken[task] = f"{exc.code}: {exc.message}"
            continue
        model = art.model
        if hasattr(model, "set_embedder") and (getattr(model, "embedder_name_", None) is not None
                                               or getattr(model, "embedder_fingerprint_", None) is not None):
            if embedder is None:
                broken[task] = "the live model needs the embedding model (retrain with use_embeddings=true)"
                continue
            model.set_embedder(embedder)
        champions[task] = art
    return champions, broken


def _live_classes(reg: Any, task: str) -> set[str] | None:
    """Classes of the task's live model from its metadata (None when there is no readable live model)."""
    try:
        live = reg.live_version(task)
        return {str(c) for c in reg.read_metadata(task, live).classes} if live else None
    except DeskpilotError:
        return None


def _admit_labels(tickets: Any, team_labels: dict[str, str], log: Any, live: dict[str, set[str] | None],
                  declared: dict[str, list[str]], min_examples: int) -> dict[str, Any]:
    """Keep the labels training may use (in place); returns what was held back or dropped, and why.

    An intent / team the live model knows is kept. A label an admin or knowledge manager declared
    (`POST /v1/models/labels`) starts a new class only with at least `min_examples` examples. Anything else (a
    label stored before feedback was validated) is dropped. Teams the event log itself names are known. A cold
    registry (no live model) has nothing to check against: every label counts, new classes need `min_examples`.
    """
    from insight.eventlog.schema import GROUP
    from insight.models.gate import OOS_LABELS

    report: dict[str, Any] = {"held_back": {}, "dropped": {}}

    def verdict(label: str, count: int, known: set[str], declared_: set[str], cold: bool) -> str | None:
        if label in known:
            return None
        if cold or label in declared_:
            return None if count >= min_examples else "held_back"
        return "dropped"

    if tickets is not None and "intent" in tickets.columns:
        classes = live.get(TASK_INTENT)
        known = (classes or set()) | set(OOS_LABELS)
        counts = tickets["intent"].dropna().astype(str).value_counts()
        for label, count in counts.items():
            v = verdict(str(label), int(count), known, set(declared.get("intent", [])), classes is None)
            if v is not None:
                report[v][f"intent:{label}"] = int(count)
                tickets.loc[tickets["intent"].astype(str) == label, "intent"] = None
    if team_labels:
        classes = live.get(TASK_ROUTER)
        known = set(classes or set())
        if log is not None and log.has(GROUP):
            known |= set(log.df[GROUP].dropna().astype(str).unique())
        team_counts: dict[str, int] = {}
        for team in team_labels.values():
            team_counts[team] = team_counts.get(team, 0) + 1
        for team, count in team_counts.items():
            v = verdict(team, count, known, set(declared.get("team", [])), classes is None and not known)
            if v is not None:
                report[v][f"team:{team}"] = count
                for case in [c for c, t in team_labels.items() if t == team]:
                    team_labels.pop(case)
    return report


def _split(log: Any, tickets: Any, team_labels: dict[str, str], eval_ids: set[str]) -> tuple[Any, Any, dict[str, str],
                                                                                              Any, Any, dict[str, str]]:
    """(train log, train tickets, train team labels, eval log, eval tickets, eval team labels)."""
    from insight.eventlog.schema import CASE_ID

    if not eval_ids:
        return log, tickets, team_labels, None, None, {}
    train_log = eval_log = None
    if log is not None:
        ids = log.df[CASE_ID].astype(str)
        train_log = log.filter_cases(log.df.loc[~ids.isin(eval_ids), CASE_ID].unique())
        eval_log = log.filter_cases(log.df.loc[ids.isin(eval_ids), CASE_ID].unique())
    train_t = eval_t = None
    if tickets is not None:
        held = tickets[CASE_ID].astype(str).isin(eval_ids)
        train_t, eval_t = tickets.loc[~held].reset_index(drop=True), tickets.loc[held].reset_index(drop=True)
    train_l = {k: v for k, v in team_labels.items() if str(k) not in eval_ids}
    eval_l = {k: v for k, v in team_labels.items() if str(k) in eval_ids}
    return train_log, train_t, train_l, eval_log, eval_t, eval_l


def memory_tickets(tickets: Any, log: Any) -> Any:
    """Tickets for the ticket memory: those whose case the log shows resolved (history and live alike)."""
    from insight.eventlog.schema import CASE_ID
    from insight.training import unresolved_cases

    if tickets is None or log is None:
        return tickets
    ids = tickets[CASE_ID].astype(str)
    in_log = ids.isin(set(log.df[CASE_ID].astype(str)))
    return tickets.loc[in_log & ~ids.isin(unresolved_cases(log))].reset_index(drop=True)


def _gate_task(task: str, champion: Any, challenger: Any, *, eval_log: Any, eval_tickets: Any,
               router_eval: Any, at: Any, golden: Any, rule: Any) -> dict[str, Any]:
    """Side-by-side metrics of one task (evaluation cases, then the golden set)."""
    from insight.models import gate

    metrics: dict[str, dict[str, Any]] = {}
    if task == TASK_ROUTER and router_eval is not None and len(router_eval):
        metrics.update(gate.compare_router(champion, challenger, router_eval, at=at, rule=rule))
    if task == TASK_INTENT and eval_tickets is not None and "intent" in eval_tickets.columns:
        labelled = eval_tickets[eval_tickets["intent"].notna()]
        if len(labelled):
            metrics.update(gate.compare_intent(champion, challenger, labelled, rule=rule))
    if task == TASK_NEXT_ACTIVITY and eval_log is not None and eval_log.n_cases:
        metrics.update(gate.compare_next_activity(champion, challenger, eval_log, rule=rule))
    if golden is not None:
        if task == TASK_INTENT and "intent" in golden.columns:
            g = golden[golden["intent"].notna()]
            if len(g):
                metrics.update(gate.compare_intent(champion, challenger, g, rule=rule, prefix="golden_"))
        if task == TASK_ROUTER and "team" in golden.columns:
            g = golden[golden["team"].notna()].copy()
            if len(g):
                text = getattr(challenger, "text", None) or "__text__"
                parts = [c for c in ("subject", "body") if c in g.columns]
                g[text] = g[parts].fillna("").astype(str).agg(" \n ".join, axis=1)
                g["resolving_team"] = g["team"].astype(str)
                metrics.update(gate.compare_router(champion, challenger, g, at=None, rule=rule, prefix="golden_"))
    return metrics


def train_and_gate(payload: dict[str, Any]) -> dict[str, Any]:
    """Train each requested task on the data before the gate's cut-off, score each gated challenger against the
    live model on the held-out newest cases, and report (JSON-ready). A failing task does not stop the others."""
    import pandas as pd

    from flows.training import train_all
    from insight.eventlog.schema import GROUP
    from insight.mining.labels import case_labels
    from insight.models import gate
    from insight.models.registry import ModelRegistry
    from insight.models.split import case_starts
    from insight.training import apply_team_corrections, router_table, unresolved_cases

    data_log, tickets = payload["log"], payload["tickets"]
    team_labels: dict[str, str] = dict(payload["team_labels"])
    tasks: list[str] = list(payload["tasks"])
    reg = ModelRegistry(payload["registry"])
    scratch = tempfile.mkdtemp(prefix="deskpilot-evaluate-") if payload["evaluate_only"] else None
    save_reg = ModelRegistry(scratch) if scratch else reg
    rule = gate.GateRule(**payload["gate"])
    embedder = None
    if payload["embedding_model"]:
        from core.embedding import Embedder

        embedder = Embedder(payload["embedding_model"], **payload.get("embedder_kwargs", {}))
    t0 = time.perf_counter()
    models: list[dict[str, Any]] = []
    challengers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    labels: dict[str, Any] = {}
    champions, broken = _load_champions(reg, tasks, embedder)
    live_classes = {t: _live_classes(reg, t) for t in (TASK_INTENT, TASK_ROUTER)}
    labels["admission"] = _admit_labels(tickets, team_labels, data_log, live_classes, payload["declared"],
                                        int(payload["min_class_examples"]))
    if tickets is not None and "intent" in tickets.columns:
        labels["intent"] = {str(k): int(v) for k, v in tickets["intent"].value_counts().items()}
    if team_labels and data_log is not None and data_log.has(GROUP):
        lab = case_labels(data_log).df
        labels["team_corrections"] = apply_team_corrections(lab.set_axis(lab.index.astype(str)), data_log,
                                                            team_labels)
    # The evaluation cases: the newest cases none of the live gated models trained on.
    live_cutoffs = [c for c in (_cutoff_of(a.metadata) for a in champions.values()) if c is not None]
    stored = reg.training_data_info()
    if champions and not live_cutoffs and stored and stored.get("trained_until"):
        # No live gated model says when its data ended: the history stored with them does.
        until = pd.to_datetime(stored["trained_until"], utc=True, errors="coerce")
        live_cutoffs = [] if pd.isna(until) else [until]
    champion_cutoff = max(live_cutoffs) if live_cutoffs else None
    cutoff, n_new = (None, 0)
    if champions:
        cutoff, n_new = gate.split_by_time(data_log, tickets, after=champion_cutoff,
                                           fraction=float(payload["gate_fraction"]), min_cases=rule.min_cases)
    starts = case_starts(data_log, tickets)
    eval_ids = set(starts.index[starts >= cutoff]) if cutoff is not None else set()
    if champion_cutoff is not None:
        eval_ids = {i for i in eval_ids if starts[i] > champion_cutoff}
    train_log, train_tickets, train_labels, eval_log, eval_tickets, _ = _split(data_log, tickets, team_labels,
                                                                               eval_ids)
    trained_until = cutoff if cutoff is not None else (starts.max() if len(starts) else None)
    for task in tasks:
        gated = task in GATED_TASKS
        t_log, t_tickets, t_labels = (train_log, train_tickets, train_labels) if gated else (
            data_log, tickets, team_labels)
        try:
            if task == TASK_INTENT:
                why = _intent_guard(t_tickets, int(payload["min_intent_labels"]))
                if why is not None:
                    skipped[task] = why
                    continue
            elif t_log is None:
                skipped[task] = "the store holds no ticket events (and no history is stored or configured)"
                continue
            if task == TASK_MEMORY:
                t_tickets = memory_tickets(t_tickets, t_log)
            report = train_all(log=t_log, tickets=t_tickets, registry=save_reg, embedder=embedder,
                               seed=int(payload["seed"]), tasks=(task,), team_labels=t_labels, promote=False)
            skipped.update(report.skipped)
            for tm in report.models:
                if tm.version:
                    save_reg.update_extra(tm.task, tm.version, training_cutoff=str(trained_until) if gated and
                                          trained_until is not None else str(starts.max() if len(starts) else ""))
                challengers[tm.task] = tm
                models.append(tm.to_dict())
        except DeskpilotError as exc:
            failed[task] = f"{exc.code}: {exc.message}"
    # Score champion and challenger side by side.
    router_eval = None
    if TASK_ROUTER in challengers and TASK_ROUTER in champions and eval_ids and tickets is not None:
        try:
            table, _, _ = router_table(log=data_log, tickets=tickets, team_labels=team_labels)
            # Judged on resolved cases only: the team that resolved a case does not depend on what the live router
            # said, while an agent corrects a ticket because it was misrouted (a label chosen by the champion's
            # errors would favour any challenger). Corrections still label the challenger's training cases.
            open_cases = unresolved_cases(data_log)
            router_eval = table[table.index.astype(str).isin(eval_ids - open_cases)]
            champ = champions[TASK_ROUTER].model
            if getattr(champ, "history", False) and champion_cutoff is not None:
                # As served: the live router's memory also holds the resolutions recorded since its training.
                seen = table[(table["created_at"] > champion_cutoff) & ~table.index.astype(str).isin(eval_ids)
                             & (table["resolved_at"] < cutoff)]
                if len(seen):
                    champ.observe(seen, seen["resolving_team"], seen["resolved_at"])
        except DeskpilotError as exc:
            failed[TASK_ROUTER] = f"gate: {exc.code}: {exc.message}"
    at = pd.Series([cutoff] * len(router_eval), index=router_eval.index) if router_eval is not None else None
    gate_tasks: dict[str, Any] = {}
    for task in GATED_TASKS:
        if task not in challengers:
            continue
        entry: dict[str, Any] = {"challenger_version": challengers[task].version}
        if task in broken:
            # A live model exists but cannot be read here: nothing to compare with, so no automatic swap.
            entry.update(verdict=gate.FAIL, metrics={}, reason=f"the live model could not be loaded for the "
                         f"comparison ({broken[task]}); an admin may promote the challenger (force)")
        elif task not in champions:
            entry.update(verdict="new", reason="no live model to compare with", metrics={})
        else:
            entry["champion_version"] = champions[task].metadata.version
            try:
                metrics = _gate_task(task, champions[task].model, challengers[task].model, eval_log=eval_log,
                                     eval_tickets=eval_tickets, router_eval=router_eval, at=at,
                                     golden=payload.get("golden"), rule=rule)
                entry.update(metrics=metrics, verdict=gate.task_verdict(task, metrics))
            except (DeskpilotError, ValueError) as exc:
                entry.update(metrics={}, verdict=gate.FAIL, reason=f"could not score: {exc}")
        gate_tasks[task] = entry
    verdicts = {t: e["verdict"] for t, e in gate_tasks.items()}
    if any(v == gate.FAIL for v in verdicts.values()):
        worse = [f"{t}: {m} {e['metrics'][m]['challenger']:.4f} vs live {e['metrics'][m]['champion']:.4f} "
                 f"(lower bound {e['metrics'][m]['lower_bound']:+.4f})"
                 for t, e in gate_tasks.items() for m in e.get("metrics", {})
                 if e["metrics"][m].get("verdict") == gate.FAIL]
        decision, reason = "rejected", ("challenger worse than the live model beyond the tolerance: " + "; ".join(
            worse) if worse else "; ".join(e.get("reason", "") for e in gate_tasks.values()
                                           if e["verdict"] == gate.FAIL))
    elif verdicts and all(v == gate.TOO_FEW for v in verdicts.values()):
        decision, reason = "rejected", (f"too few evaluation cases to tell ({n_new} case(s) newer than the live "
                                        f"models' training; at least {rule.min_cases} labelled needed per metric)")
    elif not verdicts and champions:
        decision, reason = "rejected", "no gated model was trained"
    else:
        decision = "accepted"
        reason = ("no live model to compare with" if verdicts and all(v == "new" for v in verdicts.values())
                  else "not worse than the live model on any gate metric" if verdicts
                  else "no gated task requested")
    gate_out = {"decision": decision, "reason": reason, "rule": rule.to_dict(),
                "champion_trained_until": str(champion_cutoff) if champion_cutoff is not None else None,
                "cutoff": str(cutoff) if cutoff is not None else None, "n_new_cases": int(n_new),
                "n_evaluation_cases": len(eval_ids), "golden_set": payload.get("golden") is not None,
                "tasks": gate_tasks, "seconds": round(time.perf_counter() - t0, 1)}
    if not scratch:
        for task, entry in gate_tasks.items():
            save_reg.update_extra(task, entry["challenger_version"],
                                  gate={**entry, **{k: v for k, v in gate_out.items() if k != "tasks"}})
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        for m in models:
            m["version"], m["path"] = None, None
    for m in models:
        m["gate"] = gate_tasks.get(m["task"], {}).get("verdict", "not gated")
    return {"models": models, "skipped": skipped, "failed": failed, "labels": labels, "gate": gate_out}
