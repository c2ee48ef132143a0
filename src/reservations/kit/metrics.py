"""Prometheus metrics. With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR is set by
`reservations serve` and /metrics aggregates every worker's files."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
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
REDIS_ERRORS = Counter(
    "redis_errors_total", "Redis calls that failed or timed out and fell back", ["op"]
)
REDIS_SKIPPED = Counter(
    "redis_skipped_total", "Redis calls not attempted while Redis was recently failing", ["op"]
)
CACHE_LOOKUPS = Counter(
    "cache_lookups_total",
    "Cache lookups by cache and result (hit, miss, error: Redis unavailable, database used)",
    ["cache", "result"],
)
RATE_LIMIT_DECISIONS = Counter(
    "rate_limit_decisions_total",
    "Rate-limit checks: allowed, limited, or unavailable (Redis down: allowed, fail open)",
    ["result"],
)

DB_READS = Counter(
    "db_reads_total", "Read-only requests' database connections by target", ["target"]
)
REPLICA_LAG = Gauge(
    "replica_lag_seconds", "Age of each replica's data (inf: unreachable or not a standby)",
    ["replica"], multiprocess_mode="max",
)  # fmt: skip


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
