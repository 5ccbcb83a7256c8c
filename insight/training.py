"""Train each deskpilot model from a mined log (+ ticket table) into the registry, with honest evaluation.

One function per model; training them all together (and the assist step outcomes beside them) is a flow of its
own, `flows.training.train_all`.

Protocol: cases are split by start time (train on the oldest 80 %, test on the newest 20 %); validation for early
stopping and hyper-parameters is carved from the training part only; every prefix of every test case is scored.
After scoring, the saved model is refitted on all the data (train + test) with the settings chosen on validation
(the number of boosting rounds, the router's strategy, the intent model's out-of-scope score and flag budget); its
metadata records both what was evaluated (`metrics`, `extra.evaluated_on`) and that it was refitted
(`extra.refit_on_all_data`), so the figures describe the evaluated model and the deployed one saw the newest data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import ACTIVITY, CASE_ID, GROUP, TIMESTAMP, EventLog
from insight.models.next_activity import NextActivityPredictor
from insight.models.registry import ArtifactMetadata, ArtifactRef, ModelRegistry, data_hash
from insight.models.remaining_time import RemainingTimePredictor
from insight.models.router import TeamRouter, routing_impact
from insight.models.split import (
    case_starts,
    cut_newest,
    sample_case_ids,
    sample_cases_by_window,
    split_log,
    split_newest,
    validation_count,
)

TASK_INTENT = "intent"
TASK_ROUTER = "router"
TASK_NEXT_ACTIVITY = "next_activity"
TASK_REMAINING_TIME = "remaining_time"
TASK_MEMORY = "memory"
TASK_MISROUTE = "misroute"
# Ticket columns the router uses when present; free text is joined from these.
ROUTER_CATEGORICAL = ("channel", "segment", "priority", "product", "category", "subcategory", "customer_tier")
ROUTER_TEXT = ("subject", "body")


@dataclass
class TrainedModel:
    """One model trained, evaluated and (optionally) saved."""

    task: str
    metrics: dict[str, Any]
    version: str | None = None
    path: str | None = None
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return {"task": self.task, "version": self.version, "path": self.path, "metrics": self.metrics}


def _window(log: EventLog) -> list[str]:
    lo, hi = log.time_window()
    return [str(lo), str(hi)]


def _save(registry: ModelRegistry | None, model: Any, *, task: str, metrics: dict[str, Any], features: list[str],
          classes: list[str], train_df: Any, window: list[str], hyper: dict[str, Any], promote: bool,
          extra: dict[str, Any] | None = None) -> ArtifactRef | None:
    if registry is None:
        return None
    meta = ArtifactMetadata(task=task, features=features, classes=classes, training_data_hash=data_hash(train_df),
                            training_window=window, metrics=metrics, hyper_params=hyper, extra=extra or {})
    return registry.save(model, task=task, metadata=meta, promote=promote)


def _trained(task: str, metrics: dict[str, Any], ref: ArtifactRef | None, model: Any) -> TrainedModel:
    return TrainedModel(task=task, metrics=metrics, version=ref.version if ref else None,
                        path=str(ref.path) if ref else None, model=model)


def _all_cases(train: EventLog, test: EventLog) -> EventLog:
    """Train and test cases in one log for the refit (a test case id also used in training is kept apart)."""
    test_df = test.df
    clash = set(train.df[CASE_ID].astype(str)) & set(test_df[CASE_ID].astype(str))
    if clash:
        ids = test_df[CASE_ID].astype(str)
        test_df = test_df.assign(**{CASE_ID: ids.where(~ids.isin(clash), "test:" + ids)})
    df = pd.concat([train.df, test_df], ignore_index=True)
    attrs = list(dict.fromkeys([*train.case_attributes, *test.case_attributes]))
    return EventLog(df, name=f"{train.name}+{test.name}", case_attributes=attrs)


def _prefix_params(params: dict[str, Any] | None, case_features: list[str] | None) -> dict[str, Any]:
    out = dict(params or {})
    if case_features is not None:
        out["case_attributes"] = list(case_features)
    return out


def _sampled(log: EventLog, *, sample_fraction: float | None, max_train_cases: int | None, window: str,
             seed: int) -> tuple[EventLog, dict[str, Any] | None]:
    """The log itself when no sample is asked for; else its cases sampled per start window, and what was done."""
    if sample_fraction is None and max_train_cases is None:
        return log, None
    sample = sample_cases_by_window(log, fraction=sample_fraction, max_cases=max_train_cases, window=window,
                                    seed=seed)
    return sample, {"sample_fraction": sample_fraction, "max_train_cases": max_train_cases, "sample_window": window,
                    "sample_seed": seed, "n_cases_before_sample": log.n_cases, "n_cases_sampled": sample.n_cases}


def _sampled_refit(train: EventLog, test: EventLog, sample: dict[str, Any] | None, seed: int) -> EventLog:
    """Every train (before any sample) + test case for the refit, sampled by the same rule as the training part
    when a sample was asked for."""
    fitted = _all_cases(train, test)
    if sample is None:
        return fitted
    out, _ = _sampled(fitted, sample_fraction=sample["sample_fraction"], max_train_cases=sample["max_train_cases"],
                      window=sample["sample_window"], seed=seed)
    return out


def _refit_extra(train: EventLog, test: EventLog, test_log_given: bool, test_fraction: float, refit: bool,
                 n_refit: int | None) -> dict[str, Any]:
    evaluated = (f"test log {test.name}" if test_log_given
                 else f"newest {test_fraction:.0%} of cases by start time ({test.name})")
    return {"evaluated_on": evaluated, "refit_on_all_data": refit, "n_cases_evaluated_train": train.n_cases,
            "n_cases_evaluated_test": test.n_cases, "n_cases_refit": n_refit}


def _train_prefix_model(
    task: str, model: Any, *, log: EventLog, test_log: EventLog | None, registry: ModelRegistry | None, seed: int,
    test_fraction: float, promote: bool, refit: bool, sample_fraction: float | None, max_train_cases: int | None,
    sample_window: str, score: Callable[[Any, EventLog, EventLog], dict[str, Any]],
    describe: Callable[[Any], tuple[list[str], dict[str, Any]]],
) -> TrainedModel:
    """The prefix models' training flow: split by case start (or the given test log), sample the training part,
    fit, `score(model, train, test)`, refit on train + test, save with `describe(model)` -> (classes, extra)."""
    train, test = (log, test_log) if test_log is not None else split_log(log, test_fraction=test_fraction)
    full_train = train
    train, sample = _sampled(train, sample_fraction=sample_fraction, max_train_cases=max_train_cases,
                             window=sample_window, seed=seed)
    model.fit(train)
    metrics = score(model, train, test)
    fitted = train
    if refit:
        fitted = _sampled_refit(full_train, test, sample, seed)
        model.refit(fitted)
    extra = _refit_extra(train, test, test_log is not None, test_fraction, refit, fitted.n_cases if refit else None)
    if sample is not None:
        extra["train_sample"] = sample
    classes, details = describe(model)
    extra.update(details, case_features=list(model.encoder_.case_attributes_),
                 event_attributes=list(model.encoder_.event_attributes_))
    ref = _save(registry, model, task=task, metrics=metrics, features=model.feature_names_, classes=classes,
                train_df=fitted.df[[CASE_ID, TIMESTAMP]], window=_window(fitted), hyper=model.get_params(),
                promote=promote, extra=extra)
    return _trained(task, metrics, ref, model)


def train_next_activity(
    *, log: EventLog, test_log: EventLog | None = None, registry: ModelRegistry | None = None, seed: int = 7,
    test_fraction: float = 0.2, promote: bool = True, params: dict[str, Any] | None = None,
    case_features: list[str] | None = None, refit: bool = True, sample_fraction: float | None = None,
    max_train_cases: int | None = None, sample_window: str = "7D",
) -> TrainedModel:
    """Train the next-activity model on the past, score every prefix of the future against bigram / majority /
    n-gram baselines, then (unless `refit=False`) refit on train + test with the validated number of rounds.

    `case_features`: trace-level columns known when a case is created (none by default); a column that names
    the whole trace (variant, case id, event count) is refused with InvalidInput.
    `sample_fraction` or `max_train_cases` (default: neither, every case): fit on whole cases sampled per
    `sample_window` of case start from the training part only (`insight.models.split.sample_cases_by_window`,
    seeded by `seed`); every test case is still scored, and the refit uses train + test sampled by the same rule.
    """
    def score(model: NextActivityPredictor, train: EventLog, test: EventLog) -> dict[str, Any]:
        metrics = model.evaluate(train, test).to_dict()
        metrics["validation_accuracy"] = getattr(model, "validation_accuracy_", None)
        return metrics

    def describe(model: NextActivityPredictor) -> tuple[list[str], dict[str, Any]]:
        return [str(c) for c in model.classes_], {"boosting_rounds": int(model.n_iter_)}

    return _train_prefix_model(
        TASK_NEXT_ACTIVITY, NextActivityPredictor(seed=seed, **_prefix_params(params, case_features)), log=log,
        test_log=test_log, registry=registry, seed=seed, test_fraction=test_fraction, promote=promote, refit=refit,
        sample_fraction=sample_fraction, max_train_cases=max_train_cases, sample_window=sample_window, score=score,
        describe=describe)


def train_remaining_time(
    *, log: EventLog, test_log: EventLog | None = None, registry: ModelRegistry | None = None, seed: int = 7,
    test_fraction: float = 0.2, sla_hours: float | None = None, promote: bool = True,
    params: dict[str, Any] | None = None, case_features: list[str] | None = None, refit: bool = True,
    sample_fraction: float | None = None, max_train_cases: int | None = None, sample_window: str = "7D",
) -> TrainedModel:
    """Train remaining-time + SLA-breach models on the past; MAE on every future prefix vs the per-prefix-length
    median (and mean) of training prefixes; then (unless `refit=False`) refit on train + test.

    `case_features`, `sample_fraction`, `max_train_cases` and `sample_window` as for `train_next_activity`.
    """
    def describe(model: RemainingTimePredictor) -> tuple[list[str], dict[str, Any]]:
        return [], {"sla_hours": model.sla_hours_, "boosting_rounds": int(model.n_iter_),
                    "breach_boosting_rounds": int(model.breach_n_iter_)}

    model = RemainingTimePredictor(seed=seed, sla_hours=sla_hours, **_prefix_params(params, case_features))
    return _train_prefix_model(
        TASK_REMAINING_TIME, model, log=log, test_log=test_log, registry=registry, seed=seed,
        test_fraction=test_fraction, promote=promote, refit=refit, sample_fraction=sample_fraction,
        max_train_cases=max_train_cases, sample_window=sample_window,
        score=lambda m, _train, test: m.evaluate(test).to_dict(), describe=describe)


def creation_frame(log: EventLog, columns: list[str]) -> pd.DataFrame:
    """Per case, the listed attributes as they stood at the case's FIRST event (what is known at creation)."""
    missing = [c for c in columns if c not in log.df.columns]
    if missing:
        raise InvalidInput(f"log {log.name} lacks router feature column(s) {missing}; has {list(log.df.columns)}")
    # Raw reads keep file order; sort so "first" means earliest (stable: ties keep file order).
    df = log.df.assign(**{CASE_ID: log.df[CASE_ID].astype(str)}).sort_values([CASE_ID, TIMESTAMP], kind="stable")
    first = df.groupby(CASE_ID, sort=False).nth(0)
    out = first.set_index(first[CASE_ID].astype(str))[columns + [TIMESTAMP]].rename(columns={TIMESTAMP: "created_at"})
    out.index.name = CASE_ID
    return out


