"""Mined effects of the steps agents take: for each optional agent action, how much sooner similar tickets resolved
and how much less often they were reopened when it was taken, with its support and a bootstrap interval.

Which activities are *actions* (things the ticket's agent chooses to do) and which are *process states* (milestones
every ticket passes, hand-overs, system and customer events) is read from the log, plus a configurable list:

* optional: it happens in between `min_case_share` and `max_case_share` of the cases (milestones such as Triage or
  Resolved happen in nearly all; they belong to the ticket's timeline, not to an action list);
* done by a person: at least half of its events name a resource (when the log has a resource column);
* no hand-over: fewer than half of its events move the ticket to another team (Assign, Reassign, Escalate, an
  approval granted by another team);
* not a reopening (the outcome measured) and not listed in `process_states`.

The effect of an action is measured from its *decision point*: the process state that most often comes right before
it (other actions skipped). Among the similar tickets (same intent, else all) that reached that point, the hours
from it to the end of the case and the reopen rate are compared between the tickets that took the action and those
that did not. The interval is a percentile bootstrap over tickets (`level`, `n_boot` resamples, a fixed seed); the
default level 0.999 is bench/assist.py's choice (at 400 resamples its ends are close to the extreme resamples).
An observational difference is not a proof of cause: the interval says how sure the log is, not why.

`EvidenceRule` decides what is shown: both sides need `min_support` tickets, and the interval of the hours (or,
optionally, of the reopen rate) must exclude zero. bench/assist.py chooses the support, the interval level and the
outcome on a training simulation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog.schema import ACTIVITY, CASE_ID, GROUP, RESOURCE, TIMESTAMP

_HOUR = 3600.0
ALL = "__all__"  # the group of every ticket, used when a ticket's own group has no table


@dataclass(frozen=True)
class EvidenceRule:
    """When a mined effect may be shown: support on both sides and an interval that excludes zero.

    `outcome="hours"` asks the hours interval to exclude zero (the outcome actions are ranked by); "either" also
    accepts a reopen-rate interval that does. The defaults are what bench/assist.py chose on a training simulation.
    """

    min_support: int = 10
    require_interval: bool = True
    outcome: str = "hours"

    def enough(self, e: ActionEffect) -> bool:
        """True when the effect has the support and the interval this rule asks for."""
        if min(e.n_with, e.n_without) < self.min_support:
            return False
        if not self.require_interval:
            return True
        hours = not (e.hours_ci[0] <= 0.0 <= e.hours_ci[1])
        return hours or (self.outcome == "either" and not (e.reopen_ci[0] <= 0.0 <= e.reopen_ci[1]))


@dataclass(frozen=True)
class ActionEffect:
    """The mined effect of taking one action, for one group of similar tickets."""

    activity: str
    group: str  # intent (or ALL)
    decision_point: str  # the state the action is measured from
    n_with: int
    n_without: int
    hours_with: float  # mean hours from the decision point to the end
    hours_without: float
    hours_change: float  # with - without (negative = resolves sooner)
    hours_ci: tuple[float, float]
    reopen_with: float  # share of tickets reopened
    reopen_without: float
    reopen_change: float
    reopen_ci: tuple[float, float]

    @property
    def support(self) -> int:
        """The smaller side's ticket count."""
        return min(self.n_with, self.n_without)


@dataclass
class _ActivityProfile:
    case_share: float
    resource_share: float | None
    handover_share: float | None


