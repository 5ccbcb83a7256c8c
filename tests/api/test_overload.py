"""Overload is shed, not absorbed: routing past its concurrency and wait bounds answers 503 with Retry-After at once,
and the health probe answers while every routing slot is busy."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from api.deps import get_decide
from api.settings import Settings
from tests.api.conftest import new_id, start_api
from tests.routing.tiny_triage import tiny_decide


def test_routing_sheds_load_with_retry_after_and_health_still_answers(tmp_path: Path, tiny_bundle: Any) -> None:
    settings = Settings(home=tmp_path, database_url="sqlite://", route_max_concurrency=1, route_max_waiting=1,
                        route_max_wait_seconds=0.2)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    entered, release = threading.Event(), threading.Event()

    def slow_decide(**kw: Any) -> Any:
        entered.set()
        release.wait(10)
        return tiny_decide(**kw)

    app.dependency_overrides[get_decide] = lambda: slow_decide
    h = {"Authorization": f"Bearer {keys['helpdesk']}"}

    def route(i: int) -> Any:
        return client.post("/v1/tickets/route", headers=h,
                           json={"ticket_id": new_id(f"L{i}"), "subject": "refund", "body": "refund my order"})

    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(route, 0)
            assert entered.wait(10)
            t0 = time.perf_counter()
            shed = [pool.submit(route, i) for i in (1, 2, 3)]
            answers = [f.result(timeout=10) for f in shed]
            took = time.perf_counter() - t0
            assert client.get("/healthz").status_code == 200  # the busy slot does not hold the probe
            release.set()
            assert first.result(timeout=10).status_code == 201
        assert [a.status_code for a in answers] == [503, 503, 503], [a.text for a in answers]
        for a in answers:
            assert a.json()["code"] == "overloaded" and int(a.headers["Retry-After"]) >= 1
            assert "route_max_concurrency" in a.json()["detail"]
        assert took < 5.0  # refused within the wait bound, not after the slow request
        assert client.post("/v1/tickets/route", headers=h, json={"ticket_id": new_id("L9"), "subject": "refund"}
                           ).status_code == 201  # the slot is free again
    finally:
        release.set()
        client.__exit__(None, None, None)


class _BlockingIndex:
    """A vector index whose every use waits until released, noting the thread it ran on and how many waited at once."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def use(*args: Any, **kwargs: Any) -> Any:
            from core.errors import IndexUnavailable

            with self._lock:
                self.threads.append(threading.current_thread().name)
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
            self.entered.set()
            try:
                self.release.wait(20)
            finally:
                with self._lock:
                    self.inside -= 1
            raise IndexUnavailable("the test index refuses every write once released")

        return use


def test_heavy_requests_run_in_their_own_bounded_pool_and_trivial_ones_never_wait(tmp_path: Path,
                                                                                  tiny_bundle: Any) -> None:
    from api.deps import get_kb_index

    # A SQLite file (one connection per thread), not the in-memory database that every thread shares.
    settings = Settings(home=tmp_path, heavy_threads=1)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    index = _BlockingIndex()
    app.dependency_overrides[get_kb_index] = lambda: index
    km = {"Authorization": f"Bearer {keys['knowledge_manager']}"}
    hd = {"Authorization": f"Bearer {keys['helpdesk']}"}
    tid = new_id("H")
    assert client.post("/v1/tickets/route", headers=hd, json={"ticket_id": tid, "subject": "refund"}).status_code == 201

    def write_article(i: int) -> Any:
        return client.post("/v1/kb/articles", headers=km,
                           json={"title": f"Article {i}", "body": "text to embed", "status": "published"})

    try:
        with ThreadPoolExecutor(8) as pool:
            heavy = [pool.submit(write_article, i) for i in range(4)]
            assert index.entered.wait(20)
            # Every heavy request is running or queued for the one heavy thread; the shared pool is free.
            trivial = [pool.submit(client.get, "/healthz"),
                       pool.submit(client.get, f"/v1/tickets/{tid}", headers={"Authorization": f"Bearer {keys['agent']}"}),
                       pool.submit(client.post, "/v1/tickets/route", headers=hd,
                                   json={"ticket_id": new_id("H"), "subject": "where is my parcel"})]
            answers = [f.result(timeout=20) for f in trivial]  # answered while the heavy ones are still held
            assert not index.release.is_set() and all(not f.done() for f in heavy)
            index.release.set()
            done = [f.result(timeout=60) for f in heavy]
        assert [a.status_code for a in answers] == [200, 200, 201], [a.text for a in answers]
        assert index.most_inside == 1, index.threads  # heavy_threads=1: one at a time
        assert index.threads and all(name.startswith("deskpilot-heavy") for name in index.threads), index.threads
        assert all(r.status_code in (201, 503) for r in done), [r.text for r in done]
    finally:
        index.release.set()
        client.__exit__(None, None, None)