def unresolved_cases(log: EventLog) -> set[str]:
    """Ids of cases with no resolve or close step yet (their mined resolving team is only where they sit now)."""
    from insight.mining.labels import LabelConfig

    cfg = LabelConfig()
    rx = f"(?:{cfg.resolve_pattern})|(?:{cfg.close_pattern})"
    acts = log.df[ACTIVITY].astype(str)
    done = acts.str.contains(rx, case=False, regex=True).groupby(log.df[CASE_ID].astype(str)).any()
    return set(done.index[~done.to_numpy()])


def apply_team_corrections(labels: pd.DataFrame, log: EventLog, team_labels: Mapping[str, str]) -> dict[str, int]:
    """Use agents' team corrections as `resolving_team` of cases the log has not resolved yet (in place).

    A resolved case keeps the team that resolved it (what the router predicts); a correction that disagrees with it
    is counted, not applied. Returns counts: applied, agreed (resolved as corrected), overruled, unknown (no events).
    """
    open_cases = unresolved_cases(log)
    counts = {"applied": 0, "agreed": 0, "overruled": 0, "unknown": 0}
    for case, team in team_labels.items():
        case = str(case)
        if case not in labels.index:
            counts["unknown"] += 1
        elif case in open_cases:
            labels.loc[case, "resolving_team"] = team
            counts["applied"] += 1
        elif labels.loc[case, "resolving_team"] == team:
            counts["agreed"] += 1
        else:
            counts["overruled"] += 1
    return counts


