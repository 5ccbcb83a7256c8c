"""Load shedding for heavy endpoints: a bounded number compute at once, a bounded number wait briefly, the rest
get 503 with Retry-After at once (cheap to refuse, and they never pile up on threads or database connections);
and the heavy requests' own thread pool, so a trivial request never waits for a thread behind them.

A shedding dependency is resolved before every other dependency of its route (`shed_first`): a refusal is decided
from in-memory counters alone, before the API key is checked or a database session is opened, so an overload
costs the event loop next to nothing per refused request. Its audit row is queued, not awaited (api.audit).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.lowlevel import RunVar
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ClientGone, Overloaded, error_response

# Weight of the newest request in the running mean of service time (used for admission and Retry-After).
_EWMA = 0.2
# A caller admitted to the queue is refused after all only when it has waited this many times the wait bound.
_WAIT_CAP = 3.0


class ConcurrencyLimiter:
    """At most `capacity` holders; a caller that would wait for a slot is admitted to the queue only when, at the
    measured service rate, it should get one within `max_wait_seconds` (and fewer than `max_waiting` wait); every
    other caller is refused at once.

    Admission is the decision: a caller admitted to the queue is served, even when the estimate was short and it
    waits longer; only past `_WAIT_CAP` times the bound (a stuck computation) is it refused after all. So a refusal is
    always immediate, and under overload the answered requests wait about the bound at most.

    Used from the event loop only (FastAPI resolves async dependencies there), so the counters need no lock.
    """

    def __init__(self, *, capacity: int, max_waiting: int, max_wait_seconds: float) -> None:
        if capacity < 1 or max_waiting < 0 or max_wait_seconds < 0:
            raise ValueError("capacity must be >= 1, max_waiting and max_wait_seconds >= 0")
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self.in_use = 0
        self.waiting = 0
        # The service-time estimate: set by the first request that finishes (no prior: a guess would refuse a
        # fresh service's first burst, or admit a slow one's), then a moving average.
        self.mean_seconds = 0.0
        self.measured = False
        self._sem: anyio.Semaphore | None = None

    def _semaphore(self) -> anyio.Semaphore:
        # Created on first use, inside the running event loop.
        if self._sem is None:
            self._sem = anyio.Semaphore(self.capacity)
        return self._sem

    def expected_wait(self) -> float:
        """Seconds the next caller would wait for a slot at the measured service rate (0 when one is free)."""
        if self.in_use < self.capacity and self.waiting == 0:
            return 0.0
        return (self.waiting + 1) * self.mean_seconds / self.capacity

    def would_refuse(self) -> bool:
        """True when `acquire()` called now would refuse (no free slot, and the queue is full or too slow)."""
        if self.in_use < self.capacity and self.waiting == 0:
            return False
        if self.waiting >= self.max_waiting or self.max_wait_seconds <= 0:
            return True
        # Before any measurement the queue is bounded by the wait cap in acquire() alone.
        return self.measured and self.expected_wait() > self.max_wait_seconds

    async def acquire(self) -> bool:
        """Take a slot (waiting within the bounds); False when the caller should be refused."""
        sem = self._semaphore()
        try:
            sem.acquire_nowait()
        except anyio.WouldBlock:
            # A caller that would not get a slot within the wait bound at the measured service rate is refused now:
            # under overload a refusal costs nothing, instead of holding the caller for the whole wait first.
            if self.would_refuse():
                return False
            self.waiting += 1
            try:
                with anyio.move_on_after(self.max_wait_seconds * _WAIT_CAP) as scope:
                    await sem.acquire()
                if scope.cancelled_caught:
                    return False
            finally:
                self.waiting -= 1
        self.in_use += 1
        return True

    def release(self, seconds: float | None = None) -> None:
        """Give a slot back; `seconds` (how long it was held) updates the service-time estimate."""
        self.in_use -= 1
        if seconds is not None:
            if self.measured:
                self.mean_seconds += _EWMA * (seconds - self.mean_seconds)
            else:
                self.mean_seconds, self.measured = seconds, True
        self._semaphore().release()

    def retry_after(self) -> int:
        """Seconds after which a retry has a fair chance: the queue ahead drained at the measured service rate."""
        ahead = self.waiting + self.in_use
        mean = self.mean_seconds if self.measured else self.max_wait_seconds
        return max(1, min(60, math.ceil(mean * (ahead + 1) / self.capacity)))

    def refusal(self, what: str, settings_hint: str) -> Overloaded:
        """The 503 answer for a caller refused now."""
        wait = self.retry_after()
        return Overloaded(f"{what} is at capacity ({self.capacity} computing, {self.waiting} waiting); "
                          f"retry after {wait} s ({settings_hint})", retry_after=wait)


_ROUTE_HINT = "route_max_concurrency / route_max_wait_seconds"
_HEAVY_HINT = "heavy_max_concurrency / heavy_max_waiting"


def _limited(what: str, limiter_attr: str, settings_hint: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of `app.state.<limiter_attr>` for the request (503 + Retry-After if full)."""

    async def _dep(request: Request) -> AsyncIterator[None]:
        limiter: ConcurrencyLimiter = getattr(request.app.state, limiter_attr)
        if not await limiter.acquire():
            request.state.shed = True  # api.audit queues this refusal's row instead of awaiting it
            metrics: Any = request.app.state.metrics
            metrics.shed.labels(endpoint=what).inc()
            raise limiter.refusal(what, settings_hint)
        start = time.perf_counter()
        try:
            # A client that gave up while waiting gets no work done for it.
            if await request.is_disconnected():
                request.state.shed = True
                raise ClientGone(what)
            yield
        finally:
            limiter.release(time.perf_counter() - start)

    _dep.sheds = what  # type: ignore[attr-defined]  # api.responses documents 503 / 499 for routes using it
    _dep.limiter_attr = limiter_attr  # type: ignore[attr-defined]
    _dep.settings_hint = settings_hint  # type: ignore[attr-defined]
    return _dep


