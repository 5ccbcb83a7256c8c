"""Conformance of a log against the intended journey, computed once per variant and spread over its cases.

Two routes:

* **declared path** (fast, our own): the journey is an ordered list of steps, some of which may be skipped,
  plus activities allowed anywhere (e.g. "Wait for customer"). Each variant is aligned to the path with an
  edit-distance alignment (skipping an optional step is free; skipping a required step or doing an extra
  activity costs 1). A required step done out of place shows up as **reordered** rather than skipped+inserted.
  fitness = 1 - cost / (required steps + relevant events), in [0, 1].
* **process model** (BPMN or PNML file): pm4py alignments per variant when the log has few variants (they give
  the skipped / inserted steps), else pm4py token replay (fitness only).

Conformance is only ever measured against a journey someone designed (or a model file): the most frequent path
is what happens, not what should happen, so `check_conformance` refuses to run without one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
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
            raise InvalidInput(
                f"optional steps {unknown} are not in the journey's steps: an optional step needs its place in "
                "'steps'; mark it there with {step: NAME, optional: true}, or list it under 'allowed_anywhere' "
                "when it may happen at any point", field="optional")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntendedJourney:
        """Build from {"steps": [...], "optional": [...], "allowed_anywhere": [...]} (see docs/JOURNEYS.md).

        A step is a name, or {"step": name, "optional": true} to mark it skippable where it stands (no need to
        repeat it under "optional"); "optional" may still list step names.
        """
        if not isinstance(d, dict):
            raise InvalidInput("a journey is a mapping with 'steps' (see docs/JOURNEYS.md)", field="journey")
        if "steps" not in d:
            raise InvalidInput("journey definition lacks 'steps'", field="steps")
        if not isinstance(d["steps"], list):
            raise InvalidInput("journey 'steps' must be a list of step names", field="steps")
        steps: list[str] = []
        optional: list[str] = [str(s) for s in d.get("optional") or []]
        for k, item in enumerate(d["steps"]):
            if isinstance(item, dict):
                name = item.get("step", item.get("activity", item.get("name")))
                if name is None:
                    raise InvalidInput(f"journey step {k + 1} has no 'step' name", field=f"steps[{k}]")
                steps.append(str(name))
                if item.get("optional") and str(name) not in optional:
                    optional.append(str(name))
            else:
                steps.append(str(item))
        return cls(
            steps=steps,
            optional=optional,
            allowed_anywhere=[str(s) for s in d.get("allowed_anywhere") or []],
            source=str(d.get("name", d.get("source", "declared"))),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> IntendedJourney:
        """Read a declared journey from a JSON or YAML file (YAML when the name ends in .yaml / .yml)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise InvalidInput(f"cannot read journey file {p}: {exc}", field="journey") from exc
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:  # pragma: no cover - pyyaml ships with the environment
                raise InvalidInput(f"journey file {p} is YAML but pyyaml is not installed; use JSON",
                                   field="journey") from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise InvalidInput(f"cannot read journey file {p}: {exc}", field="journey") from exc
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"cannot read journey file {p}: {exc}", field="journey") from exc
        if isinstance(data, list):
            data = {"steps": data}
        j = cls.from_dict(data)
        if j.source == "declared":
            j.source = f"declared journey ({p.name})"
        return j

    @classmethod
    def from_json(cls, path: str | Path) -> IntendedJourney:
        """Read a declared journey from a JSON file."""
        return cls.from_file(path)

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
    if journey is None and model_path is None:
        raise InvalidInput(
            "conformance needs a designed journey (journey=IntendedJourney(...), or `deskpilot mine --journey FILE`; "
            "see docs/JOURNEYS.md) or a process model file (model_path=BPMN or PNML); the most frequent path is not "
            "a norm to check cases against", field="journey")
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
        assert journey is not None  # checked above
        journey_used = journey
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


# ---------------------------------------------------------------------------------------------------------------
# The three journeys of Customer Journey Mining 2.0 side by side: designed, in the data, experienced.

