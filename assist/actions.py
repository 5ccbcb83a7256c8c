"""Forecast next events: candidate next steps from the next-activity model, ranked by their expected outcome.

These are the ticket's likely next *events* (process states included), shown with the timeline; the actions an
agent is advised to take are ranked by their mined effect in `assist.effects`.

For an open ticket (its events so far) the next-activity model gives the likely next steps. Each plausible
candidate (probability >= `min_probability`, at most `max_candidates` of them) is appended to the prefix and the
remaining-time model is asked how long the case will still take, and how likely it breaches the SLA, *after* that
step; the wait before the step is the mean wait mined from the log for that transition (`StepOutcomes`), 0 when
unknown. Candidates are then ranked by expected hours to the end (wait + remaining after the step), ties by
probability: a less likely step that historically ends cases sooner is ranked first, the likelihood is shown
next to it. Without a remaining-time model the mined `StepOutcomes` table alone supplies the expected hours.

The end-of-case class is not an action: its probability is reported as `end_probability`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from assist.effects import ActionEffects
from assist.models import NextBestAction
from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.schema import ACTIVITY, CASE_ID, TIMESTAMP
from insight.models.prefix_features import END

Ranking = Literal["outcome", "likelihood"]
_HOUR = 3600.0


def events_frame(
    events: Any, *, case_id: str | None = None, case_attributes: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The ticket's events so far as one case in canonical columns, case attributes repeated on every row."""
    if events is None:
        raise InvalidInput("assist needs the ticket's events so far (at least its creation)", field="events")
    df = events.df if hasattr(events, "df") else events
    if isinstance(df, list):
        df = pd.DataFrame(df)
    if not isinstance(df, pd.DataFrame):
        raise InvalidInput(f"events must be an EventLog, a DataFrame or a list of dicts, got {type(events).__name__}",
                           field="events")
    if df.empty:
        raise InvalidInput("the ticket has no events yet; post at least its creation event", field="events")
    for col in (ACTIVITY, TIMESTAMP):
        if col not in df.columns:
            raise InvalidEventLog(f"ticket events lack column {col!r}; have {list(df.columns)}", column=col)
    out = df.copy()
    if case_id is not None:
        out[CASE_ID] = case_id
    elif CASE_ID not in out.columns:
        out[CASE_ID] = "ticket"
    if out[CASE_ID].astype(str).nunique() != 1:
        raise InvalidInput("events must belong to one ticket (one case_id)", field="events.case_id")
    ts = pd.to_datetime(out[TIMESTAMP], utc=True, errors="coerce")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise InvalidEventLog("unreadable event timestamp", row=row, column=TIMESTAMP)
    out[TIMESTAMP] = ts
    out[ACTIVITY] = out[ACTIVITY].astype(str)
    for key, value in (case_attributes or {}).items():
        if value is not None and key not in (CASE_ID, ACTIVITY, TIMESTAMP):
            out[key] = value
    order = np.lexsort((np.arange(len(out)), out[TIMESTAMP].to_numpy()))
    return out.iloc[order].reset_index(drop=True)


@dataclass(frozen=True)
class StepStat:
    """What followed one step from one state in the mined log."""

    state: str
    activity: str
    cases: int  # prefixes in state `state` whose next step was `activity`
    share: float  # of all prefixes in that state
    mean_wait_hours: float  # from the state's event to the step
    mean_after_hours: float  # from the step to the end of the case
    breach_rate: float | None  # share of those cases over the SLA

    @property
    def mean_total_hours(self) -> float:
        """Hours from the state to the end of the case when this step is taken next."""
        return self.mean_wait_hours + self.mean_after_hours


