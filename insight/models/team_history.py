"""What past resolutions say about a new ticket: per attribute value, which teams resolved earlier tickets.

The router (insight.models.router) adds these as class-aligned evidence on top of its logistic regression:
for a ticket created at time t and each key attribute (caller, opener, category, first team, ...), the teams
that resolved earlier tickets with the same value, counting only tickets whose resolution was known strictly
before t, with exponentially decaying weights (half-life = tau_days x ln 2). Per key and team the features are

* lift: log((decayed count of the team + m * prior) / (decayed total + m)) - log(prior)  (0 without history),
* last: 1 if the team resolved the most recent such ticket,
* match: 1 if the key's value IS the team's name (for keys holding team names, e.g. the first assigned team).

`TeamHistory` is the memory of resolutions (time, key values, team). It is fitted state, updated with
`observe()` as tickets get resolved; `features()` answers for any query times, so a batch of historical
tickets is scored exactly as a live system would have seen them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidInput
from insight.models.values import key_values

_DAY_NS = 86400 * 1_000_000_000


def to_days(values: Any, *, what: str) -> np.ndarray:
    """Datetimes (any pandas-readable form, naive = UTC) as float days since the epoch; NaT is an error."""
    ts = pd.to_datetime(pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values,
                        utc=True, errors="coerce")
    if ts.isna().any():
        bad = int(ts.isna().sum())
        raise InvalidInput(f"{what}: {bad} value(s) are missing or not readable as dates", field=what)
    return np.asarray(ts.astype("datetime64[ns, UTC]").astype("int64"), dtype=np.float64) / _DAY_NS


class TeamHistory(BaseEstimator):
    """Memory of resolved tickets (when the team was known, key values, team) and the features it gives.

    `fit` starts the memory from resolved tickets; `observe` adds more (starting an empty memory when none
    exists yet).
    """

    def __init__(self, keys: Sequence[str] = (), *, tau_days: float | None = 14.0, smoothing: float = 1.0) -> None:
        self.keys = keys
        self.tau_days = tau_days
        self.smoothing = smoothing

    def __len__(self) -> int:
        return len(self.time_) if hasattr(self, "time_") else 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_latest"] = state["_memo"] = None  # caches, rebuilt on the first live query
        return state

    def _start(self) -> None:
        """An empty memory over `keys`."""
        if self.tau_days is not None and not self.tau_days > 0:
            raise InvalidInput(f"tau_days must be > 0 or None, got {self.tau_days}", field="tau_days")
        self.keys_ = list(self.keys)
        self.time_ = np.zeros(0)
        self.values_: list[np.ndarray] = [np.zeros(0, dtype=object) for _ in self.keys_]
        self.team_ = np.zeros(0, dtype=object)
        self._latest: tuple[float, list[dict[str, tuple[dict[str, float], str, float]]]] | None = None
        self._memo: tuple[Any, dict[tuple[int, str], tuple[np.ndarray, int | None]]] | None = None

    def fit(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], teams: Any, resolved_at: Any) -> TeamHistory:
        """Start the memory from resolved tickets (forgetting any earlier ones); see `observe`."""
        self._start()
        return self.observe(rows, teams, resolved_at)

    def observe(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], teams: Any, resolved_at: Any) -> TeamHistory:
        """Add resolved tickets: their key values, resolving team and when that team became known."""
        if not hasattr(self, "time_"):
            self._start()
        team = np.asarray(pd.Series(teams, dtype=object).astype(str), dtype=object)
        when = to_days(resolved_at, what="resolved_at")
        if not len(team) == len(when) == len(rows):
            raise InvalidInput(f"observe: {len(rows)} rows, {len(team)} teams, {len(when)} resolution times")
        vals = key_values(rows, self.keys_)
        time = np.concatenate([self.time_, when])
        order = np.argsort(time, kind="stable")
        self.time_ = time[order]
        self.team_ = np.concatenate([self.team_, team])[order]
        self.values_ = [np.concatenate([old, np.asarray(v, dtype=object)])[order]
                        for old, v in zip(self.values_, vals, strict=True)]
        self._latest = self._memo = None
        return self

    @property
    def latest(self) -> float | None:
        """Time (days since the epoch) of the newest resolution in memory."""
        return float(self.time_[-1]) if len(self) else None

    def _weight(self, t: float, ref: float) -> float:
        return 1.0 if self.tau_days is None else float(np.exp(np.clip((t - ref) / self.tau_days, -700, 700)))

    def _add(self, state: list[dict[str, tuple[dict[str, float], str, float]]], j: int, ref: float) -> None:
        w = self._weight(self.time_[j], ref)
        team = self.team_[j]
        for f in range(len(self.keys_)):
            v = self.values_[f][j]
            if v is None:
                continue
            got = state[f].get(v)
            counts = got[0] if got is not None else {}
            counts[team] = counts.get(team, 0.0) + w
            state[f][v] = (counts, team, float(self.time_[j]))

    def features(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], classes: np.ndarray, prior: np.ndarray,
                 *, at: Any = None, match_keys: Sequence[str] = ()) -> np.ndarray:
        """(rows x classes x features): per key lift and last (+ match for `match_keys`), as of each row's `at`.

        `at` (creation times) sees only resolutions strictly before it; None = as of the newest resolution in
        memory (every resolution counts), which is what a live ticket gets.
        """
        check_is_fitted(self, "time_", msg="%(name)s is empty; call fit or observe first")
        n, K = len(rows), len(classes)
        pos = {str(c): i for i, c in enumerate(classes)}
        vals = key_values(rows, self.keys_)
        nf = 2 * len(self.keys_) + len(match_keys)
        F = np.zeros((n, K, nf))
        log_prior = np.log(prior)
        m = self.smoothing
        newest = self.latest
        if at is None:
            q = np.full(n, np.inf)
        else:
            q = to_days(at, what="at")
            if len(q) != n:
                raise InvalidInput(f"features: {n} rows but {len(q)} times in `at`")
        if newest is not None and np.all(q > newest):
            # Every query is after every resolution: one state of the whole memory (live tickets), cached.
            if self._latest is None:
                state: list[dict[str, tuple[dict[str, float], str, float]]] = [{} for _ in self.keys_]
                for j in range(len(self.time_)):
                    self._add(state, j, newest)
                self._latest = (newest, state)
            ref, state = self._latest
            memo = None
            if at is None:  # live tickets: per value the same answer every time, kept until the next observe()
                key = (tuple(pos), prior.tobytes(), m)
                if self._memo is None or self._memo[0] != key:
                    self._memo = (key, {})
                memo = self._memo[1]
            for i in np.argsort(q, kind="stable"):
                scale = 1.0 if np.isinf(q[i]) else self._weight(ref, q[i])  # decay from the newest resolution
                self._row(F[i], state, vals, i, pos, log_prior, m, scale, match_keys, memo)
            return F
        finite = q[np.isfinite(q)]
        ref = float(np.min(finite)) if len(finite) else (newest or 0.0)
        state = [{} for _ in self.keys_]
        p = 0
        for i in np.argsort(q, kind="stable"):
            while p < len(self.time_) and self.time_[p] < q[i]:  # strictly earlier
                self._add(state, p, ref)
                p += 1
            self._row(F[i], state, vals, i, pos, log_prior, m, self._weight(ref, q[i]), match_keys)
        return F

    def _row(self, out: np.ndarray, state: list[dict[str, tuple[dict[str, float], str, float]]],
             vals: list[list[str | None]], i: int, pos: dict[str, int], log_prior: np.ndarray, m: float,
             scale: float, match_keys: Sequence[str],
             memo: dict[tuple[int, str], tuple[np.ndarray, int | None]] | None = None) -> None:
        K = len(log_prior)
        for f in range(len(self.keys_)):
            v = vals[f][i]
            if v is None:
                continue
            hit = memo.get((f, v)) if memo is not None else None
            if hit is None:
                got = state[f].get(v)
                if got is None:
                    continue
                counts, last, _ = got
                row = np.zeros(K)
                for team, c in counts.items():
                    p = pos.get(team)
                    if p is not None:
                        row[p] = c * scale
                total = sum(counts.values()) * scale
                hit = (np.log((row + m * np.exp(log_prior)) / (total + m)) - log_prior, pos.get(last))
                if memo is not None:
                    memo[(f, v)] = hit
            out[:, 2 * f] = hit[0]
            if hit[1] is not None:
                out[hit[1], 2 * f + 1] = 1.0
        for g, key in enumerate(match_keys):
            v = vals[self.keys_.index(key)][i]
            p = pos.get(v) if v is not None else None
            if p is not None:
                out[p, 2 * len(self.keys_) + g] = 1.0


def stack_scores(log_p: np.ndarray, F: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Probabilities from the LR's log-probabilities and the history features, weighted by `w`."""
    S = w[0] * log_p + F @ w[1:]
    S = S - S.max(axis=1, keepdims=True)
    E = np.exp(S)
    return np.asarray(E / E.sum(axis=1, keepdims=True))


def fit_stack(log_p: np.ndarray, F: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> np.ndarray:
    """Weights of [LR log-probability, history features] maximising the likelihood of `y` (class indices)."""
    G = np.concatenate([log_p[:, :, None], F], axis=2)
    n = len(y)
    rows = np.arange(n)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        S = G @ w
        S = S - S.max(axis=1, keepdims=True)
        E = np.exp(S)
        Z = E.sum(axis=1)
        P = E / Z[:, None]
        reg = w[1:]
        value = -float(np.mean(S[rows, y] - np.log(Z))) + l2 * float(reg @ reg)
        grad = -(G[rows, y] - np.einsum("nk,nkd->nd", P, G)).mean(axis=0)
        grad[1:] += 2 * l2 * reg
        return value, grad

    w0 = np.zeros(G.shape[2])
    w0[0] = 1.0
    return np.asarray(minimize(loss, w0, jac=True, method="L-BFGS-B").x)
