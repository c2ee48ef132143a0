"""The unit of work's round trips (kit/db.py `Database.unit`): statements sent with BEGIN
(`first`) and with COMMIT (`with_commit`). It commits what the block wrote, rolls back on any
error wherever it surfaces (a read in the block, a write sent with COMMIT, COMMIT itself, or
Python), and hands the connection back clean."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import pq, sql

from reservations.config import Settings
from reservations.kit.db import ACTOR, Conn, Database, on_failure, with_commit
from tests.support.servers import make_settings


def _run(database_url: str, body: Callable[[Database, str], Awaitable[None]]) -> None:
    """Run `body` with a one-connection Database (so every transaction reuses the connection
    the previous one returned) and a table of its own, with a deferred unique constraint."""
    table = f"pipe_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (k int PRIMARY KEY, u int UNIQUE DEFERRABLE INITIALLY DEFERRED)"
        )

    async def main() -> None:
        settings: Settings = make_settings(database_url, db_pool_min=1, db_pool_max=1)
        db = Database(database_url, settings)
        await db.open()
        try:
            await body(db, table)
        finally:
            await db.close()

    try:
        asyncio.run(main())
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


async def _keys(db: Database, table: str) -> list[int]:
    async with db.connection() as conn:
        cur = await conn.execute(f"SELECT k FROM {table} ORDER BY k")
        return [row["k"] for row in await cur.fetchall()]


async def _clean(db: Database) -> None:
    """The pool's one connection is idle, out of pipeline mode, and works."""
    async with db.connection() as conn:
        assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        assert conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
        cur = await conn.execute("SELECT 1 AS one")
        assert await cur.fetchone() == {"one": 1}


def _insert(table: str) -> str:
    return f"INSERT INTO {table} (k, u) VALUES (%s, %s)"


def _last(table: str, k: int, u: int) -> sql.Composed:
    """An insert without parameters, for `with_commit`."""
    return sql.SQL("INSERT INTO {} (k, u) VALUES ({}, {})").format(
        sql.Identifier(table), sql.Literal(k), sql.Literal(u)
    )


def test_first_goes_with_begin_and_last_writes_with_commit(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(db: Database, table: str) -> None:
        def first(conn: Conn) -> list[sql.Composed | sql.SQL]:
            assert not conn.closed
            return [
                sql.SQL("SELECT 1 AS a"),
                sql.SQL("SELECT current_setting('reservations.actor') AS actor"),
            ]

        token = ACTOR.set("system:probe")
        try:
            async with db.unit(first=first) as unit:
                assert unit.first is not None
                assert await unit.first.fetchone() == {"a": 1}
                assert unit.first.nextset()
                assert await unit.first.fetchone() == {"actor": "system:probe"}
                await unit.conn.execute(_insert(table), (1, 1))
                await with_commit(unit.conn, _last(table, 2, 2))
                cur = await unit.conn.execute(f"SELECT count(*) AS n FROM {table}")
                assert await cur.fetchone() == {"n": 1}  # the last write waits for COMMIT
        finally:
            ACTOR.reset(token)
        assert await _keys(db, table) == [1, 2]
        await _clean(db)
        # outside a unit, `with_commit` runs at once
        async with db.connection() as conn:
            await with_commit(conn, _last(table, 3, 3))
        assert await _keys(db, table) == [1, 2, 3]

    with caplog.at_level(logging.WARNING):
        _run(database_url, body)
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], caplog.text


async def _failing_block(conn: Conn, table: str, where: str) -> None:
    await conn.execute(_insert(table), (10, 10))
    if where == "read":
        cur = await conn.execute(_insert(table) + " RETURNING k", (10, 11))  # duplicate key
        await cur.fetchone()
    elif where == "last":
        await with_commit(conn, _last(table, 10, 11))  # duplicate key, sent with COMMIT
    elif where == "commit":
        await conn.execute(_insert(table), (11, 10))  # duplicate u, checked at COMMIT
    elif where == "python":
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
        await cur.fetchone()
        raise LookupError("refused by the service")


@pytest.mark.parametrize(
    ("where", "raised"),
    [
        ("read", pg_errors.UniqueViolation),
        ("last", pg_errors.UniqueViolation),
        ("commit", pg_errors.UniqueViolation),
        ("python", LookupError),
    ],
)
def test_any_error_rolls_back_and_the_connection_comes_back_clean(
    database_url: str, where: str, raised: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    async def body(db: Database, table: str) -> None:
        async with db.transaction() as conn:
            await conn.execute(_insert(table), (1, 1))
        with pytest.raises(raised):
            async with db.transaction() as conn:
                await _failing_block(conn, table, where)
        assert await _keys(db, table) == [1]
        await _clean(db)
        # and the next transaction on that connection works
        async with db.transaction() as conn:
            await conn.execute(_insert(table), (2, 2))
        assert await _keys(db, table) == [1, 2]

    with caplog.at_level(logging.WARNING):
        _run(database_url, body)
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], caplog.text


