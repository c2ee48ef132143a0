"""Moving one logical shard to another cluster (`reservations shards move N --to B`).

With a short write pause on that one shard, and no lost or duplicated row:

1. On the source, take shard N's move lock (`pg_advisory_xact_lock`, exclusive). Writers of
   N take it shared in their shard guard, so the move waits for the ones in flight and holds
   off new ones: the write pause begins. Reads go on.
2. Read shard N's rows from one REPEATABLE READ snapshot taken after the lock, and copy them
   (COPY out, COPY in) into the target in one transaction that first removes any leftovers
   of an earlier, interrupted move; the target then holds N (`shard_owned`).
3. The source gives N up and commits, ending the pause there: the writers that waited find N
   gone (503 `shard-moving`, nothing written) and re-read the map.
4. The catalog's map names the target: retries land there.
5. After the instances have had time to re-read the map, N's rows are deleted from the source.

A crash before 3 leaves the source holding N (the target's copy is never read and is replaced
by the next attempt); between 3 and 4 the next attempt finds the target holding N and only
finishes 4 and 5. The pause is the copy of one logical shard: with many logical shards per
cluster, a small part of it (figures in docs/scaling.md).

The copy runs with `session_replication_role = replica` on the target (the rows were checked
where they were written; re-firing the outbox and audit triggers would invent events), which
needs a superuser or, on PostgreSQL ≥ 15, `GRANT SET ON PARAMETER session_replication_role`.
Events get new ids and transaction ids on the target (they keep their per-resource sequence
numbers). Jobs that skip the shard guard (hold expiry, history) may redo on the target what
they did on the source during the pause; both are idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from reservations.history import repository as history
from reservations.kit.db import Conn, Database, acting_as
from reservations.sharding import repository
from reservations.sharding.router import Shards

MOVER = "system:shard-move"


@dataclass
class MoveReport:
    logical: int
    source: str
    target: str
    rows: dict[str, int]
    pause_seconds: float
    removed: int


Progress = Callable[[str, int], None]  # (what, rows so far)


def _nothing(_what: str, _rows: int) -> None:
    return None


async def move(
    shards: Shards,
    logical: int,
    target: str,
    *,
    progress: Progress = _nothing,
    settle_seconds: float | None = None,
) -> MoveReport:
    assert shards.map is not None
    if not 0 <= logical < shards.map.logical_shards:
        raise ValueError(f"logical shard {logical} is outside 0-{shards.map.logical_shards - 1}")
    if target not in shards.clusters:
        raise ValueError(f"no cluster {target!r}; the clusters are {sorted(shards.clusters)}")
    await shards.load()
    source = shards.map.assignment[logical]
    src, dst = shards.by_name(source), shards.by_name(target)
    params = {"n": logical, "count": shards.map.logical_shards}
    report = MoveReport(logical, source, target, {}, 0.0, 0)
    async with src.connection() as conn:
        source_holds = logical in await repository.owned(conn)
    if source == target and source_holds:
        return report
    if not source_holds:  # an earlier attempt got past step 3: finish it
        async with dst.connection() as conn:
            if logical not in await repository.owned(conn):
                raise ValueError(
                    f"logical shard {logical} is held by neither {source!r} nor {target!r}; "
                    "see `reservations shards status`"
                )
    with acting_as(MOVER):
        if source_holds:
            async with src.transaction() as hold:
                await repository.lock_for_move(hold, logical)
                started = time.monotonic()
                async with src.pool.connection() as reader, dst.transaction() as write:
                    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    try:
                        report.rows = await _copy(reader, write, params, progress)
                        await _mark_split_bookings(reader, write, hold, params)
                    finally:
                        await reader.execute("COMMIT")
                    await repository.claim(write, [logical])
                await repository.release(hold, logical)
            report.pause_seconds = time.monotonic() - started
        async with shards.catalog.transaction() as conn:
            await repository.assign(conn, logical=logical, cluster=target)
        await shards.load()
        if source != target:
            wait = settle_seconds
            if wait is None:
                wait = 2 * shards.settings.shard_map_refresh_seconds
            await asyncio.sleep(wait)
            report.removed = await _remove(src, params, progress)
    return report


async def _copy(
    reader: Conn, write: Conn, params: dict[str, int], progress: Progress
) -> dict[str, int]:
    await repository.replica_role(write)
    for row in await repository.all_tenancy(reader):
        await repository.mirror_tenancy(write, row)
    for table in reversed(repository.SHARD_TABLES):  # leftovers of an interrupted move
        await repository.delete_shard_rows(write, table, params)
    for month in await repository.history_months(reader, params):
        await history.create_partition(write, start=month)
    counts: dict[str, int] = {}
    total = 0
    for table in repository.SHARD_TABLES:
        rows = 0
        async for lines in repository.copy_shard_rows(reader, write, table, params):
            rows += lines
            total += lines
            progress(table.name, total)
        counts[table.name] = rows
    await repository.widen_spans(write, params)
    return counts


async def _mark_split_bookings(
    reader: Conn, write: Conn, source: Conn, params: dict[str, int]
) -> None:
    """A booking with reservations on this shard and on others now spans two clusters."""
    split = await repository.split_bookings(reader, params)
    if split:
        for conn in (write, source):
            await repository.mark_spanning(conn, split)


async def _remove(src: Database, params: dict[str, int], progress: Progress) -> int:
    removed = 0
    async with src.transaction() as conn:
        bookings = await repository.shard_bookings(conn, params)
        for table in reversed(repository.SHARD_TABLES):
            if table.name == "booking":  # those left without reservations here
                removed += await repository.delete_bookings_without_rows(conn, bookings)
            else:
                removed += await repository.delete_shard_rows(conn, table, params)
            progress(f"removing {table.name}", removed)
    return removed