def heavy(what: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of the heavy-endpoint limiter (assist, gaps) for the request."""
    return _limited(what, "heavy_limiter", _HEAVY_HINT)


def routing_slot(what: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of the routing limiter (route, batch, events): a queue bounded by wait time, so an
    overload is answered 503 + Retry-After instead of piling up requests whose clients have given up."""
    return _limited(what, "route_limiter", _ROUTE_HINT)


# ---------------------------------------------------------------- the heavy requests' own thread pool

# The pool of the app serving on this event loop (set by the lifespan): a RunVar, like AnyIO's own default limiter,
# because the views' routes are shared by every app built in one process while each app has its own loop.
_HEAVY_POOL: RunVar[ThreadPoolExecutor] = RunVar("deskpilot_heavy_pool")


def _lower_priority(nice: int) -> None:
    # Linux applies a niceness to one thread when given its thread id; elsewhere this is a no-op.
    if nice and hasattr(os, "setpriority"):
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)


def start_heavy_pool(*, threads: int, nice: int) -> ThreadPoolExecutor:
    """The heavy requests' bounded pool (threads at a lower CPU priority), installed for this event loop; call from
    the lifespan and `shutdown()` it there."""
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deskpilot-heavy",
                              initializer=_lower_priority, initargs=(nice,))
    _HEAVY_POOL.set(pool)
    return pool