class ActionEffects(BaseEstimator):
    """Mined from a log: which activities are agent actions, and each action's effect per group of tickets."""

    def __init__(self, *, group_column: str = "intent", min_case_share: float = 0.005, max_case_share: float = 0.9,
                 process_states: Iterable[str] = (), reopen_pattern: str = r"re-?open|re-?contact",
                 level: float = 0.999, n_boot: int = 400, min_group_cases: int = 2, seed: int = 0) -> None:
        self.group_column = group_column
        self.min_case_share = min_case_share
        self.max_case_share = max_case_share
        self.process_states = process_states
        self.reopen_pattern = reopen_pattern
        self.level = level
        self.n_boot = n_boot
        self.min_group_cases = min_group_cases
        self.seed = seed

    # ------------------------------------------------------------------ fitting

    def fit(self, log: Any) -> ActionEffects:
        """Classify the activities, then measure every action's effect in every group (and over all tickets)."""
        if not 0.0 < self.level < 1.0:
            raise InvalidInput(f"level must be in (0, 1), got {self.level}", field="level")
        df = log.df if hasattr(log, "df") else log
        for col in (CASE_ID, ACTIVITY, TIMESTAMP):
            if col not in df.columns:
                raise InvalidEventLog(f"action effects need column {col!r}", column=col)
        cols = [c for c in (CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, GROUP, self.group_column) if c in df.columns]
        d = df[list(dict.fromkeys(cols))].copy()
        d[CASE_ID] = d[CASE_ID].astype(str)
        d[ACTIVITY] = d[ACTIVITY].astype(str)
        d = d.sort_values([CASE_ID, TIMESTAMP], kind="stable").reset_index(drop=True)
        self.profiles_ = self._profiles(d)
        reopen = re.compile(self.reopen_pattern, re.IGNORECASE)
        states = {s.strip().lower() for s in self.process_states}
        self.actions_ = sorted(
            a for a, p in self.profiles_.items()
            if self.min_case_share <= p.case_share <= self.max_case_share
            and (p.resource_share is None or p.resource_share >= 0.5)
            and (p.handover_share is None or p.handover_share < 0.5)
            and not reopen.search(a) and a.strip().lower() not in states)
        action_set = set(self.actions_)
        is_reopen = d[ACTIVITY].map(lambda a: bool(reopen.search(a)))
        end = d.groupby(CASE_ID, sort=False)[TIMESTAMP].max()
        groups = (d.groupby(CASE_ID, sort=False)[self.group_column].first().astype(str)
                  if self.group_column in d.columns else pd.Series(ALL, index=end.index))
        # The decision point of each action: the state most often right before it (other actions skipped).
        prev_state = d[ACTIVITY].where(~d[ACTIVITY].isin(action_set))
        prev_state = prev_state.groupby(d[CASE_ID], sort=False).ffill()
        prev_state = prev_state.groupby(d[CASE_ID], sort=False).shift(1)
        self.decision_points_: dict[str, str] = {}
        rng = np.random.default_rng(self.seed)
        self.table_: dict[tuple[str, str], ActionEffect] = {}
        for a in self.actions_:
            sel = d[ACTIVITY] == a
            before = prev_state[sel].dropna()
            if before.empty:
                continue
            point = str(before.mode().iloc[0])
            self.decision_points_[a] = point
            at = d[d[ACTIVITY] == point].groupby(CASE_ID, sort=False)[TIMESTAMP].min()
            first_a = d[sel].groupby(CASE_ID, sort=False)[TIMESTAMP].min()
            took = pd.Series(at.index.isin(first_a.index), index=at.index)
            # A reopening counts when it comes after the decision point.
            ro = d[is_reopen].groupby(CASE_ID, sort=False)[TIMESTAMP].max().reindex(at.index)
            reopened = (ro > at).fillna(False).to_numpy(dtype=float)
            hours = ((end.reindex(at.index) - at).dt.total_seconds() / _HOUR).to_numpy(dtype=float)
            g = groups.reindex(at.index).to_numpy(dtype=object)
            t = took.to_numpy(dtype=bool)
            for name in [ALL, *sorted(set(g))]:
                m = np.ones(len(g), dtype=bool) if name == ALL else (g == name)
                w, wo = m & t, m & ~t
                if w.sum() < self.min_group_cases or wo.sum() < self.min_group_cases:
                    continue
                self.table_[(name, a)] = self._effect(a, name, point, hours[w], hours[wo], reopened[w],
                                                      reopened[wo], rng)
        return self

    def _profiles(self, d: pd.DataFrame) -> dict[str, _ActivityProfile]:
        n_cases = d[CASE_ID].nunique() or 1
        share = d.groupby(ACTIVITY)[CASE_ID].nunique() / n_cases
        res = (d.groupby(ACTIVITY)[RESOURCE].apply(lambda s: float(s.notna().mean()))
               if RESOURCE in d.columns and d[RESOURCE].notna().any() else None)
        hand = None
        if GROUP in d.columns and d[GROUP].notna().any():
            prev = d.groupby(CASE_ID, sort=False)[GROUP].shift(1)
            moved = (prev.notna() & d[GROUP].notna() & (prev != d[GROUP])).astype(float)
            hand = moved.groupby(d[ACTIVITY]).mean()
        return {str(a): _ActivityProfile(float(share[a]), None if res is None else float(res[a]),
                                         None if hand is None else float(hand[a])) for a in share.index}

    def _effect(self, a: str, group: str, point: str, h1: np.ndarray, h0: np.ndarray, r1: np.ndarray,
                r0: np.ndarray, rng: np.random.Generator) -> ActionEffect:
        q = ((1.0 - self.level) / 2.0 * 100.0, (1.0 + self.level) / 2.0 * 100.0)
        i1 = rng.integers(0, len(h1), size=(self.n_boot, len(h1)), dtype=np.int32)
        i0 = rng.integers(0, len(h0), size=(self.n_boot, len(h0)), dtype=np.int32)
        dh = h1[i1].mean(axis=1) - h0[i0].mean(axis=1)
        dr = r1[i1].mean(axis=1) - r0[i0].mean(axis=1)
        lo_h, hi_h = np.percentile(dh, q)
        lo_r, hi_r = np.percentile(dr, q)
        return ActionEffect(
            activity=a, group=group, decision_point=point, n_with=len(h1), n_without=len(h0),
            hours_with=float(h1.mean()), hours_without=float(h0.mean()),
            hours_change=float(h1.mean() - h0.mean()), hours_ci=(float(lo_h), float(hi_h)),
            reopen_with=float(r1.mean()), reopen_without=float(r0.mean()),
            reopen_change=float(r1.mean() - r0.mean()), reopen_ci=(float(lo_r), float(hi_r)))

    # ------------------------------------------------------------------ use

    def _check(self) -> None:
        check_is_fitted(self, "table_", msg="%(name)s is not fitted; call fit(log) first")

    def is_action(self, activity: str) -> bool:
        """True when the log shows `activity` as an agent action (not a process state)."""
        self._check()
        return activity in set(self.actions_)

    def effect(self, activity: str, group: str | None) -> ActionEffect | None:
        """The action's effect among tickets of `group` (falls back to all tickets), or None when never measured."""
        self._check()
        key = self._match(activity)
        if key is None:
            return None
        if group is not None and (str(group), key) in self.table_:
            return self.table_[(str(group), key)]
        return self.table_.get((ALL, key))

    def _match(self, activity: str) -> str | None:
        if activity in self.decision_points_:
            return activity
        low = activity.strip().lower()
        return next((a for a in self.decision_points_ if a.lower() == low), None)

    def candidates(self, group: str | None) -> list[str]:
        """Actions measured for this group (else over all tickets), in name order."""
        self._check()
        have = {a for (g, a) in self.table_ if g == (str(group) if group is not None else ALL)}
        return sorted(have or {a for (g, a) in self.table_ if g == ALL})


