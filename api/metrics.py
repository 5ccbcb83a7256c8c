"""Prometheus metrics: request latency by route, decisions by kind, live model versions; served at /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi import ResponseStatus

# Latency buckets around the routing goal (p99 < 50 ms) and the overload goals (refusals < 100 ms, trivial requests
# < 200 ms, answers < 1 s) so the histogram can answer them.
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class Metrics:
    """One set of metrics per app (its own registry, so several apps in one process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "deskpilot_request_duration_seconds", "HTTP request latency by route template",
            ("method", "route", "status"), buckets=_BUCKETS, registry=self.registry,
        )
        self.decisions = Counter(
            "deskpilot_decisions_total", "Triage decisions by kind and trigger (replays not counted)",
            ("decision", "trigger"), registry=self.registry,
        )
        self.model_version = Gauge(
            "deskpilot_model_version_info", "1 for each live model version", ("task", "version"),
            registry=self.registry,
        )
        self.model_ready = Gauge("deskpilot_model_ready", "1 when a trained triage bundle is loaded",
                                 registry=self.registry)
        self.reloads = Counter("deskpilot_model_reloads_total", "Model reloads by outcome", ("outcome",),
                               registry=self.registry)
        self.shed = Counter("deskpilot_requests_shed_total",
                            "Requests refused with 503 because a heavy endpoint was at capacity", ("endpoint",),
                            registry=self.registry)
        self.retrains = Counter("deskpilot_retrain_jobs_total", "Retrain jobs by outcome", ("outcome",),
                                registry=self.registry)

    def record_decisions(self, items: Iterable[tuple[str, str]]) -> None:
        """Count (decision, trigger) pairs."""
        for decision, trigger in items:
            self.decisions.labels(decision=decision, trigger=trigger).inc()

    def set_models(self, versions: dict[str, str], ready: bool) -> None:
        """Publish the live versions (old series removed so only what is live shows)."""
        self.model_version.clear()
        for task, version in sorted(versions.items()):
            self.model_version.labels(task=task, version=version).set(1)
        self.model_ready.set(1 if ready else 0)

    def render(self) -> tuple[bytes, str]:
        """Exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LatencyMiddleware:
    """ASGI middleware timing every HTTP request, labelled by the matched route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        response = ResponseStatus(send)
        try:
            await self.app(scope, receive, response.send)
        finally:
            status = response.status if response.status is not None else 500
            route = scope.get("route")
            # Unmatched paths share one label: raw paths would let any caller blow up the series count.
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(method=scope.get("method", ""), route=label, status=str(status)).observe(
                time.perf_counter() - start
            )