def router_table(
    *, log: EventLog, tickets: pd.DataFrame | None = None, features: list[str] | None = None,
    text_columns: tuple[str, ...] = ROUTER_TEXT, team_labels: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, list[str], str | None]:
    """Join creation-time features with the mined case labels; returns (table, categorical columns, text column).

    The table has one row per case in creation order with `resolving_team`, `first_team`, `reassignments` and
    `resolved_at` (when the resolving team became known; the router's history evidence needs it).
    `team_labels` (case id -> team an agent corrected the routing to) label cases the log has not resolved yet.
    """
    from insight.mining.labels import case_labels

    labels = case_labels(log)
    if not labels.has_groups:
        raise InvalidInput(f"log {log.name} has no '{GROUP}' column: the router needs teams to learn from")
    lab = labels.df[["first_team", "resolving_team", "reassignments", "misrouted", "resolved_at"]].copy()
    lab.index = lab.index.astype(str)
    if team_labels:
        apply_team_corrections(lab, log, team_labels)
    # A case labelled by an agent's correction (not resolved in the log) counts as known at its last event.
    lab["resolved_at"] = lab["resolved_at"].fillna(labels.df["end"].set_axis(lab.index))
    text_col: str | None = None
    if tickets is not None:
        t = tickets.copy()
        if CASE_ID not in t.columns:
            raise InvalidInput(f"ticket table lacks column {CASE_ID!r}; has {list(t.columns)}")
        t[CASE_ID] = t[CASE_ID].astype(str)
        t = t.set_index(CASE_ID)
        cats = features or [c for c in ROUTER_CATEGORICAL if c in t.columns]
        texts = [c for c in text_columns if c in t.columns]
        if texts:
            text_col = "__text__"
            t[text_col] = t[texts].fillna("").astype(str).agg(" \n ".join, axis=1)
        keep = cats + ([text_col] if text_col else []) + (["created_at"] if "created_at" in t.columns else [])
        table = t[keep].join(lab, how="inner")
        if "created_at" not in table.columns:
            table["created_at"] = case_starts(log).reindex(table.index).to_numpy()
    else:
        if not features:
            raise InvalidInput("router on a log needs --features: the case attributes known at creation")
        cats = list(features)
        table = creation_frame(log, cats).join(lab, how="inner")
    table = table[table["resolving_team"].notna()]
    table = table.sort_values("created_at", kind="stable")
    return table, cats, text_col


def _first_team_feature(train: pd.DataFrame, cats: list[str]) -> str | None:
    """The creation-time feature that holds the first team: the categorical column agreeing most often (at least
    half the cases) with the mined first team; None when no feature does (the rules are then reported only)."""
    first = train["first_team"].astype("string")
    agree = {c: float((train[c].astype("string") == first).fillna(False).mean()) for c in cats}
    best = max(agree, key=lambda c: agree[c], default=None)
    return best if best is not None and agree[best] >= 0.5 else None


def _router_scores(model: TeamRouter, X: pd.DataFrame, y: pd.Series, reassigned: np.ndarray,
                   at: Any) -> tuple[dict[str, float], np.ndarray]:
    m = model.evaluate(X, y, reassigned=reassigned, at=at)
    pred = model.predict(X, at=at)
    return {"accuracy": m.accuracy, "accuracy_reassigned": m.accuracy_reassigned,
            "top3_accuracy": m.top3_accuracy}, pred


