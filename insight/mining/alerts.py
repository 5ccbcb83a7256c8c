"""Alerts and drift: compare a recent window with the windows before it and flag what changed.

Cases are placed in a window by their start time. The recent window is the last `window` of the log (e.g. the
last 7 days); the baseline is the `baseline_windows` windows before it (e.g. the 8 weeks before). Flags:

* **new activity**: a step seen in at least `min_cases` recent cases and never in the baseline;
* **new variant**: a path with at least `min_cases` recent cases that the baseline never showed;
* **variant share spike**: a path whose share of recent cases is `share_ratio` times its baseline share and at
  least `min_share_delta` higher;
* **KPI regression**: median throughput time, events per case, rework rate, reassignment share, overall and per
  team / intent, worse by at least `kpi_ratio` (relative) in the recent window;
* **misrouting spike**: misrouted share overall and per first team up by `misrouting_delta` (absolute) and by
  `misrouting_ratio` (relative).

KPI and misrouting alerts must also be statistically significant (one-sided, `p_value`): a two-proportion
z-test for rates, Mann-Whitney U for times and counts.

Each alert carries the recent and baseline figures, its magnitude, and the cases behind it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from insight.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining._core import EncodedLog, encode
from insight.mining.conformance import case_variants
from insight.mining.labels import CaseLabels, LabelConfig, case_labels


@dataclass
class AlertConfig:
    """Windows and thresholds of the drift checks."""

    window: str = "7D"
    baseline_windows: int = 8
    min_cases: int = 5
    share_ratio: float = 2.0
    min_share_delta: float = 0.02
    kpi_ratio: float = 0.25
    misrouting_delta: float = 0.05
    misrouting_ratio: float = 1.3
    # One-sided significance level of the KPI / misrouting tests (keeps small segments from raising noise).
    p_value: float = 0.01
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
            "alerts": [
                {
                    **asdict(a),
                    "recent": round(a.recent, 4),
                    "baseline": round(a.baseline, 4),
                    "magnitude": round(a.magnitude, 4),
                    "example_cases": a.example_cases[:10],
                }
                for a in self.alerts
            ],
        }


_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def _severity(ratio: float) -> str:
    return "high" if ratio >= 3 else "medium" if ratio >= 1.75 else "low"


def detect_alerts(
    log: EventLog,
    *,
    config: AlertConfig | None = None,
    labels: CaseLabels | None = None,
    enc: EncodedLog | None = None,
) -> AlertReport:
    """Compare the last window with the baseline windows before it; flag new/spiking variants and regressions."""
    cfg = config or AlertConfig()
    try:
        window = pd.Timedelta(cfg.window)
    except ValueError as exc:
        raise InvalidInput(f"alert window {cfg.window!r} is not a duration like '7D'", field="window") from exc
    if window <= pd.Timedelta(0) or cfg.baseline_windows < 1:
        raise InvalidInput("alert window and baseline_windows must be positive", field="window")
    e = enc if enc is not None else encode(log)
    cl = labels if labels is not None else case_labels(log, config=cfg.labels, enc=e)
    cases = cl.df
    if len(cases) == 0:
        return AlertReport(None, None, None, 0, 0, [], note="empty log")
    vcode, seqs, _ = case_variants(e)
    # case_labels and the encoding list cases in the same (encoded) order, so vcode lines up with `cases`.
    end = cases["start"].max()
    recent_start = end - window
    base_start = recent_start - window * cfg.baseline_windows
    recent = (cases["start"] > recent_start).to_numpy()
    base = ((cases["start"] > base_start) & (cases["start"] <= recent_start)).to_numpy()
    n_r, n_b = int(recent.sum()), int(base.sum())
    report = AlertReport(recent_start, end, base_start, n_r, n_b, [])
    if n_r < cfg.min_cases or n_b < cfg.min_cases:
        report.note = f"too few cases to compare (recent {n_r}, baseline {n_b}; need {cfg.min_cases} each)"
        return report
    ids = cases.index.to_numpy()

    def examples(mask: np.ndarray) -> list[str]:
        return [str(x) for x in ids[mask][: cfg.max_example_cases]]

    alerts: list[Alert] = []
    # Variants: new ones and share spikes.
    vr = np.bincount(vcode[recent], minlength=len(seqs))
    vb = np.bincount(vcode[base], minlength=len(seqs))
    for v in np.flatnonzero(vr >= cfg.min_cases):
        share_r, share_b = float(vr[v] / n_r), float(vb[v] / n_b)
        path = " > ".join(seqs[v])
        mask = recent & (vcode == v)
        if vb[v] == 0:
            alerts.append(Alert("new_variant", "high" if share_r >= 0.05 else "medium",
                                f"New path in {vr[v]} recent cases ({share_r:.1%} of the window)", path,
                                share_r, 0.0, share_r, "share", int(vr[v]), examples(mask)))
        elif share_r >= cfg.share_ratio * share_b and share_r - share_b >= cfg.min_share_delta:
            ratio = share_r / share_b
            alerts.append(Alert("variant_share_spike", _severity(ratio),
                                f"Path share up {ratio:.1f}x ({share_b:.1%} -> {share_r:.1%})", path,
                                share_r, share_b, ratio, "x", int(vr[v]), examples(mask)))

    # New activities: a step the baseline never showed (catches a new path however it combines with others).
    ev_recent = recent[e.case]
    ev_base = base[e.case]
    n_act = max(e.activity.n, 1)
    act_cases_r = np.zeros(n_act, dtype=np.int64)
    pair = np.unique(e.case[ev_recent].astype(np.int64) * n_act + e.activity.codes[ev_recent])
    np.add.at(act_cases_r, pair % n_act, 1)
    seen_base = np.bincount(e.activity.codes[ev_base], minlength=n_act) > 0
    for code in np.flatnonzero((act_cases_r >= cfg.min_cases) & ~seen_base):
        label = str(e.activity.labels[code])
        has_act = np.bincount(e.case[e.activity.codes == code], minlength=len(cases)) > 0
        mask = recent & has_act
        share_r = float(mask.sum() / n_r)
        alerts.append(Alert("new_activity", "high" if share_r >= 0.05 else "medium",
                            f"New step '{label}' in {int(mask.sum())} recent cases ({share_r:.1%} of the window)",
                            label, share_r, 0.0, share_r, "share", int(mask.sum()), examples(mask)))

    # KPIs overall and per segment (plain numpy arrays in case order; segments as integer codes).
    kpi: dict[str, np.ndarray] = {
        "throughput_h": cases["throughput_s"].to_numpy(dtype=float) / 3600.0,
        "events": cases["n_events"].to_numpy(dtype=float),
        "reassigned": (cases["reassignments"].to_numpy() > 0).astype(float),
        "misrouted": cases["misrouted"].fillna(False).to_numpy(dtype=bool).astype(float),
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
        valid = codes >= 0
        r_counts = np.bincount(codes[recent & valid], minlength=n_lab)
        b_counts = np.bincount(codes[base & valid], minlength=n_lab)
        for v in np.flatnonzero((r_counts >= cfg.min_cases) & (b_counts >= cfg.min_cases)):
            m = codes == v
            r, b = recent & m, base & m
            value = seg_labels[v]
            subject = str(value) if seg_name == "all" else f"{seg_name} = {value}"
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
                big_enough = bv > 0 and rv >= bv * (1 + cfg.kpi_ratio)
                if name in ("rework", "reassigned"):
                    big_enough = big_enough and rv - bv >= 0.05
                if big_enough and _significant(xr, xb, rate=name in ("rework", "reassigned"), p=cfg.p_value):
                    ratio = rv / bv
                    alerts.append(Alert("kpi_regression", _severity(ratio),
                                        f"{label} worse: {bv:.3g} -> {rv:.3g} ({ratio:.2f}x)", subject,
                                        rv, bv, ratio, "x", int(r.sum()), examples(r)))
            if cl.has_groups:
                xr = kpi["misrouted"][r]
                xb = kpi["misrouted"][b]
                rv, bv = float(xr.mean()), float(xb.mean())
                if (
                    rv - bv >= cfg.misrouting_delta
                    and rv >= bv * cfg.misrouting_ratio
                    and _significant(xr, xb, rate=True, p=cfg.p_value)
                ):
                    ratio = rv / bv if bv > 0 else float("inf")
                    mis = r & (kpi["misrouted"] > 0)
                    alerts.append(Alert("misrouting_spike", _severity(ratio if np.isfinite(ratio) else 9.0),
                                        f"misrouted share up: {bv:.1%} -> {rv:.1%}", subject,
                                        rv, bv, rv - bv, "share points", int(mis.sum()), examples(mis)))
    for a in alerts:
        # A handful of cases is worth a look, not an alarm.
        if a.cases < 2 * cfg.min_cases and a.severity == "high":
            a.severity = "medium"
    alerts.sort(key=lambda a: (_SEVERITY_ORDER[a.severity], -a.cases, a.kind, a.subject))
    report.alerts = alerts
    return report


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _significant(recent: np.ndarray, base: np.ndarray, *, rate: bool, p: float) -> bool:
    """One-sided test that `recent` is worse (higher) than `base`, so small segments do not raise noise alerts.

    Rates: two-proportion z-test; times and counts: Mann-Whitney U with the normal approximation and tie
    correction (no normality of the data assumed). Written out here because importing scipy.stats costs seconds.
    """
    n1, n0 = len(recent), len(base)
    if n1 < 2 or n0 < 2:
        return False
    if rate:
        p1, p0 = float(recent.mean()), float(base.mean())
        pooled = (recent.sum() + base.sum()) / (n1 + n0)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
        if se == 0:
            return p1 > p0
        return _normal_sf((p1 - p0) / se) < p
    both = np.concatenate([recent, base])
    ranks = pd.Series(both).rank(method="average").to_numpy()
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n0
    _, ties = np.unique(both, return_counts=True)
    tie_term = float(((ties.astype(float) ** 3) - ties).sum()) / (n * (n - 1))
    var = n1 * n0 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return False
    z = (u1 - n1 * n0 / 2.0 - 0.5) / math.sqrt(var)
    return _normal_sf(z) < p


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
