"""The history job, a step for the worker (worker.py) and the CLI: move the horizon, keep
the month partitions ready, move ended reservations across in batches, detach months past
retention.

Each step is its own short transaction, so any number of workers may run it: the horizon
only moves forward, partition DDL is serialized by an advisory lock, and rows move with
FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reservations.config import Settings
from reservations.history import repository
from reservations.history.metrics import HISTORY_MOVED
from reservations.history.repository import month_start, next_month, partition_name
from reservations.kit.db import Database, acting_as


@dataclass
class HistoryRun:
    horizon: datetime
    moved: int = 0
    created: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)


def _months_back(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 - months
    return start.replace(year=index // 12, month=index % 12 + 1)


# The audit log's actor for the history job's changes (rows leaving the live table).
ACTOR = "system:history"


async def run_once(db: Database, settings: Settings, *, now: datetime) -> HistoryRun:
    """One run of the job on the database `db` (the catalog's, or a shard cluster's)."""
    with acting_as(ACTOR):
        return await _run(db, settings, now=now)


async def _run(db: Database, settings: Settings, *, now: datetime) -> HistoryRun:
    async with db.transaction() as conn:
        horizon = await repository.advance_horizon(
            conn, to=now - timedelta(days=settings.history_after_days)
        )
    run = HistoryRun(horizon=horizon)

    async with db.connection() as conn:
        attached = await repository.partitions(conn)
        needed = set(await repository.candidate_months(conn, before=horizon))
    month = month_start(horizon)
    for _ in range(settings.history_months_ahead + 1):
        needed.add(month)
        month = next_month(month)
    for month in sorted(needed):
        if partition_name(month) not in attached:
            async with db.transaction() as conn:
                if await repository.create_partition(conn, start=month):
                    run.created.append(partition_name(month))

    while True:
        async with db.transaction() as conn:
            moved = await repository.move_batch(
                conn, before=horizon, batch=settings.history_batch, now=now
            )
        run.moved += moved
        HISTORY_MOVED.inc(moved)
        if moved < settings.history_batch:
            break

    if settings.history_detach_after_months:
        keep_from = _months_back(month_start(horizon), settings.history_detach_after_months)
        async with db.connection() as conn:
            attached = await repository.partitions(conn)
        for name, (_, end) in sorted(attached.items()):
            if end <= keep_from:
                async with db.transaction() as conn:
                    await repository.detach_partition(conn, name=name)
                run.detached.append(name)
    return run