def train_router(
    *, log: EventLog, tickets: pd.DataFrame | None = None, features: list[str] | None = None,
    registry: ModelRegistry | None = None, seed: int = 7, test_fraction: float = 0.2, promote: bool = True,
    params: dict[str, Any] | None = None, team_labels: Mapping[str, str] | None = None,
    live_memory: bool = True, refit: bool | None = None, sample_fraction: float | None = None,
    max_train_cases: int | None = None, sample_window: str = "7D",
) -> TrainedModel:
    """Train the resolving-team router on the oldest cases; score the newest against the trivial rules.

    The rules "stay with the first team", "majority resolving team given the first team" (global majority for
    an unseen first team) and "global majority" are fitted on the same cases and scored on the same validation
    slice (newest part of the training cases) and test cases; the router chooses on validation between them,
    the regression and the regression with stacked evidence (TeamRouter), and the metrics say what won and warn
    when the learned model does not beat the best rule.

    Memory of resolutions (history evidence): `live_memory=True` (the service feeds resolutions from ticket events
    to `TeamRouter.observe()`, routing.live_memory) chooses and weighs with each validation case seeing the
    resolutions known before its creation, and `accuracy` is the test figure with the memory fed the same way
    (`accuracy_live_memory`); `live_memory=False` (a deployment that sends no resolve events) does both with the
    memory frozen when the training cases end (`accuracy_frozen_memory`). Both figures are always reported and
    `memory` names the headline. Then, unless `refit=False` (default: refit
    when saving), the deployed router is refitted on every labelled case with the selected configuration, its
    memory holding every resolution; metadata `extra` records what was evaluated and that it was refitted.

    `sample_fraction` / `max_train_cases` / `sample_window` as for `train_next_activity`: the router learns from
    labelled cases sampled per creation window of the training part (every test case is scored; the refit uses
    every labelled case sampled by the same rule).
    """
    from insight.mining.misrouting import analyze_misrouting
    from insight.models.router import RULES, rule_predictions

    table, cats, text_col = router_table(log=log, tickets=tickets, features=features, team_labels=team_labels)
    train, test = split_newest(table, test_fraction,
                               too_few=f"too few labelled cases ({len(table)}) to train and test a router")
    sample: dict[str, Any] | None = None
    if sample_fraction is not None or max_train_cases is not None:
        keep = sample_case_ids(train["created_at"], fraction=sample_fraction, max_cases=max_train_cases,
                               window=sample_window, seed=seed)
        sample = {"sample_fraction": sample_fraction, "max_train_cases": max_train_cases,
                  "sample_window": sample_window, "sample_seed": seed, "n_cases_before_sample": len(train),
                  "n_cases_sampled": len(keep)}
        train = train.loc[keep]
    cols = cats + ([text_col] if text_col else [])
    p = dict(params or {})
    p.setdefault("first_team", _first_team_feature(train, cats))
    p.setdefault("live_memory", live_memory)
    live = bool(p["live_memory"])
    model = TeamRouter(categorical=cats, text=text_col, seed=seed, **p)
    history = bool(model.history)
    times = {"created_at": train["created_at"], "resolved_at": train["resolved_at"]} if history else {}
    model.fit(train[cols], train["resolving_team"], **times)
    y_test = test["resolving_team"]
    reassigned = test["reassignments"].fillna(0).to_numpy() > 0
    # Frozen memory: every test case asks as of the last training case's creation. Live: each test case sees the
    # resolutions known strictly before it was created, the earlier test cases' included (observed below; the
    # memory answers per creation time, so no later one leaks in).
    freeze = pd.Series([train["created_at"].max()] * len(test), index=test.index) if history else None
    frozen, pred_frozen = _router_scores(model, test[cols], y_test, reassigned, freeze)
    if history:
        model.observe(test[cols], y_test, test["resolved_at"])
        live_scores, pred_live = _router_scores(model, test[cols], y_test, reassigned, test["created_at"])
    else:
        live_scores, pred_live = frozen, pred_frozen
    head, pred = (live_scores, pred_live) if live else (frozen, pred_frozen)
    y_arr = y_test.astype(str).to_numpy(dtype=object)
    metrics: dict[str, Any] = {
        "n_cases": len(test), "n_reassigned": int(reassigned.sum()), **head,
        "memory": "live" if live else "frozen",
        "accuracy_frozen_memory": frozen["accuracy"],
        "accuracy_reassigned_frozen_memory": frozen["accuracy_reassigned"],
        "accuracy_live_memory": live_scores["accuracy"],
        "accuracy_reassigned_live_memory": live_scores["accuracy_reassigned"],
    }
    # The trivial rules on the same split, from the mined first team (test: fitted on all training cases).
    preds = rule_predictions(train["first_team"], train["resolving_team"], test["first_team"])
    for kind in RULES:
        metrics[f"baseline_{kind}_accuracy"] = float(np.mean(preds[kind] == y_arr)) if len(y_arr) else 0.0
        metrics[f"baseline_{kind}_accuracy_reassigned"] = (
            float(np.mean(preds[kind][reassigned] == y_arr[reassigned])) if reassigned.any() else 0.0)
    # The rules scored on the router's own validation slice.
    n_val = validation_count(len(train), model.validation_fraction)
    val_rules: dict[str, float] = {}
    if n_val >= 1 and n_val < len(train):
        fit_part, val_part = cut_newest(train, n_val)
        vy = val_part["resolving_team"].astype(str).to_numpy(dtype=object)
        vp = rule_predictions(fit_part["first_team"], fit_part["resolving_team"], val_part["first_team"])
        val_rules = {kind: float(np.mean(vp[kind] == vy)) for kind in RULES}
    best_rule = max(RULES, key=lambda k: metrics[f"baseline_{k}_accuracy"])
    metrics["best_baseline"] = best_rule
    metrics["selected"] = model.strategy_
    metrics["validation"] = dict(model.candidate_scores_)
    metrics["validation_baselines"] = val_rules
    metrics["validation_grid"] = dict(model.validation_scores_)
    metrics["first_team_column"] = model.first_team_
    if model.keep_candidates:
        # Every validated candidate on the same test cases (the served one is the headline above).
        per: dict[str, dict[str, float]] = {}
        for strat in model.candidate_scores_:
            row: dict[str, float] = {}
            for label, at_ in (("frozen_memory", freeze), ("live_memory", test["created_at"] if history else None)):
                got = model.classes_[np.argmax(model.candidate_proba(test[cols], strat, at=at_), axis=1)]
                row[f"accuracy_{label}"] = float(np.mean(got == y_arr))
                row[f"accuracy_reassigned_{label}"] = (float(np.mean(got[reassigned] == y_arr[reassigned]))
                                                       if reassigned.any() else 0.0)
            row["accuracy"] = row["accuracy_live_memory" if live else "accuracy_frozen_memory"]
            row["accuracy_reassigned"] = row["accuracy_reassigned_live_memory" if live
                                             else "accuracy_reassigned_frozen_memory"]
            per[strat] = row
        metrics["test_candidates"] = per
    cand = model.candidate_scores_
    learned = {s: v for s, v in cand.items() if s not in RULES}
    rules_val = {**val_rules, **{s: v for s, v in cand.items() if s in RULES}}
    warnings_: list[str] = []
    if cand:
        metrics["selected_reason"] = (
            f"highest validation accuracy ({cand.get(model.strategy_, float('nan')):.4f}) of "
            + ", ".join(f"{s} {v:.4f}" for s, v in sorted(cand.items(), key=lambda kv: -kv[1])))
    else:
        metrics["selected_reason"] = f"fixed or too few training cases to validate ({len(train)})"
    if learned and rules_val:
        top_rule = max(rules_val, key=lambda k: rules_val[k])
        top_learned = max(learned, key=lambda k: learned[k])
        if learned[top_learned] <= rules_val[top_rule]:
            served = model.strategy_ in RULES
            warnings_.append(
                f"the learned router ({top_learned} {learned[top_learned]:.4f}) does not beat the rule {top_rule} "
                f"({rules_val[top_rule]:.4f}) on validation; "
                + ("the rule is served" if served else
                   f"the rule cannot be served (first team not among the features {cats})"))
    if metrics["accuracy"] < metrics[f"baseline_{best_rule}_accuracy"]:
        servable = model.first_team_ is not None or best_rule == "majority"
        warnings_.append(f"on the test cases the router ({model.strategy_}, {metrics['accuracy']:.4f}) is below the "
                         f"rule {best_rule} ({metrics[f'baseline_{best_rule}_accuracy']:.4f})"
                         + ("" if servable else "; that rule reads the first team, which is not among the features "
                            "(known only after dispatch), so it cannot be served"))
    metrics["warnings"] = warnings_
    for w in warnings_:
        logging.getLogger(__name__).warning("router: %s", w)
    if history:
        metrics["history_weights"] = [float(w) for w in model.stack_w_] if model.stack_w_ is not None else None
    # Cost of a misrouted case is measured on the training period only (no test data in any figure we reuse).
    train_log = log.filter_cases(train.index)
    cost = analyze_misrouting(train_log).extra_hours_mean
    impact = routing_impact(predicted=pred, resolving_team=y_test, reassignments=test["reassignments"],
                            hours_per_misrouted_case=cost)
    metrics["impact"] = impact.to_dict()
    metrics["C"] = model.C_
    deployed, fitted = model, train
    do_refit = registry is not None if refit is None else refit
    if do_refit:
        # Same configuration (C, pairs, strategy, first-team column), every labelled case; stacking weights are
        # re-fitted on the newest slice of all cases. The memory then holds every resolution.
        fixed = {**p, "C": model.C_, "pair_features": model.pairs_, "strategy": model.strategy_,
                 "first_team": model.first_team_}
        deployed = TeamRouter(categorical=cats, text=text_col, seed=seed, **fixed)
        if sample is not None:
            table = table.loc[sample_case_ids(table["created_at"], fraction=sample_fraction,
                                              max_cases=max_train_cases, window=sample_window, seed=seed)]
        all_times = {"created_at": table["created_at"], "resolved_at": table["resolved_at"]} if history else {}
        deployed.fit(table[cols], table["resolving_team"], **all_times)
        fitted = table
    extra = {
        "text_column": text_col, "categorical": cats, "selected": model.strategy_, "memory": metrics["memory"],
        "first_team_column": model.first_team_,
        "evaluated_on": (f"newest {test_fraction:.0%} of labelled cases by creation time "
                         f"({test['created_at'].min()} .. {test['created_at'].max()})"),
        "n_cases_evaluated_train": len(train), "n_cases_evaluated_test": len(test),
        "refit_on_all_data": do_refit, "n_cases_refit": len(table) if do_refit else None,
    }
    if sample is not None:
        extra["train_sample"] = sample
    ref = _save(registry, deployed, task=TASK_ROUTER, metrics=metrics, features=cols,
                classes=[str(c) for c in deployed.classes_], train_df=fitted[["resolving_team"]],
                window=[str(fitted["created_at"].min()), str(fitted["created_at"].max())],
                hyper=deployed.get_params(), promote=promote, extra=extra)
    return _trained(TASK_ROUTER, metrics, ref, deployed)


