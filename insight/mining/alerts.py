"""Alerts and drift: compare a recent window with the windows before it and flag what changed.

Cases are placed in a window by their start time (by their end time when the extract holds the cases closed in a
window, see `insight.mining.censoring`). The recent window is the last `window` of the log (e.g. the last 7
days); the baseline is the `baseline_windows` windows before it (e.g. the 8 weeks before). Candidates:

* **new activity**: a step seen in recent cases and never in the baseline;
* **new variant**: a path of recent cases that the baseline never showed;
* **variant share spike**: a path whose share of recent cases is `share_ratio` times its baseline share and at
  least `min_share_delta` higher;
* **KPI regression**: median throughput time, events per case, rework rate, reassignment share, overall and per
  team / intent, worse by at least `kpi_ratio` (relative) in the recent window;
* **misrouting spike**: the share of avoidable transfers (misroutes, ping-pong, needless push-to-front; see
  `insight.mining.misrouting`, escalations that resolved are not counted) overall and per first team up by
  `misrouting_delta` (absolute) and by `misrouting_ratio` (relative).

Every comparison needs `min_cases` cases on each side (`min_new_cases` for something the baseline never showed)
and a one-sided test (two-proportion z-test for
shares and rates, Mann-Whitney U for times and counts). Because many segments and KPIs are tested at once, the
p-values are adjusted together with Benjamini-Hochberg and only candidates under the false-discovery rate `fdr`
are raised. Each alert reports its effect size (Cohen's h for shares, Cliff's delta for times and counts) and
its business impact: the recent cases (or case-hours) in excess of the baseline. Severity grows with both: high
needs a large effect touching at least `high_impact_share` of the window and twice `min_cases` cases, medium a
small effect touching `medium_impact_share` and at least `min_cases` cases; the rest (a new step in a handful of
cases, however striking) is low. Unfinished cases are left out of time and path comparisons, and when the
extraction biases the recent window (mostly open cases, or a window after the extract stopped taking new cases)
every comparison of the two windows (not a brand-new step) is graded low with the reason: the windows then hold
different kinds of cases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining._core import EncodedLog, encode
from insight.mining.censoring import Extraction, detect_extraction
from insight.mining.conformance import case_variants
from insight.mining.labels import CaseLabels, LabelConfig, case_labels
from insight.mining.misrouting import MisroutingConfig, MisroutingResult, analyze_misrouting


@dataclass
class AlertConfig:
    """Windows and thresholds of the drift checks."""

    window: str = "7D"
    baseline_windows: int = 8
    # Cases needed on each side of a comparison (segments, KPIs, path shares)...
    min_cases: int = 20
    # ...and for a step or path the baseline never showed (news worth a look even when small).
    min_new_cases: int = 5
    share_ratio: float = 2.0
    min_share_delta: float = 0.02
    kpi_ratio: float = 0.25
    misrouting_delta: float = 0.05
    misrouting_ratio: float = 1.3
    # False-discovery rate over every candidate tested in one run (Benjamini-Hochberg).
    fdr: float = 0.05
    # Share of the recent window's cases (or case-hours) an alert's excess must reach for medium / high.
    medium_impact_share: float = 0.03
    high_impact_share: float = 0.10
    # A recent window with more than this share of open cases is biased for time and path comparisons.
    biased_open_share: float = 0.1
    segment_columns: tuple[str, ...] = ("intent", "category", "channel", "segment", "priority")
    max_example_cases: int = 20
    labels: LabelConfig = field(default_factory=LabelConfig)


@dataclass
class Alert:
    """One flagged change with its size and the cases behind it."""

    kind: str
    severity: str
    title: str
    subject: str
    recent: float
    baseline: float
    magnitude: float
    unit: str
    cases: int
    example_cases: list[str] = field(default_factory=list)
    p_value: float = 1.0
    q_value: float = 1.0
    effect_size: float = 0.0
    effect_measure: str = ""
    impact: float = 0.0
    impact_unit: str = "cases"
    impact_share: float = 0.0
    explanation: str = ""


@dataclass
class AlertReport:
    """The compared windows and every alert, most severe first."""

    recent_start: pd.Timestamp | None
    recent_end: pd.Timestamp | None
    baseline_start: pd.Timestamp | None
    recent_cases: int
    baseline_cases: int
    alerts: list[Alert]
    note: str = ""
    tested: int = 0
    window_axis: str = "start"

    def by_kind(self, kind: str) -> list[Alert]:
        """Alerts of one kind."""
        return [a for a in self.alerts if a.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        def ts(x: pd.Timestamp | None) -> str | None:
            return None if x is None else x.isoformat()

        return {
            "recent_start": ts(self.recent_start),
            "recent_end": ts(self.recent_end),
            "baseline_start": ts(self.baseline_start),
            "recent_cases": self.recent_cases,
            "baseline_cases": self.baseline_cases,
            "note": self.note,
            "tested": self.tested,
            "window_axis": self.window_axis,
            "alerts": [
                {
                    **asdict(a),
                    "recent": round(a.recent, 4),
                    "baseline": round(a.baseline, 4),
                    "magnitude": round(a.magnitude, 4),
                    "p_value": float(f"{a.p_value:.3g}"),
                    "q_value": float(f"{a.q_value:.3g}"),
                    "effect_size": round(a.effect_size, 4),
                    "impact": round(a.impact, 2),
                    "impact_share": round(a.impact_share, 4),
                    "example_cases": a.example_cases[:10],
                }
                for a in self.alerts
            ],
        }


_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
# Conventional thresholds for a small and a large effect: Cohen's h (shares), Cliff's delta (times, counts).
_EFFECT_CUTS = {"cohen_h": (0.2, 0.5), "cliff_delta": (0.147, 0.474)}


def _severity(a: Alert, cfg: AlertConfig) -> str:
    """Grade by business impact and effect size (see the module docstring)."""
    small, large = _EFFECT_CUTS.get(a.effect_measure, (0.2, 0.5))
    eff = abs(a.effect_size)
    if a.impact_share >= cfg.high_impact_share and eff >= large and a.cases >= 2 * cfg.min_cases:
        return "high"
    if a.impact_share >= cfg.medium_impact_share and eff >= small and a.cases >= cfg.min_cases:
        return "medium"
    return "low"


def detect_alerts(
    log: EventLog,
    *,
    config: AlertConfig | None = None,
    labels: CaseLabels | None = None,
    enc: EncodedLog | None = None,
    extraction: Extraction | None = None,
    misrouting: MisroutingResult | None = None,
) -> AlertReport:
    """Compare the last window with the baseline windows before it; flag new/spiking variants and regressions.

    `misrouting` (the same log's analysis) tells which transfers were avoidable; it is run here when not given.
    """
    cfg = config or AlertConfig()
    try:
        window = pd.Timedelta(cfg.window)
    except ValueError as exc:
        raise InvalidInput(f"alert window {cfg.window!r} is not a duration like '7D'", field="window") from exc
    if window <= pd.Timedelta(0) or cfg.baseline_windows < 1:
        raise InvalidInput("alert window and baseline_windows must be positive", field="window")
    if not 0 < cfg.fdr < 1:
        raise InvalidInput("alert fdr must be between 0 and 1", field="fdr")
    e = enc if enc is not None else encode(log)
    cl = labels if labels is not None else case_labels(log, config=cfg.labels, enc=e)
    cases = cl.df
    if len(cases) == 0:
        return AlertReport(None, None, None, 0, 0, [], note="empty log")
    ext = extraction if extraction is not None else detect_extraction(e)
    finished = ext.finished if len(ext.finished) == len(cases) else np.ones(len(cases), dtype=bool)
    vcode, seqs, _ = case_variants(e)
    # case_labels and the encoding list cases in the same (encoded) order, so vcode lines up with `cases`.
    axis = "end" if ext.kind == "closed_in_window" else "start"
    if axis == "end":
        when = pd.Series(pd.to_datetime(e.ts[e.case_start[1:] - 1], unit=e.ts_unit, utc=True))  # type: ignore[arg-type]
    else:
        when = cases["start"].reset_index(drop=True)
    end = when.max()
    recent_start = end - window
    base_start = recent_start - window * cfg.baseline_windows
    recent = (when > recent_start).to_numpy()
    base = ((when > base_start) & (when <= recent_start)).to_numpy()
    n_r, n_b = int(recent.sum()), int(base.sum())
    report = AlertReport(recent_start, end, base_start, n_r, n_b, [], window_axis=axis)
    if n_r < cfg.min_cases or n_b < cfg.min_cases:
        report.note = f"too few cases to compare (recent {n_r}, baseline {n_b}; need {cfg.min_cases} each)"
        return report
    # Why time and path comparisons of the recent window cannot be trusted, if they cannot.
    bias = ""
    open_r = float((~finished[recent]).mean())
    if ext.kind == "open_at_cutoff" and open_r > cfg.biased_open_share:
        bias = (f"{open_r:.0%} of the recent window's cases are still open, so its finished cases are the quick "
                "ones")
    elif ext.starts_stop is not None and recent_start >= ext.starts_stop:
        bias = (f"the extract holds no case started after {ext.starts_stop:%Y-%m-%d}, so the recent window "
                "holds only older cases")
    elif ext.kind == "closed_in_window" and ext.end_window_start is not None and base_start < ext.end_window_start:
        bias = (f"the extract holds only cases closed from {ext.end_window_start:%Y-%m-%d}, so the baseline is "
                "shorter than asked")
    ids = cases.index.to_numpy()

    def examples(mask: np.ndarray) -> list[str]:
        return [str(x) for x in ids[mask][: cfg.max_example_cases]]

    # Every test run goes into `pvals` (the false-discovery control needs them all, not only the big changes);
    # `cand` holds the changes big enough to report, each with the index of its test.
    pvals: list[float] = []
    cand: list[tuple[Alert, int]] = []

    def tested(pv: float) -> int:
        pvals.append(pv)
        return len(pvals) - 1

    path_r, path_b = recent & finished, base & finished
    m_r, m_b = int(path_r.sum()), int(path_b.sum())
    if m_r >= cfg.min_cases and m_b >= cfg.min_cases:
        # Variants of finished cases: new ones and share spikes.
        vr = np.bincount(vcode[path_r], minlength=len(seqs))
        vb = np.bincount(vcode[path_b], minlength=len(seqs))
        for v in np.flatnonzero(vr >= min(cfg.min_cases, cfg.min_new_cases)):
            if vb[v] > 0 and vr[v] < cfg.min_cases:
                continue
            share_r, share_b = float(vr[v] / m_r), float(vb[v] / m_b)
            path = " > ".join(seqs[v])
            mask = path_r & (vcode == v)
            pv = _prop_p(int(vr[v]), m_r, int(vb[v]), m_b)
            t = tested(pv)
            h = _cohen_h(share_r, share_b)
            excess = (share_r - share_b) * m_r
            if vb[v] == 0:
                cand.append((Alert("new_variant", "low",
                                   f"New path in {vr[v]} recent cases ({share_r:.1%} of the window)", path,
                                   share_r, 0.0, share_r, "share", int(vr[v]), examples(mask), pv, pv, h,
                                   "cohen_h", excess, "cases", excess / m_r, bias), t))
            elif share_r >= cfg.share_ratio * share_b and share_r - share_b >= cfg.min_share_delta:
                ratio = share_r / share_b
                cand.append((Alert("variant_share_spike", "low",
                                   f"Path share up {ratio:.1f}x ({share_b:.1%} -> {share_r:.1%})", path,
                                   share_r, share_b, ratio, "x", int(vr[v]), examples(mask), pv, pv, h,
                                   "cohen_h", excess, "cases", excess / m_r, bias), t))

    # New activities: a step the baseline never showed (catches a new path however it combines with others).
    ev_recent = recent[e.case]
    ev_base = base[e.case]
    n_act = max(e.activity.n, 1)
    act_cases_r = np.zeros(n_act, dtype=np.int64)
    pair = np.unique(e.case[ev_recent].astype(np.int64) * n_act + e.activity.codes[ev_recent])
    np.add.at(act_cases_r, pair % n_act, 1)
    seen_base = np.bincount(e.activity.codes[ev_base], minlength=n_act) > 0
    for code in np.flatnonzero((act_cases_r >= cfg.min_new_cases) & ~seen_base):
        label = str(e.activity.labels[code])
        has_act = np.bincount(e.case[e.activity.codes == code], minlength=len(cases)) > 0
        mask = recent & has_act
        k = int(mask.sum())
        share_r = float(k / n_r)
        pv = _prop_p(k, n_r, 0, n_b)
        cand.append((Alert("new_activity", "low",
                           f"New step '{label}' in {k} recent cases ({share_r:.1%} of the window)",
                           label, share_r, 0.0, share_r, "share", k, examples(mask), pv, pv,
                           _cohen_h(share_r, 0.0), "cohen_h", float(k), "cases", share_r), tested(pv)))

    # KPIs overall and per segment (plain numpy arrays in case order; segments as integer codes).
    kpi: dict[str, np.ndarray] = {
        "throughput_h": cases["throughput_s"].to_numpy(dtype=float) / 3600.0,
        "events": cases["n_events"].to_numpy(dtype=float),
        "reassigned": (cases["reassignments"].to_numpy() > 0).astype(float),
        "avoidable": _avoidable_flags(log, cl, e, misrouting, cfg),
        "rework": _rework_flags(e),
    }
    segs: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "all": (np.zeros(len(cases), dtype=np.int64), np.array(["all cases"], dtype=object))
    }
    if cl.has_groups:
        codes, uniq = pd.factorize(cases["first_team"].to_numpy(dtype=object))
        segs["first team"] = (codes, np.asarray(uniq, dtype=object))
    by_lower = {str(c).lower(): str(c) for c in log.df.columns}
    for want in cfg.segment_columns:
        col = by_lower.get(want.lower())
        if col is not None and log.has(col):
            c = e.column(col)
            segs[want] = (e.case_first(c.codes), np.asarray(c.labels, dtype=object))
    for seg_name, (codes, seg_labels) in segs.items():
        n_lab = len(seg_labels)
        valid = (codes >= 0) & finished
        r_counts = np.bincount(codes[recent & valid], minlength=n_lab)
        b_counts = np.bincount(codes[base & valid], minlength=n_lab)
        for v in np.flatnonzero((r_counts >= cfg.min_cases) & (b_counts >= cfg.min_cases)):
            m = (codes == v) & finished
            r, b = recent & m, base & m
            value = seg_labels[v]
            subject = str(value) if seg_name == "all" else f"{seg_name} = {value}"
            n_seg = int(r.sum())
            for name, agg, label in (
                ("throughput_h", "median", "median throughput time (h)"),
                ("events", "mean", "events per case"),
                ("rework", "mean", "rework rate"),
                ("reassigned", "mean", "reassignment rate"),
            ):
                xr = kpi[name][r]
                xb = kpi[name][b]
                rv = float(getattr(np, agg)(xr))
                bv = float(getattr(np, agg)(xb))
                is_rate = name in ("rework", "reassigned")
                if is_rate:
                    pv = _prop_p(int(xr.sum()), len(xr), int(xb.sum()), len(xb))
                else:
                    pv, eff = _mann_whitney(xr, xb)
                t = tested(pv)
                big_enough = bv > 0 and rv >= bv * (1 + cfg.kpi_ratio)
                if is_rate:
                    big_enough = big_enough and rv - bv >= 0.05
                if not big_enough:
                    continue
                ratio = rv / bv
                if is_rate:
                    eff, measure = _cohen_h(rv, bv), "cohen_h"
                    impact, unit = (rv - bv) * len(xr), "cases"
                    share = (rv - bv)
                else:
                    measure = "cliff_delta"
                    if name == "throughput_h":
                        impact, unit = float(xr.sum() - np.median(xb) * len(xr)), "case-hours"
                        share = impact / max(float(kpi[name][recent & finished].sum()), 1e-9)
                    else:
                        impact, unit = float(xr.sum() - xb.mean() * len(xr)), "events"
                        share = impact / max(float(kpi[name][recent & finished].sum()), 1e-9)
                    # the whole window's share, not the segment's: a small team's slowdown is a small impact
                share = share * n_seg / max(m_r, 1) if is_rate else share
                cand.append((Alert("kpi_regression", "low", f"{label} worse: {bv:.3g} -> {rv:.3g} ({ratio:.2f}x)",
                                   subject, rv, bv, ratio, "x", n_seg, examples(r), pv, pv, eff, measure,
                                   max(impact, 0.0), unit, max(share, 0.0), bias), t))
            if cl.has_groups:
                xr = kpi["avoidable"][r]
                xb = kpi["avoidable"][b]
                rv, bv = float(xr.mean()), float(xb.mean())
                pv = _prop_p(int(xr.sum()), len(xr), int(xb.sum()), len(xb))
                t = tested(pv)
                if rv - bv >= cfg.misrouting_delta and rv >= bv * cfg.misrouting_ratio:
                    mis = r & (kpi["avoidable"] > 0)
                    excess = (rv - bv) * len(xr)
                    cand.append((Alert("misrouting_spike", "low",
                                       f"avoidable transfers up: {bv:.1%} -> {rv:.1%} of cases",
                                       subject, rv, bv, rv - bv, "share points", int(mis.sum()), examples(mis),
                                       pv, pv, _cohen_h(rv, bv), "cohen_h", excess, "cases",
                                       excess / max(m_r, 1), bias), t))
    report.tested = len(pvals)
    alerts = _fdr_filter(cand, pvals, cfg.fdr)
    for a in alerts:
        a.severity = "low" if a.explanation else _severity(a, cfg)
    alerts.sort(key=lambda a: (_SEVERITY_ORDER[a.severity], -a.impact_share, a.kind, a.subject))
    report.alerts = alerts
    if bias:
        report.note = f"recent window biased by the extraction: {bias}"
    return report


def _fdr_filter(cand: list[tuple[Alert, int]], pvals: list[float], fdr: float) -> list[Alert]:
    """Benjamini-Hochberg over every test run; keep the candidates whose q-value is under the false-discovery rate."""
    if not cand:
        return []
    p = np.asarray(pvals, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    q = np.empty(m)
    q[order] = q_sorted
    out = []
    for a, t in cand:
        a.q_value = float(q[t])
        if a.q_value <= fdr:
            out.append(a)
    return out


def _cohen_h(p1: float, p0: float) -> float:
    """Cohen's h between two proportions (0.2 small, 0.5 medium, 0.8 large)."""
    return float(2 * math.asin(math.sqrt(min(max(p1, 0.0), 1.0))) - 2 * math.asin(math.sqrt(min(max(p0, 0.0), 1.0))))


def _prop_p(k1: int, n1: int, k0: int, n0: int) -> float:
    """One-sided two-proportion z-test p-value that the first share is higher."""
    if n1 < 2 or n0 < 2:
        return 1.0
    p1, p0 = k1 / n1, k0 / n0
    pooled = (k1 + k0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se == 0:
        return 0.0 if p1 > p0 else 1.0
    return _normal_sf((p1 - p0) / se)


def _mann_whitney(recent: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """One-sided Mann-Whitney U p-value that `recent` is higher, and Cliff's delta (normal approximation, ties).

    Written out here because importing scipy.stats costs seconds on every mine.
    """
    n1, n0 = len(recent), len(base)
    if n1 < 2 or n0 < 2:
        return 1.0, 0.0
    both = np.concatenate([recent, base])
    ranks = pd.Series(both).rank(method="average").to_numpy()
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    delta = 2.0 * u1 / (n1 * n0) - 1.0
    n = n1 + n0
    _, ties = np.unique(both, return_counts=True)
    tie_term = float(((ties.astype(float) ** 3) - ties).sum()) / (n * (n - 1))
    var = n1 * n0 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return 1.0, delta
    z = (u1 - n1 * n0 / 2.0 - 0.5) / math.sqrt(var)
    return _normal_sf(z), delta


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _avoidable_flags(
    log: EventLog, cl: CaseLabels, e: EncodedLog, mis: MisroutingResult | None, cfg: AlertConfig
) -> np.ndarray:
    """1.0 for cases whose transfer routing could have avoided (misroute, ping-pong, needless push-to-front)."""
    if not cl.has_groups:
        return np.zeros(len(cl.df))
    if mis is None:
        mis = analyze_misrouting(log, config=MisroutingConfig(labels=cfg.labels), labels=cl, enc=e)
    if "avoidable" not in mis.cases:
        return np.zeros(len(cl.df))
    flags = mis.cases["avoidable"].reindex(cl.df.index).fillna(False)
    return flags.to_numpy(dtype=bool).astype(float)


def _rework_flags(e: EncodedLog) -> np.ndarray:
    """1.0 for cases that repeat an activity (rework), else 0.0."""
    if e.n_events == 0:
        return np.zeros(0)
    pair = e.case.astype(np.int64) * max(e.activity.n, 1) + e.activity.codes.astype(np.int64)
    _, first_idx, counts = np.unique(pair, return_index=True, return_counts=True)
    rep_case = e.case[first_idx[counts > 1]]
    out = np.zeros(e.n_cases)
    out[rep_case] = 1.0
    return out
