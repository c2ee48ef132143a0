"""Counters of the availability map. Exported by /metrics (kit/metrics.py `render`)."""

from __future__ import annotations

from prometheus_client import Counter

AVAILABILITY_MAP_DECISIONS = Counter(
    "availability_map_decisions_total",
    "Availability-map checks before a create: refuse (fast 409), pass (to the database), "
    "unavailable (Redis could not answer)",
    ["decision"],
)
AVAILABILITY_MAP_REPAIRS = Counter(
    "availability_map_repaired_total", "Map entries the repair job found wrong and rebuilt"
)
