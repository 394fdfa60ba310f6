"""Prometheus metrics of one app (its own registry: several apps in a process do not mix)."""
from __future__ import annotations

from typing import Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets in seconds: detection + embedding take 0.05-0.5 s on one core.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by route and status, latency by route, decisions by outcome, gallery size, queue."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pifr_http_requests", "HTTP requests by route template, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("pifr_http_request_duration_seconds", "Time to answer, by route template",
                                 ("route",), buckets=BUCKETS, registry=r)
        self.decisions = Counter("pifr_decisions", "Identify and verify decisions by endpoint and outcome",
                                 ("endpoint", "decision"), registry=r)
        self.subjects = Gauge("pifr_gallery_subjects", "Subjects in the gallery snapshot last served", registry=r)
        self.templates = Gauge("pifr_gallery_templates", "Templates in the gallery snapshot last served", registry=r)
        self.queue = Gauge("pifr_pool_admitted", "Recognition jobs running or waiting", registry=r)
        self.rejected_busy = Counter("pifr_busy_rejections", "Requests refused with 503 because the pool was full",
                                     registry=r)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> Tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
