"""The background loop: expire holds, purge old idempotency records, repair the availability map
from the outbox, move ended reservations to history, promote waitlist entries, seal the audit
log, deliver webhooks (a loop of its own beside the sweep, so a slow receiver never delays hold
expiry). Each domain offers its steps (`<domain>/tasks.py` and the like); this module alone
decides when they run.

Runs in `reservations worker`, and inside `reservations serve` (every API process) unless it
is started with `--no-worker` (RESERVATIONS_RUN_WORKER=false), as it is where workers run
beside it. Any number of copies may run: each step is a short transaction with FOR UPDATE
SKIP LOCKED (the sealer: an advisory lock only one copy at a time gets), no leader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import psycopg

from reservations.audit import tasks as audit
from reservations.context import Context
from reservations.history import tasks as history
from reservations.kit.idempotency import purge_expired
from reservations.reminders.tasks import purge_reminders, send_reminders
from reservations.reservations.tasks import repair_map_changes, sweep_expired, sweep_no_shows
from reservations.sharding import twophase
from reservations.waitlist.tasks import promote_all
from reservations.webhooks import copies, dispatcher, fanout

log = logging.getLogger(__name__)


async def purge_idempotency(svc: Context) -> int:
    async with svc.db.transaction() as conn:
        return await purge_expired(conn, before=svc.clock.now() - svc.settings.idempotency_ttl)


async def run_forever(svc: Context) -> None:
    # A webhook dispatcher per database with an outbox: the catalog's (test messages, and
    # every event when unsharded) and each shard cluster's.
    others = [db for db in svc.shards.databases() if db is not svc.db]
    webhooks = [asyncio.create_task(deliver_webhooks_forever(svc))] + [
        asyncio.create_task(deliver_webhooks_forever(svc.on(db))) for db in others
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
    behind: set[str] = set()  # databases whose outbox the map repair has not caught up with
    rounds = 0
    while True:
        repair = time.monotonic() - last_repair >= repair_every
        archive = time.monotonic() - last_history >= history_every
        if repair:
            last_repair = time.monotonic()
        if archive:
            last_history = time.monotonic()
        # Each database that holds resources has its own holds, history, audit chain and
        # outbox (the map is one for all: each entry is rebuilt from where its rows live).
        for db in svc.shards.databases():
            try:
                await _sweep_once(svc.on(db), rounds, archive=archive)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # The database may be restarting; the next round tries again.
                log.warning("background sweep of %s failed: %s", db.name, exc)
            if repair or db.name in behind:
                try:
                    more = (await repair_map_changes(svc.on(db))).more
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("availability map repair of %s failed: %s", db.name, exc)
                    more = False
                # Left events to read: go on at the next sweep, not a repair interval later.
                (behind.add if more else behind.discard)(db.name)
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
    await sweep_no_shows(svc)
    await send_reminders(svc)
    await audit.seal(svc.db)
    if rounds % 60 == 0:
        await purge_idempotency(svc)
        await purge_reminders(svc)
    if rounds % 5 == 0:
        await promote_all(svc)
    if archive:
        run = await history.run_once(svc.db, svc.settings, now=svc.clock.now())
        if run.moved or run.created or run.detached:
            log.info(
                "history: horizon %s, moved %d, partitions made %s, detached %s",
                run.horizon.isoformat(),
                run.moved,
                run.created,
                run.detached,
            )


async def deliver_webhooks_forever(svc: Context) -> None:
    """The webhook loop of one database with an outbox: keeps up to `webhooks_concurrency`
    requests in flight, claims more as they finish (the next message of a resource becomes
    claimable when the one before it is done), and sleeps `webhooks_interval_seconds` (with
    jitter) when there is nothing."""
    settings = svc.settings
    interval = settings.webhooks_interval_seconds
    inflight: set[asyncio.Task[str]] = set()
    last_fanout = last_purge = last_sync = 0.0
    more_events = False
    copy = svc.db is not svc.shards.catalog  # a shard cluster's dispatcher
    async with dispatcher.new_client(settings) as client:
        try:
            while True:
                worked = False
                try:
                    if copy and time.monotonic() - last_sync >= copies.SYNC_SECONDS:
                        last_sync = time.monotonic()
                        await copies.sync(svc, svc.db)
                    if more_events or time.monotonic() - last_fanout >= interval:
                        last_fanout = time.monotonic()
                        more_events = await fanout.fan_out(svc) > 0
                        worked = more_events
                    if time.monotonic() - last_purge >= dispatcher.PURGE_EVERY_SECONDS:
                        last_purge = time.monotonic()
                        await dispatcher.purge(svc)
                    free = settings.webhooks_concurrency - len(inflight)
                    if free > 0:
                        claim_id, rows = await dispatcher.claim(svc, free)
                        for row in rows:
                            inflight.add(
                                asyncio.create_task(dispatcher.deliver(svc, client, row, claim_id))
                            )
                        worked = worked or bool(rows)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    # The database may be restarting; the next round tries again.
                    log.warning("webhook dispatch round failed: %s", exc)
                except Exception:
                    log.exception("webhook dispatch round failed")
                    await asyncio.sleep(interval)
                if inflight:
                    done, _ = await asyncio.wait(
                        inflight, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        inflight.discard(task)
                        if not task.cancelled() and (failure := task.exception()) is not None:
                            log.warning("webhook delivery failed to record: %r", failure)
                elif not worked:
                    await asyncio.sleep(interval * (0.75 + random.random() / 2))  # noqa: S311
        finally:
            # Stopping: let requests under way finish and be recorded for a moment (a
            # message cut off here is sent again when its lease ends), then cut them off.
            if inflight:
                await asyncio.wait(inflight, timeout=dispatcher.STOP_GRACE_SECONDS)
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
