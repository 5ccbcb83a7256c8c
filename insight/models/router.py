"""Resolving-team router: predicts the team that will resolve a ticket from what is known when it is created."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from core.errors import InvalidInput
from insight.models.split import cut_newest, validation_count
from insight.models.team_history import TeamHistory, fit_stack, stack_scores
from insight.models.values import key_values, number_value, text_value, texts_of, ticket_tfidf

logger = logging.getLogger(__name__)

_UNSEEN = "\x00deskpilot-unseen-value"

# Trivial rules (what a dispatcher could do without any model) and the learned strategies. The order is the
# preference on equal validation accuracy: the simplest strategy first.
RULE_MAJORITY_GIVEN_FIRST = "majority_given_first_team"
RULE_FIRST_TEAM = "first_team"
RULE_MAJORITY = "majority"
RULES = (RULE_MAJORITY_GIVEN_FIRST, RULE_FIRST_TEAM, RULE_MAJORITY)
MODEL = "model"
MODEL_RULE = "model+rule"
MODEL_HISTORY = "model+history"
MODEL_HISTORY_RULE = "model+history+rule"
STRATEGIES = (*RULES, MODEL, MODEL_RULE, MODEL_HISTORY, MODEL_HISTORY_RULE)
_AUTO = "auto"


class TeamRule(BaseEstimator):
    """A trivial routing rule fitted on past cases, with probabilities from its conditional frequencies.

    * ``majority``: the most frequent resolving team; probabilities = the teams' shares.
    * ``first_team``: stay with the first team; it gets the share of past cases that stayed, the rest is spread
      by the teams' shares (unknown or missing first team: the shares).
    * ``majority_given_first_team``: per first team, the team that most often resolved its cases;
      probabilities = (count + m x share) / (cases + m), the shares for a first team never seen.
    """

    def __init__(self, kind: str = RULE_MAJORITY_GIVEN_FIRST, *, smoothing: float = 1.0) -> None:
        self.kind = kind
        self.smoothing = smoothing

    def fit(self, first: Any, y: Any) -> TeamRule:
        """Learn from past first teams (None = unknown; ignored by ``majority``) and resolving teams."""
        if self.kind not in RULES:
            raise InvalidInput(f"unknown routing rule {self.kind!r}; known: {list(RULES)}", field="kind")
        y_arr = np.asarray(pd.Series(y, dtype=object).astype(str), dtype=object)
        if len(y_arr) == 0:
            raise InvalidInput("a routing rule needs at least one past case")
        self.classes_, yi = np.unique(y_arr, return_inverse=True)
        counts = np.bincount(yi, minlength=len(self.classes_)).astype(float)
        self.share_ = counts / counts.sum()
        self.majority_ = int(np.argmax(counts))
        self.pos_ = {str(c): i for i, c in enumerate(self.classes_)}
        self.table_: dict[str, np.ndarray] = {}
        self.stay_ = 0.0
        if self.kind != RULE_MAJORITY:
            f = _as_keys(first, len(y_arr))
            known = np.asarray([v is not None for v in f])
            self.stay_ = float(np.mean([a == b for a, b in zip(f, y_arr, strict=True) if a is not None])) \
                if known.any() else 0.0
            if self.kind == RULE_MAJORITY_GIVEN_FIRST:
                for v, t in zip(f, yi, strict=True):
                    if v is not None:
                        row = self.table_.get(v)
                        if row is None:
                            row = self.table_[v] = np.zeros(len(self.classes_))
                        row[t] += 1.0
        return self

    def proba(self, first: Any, n: int | None = None) -> np.ndarray:
        """Probability of each team (columns in ``classes_`` order) per row."""
        check_is_fitted(self, "share_")
        n = len(first) if n is None else n
        P = np.tile(self.share_, (n, 1))
        if self.kind == RULE_MAJORITY:
            return P
        m = self.smoothing
        for i, v in enumerate(_as_keys(first, n)):
            if v is None:
                continue
            if self.kind == RULE_FIRST_TEAM:
                p = self.pos_.get(v)
                if p is not None:
                    P[i] *= 1.0 - self.stay_
                    P[i, p] += self.stay_
            else:
                row = self.table_.get(v)
                if row is not None:
                    P[i] = (row + m * self.share_) / (row.sum() + m)
        return P

    def predict(self, first: Any, n: int | None = None) -> np.ndarray:
        """The rule's team per row (``first_team``: the first team itself, even one that never resolved a case)."""
        check_is_fitted(self, "share_")
        n = len(first) if n is None else n
        pred = np.asarray(self.classes_[np.argmax(self.proba(first, n), axis=1)], dtype=object)
        if self.kind == RULE_FIRST_TEAM:
            f = _as_keys(first, n)
            pred = np.asarray([v if v is not None else p for v, p in zip(f, pred, strict=True)], dtype=object)
        return pred

    def evidence(self, first: Any, classes: np.ndarray) -> np.ndarray:
        """(rows x classes x 2) evidence for stacking: log-lift of the rule's probability over the shares, and
        whether the first team is the class. Classes the rule never saw get no lift."""
        check_is_fitted(self, "share_")
        first_keys = _as_keys(first, None)
        n = len(first_keys)
        F = np.zeros((n, len(classes), 2))
        P = self.proba(first_keys, n) if self.kind == RULE_MAJORITY_GIVEN_FIRST else None
        idx = np.asarray([self.pos_.get(str(c), -1) for c in classes])
        ok = idx >= 0
        if P is not None:
            lift = np.log(P) - np.log(self.share_)[None, :]
            F[:, ok, 0] = lift[:, idx[ok]]
        pos = {str(c): i for i, c in enumerate(classes)}
        for i, v in enumerate(first_keys):
            p = pos.get(v) if v is not None else None
            if p is not None:
                F[i, p, 1] = 1.0
        return F


