"""Background work: expire holds and purge old idempotency records.

Runs inside `reservations serve` (every API process) and in `reservations worker`. Any number
of copies may run: each step is a short transaction with FOR UPDATE SKIP LOCKED, no leader."""

from __future__ import annotations

import asyncio
import logging
import random

import psycopg

from reservations.deps import Services
from reservations.kit.idempotency import purge_expired
from reservations.reservations.service import sweep_expired

log = logging.getLogger(__name__)


async def purge_idempotency(svc: Services) -> int:
    async with svc.db.transaction() as conn:
        return await purge_expired(conn, before=svc.clock.now() - svc.settings.idempotency_ttl)


async def run_forever(svc: Services) -> None:
    interval = svc.settings.sweep_interval_seconds
    rounds = 0
    while True:
        try:
            await sweep_expired(svc)
            if rounds % 60 == 0:
                await purge_idempotency(svc)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # The database may be restarting; the next round tries again.
            log.warning("background sweep failed: %s", exc)
        rounds += 1
        # Jitter keeps several processes from sweeping in lockstep.
        await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311
