"""Streaming replicas for the reads that tolerate staleness, with read-your-writes.

A replica serves a read when it is healthy (reachable, in recovery, lag under
`RESERVATIONS_REPLICA_MAX_LAG_SECONDS`) and, if the request carries a consistency token, has
replayed past it (waiting at most `RESERVATIONS_REPLICA_WAIT_MS`); otherwise the primary does.
Nothing that decides an accept reads here: the services use `Database.read()` only on GET
paths.

Lag is measured as the age of the replica's data: the health loop samples the primary's WAL
position every `RESERVATIONS_REPLICA_CHECK_SECONDS`; a replica that has replayed up to the
position the primary had at time t is `now - t` behind (0 once it has caught up with the
latest sample). Unlike `now() - pg_last_xact_replay_timestamp()`, this does not grow while the
primary is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from reservations.config import Settings
from reservations.kit.consistency import CURRENT, lsn_value
from reservations.kit.metrics import DB_READS, REPLICA_LAG

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
T = TypeVar("T")
PROBE_TIMEOUT = 0.5  # seconds a replica may take to answer a trivial query


class Replica:
    def __init__(
        self,
        index: int,
        url: str,
        kwargs: dict[str, Any],
        settings: Settings,
        *,
        database: str = "primary",
    ) -> None:
        self.index = index
        # The `replica` label of replica_lag_seconds: "0", "1"... for the primary's, and
        # "shard-a/0"... for a shard cluster's.
        self.name = str(index) if database == "primary" else f"{database}/{index}"
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(settings.db_pool_max, 1),
            kwargs={**kwargs, "connect_timeout": 2},
            open=False,
            timeout=1.0,
            name=f"replica-{self.name}",
        )
        self.healthy = False
        self.lag: float | None = None


class Replicas:
    def __init__(
        self,
        urls: list[str],
        kwargs: dict[str, Any],
        settings: Settings,
        *,
        database: str = "primary",
    ) -> None:
        self.database = database  # whose positions the consistency token must reach
        self.replicas = [
            Replica(i, url, kwargs, settings, database=database) for i, url in enumerate(urls)
        ]
        self.max_lag = settings.replica_max_lag_seconds
        self.wait = settings.replica_wait_ms / 1000
        self.every = settings.replica_check_seconds
        self.read_timeout = settings.replica_read_timeout_ms / 1000
        self._samples: deque[tuple[float, int]] = deque(maxlen=600)
        self._next = 0

    async def open(self) -> None:
        for r in self.replicas:
            await r.pool.open(wait=False)  # a replica that is down at start-up is no error

    async def close(self) -> None:
        for r in self.replicas:
            await r.pool.close()

    async def check_forever(self, primary: AsyncConnectionPool[Conn]) -> None:
        while True:
            try:
                await self.check(primary)
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                log.warning("replica health check failed: %s", exc)
            await asyncio.sleep(self.every)

    async def check(self, primary: AsyncConnectionPool[Conn]) -> None:
        async with primary.connection(timeout=2.0) as conn:
            cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
            row = await cur.fetchone()
        assert row is not None
        now = time.monotonic()
        self._samples.append((now, lsn_value(_first(row))))
        for r in self.replicas:
            r.lag = await self._lag(r, now)
            r.healthy = r.lag is not None and r.lag <= self.max_lag
            REPLICA_LAG.labels(r.name).set(r.lag if r.lag is not None else float("inf"))

    async def _lag(self, replica: Replica, now: float) -> float | None:
        async def probe() -> Any:
            async with replica.pool.connection(timeout=1.0) as conn:
                cur = await conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
                )
                return await cur.fetchone()

        try:
            row = await asyncio.wait_for(probe(), timeout=1.0 + PROBE_TIMEOUT)
        except (psycopg.Error, PoolTimeout, OSError, TimeoutError):
            return None
        if row is None:
            return None
        standby, replayed = _pair(row)
        if not standby or replayed is None:
            return None  # promoted or not a standby: not a replica to read from
        position = lsn_value(replayed)
        newest = self._samples[-1][1]
        if position >= newest:
            return 0.0
        older = [t for t, lsn in self._samples if lsn <= position]
        since = older[-1] if older else self._samples[0][0]
        return max(now - since, 0.0)

    def _candidates(self) -> list[Replica]:
        healthy = [r for r in self.replicas if r.healthy]
        if not healthy:
            return []
        self._next = (self._next + 1) % len(healthy)
        return healthy[self._next :] + healthy[: self._next]

    async def read(
        self, primary: AsyncConnectionPool[Conn], work: Callable[[Conn], Awaitable[T]]
    ) -> T:
        """Run `work` on a replica fresh enough for this request, else on the primary;
        record where in the request's consistency state and the metrics. A replica that is
        down, or frozen (a hung host still ACKs packets), or fails midway costs the read a
        bounded wait and a second run on the primary, never an error."""
        state = CURRENT.get()
        wanted = state.freshness(self.database) if state is not None else None
        for replica in self._candidates():

            async def attempt(replica: Replica = replica) -> tuple[bool, T | None]:
                async with replica.pool.connection(timeout=0.5) as conn:
                    if not await asyncio.wait_for(
                        self._caught_up(conn, wanted), timeout=self.wait + PROBE_TIMEOUT
                    ):
                        return False, None
                    return True, await work(conn)

            # In a task of its own, abandoned on timeout: cancelling a query on a frozen
            # server makes psycopg try to cancel it server-side, which would hang this read.
            task = asyncio.create_task(attempt())
            budget = self.wait + PROBE_TIMEOUT + self.read_timeout
            done, _ = await asyncio.wait({task}, timeout=budget)
            if task in done and task.exception() is None:
                served, result = task.result()
                if served:
                    _served(state, "replica")
                    return result  # type: ignore[return-value]
                continue
            exc = task.exception() if task in done else TimeoutError("no answer")
            if task not in done:
                task.cancel()
                task.add_done_callback(_swallow)
            if exc is not None and not isinstance(
                exc, psycopg.OperationalError | PoolTimeout | TimeoutError
            ):
                raise exc  # an error of the read itself (a bug, bad SQL): not the replica's
            replica.healthy = False  # until the next health check says otherwise
            log.warning("replica %s unusable, reading from the primary: %r", replica.name, exc)
        async with primary.connection() as conn:
            result = await work(conn)
        _served(state, "primary")
        return result

    async def _caught_up(self, conn: Conn, wanted: str | None) -> bool:
        """Whether the replica has replayed past `wanted` (waiting a little). Also the probe
        that proves a pooled connection still works before a read is trusted to it."""
        if wanted is None:
            await conn.execute("SELECT 1")
            return True
        deadline = time.monotonic() + self.wait
        while True:
            cur = await conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (wanted,))
            row = await cur.fetchone()
            if row is not None and _first(row) is True:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)


def _swallow(task: asyncio.Task[Any]) -> None:
    """Retrieve an abandoned attempt's outcome so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _pair(row: Any) -> tuple[Any, Any]:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return values[0], values[1]


def _served(state: Any, source: str) -> None:
    DB_READS.labels(source).inc()
    if state is not None:
        state.source = source


async def stop_task(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
