"""Prometheus metrics at /metrics: requests, latencies, searches, uploads, catalogue size.

Each app has its own registry (several apps may live in one process, as in the tests). The
catalogue figures are read when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]


class Metrics:
    """The app's counters and the collector of catalogue figures."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iddetective_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iddetective_http_request_seconds",
            "Time to answer, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.searches = Counter(
            "iddetective_searches", "Searches made, by kind.", ["kind"], registry=self.registry
        )
        self.indexed = Counter(
            "iddetective_uploads_indexed", "Photos uploaded and stored.", registry=self.registry
        )
        self.registry.register(_CatalogueCollector(stats))

    def install(self, app: FastAPI) -> None:
        """Time and count every request."""

        @app.middleware("http")
        async def measure(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            response = await call_next(request)
            route = getattr(request.scope.get("route"), "path", "unmatched")
            self.latency.labels(route=route).observe(time.perf_counter() - started)
            self.requests.labels(request.method, route, str(response.status_code)).inc()
            return response

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)


class _CatalogueCollector(Collector):
    def __init__(self, stats: Callable[[], Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        for name, help_text in (
            ("photos", "Photos in the catalogue."),
            ("faces", "Faces in the catalogue."),
            ("people", "People in the catalogue."),
            ("failed", "Files that could not be indexed."),
            ("data_bytes", "Bytes the data directory takes."),
        ):
            yield GaugeMetricFamily(
                f"iddetective_catalogue_{name}", help_text, getattr(stats, name)
            )
