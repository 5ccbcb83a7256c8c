"""The text the intent model and the router read from a ticket table, empty tables included."""

from __future__ import annotations

import pandas as pd

from insight.training import ticket_texts


def test_texts_join_subject_and_body_in_creation_order() -> None:
    t = pd.DataFrame({"case_id": ["b", "a"], "created_at": pd.to_datetime(["2026-01-02", "2026-01-01"], utc=True),
                      "subject": ["Refund", None], "body": ["charged twice", "cannot log in"]})
    ordered, texts = ticket_texts(t)
    assert list(ordered["case_id"]) == ["a", "b"]
    assert texts == [". cannot log in", "Refund. charged twice"]


def test_an_empty_ticket_table_gives_no_texts() -> None:
    ordered, texts = ticket_texts(pd.DataFrame({"case_id": [], "subject": [], "body": []}))
    assert texts == [] and ordered.empty
    assert ticket_texts(pd.DataFrame({"case_id": ["x"]}))[1] == [""]
