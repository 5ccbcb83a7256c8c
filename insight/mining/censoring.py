"""How the log was cut out of the source system, which cases are finished, and durations that respect both.

An extract is a window onto a running process, and the window shapes every time figure:

* **complete**: (nearly) every case ends with an end activity; durations can be read as they are.
* **open at the cut-off** (a snapshot): some cases have not reached an end activity when the extract was taken.
  Their durations are only lower bounds (right-censored), so a median over the recorded durations is too short,
  and the most recent start windows look fast because only their quick cases have finished. Durations are then
  estimated with Kaplan-Meier (open cases censored at the cut-off), through `scipy.stats.ecdf`.
* **closed in a window**: the extract holds the cases that *ended* in a window (typical of "incidents closed in
  May" exports). Cases that started long before the window are the long-running survivors, and cases still open
  at the cut-off are missing. Durations are length-biased either way, so trends by start date, and comparisons
  of early against late starts, are extraction artefacts; windows are compared by end date instead.

End activities are those that close most of the cases they occur in (`end_share`), unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from insight.mining._core import EncodedLog, case_durations

ExtractionKind = Literal["complete", "open_at_cutoff", "closed_in_window", "empty"]


@dataclass
class CensoringConfig:
    """How end activities are found and when an extract counts as a snapshot or an end-date window."""

    end_activities: tuple[str, ...] | None = None
    # An activity is an end activity when at least this share of its occurrences is the last event of a case...
    end_share: float = 0.5
    # ...and it closes at least this share of all cases.
    min_case_share: float = 0.01
    # The extract is a snapshot when at least this share of cases is unfinished.
    open_share: float = 0.02
    # End-date window: the earliest case end (1st percentile) lies past this fraction of the log's span, and at
    # least `survivor_share` of the cases started before it.
    end_window_fraction: float = 0.5
    survivor_share: float = 0.05
    # A time window whose cases are more than this share unfinished is reported as biased.
    biased_open_share: float = 0.1


@dataclass
class Extraction:
    """The extraction window, its kind, and which cases are finished (per case, in encoded case order)."""

    kind: ExtractionKind
    log_start: pd.Timestamp | None
    cutoff: pd.Timestamp | None
    end_window_start: pd.Timestamp | None
    end_activities: list[str]
    finished: np.ndarray
    censored_s: np.ndarray  # per case: duration (finished) or time from start to the cut-off (open), in seconds
    warnings: list[str] = field(default_factory=list)
    # The last case start, when starts stop well before the cut-off (the extract was also cut by start date).
    starts_stop: pd.Timestamp | None = None

    @property
    def open_cases(self) -> int:
        """Cases without an end activity."""
        return int((~self.finished).sum())

    @property
    def finished_cases(self) -> int:
        """Cases that reached an end activity."""
        return int(self.finished.sum())

    @property
    def survival(self) -> bool:
        """True when durations need a survival estimate (open cases at the cut-off)."""
        return self.kind == "open_at_cutoff"

    @property
    def duration_basis(self) -> str:
        """Plain words for how duration figures are computed."""
        if self.kind == "open_at_cutoff":
            return (f"Kaplan-Meier over {self.finished_cases:,} finished and {self.open_cases:,} open cases "
                    "(open cases censored at the cut-off)")
        if self.kind == "closed_in_window":
            left = f", {self.open_cases:,} unfinished left out" if self.open_cases else ""
            return (f"{self.finished_cases:,} finished cases closed inside the extraction window{left} "
                    "(length-biased: see the extraction warning)")
        if self.open_cases:
            return f"{self.finished_cases:,} finished cases ({self.open_cases:,} unfinished left out)"
        return "all cases (all finished)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (per-case arrays left out)."""
        def ts(x: pd.Timestamp | None) -> str | None:
            return None if x is None else x.isoformat()

        return {
            "kind": self.kind,
            "log_start": ts(self.log_start),
            "cutoff": ts(self.cutoff),
            "end_window_start": ts(self.end_window_start),
            "starts_stop": ts(self.starts_stop),
            "end_activities": list(self.end_activities),
            "finished_cases": self.finished_cases,
            "open_cases": self.open_cases,
            "duration_basis": self.duration_basis,
            "warnings": list(self.warnings),
        }


def _to_ts(enc: EncodedLog, value: int) -> pd.Timestamp:
    return pd.Timestamp(value, unit=enc.ts_unit, tz="UTC")  # type: ignore[call-overload]


def infer_end_activities(enc: EncodedLog, config: CensoringConfig | None = None) -> list[str]:
    """Activities that close most of the cases they occur in, most frequent closer first."""
    cfg = config or CensoringConfig()
    if enc.n_cases == 0:
        return []
    n_act = max(enc.activity.n, 1)
    last = enc.activity.codes[enc.case_start[1:] - 1]
    ends = np.bincount(last, minlength=n_act)
    occ = np.bincount(enc.activity.codes, minlength=n_act)
    ok = (ends >= max(1.0, cfg.min_case_share * enc.n_cases)) & (ends >= cfg.end_share * np.maximum(occ, 1))
    codes = np.flatnonzero(ok)
    return [str(enc.activity.labels[c]) for c in codes[np.argsort(-ends[codes], kind="stable")]]