# columns carrying what customers reported (compared lower-case, letters and digits only; substring match)
SCORE_NAMES = ("csat", "satisfaction", "survey", "nps", "customereffort", "effortscore", "ces", "rating",
               "feedbackscore")
# columns naming the customer who contacted support, best first (exact match after normalising)
CUSTOMER_NAMES = ("customer", "customerid", "requester", "requesterid", "callerid", "caller", "contact",
                  "contactid", "client", "clientid", "customeremail", "requesteremail", "account", "accountid")
# columns naming what the contact was about, best first: a repeat contact is about the same thing
TOPIC_NAMES = ("intent", "contactreason", "reason", "category", "product", "topic", "issue", "issuetype",
               "tickettype", "type")
# columns carrying the customer's own words, best first (compared like SCORE_NAMES): sentiment is derived from them
# when the log has no score column
TEXT_NAMES = ("customercomment", "customermessage", "feedbacktext", "comment", "message", "body", "description",
              "feedback", "remark", "text")
_WORD_SCORES = {"good": 1.0, "bad": 0.0, "satisfied": 1.0, "unsatisfied": 0.0, "dissatisfied": 0.0,
                "yes": 1.0, "no": 0.0}


def _norm_col(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


@dataclass
class PathExperience:
    """One path (or the designed journey) with how customers experienced it."""

    activities: list[str]
    cases: int
    share: float
    score_mean: float | None = None
    score_cases: int = 0
    repeat_rate: float | None = None
    repeat_cases: int = 0
    sentiment_mean: float | None = None  # mean compound sentiment of the cases' texts, -1 (negative) .. +1
    sentiment_cases: int = 0


@dataclass
class StepExperience:
    """One step with how customers experienced the cases that went through it."""

    activity: str
    cases: int
    score_mean: float | None = None
    score_cases: int = 0
    repeat_rate: float | None = None
    sentiment_mean: float | None = None
    sentiment_cases: int = 0


@dataclass
class JourneyComparison:
    """Designed journey, the journey in the data and the experienced one (score or repeat contact per path/step)."""

    designed: PathExperience | None
    designed_source: str | None
    in_data: PathExperience | None
    paths: list[PathExperience]
    steps: list[StepExperience]
    experience: str  # "score", "sentiment", "repeat_contact" or "none"
    experience_basis: str
    finished_cases: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "designed": asdict(self.designed) if self.designed else None,
            "designed_source": self.designed_source,
            "in_data": asdict(self.in_data) if self.in_data else None,
            "paths": [asdict(p) for p in self.paths],
            "steps": [asdict(s) for s in self.steps],
            "experience": self.experience,
            "experience_basis": self.experience_basis,
            "finished_cases": self.finished_cases,
        }


def find_score_column(df: pd.DataFrame) -> str | None:
    """A CSAT / survey / effort column, by name, holding numbers (or good/bad words) on some rows."""
    for col in df.columns:
        n = _norm_col(col)
        if any(k in n for k in SCORE_NAMES) and _scores(df[col]).notna().any():
            return str(col)
    return None


def find_text_column(df: pd.DataFrame) -> str | None:
    """A column of customer-written text (comment / message / body / description ...), by name, holding words."""
    def rank(col: Any) -> int:
        n = _norm_col(col)
        return next((i for i, k in enumerate(TEXT_NAMES) if k in n), len(TEXT_NAMES))

    for col in sorted((str(c) for c in df.columns if rank(c) < len(TEXT_NAMES)), key=rank):
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            continue
        text = values.dropna().astype("string").str.strip()
        text = text[text != ""].head(2000)
        # words, not codes: most filled values have a space and are not numbers
        if len(text) and text.str.contains(r"[A-Za-z]\S*\s+\S", regex=True).mean() >= 0.5:
            return col
    return None