def _as_keys(values: Any, n: int | None) -> list[str | None]:
    """First-team values as strings (None = missing), spelled like the router's one-hot input."""
    if isinstance(values, list) and all(v is None or isinstance(v, str) for v in values):
        out = values
    else:
        col = pd.Series(values, dtype=object).astype("string")
        out = [None if v is pd.NA else str(v) for v in col]
    if n is not None and len(out) != n:
        raise InvalidInput(f"routing rule: {n} rows but {len(out)} first-team values")
    return out


def rule_predictions(train_first: Any, train_y: Any, first: Any) -> dict[str, np.ndarray]:
    """Each trivial rule fitted on (train_first, train_y), applied to the first teams `first`."""
    n = len(_as_keys(first, None))
    return {kind: TeamRule(kind).fit(train_first, train_y).predict(first, n) for kind in RULES}


def rule_accuracies(train_first: Any, train_y: Any, first: Any, y: Any) -> dict[str, float]:
    """Accuracy of each trivial rule fitted on (train_first, train_y) and scored on (first, y)."""
    y_arr = np.asarray(pd.Series(y, dtype=object).astype(str), dtype=object)
    if not len(y_arr):
        return {kind: 0.0 for kind in RULES}
    preds = rule_predictions(train_first, train_y, first)
    return {kind: float(np.mean(pred == y_arr)) for kind, pred in preds.items()}


@dataclass
class TeamScore:
    """One candidate team with its probability."""

    team: str
    probability: float