def misroute_proxy(train: pd.DataFrame, test: pd.DataFrame, cols: list[str], cats: list[str],
                   text_col: str | None, *, seed: int = 7, params: dict[str, Any] | None = None) -> np.ndarray:
    """`1 - p(best team)` of a router fitted on `train`, per `test` row: the proxy the misroute model replaces.

    With history the router is scored as deployed: each test row sees the resolutions known before its creation.
    """
    router = TeamRouter(categorical=cats, text=text_col, seed=seed, **(params or {}))
    times = {"created_at": train["created_at"], "resolved_at": train["resolved_at"]} if router.history else {}
    router.fit(train[cols], train["resolving_team"], **times)
    at = None
    if router.history:
        router.observe(test[cols], test["resolving_team"], test["resolved_at"])
        at = test["created_at"]
    return np.asarray(1.0 - router.predict_proba(test[cols], at=at).max(axis=1), dtype=float)


def train_misroute(
    *, log: EventLog, tickets: pd.DataFrame | None = None, features: list[str] | None = None,
    registry: ModelRegistry | None = None, seed: int = 7, test_fraction: float = 0.2, promote: bool = True,
    params: dict[str, Any] | None = None, router_params: dict[str, Any] | None = None, proxy: bool = True,
    team_labels: Mapping[str, str] | None = None, refit: bool = True,
) -> TrainedModel:
    """Misroute risk (insight.models.misroute): calibrated P(mined `misrouted`) from what the router reads.

    Split by creation time like the router (oldest cases train, newest `test_fraction` test); the model calibrates
    on the newest slice of its training part. Test metrics: Brier / AUC / log loss / calibration error, next to
    the training base rate as a constant and (with `proxy`) `1 - p(best team)` of a router fitted on the same
    training cases with `router_params`. With `refit`, the saved model is then fitted on every labelled case with
    the C and calibration map kind chosen on validation (it calibrates on the newest slice of all the cases).
    """
    from insight.models.misroute import MisrouteModel, probability_scores

    table, cats, text_col = router_table(log=log, tickets=tickets, features=features, team_labels=team_labels)
    table = table[table["misrouted"].notna()]
    train, test = split_newest(table, test_fraction,
                               too_few=f"too few labelled cases ({len(table)}) to train and test a misroute model")
    cols = cats + ([text_col] if text_col else [])
    y_train = train["misrouted"].astype(bool).to_numpy()
    y_test = test["misrouted"].astype(bool).to_numpy()
    model = MisrouteModel(categorical=cats, text=text_col, seed=seed, **(params or {})).fit(train[cols], y_train)
    metrics: dict[str, Any] = {
        "label": "misrouted", "n_train": len(train), "n_test": len(test), "C": model.C_,
        "calibration": model.calibration_, "validation": model.validation_,
        "model": model.evaluate(test[cols], y_test).to_dict(),
        "baseline_base_rate": probability_scores(y_test, np.full(len(test), float(y_train.mean()))).to_dict(),
    }
    if proxy:
        p = misroute_proxy(train, test, cols, cats, text_col, seed=seed, params=router_params)
        metrics["baseline_one_minus_team_probability"] = probability_scores(y_test, p).to_dict()
    deployed, fitted_on = model, train
    if refit:
        chosen = {**(params or {}), "C": model.C_, "calibration": model.calibration_}
        deployed = MisrouteModel(categorical=cats, text=text_col, seed=seed, **chosen).fit(
            table[cols], table["misrouted"].astype(bool).to_numpy())
        fitted_on = table
    ref = _save(registry, deployed, task=TASK_MISROUTE, metrics=metrics, features=cols, classes=["misrouted"],
                train_df=fitted_on[["misrouted"]].astype(bool), hyper=deployed.get_params(), promote=promote,
                window=[str(fitted_on["created_at"].min()), str(fitted_on["created_at"].max())],
                extra={"label": "misrouted", "text_column": text_col, "categorical": cats,
                       "evaluated_on": f"newest {len(test)} of {len(table)} cases by creation time",
                       "refit_on_all_data": bool(refit), "n_cases_evaluated_train": len(train),
                       "n_cases_refit": len(fitted_on) if refit else None})
    return _trained(TASK_MISROUTE, metrics, ref, deployed)


