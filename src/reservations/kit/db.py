"""Database access: one async pool per primary, the unit of work, and the advisory lock.

Connections run in autocommit so a single read costs one round trip; writes go through
`Database.transaction()`, owned by exactly one service function per use case. Nothing here
keeps session state between transactions (no plain SET, no session advisory locks), so the
same code works through PgBouncer in transaction mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from reservations.config import Settings

Conn = psycopg.AsyncConnection[DictRow]


class Database:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        options = (
            f"-c TimeZone=UTC -c statement_timeout={settings.statement_timeout_ms}"
            f" -c lock_timeout={settings.lock_timeout_ms}"
            " -c idle_in_transaction_session_timeout=60000"
        )
        prepare = settings.db_prepare_threshold or None
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": prepare,
            "options": options,
        }
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=settings.db_pool_min,
            max_size=max(settings.db_pool_max, settings.db_pool_min),
            kwargs=kwargs,
            open=False,
            timeout=10.0,
            name="primary",
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30.0)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """An autocommit connection: each statement is its own transaction."""
        async with self.pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """The unit of work: commits when the block ends, rolls back if it raises."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, TimeoutError, OSError):
            return False


async def lock_resource(conn: Conn, key: int) -> None:
    """Serialize writers of one resource until this transaction ends.

    Not the guarantee (the exclusion constraint is) but what keeps racing inserts into the
    constraint's GiST index from deadlocking each other (see DESIGN.md)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s::int8)", (key,))
