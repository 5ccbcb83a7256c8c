"""Values of a table cell as pandas spells them, read alike from a frame or from plain records (live rows), and
the TF-IDF of ticket text the creation-time models (router, misroute) share.

Training reads frames, live serving reads a few dicts: both must turn a value into the same string or number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from core.errors import InvalidInput


def text_value(value: Any) -> str | None:
    """The value as pandas' astype("string") spells it; None when it is missing."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if type(value) in (int, float, bool):
        return None if value != value else str(value)
    out = pd.Series([value], dtype=object).astype("string").iloc[0]
    return None if out is pd.NA else str(out)


def number_value(value: Any) -> float:
    """The value as pd.to_numeric(errors="coerce") reads it (NaN when missing or not a number)."""
    if value is None:
        return float("nan")
    if type(value) in (int, float):
        return float(value)
    return float(pd.to_numeric(pd.Series([value], dtype=object), errors="coerce").to_numpy(dtype=float)[0])


def plain_str(values: list[Any]) -> list[str] | None:
    """Values as astype(str) spells them when they are all str or int (else None: the pandas path decides)."""
    if all(type(v) is str for v in values):
        return values
    if all(type(v) in (str, int) for v in values):
        return [str(v) for v in values]
    return None


def texts_of(rows: pd.DataFrame | Sequence[Mapping[str, Any]], column: str) -> list[str]:
    """A free-text column as `.fillna("").astype(str)` spells it, from a frame or records (absent = empty)."""
    if isinstance(rows, pd.DataFrame):
        if column not in rows.columns:
            return [""] * len(rows)
        return rows[column].fillna("").astype(str).tolist()
    raw = [r.get(column) for r in rows]
    return [t if isinstance(t, str) else "" if text_value(t) is None else str(t) for t in raw]


def key_values(rows: pd.DataFrame | Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[list[str | None]]:
    """Per key, the values of `rows` as strings (None = missing), spelled like the router's one-hot input."""
    if isinstance(rows, pd.DataFrame):
        out = []
        for k in keys:
            if k not in rows.columns:
                raise InvalidInput(f"history key {k!r} is not a column; have {list(rows.columns)}", field=k)
            col = rows[k].astype("string")
            out.append([None if v is pd.NA else str(v) for v in col])
        return out
    return [[text_value(r.get(k)) for r in rows] for k in keys]


# The one term of a ticket vectorizer fitted on texts with no shared word (a 3-gram: never matched by 1-2 grams).
NO_SHARED_WORDS = "no shared words"


def ticket_tfidf(texts: list[str], *, fitted: TfidfVectorizer | None,
                 max_features: int) -> tuple[TfidfVectorizer, sparse.csr_matrix]:
    """TF-IDF of ticket texts (word 1-2 grams, sublinear): with `fitted`, its transform; else a new vectorizer fitted
    on `texts`. Returns the vectorizer and the matrix."""
    if fitted is not None:
        return fitted, fitted.transform(texts)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=max_features)
    try:
        return vectorizer, vectorizer.fit_transform(texts)
    except ValueError:
        # No word is shared by two tickets (or there is no word at all): the text teaches nothing, so it becomes
        # one column that is always zero and the model learns from its other inputs instead of failing to train.
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=[NO_SHARED_WORDS])
        return vectorizer, vectorizer.fit_transform(texts)
