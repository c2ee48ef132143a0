"""Counters of the audit log's sealer. Exported by /metrics (kit/metrics.py `render`)."""

from __future__ import annotations

from prometheus_client import Counter

AUDIT_SEALED = Counter("audit_rows_sealed_total", "Audit rows the sealer added to the hash chain")