class _MemoEmbedder:
    """The embedder with each distinct text embedded once per training run (fit, evaluation and refit share it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self._mem: dict[str, np.ndarray] = {}

    def warm(self, texts: list[str], progress: Any = None, chunk: int = 512) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._mem))
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            self._mem.update(zip(part, np.asarray(self.inner.encode(part), dtype=np.float32), strict=True))
            if progress is not None:
                progress("embedding", min(len(todo), i + chunk), len(todo))

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        self.warm(list(texts))
        if not texts:
            return np.asarray(self.inner.encode([]), dtype=np.float32)
        return np.stack([self._mem[t] for t in texts])


def jsonable_calibration(cal: Any) -> dict[str, Any]:
    """An OOSCalibration as JSON-ready data (NaN, where a figure does not exist, becomes None)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and not np.isfinite(v) else v

    return {k: clean(v) for k, v in cal.__dict__.items()}


def intent_holdout(labels: list[str], *, fraction: float, seed: int) -> np.ndarray:
    """Indices of a shuffled, stratified test sample: about `fraction` of every label's rows, never a label's
    last row (labels seen once stay in training)."""
    if not 0 < fraction < 1:
        raise InvalidInput(f"test_fraction must be in (0, 1), got {fraction}")
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for lab in sorted(set(y.tolist())):
        rows = rng.permutation(np.flatnonzero(y == lab))
        n = min(len(rows) - 1, int(np.floor(len(rows) * fraction + rng.random())))
        picked.append(rows[:max(0, n)])
    out = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)
    if len(out) == 0:
        raise InvalidInput(f"too few rows ({len(y)}) to hold out a test sample; give a test file")
    return out


