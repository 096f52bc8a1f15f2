"""Prometheus metrics of a server: requests and errors by endpoint and status, latency, and the
sizes of the batches the model ran. Each application has its own registry, so two servers in one
process (tests) do not share counts. With --workers N, whichever worker answers /metrics reports
the whole server: every worker writes its counts to files in a folder they share (Prometheus'
own multiprocess mode, PROMETHEUS_MULTIPROC_DIR) and /metrics adds them up."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
        registry = self.registry
        if os.environ.get(SHARED):  # the workers' counts, added up
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


SHARED = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_by_workers() -> Iterator[None]:
    """A folder for the workers' counts while the block runs (the workers started in it inherit
    SHARED, which prometheus_client reads when it is imported), removed after; one already
    named by SHARED (a deployment's own) is used and kept."""
    if os.environ.get(SHARED):
        yield
        return
    folder = tempfile.mkdtemp(prefix="fashionnet-metrics-")
    os.environ[SHARED] = folder
    try:
        yield
    finally:
        del os.environ[SHARED]
        shutil.rmtree(folder, ignore_errors=True)


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
