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
