"""The activity column is hashed once for the source review and the cleaner (factorize_strings keeps the latest
Arrow columns' codes); the review's placeholder check and the cleaned log stay what they were without it."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from insight.eventlog import ACTIVITY, EventLog, clean, read_log
from insight.eventlog import cleaning as cleaning_mod
from insight.eventlog.readers.detect import review_source
from tests.insight.test_ingest_fast_path import _same


def _csv(tmp_path: Path, acts: list[str]) -> Path:
    p = tmp_path / "log.csv"
    rows = [f"C{i // 3},{a},2024-01-01 10:{i % 60:02d}:00,team{i % 2}" for i, a in enumerate(acts)]
    p.write_text("Case ID,Activity,Complete Timestamp,Team\n" + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize("acts", [
    ["Open", "Work", "Close"] * 20,
    ["Open", "N/A", "Close", "-", "Work", "N/A"] * 10,  # placeholders among real steps
    ["?"] * 12,  # nothing but a placeholder
])
def test_review_equals_the_value_count_review(tmp_path, acts):
    p = _csv(tmp_path, acts)
    log = read_log(p)
    assert log.df[ACTIVITY].dtype == "str"
    as_object = EventLog(log.df.astype({ACTIVITY: object}), name=log.name, quality=None)
    for which in (log, as_object):
        which.quality = type(log.quality)(source=str(p), rows_in=len(log.df))
        review_source(which, path=p, fmt="csv", preset=None)
    assert log.quality is not None and as_object.quality is not None
    assert log.quality.to_dict() == as_object.quality.to_dict()
    assert (log.quality.count("placeholder_activity") > 0) == ("N/A" in acts)


def test_clean_after_read_equals_clean_of_a_fresh_frame(tmp_path):
    p = _csv(tmp_path, ["Open", " Work", "Close ", "Work"] * 30)
    log = read_log(p)
    fresh = EventLog(log.df.copy(deep=True), name=log.name, quality=log.quality)
    fresh.df[ACTIVITY] = pd.Series(pa.chunked_array([pa.array(log.df[ACTIVITY].tolist(), pa.large_string())]),
                                   dtype="str")
    _same(clean(log), clean(fresh))


def test_factorize_strings_memo():
    s = pd.Series(["b", "a", None, "b", "c"], dtype="str")
    codes, uniques = cleaning_mod.factorize_strings(s)
    want_codes, want_uniques = pd.factorize(s)
    assert (codes == want_codes).all() and codes.dtype == want_codes.dtype
    pd.testing.assert_index_equal(uniques, want_uniques, exact=True)
    again = cleaning_mod.factorize_strings(s.reset_index(drop=True))
    assert again[0] is codes  # the same Arrow column: not hashed again
    with pytest.raises(ValueError):
        codes[0] = 5
    other = pd.Series(["b", "a", None, "b", "c"], dtype="str")  # equal values, another column
    assert cleaning_mod.factorize_strings(other)[0] is not codes
    del s, other, again, codes
    gc.collect()
    assert not cleaning_mod._factorized  # dropped with its column
    obj = pd.Series(np.array(["x", "y", "x"], dtype=object))
    assert (cleaning_mod.factorize_strings(obj)[0] == [0, 1, 0]).all()
