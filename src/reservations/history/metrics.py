"""Counters of the history job. Exported by /metrics (kit/metrics.py `render`)."""

from __future__ import annotations

from prometheus_client import Counter

HISTORY_MOVED = Counter(
    "reservations_moved_to_history_total",
    "Reservations the history job moved out of the live table",
)
