"""Champion / challenger gate: score the live model and a retrained one on the same cases, swap only when safe.

The rule, per gate metric (a per-case "right or wrong" for both models on the same evaluation cases):

* d_i = challenger_correct_i - champion_correct_i (cases grouped into clusters where one case yields several
  rows, e.g. every prefix of a case for next-activity: d is then averaged per case and the case is the unit);
* difference = mean(d); lower bound = difference - z * sd(d) / sqrt(n), a one-sided paired confidence bound
  (z = 1.645 by default, 95 %);
* the metric **passes** when lower bound >= -tolerance: the data rule out, at that confidence, that the challenger
  is worse than the champion by more than the tolerance; it **fails** otherwise;
* a metric measured on fewer than `min_cases` units is **too small to tell**: reported, not gated; a task whose
  primary metric is too small keeps its champion (its challenger is not promoted).

Labels the live model's mistakes chose are kept out of the router's evaluation: it is judged on resolved cases
(the team that resolved them), not on agents' corrections, which exist because the live router was wrong.

A task's challenger passes when every gated metric passes; the job is rejected when any task fails, or when no task
had an evaluation large enough to tell. Golden-set metrics (cases an admin pinned) use the same bound without the
minimum count: the admin chose the set, and a small set only widens the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from insight.eventlog.schema import EventLog
from insight.models.split import case_starts

PASS, FAIL, TOO_FEW = "pass", "fail", "too_few_cases"
OOS_LABELS = frozenset({"oos", "out_of_scope"})
# The metric that must be measurable for a task's challenger to be judged at all.
PRIMARY = {"router": "team_accuracy", "intent": "intent_in_scope_accuracy", "next_activity": "next_activity_accuracy"}


@dataclass(frozen=True)
class GateRule:
    """Tolerance (fraction, e.g. 0.02 = 2 points), one-sided z, and the fewest units a metric is gated on."""

    tolerance: float = 0.02
    z: float = 1.645
    min_cases: int = 30

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"tolerance": self.tolerance, "z": self.z, "min_cases": self.min_cases,
                "rule": "pass when mean(challenger - champion) - z * se >= -tolerance (paired, one-sided)"}


def paired_check(champion: Sequence[bool] | np.ndarray, challenger: Sequence[bool] | np.ndarray, *, rule: GateRule,
                 groups: Sequence[Any] | np.ndarray | None = None, min_cases: int | None = None) -> dict[str, Any]:
    """Side-by-side numbers and the verdict of one metric (see the module docstring for the rule)."""
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"champion and challenger scored different cases ({a.shape} vs {b.shape})")
    d = b - a
    if groups is not None and len(d):
        d = pd.Series(d).groupby(np.asarray(groups), sort=False).mean().to_numpy()
    n = len(d)
    need = rule.min_cases if min_cases is None else min_cases
    out: dict[str, Any] = {"n": int(n), "n_rows": int(len(a)),
                           "champion": float(a.mean()) if len(a) else None,
                           "challenger": float(b.mean()) if len(b) else None}
    if n == 0:
        return {**out, "difference": None, "lower_bound": None, "verdict": TOO_FEW}
    diff = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    lower = diff - rule.z * se
    verdict = TOO_FEW if n < need else (PASS if lower >= -rule.tolerance - 1e-12 else FAIL)
    return {**out, "difference": diff, "lower_bound": lower, "verdict": verdict}


def task_verdict(task: str, metrics: Mapping[str, dict[str, Any]]) -> str:
    """pass / fail / too_few_cases for one task from its metric checks."""
    primary = PRIMARY.get(task)
    if primary is not None and metrics.get(primary, {}).get("verdict", TOO_FEW) == TOO_FEW:
        return FAIL if any(m.get("verdict") == FAIL for m in metrics.values()) else TOO_FEW
    return FAIL if any(m.get("verdict") == FAIL for m in metrics.values()) else PASS


# ---------------------------------------------------------------- per-task scoring on the same cases


def router_correct(model: Any, table: pd.DataFrame, *, at: Any) -> np.ndarray:
    """Per row of a router table: did the model name the resolving team (memory as of `at`)?"""
    if hasattr(model, "feature_columns"):
        X = table.reindex(columns=list(dict.fromkeys([*model.feature_columns(), *table.columns])))
    else:
        X = table
    if len(X) == 0:
        return np.zeros(0, dtype=bool)
    pred = model.predict(X, at=at)
    return np.asarray(pred, dtype=object) == table["resolving_team"].astype(str).to_numpy(dtype=object)


def intent_texts(tickets: pd.DataFrame) -> list[str]:
    """Ticket text as the intent model reads it ("subject. body")."""
    cols = [c for c in ("subject", "body") if c in tickets.columns]
    return tickets[cols].fillna("").astype(str).agg(". ".join, axis=1).tolist()


def intent_correct(model: Any, tickets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is out of scope, right) per labelled ticket: right = correct intent and not flagged for in-scope rows,
    flagged for out-of-scope rows."""
    y = tickets["intent"].astype(str).to_numpy(dtype=object)
    oos = np.isin(y, list(OOS_LABELS))
    if len(y) == 0:
        return oos, np.zeros(0, dtype=bool)
    pred = np.asarray(model.predict_labels_with_oos(intent_texts(tickets), oos_label="__oos__"), dtype=object)
    flagged = pred == "__oos__"
    right = np.where(oos, flagged, (pred == y) & ~flagged)
    return oos, right


