"""Ticket memory: nearest past tickets, with the float32 working copy built once and never pickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from insight.models.memory import TicketMemory


@pytest.fixture(scope="module")
def tickets():
    from insight.simulate import simulate

    t = simulate(n_cases=300, seed=6).tickets.reset_index(drop=True)
    return t.assign(case_id=t["case_id"].astype(str))


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 48)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_ranks_by_cosine_and_survives_pickling(tickets):
    rng = np.random.default_rng(2)
    emb = _unit(rng, len(tickets))
    memory = TicketMemory().fit(tickets, text=tickets["subject"], embeddings=emb)
    queries = np.vstack([emb[[5, 77]], _unit(rng, 3)])
    hits = memory.search(queries, k=4)
    stored = emb.astype(np.float16).astype(np.float32)
    for q, row in zip(queries, hits, strict=True):
        sims = stored @ q
        assert [h.case_id for h in row] == [tickets["case_id"][i] for i in np.argsort(-sims, kind="stable")[:4]]
        assert [h.similarity for h in row] == pytest.approx(np.sort(sims)[::-1][:4], abs=1e-6)
    assert hits[0][0].case_id == tickets["case_id"][5] and hits[1][0].case_id == tickets["case_id"][77]
    assert hits[0][0].team == tickets["resolving_team"][5]
    # The working copy is not part of the artifact, and a loaded memory answers the same.
    assert "_vectors_f32" not in memory.__getstate__()
    loaded = pickle.loads(pickle.dumps(memory))
    assert loaded.search(queries, k=4) == hits


def test_refit_replaces_the_working_copy(tickets):
    rng = np.random.default_rng(4)
    memory = TicketMemory().fit(tickets, text=tickets["subject"], embeddings=_unit(rng, len(tickets)))
    q = _unit(rng, 1)
    before = memory.search(q, k=1)[0][0]
    flipped = tickets.iloc[::-1].reset_index(drop=True)
    emb = _unit(rng, len(flipped))
    emb[0] = q[0]
    memory.fit(flipped, text=flipped["subject"], embeddings=emb)
    after = memory.search(q, k=1)[0][0]
    assert after.case_id == flipped["case_id"][0] and after.similarity == pytest.approx(1.0, abs=1e-3)
    assert (before.case_id, before.similarity) != (after.case_id, after.similarity)