class StepOutcomes(BaseEstimator):
    """Mined from a log: for each (last activity, next activity), how often, how long the wait, how long after."""

    def __init__(self, *, sla_hours: float | None = None, min_support: int = 5, effects: bool = True) -> None:
        self.sla_hours = sla_hours
        self.min_support = min_support
        self.effects = effects

    def fit(self, log: Any) -> StepOutcomes:
        """Count every transition of every case with its wait and the hours left after it."""
        df = log.df if hasattr(log, "df") else log
        for col in (CASE_ID, ACTIVITY, TIMESTAMP):
            if col not in df.columns:
                raise InvalidEventLog(f"step outcomes need column {col!r}", file=getattr(log, "name", None),
                                      column=col)
        d = df[[CASE_ID, ACTIVITY, TIMESTAMP]].copy()
        d[CASE_ID] = d[CASE_ID].astype(str)
        d = d.sort_values([CASE_ID, TIMESTAMP], kind="stable").reset_index(drop=True)
        g = d.groupby(CASE_ID, sort=False)
        nxt = g[ACTIVITY].shift(-1)
        nxt_ts = g[TIMESTAMP].shift(-1)
        end = g[TIMESTAMP].transform("max")
        start = g[TIMESTAMP].transform("min")
        t = pd.DataFrame({
            "state": d[ACTIVITY].astype(str),
            "activity": nxt.fillna(END).astype(str),
            "wait": ((nxt_ts - d[TIMESTAMP]).dt.total_seconds() / _HOUR).fillna(0.0),
            "after": ((end - nxt_ts.fillna(end)).dt.total_seconds() / _HOUR),
            "total": ((end - start).dt.total_seconds() / _HOUR),
        })
        self.sla_hours_ = float(self.sla_hours if self.sla_hours is not None
                                else np.quantile(t.groupby(d[CASE_ID])["total"].first(), 0.8))
        t["breach"] = (t["total"] > self.sla_hours_).astype(float)
        agg = t.groupby(["state", "activity"], sort=True).agg(
            cases=("wait", "size"), wait=("wait", "mean"), after=("after", "mean"), breach=("breach", "mean"))
        state_n = t.groupby("state").size()
        agg["share"] = agg["cases"] / state_n.reindex(agg.index.get_level_values(0)).to_numpy()
        self.table_ = agg
        # Hours left from each state whatever comes next: the "no particular choice" expectation.
        self.state_hours_ = (t["wait"] + t["after"]).groupby(t["state"]).mean().to_dict()
        # The agent actions and their mined effects ride along in the same artifact (assist.effects).
        self.effects_ = ActionEffects().fit(log) if self.effects else None
        return self

    def _check(self) -> None:
        check_is_fitted(self, "table_", msg="%(name)s is not fitted; call fit(log) first")

    def lookup(self, state: str, activity: str) -> StepStat | None:
        """Statistics of one transition, or None when the log never showed it."""
        self._check()
        key = (state, activity)
        if key not in self.table_.index:
            return None
        r = self.table_.loc[key]
        return StepStat(state=state, activity=activity, cases=int(r["cases"]), share=float(r["share"]),
                        mean_wait_hours=float(r["wait"]), mean_after_hours=float(r["after"]),
                        breach_rate=float(r["breach"]))

    def candidates(self, state: str) -> list[StepStat]:
        """Every step seen after `state` with at least `min_support` cases, most frequent first (end excluded)."""
        self._check()
        if state not in self.table_.index.get_level_values(0):
            return []
        rows = self.table_.loc[state]
        out = [self.lookup(state, str(a)) for a in rows.index if str(a) != END]
        return sorted((s for s in out if s is not None and s.cases >= self.min_support), key=lambda s: -s.share)

    def hours_from(self, state: str) -> float | None:
        """Mean hours to the end from this state, over whatever step came next."""
        self._check()
        v = self.state_hours_.get(state)
        return None if v is None else float(v)


@dataclass
class ActionContext:
    """The expectation for the ticket as it stands, before any suggested step."""

    expected_remaining_hours: float | None
    sla_breach_probability: float | None
    end_probability: float | None


def _with_candidates(prefix: pd.DataFrame, candidates: Sequence[str], waits: Sequence[float]) -> pd.DataFrame:
    """One copy of the prefix per candidate with the candidate appended (its own case id), all in one frame."""
    last = prefix.iloc[-1]
    parts = []
    for i, (act, wait) in enumerate(zip(candidates, waits, strict=True)):
        step = last.copy()
        step[ACTIVITY] = act
        step[TIMESTAMP] = last[TIMESTAMP] + pd.Timedelta(hours=float(wait))
        part = pd.concat([prefix, step.to_frame().T], ignore_index=True)
        part[CASE_ID] = f"__cand{i:04d}"
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    for col in prefix.columns:
        if col != TIMESTAMP and prefix[col].dtype != frame[col].dtype:
            frame[col] = frame[col].astype(prefix[col].dtype)
    return frame


def _last_per_case(values: np.ndarray, n_cases: int) -> np.ndarray:
    # Candidate cases have equal length, so the last row of case i sits at (i + 1) * len - 1.
    per = len(values) // n_cases
    return values[per - 1:: per]