@dataclass
class RouterMetrics:
    """Accuracy of the router overall and on the cases that were reassigned in reality."""

    n_cases: int
    accuracy: float
    top3_accuracy: float
    n_reassigned: int
    accuracy_reassigned: float
    majority_accuracy: float
    first_team_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class RoutingImpact:
    """What routing with the model would have changed on the test cases that were reassigned in reality."""

    n_reassigned: int
    straight_to_resolver: int
    straight_to_resolver_share: float
    handoffs_in_reality: int
    handoffs_saved: int
    hours_per_misrouted_case: float | None
    hours_saved: float | None
    newly_misrouted: int
    newly_misrouted_share: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class TeamRouter(BaseEstimator):
    """One-hot case attributes + TF-IDF text -> multinomial logistic regression over resolving teams, or a
    trivial rule when the regression does not beat it.

    `C` is chosen on a validation slice (the newest `validation_fraction` of the training rows, which callers
    pass in time order) among `C_grid` (and, with `pair_features=None`, whether to add attribute pairs),
    then the model is refit on all training rows.

    Strategies (`strategy=None` chooses on the validation slice, preferring the simpler on equal accuracy):
    the rules ``majority_given_first_team``, ``first_team`` (stay) and ``majority`` (TeamRule; the first two
    need the column holding the first team, `first_team`), the regression alone (``model``), and the
    regression with stacked evidence: the rule's conditional distribution (``model+rule``), past resolutions
    (``model+history``), or both (``model+history+rule``). Validation accuracy of every candidate is kept in
    `candidate_scores_` and the winner in `strategy_`; stacked candidates are scored on 5 time-ordered folds
    of the validation rows (weights fitted on the other folds). A fixed `strategy` skips the choice.
    `keep_candidates=True` keeps every candidate servable after fitting (`candidate_proba`), to score them all.

    With `history=True`, past resolutions add class-aligned evidence (insight.models.team_history): per
    categorical attribute, which teams resolved earlier tickets with the same value (decayed counts as a lift
    over the prior, the most recent team, and whether the value names the team). `fit` then needs each row's
    creation and resolution time; the memory of resolutions is kept (`history_`) and grows with `observe()`.
    `live_memory` says how the deployment runs the memory and so how validation simulates it: True (the service
    feeds resolutions from ticket events to `observe()`, routing.live_memory) = each validation row sees the
    resolutions known before it was created; False (frozen: nothing calls `observe()` after training) = every
    validation row sees the resolutions known when the fitting rows end.
    """

    def __init__(
        self,
        *,
        categorical: list[str] | None = None,
        numeric: list[str] | None = None,
        text: str | None = None,
        C: float | None = None,
        C_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0),
        validation_fraction: float = 0.15,
        min_frequency: int = 2,
        max_text_features: int = 20000,
        pair_features: bool | None = True,
        max_iter: int = 300,
        seed: int = 7,
        history: bool = False,
        history_tau_days: float | None = 14.0,
        strategy: str | None = None,
        first_team: str | None = _AUTO,
        live_memory: bool = True,
        keep_candidates: bool = False,
    ) -> None:
        self.categorical = categorical
        self.numeric = numeric
        self.text = text
        self.C = C
        self.C_grid = C_grid
        self.validation_fraction = validation_fraction
        self.min_frequency = min_frequency
        self.max_text_features = max_text_features
        self.pair_features = pair_features
        self.max_iter = max_iter
        self.seed = seed
        self.history = history
        self.history_tau_days = history_tau_days
        self.strategy = strategy
        self.first_team = first_team
        self.live_memory = live_memory
        self.keep_candidates = keep_candidates

    def _columns(self, X: pd.DataFrame) -> tuple[list[str], list[str]]:
        cat = self.categorical
        num = self.numeric or []
        if cat is None:
            cat = [c for c in X.columns if c not in num and c != self.text]
        missing = [c for c in [*cat, *num, *([self.text] if self.text else [])] if c not in X.columns]
        if missing:
            raise InvalidInput(f"router input lacks column(s) {missing}; has {list(X.columns)}")
        return list(cat), list(num)

    def _cat_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X[self.cat_].astype("string").fillna("__missing__").astype(object)
        if self.pairs_ and len(self.cat_) >= 2:
            # Pairs of the first attributes let a linear model learn "this product in that country" style rules.
            first = self.cat_[: min(4, len(self.cat_))]
            for i, a in enumerate(first):
                for b in first[i + 1:]:
                    out[f"{a}*{b}"] = out[a] + "|" + out[b]
        return out

    def _design(self, X: pd.DataFrame, fit: bool = False) -> sparse.csr_matrix:
        cats = self._cat_frame(X)
        parts = []
        if fit:
            self.onehot_ = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=self.min_frequency,
                                         sparse_output=True)
            parts.append(self.onehot_.fit_transform(cats))
        else:
            parts.append(self.onehot_.transform(cats))
        if self.num_:
            vals = X[self.num_].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            if fit:
                self.num_mean_ = np.nanmean(vals, axis=0)
                self.num_std_ = np.nanstd(vals, axis=0) + 1e-9
            vals = np.nan_to_num((vals - self.num_mean_) / self.num_std_)
            parts.append(sparse.csr_matrix(vals))
        if self.text:
            vectorizer, words = ticket_tfidf(texts_of(X, self.text), fitted=None if fit else self.tfidf_,
                                             max_features=self.max_text_features)
            if fit:
                self.tfidf_: TfidfVectorizer = vectorizer
            parts.append(words)
        return sparse.hstack(parts).tocsr()

    # ---- small inputs (live triage): _design's matrix from plain dicts, without pandas and sklearn's checks.
    # It must mirror _cat_frame / _design; tests/insight/test_router_fast_path.py compares the two.

    def _onehot_index(self) -> tuple[list[dict[str, int]], list[int | None], int] | None:
        """Per one-hot input column: value -> output column, the column unseen values go to, and the width."""
        cached = getattr(self, "_onehot_cache", None)
        if cached is not None and cached[0] is self.onehot_:
            return cached[1]  # type: ignore[no-any-return]
        enc = self.onehot_
        index: tuple[list[dict[str, int]], list[int | None], int] | None = None
        if getattr(enc, "drop_idx_", None) is None:
            # Ask the fitted encoder itself where each category goes (infrequent ones share a column), once.
            cats = [[str(c) for c in cs] for cs in enc.categories_]
            names = list(enc.feature_names_in_)
            n = max(len(c) for c in cats)
            columns = {name: [c[min(r, len(c) - 1)] for r in range(n)] for name, c in zip(names, cats, strict=True)}
            probe = pd.DataFrame(columns, dtype=object)
            M = enc.transform(probe).tocsr()
            maps: list[dict[str, int]] = [{} for _ in names]
            for r in range(n):
                cols = M.indices[M.indptr[r]:M.indptr[r + 1]]
                for f, col in enumerate(sorted(int(c) for c in cols)):
                    maps[f][cats[f][min(r, len(cats[f]) - 1)]] = col
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "unknown categories ... encoded as all zeros" is what we ask for
                U = enc.transform(pd.DataFrame({name: [_UNSEEN] for name in names}, dtype=object)).tocsr()
            unseen: list[int | None] = [None] * len(names)
            for col in U.indices:
                for f, m in enumerate(maps):
                    if min(m.values()) <= col <= max(m.values()):
                        unseen[f] = int(col)
            index = (maps, unseen, int(M.shape[1]))
        self._onehot_cache = (self.onehot_, index)
        return index

    def feature_columns(self) -> list[str]:
        """The input columns the fitted router reads: categorical, numeric, then the text column."""
        check_is_fitted(self, "cat_")
        return [*self.cat_, *self.num_, *([self.text] if self.text else [])]

    def _design_rows(self, rows: Sequence[Mapping[str, Any]]) -> sparse.csr_matrix:
        """The design matrix of records (column -> value; absent = missing), equal to _design of their frame."""
        index = self._onehot_index()
        if index is None:
            cols = self.feature_columns()
            return self._design(pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols))
        maps, unseen, width = index
        indptr = [0]
        indices: list[int] = []
        n_first = min(4, len(self.cat_)) if self.pairs_ and len(self.cat_) >= 2 else 0
        for row in rows:
            texts = [text_value(row.get(c)) for c in self.cat_]
            values = ["__missing__" if t is None else t for t in texts]
            first = values[:n_first]
            values += [a + "|" + b for i, a in enumerate(first) for b in first[i + 1:]]
            for f, v in enumerate(values):
                col = maps[f].get(v, unseen[f])
                if col is not None:
                    indices.append(col)
            indptr.append(len(indices))
        parts = [sparse.csr_matrix((np.ones(len(indices)), np.asarray(indices, dtype=np.int32),
                                    np.asarray(indptr, dtype=np.int32)), shape=(len(rows), width))]
        if self.num_:
            vals = np.asarray([[number_value(r.get(c)) for c in self.num_] for r in rows], dtype=float)
            vals = np.nan_to_num((vals.reshape(len(rows), len(self.num_)) - self.num_mean_) / self.num_std_)
            parts.append(sparse.csr_matrix(vals))
        if self.text:
            parts.append(self.tfidf_.transform(texts_of(rows, self.text)))
        return sparse.hstack(parts).tocsr()

    def _model(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter, random_state=self.seed, tol=1e-4)

    def _first_team_column(self, X: pd.DataFrame, y: np.ndarray) -> str | None:
        """The categorical column holding the first team: as given, or (``auto``) the one whose values name a
        resolving team most often (at least half the rows); None when there is none."""
        if self.first_team != _AUTO:
            if self.first_team is not None and self.first_team not in self.cat_:
                raise InvalidInput(f"first_team column {self.first_team!r} is not among the categorical features "
                                   f"{self.cat_}", field="first_team")
            return self.first_team
        names = set(str(v) for v in y)
        share = {k: float(X[k].astype("string").isin(names).mean()) for k in self.cat_}
        best = max(share, key=lambda k: share[k], default=None)
        return best if best is not None and share[best] >= 0.5 else None

    def _first_values(self, X: pd.DataFrame | Sequence[Mapping[str, Any]]) -> list[str | None]:
        key = self.first_team_
        if key is None:
            return [None] * len(X)
        return key_values(X, [key])[0]

    def _rule_kind(self, strategy: str) -> str | None:
        """The rule a strategy serves or stacks (None = no rule)."""
        if strategy in RULES:
            return strategy
        return RULE_MAJORITY_GIVEN_FIRST if strategy.endswith("+rule") else None

    def _candidates(self) -> list[str]:
        """Strategies this router can serve, given its first-team column and history setting."""
        has_first = self.first_team_ is not None
        out = [s for s in STRATEGIES if s not in (RULE_FIRST_TEAM, RULE_MAJORITY_GIVEN_FIRST) or has_first]
        if not has_first:
            out = [s for s in out if not s.endswith("+rule")]
        if not self.history:
            out = [s for s in out if "history" not in s]
        return out

    def fit(self, X: pd.DataFrame, y: Any, *, created_at: Any = None, resolved_at: Any = None) -> TeamRouter:
        """Fit on creation-time attributes `X` (rows in time order) and resolving teams `y`.

        With `history=True`, `created_at` and `resolved_at` (when each row's resolving team became known) are
        required: the validation rows' history features use only resolutions known before the fitting rows end
        (or, with `live_memory`, before each row's creation).
        """
        y_arr = np.asarray(pd.Series(y).astype(str), dtype=object)
        if len(y_arr) != len(X):
            raise InvalidInput(f"router fit: {len(X)} rows of features but {len(y_arr)} labels")
        if len(y_arr) == 0:
            raise InvalidInput("router fit: no rows")
        self.cat_, self.num_ = self._columns(X)
        X = X.reset_index(drop=True)
        self.__dict__.pop("match_keys_", None)  # a refit chooses them again
        self.first_team_ = self._first_team_column(X, y_arr)
        candidates = self._candidates()
        if self.strategy is not None and self.strategy not in candidates:
            why = ("it needs history=True" if "history" in self.strategy and self.strategy in STRATEGIES else
                   "it needs a first-team column" if self.strategy in STRATEGIES else f"known: {list(STRATEGIES)}")
            raise InvalidInput(f"router strategy {self.strategy!r} cannot be used: {why}", field="strategy")
        if self.history:
            if created_at is None or resolved_at is None:
                raise InvalidInput("router fit with history=True needs created_at and resolved_at per row")
            created = pd.Series(created_at).to_numpy(dtype=object)
            if len(created) != len(X) or len(resolved_at) != len(X):
                raise InvalidInput(f"router fit: {len(X)} rows but {len(created)} created_at / "
                                   f"{len(resolved_at)} resolved_at values")
            memory = TeamHistory(self.cat_, tau_days=self.history_tau_days).fit(X, y_arr, resolved_at)
        self.stack_w_: np.ndarray | None = None
        self.validation_scores_: dict[str, float] = {}
        self.candidate_scores_: dict[str, float] = {}
        self.pairs_ = bool(self.pair_features) if self.pair_features is not None else True
        # C and (when pair_features is None) the attribute pairs are chosen on the newest training rows only.
        c_grid = list(self.C_grid) if self.C is None else [self.C]
        pair_grid = [True, False] if self.pair_features is None else [bool(self.pair_features)]
        n_val = validation_count(len(X), self.validation_fraction)
        best = (c_grid[len(c_grid) // 2], pair_grid[0])
        fixed = self.strategy
        needs_lr = fixed is None or fixed not in RULES
        stacked_wanted = [s for s in candidates if "+" in s and (fixed is None or s == fixed)]
        weights: dict[str, np.ndarray] = {}
        if n_val >= 20 and (fixed is None or (needs_lr and (len(c_grid) * len(pair_grid) > 1 or stacked_wanted))):
            fit_X, val_X = cut_newest(X, n_val)
            fit_y, val_y = cut_newest(y_arr, n_val)
            first_fit, first_val = self._first_values(fit_X), self._first_values(val_X)
            if fixed is None:
                for kind in (s for s in candidates if s in RULES):
                    pred = TeamRule(kind).fit(first_fit, fit_y).predict(first_val, n_val)
                    # A first team that never resolved a case cannot be served (not a class): scored as a miss.
                    self.candidate_scores_[kind] = float(np.mean(pred == val_y))
            scored: dict[tuple[float, bool], float] = {}
            val_proba: dict[tuple[float, bool], tuple[np.ndarray, np.ndarray]] = {}
            if needs_lr:
                for pairs in pair_grid:
                    self.pairs_ = pairs
                    A = self._design(fit_X, fit=True)
                    B = self._design(val_X)
                    for c in c_grid:
                        m = self._model(c).fit(A, fit_y)
                        P = np.asarray(m.predict_proba(B))
                        classes = np.asarray(m.classes_, dtype=object)
                        scored[(c, pairs)] = float(np.mean(classes[np.argmax(P, axis=1)] == val_y))
                        if stacked_wanted:
                            val_proba[(c, pairs)] = (P, classes)
                        self.validation_scores_[f"C={c},pairs={pairs}"] = scored[(c, pairs)]
                best = max(scored, key=lambda k: (scored[k], -k[0], not k[1]))
                self.candidate_scores_[MODEL] = scored[best]
            if stacked_wanted and best in val_proba:
                P, classes = val_proba[best]
                pos = {c: i for i, c in enumerate(classes)}
                yi = np.asarray([pos.get(v, -1) for v in val_y])
                keep = yi >= 0
                log_p = np.log(np.clip(P, 1e-12, None))
                parts: dict[str, np.ndarray] = {}
                if self.history:
                    self.match_keys_ = self._match_keys(X, classes)
                    # Frozen memory: every validation row asks as of the last fitting row's creation.
                    at = created[-n_val:] if self.live_memory else np.repeat(created[-n_val - 1], n_val)
                    parts["history"] = memory.features(val_X, classes, self._prior(fit_y, classes), at=at,
                                                       match_keys=self.match_keys_)
                if self.first_team_ is not None:
                    parts["rule"] = TeamRule(RULE_MAJORITY_GIVEN_FIRST).fit(first_fit, fit_y).evidence(
                        first_val, classes)
                for strat in stacked_wanted:
                    F = np.concatenate([parts[name] for name in strat.split("+")[1:]], axis=2)
                    # Honest validation figure of the combination: 5 time-ordered folds of the validation rows.
                    hits = 0
                    for fold in np.array_split(np.arange(n_val), 5):
                        rest = np.setdiff1d(np.flatnonzero(keep), fold)
                        w = fit_stack(log_p[rest], F[rest], yi[rest])
                        hits += int(np.sum(np.argmax(stack_scores(log_p[fold], F[fold], w), axis=1) == yi[fold]))
                    self.candidate_scores_[strat] = hits / n_val
                    weights[strat] = fit_stack(log_p[keep], F[keep], yi[keep])
        C, self.pairs_ = best
        self.C_ = float(C)
        if fixed is not None:
            chosen = fixed if (fixed in RULES or "+" not in fixed or fixed in weights) else MODEL
        elif self.candidate_scores_:
            order = {s: i for i, s in enumerate(STRATEGIES)}
            chosen = max(self.candidate_scores_, key=lambda s: (self.candidate_scores_[s], -order[s]))
        else:
            chosen = MODEL  # too few rows to validate anything: the regression
        self.strategy_ = chosen
        if chosen in weights:
            self.stack_w_ = weights[chosen]
        if chosen in RULES and self.candidate_scores_:
            learned = {s: v for s, v in self.candidate_scores_.items() if s not in RULES}
            if learned:
                logger.warning("router: no learned strategy beat the rule %r on validation (%.4f vs %s %.4f); "
                               "serving the rule", chosen, self.candidate_scores_[chosen],
                               max(learned, key=lambda s: learned[s]), max(learned.values()))
        rule_kind = self._rule_kind(chosen)
        kinds = {rule_kind} if rule_kind is not None else set()
        self.candidate_weights_ = dict(weights) if self.keep_candidates else {}
        if self.keep_candidates:
            kinds |= {k for k in candidates if k in RULES}
            kinds |= {k for s in candidates if (k := self._rule_kind(s)) is not None}
        first_all = self._first_values(X)
        self.rules_ = {k: TeamRule(k).fit(first_all, y_arr) for k in sorted(kinds)}
        self.rule_ = self.rules_.get(rule_kind) if rule_kind is not None else None
        self.model_: Any = None
        if chosen not in RULES or self.keep_candidates:
            self.model_ = self._model(self.C_).fit(self._design(X, fit=True), y_arr)
            self.classes_ = np.asarray(self.model_.classes_, dtype=object)
        else:
            self.classes_ = np.asarray(self.rule_.classes_, dtype=object)  # type: ignore[union-attr]
        self.prior_ = self._prior(y_arr, self.classes_)
        if self.history:
            if not hasattr(self, "match_keys_"):
                self.match_keys_ = self._match_keys(X, self.classes_)
            self.history_ = memory
        return self

    # ---- history (insight.models.team_history): memory of resolutions and the stacked probabilities.

    def _match_keys(self, X: pd.DataFrame, classes: np.ndarray) -> list[str]:
        """Categorical columns whose values mostly name a team (e.g. the first assigned team)."""
        names = set(str(c) for c in classes)
        return [k for k in self.cat_ if X[k].astype("string").isin(names).mean() >= 0.5]

    @staticmethod
    def _prior(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        share = pd.Series(y).astype(str).value_counts(normalize=True)
        return np.asarray(share.reindex([str(c) for c in classes]).fillna(0.0), dtype=float) + 1e-6

    def _strategy(self) -> str:
        return str(self.strategy_)

    def _stacked(self, P: np.ndarray, X: pd.DataFrame | Sequence[Mapping[str, Any]], at: Any,
                 strategy: str | None = None) -> np.ndarray:
        """The regression's probabilities combined with the stacked evidence (unchanged without any)."""
        strategy = strategy or self._strategy()
        w = self.stack_w_ if strategy == self._strategy() else self.candidate_weights_.get(strategy)
        if w is None or len(P) == 0:
            return P
        parts = []
        for name in strategy.split("+")[1:]:
            if name == "history":
                parts.append(self.history_.features(X, self.classes_, self.prior_, at=at,
                                                    match_keys=self.match_keys_))
            elif name == "rule":
                parts.append(self.rules_[RULE_MAJORITY_GIVEN_FIRST].evidence(self._first_values(X), self.classes_))
        F = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        return stack_scores(np.log(np.clip(P, 1e-12, None)), F, w)

    def _proba_of(self, X: pd.DataFrame | Sequence[Mapping[str, Any]], at: Any,
                  design: sparse.csr_matrix | None = None, strategy: str | None = None) -> np.ndarray:
        """Probabilities of the chosen (or the given) strategy for a frame (index reset) or records."""
        strategy = strategy or self._strategy()
        if strategy in RULES:
            return self.rules_[strategy].proba(self._first_values(X), len(X))
        if design is None:
            design = self._design(X) if isinstance(X, pd.DataFrame) else self._design_rows(X)
        return self._stacked(np.asarray(self.model_.predict_proba(design)), X, at, strategy)

    def candidate_proba(self, X: pd.DataFrame, strategy: str, *, at: Any = None) -> np.ndarray:
        """Probabilities of any validated candidate (fitted with `keep_candidates=True`), columns in `classes_`
        order; for scoring every candidate on the same test cases."""
        self._check()
        ok = strategy == self._strategy() or (
            (strategy in self.rules_ or strategy == MODEL or strategy in self.candidate_weights_)
            and self.model_ is not None)
        if not ok:
            raise InvalidInput(f"candidate {strategy!r} is not kept by this router (fit with keep_candidates=True; "
                               f"validated: {sorted(self.candidate_scores_)})", field="strategy")
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        return self._proba_of(X.reset_index(drop=True), at, strategy=strategy)

    @property
    def uses_memory(self) -> bool:
        """True when the served strategy reads the memory of resolutions (what `observe()` changes)."""
        return hasattr(self, "classes_") and "history" in self._strategy()

    def observe(self, X: pd.DataFrame | Sequence[Mapping[str, Any]], teams: Any, resolved_at: Any) -> TeamRouter:
        """Record resolved tickets (attributes, resolving team, when it became known) for the history evidence.

        Accepted whenever the router was fitted with history; it changes predictions only when the served
        strategy stacks the history evidence (`uses_memory`)."""
        self._check()
        if not self.history:
            raise InvalidInput("this router was fitted without history; observe() has nothing to update")
        self.history_.observe(X, teams, resolved_at)
        return self

    def _check(self) -> None:
        check_is_fitted(self, "classes_", msg="%(name)s is not fitted; call fit(X, y) first")

    def predict_proba(self, X: pd.DataFrame, *, at: Any = None) -> np.ndarray:
        """Probability of each team (columns in `classes_` order).

        `at`: each row's creation time, for the history evidence (only resolutions known before it count);
        None = as of the newest resolution the router has seen. Ignored without history.
        """
        self._check()
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        return self._proba_of(X.reset_index(drop=True), at)

    def predict(self, X: pd.DataFrame, *, at: Any = None) -> np.ndarray:
        """Most likely resolving team per row."""
        self._check()
        return self.classes_[np.argmax(self.predict_proba(X, at=at), axis=1)]

    def top_k(self, X: pd.DataFrame, k: int = 3) -> list[list[TeamScore]]:
        """The k most likely teams per row with their probabilities, best first."""
        return self.rank(X, k=k, n_reasons=0)[0]

    def _feature_names(self) -> np.ndarray:
        # Built once per model (the text vocabulary alone can hold 20k names).
        names = getattr(self, "design_names_", None)
        if names is None:
            parts = [np.asarray(self.onehot_.get_feature_names_out(), dtype=object),
                     np.asarray(self.num_, dtype=object)]
            if self.text:
                parts.append(np.asarray([f"text:{w}" for w in self.tfidf_.get_feature_names_out()], dtype=object))
            names = np.concatenate(parts)
            self.design_names_ = names
        return names

    def rank(self, X: pd.DataFrame | Sequence[Mapping[str, Any]], *, k: int = 3,
             n_reasons: int = 3, at: Any = None) -> tuple[list[list[TeamScore]], list[list[str]]]:
        """Top-k teams per row and the features that pushed hardest towards the best one (one design matrix).

        `X` is a frame or, cheaper for a few rows, a list of records (column -> value) giving the same matrix.
        """
        self._check()
        if len(X) == 0:
            return [], []
        rows = X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else X
        if self._strategy() in RULES:
            return self._rank_rule(rows, k=k, n_reasons=n_reasons)
        design = self._design(rows) if isinstance(rows, pd.DataFrame) else self._design_rows(rows)
        P = self._proba_of(rows, at, design)
        tops: list[list[TeamScore]] = []
        reasons: list[list[str]] = []
        names = self._feature_names() if n_reasons > 0 else None
        coef = np.asarray(self.model_.coef_)
        for r, row in enumerate(P):
            idx = np.argsort(-row, kind="stable")[:k]
            tops.append([TeamScore(team=str(self.classes_[i]), probability=float(row[i])) for i in idx])
            if names is None:
                reasons.append([])
                continue
            x = design.getrow(r)
            w = coef[idx[0]] if coef.shape[0] > 1 else coef[0] * (1 if idx[0] == 1 else -1)
            contrib = x.data * w[x.indices]
            order = np.argsort(-contrib, kind="stable")[:n_reasons]
            reasons.append([str(names[x.indices[j]]) for j in order if contrib[j] > 0])
        return tops, reasons

    def _rank_rule(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], *, k: int,
                   n_reasons: int) -> tuple[list[list[TeamScore]], list[list[str]]]:
        """rank() of a router serving a rule: the rule's probabilities; the reason is the first team it read."""
        first = self._first_values(rows)
        P = self.rule_.proba(first, len(first))  # type: ignore[union-attr]
        tops = [[TeamScore(team=str(self.classes_[i]), probability=float(row[i]))
                 for i in np.argsort(-row, kind="stable")[:k]] for row in P]
        reasons = [[f"{self.first_team_}={v}"] if n_reasons > 0 and v is not None and self.first_team_ else []
                   for v in first]
        return tops, reasons

    def explain(self, X: pd.DataFrame, k: int = 3) -> list[list[str]]:
        """Names of the k features contributing most to the predicted team, per row."""
        return self.rank(X, k=1, n_reasons=k)[1]

    def evaluate(self, X: pd.DataFrame, y: Any, *, reassigned: Any, first_team: Any = None,
                 train_y: Any = None, at: Any = None) -> RouterMetrics:
        """Accuracy overall, top-3, on reassigned cases, and the majority / first-team baselines."""
        y_arr = np.asarray(pd.Series(y).astype(str), dtype=object)
        re = np.asarray(reassigned, dtype=bool)
        P = self.predict_proba(X, at=at)
        pred = self.classes_[np.argmax(P, axis=1)]
        top3 = self.classes_[np.argsort(-P, axis=1)[:, :3]]
        ref = pd.Series(train_y if train_y is not None else y_arr).astype(str)
        majority = ref.value_counts().index[0]
        ft = None
        if first_team is not None:
            ft = float(np.mean(np.asarray(pd.Series(first_team).astype(str), dtype=object) == y_arr))
        return RouterMetrics(
            n_cases=len(y_arr),
            accuracy=float(np.mean(pred == y_arr)) if len(y_arr) else 0.0,
            top3_accuracy=float(np.mean([t in row for t, row in zip(y_arr, top3, strict=True)])) if len(y_arr) else 0.0,
            n_reassigned=int(re.sum()),
            accuracy_reassigned=float(np.mean(pred[re] == y_arr[re])) if re.any() else 0.0,
            majority_accuracy=float(np.mean(y_arr == majority)) if len(y_arr) else 0.0,
            first_team_accuracy=ft,
        )


def routing_impact(
    *,
    predicted: Any,
    resolving_team: Any,
    reassignments: Any,
    hours_per_misrouted_case: float | None,
) -> RoutingImpact:
    """On cases reassigned in reality: how many the model sends straight to the resolver, handoffs and hours saved.

    Hours saved = cases sent straight to the resolver x the mining's mean extra time of a misrouted case.
    `newly_misrouted` counts cases handled by one team in reality that the model would send elsewhere.
    """
    pred = np.asarray(pd.Series(predicted).astype(str), dtype=object)
    true = np.asarray(pd.Series(resolving_team).astype(str), dtype=object)
    hops = np.nan_to_num(np.asarray(pd.to_numeric(pd.Series(reassignments), errors="coerce"), dtype=float))
    re = hops > 0
    hit = re & (pred == true)
    n_re = int(re.sum())
    straight = int(hit.sum())
    not_re = ~re
    newly = int((not_re & (pred != true)).sum())
    return RoutingImpact(
        n_reassigned=n_re,
        straight_to_resolver=straight,
        straight_to_resolver_share=straight / n_re if n_re else 0.0,
        handoffs_in_reality=int(hops[re].sum()),
        handoffs_saved=int(hops[hit].sum()),
        hours_per_misrouted_case=hours_per_misrouted_case,
        hours_saved=None if hours_per_misrouted_case is None else float(straight * hours_per_misrouted_case),
        newly_misrouted=newly,
        newly_misrouted_share=newly / int(not_re.sum()) if not_re.any() else 0.0,
    )