def test_transaction_locals_and_xact_locks_last_the_whole_transaction(database_url: str) -> None:
    async def body(db: Database, table: str) -> None:
        async with db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(4242)")
            await conn.execute("SELECT set_config('reservations.probe', 'x', true)")
            cur = await conn.execute(
                "SELECT current_setting('reservations.probe') AS probe,"
                " count(*) FILTER (WHERE locktype = 'advisory' AND objid = 4242) AS locks"
                " FROM pg_locks WHERE pid = pg_backend_pid()"
            )
            assert await cur.fetchone() == {"probe": "x", "locks": 1}
        async with db.connection() as conn:
            cur = await conn.execute(
                "SELECT current_setting('reservations.probe', true) AS probe,"
                " count(*) FILTER (WHERE locktype = 'advisory') AS locks"
                " FROM pg_locks WHERE pid = pg_backend_pid()"
            )
            assert await cur.fetchone() == {"probe": "", "locks": 0}

    _run(database_url, body)


@pytest.mark.parametrize(
    ("where", "raised"),
    [
        ("read", pg_errors.UniqueViolation),
        ("python", LookupError),
    ],
)
def test_a_kept_failure_commits_its_record_and_is_raised_after(
    database_url: str,
    where: str,
    raised: type[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`on_failure` (what an Idempotency-Key claim registers): when the block raises, the
    recorder rolls back to its savepoint and writes a record; the transaction commits what
    came before the savepoint and the record, and the block's own error is raised after.
    The block's writes waiting for COMMIT (`with_commit`) are dropped with the rest of it."""

    async def body(db: Database, table: str) -> None:
        async def recorder(conn: Conn, error: BaseException) -> bool:
            assert isinstance(error, raised)
            await conn.execute("ROLLBACK TO SAVEPOINT probe")
            await with_commit(conn, _last(table, 99, 99))
            return True

        async def kept() -> None:
            async with db.transaction() as conn:
                await conn.execute(_insert(table), (1, 1))  # before the savepoint: kept
                await conn.execute("SAVEPOINT probe")
                assert on_failure(conn, recorder)
                await with_commit(conn, _last(table, 50, 50))  # the block's: dropped
                await _failing_block(conn, table, where)  # inserts 10, then fails

        async def unregistered() -> None:
            async with db.transaction() as conn:
                await conn.execute(_insert(table), (2, 2))
                await _failing_block(conn, table, "python")

        with pytest.raises(raised):
            await kept()
        assert await _keys(db, table) == [1, 99]
        await _clean(db)
        # the registration ended with its transaction: this failure just rolls back
        with pytest.raises(LookupError):
            await unregistered()
        assert await _keys(db, table) == [1, 99]

    with caplog.at_level(logging.WARNING):
        _run(database_url, body)
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], caplog.text


def test_a_failure_the_recorder_declines_or_cannot_write_rolls_back(database_url: str) -> None:
    async def body(db: Database, table: str) -> None:
        async def declines(conn: Conn, error: BaseException) -> bool:
            return False

        async def breaks(conn: Conn, error: BaseException) -> bool:
            await conn.execute("ROLLBACK TO SAVEPOINT probe")
            await conn.execute(_insert(table), (1, 1))  # duplicate key: the record fails
            return True

        async def failing(recorder: Callable[[Conn, BaseException], Awaitable[bool]]) -> None:
            async with db.transaction() as conn:
                await conn.execute(_insert(table), (5, 5))
                await conn.execute("SAVEPOINT probe")
                on_failure(conn, recorder)
                await _failing_block(conn, table, "python")

        async with db.transaction() as conn:
            await conn.execute(_insert(table), (1, 1))
        for recorder in (declines, breaks):
            with pytest.raises(LookupError):  # the block's error, not the recorder's
                await failing(recorder)
            assert await _keys(db, table) == [1]
            await _clean(db)

    _run(database_url, body)


def test_no_recorder_outside_an_owned_transaction(database_url: str) -> None:
    async def body(db: Database, table: str) -> None:
        async def recorder(conn: Conn, error: BaseException) -> bool:
            raise AssertionError("never run")

        async with db.connection() as conn, conn.transaction():
            assert not on_failure(conn, recorder)

    _run(database_url, body)
