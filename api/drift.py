"""Drift watch: live traffic compared with what the models were trained on and with the traffic before it.

Signals (over the newest `drift_window` triage decisions of new tickets):

* **intent mix** and **team mix** of the decisions vs the training data stored with the registry (the ticket
  intents; the teams that resolved the training cases): total variation distance (TVD) and a chi-square
  goodness-of-fit test (labels the training data never had pooled as "(new)");
* **decision mix** (auto-route / suggest / human triage) and **out-of-scope rate**: the newest window vs the window
  before it, chi-square test of homogeneity; effect = TVD;
* **confidence** (team and intent): the newest window vs the one before, Mann-Whitney U; effect = difference of
  the means;
* **correction rate**: share of the window's tickets whose team an agent corrected to another team (a live
  estimate of misrouting, reported, and compared with the window before).

A signal alerts when its p-value is below `drift_alpha` and its effect is at least `drift_min_effect` (both
settings): a large sample alone does not alert on a negligible change. Any alert proposes a retrain, which still
goes through the champion / challenger gate. Results feed the Prometheus gauges `deskpilot_drift_effect` and
`deskpilot_drift_alert` (label `signal`) and `GET /v1/models/health`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from api.settings import Settings

NEW = "(new)"
_REFERENCE_CACHE: dict[str, dict[str, dict[str, int]]] = {}
_CACHE_LOCK = threading.Lock()


def training_reference(settings: Settings) -> tuple[dict[str, dict[str, int]], str | None]:
    """Intent and team counts of the training data stored with the registry (cached per data hash)."""
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(settings.registry_path)
    info = reg.training_data_info()
    if info is None:
        return {}, None
    digest = str(info["hash"])
    with _CACHE_LOCK:
        if digest in _REFERENCE_CACHE:
            return _REFERENCE_CACHE[digest], digest
    stored = reg.load_training_data()
    ref: dict[str, dict[str, int]] = {}
    if stored is not None:
        log, tickets, _ = stored
        if tickets is not None and "intent" in tickets.columns:
            ref["intent"] = {str(k): int(v) for k, v in tickets["intent"].dropna().value_counts().items()}
        from insight.eventlog.schema import GROUP
        from insight.mining.labels import case_labels

        if log.has(GROUP):
            teams = case_labels(log).df["resolving_team"].dropna()
            ref["team"] = {str(k): int(v) for k, v in teams.value_counts().items()}
    with _CACHE_LOCK:
        _REFERENCE_CACHE[digest] = ref
    return ref, digest


def _decisions(engine: Engine, n: int) -> pd.DataFrame:
    """The newest 2n first triages of tickets (newest first), with whether an agent corrected the team."""
    from routing.models import Feedback, TriageDecision

    with Session(engine) as session:
        td = TriageDecision.__table__.c  # type: ignore[attr-defined]
        rows = session.execute(sa_select(td.ticket_id, td.intent, td.team, td.out_of_scope, td.decision,
                                         td.intent_confidence, td.team_confidence)
                               .where(td.trigger == "route").order_by(td.id.desc()).limit(2 * n)).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=["ticket_id", "intent", "team", "out_of_scope",
                                                                 "decision", "intent_confidence", "team_confidence"])
        if frame.empty:
            frame["corrected"] = pd.Series(dtype=bool)
            return frame
        fb = session.exec(select(Feedback.ticket_id, Feedback.corrected_team)
                          .where(col(Feedback.ticket_id).in_(frame["ticket_id"].tolist()))
                          .where(col(Feedback.corrected_team).is_not(None)).order_by(col(Feedback.id))).all()
    latest = {t: team for t, team in fb}
    frame["corrected"] = [t in latest and latest[t] != team for t, team in zip(frame["ticket_id"], frame["team"],
                                                                               strict=True)]
    return frame


def _tvd(p: dict[str, float], q: dict[str, float]) -> float:
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys))


def _shares(values: pd.Series) -> dict[str, float]:
    counts = values.dropna().astype(str).value_counts()
    total = float(counts.sum())
    return {str(k): float(v) / total for k, v in counts.items()} if total else {}


def _vs_training(live: pd.Series, ref: dict[str, int], *, alpha: float, min_effect: float) -> dict[str, Any]:
    from scipy.stats import chisquare

    observed = live.dropna().astype(str)
    total_ref = float(sum(ref.values()))
    if not len(observed) or not total_ref:
        return {"n": int(len(observed)), "alert": False, "note": "nothing to compare"}
    # Expected shares from training, smoothed so a class seen live but never in training is testable.
    keys = sorted(set(ref) | {NEW})
    eps = 0.5 / total_ref
    exp = np.array([ref.get(k, 0) / total_ref + eps for k in keys])
    exp = exp / exp.sum()
    obs_labels = observed.where(observed.isin(list(ref)), NEW)
    obs = np.array([int((obs_labels == k).sum()) for k in keys])
    stat, p = chisquare(obs, exp * obs.sum())
    live_sh = _shares(obs_labels)
    ref_sh = {k: v / total_ref for k, v in ref.items()}
    effect = _tvd(live_sh, ref_sh)
    top = sorted(keys, key=lambda k: -abs(live_sh.get(k, 0.0) - ref_sh.get(k, 0.0)))[:5]
    return {"n": int(obs.sum()), "statistic": float(stat), "p_value": float(p), "effect": effect,
            "alert": bool(p < alpha and effect >= min_effect),
            "largest_changes": {k: {"live": round(live_sh.get(k, 0.0), 4), "training": round(ref_sh.get(k, 0.0), 4)}
                                for k in top}}


def _vs_before(now: pd.Series, before: pd.Series, *, alpha: float, min_effect: float) -> dict[str, Any]:
    from scipy.stats import chi2_contingency

    a, b = now.dropna().astype(str), before.dropna().astype(str)
    if not len(a) or not len(b):
        return {"n": int(len(a)), "n_before": int(len(b)), "alert": False, "note": "no earlier window yet"}
    keys = sorted(set(a) | set(b))
    table = np.array([[int((a == k).sum()) for k in keys], [int((b == k).sum()) for k in keys]])
    if len(keys) < 2:
        return {"n": int(len(a)), "n_before": int(len(b)), "alert": False, "effect": 0.0, "p_value": 1.0,
                "live": _shares(a), "before": _shares(b)}
    stat, p, _, _ = chi2_contingency(table)
    effect = _tvd(_shares(a), _shares(b))
    return {"n": int(len(a)), "n_before": int(len(b)), "statistic": float(stat), "p_value": float(p),
            "effect": effect, "alert": bool(p < alpha and effect >= min_effect), "live": _shares(a),
            "before": _shares(b)}


def _mean_vs_before(now: pd.Series, before: pd.Series, *, alpha: float, min_effect: float) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    a, b = now.dropna().astype(float), before.dropna().astype(float)
    if len(a) < 2 or len(b) < 2:
        return {"n": int(len(a)), "n_before": int(len(b)), "alert": False, "note": "no earlier window yet"}
    _, p = mannwhitneyu(a, b)
    effect = float(a.mean() - b.mean())
    return {"n": int(len(a)), "n_before": int(len(b)), "live_mean": float(a.mean()), "before_mean": float(b.mean()),
            "p_value": float(p), "effect": effect, "alert": bool(p < alpha and abs(effect) >= min_effect)}


def drift_report(settings: Settings, engine: Engine) -> dict[str, Any]:
    """Every drift signal, the alerts and whether a retrain is proposed (see the module docstring)."""
    n = settings.drift_window
    alpha, eff = settings.drift_alpha, settings.drift_min_effect
    frame = _decisions(engine, n)
    now, before = frame.iloc[:n], frame.iloc[n:]
    ref, digest = training_reference(settings)
    signals: dict[str, Any] = {}
    for kind in ("intent", "team"):
        if kind in ref:
            signals[f"{kind}_mix"] = _vs_training(now[kind], ref[kind], alpha=alpha, min_effect=eff)
        else:
            signals[f"{kind}_mix"] = {"n": int(now[kind].notna().sum()), "alert": False,
                                      "note": "no training data stored with the registry to compare with"}
    signals["decision_mix"] = _vs_before(now["decision"], before["decision"], alpha=alpha, min_effect=eff)
    signals["out_of_scope_rate"] = _vs_before(now["out_of_scope"].astype(str), before["out_of_scope"].astype(str),
                                              alpha=alpha, min_effect=eff)
    for kind in ("team", "intent"):
        signals[f"{kind}_confidence"] = _mean_vs_before(now[f"{kind}_confidence"], before[f"{kind}_confidence"],
                                                        alpha=alpha, min_effect=eff / 2)
    signals["correction_rate"] = _vs_before(now["corrected"].astype(str), before["corrected"].astype(str),
                                            alpha=alpha, min_effect=eff / 2)
    signals["correction_rate"]["rate"] = float(now["corrected"].mean()) if len(now) else None
    alerts = sorted(k for k, v in signals.items() if v.get("alert"))
    return {"window": n, "n_decisions": int(len(now)), "n_before": int(len(before)), "training_data": digest,
            "rule": {"alpha": alpha, "min_effect": eff}, "signals": signals, "alerts": alerts,
            "retrain_proposed": bool(alerts),
            "proposal": ("POST /v1/models/retrain: the challenger is promoted only if the gate passes" if alerts
                         else None)}


def publish(metrics: Any, report: dict[str, Any]) -> None:
    """Set the drift gauges on the app's Prometheus registry (created on first use)."""
    from prometheus_client import Gauge

    gauges = getattr(metrics, "_drift_gauges", None)
    if gauges is None:
        gauges = (Gauge("deskpilot_drift_effect", "Size of the change of a live signal (TVD or mean difference)",
                        ("signal",), registry=metrics.registry),
                  Gauge("deskpilot_drift_alert", "1 when a live signal drifted significantly", ("signal",),
                        registry=metrics.registry))
        metrics._drift_gauges = gauges
    effect, alert = gauges
    for name, sig in report["signals"].items():
        if sig.get("effect") is not None:
            effect.labels(signal=name).set(float(sig["effect"]))
        alert.labels(signal=name).set(1 if sig.get("alert") else 0)
