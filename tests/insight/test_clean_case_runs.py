"""The cleaner's shortcut for logs sorted by case (codes from the runs of equal case ids, no hashing, no sort of
the ids) gives what the hashed codes and the row-wise reference give, and declines every other layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insight.eventlog import ACTIVITY, CASE_ID, TIMESTAMP, EventLog, clean
from insight.eventlog import cleaning as cleaning_mod
from tests.insight.test_ingest_fast_path import _reference_clean, _same


def _log(cases: list[str | None], *, dtype: str = "str") -> EventLog:
    n = len(cases)
    t = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) % 5, unit="min")
    df = pd.DataFrame({
        CASE_ID: pd.Series(cases, dtype=dtype),
        ACTIVITY: pd.Series([f"a{i % 3}" for i in range(n)], dtype="str"),
        TIMESTAMP: t,
        "agent": pd.Series([f"r{i % 4}" for i in range(n)], dtype="str"),
    })
    return EventLog(df, name="runs")


LAYOUTS = {
    "sorted runs": ["c01"] * 3 + ["c02"] * 5 + ["c10"] + ["c11"] * 4,
    "one case": ["c1"] * 6,
    "a case comes back": ["c01"] * 3 + ["c02"] * 2 + ["c01"] * 2,
    "descending runs": ["c3"] * 2 + ["c2"] * 2 + ["c1"] * 2,
    "unsorted": ["b", "a", "b", "c", "a"],
    "missing id": ["c1", "c1", None, "c2", "c2"],
    "blank id": ["", "", "c1", "c1", " "],
    "byte order not locale order": ["B"] * 2 + ["a"] * 2 + ["b"] * 2 + ["\u00e9"] * 2,
    "single row": ["c1"],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["str", "object"])
def test_case_runs_equal_hashed_codes_and_reference(monkeypatch, name, dtype):
    log = _log(LAYOUTS[name], dtype=dtype)
    ours = clean(log)
    _same(ours, _reference_clean(log))
    with monkeypatch.context() as m:
        m.setattr(cleaning_mod, "_run_codes", lambda s: None)
        m.setattr(cleaning_mod, "_factorized", {})  # the first clean's codes must not be reused
        m.setattr(cleaning_mod, "_ascending", lambda v: False)
        hashed = clean(log)
    _same(ours, hashed)


def test_run_codes_answer_only_for_ascending_runs():
    def runs(cases):
        return cleaning_mod._run_codes(pd.Series(cases, dtype="str"))

    got = runs(LAYOUTS["sorted runs"])
    assert got is not None
    codes, text = got
    want_codes, want_uniques = pd.factorize(pd.Series(LAYOUTS["sorted runs"], dtype="str"))
    assert codes.dtype == want_codes.dtype and (codes == want_codes).all()
    pd.testing.assert_index_equal(text, pd.Index(want_uniques).astype("str"), exact=True)
    for name in ("a case comes back", "descending runs", "unsorted", "missing id", "single row"):
        assert runs(LAYOUTS[name]) is None, name
    assert cleaning_mod._run_codes(pd.Series(LAYOUTS["sorted runs"], dtype=object)) is None
