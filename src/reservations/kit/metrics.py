"""Prometheus metrics. With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR is set by
`reservations serve` and /metrics aggregates every worker's files."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RESERVATIONS_CREATED = Counter("reservations_created_total", "Reservations created", ["status"])
RESERVATIONS_CONFLICTED = Counter(
    "reservations_conflicts_total", "Creates and reschedules refused for overlap", ["stage"]
)
RESERVATIONS_EXPIRED = Counter("reservations_expired_total", "Holds marked expired", ["by"])


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