def _fmt_h(hours: float) -> str:
    return f"{hours / 24:.1f} days" if abs(hours) >= 48 else f"{hours:.1f} h"


def _why(a: NextBestAction, *, now_hours: float | None, likely_rank: int) -> str:
    parts = []
    if a.probability is not None:
        who = "the next-activity model" if a.source == "model" else "similar cases in the log"
        parts.append(f"{a.activity!r} is the #{likely_rank} most likely next step ({a.probability:.0%}, {who})")
    else:
        parts.append(f"{a.activity!r} is a step of the matching guideline")
    if a.expected_remaining_hours is not None:
        s = f"taking it now leaves an expected {_fmt_h(a.expected_remaining_hours)} to resolution"
        if a.expected_change_hours is not None and now_hours is not None:
            sign = "faster" if a.expected_change_hours < 0 else "slower"
            s += f" ({_fmt_h(abs(a.expected_change_hours))} {sign} than the {_fmt_h(now_hours)} expected now)"
        parts.append(s)
    if a.sla_breach_probability is not None:
        parts.append(f"SLA-breach risk after it {a.sla_breach_probability:.0%}")
    if a.similar_cases:
        parts.append(f"{a.similar_cases} past cases took this step here and then needed "
                     f"{_fmt_h(a.similar_remaining_hours or 0.0)} on average")
    return "; ".join(parts) + "."


def rank_actions(
    *,
    prefix: pd.DataFrame,
    next_activity_model: Any = None,
    remaining_time_model: Any = None,
    outcomes: StepOutcomes | None = None,
    top_n: int = 3,
    max_candidates: int = 5,
    min_probability: float = 0.05,
    ranking: Ranking = "outcome",
) -> tuple[list[NextBestAction], ActionContext]:
    """Candidate next steps with probability, expected hours / SLA risk after the step and a reason, best first."""
    if top_n < 1 or max_candidates < 1:
        raise InvalidInput("top_n and max_candidates must be >= 1", field="top_n")
    if not 0.0 <= min_probability <= 1.0:
        raise InvalidInput(f"min_probability must be in [0, 1], got {min_probability}", field="min_probability")
    if ranking not in ("outcome", "likelihood"):
        raise InvalidInput(f"ranking must be 'outcome' or 'likelihood', got {ranking!r}", field="ranking")
    state = str(prefix[ACTIVITY].iloc[-1])
    ctx = ActionContext(None, None, None)
    probs: dict[str, float] = {}
    source: Literal["model", "log"] = "model"
    if next_activity_model is not None:
        proba = np.asarray(next_activity_model.predict_proba(prefix))[-1]
        classes = [str(c) for c in next_activity_model.classes_]
        ctx.end_probability = float(proba[classes.index(END)]) if END in classes else None
        ranked = sorted(((c, float(p)) for c, p in zip(classes, proba, strict=True) if c != END),
                        key=lambda cp: -cp[1])
        probs = {c: p for c, p in ranked[:max_candidates] if p >= min_probability}
        if not probs and ranked:  # nothing clears the bar: keep the single most likely step
            probs = dict(ranked[:1])
    elif outcomes is not None:
        source = "log"
        probs = {s.activity: s.share for s in outcomes.candidates(state)[:max_candidates]
                 if s.share >= min_probability}
    if not probs:
        return [], ctx
    cands = list(probs)
    stats = {c: (outcomes.lookup(state, c) if outcomes is not None else None) for c in cands}
    waits = [stats[c].mean_wait_hours if stats[c] is not None else 0.0 for c in cands]  # type: ignore[union-attr]
    after: list[float | None] = [None] * len(cands)
    breach: list[float | None] = [None] * len(cands)
    if remaining_time_model is not None:
        # One encoding pass for "now" and every candidate: the prefix itself rides along as the last case.
        frame = _with_candidates(prefix, cands, waits)
        now = prefix.copy()
        now[CASE_ID] = "__now"
        frame = pd.concat([frame, now], ignore_index=True)
        ps = remaining_time_model.prefixes(frame)
        rem_all = np.asarray(remaining_time_model.predict(ps))
        br_all = np.asarray(remaining_time_model.predict_breach_proba(ps))
        is_now = ps.case_id == "__now"
        ctx.expected_remaining_hours = float(rem_all[is_now][-1])
        ctx.sla_breach_probability = float(br_all[is_now][-1])
        rem = _last_per_case(rem_all[~is_now], len(cands))
        br = _last_per_case(br_all[~is_now], len(cands))
        after = [float(w + r) for w, r in zip(waits, rem, strict=True)]
        breach = [float(b) for b in br]
    elif outcomes is not None:
        ctx.expected_remaining_hours = outcomes.hours_from(state)
        for i, c in enumerate(cands):
            st = stats[c]
            if st is not None:
                after[i], breach[i] = st.mean_total_hours, st.breach_rate
    actions = []
    for i, c in enumerate(cands):
        st = stats[c]
        change = (after[i] - ctx.expected_remaining_hours  # type: ignore[operator]
                  if after[i] is not None and ctx.expected_remaining_hours is not None else None)
        actions.append(NextBestAction(
            rank=0, activity=c, source=source, probability=probs[c], expected_remaining_hours=after[i],
            expected_change_hours=change, sla_breach_probability=breach[i],
            similar_cases=st.cases if st is not None else None,
            similar_remaining_hours=st.mean_total_hours if st is not None else None,
        ))
    likely = {a.activity: i + 1 for i, a in enumerate(sorted(actions, key=lambda a: -(a.probability or 0.0)))}
    if ranking == "outcome":
        actions.sort(key=lambda a: (a.expected_remaining_hours is None, a.expected_remaining_hours or 0.0,
                                    -(a.probability or 0.0)))
    else:
        actions.sort(key=lambda a: -(a.probability or 0.0))
    out = []
    for r, a in enumerate(actions[:top_n], start=1):
        a.rank = r
        a.why = _why(a, now_hours=ctx.expected_remaining_hours, likely_rank=likely[a.activity])
        out.append(a)
    return out, ctx



