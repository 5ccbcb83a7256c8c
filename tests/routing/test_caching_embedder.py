"""The triage's caching embedder: each text embedded once, big batches split over the cores, same vectors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from insight.embedding import Embedder
from routing.triage import CachingEmbedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from insight.simulate import simulate

    t = simulate(n_cases=120, seed=21).tickets
    return (t["subject"].astype(str) + ". " + t["body"].astype(str)).tolist()


@pytest.fixture(scope="module")
def one_thread() -> Embedder:
    from api.settings import bundled_model_path

    return Embedder(bundled_model_path(), backend="onnx", threads=1)


def test_batches_are_split_over_the_cores_with_the_same_vectors(one_thread, texts):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to split over")
    cache = CachingEmbedder(one_thread)
    assert cache.workers == min(4, os.cpu_count() or 1)
    batch = texts[:80]
    got = cache.encode(batch)
    assert cache._pool is not None  # the 80 new texts went through the chunk pool
    ref = one_thread.encode(batch)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5  # same rows in the same order (only padding differs per chunk)
    assert np.allclose(cache.encode(batch[::-1]), got[::-1])  # served from the cache, in the asked order


def test_a_single_text_stays_on_the_calling_thread(one_thread, texts):
    cache = CachingEmbedder(one_thread)
    v = cache.encode([texts[0]])
    assert cache._pool is None
    assert np.abs(v - one_thread.encode([texts[0]])).max() < 1e-6


def test_no_split_when_each_call_already_uses_every_core(texts):
    from api.settings import bundled_model_path

    all_cores = Embedder(bundled_model_path(), backend="onnx", threads=os.cpu_count() or 1)
    cache = CachingEmbedder(all_cores)
    assert cache.workers == 1
    cache.encode(texts[:40])
    assert cache._pool is None
