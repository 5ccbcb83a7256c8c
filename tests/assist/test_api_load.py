"""Assist under overload through the real HTTP stack: no request holds a DB connection while it computes, and
requests beyond the heavy-endpoint limit are shed with 503 + Retry-After instead of piling up into 500s."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from api.limits import ConcurrencyLimiter
from api.settings import Settings
from tests.assist.test_api import start_assist_api, tiny_bundle


@pytest.fixture(scope="module")
def load_api(tmp_path_factory, sim_small, embedder):
    # A file database with a ONE-connection pool and a short pool timeout: a request that kept its connection
    # while computing would make every other request wait past the timeout (QueuePool timeout -> 500).
    settings = Settings(home=tmp_path_factory.mktemp("load"), db_pool_size=1, db_max_overflow=0, db_pool_timeout=1.0,
                        heavy_max_concurrency=8, heavy_max_waiting=64, heavy_max_wait_seconds=120)
    api, case_of = start_assist_api(settings, sim_small, embedder, tiny_bundle(sim_small))
    ids = list(case_of.values())
    warm = api.client.get(f"/v1/tickets/{ids[0]}/assist", headers=api.h("agent"))  # embedder weights, auth cache
    assert warm.status_code == 200, warm.text
    try:
        yield api, ids
    finally:
        api.client.__exit__(None, None, None)


def _burst(api, ids: list[str], n: int, threads: int) -> list:
    def one(i: int):
        return api.client.post(f"/v1/tickets/{ids[i % len(ids)]}/assist", headers=api.h("agent"),
                               json={"top_k": 2, "ranking": "outcome"})

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_assist_on_a_one_connection_pool_all_succeed(load_api):
    api, ids = load_api
    results = _burst(api, ids, n=24, threads=12)
    assert [r.status_code for r in results] == [200] * 24, [(r.status_code, r.text[:200]) for r in results]
    assert all(r.json()["next_steps"] for r in results)


def test_overload_is_shed_with_503_and_retry_after(load_api):
    api, ids = load_api
    app = api.app
    old = app.state.heavy_limiter
    app.state.heavy_limiter = ConcurrencyLimiter(capacity=1, max_waiting=1, max_wait_seconds=0.05)
    try:
        results = _burst(api, ids, n=24, threads=12)
        # a request that fails inside the limit (unknown ticket) gives its slot back too
        assert api.client.get("/v1/tickets/nope/assist", headers=api.h("agent")).status_code == 404
    finally:
        limiter, app.state.heavy_limiter = app.state.heavy_limiter, old
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}, [(r.status_code, r.text[:200]) for r in results if r.status_code not in
                                         (200, 503)]
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    for r in results:
        if r.status_code == 503:
            assert r.json()["code"] == "overloaded" and "assist" in r.json()["detail"]
            assert int(r.headers["Retry-After"]) >= 1
    assert limiter.in_use == 0 and limiter.waiting == 0  # every slot was given back
    shed = [line for line in api.client.get("/metrics").text.splitlines()
            if line.startswith("deskpilot_requests_shed_total{")]
    assert shed and float(shed[0].rsplit(" ", 1)[1]) == statuses.count(503)
