"""Conformance of a log against the intended journey, computed once per variant and spread over its cases.

Two routes:

* **declared path** (fast, our own): the journey is an ordered list of steps, some of which may be skipped,
  plus activities allowed anywhere (e.g. "Wait for customer"). Each variant is aligned to the path with an
  edit-distance alignment (skipping an optional step is free; skipping a required step or doing an extra
  activity costs 1). A required step done out of place shows up as **reordered** rather than skipped+inserted.
  fitness = 1 - cost / (required steps + relevant events), in [0, 1].
* **process model** (BPMN or PNML file): pm4py alignments per variant when the log has few variants (they give
  the skipped / inserted steps), else pm4py token replay (fitness only).

With no journey given, `journey_from_log` uses the most frequent variant as the reference "happy path" and says
so in the result.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from insight.errors import InvalidInput
from insight.eventlog.schema import EventLog
from insight.mining._core import EncodedLog, encode


@dataclass
class IntendedJourney:
    """The designed process: ordered steps, the ones that may be skipped, and activities allowed anywhere."""

    steps: list[str]
    optional: list[str] = field(default_factory=list)
    allowed_anywhere: list[str] = field(default_factory=list)
    source: str = "declared"

    def __post_init__(self) -> None:
        if not self.steps:
            raise InvalidInput("intended journey needs at least one step", field="steps")
        unknown = [s for s in self.optional if s not in self.steps]
        if unknown:
            raise InvalidInput(f"optional steps {unknown} are not in the journey's steps", field="optional")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntendedJourney:
        """Build from {"steps": [...], "optional": [...], "allowed_anywhere": [...]}."""
        if "steps" not in d:
            raise InvalidInput("journey definition lacks 'steps'", field="steps")
        return cls(
            steps=[str(s) for s in d["steps"]],
            optional=[str(s) for s in d.get("optional", [])],
            allowed_anywhere=[str(s) for s in d.get("allowed_anywhere", [])],
            source=str(d.get("source", "declared")),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> IntendedJourney:
        """Read a declared journey from a JSON file."""
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"cannot read journey file {p}: {exc}", field="journey") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Deviation:
    """One kind of deviation from the journey (a skipped, inserted or reordered step) and the cases showing it."""

    kind: str
    activity: str
    cases: int
    share: float
    variants: int
    example_cases: list[str] = field(default_factory=list)


@dataclass
class VariantConformance:
    """Alignment result of one variant."""

    activities: list[str]
    cases: int
    fitness: float
    skipped: list[str]
    inserted: list[str]
    reordered: list[str]


@dataclass
class ConformanceResult:
    """Fitness per case and per variant, and the deviations ranked by the cases they touch."""

    method: str
    reference: str
    n_cases: int
    n_variants: int
    mean_fitness: float
    fitting_cases: int
    fitting_share: float
    deviations: list[Deviation]
    variants: list[VariantConformance]
    case_fitness: pd.Series
    journey: IntendedJourney | None = None
    # Cases left out because they had not finished (an open case has not "skipped" its remaining steps yet).
    unfinished_excluded: int = 0

    def to_dict(self, *, limit: int = 25) -> dict[str, Any]:
        """JSON-ready form (top variants and deviations)."""
        return {
            "method": self.method,
            "reference": self.reference,
            "n_cases": self.n_cases,
            "n_variants": self.n_variants,
            "mean_fitness": round(self.mean_fitness, 4),
            "fitting_cases": self.fitting_cases,
            "fitting_share": round(self.fitting_share, 4),
            "unfinished_excluded": self.unfinished_excluded,
            "journey": self.journey.to_dict() if self.journey else None,
            "deviations": [
                {**asdict(d), "share": round(d.share, 4), "example_cases": d.example_cases[:10]}
                for d in self.deviations[:limit]
            ],
            "variants": [{**asdict(v), "fitness": round(v.fitness, 4)} for v in self.variants[:limit]],
        }


def case_variants(enc: EncodedLog) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """Variant code per case, the activity tuple of each variant, and case counts per variant."""
    codes = enc.activity.codes.astype(np.int32)
    starts = enc.case_start
    keys = [codes[starts[i] : starts[i + 1]].tobytes() for i in range(enc.n_cases)]
    vcode, uniq = pd.factorize(pd.Series(keys, dtype=object))
    labels = enc.activity.labels
    seqs = [tuple(str(labels[c]) for c in np.frombuffer(k, dtype=np.int32)) for k in uniq]
    counts = np.bincount(vcode, minlength=len(uniq))
    return vcode.astype(np.int64), seqs, counts


def journey_from_log(log: EventLog, *, enc: EncodedLog | None = None) -> IntendedJourney:
    """The most frequent variant as a reference path (used when no designed journey is given)."""
    e = enc if enc is not None else encode(log)
    _, seqs, counts = case_variants(e)
    if not seqs:
        raise InvalidInput("cannot derive a journey from an empty log", field="log")
    top = seqs[int(np.argmax(counts))]
    return IntendedJourney(steps=list(top), source="most frequent variant")


def align_to_path(
    trace: tuple[str, ...] | list[str], journey: IntendedJourney
) -> tuple[float, list[str], list[str], list[str]]:
    """Align one trace to the declared path: (fitness, skipped, inserted, reordered)."""
    allowed = set(journey.allowed_anywhere)
    t = [a for a in trace if a not in allowed]
    p = journey.steps
    opt = set(journey.optional)
    n, m = len(t), len(p)
    skip_cost = [0 if s in opt else 1 for s in p]
    inf = n + m + 1
    dp = np.full((n + 1, m + 1), inf, dtype=np.int64)
    dp[0, 0] = 0
    for j in range(1, m + 1):
        dp[0, j] = dp[0, j - 1] + skip_cost[j - 1]
    for i in range(1, n + 1):
        dp[i, 0] = i
        ti = t[i - 1]
        for j in range(1, m + 1):
            best = min(dp[i - 1, j] + 1, dp[i, j - 1] + skip_cost[j - 1])
            if ti == p[j - 1] and dp[i - 1, j - 1] < best:
                best = dp[i - 1, j - 1]
            dp[i, j] = best
    # Backtrack (prefer matches, then skips, then inserts) for a deterministic explanation.
    i, j = n, m
    skipped: list[str] = []
    inserted: list[str] = []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and t[i - 1] == p[j - 1] and dp[i, j] == dp[i - 1, j - 1]:
            i, j = i - 1, j - 1
        elif j > 0 and dp[i, j] == dp[i, j - 1] + skip_cost[j - 1]:
            if skip_cost[j - 1]:
                skipped.append(p[j - 1])
            j -= 1
        else:
            inserted.append(t[i - 1])
            i -= 1
    skipped.reverse()
    inserted.reverse()
    # A required step that was skipped in place but done elsewhere is a reordering, not two deviations.
    ins_left = Counter(inserted)
    reordered: list[str] = []
    still_skipped: list[str] = []
    for s in skipped:
        if ins_left[s] > 0:
            ins_left[s] -= 1
            reordered.append(s)
        else:
            still_skipped.append(s)
    remaining_inserted: list[str] = []
    used = Counter(reordered)
    for a in inserted:
        if used[a] > 0:
            used[a] -= 1
        else:
            remaining_inserted.append(a)
    required = sum(skip_cost)
    cost = int(dp[n, m])
    fitness = 1.0 - cost / max(required + n, 1)
    return max(0.0, fitness), still_skipped, remaining_inserted, reordered


def check_conformance(
    log: EventLog,
    *,
    journey: IntendedJourney | None = None,
    model_path: str | Path | None = None,
    enc: EncodedLog | None = None,
    max_alignment_variants: int = 300,
    example_cases: int = 20,
    finished: np.ndarray | None = None,
) -> ConformanceResult:
    """Fitness per case and per variant and the ranked deviations against a declared journey or a model file.

    `finished` (a per-case mask in encoded order) limits the check to finished cases; the others get no fitness.
    """
    e = enc if enc is not None else encode(log)
    vcode, seqs, counts = case_variants(e)
    case_ids = np.asarray(e.case_labels, dtype=object)
    keep = np.ones(e.n_cases, dtype=bool) if finished is None else np.asarray(finished, dtype=bool)
    if len(keep) != e.n_cases:
        raise InvalidInput("finished mask must have one entry per case", field="finished")
    if not keep.all():
        counts = np.bincount(vcode[keep], minlength=len(seqs))
    n_cases = int(keep.sum())
    if model_path is not None:
        fit, skipped, inserted, reordered, method = _pm4py_conformance(
            seqs, Path(model_path), max_alignment_variants=max_alignment_variants
        )
        reference = Path(model_path).name
        journey_used = None
    else:
        journey_used = journey if journey is not None else journey_from_log(log, enc=e)
        reference = journey_used.source
        method = "declared_path"
        fit, skipped, inserted, reordered = [], [], [], []
        for seq in seqs:
            f, s, i, r = align_to_path(seq, journey_used)
            fit.append(f)
            skipped.append(s)
            inserted.append(i)
            reordered.append(r)
    fit_arr = np.asarray(fit, dtype=float)
    all_fit = fit_arr[vcode] if e.n_cases else np.zeros(0)
    case_fitness = pd.Series(np.where(keep, all_fit, np.nan), index=pd.Index(case_ids, name="case_id"),
                             name="fitness")
    case_fit = all_fit[keep]

    # Deviations: aggregate per variant (each variant counts a deviation kind/activity once), weighted by cases.
    dev_cases: Counter[tuple[str, str]] = Counter()
    dev_vars: dict[tuple[str, str], list[int]] = {}
    for v in range(len(seqs)):
        if counts[v] == 0:
            continue
        for kind, acts in (("skipped", skipped[v]), ("inserted", inserted[v]), ("reordered", reordered[v])):
            for a in set(acts):
                dev_cases[(kind, a)] += int(counts[v])
                dev_vars.setdefault((kind, a), []).append(v)
    kept_idx = np.flatnonzero(keep)
    order_cases = kept_idx[np.argsort(vcode[keep], kind="stable")]
    bounds = np.r_[0, np.cumsum(np.bincount(vcode[keep], minlength=len(seqs)))]
    deviations: list[Deviation] = []
    for (kind, act), c in dev_cases.most_common():
        vs = sorted(dev_vars[(kind, act)], key=lambda v: -counts[v])
        ex: list[str] = []
        for v in vs:
            ex.extend(str(x) for x in case_ids[order_cases[bounds[v] : bounds[v + 1]]][: example_cases - len(ex)])
            if len(ex) >= example_cases:
                break
        deviations.append(Deviation(kind, act, int(c), c / max(n_cases, 1), len(vs), ex))
    vorder = np.argsort(-counts, kind="stable")
    variants = [
        VariantConformance(list(seqs[v]), int(counts[v]), float(fit_arr[v]), skipped[v], inserted[v], reordered[v])
        for v in vorder
        if counts[v] > 0
    ]
    fitting = int((case_fit >= 1.0 - 1e-9).sum())
    return ConformanceResult(
        method=method,
        reference=reference,
        n_cases=n_cases,
        n_variants=int((counts > 0).sum()),
        mean_fitness=float(case_fit.mean()) if n_cases else 1.0,
        fitting_cases=fitting,
        fitting_share=fitting / max(n_cases, 1),
        deviations=deviations,
        variants=variants,
        case_fitness=case_fitness,
        journey=journey_used,
        unfinished_excluded=int(e.n_cases - n_cases),
    )


def _pm4py_conformance(
    seqs: list[tuple[str, ...]], model_path: Path, *, max_alignment_variants: int
) -> tuple[list[float], list[list[str]], list[list[str]], list[list[str]], str]:
    """pm4py alignments (few variants) or token replay on one trace per variant."""
    import pm4py

    if not model_path.is_file():
        raise InvalidInput(f"process model file {model_path} does not exist", field="model")
    suffix = model_path.suffix.lower()
    try:
        if suffix == ".bpmn":
            net, im, fm = pm4py.convert_to_petri_net(pm4py.read_bpmn(str(model_path)))
        elif suffix == ".pnml":
            net, im, fm = pm4py.read_pnml(str(model_path))
        else:
            raise InvalidInput(f"process model {model_path} must be .bpmn or .pnml", field="model")
    except InvalidInput:
        raise
    except Exception as exc:  # pm4py raises many kinds; name the file
        raise InvalidInput(f"cannot read process model {model_path}: {exc}", field="model") from exc
    # One trace per variant, in pm4py's own frame layout (built here since it is the only pm4py call site).
    rows = []
    base = pd.Timestamp("2000-01-01", tz="UTC")
    for v, seq in enumerate(seqs):
        for k, a in enumerate(seq):
            # Zero-padded ids: pm4py returns results in case-id order, which must equal variant order.
            rows.append((f"v{v:09d}", a, base + pd.Timedelta(seconds=k)))
    df = pd.DataFrame(rows, columns=["case:concept:name", "concept:name", "time:timestamp"])
    if len(seqs) <= max_alignment_variants:
        res = pm4py.conformance_diagnostics_alignments(df, net, im, fm, multi_processing=False)
        fit, sk, ins = [], [], []
        for r in res:
            fit.append(float(r.get("fitness", 0.0)))
            s: list[str] = []
            i: list[str] = []
            for log_move, model_move in r.get("alignment", []):
                if log_move == ">>" and model_move not in (None, ">>"):
                    s.append(str(model_move))
                elif model_move == ">>" and log_move not in (None, ">>"):
                    i.append(str(log_move))
            sk.append(s)
            ins.append(i)
        reo: list[list[str]] = []
        for s, i in zip(sk, ins, strict=True):
            both = Counter(s) & Counter(i)
            reo.append(sorted(both.elements()))
            for a in both.elements():
                s.remove(a)
                i.remove(a)
        return fit, sk, ins, reo, "pm4py_alignments"
    res = pm4py.conformance_diagnostics_token_based_replay(df, net, im, fm)
    fit = [float(r.get("trace_fitness", 0.0)) for r in res]
    empty: list[list[str]] = [[] for _ in seqs]
    return fit, empty, [[] for _ in seqs], [[] for _ in seqs], "pm4py_token_replay"
