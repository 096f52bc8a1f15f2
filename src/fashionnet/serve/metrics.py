"""Prometheus metrics of one server process: requests and errors by endpoint and status,
latency, and the sizes of the batches the model ran. Each application has its own registry, so
two servers in one process (tests) do not share counts; with --workers N each worker counts its
own requests (scrape them separately, or run one worker a replica)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fashionnet_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram(
            "fashionnet_request_seconds", "time from request to response", ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )  # fmt: skip
        self.batch_sizes = Histogram(
            "fashionnet_batch_size", "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )  # fmt: skip

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike Starlette's BaseHTTPMiddleware): counts
    every HTTP response by its route's path and status, and times it."""

    def __init__(self, app: Any, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:  # the router has put the matched route in the scope by now
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