def detect_extraction(enc: EncodedLog, *, config: CensoringConfig | None = None) -> Extraction:
    """Find the end activities, the unfinished cases and the kind of extract (see the module docstring)."""
    cfg = config or CensoringConfig()
    n = enc.n_cases
    if n == 0:
        return Extraction("empty", None, None, None, [], np.zeros(0, bool), np.zeros(0), [])
    ends = list(cfg.end_activities) if cfg.end_activities else infer_end_activities(enc, cfg)
    warnings: list[str] = []
    last_code = enc.activity.codes[enc.case_start[1:] - 1]
    if ends:
        label_to_code = {str(lab): i for i, lab in enumerate(enc.activity.labels)}
        end_codes = [label_to_code[a] for a in ends if a in label_to_code]
        finished = np.isin(last_code, end_codes)
    else:
        finished = np.ones(n, dtype=bool)
        warnings.append("no end activity found (none closes most of the cases it occurs in): every case is "
                        "treated as finished")
    first_ts = enc.ts[enc.case_start[:-1]]
    last_ts = enc.ts[enc.case_start[1:] - 1]
    t0, t1 = int(first_ts.min()), int(last_ts.max())
    log_start, cutoff = _to_ts(enc, t0), _to_ts(enc, t1)
    durations = case_durations(enc)
    censored = np.where(finished, durations, enc.seconds(t1 - first_ts))
    open_n = int((~finished).sum())
    span = max(t1 - t0, 1)
    end_q = int(np.quantile(last_ts, 0.01))
    survivors = float((first_ts < end_q).mean())
    kind: ExtractionKind = "complete"
    end_window_start: pd.Timestamp | None = None
    if open_n >= max(5, cfg.open_share * n):
        kind = "open_at_cutoff"
        warnings.append(
            f"{open_n:,} of {n:,} cases ({open_n / n:.1%}) have no end activity ({', '.join(ends) or 'none found'}) "
            f"at the cut-off {cutoff:%Y-%m-%d}: durations are estimated with Kaplan-Meier, conformance is checked "
            "on finished cases, and recent windows with many open cases are marked as biased."
        )
    elif (end_q - t0) > cfg.end_window_fraction * span and survivors >= cfg.survivor_share:
        kind = "closed_in_window"
        end_window_start = _to_ts(enc, end_q)
        warnings.append(
            f"every case ended between {end_window_start:%Y-%m-%d} and {cutoff:%Y-%m-%d} although cases started "
            f"from {log_start:%Y-%m-%d}: the extract holds the cases closed in that window. The {survivors:.1%} that "
            f"started before {end_window_start:%Y-%m-%d} are long-running survivors and cases still open at the "
            "cut-off are missing, so durations are length-biased and trends by start date are extraction artefacts; "
            "alerts compare windows by end date."
        )
    elif open_n:
        warnings.append(f"{open_n:,} cases have no end activity; duration figures use the finished cases only.")
    starts_stop: pd.Timestamp | None = None
    last_start = int(first_ts.max())
    typical = float(np.median(durations)) * enc.units_per_second
    if n >= 20 and t1 - last_start > max(typical, 7 * 86400 * enc.units_per_second):
        starts_stop = _to_ts(enc, last_start)
        warnings.append(
            f"no case starts after {starts_stop:%Y-%m-%d} although events run to {cutoff:%Y-%m-%d}: the extract "
            "was also cut by start date: cases opened after it are missing, so figures by close date for the last "
            "windows hold only older, slower cases."
        )
    return Extraction(kind, log_start, cutoff, end_window_start, ends, finished, censored, warnings, starts_stop)


@dataclass
class SurvivalSummary:
    """A duration median (and p90) that respects open cases, with what it rests on."""

    median_s: float | None
    p90_s: float | None
    finished: int
    open: int
    method: str


def duration_summary(durations_s: np.ndarray, finished: np.ndarray) -> SurvivalSummary:
    """Median and p90 of durations: plain quantiles when all finished, Kaplan-Meier when some are open.

    A Kaplan-Meier quantile that the data cannot reach yet (too many cases still open) is None, not a guess.
    """
    d = np.asarray(durations_s, dtype=float)
    f = np.asarray(finished, dtype=bool)
    n_f, n_o = int(f.sum()), int((~f).sum())
    if len(d) == 0 or n_f == 0:
        return SurvivalSummary(None, None, n_f, n_o, "none finished" if len(d) else "no cases")
    if n_o == 0:
        return SurvivalSummary(float(np.median(d)), float(np.quantile(d, 0.9)), n_f, 0, "finished cases")
    from scipy.stats import CensoredData, ecdf  # imported here: scipy.stats is slow to import

    res = ecdf(CensoredData.right_censored(d, ~f))
    return SurvivalSummary(_km_quantile(res.sf, 0.5), _km_quantile(res.sf, 0.9), n_f, n_o, "Kaplan-Meier")


def _km_quantile(sf: Any, q: float) -> float | None:
    """Smallest time at which the survival function has fallen to 1 - q or below (None when it never does)."""
    probs = np.asarray(sf.probabilities, dtype=float)
    times = np.asarray(sf.quantiles, dtype=float)
    hit = np.flatnonzero(probs <= 1.0 - q + 1e-12)
    if len(hit) == 0:
        return None
    v = float(times[hit[0]])
    return None if math.isnan(v) else v
