"""Counters and gauges of the shard router and two-phase bookings (exported by /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SHARD_WRITES = Counter(
    "shard_write_transactions_total", "Write transactions per shard cluster", ["cluster"]
)
SHARD_REFUSALS = Counter(
    "shard_guard_refusals_total",
    "Writes refused because the logical shard is not (or no longer) on that cluster",
)
TWOPHASE = Counter(
    "twophase_transactions_total",
    "Cross-shard bookings by outcome (committed, aborted) and who decided (coordinator, recovery)",
    ["outcome", "by"],
)
TWOPHASE_IN_DOUBT = Gauge(
    "twophase_in_doubt",
    "Prepared cross-shard transactions found on a cluster by the last recovery pass",
    ["cluster"],
    multiprocess_mode="max",
)