@dataclass
class RankedAction:
    """An action with its mined effect, where it was drawn from and whether the evidence suffices."""

    activity: str
    sources: list[str] = field(default_factory=list)  # "guideline", "log"
    effect: ActionEffect | None = None
    enough: bool = False


def rank_by_effect(
    *,
    effects: ActionEffects,
    group: str | None,
    guideline: Sequence[str] = (),
    done: Sequence[str] = (),
    rule: EvidenceRule | None = None,
    demoted: Iterable[str] = (),
) -> list[RankedAction]:
    """Candidates from the guideline steps and the log's actions for the group, not yet done, ranked by effect.

    Only candidates whose effect meets `rule` come back, most hours saved first (ties: larger reopen reduction);
    `demoted` actions (agents rejected them) go after the others.
    """
    rule = rule or EvidenceRule()
    seen = {x.strip().lower() for x in done}
    cands: dict[str, RankedAction] = {}
    for a in guideline:
        if a.strip().lower() not in seen:
            cands.setdefault(a.strip().lower(), RankedAction(activity=a)).sources.append("guideline")
    for a in effects.candidates(group):
        if a.strip().lower() not in seen:
            r = cands.setdefault(a.strip().lower(), RankedAction(activity=a))
            if "log" not in r.sources:
                r.sources.append("log")
    out = []
    for r in cands.values():
        r.effect = effects.effect(r.activity, group)
        r.enough = r.effect is not None and effects.is_action(r.effect.activity) and rule.enough(r.effect)
        if r.enough:
            out.append(r)
    low = {d.strip().lower() for d in demoted}
    out.sort(key=lambda r: (r.activity.strip().lower() in low, r.effect.hours_change,  # type: ignore[union-attr]
                            r.effect.reopen_change))  # type: ignore[union-attr]
    return out