def text_sentiment(texts: pd.Series) -> pd.Series:
    """VADER's compound sentiment (-1 most negative .. +1 most positive) of each text; NaN for empty ones.

    VADER is a lexicon and rules shipped inside the `vaderSentiment` package: nothing is downloaded when it runs.
    Each distinct text is scored once."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    clean = texts.astype("string").str.strip().str.slice(0, 5000)
    clean = clean.where(clean != "")
    uniq = clean.dropna().unique()
    analyzer = SentimentIntensityAnalyzer()
    scores = {t: float(analyzer.polarity_scores(str(t))["compound"]) for t in uniq}
    return clean.map(scores).astype(float)


def find_customer_column(df: pd.DataFrame) -> str | None:
    """The column naming the customer / requester / caller, by name."""
    normed = {_norm_col(c): str(c) for c in df.columns}
    return next((normed[n] for n in CUSTOMER_NAMES if n in normed), None)


def find_topic_column(df: pd.DataFrame) -> str | None:
    """The column naming what a contact was about (intent, contact reason, category, product ...), by name."""
    normed = {_norm_col(c): str(c) for c in df.columns}
    return next((normed[n] for n in TOPIC_NAMES if n in normed), None)


def _scores(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    text = col.astype("string").str.strip().str.lower()
    num = pd.to_numeric(text, errors="coerce")
    return num.fillna(text.map(_WORD_SCORES).astype(float))


def compare_journeys(
    log: EventLog,
    *,
    enc: EncodedLog | None = None,
    journey: IntendedJourney | None = None,
    finished: np.ndarray | None = None,
    case_fitness: pd.Series | None = None,
    repeat_days: float = 7.0,
    min_cases: int = 20,
    top: int = 10,
) -> JourneyComparison:
    """The three journeys side by side, on finished cases: the designed one (cases that follow it exactly), the
    most frequent path in the data, and the experienced one: mean CSAT / survey / effort score per path and step
    when the log carries one; else the mean sentiment of the customers' own words (a comment / message / body /
    description column, scored with VADER), derived from text; else the share of cases whose customer came back
    within `repeat_days`."""
    e = enc if enc is not None else encode(log)
    vcode, seqs, _ = case_variants(e)
    keep = np.ones(e.n_cases, dtype=bool) if finished is None else np.asarray(finished, dtype=bool)
    case_ids = np.asarray(e.case_labels, dtype=object)
    df = log.df
    per_case_key = df["case_id"].astype(str)
    score_col = find_score_column(df)
    text_col = None if score_col else find_text_column(df)
    cust_col = None if score_col or text_col else find_customer_column(df)
    value = np.full(e.n_cases, np.nan)
    if score_col is not None:
        sc = _scores(df[score_col]).groupby(per_case_key, sort=False).mean()
        value = sc.reindex(pd.Index(case_ids.astype(str))).to_numpy(dtype=float)
        kind = "score"
        basis = (f"mean of {score_col!r} per case (customer-reported; {int(np.isfinite(value).sum()):,} cases "
                 "carry a score)")
    elif text_col is not None:
        # one score per distinct text of a case (a description repeated on every event counts once)
        pairs = pd.DataFrame({"case": per_case_key, "text": df[text_col].astype("string").str.strip()})
        pairs = pairs.dropna().drop_duplicates()
        pairs["s"] = text_sentiment(pairs["text"]).to_numpy()
        sc = pairs.dropna(subset=["s"]).groupby("case", sort=False)["s"].mean()
        value = sc.reindex(pd.Index(case_ids.astype(str))).to_numpy(dtype=float)
        kind = "sentiment"
        basis = (f"sentiment derived from the text in {text_col!r}: mean VADER compound score per case, from -1 "
                 f"(negative) to +1 (positive) ({int(np.isfinite(value).sum()):,} cases carry text; derived, not "
                 "customer-reported: no CSAT / survey / effort column in the log)")
    elif cust_col is not None:
        topic_col = find_topic_column(df)
        g = df.groupby(per_case_key, sort=False)
        who = g[cust_col].first().astype("string")
        if topic_col is not None:
            # a business customer opens many unrelated tickets: only a contact about the same thing repeats
            who = who + "\x1f" + g[topic_col].first().astype("string")
        t = pd.DataFrame({"cust": who, "start": g["timestamp"].min(), "end": g["timestamp"].max()})
        t = t.reindex(pd.Index(case_ids.astype(str)))
        t = t.dropna(subset=["cust"]).sort_values(["cust", "start"])
        nxt = t.groupby("cust", sort=False)["start"].shift(-1)
        gap = (nxt - t["end"]).dt.total_seconds()
        # a case is followed by a repeat contact when its customer comes back about the same thing within the
        # window after it closed (a case opened while it was still open may be a separate issue of a busy account)
        rep = (gap >= 0) & (gap <= repeat_days * 86400)
        last_start = df["timestamp"].max() - pd.Timedelta(days=repeat_days)
        # too recent to know whether the customer came back, unless they already did
        rep = rep.astype(float).where((t["end"] <= last_start) | rep)
        value = rep.reindex(pd.Index(case_ids.astype(str))).to_numpy(dtype=float)
        kind = "repeat_contact"
        about = f" about the same {topic_col!r}" if topic_col else ""
        basis = (f"repeat contact: the same {cust_col!r} opened another case{about} within "
                 f"{repeat_days:g} days of its close (derived; no CSAT / survey / effort column and no customer "
                 "text in the log)")
    else:
        kind = "none"
        basis = ("not measured: the log has no CSAT / survey / effort column, no customer text (comment, message, "
                 "description ...) to derive sentiment from, and no customer or requester column to derive repeat "
                 "contacts from")
    n_fin = int(keep.sum())

    def exp(mask: np.ndarray, acts: list[str]) -> PathExperience:
        m = mask & keep
        v = value[m]
        ok = np.isfinite(v)
        mean = float(v[ok].mean()) if ok.any() else None
        out = PathExperience(list(acts), int(m.sum()), int(m.sum()) / max(n_fin, 1))
        if kind == "score":
            out.score_mean, out.score_cases = mean, int(ok.sum())
        elif kind == "sentiment":
            out.sentiment_mean, out.sentiment_cases = mean, int(ok.sum())
        elif kind == "repeat_contact":
            out.repeat_rate, out.repeat_cases = mean, int(v[ok].sum()) if ok.any() else 0
        return out

    counts = np.bincount(vcode[keep], minlength=len(seqs)) if len(seqs) else np.zeros(0, np.int64)
    order = [int(v) for v in np.argsort(-counts, kind="stable") if counts[v] >= min_cases][:top]
    paths = [exp(vcode == v, list(seqs[v])) for v in order]
    in_data = paths[0] if paths else None
    designed = None
    if journey is not None:
        fits = np.zeros(e.n_cases, dtype=bool)
        if case_fitness is not None and len(case_fitness) == e.n_cases:
            fits = (case_fitness.to_numpy(dtype=float) >= 1.0 - 1e-9)
        designed = exp(fits, list(journey.steps))
    steps: list[StepExperience] = []
    n_labels = max(len(e.activity.labels), 1)
    ok_codes = e.activity.codes >= 0
    # one (case, activity) pair per case that went through the step, then per-step sums over finished cases
    pairs = np.unique(e.case[ok_codes].astype(np.int64) * n_labels + e.activity.codes[ok_codes])
    pc, pa = pairs // n_labels, pairs % n_labels
    w = keep[pc].astype(float)
    through = np.bincount(pa, weights=w, minlength=n_labels)
    fin = np.isfinite(value[pc]) & keep[pc]
    rated = np.bincount(pa, weights=fin.astype(float), minlength=n_labels)
    total = np.bincount(pa, weights=np.where(fin, value[pc], 0.0), minlength=n_labels)
    for a in np.argsort(-through, kind="stable")[:15]:
        if through[a] <= 0:
            continue
        mean = float(total[a] / rated[a]) if rated[a] else None
        steps.append(StepExperience(
            str(e.activity.labels[a]), int(through[a]),
            score_mean=mean if kind == "score" else None, score_cases=int(rated[a]) if kind == "score" else 0,
            repeat_rate=mean if kind == "repeat_contact" else None,
            sentiment_mean=mean if kind == "sentiment" else None,
            sentiment_cases=int(rated[a]) if kind == "sentiment" else 0,
        ))
    return JourneyComparison(designed, journey.source if journey else None, in_data, paths, steps, kind, basis,
                             n_fin)