def intent_metrics(y_true: Any, y_pred: Any, *, oos_label: str, threshold: float) -> dict[str, Any]:
    """Open-set metrics as fractions: `y_pred` is the predicted intent, or `oos_label` when flagged out of scope.

    in_scope_accuracy: right intent and not flagged, over in-scope rows; oos_recall: flagged out-of-scope rows over
    out-of-scope rows; oos_precision: truly out-of-scope over flagged rows; accuracy: overall, out of scope counted
    as a class; macro_f1 over the true labels (out of scope included). None where a denominator is empty.
    """
    from sklearn.metrics import f1_score

    y = np.asarray(y_true, dtype=object)
    p = np.asarray(y_pred, dtype=object)
    oos, flagged = y == oos_label, p == oos_label
    n_in, n_oos, n_flag = int((~oos).sum()), int(oos.sum()), int(flagged.sum())
    return {
        "in_scope_accuracy": float((p[~oos] == y[~oos]).mean()) if n_in else None,
        "oos_recall": float(flagged[oos].mean()) if n_oos else None,
        "oos_precision": float(oos[flagged].mean()) if n_flag else None,
        "accuracy": float((p == y).mean()) if len(y) else None,
        "macro_f1": float(f1_score(y, p, average="macro", labels=np.unique(y), zero_division=0)) if len(y) else None,
        "threshold": float(threshold),
        "n_test": len(y), "n_test_in_scope": n_in, "n_test_oos": n_oos, "n_flagged": n_flag,
        "n_test_in_scope_flagged": int(flagged[~oos].sum()),
    }


