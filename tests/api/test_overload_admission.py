"""Admission under overload: a refusal is decided from in-memory counters before routing, the body or the key
lookup; a caller let into the queue is served, not refused late; the key lookup never runs on the event loop; a
shed request's audit row is queued (gathered with others into one commit) instead of awaited."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import event, func
from sqlmodel import Session, SQLModel, select

from api.app import make_engine
from api.audit import AuditLog, AuditWriter
from api.deps import get_decide
from api.limits import ConcurrencyLimiter
from api.settings import Settings
from tests.api.conftest import new_id, start_api
from tests.routing.tiny_triage import tiny_decide


def _statements(engine: Any) -> tuple[list[tuple[str, bool]], Any]:
    """(statement, ran with an event loop running in its thread) for every statement the engine executes."""
    seen: list[tuple[str, bool]] = []

    def on_exec(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        seen.append((statement, on_loop))

    event.listen(engine, "before_cursor_execute", on_exec)
    return seen, on_exec


def test_overload_is_refused_before_the_key_lookup_and_its_row_is_queued(tmp_path: Path, tiny_bundle: Any) -> None:
    settings = Settings(home=tmp_path, route_max_concurrency=1, route_max_waiting=0, route_max_wait_seconds=1.0)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: tiny_bundle)
    entered, release = threading.Event(), threading.Event()

    def slow_decide(**kw: Any) -> Any:
        entered.set()
        release.wait(20)
        return tiny_decide(**kw)

    app.dependency_overrides[get_decide] = lambda: slow_decide
    engine = app.state.engine
    marker = new_id("SHED")
    credentials = [{"Authorization": f"Bearer {keys['helpdesk']}"}, {}, {"X-API-Key": "dpk_" + "x" * 40}]
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/v1/tickets/route", headers=credentials[0],
                                json={"ticket_id": new_id("S"), "subject": "refund my order"})
            assert entered.wait(20)
            seen, listener = _statements(engine)
            t0 = time.perf_counter()
            # A valid key, none and a wrong one: all refused for the overload, none looked up.
            shed = [client.post("/v1/tickets/route", headers=h, json={"ticket_id": f"{marker}-{i}", "subject": "x"})
                    for i, h in enumerate(credentials)]
            took = time.perf_counter() - t0
            event.remove(engine, "before_cursor_execute", listener)
            release.set()
            assert first.result(timeout=20).status_code == 201
        assert [r.status_code for r in shed] == [503, 503, 503], [r.text for r in shed]
        for r in shed:
            assert r.json()["code"] == "overloaded" and int(r.headers["Retry-After"]) >= 1
            assert "route_max_concurrency" in r.json()["detail"]
        assert took < 10.0  # refused at once, not after the request holding the slot
        assert not [s for s, _ in seen if "api_key" in s], seen  # no key lookup for a refused request
        assert not [s for s, on_loop in seen if on_loop], seen  # nothing blocking on the event loop
        assert app.state.audit_writer.flush()
        with Session(engine) as s:
            rows = s.exec(select(AuditLog).where(AuditLog.status == 503)).all()  # type: ignore[arg-type]
        assert len(rows) == 3 and {(r.route, r.who, r.method) for r in rows} == {("/v1/tickets/route", None, "POST")}
        metrics = client.get("/metrics").text
        assert 'deskpilot_requests_shed_total{endpoint="routing"} 3.0' in metrics
        assert 'route="/v1/tickets/route",status="503"' in metrics  # the latency histogram names the route
        # The slot is free again: the same key is looked up and served, off the event loop.
        seen, listener = _statements(engine)
        ok = client.post("/v1/tickets/route", headers=credentials[0], json={"ticket_id": new_id("S"), "subject": "x"})
        event.remove(engine, "before_cursor_execute", listener)
        assert ok.status_code == 201, ok.text
        lookups = [on_loop for s, on_loop in seen if "api_key" in s]
        assert lookups == [False], seen
    finally:
        release.set()
        client.__exit__(None, None, None)


def test_a_caller_let_into_the_queue_is_served_and_one_that_would_wait_too_long_is_refused_at_once() -> None:
    async def scenario() -> tuple[bool, float, bool, float, bool]:
        limiter = ConcurrencyLimiter(capacity=1, max_waiting=4, max_wait_seconds=0.2)
        limiter.mean_seconds, limiter.measured = 0.01, True  # the estimate says a slot frees up at once ...
        assert await limiter.acquire()

        async def holder() -> None:
            await asyncio.sleep(0.4)  # ... but the holder takes longer than the bound
            limiter.release(0.4)

        task = asyncio.create_task(holder())
        t0 = time.perf_counter()
        admitted = await limiter.acquire()  # let in by the estimate: served late rather than refused late
        waited = time.perf_counter() - t0
        await task
        # Now the measured service time says the next caller would wait past the bound: refused without waiting.
        limiter.mean_seconds = 1.0
        would = limiter.would_refuse()
        t1 = time.perf_counter()
        refused = not await limiter.acquire()
        limiter.release()
        return admitted, waited, refused, time.perf_counter() - t1, would

    admitted, waited, refused, refusal_took, would = asyncio.run(scenario())
    assert admitted and waited >= 0.3
    assert refused and would and refusal_took < 0.05


def test_shed_rows_share_a_commit_and_an_awaited_row_ends_the_wait(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=[AuditLog.__table__])  # type: ignore[attr-defined]
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    row = {"who": None, "role": None, "method": "POST", "path": "/v1/tickets/route", "status": 503}

    def count() -> int:
        with Session(engine) as s:
            return int(s.exec(select(func.count()).select_from(AuditLog)).one())  # type: ignore[call-overload]

    async def scenario() -> float:
        writer = AuditWriter(engine, lazy_linger_seconds=5.0)
        for i in range(20):
            await writer.queue({**row, "object_id": f"shed-{i}"})
        await asyncio.sleep(0.2)
        assert count() == 0 and writer.pending == 20  # gathered, not yet committed
        t0 = time.perf_counter()
        assert await writer.write({**row, "status": 401, "object_id": "awaited"})  # ends the linger at once
        took = time.perf_counter() - t0
        assert count() == 21 and len(commits) == 1  # one commit for all
        # A writer that has fallen behind makes a shed request wait for its row: the queue stays bounded.
        full = AuditWriter(engine, max_unawaited=0, lazy_linger_seconds=5.0)
        await full.queue({**row, "object_id": "backpressure"})
        assert count() == 22
        writer.close()
        full.close()
        return took

    assert asyncio.run(scenario()) < 2.0


def test_a_fresh_service_admits_a_small_burst_before_it_has_measured_anything() -> None:
    """CI caught it: a 0.5 s prior made a fresh service refuse the 4th of 4 clients on 2 slots."""
    async def scenario() -> list[bool]:
        limiter = ConcurrencyLimiter(capacity=2, max_waiting=8, max_wait_seconds=0.3)
        got = [await limiter.acquire(), await limiter.acquire()]
        assert limiter.would_refuse() is False  # nothing measured yet: only the wait cap bounds the queue

        async def finish() -> None:
            await asyncio.sleep(0.05)
            limiter.release(0.05)
            await asyncio.sleep(0.05)
            limiter.release(0.05)

        task = asyncio.create_task(finish())
        got += await asyncio.gather(limiter.acquire(), limiter.acquire())
        await task
        return got

    assert asyncio.run(scenario()) == [True, True, True, True]