def _in_heavy_pool(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def run(**values: Any) -> Any:
        try:
            pool = _HEAVY_POOL.get()
        except LookupError:  # an app run without its lifespan: the shared pool, as before
            return await anyio.to_thread.run_sync(functools.partial(fn, **values))
        ctx = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(pool, functools.partial(ctx.run, fn, **values))
        # Wait for the thread even when the request is cancelled: it still uses the request's session.
        with anyio.CancelScope(shield=True):
            return await future

    run.in_heavy_pool = True  # type: ignore[attr-defined]
    return run


def is_heavy(route: Any) -> bool:
    """A route computing for seconds: it holds a heavy slot (assist, gaps) or writes to the vector index (embeds)."""
    from api.deps import get_kb_index
    from api.responses import dependencies

    calls = [d.call for d in dependencies(route.dependant)]
    if any(getattr(c, "sheds", None) and getattr(c, "limiter_attr", None) == "heavy_limiter" for c in calls):
        return True
    return bool(set(route.methods or ()) & {"POST", "PUT", "PATCH", "DELETE"}) and get_kb_index in calls


def _declared_routes(routes: Any) -> Any:
    # The routes as declared, routers included: FastAPI builds each included route's request handler on first use
    # from `route.dependant`, so the endpoint must be replaced before anything (a request, the schema) builds them.
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _declared_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


@dataclass(frozen=True)
class _ShedRoute:
    regex: re.Pattern[str]
    methods: frozenset[str]
    route: APIRoute
    limiter_attr: str
    what: str
    hint: str


class ShedEarly:
    """ASGI middleware: a request for a route that sheds is refused (503 + Retry-After) before routing, before its
    body is read and before its key is checked, whenever its limiter would refuse it now.

    Under overload most requests are refused; here a refusal costs one regex match and a short JSON answer on the
    event loop instead of the whole route (matching ~100 routes, body, dependencies, exception handlers), so the
    loop keeps up with the arrival rate and the answered requests and the probes are not delayed behind refusals.
    The route dependency still takes the slot (and may still refuse) for every request let through. Place it inside
    the audit middleware: the refusal gets its (queued) audit row, naming the route and no caller.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[_ShedRoute] | None = None

    def _routes(self, app: Any) -> list[_ShedRoute]:
        # Built on the first request, when every router is mounted.
        if self._table is None:
            from api.responses import api_routes, dependencies

            table = []
            for _, path, route in api_routes(app.routes):
                for dep in dependencies(route.dependant):
                    what = getattr(dep.call, "sheds", None)
                    if what:
                        table.append(_ShedRoute(compile_path(path)[0], frozenset(route.methods or ()), route,
                                                dep.call.limiter_attr, what, dep.call.settings_hint))
                        break
            self._table = table
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("app") is not None:
            method, path = scope.get("method", ""), scope.get("path", "")
            for entry in self._routes(scope["app"]):
                if method not in entry.methods:
                    continue
                match = entry.regex.match(path)
                if match is None:
                    continue
                state = scope["app"].state
                limiter: ConcurrencyLimiter | None = getattr(state, entry.limiter_attr, None)
                if limiter is not None and limiter.would_refuse():
                    scope["route"], scope["path_params"] = entry.route, match.groupdict()  # metrics, audit row
                    scope.setdefault("state", {})["shed"] = True
                    state.metrics.shed.labels(endpoint=entry.what).inc()
                    refusal = limiter.refusal(entry.what, entry.hint)
                    response = error_response(503, refusal.detail, refusal.code,
                                              headers={"Retry-After": str(refusal.retry_after)})
                    await response(scope, receive, send)
                    return
                break
        await self.app(scope, receive, send)


def shed_first(routes: Any) -> list[str]:
    """Resolve every route's shedding dependency (routing slot, heavy slot) before its other dependencies (call
    before the first request): under overload the refusal then costs no key lookup, no session, no thread. A
    request refused this way has not been authenticated: its 503 and its audit row name no caller. The routes
    changed."""
    changed: list[str] = []
    for route in _declared_routes(routes):
        deps = route.dependant.dependencies
        first = [d for d in deps if getattr(d.call, "sheds", None)]
        if first and deps[: len(first)] != first:
            route.dependant.dependencies = first + [d for d in deps if not getattr(d.call, "sheds", None)]
            changed.append(f"{','.join(sorted(route.methods or ()))} {route.path}")
    return changed


def run_heavy_in_own_pool(routes: Any) -> list[str]:
    """Make every heavy sync route run on the heavy pool instead of the shared one (call before the first request);
    the routes it moved."""
    moved: list[str] = []
    for route in _declared_routes(routes):
        call = route.dependant.call
        if call is None or not is_heavy(route):
            continue
        if not inspect.iscoroutinefunction(call):
            # Both: a route included in an app builds its handler from `endpoint`, a bare route from `dependant`.
            route.dependant.call = route.endpoint = _in_heavy_pool(call)
        elif not getattr(call, "in_heavy_pool", False):
            continue
        moved.append(f"{','.join(sorted(route.methods or ()))} {route.path}")
    return moved