def train_intent(
    *, texts: list[str], labels: list[str], test_texts: list[str] | None = None,
    test_labels: list[str] | None = None, validation_texts: list[str] | None = None,
    validation_labels: list[str] | None = None, oos_label: str = "oos", embedder: Any = None,
    registry: ModelRegistry | None = None, seed: int = 7, test_fraction: float = 0.2, promote: bool = True,
    refit: bool = True, max_in_scope_flagged: float | None = None, progress: Any = None,
) -> TrainedModel:
    """Train, evaluate and deploy the intent classifier with its out-of-scope flag.

    Rows labelled `oos_label` are known out-of-scope examples (never an intent class). The out-of-scope score and
    threshold are chosen on the validation rows when given, else on inner folds of the training rows (see
    insight.models.intent for the objective). Without a test set a shuffled, stratified `test_fraction` sample is
    held out. Test metrics (fractions) describe the evaluated model; then, unless `refit=False`, the deployed model
    is refitted on train + validation + test with the same score and threshold, and the metadata says so
    (`extra.evaluated_on`, `extra.refit_on_all_data`). Test labels never seen in training are listed in
    `metrics["warnings"]` (they can only count as errors). `progress(step, done, total)` is told how long steps
    advance.
    """
    import warnings as _warnings

    from insight.models.intent import IntentClassifier

    for name, xs, ys in (("training", texts, labels), ("test", test_texts, test_labels),
                         ("validation", validation_texts, validation_labels)):
        if (xs is None) != (ys is None):
            raise InvalidInput(f"intent: {name} texts and labels must be given together")
        if xs is not None and ys is not None and len(xs) != len(ys):
            raise InvalidInput(f"intent: {len(xs)} {name} texts but {len(ys)} labels")
    texts, labels = [str(t) for t in texts], [str(v) for v in labels]
    intents = sorted(set(labels) - {oos_label})
    if len(intents) < 2:
        raise InvalidInput(f"intent training needs at least two distinct labels besides the out-of-scope label "
                           f"{oos_label!r}; got {intents}", field="labels")
    if test_texts is None or test_labels is None:
        held = intent_holdout(labels, fraction=test_fraction, seed=seed)
        keep = np.setdiff1d(np.arange(len(texts)), held)
        test_texts, test_labels = [texts[i] for i in held], [labels[i] for i in held]
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        evaluated_on = f"shuffled stratified {test_fraction:.0%} sample of the training rows (seed {seed})"
    else:
        test_texts, test_labels = [str(t) for t in test_texts], [str(v) for v in test_labels]
        evaluated_on = "the given test set"
    validation = None
    if validation_texts is not None and validation_labels is not None:
        validation = ([str(t) for t in validation_texts], [str(v) for v in validation_labels])
    if validation is not None:  # checked before anything is embedded
        unknown = sorted(set(validation[1]) - set(labels) - {oos_label})
        if unknown:
            raise InvalidInput(f"validation has {len(unknown)} label(s) never seen in training: {unknown[:5]}; "
                               f"out-of-scope rows must be labelled {oos_label!r}", field="validation")
    warn = []
    unseen = sorted(set(test_labels) - set(labels) - {oos_label})
    if unseen:
        n_rows = sum(v in set(unseen) for v in test_labels)
        warn.append(f"{n_rows} test row(s) have {len(unseen)} label(s) never seen in training "
                    f"({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}); they count as errors")
    memo = _MemoEmbedder(embedder) if embedder is not None else None
    if memo is not None:
        memo.warm(texts + (validation[0] if validation else []) + test_texts, progress)
    params: dict[str, Any] = {"seed": seed}
    if max_in_scope_flagged is not None:
        params["max_in_scope_flagged"] = max_in_scope_flagged
    model = IntentClassifier(embedder=memo, **params).fit(texts, labels, oos_label=oos_label, validation=validation,
                                                          progress=progress)
    pred = model.predict_labels_with_oos(test_texts, oos_label=oos_label)
    closed = np.asarray(model.predict(test_texts), dtype=object)
    metrics = intent_metrics(test_labels, pred, oos_label=oos_label, threshold=model.oos_threshold_)
    y = np.asarray(test_labels, dtype=object)
    in_scope = y != oos_label
    cal = model.oos_calibration_
    metrics.update(n_train=len(texts), n_validation=len(validation[0]) if validation else 0,
                   in_scope_accuracy_no_rejection=float((closed[in_scope] == y[in_scope]).mean())
                   if in_scope.any() else None,
                   oos_score=cal.score, calibration=cal.method, max_in_scope_flagged=cal.max_in_scope_flagged)
    if warn:
        metrics["warnings"] = warn
        for w in warn:
            _warnings.warn(w, stacklevel=2)
    evaluated = {"evaluated_on": evaluated_on, "n_train": len(texts), "n_validation": metrics["n_validation"],
                 "n_test": len(test_texts), "oos_calibration": jsonable_calibration(cal)}
    all_texts = texts + (validation[0] if validation else []) + test_texts
    all_labels = labels + (validation[1] if validation else []) + test_labels
    if refit:
        # Same score and threshold; the reference the threshold is read against is re-derived on all the rows.
        refit_progress = None if progress is None else (lambda s, d, t: progress(f"refit: {s}", d, t))
        model = model.refit(all_texts, all_labels, oos_label=oos_label, progress=refit_progress)
    if embedder is not None:
        model.set_embedder(embedder)
    extra = {"embedder": getattr(embedder, "name", None), "oos_label": oos_label, "refit_on_all_data": refit,
             "evaluated": evaluated, "evaluated_on": evaluated_on,
             "n_rows_deployed": len(all_texts) if refit else len(texts),
             "deployed_oos_calibration": jsonable_calibration(model.oos_calibration_)}
    fitted_texts = all_texts if refit else texts
    fitted_labels = all_labels if refit else labels
    ref = _save(registry, model, task=TASK_INTENT, metrics=metrics, features=["text"],
                classes=[str(c) for c in model.classes_], train_df=pd.Series(fitted_texts + fitted_labels),
                window=[], hyper={k: v for k, v in model.get_params().items() if k != "embedder"},
                promote=promote, extra=extra)
    return _trained(TASK_INTENT, metrics, ref, model)


def ticket_texts(tickets: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Tickets in creation order and their text as the intent model reads it ("subject. body")."""
    t = tickets.sort_values("created_at", kind="stable") if "created_at" in tickets.columns else tickets
    cols = [c for c in ROUTER_TEXT if c in t.columns]
    if not cols:
        return t, [""] * len(t)
    # Column by column: a row-wise join turns an empty frame into a frame, not a list of texts.
    text = t[cols[0]].fillna("").astype(str)
    for c in cols[1:]:
        text = text + ". " + t[c].fillna("").astype(str)
    return t, text.tolist()


def train_memory(
    *, tickets: pd.DataFrame, embedder: Any, registry: ModelRegistry | None = None, promote: bool = True,
    labels: pd.DataFrame | None = None,
) -> TrainedModel:
    """Embed past tickets (with their intent and resolving team) for the "similar past tickets" reasons."""
    from insight.models.memory import TicketMemory

    if embedder is None:
        raise InvalidInput("the ticket memory needs an embedding model", field="embedder")
    t, texts = ticket_texts(tickets)
    if labels is not None and "resolving_team" not in t.columns:
        t = t.join(labels[["resolving_team"]], on=CASE_ID)
    model = TicketMemory(embedder=embedder).fit(t.reset_index(drop=True), text=pd.Series(texts))
    metrics = {"n_tickets": len(model.case_ids_)}
    ref = _save(registry, model, task=TASK_MEMORY, metrics=metrics, features=["text"], classes=[],
                train_df=pd.Series(texts), window=[], hyper={"max_items": model.max_items}, promote=promote,
                extra={"embedder": getattr(embedder, "name", None)})
    return _trained(TASK_MEMORY, metrics, ref, model)


__all__ = [
    "TASK_INTENT", "TASK_MEMORY", "TASK_MISROUTE", "TASK_NEXT_ACTIVITY", "TASK_REMAINING_TIME", "TASK_ROUTER",
    "TrainedModel", "apply_team_corrections", "creation_frame", "misroute_proxy", "router_table", "split_log",
    "ticket_texts", "train_intent", "train_memory", "train_misroute", "train_next_activity", "train_remaining_time",
    "train_router", "unresolved_cases",
]
