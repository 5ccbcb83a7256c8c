"""BM25 over passages with no word in them: no lexical match, and no error."""

from __future__ import annotations

from knowledge_hub.retrieval import _Lexical


def test_passages_without_words_score_zero_instead_of_failing() -> None:
    lex = _Lexical(["0", "a", "the"])  # nothing a tokenizer keeps: an empty vocabulary
    assert lex.scores(["refund please"]).tolist() == [[0.0, 0.0, 0.0]]


def test_a_passage_with_words_still_matches() -> None:
    lex = _Lexical(["refund policy for double charges", "the"])
    s = lex.scores(["refund please"])
    assert s[0, 0] > 0 and s[0, 1] == 0
