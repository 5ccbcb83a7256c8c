"""N-gram back-off next-activity baseline: the most frequent follower of the longest context seen often enough."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from insight.models.prefix_features import END


class NGramBackoff(BaseEstimator):
    """Predicts the next activity from the last n-1 activities, backing off to shorter contexts (a scikit-learn estimator)."""

    def __init__(self, *, n: int = 4, min_count: int = 2) -> None:
        self.n = n
        self.min_count = min_count

    def fit(self, prefixes: Sequence[Sequence[str]], targets: Sequence[str]) -> NGramBackoff:
        """Count followers of every context length 0..n-1 over (prefix, next) pairs."""
        tables: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        for seq, y in zip(prefixes, targets, strict=True):
            seq = tuple(seq)
            for k in range(0, self.n):
                if k > len(seq):
                    break
                tables[seq[len(seq) - k:] if k else ()][str(y)] += 1
        self.tables_ = dict(tables)
        self.classes_ = np.array(sorted({str(y) for y in targets} | {END}), dtype=object)
        return self

    def _dist(self, seq: Sequence[str]) -> Counter[str]:
        check_is_fitted(self, "tables_", msg="%(name)s is not fitted; call fit first")
        seq = tuple(seq)
        for k in range(min(self.n - 1, len(seq)), -1, -1):
            ctx = seq[len(seq) - k:] if k else ()
            c = self.tables_.get(ctx)
            if c is not None and (sum(c.values()) >= self.min_count or k == 0):
                return c
        return Counter({END: 1})

    def predict(self, prefixes: Sequence[Sequence[str]]) -> np.ndarray:
        """Most likely next activity per prefix (ties broken alphabetically for determinism)."""
        check_is_fitted(self, "tables_", msg="%(name)s is not fitted; call fit first")
        out = []
        for seq in prefixes:
            c = self._dist(seq)
            best = max(c.values())
            out.append(min(a for a, v in c.items() if v == best))
        return np.array(out, dtype=object)

    def predict_proba(self, prefixes: Sequence[Sequence[str]]) -> np.ndarray:
        """Relative frequencies of followers per prefix, columns in `classes_` order."""
        index = {c: i for i, c in enumerate(self.classes_)}
        out = np.zeros((len(prefixes), len(self.classes_)))
        for r, seq in enumerate(prefixes):
            c = self._dist(seq)
            total = sum(c.values())
            for a, v in c.items():
                if a in index:
                    out[r, index[a]] = v / total
        return out
