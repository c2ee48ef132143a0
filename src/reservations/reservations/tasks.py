"""Background work: expire holds, purge old idempotency records, repair the availability map,
move ended reservations to history, promote waitlist entries, seal the audit log, deliver
webhooks (a loop of its own beside the sweep, so a slow receiver never delays hold expiry).

Runs inside `reservations serve` (every API process) and in `reservations worker`. Any number
of copies may run: each step is a short transaction with FOR UPDATE SKIP LOCKED (the sealer:
an advisory lock only one copy at a time gets), no leader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from uuid import UUID

import psycopg

from reservations.audit import tasks as audit
from reservations.availability_map import store as availability_map
from reservations.context import Context
from reservations.history import service as history
from reservations.kit.idempotency import purge_expired
from reservations.kit.metrics import AVAILABILITY_MAP_REPAIRS
from reservations.reservations import repository
from reservations.reservations.service import sweep_expired
from reservations.sharding import twophase
from reservations.waitlist.promotion import promote_all
from reservations.webhooks import dispatcher

log = logging.getLogger(__name__)


async def purge_idempotency(svc: Context) -> int:
    async with svc.db.transaction() as conn:
        return await purge_expired(conn, before=svc.clock.now() - svc.settings.idempotency_ttl)


async def repair_map(svc: Context, *, resource_id: UUID | None = None, page: int = 10_000) -> int:
    """Rebuild from PostgreSQL the next page of (resource, day) entries the availability map
    holds (or every entry of one resource); returns how many entries were wrong. Pages
    continue across rounds and workers, so every entry is rebuilt within
    ceil(entries / page) + 1 rounds: that bounds how long a lost clear can refuse a free
    range."""
    if svc.availability_map is None:
        return 0
    days: dict[UUID, list[int]] = defaultdict(list)
    for rid, day in await svc.availability_map.days_in_use(resource_id=resource_id, limit=page):
        days[rid].append(day)
    fixed = 0
    now = svc.clock.now()
    for rid, in_use in days.items():
        start, end = (
            availability_map.day_bounds(min(in_use))[0],
            availability_map.day_bounds(max(in_use))[1],
        )
        async with svc.at(rid).db.connection() as conn:
            rows = await repository.live_unit_rows(
                conn, resource_id=rid, start=start, end=end, now=now
            )
        for day in in_use:
            lo, hi = availability_map.day_bounds(day)
            on_day = [r for r in rows if r["during_start"] < hi and lo < r["during_end"]]
            fixed += await svc.availability_map.repair_day(rid, day, on_day) or 0
    if fixed:
        AVAILABILITY_MAP_REPAIRS.inc(fixed)
    return fixed


async def run_forever(svc: Context) -> None:
    # A webhook dispatcher per database with an outbox: the catalog's (test messages, and
    # every event when unsharded) and each shard cluster's.
    others = [db for db in svc.shards.databases() if db is not svc.db]
    webhooks = [asyncio.create_task(dispatcher.run_forever(svc))] + [
        asyncio.create_task(dispatcher.run_forever(svc.on(db))) for db in others
    ]
    try:
        await _sweep_forever(svc)
    finally:
        for task in webhooks:
            task.cancel()
        for task in webhooks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _sweep_forever(svc: Context) -> None:
    interval = svc.settings.sweep_interval_seconds
    repair_every = svc.settings.availability_map_repair_interval_seconds
    history_every = svc.settings.history_interval_seconds
    last_repair = last_history = time.monotonic()
    rounds = 0
    while True:
        repair = time.monotonic() - last_repair >= repair_every
        archive = time.monotonic() - last_history >= history_every
        if repair:
            last_repair = time.monotonic()
        if archive:
            last_history = time.monotonic()
        # Each database that holds resources has its own holds, history and audit chain.
        for db in svc.shards.databases():
            try:
                await _sweep_once(svc.on(db), rounds, archive=archive)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # The database may be restarting; the next round tries again.
                log.warning("background sweep of %s failed: %s", db.name, exc)
        try:
            if repair:  # the map is one for all shards; each entry is read where it lives
                await repair_map(svc)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("availability map repair failed: %s", exc)
        if svc.shards.sharded and rounds % 5 == 0:
            try:
                await twophase.recover(
                    svc.shards, older_than=svc.settings.twophase_recover_after_seconds
                )
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("two-phase recovery failed: %s", exc)
        rounds += 1
        # Jitter keeps several processes from sweeping in lockstep.
        await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311


async def _sweep_once(svc: Context, rounds: int, *, archive: bool) -> None:
    await sweep_expired(svc)
    await audit.seal(svc.db)
    if rounds % 60 == 0:
        await purge_idempotency(svc)
    if rounds % 5 == 0:
        await promote_all(svc)
    if archive:
        run = await history.run_once(svc)
        if run.moved or run.created or run.detached:
            log.info(
                "history: horizon %s, moved %d, partitions made %s, detached %s",
                run.horizon.isoformat(),
                run.moved,
                run.created,
                run.detached,
            )