# ---------------------------------------------------------------- the mined table as a registry artifact

TASK_STEP_OUTCOMES = "step_outcomes"


def train_step_outcomes(*, log: Any, registry: Any = None, promote: bool = True,
                        sla_hours: float | None = None) -> Any:
    """Mine `StepOutcomes` from a training log and save it as the registry task `step_outcomes` (a TrainedModel).

    It is a table of what followed each step in the log, not a fitted predictor: it is mined from the whole log and
    carries counts, not test metrics.
    """
    from insight.models.registry import ArtifactMetadata, ModelRegistry, data_hash
    from insight.training import TrainedModel

    model = StepOutcomes(sla_hours=sla_hours).fit(log)
    df = log.df if hasattr(log, "df") else log
    table = model.table_
    metrics = {
        "n_cases": int(df[CASE_ID].nunique()), "n_events": len(df),
        "n_states": int(table.index.get_level_values(0).nunique()), "n_transitions": len(table),
        "n_supported_transitions": int((table["cases"] >= model.min_support).sum()),
        "sla_hours": model.sla_hours_,
        "n_agent_actions": len(model.effects_.actions_) if model.effects_ is not None else 0,
    }
    if registry is None:
        return TrainedModel(task=TASK_STEP_OUTCOMES, metrics=metrics, model=model)
    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    ts = df[TIMESTAMP]
    meta = ArtifactMetadata(task=TASK_STEP_OUTCOMES, features=["state", "activity"], classes=[],
                            training_data_hash=data_hash(df[[CASE_ID, TIMESTAMP]]),
                            training_window=[str(ts.min()), str(ts.max())], metrics=metrics,
                            hyper_params={"sla_hours": sla_hours, "min_support": model.min_support})
    ref = reg.save(model, task=TASK_STEP_OUTCOMES, metadata=meta, promote=promote)
    return TrainedModel(task=TASK_STEP_OUTCOMES, metrics=metrics, version=ref.version, path=str(ref.path), model=model)


def load_step_outcomes(registry: Any) -> tuple[StepOutcomes, str] | None:
    """The live `step_outcomes` table and its version, or None when the registry has none (errors are raised)."""
    from core.errors import ModelArtifactError
    from insight.models.registry import ModelRegistry

    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    if reg.live_version(TASK_STEP_OUTCOMES) is None:
        return None
    art = reg.load(TASK_STEP_OUTCOMES)
    if not isinstance(art.model, StepOutcomes):
        raise ModelArtifactError(f"artifact {TASK_STEP_OUTCOMES}/{art.metadata.version} holds a "
                                 f"{type(art.model).__name__}, not StepOutcomes")
    if not hasattr(art.model, "table_"):
        raise ModelArtifactError(f"artifact {TASK_STEP_OUTCOMES}/{art.metadata.version} was saved unfitted")
    return art.model, art.metadata.version