def next_activity_correct(model: Any, log: EventLog) -> tuple[np.ndarray, np.ndarray]:
    """(case id, right) per prefix of every case of `log`."""
    ps = model.prefixes(log)
    if len(ps) == 0:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=bool)
    pred = np.asarray(model.predict(ps), dtype=object)
    return np.asarray(ps.case_id, dtype=object), pred == np.asarray(ps.next_activity, dtype=object)


def compare_router(champion: Any, challenger: Any, table: pd.DataFrame, *, at: Any, rule: GateRule,
                   prefix: str = "") -> dict[str, dict[str, Any]]:
    """Team accuracy and accuracy on reassigned tickets of both routers on the same labelled cases."""
    a, b = router_correct(champion, table, at=at), router_correct(challenger, table, at=at)
    re = table["reassignments"].fillna(0).to_numpy() > 0 if "reassignments" in table.columns else None
    out = {f"{prefix}team_accuracy": paired_check(a, b, rule=rule, min_cases=0 if prefix else None)}
    if re is not None:
        out[f"{prefix}team_accuracy_reassigned"] = paired_check(a[re], b[re], rule=rule,
                                                                 min_cases=0 if prefix else None)
    return out


def compare_intent(champion: Any, challenger: Any, tickets: pd.DataFrame, *, rule: GateRule,
                   prefix: str = "") -> dict[str, dict[str, Any]]:
    """Intent in-scope accuracy and out-of-scope recall of both intent models on the same labelled tickets."""
    oos, a = intent_correct(champion, tickets)
    _, b = intent_correct(challenger, tickets)
    low = 0 if prefix else None
    out = {f"{prefix}intent_in_scope_accuracy": paired_check(a[~oos], b[~oos], rule=rule, min_cases=low)}
    if oos.any():
        out[f"{prefix}oos_recall"] = paired_check(a[oos], b[oos], rule=rule, min_cases=low)
    return out


def compare_next_activity(champion: Any, challenger: Any, log: EventLog, *, rule: GateRule) -> dict[str, dict[str, Any]]:
    """Next-activity accuracy over every prefix of the evaluation cases (the case is the unit of the bound)."""
    ca, a = next_activity_correct(champion, log)
    cb, b = next_activity_correct(challenger, log)
    if len(ca) != len(cb) or not np.array_equal(ca, cb):
        raise ValueError("the next-activity models cut the evaluation log into different prefixes")
    return {"next_activity_accuracy": paired_check(a, b, rule=rule, groups=ca)}


def split_by_time(log: EventLog | None, tickets: pd.DataFrame | None, *, after: pd.Timestamp | None,
                  fraction: float, min_cases: int) -> tuple[pd.Timestamp | None, int]:
    """The cut-off of the evaluation cases: the newest cases created after `after` (the champion's training end).

    Of the n cases the champion never saw, the newest max(min_cases, ceil(fraction * n)) (at most n) are held out
    for the gate; the challenger learns from everything before the cut-off. Returns (cut-off, n new cases); the
    cut-off is None when no case is new.
    """
    starts = case_starts(log, tickets).dropna()
    if after is not None:
        starts = starts[starts > after]
    n_new = len(starts)
    if n_new == 0:
        return None, 0
    k = min(n_new, max(min_cases, math.ceil(fraction * n_new)))
    return starts.sort_values(kind="stable").iloc[-k], n_new


__all__ = ["FAIL", "PASS", "PRIMARY", "TOO_FEW", "GateRule", "compare_intent", "compare_next_activity",
           "compare_router", "paired_check", "split_by_time", "task_verdict"]
