"""Counters of webhook delivery. Exported by /metrics (kit/metrics.py `render`)."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_ATTEMPTS = Counter(
    "webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (2xx), failed (will retry), dead (gave up)",
    ["outcome"],
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "webhook_endpoints_disabled_total", "Webhook endpoints disabled after sustained failure"
)
