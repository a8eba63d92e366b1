"""What a running server exports to Prometheus (``GET /metrics``) and logs, one structured line per request.

Each :class:`ServerMetrics` has its own registry, so several servers in one process (tests) never collide.
The request log never carries the prompt's text unless the server was started with ``--log-prompts``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
request_log = logging.getLogger("padkit.requests")


class ServerMetrics:
    """Requests by route and status, queue depth, batch sizes, time to first token, latency, tokens."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "padkit_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.queue = Gauge("padkit_queue_depth", "Requests accepted and not yet decoding.", registry=self.registry)
        self.queue.set_function(queue_depth)
        self.batch_size = Histogram(
            "padkit_batch_size",
            "Requests per decode (continuous batching: per step).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.first_token = Histogram(
            "padkit_time_to_first_token_seconds",
            "From accepting a request to its first text.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "padkit_request_latency_seconds",
            "From accepting a generation request to its last byte.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter("padkit_generated_tokens", "Tokens generated.", registry=self.registry)
        self.cancelled = Counter(
            "padkit_cancelled_requests", "Requests whose client left or whose time ran out.", registry=self.registry
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


def log_request(**fields: Any) -> None:
    """One JSON line per generation request on the ``padkit.requests`` logger."""
    request_log.info(json.dumps({"time": round(time.time(), 3), **fields}, ensure_ascii=False))


class RequestCounter:
    """ASGI middleware: count each HTTP request by its route template and response status."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status)).inc()
