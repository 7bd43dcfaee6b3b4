"""Prometheus metrics: HTTP traffic by route and status, and generation volume by scheme.

Each app owns its :class:`Metrics` (its own registry), so several apps in one process (tests)
never collide. With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics``
then aggregates all workers (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The service's metric families, registered in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "initserve_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "initserve_http_request_duration_seconds",
            "Time from request to the last body byte sent, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_bytes = Counter(
            "initserve_generated_bytes",
            "Tensor data bytes generated and sent, by scheme.",
            ["scheme"],
            registry=self.registry,
        )
        self.generated_elements = Counter(
            "initserve_generated_elements",
            "Tensor elements generated and sent (or summarised for stats), by scheme.",
            ["scheme"],
            registry=self.registry,
        )
        self.digests = Counter(
            "initserve_digests",
            "?format=digest answers, by where the digest came from: remembered (answered before), small (hashed "
            "from the response cache), streamed (leaves hashed while streaming the file), generated (leaves no "
            "stream covered generated again, unsent).",
            ["source"],
            registry=self.registry,
        )
        self.digest_generated_bytes = Counter(
            "initserve_digest_generated_bytes",
            "File bytes generated again, without being sent, only to hash them for ?format=digest.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "initserve_generations_in_flight",
            "Generations (streams and stats) running now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "initserve_generations_rejected",
            "Generations refused with 503 because every slot was busy.",
            registry=self.registry,
        )

        self.whole_hits = Counter(
            "initserve_whole_cache_hits",
            "Whole-tensor results (orthogonal, sparse) reused: kept in memory, or shared with an identical "
            "computation in flight.",
            registry=self.registry,
        )
        self.whole_misses = Counter(
            "initserve_whole_cache_misses",
            "Whole-tensor results that had to be computed.",
            registry=self.registry,
        )
        self.whole_evictions = Counter(
            "initserve_whole_cache_evictions",
            "Whole-tensor results dropped (least recently used first) to stay within INITSERVE_WHOLE_CACHE_BYTES.",
            registry=self.registry,
        )
        self.whole_bytes = Gauge(
            "initserve_whole_cache_bytes",
            "Bytes of whole-tensor results held in memory.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

        self.cache_hits = Counter(
            "initserve_response_cache_hits",
            "Small files served from memory without generating: cached, or shared with an identical "
            "request that was generating it.",
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "initserve_response_cache_misses",
            "Small files that had to be generated (then kept if the cache admits them).",
            registry=self.registry,
        )
        self.cache_evictions = Counter(
            "initserve_response_cache_evictions",
            "Cached files dropped (least recently used first) to stay within INITSERVE_RESPONSE_CACHE_BYTES.",
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "initserve_response_cache_bytes",
            "Bytes of small files held in the response cache.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.kernel = Gauge(
            "initserve_kernel_info",
            "The implementation of the generation algorithm this process runs (value 1): native or numpy.",
            ["kernel"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.cache_entries = Gauge(
            "initserve_response_cache_entries",
            "Files held in the response cache.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format, aggregated across workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Counts each request and times it until its response body is complete.

    The route label is the matched route's template (``/v1/tensors/{token}``), never the raw
    path, so label cardinality stays bounded; unmatched paths count as ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)
