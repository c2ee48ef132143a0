"""Counters of the reservations domain. Exported by /metrics (kit/metrics.py `render`)."""

from __future__ import annotations

from prometheus_client import Counter

RESERVATIONS_CREATED = Counter("reservations_created_total", "Reservations created", ["status"])
RESERVATIONS_CONFLICTED = Counter(
    "reservations_conflicts_total", "Creates and reschedules refused for overlap", ["stage"]
)
RESERVATIONS_EXPIRED = Counter("reservations_expired_total", "Holds marked expired", ["by"])
