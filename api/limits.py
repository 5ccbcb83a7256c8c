"""Load shedding for heavy endpoints: a bounded number compute at once, a bounded number wait briefly, the rest
get 503 with Retry-After at once (cheap to refuse, and they never pile up on threads or database connections)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import Request

from api.errors import ClientGone, Overloaded

# Weight of the newest request in the running mean of service time (used for Retry-After).
_EWMA = 0.2


class ConcurrencyLimiter:
    """At most `capacity` holders; up to `max_waiting` callers wait up to `max_wait_seconds` for a slot.

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
        self.mean_seconds = 0.5  # prior until the first request finishes
        self._sem: anyio.Semaphore | None = None

    def _semaphore(self) -> anyio.Semaphore:
        # Created on first use, inside the running event loop.
        if self._sem is None:
            self._sem = anyio.Semaphore(self.capacity)
        return self._sem

    async def acquire(self) -> bool:
        """Take a slot (waiting within the bounds); False when the caller should be refused."""
        sem = self._semaphore()
        try:
            sem.acquire_nowait()
        except anyio.WouldBlock:
            if self.waiting >= self.max_waiting or self.max_wait_seconds <= 0:
                return False
            self.waiting += 1
            try:
                with anyio.move_on_after(self.max_wait_seconds) as scope:
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
            self.mean_seconds += _EWMA * (seconds - self.mean_seconds)
        self._semaphore().release()

    def retry_after(self) -> int:
        """Seconds after which a retry has a fair chance: the queue ahead drained at the measured service rate."""
        ahead = self.waiting + self.in_use
        return max(1, min(60, math.ceil(self.mean_seconds * (ahead + 1) / self.capacity)))


def _limited(what: str, limiter_attr: str, settings_hint: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of `app.state.<limiter_attr>` for the request (503 + Retry-After if full)."""

    async def _dep(request: Request) -> AsyncIterator[None]:
        limiter: ConcurrencyLimiter = getattr(request.app.state, limiter_attr)
        if not await limiter.acquire():
            metrics: Any = request.app.state.metrics
            metrics.shed.labels(endpoint=what).inc()
            wait = limiter.retry_after()
            raise Overloaded(
                f"{what} is at capacity ({limiter.capacity} computing, {limiter.waiting} waiting); "
                f"retry after {wait} s ({settings_hint})",
                retry_after=wait,
            )
        start = time.perf_counter()
        try:
            # A client that gave up while waiting gets no work done for it.
            if await request.is_disconnected():
                raise ClientGone(what)
            yield
        finally:
            limiter.release(time.perf_counter() - start)

    return _dep


def heavy(what: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of the heavy-endpoint limiter (assist, gaps) for the request."""
    return _limited(what, "heavy_limiter", "heavy_max_concurrency / heavy_max_waiting")


def routing_slot(what: str) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding one slot of the routing limiter (route, batch, events): a queue bounded by wait time, so an
    overload is answered 503 + Retry-After instead of piling up requests whose clients have given up."""
    return _limited(what, "route_limiter", "route_max_concurrency / route_max_wait_seconds")
